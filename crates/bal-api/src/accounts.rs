//! Creating users and changing passwords: the steps the API and the `bal user` commands share.

use bal_core::{Actor, Role, Username};
use bal_scd::{NewUser, Store, User};
use bal_wallet::{MasterKey, Wallet};
use chrono::Utc;
use rand::Rng;
use rand::distributions::Alphanumeric;

use crate::error::ApiError;
use bal_auth::password;

/// The name of the admin created on first start.
pub const FIRST_ADMIN: &str = "admin";

/// Creates a user: checks the password rules, hashes the password, generates the wallet and
/// stores it all (with its audit entry) in one step.
pub async fn create_user(
    store: &dyn Store,
    master_key: &MasterKey,
    username: Username,
    role: Role,
    password: String,
    actor: &Actor,
) -> Result<User, ApiError> {
    password::check_policy(&password)?;
    let password_hash = password::hash(password).await?;
    let master_key = master_key.clone();
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
    };
    Ok(store.create_user(new, actor, Utc::now()).await?)
}

/// Sets a new password; the user's sessions end.
pub async fn change_password(
    store: &dyn Store,
    username: &Username,
    password: String,
    actor: &Actor,
) -> Result<(), ApiError> {
    password::check_policy(&password)?;
    let hash = password::hash(password).await?;
    Ok(store
        .set_password(username, hash, actor, Utc::now())
        .await?)
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
    store: &dyn Store,
    master_key: &MasterKey,
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
    create_user(
        store,
        master_key,
        name,
        Role::Admin,
        password,
        &Actor::System,
    )
    .await?;
    Ok(outcome)
}
