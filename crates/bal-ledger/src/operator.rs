//! The operator key: the account that deploys the contract and signs every anchor. It never
//! leaves the server; only its address is shown.

use std::path::Path;

use alloy_signer_local::PrivateKeySigner;
use anyhow::Context;

/// The key from the settings (hex), or the one kept in `file`, created on first use.
pub fn load(setting: Option<&str>, file: &Path) -> anyhow::Result<PrivateKeySigner> {
    let text = match setting {
        Some(hex) => zeroize::Zeroizing::new(hex.to_owned()),
        None => bal_wallet::load_or_create_secret(file)?,
    };
    let raw = text.trim();
    let raw = raw.strip_prefix("0x").unwrap_or(raw);
    let bytes = zeroize::Zeroizing::new(hex::decode(raw).ok().filter(|b| b.len() == 32).context(
        "chain.operator_key must be 32 bytes as hex (64 hex digits, with or without 0x)",
    )?);
    PrivateKeySigner::from_slice(&bytes).context("chain.operator_key is not a valid secp256k1 key")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_key_is_kept_and_a_bad_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("operator.key");
        let a = load(None, &file).unwrap();
        let b = load(None, &file).unwrap();
        assert_eq!(a.address(), b.address());
        // anvil's first dev key, with 0x.
        let k = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80";
        let anvil = load(Some(k), &file).unwrap();
        assert_eq!(
            anvil.address().to_checksum(None),
            "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"
        );
        let err = load(Some("0x1234"), &file).unwrap_err().to_string();
        assert!(err.contains("64 hex digits"), "{err}");
        assert!(!format!("{anvil:?}").contains("ac0974"));
    }
}
