//! Properties of Merkle batches over random trees: every leaf's proof verifies, and a single
//! flipped bit anywhere — in the leaf values, the leaf, any proof element or the root — makes
//! verification fail.

use alloy_primitives::{Address, B256, keccak256};
use bal_core::merkle::{LeafValues, MerkleTree, verify};
use proptest::prelude::*;

fn values(seed: u64, n: usize) -> Vec<LeafValues> {
    (0..n as u64)
        .map(|i| LeafValues {
            producer_wallet: Address::from_word(keccak256((seed ^ i).to_be_bytes())),
            topic: format!("platone/p{}/d{}", seed % 7, i % 5),
            id: seed.wrapping_add(i),
            received_at_ms: 1_700_000_000_000 + i,
            payload_hash: keccak256([seed.to_be_bytes(), i.to_be_bytes()].concat()),
        })
        .collect()
}

fn flip(mut b: B256, bit: usize) -> B256 {
    b.0[bit / 8 % 32] ^= 1 << (bit % 8);
    b
}

/// Where to flip a bit.
#[derive(Debug, Clone)]
enum Target {
    Leaf,
    Root,
    /// The proof element at this position (modulo the proof's length).
    Proof(usize),
    /// A leaf value: the id, the time, the topic's first byte, the wallet, the payload hash.
    Value(usize),
}

fn target() -> impl Strategy<Value = Target> {
    prop_oneof![
        Just(Target::Leaf),
        Just(Target::Root),
        (0usize..32).prop_map(Target::Proof),
        (0usize..5).prop_map(Target::Value),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn every_proof_verifies(seed in any::<u64>(), n in 1usize..300) {
        let v = values(seed, n);
        let leaves: Vec<B256> = v.iter().map(LeafValues::leaf).collect();
        let t = MerkleTree::new(&leaves).unwrap();
        for (i, leaf) in leaves.iter().enumerate() {
            prop_assert!(verify(&t.root(), leaf, &t.proof(i).unwrap()));
        }
    }

    #[test]
    fn a_flipped_bit_anywhere_fails(
        seed in any::<u64>(),
        n in 1usize..300,
        pick in any::<usize>(),
        bit in 0usize..256,
        at in target(),
    ) {
        let mut v = values(seed, n);
        let leaves: Vec<B256> = v.iter().map(LeafValues::leaf).collect();
        let t = MerkleTree::new(&leaves).unwrap();
        let i = pick % n;
        let mut leaf = leaves[i];
        let mut root = t.root();
        let mut proof = t.proof(i).unwrap();
        match at {
            Target::Leaf => leaf = flip(leaf, bit),
            Target::Root => root = flip(root, bit),
            Target::Proof(k) => {
                // A one-leaf tree has no proof: flip the leaf instead.
                if proof.is_empty() {
                    leaf = flip(leaf, bit);
                } else {
                    let k = k % proof.len();
                    proof[k] = flip(proof[k], bit);
                }
            }
            Target::Value(k) => {
                let x = &mut v[i];
                match k {
                    0 => x.id ^= 1 << (bit % 64),
                    1 => x.received_at_ms ^= 1 << (bit % 64),
                    2 => {
                        let mut bytes = x.topic.clone().into_bytes();
                        bytes[0] ^= 1 << (bit % 7);
                        x.topic = String::from_utf8(bytes).unwrap();
                    }
                    3 => x.producer_wallet.0[bit / 8 % 20] ^= 1 << (bit % 8),
                    _ => x.payload_hash = flip(x.payload_hash, bit),
                }
                leaf = x.leaf();
            }
        }
        prop_assert!(!verify(&root, &leaf, &proof));
    }
}
