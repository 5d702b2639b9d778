//! Merkle batches: over any leaves (32-byte chunks of the input, up to 64), every leaf's proof
//! leads to the root, and no leaf's proof leads there for another leaf.
#![no_main]

use alloy_primitives::B256;
use bal_core::merkle::{MerkleTree, verify};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let leaves: Vec<B256> = data
        .chunks_exact(32)
        .take(64)
        .map(B256::from_slice)
        .collect();
    let Ok(tree) = MerkleTree::new(&leaves) else {
        assert!(leaves.is_empty());
        return;
    };
    assert_eq!(tree.len(), leaves.len());
    let root = tree.root();
    for (i, leaf) in leaves.iter().enumerate() {
        let proof = tree.proof(i).expect("a proof for every leaf");
        assert!(verify(&root, leaf, &proof), "leaf {i} does not verify");
        if let Some(other) = leaves.iter().find(|l| *l != leaf) {
            assert!(
                !verify(&root, other, &proof),
                "leaf {i}'s proof verifies another leaf"
            );
        }
    }
    assert!(tree.proof(leaves.len()).is_none());
});
