//! HTTPS upload bodies: the first byte picks the format (even: a JSON array, odd: NDJSON), the
//! rest is the body. An accepted upload has 1 to MAX_READINGS payloads, each one JSON value
//! (compact) or a string's text; nothing panics.
#![no_main]

use bal_core::upload::{MAX_READINGS, UploadError, UploadFormat, split_upload};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let format = if selector % 2 == 0 {
        UploadFormat::JsonArray
    } else {
        UploadFormat::Ndjson
    };
    match split_upload(format, body) {
        Ok(payloads) => {
            assert!((1..=MAX_READINGS).contains(&payloads.len()));
            if format == UploadFormat::Ndjson {
                let lines = body
                    .split(|b| *b == b'\n')
                    .filter(|l| !l.iter().all(u8::is_ascii_whitespace))
                    .count();
                assert_eq!(payloads.len(), lines, "one payload per non-blank line");
            }
        }
        Err(UploadError::TooMany(n)) => assert!(n > MAX_READINGS),
        Err(UploadError::Empty | UploadError::Malformed(_)) => {}
    }
});
