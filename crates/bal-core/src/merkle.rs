//! Merkle batches in the format of OpenZeppelin's `StandardMerkleTree`, so that a proof made here
//! verifies with OpenZeppelin's `MerkleProof.verify` on chain and with `@openzeppelin/merkle-tree`
//! off chain:
//!
//! - a leaf is `keccak256(keccak256(abi.encode(values)))` (hashed twice, so that no inner node
//!   can pass for a leaf);
//! - a pair is hashed in sorted order, so a proof is a plain list of siblings;
//! - leaves are sorted by hash and laid out as a complete binary tree in one array, the leaves at
//!   its end, as the JavaScript library does, so that roots and proofs are identical.
//!
//! The BAL's leaf values are `(address producerWallet, string topic, uint64 id,
//! uint64 receivedAtMs, bytes32 payloadHash)`: [`LeafValues`].

use alloy_primitives::{Address, B256, keccak256};

/// The certified values of one measurement, in leaf order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeafValues {
    pub producer_wallet: Address,
    pub topic: String,
    pub id: u64,
    pub received_at_ms: u64,
    pub payload_hash: B256,
}

impl LeafValues {
    /// Solidity's `abi.encode(address, string, uint64, uint64, bytes32)`: five head words (the
    /// string's is the offset of its tail), then the string's length and its bytes padded to
    /// whole words.
    pub fn abi_encode(&self) -> Vec<u8> {
        let word = |bytes: &[u8]| {
            let mut w = [0u8; 32];
            w[32 - bytes.len()..].copy_from_slice(bytes);
            w
        };
        let text = self.topic.as_bytes();
        let padded = text.len().div_ceil(32) * 32;
        let mut out = Vec::with_capacity(7 * 32 + padded);
        out.extend_from_slice(&word(self.producer_wallet.as_slice()));
        out.extend_from_slice(&word(&(5u64 * 32).to_be_bytes()));
        out.extend_from_slice(&word(&self.id.to_be_bytes()));
        out.extend_from_slice(&word(&self.received_at_ms.to_be_bytes()));
        out.extend_from_slice(self.payload_hash.as_slice());
        out.extend_from_slice(&word(&(text.len() as u64).to_be_bytes()));
        out.extend_from_slice(text);
        out.resize(out.len() + padded - text.len(), 0);
        out
    }

    /// The leaf hash.
    pub fn leaf(&self) -> B256 {
        keccak256(keccak256(self.abi_encode()))
    }
}

/// The certified form of an audit entry (grant decisions are certified like measurements, so
/// consent has a proof too): its payload is this JSON text, built from the stored columns with
/// a fixed field order and `detail` exactly as stored, so it can be rebuilt byte for byte.
pub fn audit_payload(
    id: i64,
    at_ms: i64,
    actor: &str,
    action: &str,
    object: &str,
    detail: &str,
) -> Vec<u8> {
    let quote = |s: &str| serde_json::Value::from(s).to_string();
    format!(
        r#"{{"id":{id},"at":{at_ms},"actor":{},"action":{},"object":{},"detail":{detail}}}"#,
        quote(actor),
        quote(action),
        quote(object)
    )
    .into_bytes()
}

/// The topic an audit entry is certified under: `audit/<action>/<grant topic>`. Measurement
/// topics start with `platone/`, so the two kinds of leaf never read as each other.
pub fn audit_topic(action: &str, grant_topic: &str) -> String {
    format!("audit/{action}/{grant_topic}")
}

/// `keccak256` of the two nodes, smaller first.
pub fn hash_pair(a: &B256, b: &B256) -> B256 {
    let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
    let mut buf = [0u8; 64];
    buf[..32].copy_from_slice(lo.as_slice());
    buf[32..].copy_from_slice(hi.as_slice());
    keccak256(buf)
}

/// True when `proof` leads from `leaf` to `root`.
pub fn verify(root: &B256, leaf: &B256, proof: &[B256]) -> bool {
    proof
        .iter()
        .fold(*leaf, |node, sibling| hash_pair(&node, sibling))
        == *root
}

/// A tree over at least one leaf.
#[derive(Debug, Clone)]
pub struct MerkleTree {
    /// Node `i` has children `2i + 1` and `2i + 2`; the root is node 0.
    nodes: Vec<B256>,
    /// For each leaf, in the order given, its node.
    positions: Vec<usize>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a Merkle tree needs at least one leaf")]
pub struct EmptyTree;

impl MerkleTree {
    /// Builds the tree over `leaves` (leaf hashes, in any order).
    pub fn new(leaves: &[B256]) -> Result<Self, EmptyTree> {
        if leaves.is_empty() {
            return Err(EmptyTree);
        }
        let n = leaves.len();
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by(|&a, &b| leaves[a].cmp(&leaves[b]));
        let mut nodes = vec![B256::ZERO; 2 * n - 1];
        let mut positions = vec![0; n];
        for (rank, &input) in order.iter().enumerate() {
            let at = nodes.len() - 1 - rank;
            nodes[at] = leaves[input];
            positions[input] = at;
        }
        for i in (0..nodes.len() - n).rev() {
            nodes[i] = hash_pair(&nodes[2 * i + 1], &nodes[2 * i + 2]);
        }
        Ok(Self { nodes, positions })
    }

    pub fn root(&self) -> B256 {
        self.nodes[0]
    }

    /// How many leaves.
    pub fn len(&self) -> usize {
        self.positions.len()
    }

    /// Never: a tree has at least one leaf.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The proof of the `index`-th leaf given to [`MerkleTree::new`]; `None` past the end.
    pub fn proof(&self, index: usize) -> Option<Vec<B256>> {
        let mut at = *self.positions.get(index)?;
        let mut proof = Vec::new();
        while at > 0 {
            let sibling = if at % 2 == 1 { at + 1 } else { at - 1 };
            proof.push(self.nodes[sibling]);
            at = (at - 1) / 2;
        }
        Some(proof)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaves(n: usize) -> Vec<B256> {
        (0..n as u64).map(|i| keccak256(i.to_be_bytes())).collect()
    }

    #[test]
    fn one_leaf_is_its_own_root_with_an_empty_proof() {
        let l = leaves(1);
        let t = MerkleTree::new(&l).unwrap();
        assert_eq!(t.root(), l[0]);
        assert_eq!(t.proof(0).unwrap(), Vec::<B256>::new());
        assert!(verify(&t.root(), &l[0], &[]));
        assert_eq!(MerkleTree::new(&[]).unwrap_err(), EmptyTree);
        assert_eq!(t.proof(1), None);
    }

    #[test]
    fn every_leaf_of_odd_and_even_trees_verifies_and_a_flipped_bit_fails() {
        for n in [2, 3, 4, 5, 7, 8, 9, 33, 100] {
            let l = leaves(n);
            let t = MerkleTree::new(&l).unwrap();
            for (i, leaf) in l.iter().enumerate() {
                let proof = t.proof(i).unwrap();
                assert!(verify(&t.root(), leaf, &proof), "n={n} i={i}");
                let mut forged = *leaf;
                forged.0[i % 32] ^= 1 << (i % 8);
                assert!(!verify(&t.root(), &forged, &proof), "n={n} i={i} leaf");
                if let Some(first) = proof.first() {
                    let mut bad = proof.clone();
                    bad[0] = B256::from(first.0.map(|b| b ^ 0x80));
                    assert!(!verify(&t.root(), leaf, &bad), "n={n} i={i} proof");
                }
            }
        }
    }

    #[test]
    fn the_order_of_the_leaves_does_not_change_the_root() {
        let mut l = leaves(10);
        let root = MerkleTree::new(&l).unwrap().root();
        l.reverse();
        assert_eq!(MerkleTree::new(&l).unwrap().root(), root);
    }

    #[test]
    fn a_million_leaves_build_and_prove() {
        let l = leaves(1_000_000);
        let t = MerkleTree::new(&l).unwrap();
        for i in [0, 1, 499_999, 999_999] {
            let proof = t.proof(i).unwrap();
            assert!(proof.len() <= 20, "depth {}", proof.len());
            assert!(verify(&t.root(), &l[i], &proof));
        }
    }
}
