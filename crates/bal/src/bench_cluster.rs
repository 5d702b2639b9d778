//! `bal bench --replicas N`: the embedded MQTT cluster. QoS 1 committed throughput with 1, 2 …
//! N `bal serve` processes on one PostgreSQL database (a scratch database per phase), each
//! with its own embedded broker: one node alone, then 2 … N nodes of one cluster. The devices
//! are spread over the nodes; a latency probe publishes on node 1 to a granted consumer on
//! node 2 (cross-node delivery, p50/p99); each node's CPU time per committed message is read
//! from `/proc`.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bal_core::{Actor, GrantAction, Subscription, Topic, Username};
use bal_scd::SharedStore;
use rumqttc::QoS;

use crate::bench::{BenchArgs, Count, PASSWORD, ServerProcesses, create_producers, drive};
use crate::bench_replicas::{count_stored, stored};
use crate::proc_stat::cpu_time;
use crate::scratch::ScratchDatabase;
use crate::settings::{Secret, Settings};

const MASTER_KEY: &str = "bench-cluster-master-key-0123456789";

/// How often the latency probe publishes: as often as each simulated device (--rate 10).
const PROBE_PERIOD: Duration = Duration::from_millis(100);

/// The consumer that watches producer0's probe topic from another node.
const WATCHER: &str = "bench-watcher";

/// `n` `bal serve` processes, killed when dropped.
struct Nodes {
    children: Vec<Child>,
    mqtt: Vec<SocketAddr>,
    _dir: tempfile::TempDir,
}

impl Drop for Nodes {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn spawn(n: usize, database: &str, rpc: &str, operator_key: &str) -> anyhow::Result<Nodes> {
    let dir = tempfile::tempdir()?;
    let exe = std::env::current_exe()?;
    let ports: Vec<(u16, u16, u16)> = (0..n)
        .map(|_| Ok((free_port()?, free_port()?, free_port()?)))
        .collect::<anyhow::Result<_>>()?;
    let peers: Vec<String> = ports
        .iter()
        .enumerate()
        .map(|(k, (_, _, c))| format!("{}@127.0.0.1:{c}", k + 1))
        .collect();
    let mut children = Vec::new();
    for (k, (http, mqtt, cluster)) in ports.iter().enumerate() {
        let id = format!("bench-node{}", k + 1);
        let mut command = Command::new(&exe);
        command
            .arg("--data-dir")
            .arg(dir.path().join(&id))
            .arg("serve")
            .env("BAL_DATABASE__URL", database)
            .env("BAL_HTTP__TLS", "false")
            .env("BAL_HTTP__LISTEN", format!("127.0.0.1:{http}"))
            .env("BAL_MQTT__LISTEN", format!("127.0.0.1:{mqtt}"))
            .env("BAL_MQTT__LISTEN_TLS", "off")
            .env("BAL_CHAIN__RPC_URL", rpc)
            .env("BAL_CHAIN__OPERATOR_KEY", operator_key)
            .env("BAL_KEYS__MASTER_KEY", MASTER_KEY)
            .env("BAL_CLUSTER__REPLICA_ID", &id)
            .env("BAL_CLUSTER__HEARTBEAT_SECS", "1")
            .env("BAL_ADMIN_PASSWORD", "bench-admin-password-0")
            .env("RUST_LOG", "error")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        if n > 1 {
            command
                .env("BAL_MQTT__CLUSTER__NODE_ID", (k + 1).to_string())
                .env("BAL_MQTT__CLUSTER__LISTEN", format!("127.0.0.1:{cluster}"))
                .env("BAL_MQTT__CLUSTER__PEERS", peers.join(","));
        }
        children.push(command.spawn()?);
    }
    let mqtt = ports
        .iter()
        .map(|(_, m, _)| SocketAddr::from(([127, 0, 0, 1], *m)))
        .collect();
    Ok(Nodes {
        children,
        mqtt,
        _dir: dir,
    })
}

/// User plus system CPU time of process `pid` so far (Linux `/proc`; zero elsewhere).
/// The watcher's accepted grant on producer0.
async fn grant_watcher(
    store: &SharedStore,
    keys: &bal_api::accounts::AccountKeys,
) -> anyhow::Result<()> {
    let name = |s: &str| Username::parse(s).map_err(|e| anyhow::anyhow!("{e}"));
    bal_api::accounts::create_user(
        store.as_ref(),
        keys,
        name(WATCHER)?,
        bal_core::Role::Consumer,
        PASSWORD.into(),
        &Actor::System,
    )
    .await
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    let now = chrono::Utc::now();
    let producer = name("producer0")?;
    let request = Subscription::request(name(WATCHER)?, &Topic::for_producer(&producer), now);
    let stored = store.request_subscription(request).await?;
    let accept = GrantAction::Accept { expires_at: None };
    store
        .decide(stored.id, &accept, &Actor::User(producer), now)
        .await?;
    Ok(())
}

/// What the latency probe saw: publish to delivery, on the publisher's node (which includes
/// the commit the BAL makes before forwarding) and on another node (that, plus the hop).
#[derive(Default)]
struct Latencies {
    same_node: Vec<Duration>,
    other_node: Vec<Duration>,
}

/// Publishes a timestamp on `from` every [`PROBE_PERIOD`] as producer0 (a device's pace: rmqtt
/// handles one connection's publishes one after the other, each waiting for its commit and for
/// the other nodes' answers, so a faster single connection would measure its own backlog), and
/// collects how long each took to
/// reach a granted consumer on `from` and one on `to`; runs until aborted.
fn latency_probe(
    from: SocketAddr,
    to: SocketAddr,
    samples: Arc<Mutex<Latencies>>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let client = |id: &str, user: &str, at: SocketAddr| {
            let mut o = rumqttc::MqttOptions::new(id, at.ip().to_string(), at.port());
            o.set_credentials(user, PASSWORD);
            o.set_keep_alive(Duration::from_secs(30));
            rumqttc::AsyncClient::new(o, 100)
        };
        let epoch = Instant::now();
        let mut receivers = Vec::new();
        for (id, at, remote) in [
            ("bench-probe-local", from, false),
            ("bench-probe-remote", to, true),
        ] {
            let (sub, mut events) = client(id, WATCHER, at);
            let _ = sub
                .subscribe("platone/producer0/probe", QoS::AtLeastOnce)
                .await;
            let samples = samples.clone();
            receivers.push(tokio::spawn(async move {
                let _keep = sub;
                while let Ok(e) = events.poll().await {
                    if let rumqttc::Event::Incoming(rumqttc::Packet::Publish(p)) = e
                        && let Ok(sent) =
                            std::str::from_utf8(&p.payload).unwrap_or("").parse::<u64>()
                    {
                        let took = epoch.elapsed().saturating_sub(Duration::from_micros(sent));
                        let mut all = samples.lock().unwrap_or_else(|e| e.into_inner());
                        if remote {
                            all.other_node.push(took)
                        } else {
                            all.same_node.push(took)
                        }
                    }
                }
            }));
        }
        let (publ, mut pub_events) = client("bench-probe-pub", "producer0", from);
        let publisher = tokio::spawn(async move { while pub_events.poll().await.is_ok() {} });
        tokio::time::sleep(Duration::from_secs(1)).await;
        loop {
            let sent = epoch.elapsed().as_micros().to_string();
            let _ = publ
                .publish("platone/producer0/probe", QoS::AtLeastOnce, false, sent)
                .await;
            tokio::time::sleep(PROBE_PERIOD).await;
            if receivers.iter().any(|r| r.is_finished()) || publisher.is_finished() {
                break;
            }
        }
    })
}

fn percentile(sorted: &[Duration], p: f64) -> Option<Duration> {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(i).copied()
}

struct ClusterPhase {
    nodes: usize,
    per_second: f64,
    offered: f64,
    /// Publish to delivery on the publisher's node, and on another node: p50, p99.
    same_node: (Option<Duration>, Option<Duration>),
    other_node: (Option<Duration>, Option<Duration>),
    /// Each node's CPU time per committed message, in microseconds.
    cpu_us: Vec<f64>,
}

async fn phase(
    args: &BenchArgs,
    server: &str,
    rpc: &str,
    key: &str,
    n: usize,
) -> anyhow::Result<ClusterPhase> {
    let scratch = ScratchDatabase::create(server, 20 + n as u32).await?;
    let work = tempfile::tempdir()?;
    let secret = |s: &str| serde_json::from_value::<Secret>(serde_json::json!(s));
    let mut settings = Settings {
        data_dir: work.path().to_owned(),
        ..Settings::default()
    };
    settings.database.url = Some(secret(&scratch.url)?);
    settings.keys.master_key = Some(secret(MASTER_KEY)?);
    let (store, keys) = crate::app::open_store(&settings, bal_scd::Migrate::Auto).await?;
    create_producers(&store, &keys, args.producers).await?;
    grant_watcher(&store, &keys).await?;
    let nodes = spawn(n, &scratch.url, rpc, key)?;
    let deadline = Instant::now() + Duration::from_secs(90);
    while store.live_replicas().await?.len() < n {
        anyhow::ensure!(Instant::now() < deadline, "the nodes did not start");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The peers' probes and the first connections.
    tokio::time::sleep(Duration::from_secs(3)).await;

    let samples = Arc::new(Mutex::new(Latencies::default()));
    let probe = latency_probe(nodes.mqtt[0], nodes.mqtt[1 % n], samples.clone());
    let (count, poller) = count_stored(&store).await;
    let pids: Vec<u32> = nodes.children.iter().map(Child::id).collect();
    let cpu0: Vec<Duration> = pids.iter().map(|p| cpu_time(*p)).collect();
    let stored0 = stored(&store).await;
    // Each node's CPU is read below; the window's total is not needed.
    let window = drive(
        args,
        &nodes.mqtt,
        QoS::AtLeastOnce,
        Count::Counted(&count),
        &ServerProcesses::default(),
        false,
    )
    .await;
    let (per_second, offered) = match window {
        Ok(w) => (w.per_second, w.offered),
        Err(e) => {
            poller.abort();
            probe.abort();
            return Err(e);
        }
    };
    let committed = stored(&store).await.saturating_sub(stored0).max(1) as f64;
    let cpu_us = pids
        .iter()
        .zip(&cpu0)
        .map(|(p, c0)| cpu_time(*p).saturating_sub(*c0).as_secs_f64() * 1e6 / committed)
        .collect();
    poller.abort();
    probe.abort();
    let spread = |v: &mut Vec<Duration>| {
        v.sort();
        (percentile(v, 0.5), percentile(v, 0.99))
    };
    let (same_node, other_node) = {
        let mut all = samples.lock().unwrap_or_else(|e| e.into_inner());
        (spread(&mut all.same_node), spread(&mut all.other_node))
    };
    drop(nodes);
    drop(store);
    scratch.drop_now().await?;
    Ok(ClusterPhase {
        nodes: n,
        per_second,
        offered,
        same_node,
        other_node,
        cpu_us,
    })
}

impl ClusterPhase {
    /// The phase for `bal bench --json`; `one` is the single node's rate.
    fn to_json(&self, one: f64) -> serde_json::Value {
        let ms = |d: Option<Duration>| d.map(|d| (d.as_secs_f64() * 1e4).round() / 10.0);
        let tenths = |v: f64| (v * 10.0).round() / 10.0;
        serde_json::json!({
            "name": "embedded_cluster_qos1",
            "broker": "embedded",
            "database": "postgres",
            "qos": 1,
            "nodes": self.nodes,
            "offered_per_s": self.offered.round(),
            "done_per_s": self.per_second.round(),
            "vs_one_node": (self.per_second / one * 100.0).round() / 100.0,
            "same_node_latency_ms": { "p50": ms(self.same_node.0), "p99": ms(self.same_node.1) },
            "other_node_latency_ms": { "p50": ms(self.other_node.0), "p99": ms(self.other_node.1) },
            "node_cpu_us_per_msg": self.cpu_us.iter().copied().map(tenths).collect::<Vec<_>>(),
        })
    }
}

/// The embedded cluster's phases, 1 … `n` nodes: their table on stdout, or (with `--json`)
/// returned for the document.
pub(crate) async fn run(args: &BenchArgs, n: usize) -> anyhow::Result<Vec<serde_json::Value>> {
    let server = args
        .database
        .as_deref()
        .ok_or_else(|| anyhow::anyhow!("--replicas needs --database (a PostgreSQL server)"))?;
    let rpc = args
        .rpc
        .as_deref()
        .ok_or_else(|| anyhow::anyhow!("--replicas needs --rpc (an Ethereum node)"))?;
    let key = args.operator_key.clone().ok_or_else(|| {
        anyhow::anyhow!("--replicas needs --operator-key (BAL_BENCH_OPERATOR_KEY)")
    })?;
    let mut phases = Vec::new();
    for k in 1..=n.max(1) {
        phases.push(phase(args, server, rpc, &key, k).await?);
    }
    let one = phases[0].per_second.max(1.0);
    if args.json {
        return Ok(phases.iter().map(|p| p.to_json(one)).collect());
    }
    let ms =
        |d: Option<Duration>| d.map_or("-".to_owned(), |d| format!("{:.1}", d.as_secs_f64() * 1e3));
    println!();
    println!(
        "{:<42} {:>9} {:>9} {:>6} {:>15} {:>15}  CPU µs/msg per node",
        "embedded MQTT cluster, QoS 1 (committed)",
        "offered/s",
        "done/s",
        "vs 1",
        "same p50/p99",
        "other p50/p99"
    );
    let pair = |(a, b): (Option<Duration>, Option<Duration>)| format!("{}/{}", ms(a), ms(b));
    for p in &phases {
        let cpu: Vec<String> = p.cpu_us.iter().map(|c| format!("{c:.0}")).collect();
        println!(
            "{:<42} {:>9.0} {:>9.0} {:>6.2} {:>15} {:>15}  {}",
            format!("{} node{}", p.nodes, if p.nodes == 1 { "" } else { "s" }),
            p.offered,
            p.per_second,
            p.per_second / one,
            pair(p.same_node),
            pair(p.other_node),
            cpu.join(" / ")
        );
    }
    println!(
        "(latency, ms: publish on node 1 -> delivery to a granted consumer on node 1 (same) and on \
         node 2 (other), both after the commit; with 1 node, both on it)"
    );
    Ok(Vec::new())
}
