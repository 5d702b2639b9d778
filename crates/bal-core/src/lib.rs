//! Domain types and rules of the Platone Blockchain Access Layer.
//!
//! Nothing here performs I/O or knows about HTTP, SQL or MQTT: these are the values every other
//! crate passes around, each parsed once at the edge so that holding one means it is valid.
//!
//! - [`user`]: usernames and roles.
//! - [`topic`]: producer topics `platone/<producer>[/<device>...]`.
//! - [`wallet`]: wallet addresses.
//! - [`subscription`]: grant ids, statuses and the grant state machine.
//! - [`audit`]: the actors and actions written to the append-only audit log.
//! - [`measurement`]: measurements, their payload hash and the fields read from payloads.
//! - [`merkle`]: Merkle batches and proofs in OpenZeppelin's `StandardMerkleTree` format.
//! - [`proof`]: the `bal-proof/1` bundle and its offline checks.
//! - [`upload`]: HTTPS upload bodies (JSON arrays and NDJSON) split into payloads.
//! - [`setpoint`]: set points to devices: device names, values, states, topics and answers.
#![forbid(unsafe_code)]

pub mod access;
pub mod audit;
pub mod measurement;
pub mod merkle;
pub mod proof;
pub mod setpoint;
pub mod subscription;
pub mod topic;
pub mod upload;
pub mod user;
pub mod wallet;

pub use access::{ControlScope, ReadScope};
pub use audit::{Actor, AuditAction, AuditDetail};
pub use measurement::{Fields, Measurement, NewMeasurement};
pub use subscription::{
    GrantAccess, GrantAction, GrantError, Subscription, SubscriptionId, SubscriptionStatus,
};
pub use topic::{FilterScope, Topic, TopicError};
pub use user::{Role, RoleError, User, Username, UsernameError};
pub use wallet::{WalletAddress, WalletError};

/// Truncates a time to whole milliseconds: the precision the SCD stores (and the certified
/// `receivedAtMs` uses), so a value reads back exactly as it was returned when written.
pub fn millis(t: chrono::DateTime<chrono::Utc>) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::from_timestamp_millis(t.timestamp_millis()).unwrap_or(t)
}

/// Implements `Deserialize` through `FromStr` and `Serialize` through `Display`, so that a
/// newtype read from JSON, TOML or a database column is validated exactly like one parsed by hand.
macro_rules! serde_via_str {
    ($ty:ty) => {
        impl serde::Serialize for $ty {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }
        impl<'de> serde::Deserialize<'de> for $ty {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let raw = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                raw.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}
pub(crate) use serde_via_str;
