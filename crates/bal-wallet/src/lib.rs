//! Users' wallets: a secp256k1 key per user, whose address is the user's `wallet` and whose
//! private key is kept only encrypted, as a Web3 Secret Storage v3 document (`account`).
//!
//! - [`MasterKey`]: the secret every keystore is encrypted under, from the settings or a 0600
//!   file in the data folder.
//! - [`sealed`]: secrets the BAL must give back (Mosquitto passwords), sealed with AES-GCM.
//! - [`keystore`]: encrypting and decrypting Web3 Secret Storage v3 documents.
//! - [`Wallet::generate`]: a new key, returned already encrypted; the plaintext key never leaves
//!   this crate except as a signer.
#![forbid(unsafe_code)]

pub mod keystore;
mod master_key;
pub mod sealed;

use alloy_primitives::B256;
use alloy_signer_local::PrivateKeySigner;
use bal_core::WalletAddress;
use rand::RngCore;
use zeroize::Zeroizing;

pub use keystore::KeystoreError;
pub use master_key::{MasterKey, MasterKeyError, load_or_create_secret};
pub use sealed::{SealError, Sealer};

/// A freshly generated wallet: its public address and its encrypted key.
#[derive(Clone)]
pub struct Wallet {
    pub address: WalletAddress,
    /// The Web3 Secret Storage v3 JSON document, encrypted under the master key.
    pub keystore: String,
}

impl std::fmt::Debug for Wallet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wallet")
            .field("address", &self.address)
            .finish_non_exhaustive()
    }
}

impl Wallet {
    /// Generates a random secp256k1 key and encrypts it under `master`.
    pub fn generate(master: &MasterKey) -> Result<Self, KeystoreError> {
        let signer = loop {
            let mut bytes = Zeroizing::new([0u8; 32]);
            rand::rngs::OsRng.fill_bytes(bytes.as_mut());
            // A scalar of zero or above the curve order is invalid (odds ~2^-128); draw again.
            if let Ok(signer) = PrivateKeySigner::from_bytes(&B256::from(*bytes)) {
                break signer;
            }
        };
        let keystore = keystore::encrypt(&signer, master.passphrase())?;
        Ok(Self {
            address: signer.address().into(),
            keystore,
        })
    }

    /// Decrypts a keystore into a signer. Only the BAL's own signing code calls this; the key
    /// itself is never returned to a client.
    pub fn unlock(keystore: &str, master: &MasterKey) -> Result<PrivateKeySigner, KeystoreError> {
        keystore::decrypt(keystore, master.passphrase())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_wallet_unlocks_to_the_same_address() {
        let master = MasterKey::from_passphrase("correct horse battery staple").unwrap();
        let w = Wallet::generate(&master).unwrap();
        let signer = Wallet::unlock(&w.keystore, &master).unwrap();
        assert_eq!(WalletAddress::from(signer.address()), w.address);
        assert!(!format!("{w:?}").contains("ciphertext"));
    }

    #[test]
    fn a_wrong_master_key_does_not_unlock() {
        let master = MasterKey::from_passphrase("correct horse battery staple").unwrap();
        let other = MasterKey::from_passphrase("incorrect horse battery staple").unwrap();
        let w = Wallet::generate(&master).unwrap();
        assert!(matches!(
            Wallet::unlock(&w.keystore, &other),
            Err(KeystoreError::Mac)
        ));
    }

    #[test]
    fn two_wallets_never_share_a_key() {
        let master = MasterKey::from_passphrase("correct horse battery staple").unwrap();
        let a = Wallet::generate(&master).unwrap();
        let b = Wallet::generate(&master).unwrap();
        assert_ne!(a.address, b.address);
    }
}
