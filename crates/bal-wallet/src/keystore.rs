//! Web3 Secret Storage v3: scrypt derives a key from the passphrase, AES-128-CTR encrypts the
//! private key with its first half, and keccak256(second half ‖ ciphertext) authenticates it.
//! Any Ethereum tool (geth, alloy, ethers) can open the documents written here.

use aes::Aes128;
use alloy_primitives::{B256, keccak256};
use alloy_signer_local::PrivateKeySigner;
use ctr::cipher::{KeyIvInit, StreamCipher};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

type Aes128Ctr = ctr::Ctr128BE<Aes128>;

/// scrypt cost: 2^12 with r = 8, p = 1 (geth's "light" setting). The passphrase is a random
/// 256-bit master key, not a human password, so a slow KDF would add nothing but latency to
/// every user creation.
const SCRYPT_LOG_N: u8 = 12;
const SCRYPT_R: u32 = 8;
const SCRYPT_P: u32 = 1;
const DKLEN: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum KeystoreError {
    #[error("keystore is not a valid Web3 Secret Storage v3 document: {0}")]
    Format(String),
    #[error("keystore uses an unsupported {0}")]
    Unsupported(String),
    #[error("keystore MAC mismatch: wrong master key or corrupted keystore")]
    Mac,
    #[error("keystore holds an invalid private key")]
    Key,
}

#[derive(Serialize, Deserialize)]
struct Document {
    version: u32,
    id: String,
    address: String,
    crypto: Crypto,
}

#[derive(Serialize, Deserialize)]
struct Crypto {
    cipher: String,
    cipherparams: CipherParams,
    ciphertext: String,
    kdf: String,
    kdfparams: KdfParams,
    mac: String,
}

#[derive(Serialize, Deserialize)]
struct CipherParams {
    iv: String,
}

#[derive(Serialize, Deserialize)]
struct KdfParams {
    dklen: usize,
    n: u64,
    r: u32,
    p: u32,
    salt: String,
}

fn derive(
    passphrase: &[u8],
    salt: &[u8],
    log_n: u8,
    r: u32,
    p: u32,
) -> Result<Zeroizing<[u8; DKLEN]>, KeystoreError> {
    let params = scrypt::Params::new(log_n, r, p, DKLEN)
        .map_err(|_| KeystoreError::Unsupported("scrypt parameter set".into()))?;
    let mut dk = Zeroizing::new([0u8; DKLEN]);
    scrypt::scrypt(passphrase, salt, &params, dk.as_mut())
        .map_err(|_| KeystoreError::Unsupported("scrypt output length".into()))?;
    Ok(dk)
}

fn mac(dk: &[u8; DKLEN], ciphertext: &[u8]) -> B256 {
    let mut input = Vec::with_capacity(16 + ciphertext.len());
    input.extend_from_slice(&dk[16..32]);
    input.extend_from_slice(ciphertext);
    keccak256(&input)
}

fn ctr_apply(dk: &[u8; DKLEN], iv: &[u8; 16], data: &mut [u8]) {
    let key: [u8; 16] = dk[..16].try_into().expect("dk is 32 bytes");
    Aes128Ctr::new(&key.into(), iv.into()).apply_keystream(data);
}

/// Encrypts `signer`'s private key under `passphrase` into a v3 JSON document.
pub fn encrypt(signer: &PrivateKeySigner, passphrase: &[u8]) -> Result<String, KeystoreError> {
    let mut salt = [0u8; 32];
    let mut iv = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut salt);
    rand::rngs::OsRng.fill_bytes(&mut iv);
    let dk = derive(passphrase, &salt, SCRYPT_LOG_N, SCRYPT_R, SCRYPT_P)?;
    let mut ciphertext = signer.to_bytes().0;
    ctr_apply(&dk, &iv, &mut ciphertext);
    let doc = Document {
        version: 3,
        id: uuid::Uuid::new_v4().to_string(),
        address: hex::encode(signer.address()),
        crypto: Crypto {
            cipher: "aes-128-ctr".into(),
            cipherparams: CipherParams {
                iv: hex::encode(iv),
            },
            ciphertext: hex::encode(ciphertext),
            kdf: "scrypt".into(),
            kdfparams: KdfParams {
                dklen: DKLEN,
                n: 1 << SCRYPT_LOG_N,
                r: SCRYPT_R,
                p: SCRYPT_P,
                salt: hex::encode(salt),
            },
            mac: hex::encode(mac(&dk, &ciphertext)),
        },
    };
    serde_json::to_string(&doc).map_err(|e| KeystoreError::Format(e.to_string()))
}

fn unhex(field: &str, value: &str) -> Result<Vec<u8>, KeystoreError> {
    hex::decode(value.trim_start_matches("0x"))
        .map_err(|_| KeystoreError::Format(format!("{field} is not hex")))
}

/// Decrypts a v3 document written by [`encrypt`] (or any tool using scrypt and AES-128-CTR).
pub fn decrypt(document: &str, passphrase: &[u8]) -> Result<PrivateKeySigner, KeystoreError> {
    let doc: Document =
        serde_json::from_str(document).map_err(|e| KeystoreError::Format(e.to_string()))?;
    if doc.version != 3 {
        return Err(KeystoreError::Unsupported(format!(
            "version {}",
            doc.version
        )));
    }
    let c = &doc.crypto;
    if c.cipher != "aes-128-ctr" {
        return Err(KeystoreError::Unsupported(format!("cipher {}", c.cipher)));
    }
    if c.kdf != "scrypt" {
        return Err(KeystoreError::Unsupported(format!("kdf {}", c.kdf)));
    }
    let k = &c.kdfparams;
    if k.dklen != DKLEN || !k.n.is_power_of_two() || k.n < 2 {
        return Err(KeystoreError::Unsupported("scrypt parameter set".into()));
    }
    let salt = unhex("salt", &k.salt)?;
    let iv: [u8; 16] = unhex("iv", &c.cipherparams.iv)?
        .try_into()
        .map_err(|_| KeystoreError::Format("iv must be 16 bytes".into()))?;
    let mut plain = Zeroizing::new(unhex("ciphertext", &c.ciphertext)?);
    if plain.len() != 32 {
        return Err(KeystoreError::Format("ciphertext must be 32 bytes".into()));
    }
    let log_n = k.n.trailing_zeros() as u8;
    let dk = derive(passphrase, &salt, log_n, k.r, k.p)?;
    let expected = unhex("mac", &c.mac)?;
    if !bool::from(mac(&dk, &plain).as_slice().ct_eq(&expected)) {
        return Err(KeystoreError::Mac);
    }
    ctr_apply(&dk, &iv, &mut plain);
    let key = B256::from_slice(&plain);
    PrivateKeySigner::from_bytes(&key).map_err(|_| KeystoreError::Key)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signer() -> PrivateKeySigner {
        let key: B256 = "0x7a28b5ba57c53603b0b07b56bba752f7784bf506fa95edc395f5cf6c7514fe9d"
            .parse()
            .unwrap();
        PrivateKeySigner::from_bytes(&key).unwrap()
    }

    #[test]
    fn documents_round_trip() {
        let s = signer();
        let doc = encrypt(&s, b"testpassword").unwrap();
        let back = decrypt(&doc, b"testpassword").unwrap();
        assert_eq!(back.to_bytes(), s.to_bytes());
        assert!(
            !doc.contains("7a28b5ba"),
            "the plaintext key must not appear"
        );
    }

    #[test]
    fn documents_open_with_alloys_independent_keystore_reader() {
        let s = signer();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key.json");
        std::fs::write(&path, encrypt(&s, b"testpassword").unwrap()).unwrap();
        let opened = PrivateKeySigner::decrypt_keystore(&path, "testpassword").unwrap();
        assert_eq!(opened.address(), s.address());
    }

    #[test]
    fn a_tampered_ciphertext_fails_the_mac() {
        let doc = encrypt(&signer(), b"pw").unwrap();
        let mut v: serde_json::Value = serde_json::from_str(&doc).unwrap();
        let ct = v["crypto"]["ciphertext"].as_str().unwrap().to_owned();
        let flipped = if ct.starts_with('0') { "1" } else { "0" };
        v["crypto"]["ciphertext"] = format!("{flipped}{}", &ct[1..]).into();
        assert!(matches!(
            decrypt(&v.to_string(), b"pw"),
            Err(KeystoreError::Mac)
        ));
    }

    #[test]
    fn malformed_documents_are_clear_errors() {
        assert!(matches!(
            decrypt("{}", b"pw"),
            Err(KeystoreError::Format(_))
        ));
        let doc = encrypt(&signer(), b"pw")
            .unwrap()
            .replace("aes-128-ctr", "aes-256-gcm");
        assert!(matches!(
            decrypt(&doc, b"pw"),
            Err(KeystoreError::Unsupported(_))
        ));
    }
}
