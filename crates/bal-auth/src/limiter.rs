//! Failed-login limits, per claimed username and per client address.
//!
//! Each failure also slows the answer a little more, so guessing is slow even below the limit.
//! Counters live in memory: with several replicas each enforces its own limit, which still
//! bounds guessing to replicas × limit per window.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct LimiterConfig {
    /// Failures allowed per username within `window` before logins for it are refused.
    pub per_username: u32,
    /// Failures allowed per client address within `window`.
    pub per_address: u32,
    pub window: Duration,
    /// Added to each failed answer per earlier failure, up to `max_delay`.
    pub delay_step: Duration,
    pub max_delay: Duration,
}

impl Default for LimiterConfig {
    fn default() -> Self {
        Self {
            per_username: 5,
            per_address: 20,
            window: Duration::from_secs(15 * 60),
            delay_step: Duration::from_millis(200),
            max_delay: Duration::from_secs(1),
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Window {
    started: Instant,
    failures: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    Username(String),
    Address(IpAddr),
}

/// Bounds memory use under a flood of distinct names: stale windows are dropped past this.
const MAX_TRACKED: usize = 100_000;

#[derive(Debug)]
pub struct LoginLimiter {
    config: LimiterConfig,
    windows: Mutex<HashMap<Key, Window>>,
}

impl LoginLimiter {
    pub fn new(config: LimiterConfig) -> Self {
        Self {
            config,
            windows: Mutex::new(HashMap::new()),
        }
    }

    fn limit(&self, key: &Key) -> u32 {
        match key {
            Key::Username(_) => self.config.per_username,
            Key::Address(_) => self.config.per_address,
        }
    }

    fn keys(username: &str, address: IpAddr) -> [Key; 2] {
        [Key::Username(username.to_owned()), Key::Address(address)]
    }

    /// `Err(retry_after)` while either the username or the address is over its limit.
    pub fn check(&self, username: &str, address: IpAddr) -> Result<(), Duration> {
        let now = Instant::now();
        let windows = self.windows.lock().expect("limiter lock");
        let mut wait = Duration::ZERO;
        for key in Self::keys(username, address) {
            if let Some(w) = windows.get(&key) {
                let age = now.duration_since(w.started);
                if age < self.config.window && w.failures >= self.limit(&key) {
                    wait = wait.max(self.config.window - age);
                }
            }
        }
        if wait.is_zero() { Ok(()) } else { Err(wait) }
    }

    /// Counts a failure; returns how long to hold the answer back.
    pub fn record_failure(&self, username: &str, address: IpAddr) -> Duration {
        let now = Instant::now();
        let mut windows = self.windows.lock().expect("limiter lock");
        if windows.len() >= MAX_TRACKED {
            let window = self.config.window;
            windows.retain(|_, w| now.duration_since(w.started) < window);
        }
        let mut most = 0;
        for key in Self::keys(username, address) {
            let w = windows.entry(key).or_insert(Window {
                started: now,
                failures: 0,
            });
            if now.duration_since(w.started) >= self.config.window {
                *w = Window {
                    started: now,
                    failures: 0,
                };
            }
            w.failures += 1;
            most = most.max(w.failures);
        }
        (self.config.delay_step * most).min(self.config.max_delay)
    }

    /// A successful login clears its username's failures (not its address's).
    pub fn record_success(&self, username: &str) {
        let mut windows = self.windows.lock().expect("limiter lock");
        windows.remove(&Key::Username(username.to_owned()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter() -> LoginLimiter {
        LoginLimiter::new(LimiterConfig {
            per_username: 3,
            per_address: 5,
            ..LimiterConfig::default()
        })
    }
    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 1));
    const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 2));

    #[test]
    fn a_username_is_locked_after_its_limit_from_any_address() {
        let l = limiter();
        for _ in 0..3 {
            assert!(l.check("alice", A).is_ok());
            l.record_failure("alice", A);
        }
        assert!(l.check("alice", A).is_err());
        assert!(
            l.check("alice", B).is_err(),
            "a new address does not reset the count"
        );
        assert!(l.check("bob", B).is_ok());
    }

    #[test]
    fn an_address_is_locked_after_its_limit_across_usernames() {
        let l = limiter();
        for i in 0..5 {
            l.record_failure(&format!("user{i}"), A);
        }
        assert!(l.check("someone-else", A).is_err());
        assert!(l.check("someone-else", B).is_ok());
    }

    #[test]
    fn failures_slow_the_answer_up_to_a_cap() {
        let l = limiter();
        assert_eq!(l.record_failure("alice", A), Duration::from_millis(200));
        assert_eq!(l.record_failure("alice", A), Duration::from_millis(400));
        for _ in 0..10 {
            l.record_failure("alice", A);
        }
        assert_eq!(l.record_failure("alice", A), Duration::from_secs(1));
    }

    #[test]
    fn success_clears_the_username() {
        let l = limiter();
        l.record_failure("alice", A);
        l.record_failure("alice", A);
        l.record_success("alice");
        l.record_failure("alice", A);
        assert!(l.check("alice", A).is_ok());
    }
}
