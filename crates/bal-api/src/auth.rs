//! Bearer sessions, and the extractors that turn a request into a caller.
//!
//! A token is 256 random bits shown to the client once; the database keeps only its SHA-256,
//! so a leaked database holds no usable token. Handlers take [`AuthUser`] (any role) or one of
//! the role extractors ([`Admin`], [`Producer`], [`Consumer`]): a handler cannot forget to
//! authenticate, and a wrong role is a 403 before the handler runs.

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use bal_core::Role;
use bal_scd::User;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::AppState;
use crate::error::ApiError;

/// A rate-limited password check under way. Failures are counted twice: in this process,
/// which also counts the attempts still under way (so that concurrent guesses cannot overrun
/// the limit), and in the database, so that the limits hold across replicas.
#[must_use]
pub struct LoginAttempt<'a> {
    local: bal_auth::limiter::Attempt<'a>,
    /// The claimed username's key and the client address's, as the database counts them.
    keys: [String; 2],
    state: &'a AppState,
}

/// Starts a rate-limited password check for `username` from `address`; 429 while either is
/// at its limit of failures, in this process or across all on the database.
pub async fn begin_attempt<'a>(
    state: &'a AppState,
    username: &str,
    address: std::net::IpAddr,
) -> Result<LoginAttempt<'a>, ApiError> {
    let too_many = |wait: std::time::Duration| ApiError::TooManyRequests {
        retry_after_secs: wait.as_secs().max(1),
    };
    let local = state.limiter.begin(username, address).map_err(too_many)?;
    let limits = &state.config.login_limits;
    let keys = [username_key(username), format!("addr:{address}")];
    let counted = state
        .store
        .login_failures(&keys, chrono::Utc::now() - window(state)?)
        .await?;
    if counted[0] >= limits.per_username || counted[1] >= limits.per_address {
        return Err(too_many(limits.window));
    }
    Ok(LoginAttempt { local, keys, state })
}

/// The database's key for a claimed username: the name itself when it is a valid one, else a
/// digest of it. Any text may be claimed, and a claimed name must neither reach the database
/// raw (PostgreSQL refuses a NUL in text, which would turn a wrong login into a 500) nor take
/// up to a request body's size per row; `#` never occurs in a valid name.
fn username_key(claimed: &str) -> String {
    match bal_core::Username::parse(claimed) {
        Ok(name) => format!("user:{name}"),
        Err(_) => format!("user#{}", hex::encode(Sha256::digest(claimed.as_bytes()))),
    }
}

fn window(state: &AppState) -> Result<chrono::Duration, ApiError> {
    chrono::Duration::from_std(state.config.login_limits.window).map_err(ApiError::internal)
}

impl LoginAttempt<'_> {
    /// Counts a failure; returns how long to hold the answer back.
    pub async fn failed(self) -> std::time::Duration {
        self.state.metrics.failed_login(bal_metrics::Channel::Https);
        let now = chrono::Utc::now();
        let forget = window(self.state).map(|w| now - w).unwrap_or(now);
        if let Err(e) = self
            .state
            .store
            .record_login_failure(&self.keys, now, forget)
            .await
        {
            // The answer is a refusal either way; only the count across replicas is missing.
            tracing::error!(error = %e.report(), "a failed login could not be counted in the database");
        }
        self.local.failed()
    }

    /// A success clears its username's failures (not its address's).
    pub async fn succeeded(self) {
        if let Err(e) = self.state.store.clear_login_failures(&self.keys[0]).await {
            tracing::warn!(error = %e.report(), "could not clear a username's failed logins");
        }
        self.local.succeeded();
    }
}

/// A new token and the digest to store for it.
pub fn new_token() -> (String, [u8; 32]) {
    let mut raw = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut raw);
    let token = URL_SAFE_NO_PAD.encode(raw);
    let digest = digest(&token);
    (token, digest)
}

pub fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// An authenticated caller of any role.
#[derive(Debug, Clone)]
pub struct AuthUser {
    pub user: User,
    /// The session's digest, so that logout can end exactly this session.
    pub session: [u8; 32],
}

const NO_TOKEN: &str = "missing or malformed bearer token";
const BAD_TOKEN: &str = "invalid or expired token";

impl FromRequestParts<AppState> for AuthUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let header = parts
            .headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .ok_or(ApiError::Unauthorized(NO_TOKEN))?;
        let token = header
            .strip_prefix("Bearer ")
            .map(str::trim)
            .filter(|t| !t.is_empty() && t.len() <= 128)
            .ok_or(ApiError::Unauthorized(NO_TOKEN))?;
        let session = digest(token);
        let user = state
            .store
            .session_user(session, chrono::Utc::now())
            .await?
            .ok_or(ApiError::Unauthorized(BAD_TOKEN))?;
        Ok(Self { user, session })
    }
}

macro_rules! role_extractor {
    ($(#[$doc:meta])* $name:ident, $role:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone)]
        pub struct $name(pub User);

        impl FromRequestParts<AppState> for $name {
            type Rejection = ApiError;

            async fn from_request_parts(
                parts: &mut Parts,
                state: &AppState,
            ) -> Result<Self, ApiError> {
                let AuthUser { user, .. } = AuthUser::from_request_parts(parts, state).await?;
                if user.role != $role {
                    return Err(ApiError::Forbidden(format!(
                        "this needs the {} role",
                        $role.as_str()
                    )));
                }
                Ok(Self(user))
            }
        }
    };
}

role_extractor!(
    /// An authenticated admin.
    Admin,
    Role::Admin
);
role_extractor!(
    /// An authenticated producer.
    Producer,
    Role::Producer
);
role_extractor!(
    /// An authenticated consumer.
    Consumer,
    Role::Consumer
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_unique_and_only_their_digest_matches() {
        let (a, da) = new_token();
        let (b, db) = new_token();
        assert_ne!(a, b);
        assert_ne!(da, db);
        assert_eq!(digest(&a), da);
        assert_eq!(a.len(), 43, "256 bits in unpadded base64url");
    }
}
