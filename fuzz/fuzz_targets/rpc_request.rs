//! JSON-RPC request bodies: parsing never panics, a batch is within its bound, every answer
//! carries the id it was asked with, and an answer is JSON that serializes.
#![no_main]

use bal_rpc::{Body, MAX_BATCH, Request, parse, reply};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fn answer(r: Request) {
    let Some(id) = r.id else {
        return;
    };
    let result = r.method.map(|_| Value::Bool(true));
    let out = reply(id.clone(), result);
    assert_eq!(out["id"], id);
    assert_eq!(out["jsonrpc"], "2.0");
    assert!(out.get("result").is_some() != out.get("error").is_some());
    serde_json::to_vec(&out).expect("an answer serializes");
}

fuzz_target!(|data: &[u8]| {
    match parse(data) {
        Body::Refused(e) => assert!(e.code == -32700 || e.code == -32600),
        Body::One(r) => answer(r),
        Body::Batch(rs) => {
            assert!(!rs.is_empty() && rs.len() <= MAX_BATCH);
            rs.into_iter().for_each(answer);
        }
    }
});
