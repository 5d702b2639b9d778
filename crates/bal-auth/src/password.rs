//! Password hashing with Argon2id (PHC strings), off the async threads.

use std::sync::OnceLock;

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};

/// Hashing or checking failed for a reason that is the BAL's, not the user's.
#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    #[error("argon2: {0}")]
    Argon2(argon2::password_hash::Error),
    #[error("password task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// A password that breaks the rules; the message is for the person choosing it.
#[derive(Debug, thiserror::Error)]
#[error("password must be {MIN_LEN} to {MAX_LEN} characters long")]
pub struct PolicyError;

pub const MIN_LEN: usize = 8;
/// Argon2 accepts any length, but hashing megabytes per attempt is a denial of service.
pub const MAX_LEN: usize = 256;

/// Checks the length rules.
pub fn check_policy(password: &str) -> Result<(), PolicyError> {
    let n = password.chars().count();
    if !(MIN_LEN..=MAX_LEN).contains(&n) {
        return Err(PolicyError);
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
pub async fn hash(password: String) -> Result<String, PasswordError> {
    tokio::task::spawn_blocking(move || hash_blocking(&password))
        .await?
        .map_err(PasswordError::Argon2)
}

/// A real hash of nothing in particular: verifying against it costs what a real check costs,
/// so a login for an unknown user takes as long as one with a wrong password.
fn dummy_hash() -> &'static str {
    static DUMMY: OnceLock<String> = OnceLock::new();
    DUMMY.get_or_init(|| hash_blocking("no user has this password").expect("argon2 works"))
}

/// True when `password` matches `phc`; with `None`, spends the same time and says no.
pub async fn verify(password: String, phc: Option<String>) -> Result<bool, PasswordError> {
    tokio::task::spawn_blocking(move || {
        let known = phc.is_some();
        let phc = phc.unwrap_or_else(|| dummy_hash().to_owned());
        let parsed = PasswordHash::new(&phc).map_err(PasswordError::Argon2)?;
        let matches = Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok();
        Ok(known && matches)
    })
    .await?
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
