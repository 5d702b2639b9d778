//! The `bal-proof/1` bundle parser and `bal verify`'s offline checks: any JSON is parsed or
//! refused without a panic; a bundle found valid is made invalid by changing its root, its
//! leaf or (when there is one) a sibling.
#![no_main]

use alloy_primitives::B256;
use bal_core::proof::ProofBundle;
use libfuzzer_sys::fuzz_target;

fn flip(b: &mut B256) {
    b.0[0] ^= 1;
}

fuzz_target!(|data: &[u8]| {
    let Ok(bundle) = serde_json::from_slice::<ProofBundle>(data) else {
        return;
    };
    // With the bundle's own payload (if any), and with the input itself as the payload.
    let verdict = bundle.verify_offline(None);
    let _ = bundle.verify_offline(Some(data));
    assert_eq!(verdict.valid, verdict.reason.is_none());
    let round_trip: ProofBundle =
        serde_json::from_str(&serde_json::to_string(&bundle).expect("serializes")).expect("parses");
    assert_eq!(round_trip, bundle);
    if verdict.valid {
        let mut wrong = bundle.clone();
        flip(&mut wrong.root);
        assert!(!wrong.verify_offline(None).valid, "another root passed");
        let mut wrong = bundle.clone();
        flip(&mut wrong.leaf);
        assert!(!wrong.verify_offline(None).valid, "another leaf passed");
        if let Some(sibling) = bundle.proof.first() {
            let mut wrong = bundle.clone();
            let mut other = *sibling;
            flip(&mut other);
            wrong.proof[0] = other;
            assert!(!wrong.verify_offline(None).valid, "another sibling passed");
        }
    }
});
