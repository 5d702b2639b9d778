//! Several `bal serve` processes on one database: the registry of live replicas and the leases
//! that let exactly one of them do a job (anchoring).
//!
//! Every time here is the database's clock, never a replica's: replicas whose clocks disagree
//! still agree on who holds a lease and who is alive.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::StoreResult;

/// The lease under which one replica anchors batches (and deploys the contract).
pub const CERTIFY_LEASE: &str = "certify";

/// The lease under which one replica keeps an external Mosquitto in line with the SCD, so that
/// a change reaches the broker once (and a user is disconnected once), not once per replica.
pub const BROKER_LEASE: &str = "broker";

/// What a replica says of itself in the registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaInfo {
    /// `cluster.replica_id`.
    pub id: String,
    /// The binary's version.
    pub version: String,
    /// How it serves MQTT.
    pub mqtt: MqttRole,
    /// Mines the embedded chain (no `chain.rpc_url`): a single-node part.
    pub embedded_chain: bool,
}

impl ReplicaInfo {
    /// Whether this replica runs a part that only one process may run on a database.
    pub fn single_node(&self) -> bool {
        self.mqtt == MqttRole::Embedded || self.embedded_chain
    }
}

/// How a replica serves MQTT, as far as sharing a database with others goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MqttRole {
    /// The embedded broker on its own: one process per database.
    Embedded,
    /// One node of an embedded MQTT cluster; `membership` is the same on every node of it.
    ClusterNode { node_id: u64, membership: String },
    /// Ingest from an external Mosquitto; `shared` when through the shared subscription (with
    /// a plain one, every replica would store every reading).
    Mosquitto { shared: bool },
}

impl MqttRole {
    /// As the registry's `mqtt` column keeps it.
    pub(crate) fn to_column(&self) -> String {
        match self {
            Self::Embedded => "embedded".into(),
            Self::ClusterNode {
                node_id,
                membership,
            } => format!("cluster:{node_id}:{membership}"),
            Self::Mosquitto { shared: false } => "mosquitto".into(),
            Self::Mosquitto { shared: true } => "mosquitto-shared".into(),
        }
    }

    /// From the registry's columns. A row of the previous release has no `mqtt`: its
    /// `embedded_broker` says embedded or not; not embedded counts as Mosquitto (plain or
    /// shared, unknown: plain, the stricter for sharing).
    pub(crate) fn from_columns(mqtt: Option<&str>, embedded_broker: bool) -> Self {
        let cluster = mqtt
            .and_then(|m| m.strip_prefix("cluster:"))
            .and_then(|rest| {
                let (id, membership) = rest.split_once(':')?;
                Some(Self::ClusterNode {
                    node_id: id.parse().ok()?,
                    membership: membership.to_owned(),
                })
            });
        match (mqtt, cluster) {
            (_, Some(c)) => c,
            (Some("embedded"), _) => Self::Embedded,
            (Some("mosquitto-shared"), _) => Self::Mosquitto { shared: true },
            (Some("mosquitto"), _) => Self::Mosquitto { shared: false },
            _ if embedded_broker => Self::Embedded,
            _ => Self::Mosquitto { shared: false },
        }
    }
}

/// A live replica, as the registry shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replica {
    pub info: ReplicaInfo,
    pub started_at: DateTime<Utc>,
    /// Its last heartbeat.
    pub seen_at: DateTime<Utc>,
}

/// Proof of holding a lease: who, and the lease's epoch when they took it. The epoch grows each
/// time the lease changes hands (or lapses and is taken again), so an ex-holder's fence never
/// matches again, even when it comes back under the same name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    pub lease: &'static str,
    pub holder: String,
    pub epoch: i64,
}

/// A lease as it stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub holder: String,
    pub epoch: i64,
    pub expires_at: DateTime<Utc>,
}

/// The replicas of one BAL and their leases.
///
/// Guarantees, on every backend and with any number of processes: at most one holder of a
/// lease at any time on the database's clock; a method given a [`Fence`] (see
/// `CertificationStore`) writes only while that fence's lease is held, checked in the writing
/// transaction, so an ex-holder cannot write after losing it.
#[async_trait]
pub trait ClusterStore: Send + Sync {
    /// Records that `replica` is alive for the next `ttl` (inserting its row or refreshing it).
    async fn heartbeat(&self, replica: &ReplicaInfo, ttl: Duration) -> StoreResult<()>;
    /// Replicas whose last heartbeat has not expired, by id.
    async fn live_replicas(&self) -> StoreResult<Vec<Replica>>;
    /// Removes a replica from the registry; false when it was not there.
    async fn leave(&self, id: &str) -> StoreResult<bool>;
    /// Takes the lease `lease` for `holder` for `ttl`, or renews it when `holder` has it
    /// already. `None` when another holder's lease has not expired.
    async fn acquire_lease(
        &self,
        lease: &'static str,
        holder: &str,
        ttl: Duration,
    ) -> StoreResult<Option<Fence>>;
    /// Gives the lease up at once (a clean shutdown), if `fence` still holds it.
    async fn release_lease(&self, fence: &Fence) -> StoreResult<()>;
    /// The lease as it stands, expired or not; `None` when never taken.
    async fn lease(&self, lease: &'static str) -> StoreResult<Option<Lease>>;
    /// Gives `lease` up if `holder` holds it now (a clean stop, so that another replica takes
    /// over at once); a replica that does not hold it takes nothing on its way out.
    async fn release_if_held(&self, lease: &'static str, holder: &str) -> StoreResult<()> {
        match self.lease(lease).await? {
            Some(l) if l.holder == holder => {
                let fence = Fence {
                    lease,
                    holder: l.holder,
                    epoch: l.epoch,
                };
                self.release_lease(&fence).await
            }
            _ => Ok(()),
        }
    }
    /// The sealed broker password last given to the external broker, per username: what the
    /// holder of [`BROKER_LEASE`] compares with to tell a changed password, whichever replica
    /// pushed it.
    async fn broker_pushed(&self) -> StoreResult<HashMap<String, String>>;
    /// Replaces what [`ClusterStore::broker_pushed`] returns, if `fence` still holds its lease.
    async fn record_broker_pushed(
        &self,
        pushed: &HashMap<String, String>,
        fence: &Fence,
    ) -> StoreResult<()>;
}

/// The message for a replica whose fence no longer holds.
pub(crate) fn fence_lost(fence: &Fence) -> crate::StoreError {
    crate::StoreError::Conflict(format!(
        "the {} lease (epoch {}) is no longer held by {}",
        fence.lease, fence.epoch, fence.holder
    ))
}

/// A duration as whole milliseconds for SQL, at least 1.
pub(crate) fn ttl_ms(ttl: Duration) -> i64 {
    i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX).max(1)
}
