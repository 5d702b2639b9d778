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

/// Starts a rate-limited password check for `username` from `address`; 429 while either is
/// at its limit of failures.
pub fn begin_attempt<'a>(
    state: &'a AppState,
    username: &str,
    address: std::net::IpAddr,
) -> Result<bal_auth::limiter::Attempt<'a>, ApiError> {
    state
        .limiter
        .begin(username, address)
        .map_err(|wait| ApiError::TooManyRequests {
            retry_after_secs: wait.as_secs().max(1),
        })
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
