//! Users and their sessions.

use async_trait::async_trait;
use bal_core::{Actor, Role, Subscription, Username, WalletAddress};
use chrono::{DateTime, Utc};

use crate::StoreResult;

pub use bal_core::User;

/// What creating a user stores. Hashing and key generation happen before, outside the store.
#[derive(Clone)]
pub struct NewUser {
    pub username: Username,
    pub role: Role,
    pub password_hash: String,
    pub wallet: WalletAddress,
    /// The encrypted keystore document.
    pub account: String,
    /// The MQTT password sealed for an external broker (see `bal_wallet::Sealer`), if kept.
    pub broker_secret: Option<String>,
}

impl std::fmt::Debug for NewUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewUser")
            .field("username", &self.username)
            .field("role", &self.role)
            .field("wallet", &self.wallet)
            .finish_non_exhaustive()
    }
}

/// A user together with its password hash, for the login check only.
#[derive(Clone)]
pub struct Credentials {
    pub user: User,
    pub password_hash: String,
    /// Whether a sealed broker copy of the password is kept (see `keep_broker_secret`).
    pub has_broker_secret: bool,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

/// Users and sessions.
///
/// Guarantees, on every backend and with any number of writers (processes included):
/// - a name is taken once, ever: `create_user` of a name used before (even by a deleted user)
///   is `Conflict`;
/// - there is always an admin: of two concurrent `delete_user`s of the last two admins, one
///   is `Conflict` (the admins' rows are locked before they are counted);
/// - no session survives a password change: `create_session` checks the hash it was given
///   against the user's row under a lock that `set_password` also takes, so a session is
///   either created before the change (and deleted by it) or refused;
/// - every change is in the audit log, written in the same transaction;
/// - failed logins are counted by every process on the database alike, so that the limits
///   hold across replicas.
#[async_trait]
pub trait AccountStore: Send + Sync {
    /// Stores a new user. `Conflict` when the name was ever used, even by a deleted user.
    async fn create_user(
        &self,
        new: NewUser,
        actor: &Actor,
        now: DateTime<Utc>,
    ) -> StoreResult<User>;
    /// An active (not deleted) user.
    async fn user(&self, username: &Username) -> StoreResult<Option<User>>;
    /// All active users, by name.
    async fn users(&self) -> StoreResult<Vec<User>>;
    /// An active user with its password hash.
    async fn credentials(&self, username: &Username) -> StoreResult<Option<Credentials>>;
    /// An active user's encrypted wallet (the keystore document), for the server to sign with.
    async fn wallet_keystore(&self, username: &Username) -> StoreResult<Option<String>>;
    /// Replaces a password hash (and the sealed broker copy, `None` when none is kept) and ends
    /// all of the user's sessions.
    async fn set_password(
        &self,
        username: &Username,
        password_hash: String,
        broker_secret: Option<String>,
        actor: &Actor,
        now: DateTime<Utc>,
    ) -> StoreResult<()>;
    /// Keeps the sealed broker copy of a password just verified against `password_hash`, for a
    /// user who has none yet (created before the external broker was configured). `false` when
    /// nothing was written: a copy exists, the password changed meanwhile, or the user is gone.
    async fn keep_broker_secret(
        &self,
        username: &Username,
        password_hash: &str,
        broker_secret: String,
    ) -> StoreResult<bool>;
    /// Every active user's sealed broker password, for rebuilding an external broker.
    async fn broker_secrets(&self) -> StoreResult<Vec<(Username, String)>>;
    /// Deletes a user: wipes its password and key, ends its sessions and its live
    /// subscriptions (returned). `Conflict` for the last admin.
    async fn delete_user(
        &self,
        username: &Username,
        actor: &Actor,
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<Subscription>>;

    /// Records a session token digest for `username` until `expires_at`, provided the user is
    /// active and its password hash is still `password_hash` (the one just verified). `false`
    /// when it is not: the password changed, or the user was deleted, meanwhile.
    async fn create_session(
        &self,
        token_hash: [u8; 32],
        username: &Username,
        password_hash: &str,
        now: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    ) -> StoreResult<bool>;
    /// The active user holding an unexpired session with this digest.
    async fn session_user(
        &self,
        token_hash: [u8; 32],
        now: DateTime<Utc>,
    ) -> StoreResult<Option<User>>;
    /// Ends one session.
    async fn delete_session(&self, token_hash: [u8; 32]) -> StoreResult<()>;
    /// Removes sessions that expired before `now`; returns how many.
    async fn purge_sessions(&self, now: DateTime<Utc>) -> StoreResult<u64>;
    /// How many failed logins each of `keys` (a claimed username, a client address) had since
    /// `since`, in the order of `keys`.
    async fn login_failures(&self, keys: &[String], since: DateTime<Utc>) -> StoreResult<Vec<u32>>;
    /// Counts a failed login at `at` against each of `keys`, and forgets their failures from
    /// before `forget_before`.
    async fn record_login_failure(
        &self,
        keys: &[String],
        at: DateTime<Utc>,
        forget_before: DateTime<Utc>,
    ) -> StoreResult<()>;
    /// Forgets the failures of `key` (a successful login clears its username's).
    async fn clear_login_failures(&self, key: &str) -> StoreResult<()>;
}
