//! Password hashing with Argon2id (PHC strings), off the async threads.

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use std::sync::OnceLock;

use crate::error::ApiError;

pub const MIN_LEN: usize = 8;
/// Argon2 accepts any length, but hashing megabytes per attempt is a denial of service.
pub const MAX_LEN: usize = 256;

/// Checks the length rules; the message is safe to show to the person choosing it.
pub fn check_policy(password: &str) -> Result<(), ApiError> {
    let n = password.chars().count();
    if !(MIN_LEN..=MAX_LEN).contains(&n) {
        return Err(ApiError::Unprocessable(format!(
            "password must be {MIN_LEN} to {MAX_LEN} characters long"
        )));
    }
    Ok(())
}

fn hash_blocking(password: &str) -> Result<String, argon2::password_hash::Error> {
    let salt = SaltString::generate(&mut rand::rngs::OsRng);
    Ok(Argon2::default()
        .hash_password(password.as_bytes(), &salt)?
        .to_string())
}

/// Hashes `password` with Argon2id and a fresh salt.
pub async fn hash(password: String) -> Result<String, ApiError> {
    tokio::task::spawn_blocking(move || hash_blocking(&password))
        .await
        .map_err(ApiError::internal)?
        .map_err(|e| ApiError::internal(anyhow::anyhow!("argon2: {e}")))
}

/// A real hash of nothing in particular: verifying against it costs what a real check costs,
/// so a login for an unknown user takes as long as one with a wrong password.
fn dummy_hash() -> &'static str {
    static DUMMY: OnceLock<String> = OnceLock::new();
    DUMMY.get_or_init(|| hash_blocking("no user has this password").expect("argon2 works"))
}

/// True when `password` matches `phc`; with `None`, spends the same time and says no.
pub async fn verify(password: String, phc: Option<String>) -> Result<bool, ApiError> {
    tokio::task::spawn_blocking(move || {
        let known = phc.is_some();
        let phc = phc.unwrap_or_else(|| dummy_hash().to_owned());
        let parsed = PasswordHash::new(&phc)
            .map_err(|e| ApiError::internal(anyhow::anyhow!("stored hash unreadable: {e}")))?;
        let matches = Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok();
        Ok(known && matches)
    })
    .await
    .map_err(ApiError::internal)?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hashes_verify_only_the_right_password() {
        let phc = hash("s3cret-enough".into()).await.unwrap();
        assert!(phc.starts_with("$argon2id$"));
        assert!(
            verify("s3cret-enough".into(), Some(phc.clone()))
                .await
                .unwrap()
        );
        assert!(!verify("s3cret-enougH".into(), Some(phc)).await.unwrap());
        assert!(
            !verify("no user has this password".into(), None)
                .await
                .unwrap()
        );
    }

    #[test]
    fn the_length_policy_is_enforced() {
        assert!(check_policy("short").is_err());
        assert!(check_policy(&"x".repeat(MAX_LEN + 1)).is_err());
        assert!(check_policy("long enough").is_ok());
    }
}
