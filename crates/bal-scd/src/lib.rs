//! The Shared Customer Database (SCD): users, sessions, subscriptions, measurements, the
//! audit log, certification batches and the embedded chain's blocks.
//!
//! [`Store`] is the only thing the rest of the BAL sees. It speaks in `bal-core` types and knows
//! nothing of SQL; each backend lives in its own module with its own `migrations/` folder.
//! Every method that changes users or grants also appends to the audit log in the same
//! transaction, so the log can never disagree with the data.
//!
//! - [`sqlite`]: the embedded default (one file, WAL).
//! - [`certification`] and [`chain`]: the parts of [`Store`] that `bal-ledger` uses.
#![forbid(unsafe_code)]

pub mod certification;
pub mod chain;
pub mod sqlite;

use std::sync::Arc;

use async_trait::async_trait;
use bal_core::{
    Actor, AuditAction, GrantAction, GrantError, Measurement, NewMeasurement, Role, Subscription,
    SubscriptionId, SubscriptionStatus, Topic, Username, WalletAddress,
};
use chrono::{DateTime, Utc};
use tokio::sync::broadcast;

pub use certification::{
    AnchorRecord, Batch, BatchKey, BatchLeaves, CertificationStatus, CertificationStore, ItemKind,
    NewBatch, PendingItem, PendingItems,
};
pub use chain::ChainStore;
pub use sqlite::SqliteStore;

/// A user as everyone but the login check sees it: no password hash, no key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub username: Username,
    pub role: Role,
    /// A producer's root topic; `None` for other roles.
    pub topic: Option<Topic>,
    pub wallet: WalletAddress,
    pub created_at: DateTime<Utc>,
}

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

/// One line of the audit log.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditEntry {
    pub id: i64,
    pub at: DateTime<Utc>,
    pub actor: Actor,
    pub action: AuditAction,
    /// What was changed: `user:<name>` or `subscription:<id>`.
    pub object: String,
    pub detail: serde_json::Value,
}

/// Filters for reading the audit log, newest first.
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    pub actor: Option<Actor>,
    pub action: Option<AuditAction>,
    pub object: Option<String>,
    /// Only entries with an id below this one: the cursor for the next page.
    pub before_id: Option<i64>,
    pub limit: u32,
}

/// Filters for listing subscriptions, newest first. `None` fields match everything.
#[derive(Debug, Clone, Default)]
pub struct SubscriptionQuery {
    pub consumer: Option<Username>,
    pub producer: Option<Username>,
    pub status: Option<SubscriptionStatus>,
}

/// Filters for reading measurements, oldest first.
#[derive(Debug, Clone)]
pub struct MeasurementQuery {
    pub producer: Username,
    /// Only measurements received at or after this time.
    pub from: Option<DateTime<Utc>>,
    /// Only measurements received before this time.
    pub to: Option<DateTime<Utc>>,
    /// Only measurements after this position: the cursor of the previous page.
    pub after: Option<MeasurementCursor>,
    pub limit: u32,
}

/// A position in a producer's measurements, ordered by reception time and then id. Reception
/// times are stamped at commit, so this order is commit order: a page never skips a row that
/// commits later.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MeasurementCursor {
    pub received_at_ms: i64,
    pub id: i64,
}

impl MeasurementCursor {
    pub fn after(m: &Measurement) -> Self {
        Self {
            received_at_ms: m.received_at.timestamp_millis(),
            id: m.id,
        }
    }
}

/// What changed, announced after the change is committed, so that live deliveries (MQTT
/// sessions, server-sent event streams) follow the database without polling it.
#[derive(Debug, Clone)]
pub enum Change {
    /// A user was created.
    UserCreated(Username),
    /// A user's sealed broker password was stored (without a password change).
    BrokerSecret(Username),
    /// A subscription changed status (decision, expiry, or its user was deleted).
    Subscription(Subscription),
    /// A user was deleted.
    UserDeleted(Username),
    /// A user's password changed (its sessions ended).
    PasswordChanged(Username),
    /// Measurements were committed (duplicates that were not stored again are left out).
    Measurements(Arc<[Measurement]>),
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("{0}")]
    Conflict(String),
    #[error(transparent)]
    Grant(#[from] GrantError),
    #[error("{0}")]
    Config(String),
    /// The database failed. The cause is for the log, never for a client.
    #[error("database error")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl StoreError {
    pub fn backend(e: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self::Backend(Box::new(e))
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

/// The SCD as the BAL uses it.
#[async_trait]
pub trait Store: CertificationStore + ChainStore + Send + Sync + 'static {
    /// Fails when the database cannot answer: the readiness probe.
    async fn ping(&self) -> StoreResult<()>;

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

    /// Stores a new request. `Conflict` while the consumer has a live one on that topic.
    async fn request_subscription(&self, request: Subscription) -> StoreResult<Subscription>;
    async fn subscription(&self, id: SubscriptionId) -> StoreResult<Option<Subscription>>;
    async fn subscriptions(&self, query: &SubscriptionQuery) -> StoreResult<Vec<Subscription>>;
    /// Applies a decision through the state machine of `bal-core`, atomically.
    async fn decide(
        &self,
        id: SubscriptionId,
        action: &GrantAction,
        actor: &Actor,
        now: DateTime<Utc>,
    ) -> StoreResult<Subscription>;
    /// Writes down every accepted grant whose expiry has passed; returns them.
    async fn expire_due(&self, now: DateTime<Utc>) -> StoreResult<Vec<Subscription>>;

    async fn audit_log(&self, query: &AuditQuery) -> StoreResult<Vec<AuditEntry>>;

    /// True when `consumer` holds an accepted grant on `producer`'s topic that has not expired.
    async fn can_read(
        &self,
        consumer: &Username,
        producer: &Username,
        now: DateTime<Utc>,
    ) -> StoreResult<bool>;

    /// Stores a batch in one transaction, all or nothing; returns one id per item, in order.
    /// Reception times are stamped here, under the write lock, never earlier than any stamp
    /// before them.
    /// A redelivered item that matches the producer's latest measurement of the last 15 minutes
    /// with the same origin and payload hash is not stored again: it gets that measurement's id.
    async fn insert_measurements(&self, batch: &[NewMeasurement]) -> StoreResult<Vec<i64>>;
    async fn measurement(&self, id: i64) -> StoreResult<Option<Measurement>>;
    async fn measurements(&self, query: &MeasurementQuery) -> StoreResult<Vec<Measurement>>;

    /// Changes committed from now on, by this process.
    fn changes(&self) -> broadcast::Receiver<Change>;
}

/// The store as the rest of the BAL holds it.
pub type SharedStore = Arc<dyn Store>;

/// Opens the store named by `url`. Only `sqlite:` URLs exist so far.
pub async fn connect(url: &str) -> StoreResult<SharedStore> {
    if url.starts_with("sqlite:") {
        Ok(Arc::new(SqliteStore::connect(url).await?))
    } else {
        Err(StoreError::Config(format!(
            "unsupported database URL scheme in {:?}: use sqlite://PATH",
            url.split(':').next().unwrap_or_default()
        )))
    }
}
