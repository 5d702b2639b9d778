//! Three `bal serve` processes on one PostgreSQL database, one Mosquitto with dynsec and one
//! anvil node, acting as one BAL: a device publishes QoS 1 with a persistent session while the
//! test `kill -9`s the certification lease holder, then another replica, and restarts them.
//! Every reading the device got acknowledged is stored once and certified, every root is
//! anchored once (read back from the node's logs), sessions work on every replica and end
//! everywhere at a password change (on the broker too), failed logins spread over the replicas hit the limits as if
//! on one (counting the client address a trusted balancer forwards), and a live stream on one
//! replica shows readings ingested by the others and ends within a second of a revocation made
//! on another.
//!
//! Replicas need PostgreSQL: this test makes a database of its own there on both passes of the
//! suite (on the SQLite pass too), and fails when PostgreSQL, Mosquitto, anvil or paho-mqtt is
//! missing.

use std::collections::HashMap;
use std::process::Stdio;
use std::time::{Duration, Instant};

use alloy_primitives::B256;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::process::{Child, Command};

use crate::helpers::{
    ADMIN_PASSWORD, PASSWORD, eventually, free_port, install_crypto_provider, read_events,
    readings_of,
};
use crate::mosquitto_server::{self, MosquittoServer};
use crate::paho::PahoDevice;
use bal_ledger::testing::{ANVIL_KEY_0 as KEY_0, Anvil};

/// Readings the device publishes, and how fast: the kills happen while it publishes.
const READINGS: usize = 5000;
const RATE: u32 = 250;
/// The certification lease: a dead holder's work waits this long for another replica.
const LEASE_SECS: u64 = 3;
const MASTER_KEY: &str = "replicas-test-master-key-0123456789";
/// Failed logins allowed per username and per client address (small, to keep the test short).
const USER_LIMIT: usize = 3;
const ADDRESS_LIMIT: usize = 6;

pub struct Replica {
    pub id: String,
    dir: tempfile::TempDir,
    http: u16,
    /// With the embedded MQTT cluster: this node's MQTT port and node-to-node port.
    pub mqtt: u16,
    cluster: u16,
    child: Option<Child>,
}

impl Replica {
    pub fn new(n: usize) -> Self {
        Self {
            id: format!("bal-{n}"),
            dir: tempfile::tempdir().unwrap(),
            http: free_port(),
            mqtt: free_port(),
            cluster: free_port(),
            child: None,
        }
    }
}

/// What every replica shares: the database, the broker (one Mosquitto, or none: each replica
/// a node of the embedded MQTT cluster), the chain and the keys.
pub struct Cluster {
    pub database: String,
    pub mosquitto: Option<u16>,
    pub chain: String,
    pub replicas: Vec<Replica>,
    pub client: reqwest::Client,
}

impl Cluster {
    /// `n` replicas (none started yet) on a new PostgreSQL database of their own, ingesting
    /// from the Mosquitto on port `mosquitto` or, without one, as nodes of one MQTT cluster.
    pub fn new(n: usize, mosquitto: Option<u16>, chain: &str) -> Self {
        Self {
            database: bal_scd::testing::create_postgres_database(),
            mosquitto,
            chain: chain.to_owned(),
            replicas: (1..=n).map(Replica::new).collect(),
            client: reqwest::Client::new(),
        }
    }

    pub fn spawn(&mut self, i: usize) {
        self.spawn_with(i, &[]);
    }

    /// Starts replica `i` with `extra` settings over the harness's.
    pub fn spawn_with(&mut self, i: usize, extra: &[(&str, &str)]) {
        let child = self
            .command(i, extra)
            .stderr(Stdio::inherit())
            .spawn()
            .expect("bal serve starts");
        self.replicas[i].child = Some(child);
    }

    /// Runs replica `i` with `extra` settings, expecting it to refuse to start: its output.
    pub async fn refused(&self, i: usize, extra: &[(&str, &str)]) -> String {
        let run = self.command(i, extra).stderr(Stdio::piped()).output();
        let out = tokio::time::timeout(Duration::from_secs(60), run)
            .await
            .expect("a refusal comes at once")
            .unwrap();
        assert!(!out.status.success(), "bal serve started");
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    /// `bal serve` as replica `i`, with `extra` settings over the harness's.
    fn command(&self, i: usize, extra: &[(&str, &str)]) -> Command {
        let peers: Vec<String> = (0..self.replicas.len())
            .map(|n| format!("{}@127.0.0.1:{}", n + 1, self.replicas[n].cluster))
            .collect();
        let r = &self.replicas[i];
        let mut command = Command::new(env!("CARGO_BIN_EXE_bal"));
        command
            .arg("--data-dir")
            .arg(r.dir.path())
            .arg("serve")
            .env("BAL_DATABASE__URL", &self.database)
            .env("BAL_DATABASE__MAX_CONNECTIONS", "4")
            .env("BAL_HTTP__TLS", "false")
            .env("BAL_HTTP__LISTEN", format!("127.0.0.1:{}", r.http))
            .env("BAL_HTTP__SHUTDOWN_DELAY_MS", "0");
        match self.mosquitto {
            Some(port) => command
                .env("BAL_BROKER__KIND", "mosquitto")
                .env("BAL_BROKER__URL", format!("mqtt://127.0.0.1:{port}"))
                .env("BAL_BROKER__ADMIN_USERNAME", mosquitto_server::ADMIN)
                .env(
                    "BAL_BROKER__ADMIN_PASSWORD",
                    mosquitto_server::ADMIN_PASSWORD,
                )
                .env("BAL_BROKER__SHARED_INGEST", "true")
                .env("BAL_BROKER__RECONCILE_SECS", "1"),
            None => command
                .env("BAL_MQTT__LISTEN", format!("127.0.0.1:{}", r.mqtt))
                .env("BAL_MQTT__LISTEN_TLS", "off")
                .env("BAL_MQTT__CLUSTER__NODE_ID", (i + 1).to_string())
                .env(
                    "BAL_MQTT__CLUSTER__LISTEN",
                    format!("127.0.0.1:{}", r.cluster),
                )
                .env("BAL_MQTT__CLUSTER__PEERS", peers.join(",")),
        };
        command
            .env("BAL_CHAIN__RPC_URL", &self.chain)
            .env("BAL_CHAIN__OPERATOR_KEY", KEY_0)
            .env("BAL_KEYS__MASTER_KEY", MASTER_KEY)
            .env("BAL_ADMIN_PASSWORD", ADMIN_PASSWORD)
            .env("BAL_CLUSTER__REPLICA_ID", &r.id)
            .env("BAL_CLUSTER__HEARTBEAT_SECS", "1")
            .env("BAL_CERTIFY__LEASE_SECS", LEASE_SECS.to_string())
            .env("BAL_CERTIFY__BATCH_WINDOW_MS", "300")
            // The test stands for the load balancer in front of the replicas.
            .env("BAL_HTTP__TRUSTED_PROXIES", "[\"127.0.0.1\"]")
            .env(
                "BAL_AUTH__MAX_FAILED_LOGINS_PER_USER",
                USER_LIMIT.to_string(),
            )
            .env(
                "BAL_AUTH__MAX_FAILED_LOGINS_PER_ADDRESS",
                ADDRESS_LIMIT.to_string(),
            )
            .env("RUST_LOG", "error")
            .stdout(Stdio::null())
            .kill_on_drop(true);
        for (k, v) in extra {
            command.env(k, v);
        }
        command
    }

    /// Checks that every payload in `acked` is stored once and nothing twice; the readings.
    pub async fn assert_stored_once(
        &self,
        admin: &str,
        producer: &str,
        acked: &std::collections::HashSet<String>,
    ) -> Vec<(i64, String)> {
        let readings = readings_of(&self.client, &self.url(1, ""), admin, producer).await;
        let mut count: HashMap<&str, usize> = HashMap::new();
        for (_, text) in &readings {
            *count.entry(text.as_str()).or_default() += 1;
        }
        for payload in acked {
            assert_eq!(count.get(payload.as_str()), Some(&1), "{payload}");
        }
        assert!(count.values().all(|c| *c == 1), "a reading stored twice");
        readings
    }

    /// Waits until every stored reading is certified; the store, to look further.
    pub async fn wait_certified(&self) -> bal_scd::SharedStore {
        let store = bal_scd::connect(&self.database, &bal_scd::ConnectOptions::default())
            .await
            .unwrap();
        eventually(30, "every reading certified", || async {
            let s = store.certification_status().await.unwrap();
            s.unbatched_measurements == 0 && s.pending_batches == 0
        })
        .await;
        store
    }

    /// Replica `i`'s process id (it runs).
    pub fn pid(&self, i: usize) -> u32 {
        let child = self.replicas[i].child.as_ref().expect("replica runs");
        child.id().expect("replica runs")
    }

    pub fn url(&self, i: usize, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.replicas[i].http)
    }

    pub async fn readyz(&self, i: usize) -> Option<Value> {
        let r = self.client.get(self.url(i, "/readyz")).send().await.ok()?;
        (r.status() == StatusCode::OK).then_some(())?;
        r.json().await.ok()
    }

    pub async fn wait_ready(&mut self, i: usize) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let child = self.replicas[i].child.as_mut().unwrap();
            if let Some(status) = child.try_wait().unwrap() {
                panic!(
                    "{} exited with {status} while starting",
                    self.replicas[i].id
                );
            }
            if self.readyz(i).await.is_some() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{} did not start",
                self.replicas[i].id
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn kill(&mut self, i: usize) {
        let mut child = self.replicas[i].child.take().unwrap();
        child.start_kill().unwrap(); // SIGKILL
        child.wait().await.unwrap();
    }

    /// The lease holder as a live replica reports it.
    pub async fn lease_holder(&self) -> Option<String> {
        for i in 0..self.replicas.len() {
            if self.replicas[i].child.is_none() {
                continue;
            }
            if let Some(body) = self.readyz(i).await {
                return body["cluster"]["lease_holder"].as_str().map(str::to_owned);
            }
        }
        None
    }

    pub async fn request(
        &self,
        i: usize,
        method: reqwest::Method,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> reqwest::Response {
        let mut r = self
            .client
            .request(method, self.url(i, path))
            .bearer_auth(token);
        if let Some(b) = body {
            r = r.json(&b);
        }
        r.send().await.unwrap()
    }

    /// A login's status on replica `i`, from the client `forwarded` names (as the balancer
    /// says in `X-Forwarded-For`), or from the test's own address.
    async fn login_status(
        &self,
        i: usize,
        user: &str,
        password: &str,
        forwarded: Option<&str>,
    ) -> StatusCode {
        let mut r = self
            .client
            .post(self.url(i, "/api/auth/login"))
            .json(&json!({ "username": user, "password": password }));
        if let Some(client) = forwarded {
            r = r.header("x-forwarded-for", client);
        }
        r.send().await.unwrap().status()
    }

    pub async fn token(&self, i: usize, user: &str, password: &str) -> String {
        let r = self
            .client
            .post(self.url(i, "/api/auth/login"))
            .json(&json!({ "username": user, "password": password }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "login as {user} on replica {i}");
        r.json::<Value>().await.unwrap()["token"]
            .as_str()
            .unwrap()
            .to_owned()
    }
}

/// The roots anchored on the node, each as often as it was anchored (the contract's events).
pub async fn anchored_roots(chain: &str, contract: &str) -> HashMap<B256, usize> {
    // Only the contract's Anchored events (the deployment logs others).
    let anchored = alloy_primitives::keccak256("Anchored(bytes32,address,uint32,bytes32)");
    let r: Value = reqwest::Client::new()
        .post(chain)
        .json(&json!({ "jsonrpc": "2.0", "id": 1, "method": "eth_getLogs",
            "params": [{ "address": contract, "fromBlock": "0x0", "toBlock": "latest",
                "topics": [anchored.to_string()] }] }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut roots = HashMap::new();
    for log in r["result"].as_array().expect("logs") {
        // Anchored(bytes32 indexed root, address indexed anchorer, ...): topics[1] is the root.
        let root: B256 = log["topics"][1].as_str().unwrap().parse().unwrap();
        *roots.entry(root).or_default() += 1;
    }
    roots
}

/// Whether Mosquitto accepts this MQTT 5 login.
async fn mqtt_login(port: u16, user: &str, password: &str) -> bool {
    use rumqttc::v5::mqttbytes::v5::{ConnectReturnCode, Packet};
    use rumqttc::v5::{AsyncClient, Event, MqttOptions};
    let mut o = MqttOptions::new(format!("login-check-{user}"), "127.0.0.1", port);
    o.set_credentials(user, password);
    let (client, mut events) = AsyncClient::new(o, 10);
    let accepted = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match events.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                    return ack.code == ConnectReturnCode::Success;
                }
                Ok(_) => {}
                Err(_) => return false,
            }
        }
    })
    .await
    .unwrap_or(false);
    let _ = client.disconnect().await;
    accepted
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_act_as_one_bal_through_kill_9s_of_the_lease_holder_and_another() {
    install_crypto_provider();
    let mosquitto = MosquittoServer::start(256 * 1024);
    let anvil = Anvil::start().await;
    let mut cluster = Cluster::new(3, Some(mosquitto.port), &anvil.url);
    // All three start at once on the empty database, as a StatefulSet's pods may: one
    // migrates (the others wait for its lock), one creates the first admin (once), one deploys
    // the contract (under the lease).
    for i in 0..3 {
        cluster.spawn(i);
    }
    for i in 0..3 {
        cluster.wait_ready(i).await;
    }
    let live = cluster.readyz(2).await.unwrap()["cluster"]["replicas"].clone();
    assert_eq!(live, json!(["bal-1", "bal-2", "bal-3"]));

    // Sessions: a token from one replica works on the others.
    let admin = cluster.token(0, "admin", ADMIN_PASSWORD).await;
    let r = cluster
        .request(
            1,
            reqwest::Method::POST,
            "/api/users",
            &admin,
            Some(json!({ "username": "device1", "password": PASSWORD, "role": "producer" })),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = cluster
        .request(
            2,
            reqwest::Method::POST,
            "/api/users",
            &admin,
            Some(json!({ "username": "consumer1", "password": PASSWORD, "role": "consumer" })),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let producer = cluster.token(0, "device1", PASSWORD).await;
    let consumer = cluster.token(2, "consumer1", PASSWORD).await;

    // The device's account reaches Mosquitto through the reconciliation.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let device = PahoDevice::start(mosquitto.port, "device1", PASSWORD, READINGS, RATE);

    // kill -9 of the lease holder while the device publishes; another takes over.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let holder = cluster.lease_holder().await.expect("a lease holder");
    let leader = cluster
        .replicas
        .iter()
        .position(|r| r.id == holder)
        .unwrap();
    // The second kill's target, and the replica never killed (it serves the live stream).
    let (other, calm) = match leader {
        0 => (1, 2),
        1 => (2, 0),
        _ => (0, 1),
    };
    let killed_at = Instant::now();
    cluster.kill(leader).await;
    let mut next = None;
    while next.is_none() || next.as_deref() == Some(holder.as_str()) {
        assert!(
            killed_at.elapsed() < Duration::from_secs(LEASE_SECS + 10),
            "no replica took the lease over"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        next = cluster.lease_holder().await;
    }
    let failover = killed_at.elapsed();
    println!("lease taken over by {next:?} {failover:?} after the kill of {holder}");
    assert!(
        failover <= Duration::from_secs(LEASE_SECS + 2),
        "{failover:?}"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    cluster.spawn(leader);
    cluster.wait_ready(leader).await;

    // Then another replica (the lease holder now, or not).
    tokio::time::sleep(Duration::from_secs(1)).await;
    cluster.kill(other).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    cluster.spawn(other);
    cluster.wait_ready(other).await;

    let acked = device.finish(READINGS).await;

    // Every acknowledged reading stored once, readable on any replica.
    let readings = cluster.assert_stored_once(&admin, "device1", &acked).await;

    // Every reading certified, each root anchored once on the node.
    let store = cluster.wait_certified().await;
    let batches = store.batches(None, 10_000).await.unwrap();
    let contract = batches[0].anchor.unwrap().contract.to_string();
    let on_chain = anchored_roots(&cluster.chain, &contract).await;
    let in_db: std::collections::HashSet<B256> = batches.iter().map(|b| b.root).collect();
    let strays: Vec<_> = on_chain.keys().filter(|r| !in_db.contains(*r)).collect();
    assert!(
        strays.is_empty(),
        "roots anchored that no batch has: {strays:?}"
    );
    assert_eq!(on_chain.len(), batches.len(), "one anchor per batch");
    for b in &batches {
        assert_eq!(on_chain.get(&b.root), Some(&1), "batch {} root", b.seq);
    }
    let certified: u64 = batches.iter().map(|b| u64::from(b.measurement_count)).sum();
    assert_eq!(certified, readings.len() as u64);

    // A password change on bal-3 ends the session at once on bal-1; the new one works.
    let r = cluster
        .request(
            2,
            reqwest::Method::PUT,
            "/api/users/device1/password",
            &admin,
            Some(json!({ "password": "another-long-password" })),
        )
        .await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let r = cluster
        .request(0, reqwest::Method::GET, "/api/me", &producer, None)
        .await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let producer = cluster.token(0, "device1", "another-long-password").await;
    // ...and on the broker the old password stops working (the broker lease holder pushed the
    // new one, whichever replica that is).
    eventually(10, "MQTT refusing the old password", || async {
        !mqtt_login(mosquitto.port, "device1", PASSWORD).await
    })
    .await;
    assert!(mqtt_login(mosquitto.port, "device1", "another-long-password").await);

    // Failed logins spread over the three replicas hit the limits as if on one: per username
    // (then even the right password is refused for a while)...
    for i in 0..USER_LIMIT {
        let status = cluster
            .login_status(i % 3, "consumer1", "wrong-password", None)
            .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    for i in 0..3 {
        let status = cluster.login_status(i, "consumer1", PASSWORD, None).await;
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "replica {i}");
    }
    // ...and per client address: behind the trusted balancer, the one it forwards.
    for i in 0..ADDRESS_LIMIT {
        let user = format!("nobody{i}");
        let status = cluster
            .login_status(i % 3, &user, "wrong-password", Some("203.0.113.7"))
            .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    let locked = cluster
        .login_status(2, "nobody-else", "wrong-password", Some("203.0.113.7"))
        .await;
    assert_eq!(locked, StatusCode::TOO_MANY_REQUESTS);
    let other_client = cluster
        .login_status(1, "nobody-else", "wrong-password", Some("198.51.100.9"))
        .await;
    assert_eq!(
        other_client,
        StatusCode::UNAUTHORIZED,
        "another client is not locked out"
    );

    // A consumer's live stream on the replica never killed shows every reading of a second
    // burst, whichever replica ingested it (the shared subscription splits them), and ends
    // within a second of a revocation made on another replica.
    let r = cluster
        .request(
            2,
            reqwest::Method::POST,
            "/api/subscriptions",
            &consumer,
            Some(json!({ "topic": "platone/device1" })),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let grant = r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = cluster
        .request(
            0,
            reqwest::Method::POST,
            &format!("/api/subscriptions/{grant}/accept"),
            &producer,
            None,
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let stream = cluster
        .request(
            calm,
            reqwest::Method::GET,
            "/api/measurements/stream?producer=device1",
            &consumer,
            None,
        )
        .await;
    assert_eq!(stream.status(), StatusCode::OK);
    let watcher = tokio::spawn(read_events(stream, Duration::from_secs(120), |name, _| {
        name == "end"
    }));

    tokio::time::sleep(Duration::from_millis(300)).await;
    let burst = crate::paho::Readings {
        count: 90,
        rate: 60,
        prefix: "burst",
        ..crate::paho::Readings::default()
    };
    let second = PahoDevice::start_with(mosquitto.port, "device1", "another-long-password", &burst);
    let burst_acked = second.finish(burst.count).await;
    eventually(10, "the burst stored", || async {
        let stored = readings_of(&cluster.client, &cluster.url(calm, ""), &admin, "device1").await;
        stored
            .iter()
            .filter(|(_, t)| t.starts_with("burst-"))
            .count()
            == burst.count
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let revoked_at = Instant::now();
    let r = cluster
        .request(
            other,
            reqwest::Method::POST,
            &format!("/api/subscriptions/{grant}/revoke"),
            &producer,
            None,
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let events = watcher.await.unwrap();
    let ended_after = revoked_at.elapsed();
    assert_eq!(events.last().map(|(n, _)| n.as_str()), Some("end"));
    assert!(ended_after < Duration::from_secs(1), "{ended_after:?}");
    let streamed: std::collections::HashSet<String> = events
        .iter()
        .filter(|(n, _)| n == "measurement")
        .filter_map(|(_, data)| serde_json::from_str::<Value>(data).ok())
        .filter_map(|m| m["payload_text"].as_str().map(str::to_owned))
        .collect();
    for payload in &burst_acked {
        assert!(streamed.contains(payload), "{payload} not streamed");
    }
    // The replicas first, so that none logs a lost broker.
    drop(cluster);
    drop(mosquitto);
}
