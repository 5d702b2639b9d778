//! The integration layer: devices publish measurements over MQTT, and consumers receive the
//! live stream of the producers that accepted them.
//!
//! - [`access`]: who may publish where and subscribe to what, decided from the SCD's grants.
//! - [`cluster`]: the embedded broker as one node of an MQTT cluster (rmqtt's broadcast plugin).
//! - [`ingest`]: the group-commit writer that turns messages into committed measurements.
//! - [`embedded`]: the embedded broker (rmqtt) with those rules in its hooks: a QoS 1 PUBACK is
//!   sent only once the measurement is committed, and a revoked grant unsubscribes the consumer's
//!   live sessions.
//! - [`mosquitto`]: the alternative, an external Mosquitto whose Dynamic Security plugin the BAL
//!   keeps in line with the SCD, with a persistent shared-subscription ingest.
//! - [`setpoints`]: set points to devices, whichever the broker: the sender (one per set point
//!   across replicas), expiry, and the devices' answers.
#![forbid(unsafe_code)]

pub mod access;
pub mod cluster;
mod delivery;
pub mod embedded;
mod grant_watch;
pub mod ingest;
pub mod mosquitto;
mod node_shared;
pub mod setpoints;

pub use cluster::{ClusterConfig, ClusterHealth, ClusterView, Peer, PeerState};
pub use embedded::{BrokerConfig, EmbeddedBroker};
pub use ingest::Ingest;
pub use mosquitto::{BrokerConnection, MosquittoBroker, MosquittoConfig};

/// What the unit tests of several modules share.
#[cfg(test)]
mod testing {
    use bal_core::{Role, Topic, Username, WalletAddress};
    use bal_scd::User;

    pub fn user(name: &str, role: Role) -> User {
        let username = Username::parse(name).unwrap();
        User {
            topic: (role == Role::Producer).then(|| Topic::for_producer(&username)),
            username,
            role,
            wallet: WalletAddress::parse("0x4FD173C02de9004A7aFB2b46f70bBA83c86f6B12").unwrap(),
            created_at: chrono::Utc::now(),
        }
    }
}
