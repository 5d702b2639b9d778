//! This process as one replica among several: joining the registry (refusing when a
//! single-node part would be shared), heartbeats, leaving it on the way out; and `bal cluster
//! status|leave`.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::Context;
use bal_scd::{MqttRole, Replica, ReplicaInfo, SharedStore};
use tokio::sync::watch;

use crate::settings::{BrokerKind, Settings};

/// A replica counts as gone after this many missed heartbeats.
const MISSED_HEARTBEATS: u32 = 3;

/// How long a heartbeat keeps a replica alive.
pub fn heartbeat_ttl(every: Duration) -> Duration {
    every * MISSED_HEARTBEATS
}

/// What `r` runs that only one process may run on a database.
fn single_parts(r: &ReplicaInfo) -> &'static str {
    match (r.mqtt == MqttRole::Embedded, r.embedded_chain) {
        (true, true) => "the embedded broker and the embedded chain",
        (true, false) => "the embedded broker",
        (false, true) => "the embedded chain",
        (false, false) => "",
    }
}

/// Why `other` and `me` cannot serve one database together, if they cannot.
fn conflict(me: &ReplicaInfo, other: &Replica) -> Option<String> {
    let fix = "several replicas need an MQTT cluster (mqtt.cluster.*) or broker.kind = \
               \"mosquitto\", and chain.rpc_url (see \"Running several replicas\" in the README)";
    if me.single_node() {
        Some(format!(
            "replica {:?} (bal {}, last seen {}) serves this database already, and this process \
             would run {} (one process only): stop it, or {fix}",
            other.info.id,
            other.info.version,
            other.seen_at.to_rfc3339(),
            single_parts(me)
        ))
    } else if other.info.single_node() {
        Some(format!(
            "replica {:?} (last seen {}) serves this database with {}, which cannot be shared: \
             stop it, or give it {fix}",
            other.info.id,
            other.seen_at.to_rfc3339(),
            single_parts(&other.info)
        ))
    } else {
        mqtt_conflict(&me.mqtt, other)
    }
}

/// Why two cluster nodes, each with its id and peers (`ID@HOST:PORT,…`), are not nodes of one
/// cluster, if they are not. The lists may differ while the cluster grows or shrinks (a rolling
/// update restarts the nodes one by one with the new list): they must agree on every node both
/// name, and one of the two must name the other.
fn membership_conflict(me: (u64, &str), other: (u64, &str)) -> Option<String> {
    let parse = |m: &str| -> HashMap<u64, String> {
        m.split(',')
            .filter_map(|p| p.split_once('@'))
            .filter_map(|(id, addr)| Some((id.parse().ok()?, addr.to_owned())))
            .collect()
    };
    let (mine, theirs) = (parse(me.1), parse(other.1));
    if let Some((id, here, there)) = mine
        .iter()
        .find_map(|(id, a)| theirs.get(id).filter(|b| *b != a).map(|b| (id, a, b)))
    {
        return Some(format!("node {id} is {here} here and {there} there"));
    }
    let named = |list: &HashMap<u64, String>, node: (u64, &HashMap<u64, String>)| {
        list.get(&node.0)
            .is_some_and(|a| node.1.get(&node.0) == Some(a))
    };
    if named(&mine, (other.0, &theirs)) || named(&theirs, (me.0, &mine)) {
        None
    } else {
        Some("neither names the other".to_owned())
    }
}

/// Why two replicas that may share a database cannot serve MQTT together, if they cannot:
/// nodes of different clusters, two nodes with one id, or a plain Mosquitto ingest beside
/// another (each would store every reading).
fn mqtt_conflict(me: &MqttRole, other: &Replica) -> Option<String> {
    use MqttRole::{ClusterNode, Mosquitto};
    let id = &other.info.id;
    let shared = "set broker.shared_ingest = true (BAL_BROKER__SHARED_INGEST) on every replica";
    match (me, &other.info.mqtt) {
        (
            ClusterNode {
                node_id: a,
                membership: mine,
            },
            ClusterNode {
                node_id: b,
                membership: theirs,
            },
        ) => {
            if a == b {
                Some(format!(
                    "replica {id:?} is MQTT cluster node {b} already: give each replica its own \
                     mqtt.cluster.node_id"
                ))
            } else {
                membership_conflict((*a, mine), (*b, theirs)).map(|why| {
                    format!(
                        "replica {id:?} is a node of another MQTT cluster ({why}; its \
                         mqtt.cluster.peers {theirs}, here {mine})"
                    )
                })
            }
        }
        (Mosquitto { shared: false }, Mosquitto { .. }) => Some(format!(
            "replica {id:?} ingests from Mosquitto already, and this one has \
             broker.shared_ingest = false: each would subscribe to every reading and store it, so \
             every reading would be stored twice; {shared}"
        )),
        (Mosquitto { shared: true }, Mosquitto { shared: false }) => Some(format!(
            "replica {id:?} ingests from Mosquitto with broker.shared_ingest = false, taking \
             every reading itself: with this one every reading would be stored twice; {shared}"
        )),
        _ => None,
    }
}

/// Why `me` cannot join the live replicas `others` (itself left out), if it cannot. With
/// `own_ca`, this replica would serve a certificate of a CA it generated itself: the others'
/// clients would not trust it.
fn refusal(me: &ReplicaInfo, own_ca: bool, others: &[Replica]) -> Option<String> {
    if let Some(why) = others.iter().find_map(|r| conflict(me, r)) {
        return Some(why);
    }
    let first = others.first()?;
    own_ca.then(|| {
        format!(
            "replica {:?} serves this database already, and this one would serve a certificate              of its own generated CA, which the clients of the others do not trust: give every              replica the same http.cert_file and http.key_file",
            first.info.id
        )
    })
}

/// Enters this replica in the registry, or refuses (with the message for the operator) when it
/// and a live replica cannot share the database (see [`refusal`]). A live row under this
/// replica's own id is taken over: it is this replica's previous life (a restart after a
/// crash), or a second process given the same id, which the warning names.
pub async fn join(
    store: &SharedStore,
    me: &ReplicaInfo,
    own_ca: bool,
    ttl: Duration,
) -> anyhow::Result<()> {
    let live = store.live_replicas().await?;
    if let Some(own) = live.iter().find(|r| r.info.id == me.id) {
        tracing::warn!(
            replica = %me.id,
            last_seen = %own.seen_at.to_rfc3339(),
            "a replica with this id was alive moments ago: taking its place (a restart); if \
             another process runs with this id, give each its own cluster.replica_id"
        );
    }
    let check = |live: &[Replica]| {
        let others: Vec<Replica> = live
            .iter()
            .filter(|r| r.info.id != me.id)
            .cloned()
            .collect();
        refusal(me, own_ca, &others)
    };
    if let Some(why) = check(&live) {
        anyhow::bail!("{why}");
    }
    store.heartbeat(me, ttl).await?;
    // Two processes that joined at the same moment both see each other now: both refuse, and
    // their supervisors' restarts (at different moments) let one in.
    if let Some(why) = check(&store.live_replicas().await?) {
        let _ = store.leave(&me.id).await;
        anyhow::bail!("{why}");
    }
    Ok(())
}

/// Renews this replica's entry every `every` until told to stop, then removes it.
pub async fn heartbeats(
    store: SharedStore,
    me: ReplicaInfo,
    every: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let ttl = heartbeat_ttl(every);
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                if let Err(e) = store.heartbeat(&me, ttl).await {
                    tracing::warn!(error = %e.report(), "replica heartbeat failed");
                }
            }
            _ = stop.changed() => break,
        }
    }
    if let Err(e) = store.leave(&me.id).await {
        tracing::warn!(error = %e.report(), "could not leave the replica registry");
    }
}

/// Opens the database for a `bal cluster` command (never migrating it).
async fn open(settings: &Settings) -> anyhow::Result<SharedStore> {
    let url = settings.database_url();
    bal_scd::connect(&url, &settings.connect_options(bal_scd::Migrate::Refuse))
        .await
        .context("cannot open the database (database.url)")
}

/// `bal cluster status`: the live replicas and the certification lease.
pub async fn status(settings: &Settings) -> anyhow::Result<()> {
    let store = open(settings).await?;
    let replicas = store.live_replicas().await?;
    println!(
        "{:<24}  {:<10}  {:<25}  {:<25}  {:<22}  CHAIN",
        "REPLICA", "VERSION", "STARTED", "LAST SEEN", "MQTT"
    );
    for r in &replicas {
        let mqtt = match &r.info.mqtt {
            MqttRole::Embedded => "embedded (single node)".to_owned(),
            MqttRole::ClusterNode { node_id, .. } => format!("cluster node {node_id}"),
            MqttRole::Mosquitto { shared: false } => "mosquitto".to_owned(),
            MqttRole::Mosquitto { shared: true } => "mosquitto (shared)".to_owned(),
        };
        let chain = if r.info.embedded_chain {
            "embedded"
        } else {
            "node"
        };
        println!(
            "{:<24}  {:<10}  {:<25}  {:<25}  {mqtt:<22}  {chain}",
            r.info.id,
            r.info.version,
            r.started_at
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            r.seen_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        );
    }
    match store.lease(bal_scd::CERTIFY_LEASE).await? {
        Some(l) if l.expires_at > chrono::Utc::now() => println!(
            "certification lease: {} (epoch {}, until {})",
            l.holder,
            l.epoch,
            l.expires_at.to_rfc3339()
        ),
        Some(l) => println!(
            "certification lease: free (last held by {}, epoch {})",
            l.holder, l.epoch
        ),
        None => println!("certification lease: never taken"),
    }
    Ok(())
}

/// `bal cluster leave ID`: retires a replica that is stopped for good. Removes it from the
/// registry and, with Mosquitto, ends its persistent ingest session, which would otherwise
/// keep taking a share of the readings that nobody receives.
pub async fn leave(
    settings: &Settings,
    id: &str,
    ingest_client_id: Option<&str>,
) -> anyhow::Result<()> {
    let store = open(settings).await?;
    if let Some(r) = store
        .live_replicas()
        .await?
        .into_iter()
        .find(|r| r.info.id == id)
    {
        anyhow::bail!(
            "replica {id:?} is running (last seen {}): stop it first; `leave` is for a replica \
             removed for good",
            r.seen_at.to_rfc3339()
        );
    }
    let removed = store.leave(id).await?;
    println!(
        "replica {id:?}: {}",
        if removed {
            "removed from the registry"
        } else {
            "not in the registry"
        }
    );
    if settings.broker.kind == BrokerKind::Mosquitto {
        let client_id = ingest_client_id.map_or_else(|| format!("bal-ingest-{id}"), str::to_owned);
        let connection = settings.mosquitto_config()?.connection;
        bal_mqtt::mosquitto::ingest::retire(&connection, &client_id).await?;
        println!(
            "ingest session {client_id:?} on {} ended: its share goes to the other replicas",
            connection.address()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn replica(id: &str, broker: bool, chain: bool) -> Replica {
        let mqtt = if broker {
            MqttRole::Embedded
        } else {
            MqttRole::Mosquitto { shared: true }
        };
        with_mqtt(id, mqtt, chain)
    }

    fn with_mqtt(id: &str, mqtt: MqttRole, chain: bool) -> Replica {
        Replica {
            info: ReplicaInfo {
                id: id.into(),
                version: "0.1.0".into(),
                mqtt,
                embedded_chain: chain,
            },
            started_at: chrono::Utc::now(),
            seen_at: chrono::Utc::now(),
        }
    }

    #[test]
    fn only_replicas_without_single_node_parts_share_a_database() {
        let shared = replica("a", false, false);
        let broker = replica("b", true, false);
        let chain = replica("c", false, true);
        assert_eq!(conflict(&shared.info, &replica("d", false, false)), None);
        let why = conflict(&broker.info, &shared).unwrap();
        assert!(
            why.contains("\"a\"") && why.contains("the embedded broker"),
            "{why}"
        );
        let why = conflict(&shared.info, &chain).unwrap();
        assert!(
            why.contains("\"c\"") && why.contains("the embedded chain"),
            "{why}"
        );
        assert!(conflict(&chain.info, &broker).is_some());
    }

    fn node(id: &str, node_id: u64, membership: &str) -> Replica {
        let membership = membership.into();
        with_mqtt(
            id,
            MqttRole::ClusterNode {
                node_id,
                membership,
            },
            false,
        )
    }

    #[test]
    fn nodes_of_one_mqtt_cluster_share_a_database_under_distinct_ids() {
        let peers = "1@a:5363,2@b:5363";
        let me = node("b", 2, peers).info;
        assert_eq!(conflict(&me, &node("a", 1, peers)), None);
        let why = conflict(&me, &node("a", 2, peers)).unwrap();
        assert!(
            why.contains("node 2 already") && why.contains("mqtt.cluster.node_id"),
            "{why}"
        );
        let why = conflict(&me, &node("a", 1, "1@a:5363,2@b:5364")).unwrap();
        assert!(
            why.contains("another MQTT cluster") && why.contains("node 2 is b:5363 here"),
            "{why}"
        );
        // Growing by a node, the new list on some nodes and the old one on others: one cluster.
        let grown = "1@a:5363,2@b:5363,3@c:5363";
        assert_eq!(
            conflict(&node("c", 3, grown).info, &node("a", 1, peers)),
            None
        );
        assert_eq!(
            conflict(&node("a", 1, peers).info, &node("c", 3, grown)),
            None
        );
        // Two clusters that name different nodes do not share a database.
        let other = node("x", 3, "3@x:5363,4@y:5363");
        let why = conflict(&me, &other).unwrap();
        assert!(why.contains("neither names the other"), "{why}");
        // A single-node embedded broker shares with nobody, nodes included.
        assert!(conflict(&me, &replica("c", true, false)).is_some());
        assert!(conflict(&replica("c", true, false).info, &node("a", 1, peers)).is_some());
        // Shared Mosquitto ingest beside a cluster: each stores what its own broker receives.
        assert_eq!(conflict(&me, &replica("m", false, false)), None);
    }

    #[test]
    fn a_plain_mosquitto_ingest_shares_with_no_other_mosquitto_ingest() {
        let plain = |id| with_mqtt(id, MqttRole::Mosquitto { shared: false }, false);
        let shared = |id| with_mqtt(id, MqttRole::Mosquitto { shared: true }, false);
        for (me, other) in [
            (plain("b"), plain("a")),
            (plain("b"), shared("a")),
            (shared("b"), plain("a")),
        ] {
            let why = conflict(&me.info, &other).unwrap();
            assert!(
                why.contains("\"a\"") && why.contains("broker.shared_ingest = true"),
                "{why}"
            );
        }
        assert_eq!(conflict(&shared("b").info, &shared("a")), None);
    }

    #[test]
    fn a_replica_with_a_generated_ca_joins_no_other() {
        let me = replica("b", false, false).info;
        let other = replica("a", false, false);
        assert_eq!(
            refusal(&me, true, &[]),
            None,
            "the first may generate its own"
        );
        assert_eq!(refusal(&me, false, std::slice::from_ref(&other)), None);
        let why = refusal(&me, true, &[other]).unwrap();
        assert!(
            why.contains("http.cert_file") && why.contains("\"a\""),
            "{why}"
        );
    }
}
