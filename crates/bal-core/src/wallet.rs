//! Wallet addresses: the public identity of every user on the chain.

use std::fmt;
use std::str::FromStr;

use alloy_primitives::Address;

use crate::serde_via_str;

/// A 20-byte Ethereum address, shown EIP-55 checksummed.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WalletAddress(Address);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WalletError {
    #[error("wallet address must be 0x followed by 40 hex digits")]
    Format,
    #[error("wallet address has mixed case but a wrong EIP-55 checksum")]
    Checksum,
}

impl WalletAddress {
    pub fn parse(raw: &str) -> Result<Self, WalletError> {
        let hex = raw.strip_prefix("0x").ok_or(WalletError::Format)?;
        if hex.len() != 40 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(WalletError::Format);
        }
        let address = Address::from_str(raw).map_err(|_| WalletError::Format)?;
        // All-lower or all-upper carries no checksum; mixed case must carry a correct one,
        // which catches a mistyped address instead of sending data to a stranger.
        let mixed = hex.bytes().any(|b| b.is_ascii_lowercase())
            && hex.bytes().any(|b| b.is_ascii_uppercase());
        if mixed && address.to_checksum(None) != raw {
            return Err(WalletError::Checksum);
        }
        Ok(Self(address))
    }

    pub fn address(&self) -> Address {
        self.0
    }
}

impl From<Address> for WalletAddress {
    fn from(a: Address) -> Self {
        Self(a)
    }
}

impl FromStr for WalletAddress {
    type Err = WalletError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Display for WalletAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.to_checksum(None))
    }
}

impl fmt::Debug for WalletAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "WalletAddress({self})")
    }
}

serde_via_str!(WalletAddress);

#[cfg(test)]
mod tests {
    use super::*;

    // An address from the seed deliverable's figure 4.
    const SEED: &str = "0x4FD173C02de9004A7aFB2b46f70bBA83c86f6B12";

    #[test]
    fn checksummed_lower_and_upper_case_addresses_parse() {
        let a = WalletAddress::parse(SEED).unwrap();
        assert_eq!(a.to_string(), SEED);
        let lower = format!("0x{}", SEED[2..].to_lowercase());
        assert_eq!(WalletAddress::parse(&lower).unwrap(), a);
        let upper = format!("0x{}", SEED[2..].to_uppercase());
        assert_eq!(WalletAddress::parse(&upper).unwrap(), a);
    }

    #[test]
    fn malformed_and_badly_checksummed_addresses_are_rejected() {
        assert_eq!(WalletAddress::parse(&SEED[2..]), Err(WalletError::Format));
        assert_eq!(WalletAddress::parse("0x1234"), Err(WalletError::Format));
        assert_eq!(
            WalletAddress::parse("0xZZD173C02de9004A7aFB2b46f70bBA83c86f6B12"),
            Err(WalletError::Format)
        );
        let flipped = SEED.replacen("FD", "fD", 1);
        assert_eq!(WalletAddress::parse(&flipped), Err(WalletError::Checksum));
    }
}
