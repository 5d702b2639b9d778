//! The `Certification` contract: its interface for encoding calls and decoding results, events
//! and errors, and the compiled bytecode committed in `contracts/artifacts/` (so that building
//! the BAL needs no Solidity compiler; CI checks that the artifact matches the source).

use std::sync::OnceLock;

use alloy_primitives::{Bytes, hex};
use alloy_sol_types::{SolError, SolInterface, sol};

sol! {
    /// `contracts/Certification.sol`, as callers see it.
    #[derive(Debug, PartialEq, Eq)]
    interface ICertification {
        event Anchored(bytes32 indexed root, address indexed anchorer, uint32 leafCount, bytes32 batchId);
        event AnchorerSet(address indexed anchorer, bool allowed);

        error NotOwner(address caller);
        error NotAnchorer(address caller);
        error EmptyBatch();
        error AlreadyAnchored(bytes32 root, uint64 blockNumber);

        function owner() external view returns (address);
        function isAnchorer(address anchorer) external view returns (bool);
        function setAnchorer(address anchorer, bool allowed) external;
        function anchor(bytes32 root, uint32 leafCount, bytes32 batchId) external;
        function anchoredAt(bytes32 root) external view returns (uint64);
        function verify(bytes32 root, bytes32[] calldata proof, bytes32 leaf) external view returns (bool);
    }
}

pub use ICertification::{
    Anchored, ICertificationErrors as ContractError, anchorCall, anchoredAtCall, isAnchorerCall,
    ownerCall, setAnchorerCall, verifyCall,
};

/// The committed artifact of `contracts/compile.mjs`.
const ARTIFACT: &str = include_str!("../../../contracts/artifacts/Certification.json");

#[derive(serde::Deserialize)]
struct Artifact {
    bytecode: String,
}

/// The creation bytecode (constructor included): what deploying sends.
pub fn creation_bytecode() -> &'static Bytes {
    static CODE: OnceLock<Bytes> = OnceLock::new();
    CODE.get_or_init(|| {
        let a: Artifact = serde_json::from_str(ARTIFACT).expect("committed artifact is JSON");
        hex::decode(&a.bytecode)
            .expect("committed bytecode is hex")
            .into()
    })
}

/// Reads revert data as the contract's custom error, or as a plain `Error(string)`.
pub fn revert_reason(data: &[u8]) -> String {
    if let Ok(e) = ContractError::abi_decode(data) {
        return match e {
            ContractError::NotOwner(e) => format!("NotOwner({})", e.caller),
            ContractError::NotAnchorer(e) => format!("NotAnchorer({})", e.caller),
            ContractError::EmptyBatch(_) => "EmptyBatch()".to_owned(),
            ContractError::AlreadyAnchored(e) => {
                format!("AlreadyAnchored({}, {})", e.root, e.blockNumber)
            }
        };
    }
    if let Ok(s) = alloy_sol_types::Revert::abi_decode(data) {
        return s.reason;
    }
    if data.is_empty() {
        "no reason given".to_owned()
    } else {
        format!("0x{}", hex::encode(data))
    }
}

/// The block an `AlreadyAnchored` revert names.
pub fn already_anchored(data: &[u8]) -> Option<u64> {
    match ContractError::abi_decode(data) {
        Ok(ContractError::AlreadyAnchored(e)) => Some(e.blockNumber),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy_sol_types::SolCall;

    #[test]
    fn the_artifact_loads_and_errors_decode() {
        assert!(creation_bytecode().len() > 1000);
        let data = ICertification::AlreadyAnchored {
            root: [7u8; 32].into(),
            blockNumber: 9,
        }
        .abi_encode();
        assert_eq!(already_anchored(&data), Some(9));
        assert!(revert_reason(&data).starts_with("AlreadyAnchored(0x0707"));
        assert_eq!(
            revert_reason(&ICertification::EmptyBatch {}.abi_encode()),
            "EmptyBatch()"
        );
        assert_eq!(revert_reason(&[]), "no reason given");
    }

    /// The hand-written interface above must match the compiled contract's ABI exactly.
    #[test]
    fn the_interface_matches_the_artifact_abi() {
        let artifact: serde_json::Value = serde_json::from_str(ARTIFACT).unwrap();
        let mut in_abi: Vec<String> = artifact["abi"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["type"] != "constructor")
            .map(|e| {
                let types: Vec<&str> = e["inputs"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|i| i["type"].as_str().unwrap())
                    .collect();
                format!("{}({})", e["name"].as_str().unwrap(), types.join(","))
            })
            .collect();
        in_abi.sort();
        let mut ours: Vec<String> = [
            ownerCall::SIGNATURE,
            isAnchorerCall::SIGNATURE,
            setAnchorerCall::SIGNATURE,
            anchorCall::SIGNATURE,
            anchoredAtCall::SIGNATURE,
            verifyCall::SIGNATURE,
            <Anchored as alloy_sol_types::SolEvent>::SIGNATURE,
            <ICertification::AnchorerSet as alloy_sol_types::SolEvent>::SIGNATURE,
            ICertification::NotOwner::SIGNATURE,
            ICertification::NotAnchorer::SIGNATURE,
            ICertification::EmptyBatch::SIGNATURE,
            ICertification::AlreadyAnchored::SIGNATURE,
        ]
        .map(str::to_owned)
        .to_vec();
        ours.sort();
        assert_eq!(ours, in_abi);
    }
}
