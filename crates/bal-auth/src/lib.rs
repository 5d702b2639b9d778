//! Checking who someone is, the same way on every interface: HTTPS logins and MQTT CONNECTs.
//!
//! - [`password`]: Argon2id hashes, verified off the async threads, with a dummy hash so that an
//!   unknown user costs the same time as a wrong password.
//! - [`limiter`]: failed-login limits per claimed username and per client address.
//! - [`cache`]: recently verified MQTT credentials, so reconnect storms cost one check per
//!   account.
#![forbid(unsafe_code)]

pub mod cache;
pub mod limiter;
pub mod password;

pub use cache::CredentialCache;
pub use limiter::{LimiterConfig, LoginLimiter};
