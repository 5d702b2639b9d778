//! Password hashing with Argon2id (PHC strings), off the async threads.

use std::sync::{Mutex, OnceLock};

use argon2::password_hash::{Output, ParamsString, PasswordHash, Salt, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};

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

/// Argon2's working memory (19 MiB per check with the default parameters), kept for reuse.
///
/// Left to the allocator, each check's 19 MiB was freed into the arena of whichever blocking
/// thread ran it and stayed there: the server's resident memory rose from 34 MB to ~100 MB
/// after the first logins, and a burst of hundreds of concurrent attempts (one per blocking
/// thread, up to 512) could ask for gigabytes. Here at most one check per core runs at a
/// time, each in a buffer taken from this pool, so the memory logins cost is allocated once
/// and bounded by cores x 19 MiB whatever the rate of attempts; the others wait their turn,
/// which costs them no more CPU than running at once would.
struct Workspace {
    /// One turn per core.
    turns: usize,
    permits: tokio::sync::Semaphore,
    buffers: Mutex<Vec<Vec<Block>>>,
}

fn workspace() -> &'static Workspace {
    static WORKSPACE: OnceLock<Workspace> = OnceLock::new();
    WORKSPACE.get_or_init(|| {
        let turns = std::thread::available_parallelism().map_or(1, |n| n.get());
        Workspace {
            turns,
            permits: tokio::sync::Semaphore::new(turns),
            buffers: Mutex::new(Vec::new()),
        }
    })
}

/// A buffer larger than the default parameters need (a hash made with other parameters) is
/// used once and freed, not kept.
const KEPT_BLOCKS: usize = Params::DEFAULT_M_COST as usize;

/// Computes Argon2 of `password` under `salt` with `argon2`'s parameters, in pooled memory.
fn compute(
    argon2: &Argon2<'_>,
    params: &Params,
    password: &[u8],
    salt: Salt<'_>,
) -> Result<Output, argon2::password_hash::Error> {
    let mut salt_bytes = [0u8; 64];
    let salt_bytes = salt.decode_b64(&mut salt_bytes)?;
    let blocks = params.block_count();
    let workspace = workspace();
    let pool = &workspace.buffers;
    let mut memory = pool
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .pop()
        .unwrap_or_default();
    if memory.len() < blocks {
        memory.resize(blocks, Block::default());
    }
    let output_len = params.output_len().unwrap_or(Params::DEFAULT_OUTPUT_LEN);
    let output = Output::init_with(output_len, |out| {
        argon2
            .hash_password_into_with_memory(password, salt_bytes, out, &mut memory[..blocks])
            .map_err(Into::into)
    });
    let mut kept = pool.lock().unwrap_or_else(|e| e.into_inner());
    if memory.len() <= KEPT_BLOCKS && kept.len() < workspace.turns {
        kept.push(memory);
    }
    output
}

/// Runs `work` on a blocking thread once one of the per-core turns is free.
async fn in_turn<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, tokio::task::JoinError> {
    let turn = workspace()
        .permits
        .acquire()
        .await
        .expect("the semaphore is never closed");
    tokio::task::spawn_blocking(move || {
        let _turn = turn;
        work()
    })
    .await
}

fn hash_blocking(password: &str) -> Result<String, argon2::password_hash::Error> {
    let salt = SaltString::generate(&mut rand::rngs::OsRng);
    let argon2 = Argon2::default();
    let params = argon2.params().clone();
    let output = compute(&argon2, &params, password.as_bytes(), salt.as_salt())?;
    Ok(PasswordHash {
        algorithm: Algorithm::default().ident(),
        version: Some(Version::default().into()),
        params: ParamsString::try_from(&params)?,
        salt: Some(salt.as_salt()),
        hash: Some(output),
    }
    .to_string())
}

/// True when `password` gives `phc`'s output under `phc`'s own algorithm and parameters.
fn verify_blocking(password: &str, phc: &str) -> Result<bool, argon2::password_hash::Error> {
    let parsed = PasswordHash::new(phc)?;
    let (Some(salt), Some(expected)) = (parsed.salt, parsed.hash) else {
        return Ok(false);
    };
    let params = Params::try_from(&parsed)?;
    let version = parsed
        .version
        .map(Version::try_from)
        .transpose()?
        .unwrap_or_default();
    let argon2 = Argon2::new(
        Algorithm::try_from(parsed.algorithm)?,
        version,
        params.clone(),
    );
    // `Output`'s equality is constant-time.
    Ok(compute(&argon2, &params, password.as_bytes(), salt)? == expected)
}

/// Hashes `password` with Argon2id and a fresh salt.
pub async fn hash(password: String) -> Result<String, PasswordError> {
    in_turn(move || hash_blocking(&password))
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
    in_turn(move || {
        let known = phc.is_some();
        let phc = phc.unwrap_or_else(|| dummy_hash().to_owned());
        let matches = verify_blocking(&password, &phc).map_err(PasswordError::Argon2)?;
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
    fn hashes_are_the_argon2_crates_own() {
        use argon2::password_hash::{PasswordHasher, PasswordVerifier};
        // Ours verify with the crate's verifier…
        let ours = hash_blocking("interoperable").unwrap();
        let parsed = PasswordHash::new(&ours).unwrap();
        assert!(
            Argon2::default()
                .verify_password(b"interoperable", &parsed)
                .is_ok()
        );
        // …and the crate's (as stored by earlier releases) verify with ours, also with
        // other parameters than the default.
        let salt = SaltString::generate(&mut rand::rngs::OsRng);
        let theirs = Argon2::default()
            .hash_password(b"stored-before", &salt)
            .unwrap()
            .to_string();
        assert!(verify_blocking("stored-before", &theirs).unwrap());
        assert!(!verify_blocking("stored-befor", &theirs).unwrap());
        let small = Argon2::new(
            Algorithm::Argon2i,
            Version::V0x10,
            Params::new(64, 3, 1, Some(24)).unwrap(),
        )
        .hash_password(b"small", &salt)
        .unwrap()
        .to_string();
        assert!(verify_blocking("small", &small).unwrap());
        assert!(!verify_blocking("smalL", &small).unwrap());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_checks_reuse_a_bounded_pool_of_memory() {
        let phc = hash("bounded-memory".into()).await.unwrap();
        let checks: Vec<_> = (0..16)
            .map(|_| tokio::spawn(verify("bounded-memory".into(), Some(phc.clone()))))
            .collect();
        for c in checks {
            assert!(c.await.unwrap().unwrap());
        }
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let kept = workspace().buffers.lock().unwrap().len();
        assert!(
            (1..=cores).contains(&kept),
            "{kept} buffers kept for {cores} cores"
        );
    }

    #[test]
    fn the_length_policy_is_enforced() {
        assert!(check_policy("short").is_err());
        assert!(check_policy(&"x".repeat(MAX_LEN + 1)).is_err());
        assert!(check_policy("long enough").is_ok());
    }
}
