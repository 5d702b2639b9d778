//! Secrets the BAL must be able to give back, sealed under the master key.
//!
//! Only one kind exists: with `broker.kind = "mosquitto"`, each user's MQTT password, because
//! Mosquitto's Dynamic Security plugin accepts passwords only in plaintext and a wiped broker
//! must be repaired from the SCD alone. The Argon2id hash stays the only thing logins are
//! checked against; the sealed copy is written in the same transaction, so they never disagree.
//!
//! Format: `v1:` + base64 of nonce (12 bytes) ‖ AES-256-GCM ciphertext and tag. The owner's
//! username is the associated data: a sealed password moved to another user's row fails to open.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use rand::RngCore;
use zeroize::Zeroizing;

use crate::MasterKey;

const PREFIX: &str = "v1:";
const NONCE: usize = 12;

/// The sealing key, derived once from the master key (scrypt, so a passphrase-like master key
/// is as hard to guess here as it is for the wallets).
#[derive(Clone)]
pub struct Sealer {
    cipher: Aes256Gcm,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer(<redacted>)")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("a sealed secret is malformed")]
    Malformed,
    #[error("a sealed secret does not open under this master key (was the master key changed?)")]
    WrongKey,
}

impl Sealer {
    /// Derives the sealing key. Costs one scrypt run (tens of milliseconds): derive it once.
    pub fn new(master: &MasterKey) -> Self {
        // 2^14, r = 8, p = 1: the same order of cost as the wallets' keystores.
        let params = scrypt::Params::new(14, 8, 1, 32).expect("valid scrypt parameters");
        let mut key = Zeroizing::new([0u8; 32]);
        scrypt::scrypt(
            master.passphrase(),
            b"bal/sealed-secret/v1",
            &params,
            key.as_mut(),
        )
        .expect("32-byte output is valid");
        Self {
            cipher: Aes256Gcm::new_from_slice(key.as_ref()).expect("a 32-byte key"),
        }
    }

    /// Seals `secret` for `owner`. A fresh random nonce each time: sealing the same secret twice
    /// gives two different texts.
    pub fn seal(&self, owner: &str, secret: &str) -> String {
        let mut nonce = [0u8; NONCE];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let payload = Payload {
            msg: secret.as_bytes(),
            aad: owner.as_bytes(),
        };
        let sealed = self
            .cipher
            .encrypt(Nonce::from_slice(&nonce), payload)
            .expect("AES-GCM encryption of a short message cannot fail");
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        format!("{PREFIX}{}", STANDARD.encode(out))
    }

    /// Opens a text written by [`Sealer::seal`] for the same `owner`.
    pub fn open(&self, owner: &str, sealed: &str) -> Result<Zeroizing<String>, SealError> {
        let raw = sealed
            .strip_prefix(PREFIX)
            .and_then(|b| STANDARD.decode(b).ok())
            .filter(|r| r.len() > NONCE)
            .ok_or(SealError::Malformed)?;
        let (nonce, body) = raw.split_at(NONCE);
        let payload = Payload {
            msg: body,
            aad: owner.as_bytes(),
        };
        let plain = self
            .cipher
            .decrypt(Nonce::from_slice(nonce), payload)
            .map_err(|_| SealError::WrongKey)?;
        String::from_utf8(plain)
            .map(Zeroizing::new)
            .map_err(|_| SealError::Malformed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sealer(key: &str) -> Sealer {
        Sealer::new(&MasterKey::from_passphrase(key).unwrap())
    }

    #[test]
    fn a_sealed_secret_opens_for_its_owner_only() {
        let s = sealer("a master key of enough length");
        let sealed = s.seal("producer1", "device password");
        assert!(!sealed.contains("device password"));
        assert_eq!(
            s.open("producer1", &sealed).unwrap().as_str(),
            "device password"
        );
        assert!(matches!(
            s.open("producer2", &sealed),
            Err(SealError::WrongKey)
        ));
        assert_ne!(
            sealed,
            s.seal("producer1", "device password"),
            "fresh nonce"
        );
    }

    #[test]
    fn another_master_key_or_a_tampered_text_does_not_open() {
        let sealed = sealer("a master key of enough length").seal("u", "pw");
        let other = sealer("another master key, also long");
        assert!(matches!(other.open("u", &sealed), Err(SealError::WrongKey)));
        let s = sealer("a master key of enough length");
        let mut raw = STANDARD.decode(&sealed[PREFIX.len()..]).unwrap();
        let last = raw.len() - 1;
        raw[last] ^= 1;
        let tampered = format!("{PREFIX}{}", STANDARD.encode(raw));
        assert!(matches!(s.open("u", &tampered), Err(SealError::WrongKey)));
        for bad in ["", "v1:", "v1:!!", "v2:AAAA", "v1:AAAA"] {
            assert!(
                matches!(s.open("u", bad), Err(SealError::Malformed)),
                "{bad}"
            );
        }
    }
}
