//! Creating users and changing passwords: the steps the API and the `bal user` commands share.

use bal_core::{Actor, Role, Username};
use bal_scd::{AccountStore, NewUser, User};
use bal_wallet::{MasterKey, Sealer, Wallet};
use chrono::Utc;
use rand::Rng;
use rand::distributions::Alphanumeric;

use crate::error::ApiError;
use bal_auth::password;

/// The keys user accounts are written with.
#[derive(Debug, Clone)]
pub struct AccountKeys {
    /// Encrypts every wallet key.
    pub master: MasterKey,
    /// Seals the MQTT password for an external broker (`broker.kind = "mosquitto"`); `None`
    /// with the embedded broker, which needs no reversible copy.
    pub broker: Option<Sealer>,
}

impl AccountKeys {
    fn seal(&self, username: &Username, password: &str) -> Option<String> {
        self.broker
            .as_ref()
            .map(|s| s.seal(username.as_str(), password))
    }
}

/// The name of the admin created on first start.
pub const FIRST_ADMIN: &str = "admin";

/// Creates a user: checks the password rules, hashes the password, generates the wallet and
/// stores it all (with its audit entry) in one step.
pub async fn create_user(
    store: &dyn AccountStore,
    keys: &AccountKeys,
    username: Username,
    role: Role,
    password: String,
    actor: &Actor,
) -> Result<User, ApiError> {
    password::check_policy(&password)?;
    let broker_secret = keys.seal(&username, &password);
    let password_hash = password::hash(password).await?;
    let master_key = keys.master.clone();
    let wallet = tokio::task::spawn_blocking(move || Wallet::generate(&master_key))
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::internal)?;
    let new = NewUser {
        username,
        role,
        password_hash,
        wallet: wallet.address,
        account: wallet.keystore,
        broker_secret,
    };
    Ok(store.create_user(new, actor, Utc::now()).await?)
}

/// Sets a new password; the user's sessions end.
pub async fn change_password(
    store: &dyn AccountStore,
    keys: &AccountKeys,
    username: &Username,
    password: String,
    actor: &Actor,
) -> Result<(), ApiError> {
    password::check_policy(&password)?;
    let broker_secret = keys.seal(username, &password);
    let hash = password::hash(password).await?;
    Ok(store
        .set_password(username, hash, broker_secret, actor, Utc::now())
        .await?)
}

/// After a successful login: keeps the sealed broker copy of a password the SCD has no copy of
/// yet (users created before the external broker was configured), so the broker can let the
/// user's devices in. Failures are logged only: the login itself succeeded.
pub async fn keep_broker_secret(
    store: &dyn AccountStore,
    keys: &AccountKeys,
    username: &Username,
    password_hash: &str,
    password: &str,
) {
    let Some(sealed) = keys.seal(username, password) else {
        return;
    };
    if let Err(e) = store
        .keep_broker_secret(username, password_hash, sealed)
        .await
    {
        tracing::error!(error = %e.report(), "keeping the broker password failed");
    }
}

/// A random password of 24 letters and digits (about 142 bits).
pub fn generate_password() -> String {
    rand::rngs::OsRng
        .sample_iter(&Alphanumeric)
        .take(24)
        .map(char::from)
        .collect()
}

/// What [`ensure_first_admin`] did.
#[derive(Debug, PartialEq, Eq)]
pub enum FirstAdmin {
    /// An admin already exists; nothing was done.
    Exists,
    /// `admin` was created with the configured password.
    Created,
    /// `admin` was created with this generated password, to be shown once.
    Generated(String),
}

/// On first start (no admin yet), creates `admin` with `password` or a generated one.
pub async fn ensure_first_admin(
    store: &dyn AccountStore,
    keys: &AccountKeys,
    password: Option<String>,
) -> Result<FirstAdmin, ApiError> {
    if store.users().await?.iter().any(|u| u.role == Role::Admin) {
        return Ok(FirstAdmin::Exists);
    }
    let name = Username::parse(FIRST_ADMIN).expect("a valid name");
    let (password, outcome) = match password {
        Some(p) => (p, FirstAdmin::Created),
        None => {
            let p = generate_password();
            (p.clone(), FirstAdmin::Generated(p))
        }
    };
    match create_user(store, keys, name, Role::Admin, password, &Actor::System).await {
        Ok(_) => Ok(outcome),
        // Replicas starting together: another one created it between the check and now.
        Err(ApiError::Conflict(_))
            if store.users().await?.iter().any(|u| u.role == Role::Admin) =>
        {
            Ok(FirstAdmin::Exists)
        }
        Err(e) => Err(e),
    }
}
