//! The tree must give exactly what OpenZeppelin's `@openzeppelin/merkle-tree` gives for the same
//! values: leaf hashes, root and every proof. The vectors were made by that npm package
//! (`contracts/merkle-vectors.mjs` regenerates them; CI checks they still match).

use alloy_primitives::{Address, B256};
use bal_core::merkle::{LeafValues, MerkleTree, verify};

/// The values the generator script builds for index `i`.
fn values(i: u64) -> LeafValues {
    let mut hash = [0u8; 32];
    hash[24..].copy_from_slice(&(i + 1).to_be_bytes());
    LeafValues {
        producer_wallet: "0x4FD173C02de9004A7aFB2b46f70bBA83c86f6B12"
            .parse::<Address>()
            .unwrap(),
        topic: format!("platone/producer{}/meter-{i}", i % 3),
        id: i + 1,
        received_at_ms: 1_700_000_000_000 + i * 1000,
        payload_hash: B256::from(hash),
    }
}

fn b256(v: &serde_json::Value) -> B256 {
    v.as_str().unwrap().parse().unwrap()
}

#[test]
fn leaves_roots_and_proofs_match_openzeppelin() {
    let text = include_str!("fixtures/oz-merkle-vectors.jsonl");
    let mut checked = 0;
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let n = v["n"].as_u64().unwrap();
        let leaves: Vec<B256> = (0..n).map(|i| values(i).leaf()).collect();
        let expected: Vec<B256> = v["leaves"].as_array().unwrap().iter().map(b256).collect();
        assert_eq!(leaves, expected, "leaf hashes, n={n}");
        let tree = MerkleTree::new(&leaves).unwrap();
        assert_eq!(tree.root(), b256(&v["root"]), "root, n={n}");
        for (i, proof) in v["proofs"].as_array().unwrap().iter().enumerate() {
            let proof: Vec<B256> = proof.as_array().unwrap().iter().map(b256).collect();
            assert_eq!(tree.proof(i).unwrap(), proof, "proof {i}, n={n}");
            assert!(verify(&tree.root(), &leaves[i], &proof));
        }
        checked += 1;
    }
    assert_eq!(checked, 5);
}
