//! Three `bal serve` processes, each one node of the embedded MQTT cluster (`mqtt.cluster.*`),
//! on one PostgreSQL database with anvil, driven by paho-mqtt clients (a client we did not
//! write): a reading published on node 1 reaches a granted consumer on node 2; an ungranted
//! subscribe on node 3 is refused; a revocation made on node 3 cuts node 2's subscription
//! within a second; a client id held on one node cannot be taken by another user on another,
//! and its own user, connecting on another node, takes it over; a device whose node
//! is killed (-9) under QoS 1 load moves to another node and nothing acknowledged is lost or
//! stored twice, certification goes on, and the node comes back into the cluster; a node whose
//! peers stop answering keeps serving its own clients and says so in `/readyz` and `/metrics`.
//! And the Mosquitto layout: a second replica with a plain (not shared) ingest is refused.
//!
//! Runs on the PostgreSQL pass of the suite (several processes need PostgreSQL); it fails when
//! PostgreSQL, anvil or paho-mqtt is missing.

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};
use tokio::io::AsyncBufReadExt;
use tokio::process::Child;

use crate::helpers::{ADMIN_PASSWORD, PASSWORD, eventually, install_crypto_provider};
use crate::mosquitto_server::MosquittoServer;
use crate::paho::{PahoDevice, Readings, python_script};
use crate::replicas::Cluster;
use bal_ledger::testing::Anvil;

fn on_postgres_pass() -> bool {
    bal_scd::testing::backend() == bal_scd::Backend::Postgres
}

/// `nodes` nodes of one MQTT cluster, started and ready.
async fn start(nodes: usize, anvil: &Anvil) -> Cluster {
    let mut cluster = Cluster::new(nodes, None, &anvil.url);
    for i in 0..nodes {
        cluster.spawn(i);
    }
    for i in 0..nodes {
        cluster.wait_ready(i).await;
    }
    cluster
}

/// Whether every running node's `/readyz` shows every peer in `state`.
async fn peers_all(cluster: &Cluster, nodes: &[usize], state: &str) -> bool {
    for &i in nodes {
        let body = cluster.readyz(i).await.unwrap_or_default();
        let peers = body["mqtt_cluster"]["peers"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if peers.len() != cluster.replicas.len() - 1 || peers.iter().any(|p| p["state"] != state) {
            return false;
        }
    }
    true
}

/// A paho client (`paho_client.py`) whose report lines the test reads as they come.
struct PahoClient {
    child: Child,
    lines: tokio::sync::mpsc::UnboundedReceiver<String>,
    seen: Vec<String>,
}

impl PahoClient {
    /// Connects to `port` as `user` with `client_id` for `seconds`; `args` as the script takes.
    fn start(port: u16, user: &str, client_id: &str, seconds: u32, args: &[&str]) -> Self {
        let mut child = python_script("paho_client.py")
            .args(["127.0.0.1", &port.to_string(), user, PASSWORD, client_id])
            .arg(seconds.to_string())
            .args(args)
            .spawn()
            .expect("python runs");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut reader = tokio::io::BufReader::new(stdout).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                let _ = tx.send(line);
            }
        });
        Self {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// The first line starting with `prefix` within `secs` (seen earlier or arriving now).
    async fn wait_for(&mut self, prefix: &str, secs: u64) -> String {
        if let Some(l) = self.seen.iter().find(|l| l.starts_with(prefix)) {
            return l.clone();
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
        loop {
            match tokio::time::timeout_at(deadline, self.lines.recv()).await {
                Ok(Some(line)) => {
                    self.seen.push(line.clone());
                    if line.starts_with(prefix) {
                        return line;
                    }
                }
                _ => panic!("no {prefix:?} within {secs} s; got {:?}", self.seen),
            }
        }
    }

    /// Every line so far.
    fn drain(&mut self) -> &[String] {
        while let Ok(line) = self.lines.try_recv() {
            self.seen.push(line);
        }
        &self.seen
    }

    /// The payloads received, with their arrival times.
    fn messages(&mut self) -> Vec<(f64, String)> {
        self.drain()
            .iter()
            .filter_map(|l| l.strip_prefix("msg "))
            .filter_map(|rest| {
                let mut parts = rest.splitn(3, ' ');
                let at = parts.next()?.parse().ok()?;
                let _topic = parts.next()?;
                Some((at, parts.next()?.to_owned()))
            })
            .collect()
    }

    /// Waits until `n` messages have arrived.
    async fn wait_messages(&mut self, n: usize, secs: u64, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while self.messages().len() < n {
            assert!(Instant::now() < deadline, "{what}: {:?}", self.seen);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn stop(mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }
}

fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// Creates `name` with `role` through node `i`.
async fn create_user(cluster: &Cluster, i: usize, admin: &str, name: &str, role: &str) {
    let r = cluster
        .request(
            i,
            Method::POST,
            "/api/users",
            admin,
            Some(json!({ "username": name, "password": PASSWORD, "role": role })),
        )
        .await;
    assert_eq!(r.status(), reqwest::StatusCode::CREATED, "create {name}");
}

/// `consumer` asks on node `ask`, `producer` accepts on node `accept`; the subscription's id.
async fn grant(
    cluster: &Cluster,
    consumer: &str,
    producer: &str,
    ask: usize,
    accept: usize,
) -> String {
    let k = cluster.token(ask, consumer, PASSWORD).await;
    let body = json!({ "topic": format!("platone/{producer}") });
    let r = cluster
        .request(ask, Method::POST, "/api/subscriptions", &k, Some(body))
        .await;
    assert_eq!(r.status(), reqwest::StatusCode::CREATED);
    let id = r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let p = cluster.token(accept, producer, PASSWORD).await;
    let path = format!("/api/subscriptions/{id}/accept");
    let r = cluster.request(accept, Method::POST, &path, &p, None).await;
    assert_eq!(r.status(), reqwest::StatusCode::OK);
    id
}

/// A device on `port` publishing `count` readings `<prefix>-<i>` QoS 1, `rate` per second.
fn device(ports: &str, user: &str, prefix: &str, count: usize, rate: u32) -> PahoDevice {
    let readings = Readings {
        count,
        rate,
        version: 3,
        prefix,
    };
    PahoDevice::start_on(ports, user, PASSWORD, &readings)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_apply_the_grant_rules_to_clients_on_any_node() {
    if !on_postgres_pass() {
        return; // the PostgreSQL pass runs it (several processes share PostgreSQL)
    }
    install_crypto_provider();
    let anvil = Anvil::start().await;
    let cluster = start(3, &anvil).await;
    eventually(15, "every node reaching every peer", || {
        peers_all(&cluster, &[0, 1, 2], "up")
    })
    .await;
    let admin = cluster.token(0, "admin", ADMIN_PASSWORD).await;
    create_user(&cluster, 0, &admin, "meter1", "producer").await;
    create_user(&cluster, 1, &admin, "consumer1", "consumer").await;
    create_user(&cluster, 2, &admin, "consumer2", "consumer").await;
    let subscription = grant(&cluster, "consumer1", "meter1", 1, 2).await;
    let port = |i: usize| cluster.replicas[i].mqtt;

    // A granted consumer on node 2 receives what the device publishes on node 1.
    let mut watcher = PahoClient::start(
        port(1),
        "consumer1",
        "watch-1",
        60,
        &["--filter", "platone/meter1/#"],
    );
    assert_eq!(watcher.wait_for("suback", 10).await, "suback 1");
    // An ungranted subscribe on node 3 is refused (3.1.1: 0x80).
    let mut stranger = PahoClient::start(
        port(2),
        "consumer2",
        "watch-2",
        10,
        &["--filter", "platone/meter1/#"],
    );
    assert_eq!(stranger.wait_for("suback", 10).await, "suback 128");
    stranger.stop().await;

    let publisher = device(&port(0).to_string(), "meter1", "first", 20, 20);
    publisher.finish(20).await;
    watcher
        .wait_messages(20, 10, "node 2's consumer receiving node 1's readings")
        .await;
    // In the order they were published (forwarding leaves the PUBACK path, not the order).
    let got: Vec<String> = watcher.messages().into_iter().map(|(_, p)| p).collect();
    let sent: Vec<String> = (0..20).map(|i| format!("first-{i}")).collect();
    assert_eq!(got, sent);

    // A revocation made on node 3 ends node 2's subscription within a second.
    let p = cluster.token(2, "meter1", PASSWORD).await;
    let steady = device(&port(0).to_string(), "meter1", "steady", 150, 50);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let revoked_at = now();
    let path = format!("/api/subscriptions/{subscription}/revoke");
    let r = cluster.request(2, Method::POST, &path, &p, None).await;
    assert_eq!(r.status(), reqwest::StatusCode::OK);
    steady.finish(150).await;
    let after: Vec<f64> = watcher
        .messages()
        .into_iter()
        .filter(|(_, payload)| payload.starts_with("steady-"))
        .map(|(at, _)| at - revoked_at)
        .collect();
    assert!(
        after.iter().any(|d| *d < 0.0),
        "nothing delivered before the revocation"
    );
    let last = after.iter().copied().fold(f64::MIN, f64::max);
    println!("last delivery {last:.3} s after the revocation on another node");
    assert!(last <= 1.0, "delivered {last:.3} s after the revocation");
    watcher.stop().await;

    // A client id held on node 2 by consumer1 (granted again, subscribed) cannot be taken by
    // consumer2 on node 3...
    grant(&cluster, "consumer1", "meter1", 1, 2).await;
    let mut holder = PahoClient::start(
        port(1),
        "consumer1",
        "shared-id",
        60,
        &["--persistent", "--filter", "platone/meter1/#"],
    );
    assert_eq!(holder.wait_for("connack", 10).await, "connack 0 0");
    assert_eq!(holder.wait_for("suback", 10).await, "suback 1");
    let mut thief = PahoClient::start(port(2), "consumer2", "shared-id", 10, &[]);
    // 3.1.1's 5 (not authorised), which paho reports as MQTT 5's 0x87.
    assert_eq!(thief.wait_for("connack", 10).await, "connack 135 0");
    thief.stop().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !holder.drain().iter().any(|l| l.starts_with("disconnected")),
        "the holder lost its connection: {:?}",
        holder.seen
    );
    // ...while consumer1 itself, connecting on node 1, takes it over: node 2 ends the old
    // connection (one connection per client id in the whole cluster), and the persistent
    // session moves along: present, and its subscription still delivers.
    let mut back = PahoClient::start(port(0), "consumer1", "shared-id", 30, &["--persistent"]);
    assert_eq!(
        back.wait_for("connack", 10).await,
        "connack 0 1",
        "session present"
    );
    holder.wait_for("disconnected", 10).await;
    holder.stop().await;
    device(&port(2).to_string(), "meter1", "moved", 5, 10)
        .finish(5)
        .await;
    back.wait_messages(
        5,
        10,
        "the moved session's subscription delivering on node 1",
    )
    .await;
    back.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_under_qos1_load_loses_nothing_and_rejoins() {
    if !on_postgres_pass() {
        return; // the PostgreSQL pass runs it (several processes share PostgreSQL)
    }
    install_crypto_provider();
    let anvil = Anvil::start().await;
    let mut cluster = start(3, &anvil).await;
    let admin = cluster.token(0, "admin", ADMIN_PASSWORD).await;
    create_user(&cluster, 0, &admin, "meter1", "producer").await;
    const READINGS: usize = 3000;
    let ports: Vec<String> = cluster
        .replicas
        .iter()
        .map(|r| r.mqtt.to_string())
        .collect();
    // Starts on node 1, moves to the next node whenever its connection is lost.
    let publisher = device(&ports.join(","), "meter1", "load", READINGS, 300);
    tokio::time::sleep(Duration::from_secs(3)).await;
    cluster.kill(0).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    cluster.spawn(0);
    cluster.wait_ready(0).await;
    let acked = publisher.finish(READINGS).await;

    // Every acknowledged reading stored once; certification went on (the lease moved if node 1
    // held it).
    cluster.assert_stored_once(&admin, "meter1", &acked).await;
    cluster.wait_certified().await;

    // The restarted node is back in the cluster: it reaches its peers and they reach it.
    eventually(15, "node 1 back in the cluster", || {
        peers_all(&cluster, &[0, 1, 2], "up")
    })
    .await;
    // And it carries traffic again: published on node 1, received on node 3.
    create_user(&cluster, 0, &admin, "consumer1", "consumer").await;
    grant(&cluster, "consumer1", "meter1", 0, 1).await;
    let mut watcher = PahoClient::start(
        cluster.replicas[2].mqtt,
        "consumer1",
        "after",
        30,
        &["--filter", "platone/meter1"],
    );
    assert_eq!(watcher.wait_for("suback", 10).await, "suback 1");
    device(&ports[0], "meter1", "after", 5, 10).finish(5).await;
    watcher
        .wait_messages(5, 10, "delivery through the restarted node")
        .await;
    watcher.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_peers_stop_answering_keeps_serving_its_own_clients() {
    if !on_postgres_pass() {
        return; // the PostgreSQL pass runs it (several processes share PostgreSQL)
    }
    install_crypto_provider();
    let anvil = Anvil::start().await;
    let cluster = start(3, &anvil).await;
    let admin = cluster.token(0, "admin", ADMIN_PASSWORD).await;
    create_user(&cluster, 0, &admin, "meter1", "producer").await;
    create_user(&cluster, 0, &admin, "consumer1", "consumer").await;
    grant(&cluster, "consumer1", "meter1", 0, 0).await;

    // Nodes 2 and 3 freeze (SIGSTOP): their sockets still accept but nothing answers, as
    // across a partition that drops packets.
    let signal = |sig: &str, i: usize| {
        let pid = cluster.pid(i).to_string();
        let ok = std::process::Command::new("kill")
            .args([sig, &pid])
            .status()
            .unwrap();
        assert!(ok.success());
    };
    signal("-STOP", 1);
    signal("-STOP", 2);
    let cut_at = Instant::now();
    eventually(15, "node 1 saying its peers are down", || {
        peers_all(&cluster, &[0], "down")
    })
    .await;
    println!("peers reported down {:?} after the cut", cut_at.elapsed());
    let metrics = cluster
        .client
        .get(cluster.url(0, "/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("bal_mqtt_cluster_peers{state=\"down\"} 2"),
        "{metrics}"
    );

    // Its own clients: a consumer subscribes and a device publishes QoS 1, both on node 1.
    let port = cluster.replicas[0].mqtt;
    let started = Instant::now();
    let mut watcher = PahoClient::start(
        port,
        "consumer1",
        "cut-watch",
        60,
        &["--filter", "platone/meter1"],
    );
    assert_eq!(watcher.wait_for("suback", 20).await, "suback 1");
    device(&port.to_string(), "meter1", "cut", 20, 20)
        .finish(20)
        .await;
    watcher
        .wait_messages(20, 20, "delivery on the cut-off node")
        .await;
    println!("served on the cut-off node in {:?}", started.elapsed());
    watcher.stop().await;

    signal("-CONT", 1);
    signal("-CONT", 2);
    eventually(20, "the peers back up", || peers_all(&cluster, &[0], "up")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_replica_with_a_plain_mosquitto_ingest_is_refused() {
    if !on_postgres_pass() {
        return; // the PostgreSQL pass runs it (several processes share PostgreSQL)
    }
    install_crypto_provider();
    let mosquitto = MosquittoServer::start(256 * 1024);
    let anvil = Anvil::start().await;
    let mut cluster = Cluster::new(2, Some(mosquitto.port), &anvil.url);
    // The default a new operator keeps: broker.shared_ingest = false.
    let plain = [("BAL_BROKER__SHARED_INGEST", "false")];
    cluster.spawn_with(0, &plain);
    cluster.wait_ready(0).await;
    let why = cluster.refused(1, &plain).await;
    assert!(
        why.contains("\"bal-1\"") && why.contains("broker.shared_ingest = true"),
        "{why}"
    );
    // A shared ingest beside the plain one would duplicate as well.
    let why = cluster.refused(1, &[]).await;
    assert!(why.contains("broker.shared_ingest = true"), "{why}");
}
