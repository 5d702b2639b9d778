//! Failed-login limits, per claimed username and per client address.
//!
//! An attempt is counted from the moment it starts ([`LoginLimiter::begin`]), not when its slow
//! password check ends, so a thousand concurrent guesses get no further than the limit allows.
//! Each failure also slows the answer a little more, so guessing is slow even below the limit.
//! These counters live in this process's memory; the HTTPS login also counts failures in the
//! database (`bal_api::auth::begin_attempt`), so that the limits hold across replicas. The
//! embedded broker's MQTT login, a single-node part, counts here only.

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
    /// Attempts under way: they count against the limit until they end.
    pending: u32,
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

/// One login attempt under way. Report how it ended with [`Attempt::failed`] or
/// [`Attempt::succeeded`]; dropped without either, it simply stops counting as pending.
#[must_use]
pub struct Attempt<'a> {
    limiter: &'a LoginLimiter,
    keys: [Key; 2],
    done: bool,
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

    /// Starts an attempt, or `Err(retry_after)` while the username or the address is at its
    /// limit (failures plus attempts under way).
    pub fn begin(&self, username: &str, address: IpAddr) -> Result<Attempt<'_>, Duration> {
        let keys = [Key::Username(username.to_owned()), Key::Address(address)];
        let now = Instant::now();
        let window = self.config.window;
        let mut windows = self.windows.lock().expect("limiter lock");
        if windows.len() >= MAX_TRACKED {
            windows.retain(|_, w| w.pending > 0 || now.duration_since(w.started) < window);
        }
        let mut wait = Duration::ZERO;
        for key in &keys {
            if let Some(w) = windows.get_mut(key) {
                let age = now.duration_since(w.started);
                if age >= window && w.pending == 0 {
                    w.started = now;
                    w.failures = 0;
                } else if w.failures + w.pending >= self.limit(key) {
                    wait = wait
                        .max(window.saturating_sub(age))
                        .max(Duration::from_secs(1));
                }
            }
        }
        if !wait.is_zero() {
            return Err(wait);
        }
        for key in &keys {
            windows
                .entry(key.clone())
                .or_insert(Window {
                    started: now,
                    failures: 0,
                    pending: 0,
                })
                .pending += 1;
        }
        drop(windows);
        Ok(Attempt {
            limiter: self,
            keys,
            done: false,
        })
    }

    fn end(&self, keys: &[Key; 2], failed: bool) -> Duration {
        let mut windows = self.windows.lock().expect("limiter lock");
        let mut most = 0;
        for key in keys {
            if let Some(w) = windows.get_mut(key) {
                w.pending = w.pending.saturating_sub(1);
                if failed {
                    w.failures += 1;
                    most = most.max(w.failures);
                }
            }
        }
        if !failed && let Key::Username(_) = &keys[0] {
            // A success clears its username's failures (not its address's).
            if windows.get(&keys[0]).is_some_and(|w| w.pending == 0) {
                windows.remove(&keys[0]);
            } else if let Some(w) = windows.get_mut(&keys[0]) {
                w.failures = 0;
            }
        }
        (self.config.delay_step * most).min(self.config.max_delay)
    }
}

impl Attempt<'_> {
    /// Counts a failure; returns how long to hold the answer back.
    pub fn failed(mut self) -> Duration {
        self.done = true;
        self.limiter.end(&self.keys, true)
    }

    pub fn succeeded(mut self) {
        self.done = true;
        self.limiter.end(&self.keys, false);
    }
}

impl Drop for Attempt<'_> {
    fn drop(&mut self) {
        if !self.done {
            let mut windows = self.limiter.windows.lock().expect("limiter lock");
            for key in &self.keys {
                if let Some(w) = windows.get_mut(key) {
                    w.pending = w.pending.saturating_sub(1);
                }
            }
        }
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

    fn fail(l: &LoginLimiter, user: &str, addr: IpAddr) -> Duration {
        l.begin(user, addr).expect("allowed").failed()
    }

    #[test]
    fn a_username_is_locked_after_its_limit_from_any_address() {
        let l = limiter();
        for _ in 0..3 {
            fail(&l, "alice", A);
        }
        assert!(l.begin("alice", A).is_err());
        assert!(
            l.begin("alice", B).is_err(),
            "a new address does not reset the count"
        );
        assert!(l.begin("bob", B).is_ok());
    }

    #[test]
    fn an_address_is_locked_after_its_limit_across_usernames() {
        let l = limiter();
        for i in 0..5 {
            fail(&l, &format!("user{i}"), A);
        }
        assert!(l.begin("someone-else", A).is_err());
        assert!(l.begin("someone-else", B).is_ok());
    }

    #[test]
    fn attempts_under_way_count_so_concurrent_guesses_stop_at_the_limit() {
        let l = limiter();
        let running: Vec<_> = (0..3).map(|_| l.begin("alice", A).unwrap()).collect();
        assert!(l.begin("alice", A).is_err(), "three already under way");
        drop(running);
        assert!(
            l.begin("alice", A).is_ok(),
            "abandoned attempts stop counting"
        );
    }

    #[test]
    fn failures_slow_the_answer_up_to_a_cap() {
        let l = LoginLimiter::new(LimiterConfig {
            per_username: 100,
            per_address: 100,
            ..LimiterConfig::default()
        });
        assert_eq!(fail(&l, "alice", A), Duration::from_millis(200));
        assert_eq!(fail(&l, "alice", A), Duration::from_millis(400));
        for _ in 0..10 {
            fail(&l, "alice", A);
        }
        assert_eq!(fail(&l, "alice", A), Duration::from_secs(1));
    }

    #[test]
    fn success_clears_the_username() {
        let l = limiter();
        fail(&l, "alice", A);
        fail(&l, "alice", A);
        l.begin("alice", A).unwrap().succeeded();
        fail(&l, "alice", A);
        assert!(l.begin("alice", A).is_ok());
    }
}
