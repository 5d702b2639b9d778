//! The payload field parser (JSON objects and PMU/CSV lines): never panics, keeps at most
//! `MAX_FIELDS` fields, and every value it keeps is a finite number.
#![no_main]

use bal_core::measurement::{MAX_FIELDS, parse_fields};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|payload: &[u8]| {
    if let Some(fields) = parse_fields(payload) {
        assert!(!fields.is_empty(), "Some(fields) is never empty");
        assert!(fields.len() <= MAX_FIELDS, "{} fields", fields.len());
        assert!(fields.values().all(|v| v.is_finite()));
    }
});
