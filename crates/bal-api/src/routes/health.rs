//! Liveness and readiness probes for Kubernetes and load balancers.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::AppState;
use crate::error::Json;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(healthz))
        .routes(routes!(readyz))
}

#[derive(Serialize, ToSchema)]
pub struct Health {
    #[schema(example = "ok")]
    status: &'static str,
}

/// Liveness: the process answers.
#[utoipa::path(get, path = "/healthz", tag = "health",
    responses((status = 200, body = Health)))]
async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// How long `/readyz` waits for each dependency before calling it down: a probe must answer
/// well within a load balancer's timeout even when the pool is starved or the chain hangs.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// The readiness body: the verdict, and every dependency with its state.
#[derive(Serialize, ToSchema)]
pub struct Readiness {
    /// `ready`; `unready` when the database does not answer; `shutting_down` once the
    /// process was told to stop (the status is 503 for both).
    #[schema(example = "ready")]
    pub status: &'static str,
    /// By name: `database` (readiness depends on it), `broker` and `chain` (reported only: a
    /// process whose chain is out still stores and serves; certification catches up later).
    pub dependencies: BTreeMap<&'static str, DependencyState>,
    pub cluster: ClusterState,
    /// With the embedded broker as a cluster node (`mqtt.cluster.*`): this node and whether
    /// each other node answers (reported only: a node cut off from its peers still serves its
    /// own clients).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mqtt_cluster: Option<MqttClusterState>,
    /// The chain's latest block, when it answered (for `/metrics`; not in the body).
    #[serde(skip)]
    pub chain_head: Option<u64>,
}

/// This replica among the others on the same database (reported only: readiness does not
/// depend on it).
#[derive(Clone, Serialize, ToSchema)]
pub struct ClusterState {
    /// This process's `cluster.replica_id`.
    #[schema(example = "bal-0")]
    pub replica: String,
    /// The replica that anchors now (holds the certification lease); absent when none holds it
    /// or the database does not answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(example = "bal-1")]
    pub lease_holder: Option<String>,
    /// The live replicas' ids (this one included while its heartbeats reach the database).
    pub replicas: Vec<String>,
}

/// This node of the MQTT cluster and its peers, as the broker's probe last saw them.
#[derive(Clone, Serialize, ToSchema)]
pub struct MqttClusterState {
    /// `mqtt.cluster.node_id`.
    #[schema(example = 1)]
    pub node_id: u64,
    /// Every other node.
    pub peers: Vec<MqttPeerState>,
}

#[derive(Clone, Serialize, ToSchema)]
pub struct MqttPeerState {
    #[schema(example = 2)]
    pub node_id: u64,
    /// Its node-to-node address, as `mqtt.cluster.peers` names it.
    #[schema(example = "bal-1.bal-headless:5363")]
    pub address: String,
    /// `up` (answered the last probe) or `down`.
    #[schema(example = "up")]
    pub state: &'static str,
    /// When it last changed state.
    pub since: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Reads the MQTT cluster's state (the broker's probe keeps it; reading never waits).
pub type MqttClusterProbe = std::sync::Arc<dyn Fn() -> MqttClusterState + Send + Sync>;

#[derive(Clone, Serialize, ToSchema)]
pub struct DependencyState {
    /// `up` or `down`.
    #[schema(example = "up")]
    pub state: &'static str,
    /// When it last changed state (or, if it never did, when this process first checked).
    pub since: DateTime<Utc>,
    /// Why it is down; no secrets (the URL is never included).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Each dependency's last known state, so that `/readyz` can say since when, and whether
/// the process is shutting down.
#[derive(Default)]
pub struct Dependencies {
    states: Mutex<BTreeMap<&'static str, DependencyState>>,
    shutting_down: AtomicBool,
}

impl Dependencies {
    /// Records a check of `name`; `since` moves only when the state changes.
    pub fn record(&self, name: &'static str, result: Result<(), String>) -> DependencyState {
        let mut states = self.states.lock().unwrap_or_else(|e| e.into_inner());
        let state = if result.is_ok() { "up" } else { "down" };
        let since = match states.get(name) {
            Some(old) if old.state == state => old.since,
            _ => Utc::now(),
        };
        let now = DependencyState {
            state,
            since,
            error: result.err(),
        };
        states.insert(name, now.clone());
        now
    }

    /// From now on `/readyz` answers 503 `shutting_down`, so that load balancers stop sending
    /// before the listeners close.
    pub fn shut_down(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
    }
}

/// `Err` with a message when `check` fails or takes longer than [`CHECK_TIMEOUT`].
async fn within<T, E: std::fmt::Display>(
    check: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, String> {
    match tokio::time::timeout(CHECK_TIMEOUT, check).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer within {} s", CHECK_TIMEOUT.as_secs())),
    }
}

/// Checks every dependency at once (at most [`CHECK_TIMEOUT`]) and records what it found:
/// what `/readyz` answers and the admin's health section shows.
pub(crate) async fn check(state: &AppState) -> Readiness {
    let database = async { within(state.store.ping()).await.map(drop) };
    let chain = async {
        within(state.certification.ledger.head())
            .await
            .map_err(|e| {
                // The node's error may carry its URL, and a URL may carry an API key: the detail
                // goes to the log only.
                tracing::warn!(error = %e, "readiness: the chain does not answer");
                "the chain node does not answer (details in the log)".to_owned()
            })
    };
    let broker = within::<(), _>(async {
        match &state.config.broker_address {
            // Reachable is what can be checked without an account of its own there.
            Some((host, port)) => tokio::net::TcpStream::connect((host.as_str(), *port))
                .await
                .map(drop),
            // The embedded broker runs in this process.
            None => Ok::<(), std::io::Error>(()),
        }
    });
    let cluster = async {
        let found = tokio::time::timeout(CHECK_TIMEOUT, async {
            tokio::join!(
                state.store.lease(bal_scd::CERTIFY_LEASE),
                state.store.live_replicas()
            )
        })
        .await;
        let (lease, replicas) = match found {
            Ok((lease, replicas)) => (lease.ok().flatten(), replicas.unwrap_or_default()),
            Err(_) => (None, Vec::new()),
        };
        ClusterState {
            replica: state.config.replica_id.clone(),
            // The process's clock against the database's: off by the clocks' skew at most.
            lease_holder: lease
                .filter(|l| l.expires_at > Utc::now())
                .map(|l| l.holder),
            replicas: replicas.into_iter().map(|r| r.info.id).collect(),
        }
    };
    let (database, chain, broker, cluster) = tokio::join!(database, chain, broker, cluster);
    let deps = &state.dependencies;
    let database_up = database.is_ok();
    let chain_head = chain.as_ref().ok().copied();
    let dependencies = BTreeMap::from([
        ("database", deps.record("database", database)),
        ("chain", deps.record("chain", chain.map(drop))),
        ("broker", deps.record("broker", broker)),
    ]);
    let status = if deps.shutting_down.load(Ordering::SeqCst) {
        "shutting_down"
    } else if database_up {
        "ready"
    } else {
        "unready"
    };
    Readiness {
        status,
        dependencies,
        cluster,
        mqtt_cluster: state.mqtt_cluster.as_ref().map(|probe| probe()),
        chain_head,
    }
}

/// Readiness: 503 when this process cannot serve (the database does not answer, or it is
/// shutting down). The body lists each dependency with its state either way.
#[utoipa::path(get, path = "/readyz", tag = "health",
    responses((status = 200, body = Readiness), (status = 503, body = Readiness)))]
async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<Readiness>) {
    let readiness = check(&state).await;
    let status = if readiness.status == "ready" {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(readiness))
}
