//! The embedded broker as one node of an MQTT cluster: every `bal serve` replica with
//! `mqtt.cluster.*` set is a node, devices and consumers connect to any of them, and each node
//! applies the BAL's rules itself (see [`crate::embedded`]).
//!
//! # The engine: `rmqtt-cluster-broadcast`, not `rmqtt-cluster-raft`
//!
//! Both are rmqtt's own plugins (0.24, the release of our rmqtt). We use broadcast because:
//! - **A node cut off from its peers keeps serving its own clients.** Raft replicates session
//!   ownership and routes through its log, so a node in a minority cannot register a new
//!   session or subscription until the partition heals; broadcast has no quorum: each node
//!   owns its sessions and asks the others only to kick a client id or forward a message.
//! - **Nothing in it can end the process.** Raft calls `std::process::exit` when its service
//!   fails (its `lib.rs`); a BAL whose MQTT tier hiccups must keep storing HTTPS uploads and
//!   certifying.
//! - **No state of its own to lose or repair.** The BAL's truth (users, grants, readings) is in
//!   PostgreSQL already; raft would add a second replicated store (snapshots, logs, C
//!   compression libraries) for routes that each node can learn by asking.
//! - Its cost: every publish is offered to every other node (each matches its own
//!   subscriptions), so cross-node traffic grows with the node count, and a client id can be
//!   held on two nodes for the moment a partition lasts. For the BAL's fleets (devices publish,
//!   few consumers watch live) that is the right trade; the README's "Scaling out" has figures.
//!   Its session takeover takes the first node's answer, right or not: [`crate::node_shared`]
//!   waits for the node that holds the session.
//!
//! Membership is static (`mqtt.cluster.peers` lists every node, this one included). The
//! node-to-node port speaks plaintext, unauthenticated gRPC: it must only be reachable by the
//! other nodes (a private network; the Helm chart's NetworkPolicy admits only the release's
//! pods), which is why a public listen address is refused unless the operator insists.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use rmqtt::context::ServerContext;
use rmqtt::grpc::{Message, MessageReply, MessageType};

/// The plugin's name, as rmqtt registers it and reads its configuration.
const PLUGIN: &str = "rmqtt-cluster-broadcast";

/// The gRPC message type the plugin answers (its default).
const MESSAGE_TYPE: MessageType = 98;

/// How often every peer is asked whether it answers.
const PROBE_EVERY: Duration = Duration::from_secs(2);

/// How long a peer may take to answer a probe, a kick or a session question. Short: a CONNECT
/// on a node cut off from a peer waits this long at most for that peer's answer.
const PEER_TIMEOUT: Duration = Duration::from_secs(2);

/// One node of the cluster: its id and node-to-node address (`ID@HOST:PORT`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub id: u64,
    /// `HOST:PORT`; the host may be a DNS name (a StatefulSet's headless service).
    pub address: String,
}

impl Peer {
    /// Parses `ID@HOST:PORT`, ID an integer >= 1.
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let (id, address) = s
            .split_once('@')
            .ok_or_else(|| format!("{s:?} is not ID@HOST:PORT"))?;
        let id: u64 = id
            .parse()
            .ok()
            .filter(|id| *id >= 1)
            .ok_or_else(|| format!("{s:?}: the node id must be an integer >= 1"))?;
        let (host, port) = address
            .rsplit_once(':')
            .ok_or_else(|| format!("{s:?}: the address needs a port (HOST:PORT)"))?;
        let host_ok = !host.is_empty()
            && host.chars().all(|c| {
                c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '[' | ']' | ':')
            });
        if !host_ok || port.parse::<u16>().map_or(true, |p| p == 0) {
            return Err(format!("{s:?}: HOST:PORT is not a valid address"));
        }
        Ok(Self {
            id,
            address: address.to_owned(),
        })
    }
}

impl std::fmt::Display for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}@{}", self.id, self.address)
    }
}

/// This node's place in the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    /// `mqtt.cluster.node_id`.
    pub node_id: u64,
    /// `mqtt.cluster.listen`: where the other nodes reach this one.
    pub listen: SocketAddr,
    /// `mqtt.cluster.peers`: every node, this one included.
    pub peers: Vec<Peer>,
}

impl ClusterConfig {
    /// Checks what a node needs to join: distinct ids, this node among the peers, at least
    /// one other node.
    pub fn validate(&self) -> Result<(), String> {
        let mut seen = HashMap::new();
        for p in &self.peers {
            if let Some(other) = seen.insert(p.id, p) {
                return Err(format!(
                    "mqtt.cluster.peers names node {} twice ({other} and {p})",
                    p.id
                ));
            }
        }
        if !seen.contains_key(&self.node_id) {
            return Err(format!(
                "mqtt.cluster.peers must list every node, this one (node_id {}) included",
                self.node_id
            ));
        }
        if self.peers.len() < 2 {
            return Err(
                "mqtt.cluster.peers lists no other node: leave mqtt.cluster unset for \
                        a single-node broker"
                    .into(),
            );
        }
        Ok(())
    }

    /// The other nodes.
    pub fn others(&self) -> impl Iterator<Item = &Peer> {
        self.peers.iter().filter(|p| p.id != self.node_id)
    }

    /// A fingerprint of the membership, the same on every node of one cluster: what the
    /// replica registry compares so that two clusters never share a database by mistake.
    pub fn membership(&self) -> String {
        let mut ids: Vec<String> = self.peers.iter().map(Peer::to_string).collect();
        ids.sort();
        ids.join(",")
    }

    /// The plugin's configuration (TOML, as rmqtt reads it). Worker limits are sized for small
    /// nodes: they bound concurrent node-to-node tasks, not threads.
    fn plugin_toml(&self) -> String {
        let addrs: Vec<String> = self.peers.iter().map(|p| format!("\"{p}\"")).collect();
        format!(
            "message_type = {MESSAGE_TYPE}\n\
             node_grpc_addrs = [{}]\n\
             node_grpc_batch_size = 128\n\
             node_grpc_client_concurrency_limit = 1024\n\
             node_grpc_client_timeout = \"{}s\"\n\
             task_exec_queue_workers = 64\n\
             task_exec_queue_max = 100000\n",
            addrs.join(", "),
            PEER_TIMEOUT.as_secs()
        )
    }
}

/// The context builder for a node: its id, the plugin's configuration, and a circuit breaker
/// that lets a restarted peer back in within seconds (rmqtt's default keeps it out 30 s).
pub(crate) fn context(config: &ClusterConfig) -> rmqtt::context::ServerContextBuilder {
    let breaker = rmqtt::context::CircuitBreakerConfig {
        wait_duration_in_open: Duration::from_secs(3),
        ..Default::default()
    };
    ServerContext::new()
        .node_id(config.node_id)
        .plugins_config_map_add(PLUGIN, config.plugin_toml())
        .circuit_breaker_config(breaker)
}

/// Registers the cluster plugin on `scx` and serves the node-to-node port. The port is bound
/// here first so that a taken address fails the start with a message naming the setting
/// (rmqtt's own server only logs it and retries).
pub(crate) async fn join(scx: &ServerContext, config: &ClusterConfig) -> anyhow::Result<()> {
    std::net::TcpListener::bind(config.listen).map_err(|e| {
        anyhow::anyhow!(
            "cannot listen on {} (mqtt.cluster.listen): {e}; set BAL_MQTT__CLUSTER__LISTEN to a \
             free private address",
            config.listen
        )
    })?;
    rmqtt_cluster_broadcast::register(scx, true, true)
        .await
        .map_err(|e| anyhow::anyhow!("cannot start the MQTT cluster: {e}"))?;
    crate::node_shared::install(scx, MESSAGE_TYPE, PEER_TIMEOUT).await;
    scx.node
        .start_grpc_server(scx.clone(), config.listen, true, false);
    Ok(())
}

/// A peer as this node last saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerState {
    pub node_id: u64,
    pub address: String,
    /// It answered the last probe.
    pub up: bool,
    /// When it last changed state (or when this node first probed it).
    pub since: DateTime<Utc>,
    /// Why it is down.
    pub error: Option<String>,
}

/// What `/readyz` and `/metrics` say of the MQTT cluster: this node and every peer's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterView {
    pub node_id: u64,
    pub peers: Vec<PeerState>,
}

/// A handle on the cluster's state as the probe keeps it; cheap to clone.
#[derive(Clone)]
pub struct ClusterHealth {
    view: Arc<RwLock<ClusterView>>,
}

impl ClusterHealth {
    fn new(config: &ClusterConfig) -> Self {
        let now = Utc::now();
        let peers = config
            .others()
            .map(|p| PeerState {
                node_id: p.id,
                address: p.address.clone(),
                up: false,
                since: now,
                error: Some("not probed yet".into()),
            })
            .collect();
        Self {
            view: Arc::new(RwLock::new(ClusterView {
                node_id: config.node_id,
                peers,
            })),
        }
    }

    /// The latest view.
    pub fn view(&self) -> ClusterView {
        self.view.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn record(&self, node_id: u64, result: Result<(), String>) {
        let mut view = self.view.write().unwrap_or_else(|e| e.into_inner());
        let Some(peer) = view.peers.iter_mut().find(|p| p.node_id == node_id) else {
            return;
        };
        let up = result.is_ok();
        if peer.up != up {
            if up {
                tracing::info!(peer = node_id, "MQTT cluster: peer reachable");
            } else {
                tracing::warn!(peer = node_id, error = ?result, "MQTT cluster: peer unreachable");
            }
            peer.since = Utc::now();
        }
        peer.up = up;
        peer.error = result.err();
    }
}

/// Asks every peer, every [`PROBE_EVERY`], how many clients it has: an answer means the peer
/// is up and reachable both ways through the node-to-node port.
pub(crate) fn probe(
    scx: ServerContext,
    config: &ClusterConfig,
) -> (ClusterHealth, tokio::task::JoinHandle<()>) {
    let health = ClusterHealth::new(config);
    let kept = health.clone();
    let task = tokio::spawn(async move {
        let mut tick = tokio::time::interval(PROBE_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let clients = scx.extends.shared().await.get_grpc_clients();
            let asks = clients.iter().map(|(id, (_, client))| {
                let mut client = client.clone();
                async move {
                    let answer = client
                        .send_message(MESSAGE_TYPE, Message::NumberOfClients, Some(PEER_TIMEOUT))
                        .await;
                    let result = match answer {
                        Ok(MessageReply::NumberOfClients(_)) => Ok(()),
                        Ok(other) => Err(format!("unexpected answer: {other:?}")),
                        Err(e) => Err(e.to_string()),
                    };
                    (*id, result)
                }
            });
            for (id, result) in futures_util::future::join_all(asks).await {
                kept.record(id, result);
            }
        }
    });
    (health, task)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(node_id: u64, peers: &[&str]) -> ClusterConfig {
        ClusterConfig {
            node_id,
            listen: "127.0.0.1:5363".parse().unwrap(),
            peers: peers.iter().map(|p| Peer::parse(p).unwrap()).collect(),
        }
    }

    #[test]
    fn peers_parse_as_id_at_host_port() {
        let p = Peer::parse(" 2@bal-1.bal-headless.ns.svc.cluster.local:5363 ").unwrap();
        assert_eq!(p.id, 2);
        assert_eq!(p.address, "bal-1.bal-headless.ns.svc.cluster.local:5363");
        assert_eq!(Peer::parse("3@[::1]:7000").unwrap().address, "[::1]:7000");
        for bad in [
            "bal-0:5363",
            "0@a:1",
            "x@a:1",
            "1@a",
            "1@:5363",
            "1@a:0",
            "1@a:70000",
            "1@a b:1",
        ] {
            assert!(Peer::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_cluster_lists_this_node_and_another_each_once() {
        assert!(config(1, &["1@a:1", "2@b:1"]).validate().is_ok());
        let e = config(3, &["1@a:1", "2@b:1"]).validate().unwrap_err();
        assert!(e.contains("this one (node_id 3)"), "{e}");
        let e = config(1, &["1@a:1", "1@b:1"]).validate().unwrap_err();
        assert!(e.contains("node 1 twice"), "{e}");
        let e = config(1, &["1@a:1"]).validate().unwrap_err();
        assert!(e.contains("no other node"), "{e}");
    }

    #[test]
    fn every_node_of_one_cluster_has_the_same_membership() {
        let a = config(1, &["1@a:1", "2@b:1", "3@c:1"]);
        let b = config(3, &["3@c:1", "1@a:1", "2@b:1"]);
        assert_eq!(a.membership(), b.membership());
        assert_ne!(a.membership(), config(1, &["1@a:1", "2@b:2"]).membership());
        let toml = a.plugin_toml();
        assert!(
            toml.contains(r#"node_grpc_addrs = ["1@a:1", "2@b:1", "3@c:1"]"#),
            "{toml}"
        );
    }
}
