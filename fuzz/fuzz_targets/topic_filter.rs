//! Topics and subscription filters: a topic that parses round-trips, belongs to the producer it
//! names, and used as a filter reaches that producer only; no filter panics the classifier.
#![no_main]

use bal_core::{FilterScope, Topic};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let scope = FilterScope::of(text);
    if let Ok(topic) = Topic::parse(text) {
        assert_eq!(topic.as_str(), text);
        assert_eq!(Topic::parse(&topic.to_string()).as_ref(), Ok(&topic));
        let producer = topic.producer();
        assert_eq!(topic.root(), Topic::for_producer(&producer));
        assert!(topic.root().is_root());
        assert_eq!(scope, Ok(FilterScope::Producer(producer)), "{text:?}");
    }
    if let Ok(FilterScope::Producer(p)) = &scope {
        // A producer-scoped filter never names a level that would leave the producer's tree.
        let mut levels = text.split('/');
        assert_eq!(levels.next(), Some(Topic::PREFIX));
        assert_eq!(levels.next(), Some(p.as_str()));
    }
});
