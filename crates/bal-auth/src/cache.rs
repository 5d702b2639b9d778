//! Remembers recently verified MQTT credentials, so that a fleet of devices sharing one account,
//! or reconnecting all at once after a restart, costs one Argon2 check per account instead of
//! one per connection (1 000 devices would otherwise take ~20 s of CPU on two cores).
//!
//! Only a keyed hash is kept (HMAC-SHA-256 under a random per-process key) of the password
//! together with the stored hash it was verified against, for a bounded time. A password
//! changed anywhere (another replica, `bal user passwd`) changes the stored hash, so the old
//! entry stops matching at once; an entry is also dropped when this process hears of the change.
//! Failed attempts never use the cache: guessing stays as slow as Argon2 makes it.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;
use subtle::ConstantTimeEq;

type Tag = [u8; 32];

pub struct CredentialCache {
    key: [u8; 32],
    ttl: Duration,
    entries: Mutex<HashMap<String, (Instant, Tag)>>,
}

impl std::fmt::Debug for CredentialCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CredentialCache")
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

/// Entries beyond this are dropped oldest-first in bulk; a cache miss only costs a real check.
const MAX_ENTRIES: usize = 100_000;

impl CredentialCache {
    pub fn new(ttl: Duration) -> Self {
        let mut key = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut key);
        Self {
            key,
            ttl,
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn tag(&self, username: &str, stored_hash: &str, password: &str) -> Tag {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("any key length");
        for part in [username, stored_hash] {
            mac.update(&(part.len() as u64).to_be_bytes());
            mac.update(part.as_bytes());
        }
        mac.update(password.as_bytes());
        mac.finalize().into_bytes().into()
    }

    /// True when this exact password was verified against this stored hash of `username`'s
    /// within the last `ttl`.
    pub fn matches(&self, username: &str, stored_hash: &str, password: &str) -> bool {
        let tag = self.tag(username, stored_hash, password);
        let entries = self.entries.lock().expect("credential cache lock");
        entries
            .get(username)
            .is_some_and(|(at, known)| at.elapsed() < self.ttl && bool::from(known.ct_eq(&tag)))
    }

    /// Records a password that Argon2 just verified against `stored_hash`.
    pub fn remember(&self, username: &str, stored_hash: &str, password: &str) {
        let tag = self.tag(username, stored_hash, password);
        let mut entries = self.entries.lock().expect("credential cache lock");
        if entries.len() >= MAX_ENTRIES {
            let ttl = self.ttl;
            entries.retain(|_, (at, _)| at.elapsed() < ttl);
        }
        entries.insert(username.to_owned(), (Instant::now(), tag));
    }

    /// Drops a user's entry (password changed, user deleted).
    pub fn forget(&self, username: &str) {
        self.entries
            .lock()
            .expect("credential cache lock")
            .remove(username);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_remembered_password_matches_until_forgotten_or_stale() {
        let c = CredentialCache::new(Duration::from_secs(60));
        assert!(!c.matches("alice", "h1", "pw-1"));
        c.remember("alice", "h1", "pw-1");
        assert!(c.matches("alice", "h1", "pw-1"));
        assert!(!c.matches("alice", "h1", "pw-2"));
        assert!(!c.matches("bob", "h1", "pw-1"));
        c.forget("alice");
        assert!(!c.matches("alice", "h1", "pw-1"));

        let stale = CredentialCache::new(Duration::ZERO);
        stale.remember("alice", "h1", "pw-1");
        assert!(!stale.matches("alice", "h1", "pw-1"));
    }

    #[test]
    fn a_changed_stored_hash_invalidates_the_entry_without_being_told() {
        let c = CredentialCache::new(Duration::from_secs(60));
        c.remember("alice", "old-hash", "pw-1");
        assert!(!c.matches("alice", "new-hash", "pw-1"));
    }

    #[test]
    fn the_debug_output_shows_no_key_or_tags() {
        let c = CredentialCache::new(Duration::from_secs(60));
        c.remember("alice", "h1", "pw-1");
        assert!(!format!("{c:?}").contains("alice"));
    }
}
