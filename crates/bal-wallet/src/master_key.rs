//! The master key that encrypts every user's wallet key at rest.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rand::RngCore;
use zeroize::Zeroizing;

/// A secret passphrase. Its `Debug` never shows it.
#[derive(Clone)]
pub struct MasterKey(Zeroizing<String>);

#[derive(Debug, thiserror::Error)]
pub enum MasterKeyError {
    #[error("the master key must be at least {min} characters long", min = MasterKey::MIN_LEN)]
    TooShort,
    #[error("master key file {path} is readable by other users; run: chmod 600 {path}")]
    Permissions { path: PathBuf },
    #[error("cannot read or write master key file {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(<redacted>)")
    }
}

impl MasterKey {
    pub const MIN_LEN: usize = 16;

    pub fn from_passphrase(p: &str) -> Result<Self, MasterKeyError> {
        let p = p.trim();
        if p.len() < Self::MIN_LEN {
            return Err(MasterKeyError::TooShort);
        }
        Ok(Self(Zeroizing::new(p.to_owned())))
    }

    /// Reads the key from `path`, or creates it there (256 random bits as hex, mode 0600).
    pub fn load_or_create(path: &Path) -> Result<Self, MasterKeyError> {
        let text = load_or_create_secret(path)?;
        Self::from_passphrase(&text)
    }

    pub(crate) fn passphrase(&self) -> &[u8] {
        self.0.as_bytes()
    }

    /// Names this key without revealing it, so that a database can tell whether a process has
    /// the key its wallets were sealed with. scrypt with a fixed salt: a leaked fingerprint is
    /// no easier to attack than the keystores beside it (which use scrypt too).
    pub fn fingerprint(&self) -> String {
        let params = scrypt::Params::new(14, 8, 1, 16).expect("valid scrypt parameters");
        let mut out = [0u8; 16];
        scrypt::scrypt(
            self.passphrase(),
            b"bal-master-key-fingerprint/1",
            &params,
            &mut out,
        )
        .expect("16 bytes is a valid scrypt output length");
        out.iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// Reads a secret kept in a file of its own (the master key, the chain operator's key), or
/// creates the file with 256 random bits as hex, readable by its owner only. A file others can
/// read is refused rather than used.
pub fn load_or_create_secret(path: &Path) -> Result<Zeroizing<String>, MasterKeyError> {
    let io = |source| MasterKeyError::Io {
        path: path.to_owned(),
        source,
    };
    match fs::metadata(path) {
        Ok(meta) => {
            if meta.permissions().mode() & 0o077 != 0 {
                return Err(MasterKeyError::Permissions {
                    path: path.to_owned(),
                });
            }
            // Not trimmed: a master key is used exactly as written.
            Ok(Zeroizing::new(fs::read_to_string(path).map_err(io)?))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut bytes = Zeroizing::new([0u8; 32]);
            rand::rngs::OsRng.fill_bytes(bytes.as_mut());
            let hex = Zeroizing::new(hex::encode(bytes.as_ref()));
            let mut file = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .map_err(io)?;
            file.write_all(hex.as_bytes()).map_err(io)?;
            file.sync_all().map_err(io)?;
            Ok(hex)
        }
        Err(e) => Err(io(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_tell_keys_apart_and_never_show_them() {
        let a = MasterKey::from_passphrase("0123456789abcdef-one").unwrap();
        let b = MasterKey::from_passphrase("0123456789abcdef-two").unwrap();
        assert_eq!(a.fingerprint(), a.clone().fingerprint());
        assert_ne!(a.fingerprint(), b.fingerprint());
        assert_eq!(a.fingerprint().len(), 32);
        assert!(!a.fingerprint().contains("0123456789abcdef"));
    }

    #[test]
    fn the_key_file_is_created_private_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("master.key");
        let a = MasterKey::load_or_create(&path).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let b = MasterKey::load_or_create(&path).unwrap();
        assert_eq!(a.passphrase(), b.passphrase());
        assert_eq!(format!("{a:?}"), "MasterKey(<redacted>)");
    }

    #[test]
    fn a_world_readable_key_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("master.key");
        MasterKey::load_or_create(&path).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(
            MasterKey::load_or_create(&path),
            Err(MasterKeyError::Permissions { .. })
        ));
    }

    #[test]
    fn short_passphrases_are_refused() {
        assert!(matches!(
            MasterKey::from_passphrase("short"),
            Err(MasterKeyError::TooShort)
        ));
    }
}
