//! `bal bench --replicas N`: QoS 1 committed throughput through Mosquitto with 1, 2 … N
//! separate `bal serve` processes on one PostgreSQL database (a scratch database per phase),
//! beside Mosquitto's own pass-through in the same run; then the failover time: `kill -9` of
//! the certification lease holder → the first batch anchored by another replica.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bal_core::{NewMeasurement, Topic};
use bal_scd::{CERTIFY_LEASE, SharedStore};
use rumqttc::QoS;

use crate::bench::{
    BenchArgs, Count, Mosquitto, Phase, ServerProcesses, create_producers, drive, passthrough,
};
use crate::scratch::ScratchDatabase;
use crate::settings::{BrokerKind, Secret, Settings};

/// The replicas share this master key (as they would share a Kubernetes Secret).
const MASTER_KEY: &str = "bench-replicas-master-key-0123456789";

/// What the replicas need besides the broker: the database server and the chain.
struct Shared<'a> {
    server: &'a str,
    rpc: &'a str,
    operator_key: &'a str,
}

/// `n` `bal serve` processes on `database`, killed when dropped.
struct Replicas {
    children: Vec<(String, Child)>,
    _dir: tempfile::TempDir,
}

impl Drop for Replicas {
    fn drop(&mut self) {
        for (_, c) in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn ingest_id(replica: &str) -> String {
    format!("bal-ingest-{replica}")
}

fn spawn(n: usize, database: &str, m: &Mosquitto, shared: &Shared) -> anyhow::Result<Replicas> {
    let dir = tempfile::tempdir()?;
    let exe = std::env::current_exe()?;
    let mut children = Vec::new();
    for k in 1..=n {
        let id = format!("bench-r{k}");
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let child = Command::new(&exe)
            .arg("--data-dir")
            .arg(dir.path().join(&id))
            .arg("serve")
            .env("BAL_DATABASE__URL", database)
            .env("BAL_HTTP__TLS", "false")
            .env("BAL_HTTP__LISTEN", format!("127.0.0.1:{port}"))
            .env("BAL_BROKER__KIND", "mosquitto")
            .env("BAL_BROKER__URL", &m.url)
            .env("BAL_BROKER__ADMIN_USERNAME", &m.admin)
            .env("BAL_BROKER__ADMIN_PASSWORD", &m.password)
            .env("BAL_BROKER__SHARED_INGEST", "true")
            .env("BAL_BROKER__INGEST_CLIENT_ID", ingest_id(&id))
            .env("BAL_CHAIN__RPC_URL", shared.rpc)
            .env("BAL_CHAIN__OPERATOR_KEY", shared.operator_key)
            .env("BAL_KEYS__MASTER_KEY", MASTER_KEY)
            .env("BAL_CLUSTER__REPLICA_ID", &id)
            .env("BAL_CLUSTER__HEARTBEAT_SECS", "1")
            .env("BAL_CERTIFY__LEASE_SECS", "10")
            .env("BAL_ADMIN_PASSWORD", "bench-admin-password-0")
            .env("RUST_LOG", "error")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()?;
        children.push((id, child));
    }
    Ok(Replicas {
        children,
        _dir: dir,
    })
}

/// The settings the bench itself opens the scratch database with (to migrate it first, create
/// the producers with their broker passwords, and count).
fn settings(database: &str, data_dir: &std::path::Path) -> anyhow::Result<Settings> {
    let secret = |s: &str| serde_json::from_value::<Secret>(serde_json::json!(s));
    let mut s = Settings {
        data_dir: data_dir.to_owned(),
        ..Settings::default()
    };
    s.database.url = Some(secret(database)?);
    s.keys.master_key = Some(secret(MASTER_KEY)?);
    s.broker.kind = BrokerKind::Mosquitto;
    Ok(s)
}

/// Every measurement stored so far, certified or not.
pub(crate) async fn stored(store: &SharedStore) -> u64 {
    match store.certification_status().await {
        Ok(s) => s.unbatched_measurements + s.pending_measurements + s.certified_measurements,
        Err(_) => 0,
    }
}

/// A count of the measurements stored, read from the database every 200 ms by a task (which
/// the caller aborts): what the bench counts when other processes commit.
pub(crate) async fn count_stored(
    store: &SharedStore,
) -> (Arc<AtomicU64>, tokio::task::JoinHandle<()>) {
    let count = Arc::new(AtomicU64::new(stored(store).await));
    let (store, counted) = (store.clone(), count.clone());
    let poller = tokio::spawn(async move {
        loop {
            counted.store(stored(&store).await, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    (count, poller)
}

async fn wait_live(store: &SharedStore, n: usize) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(90);
    while store.live_replicas().await?.len() < n {
        anyhow::ensure!(Instant::now() < deadline, "the replicas did not start");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Their ingest sessions subscribe right after they register.
    tokio::time::sleep(Duration::from_secs(2)).await;
    Ok(())
}

/// One phase with `n` replicas; with `failover`, also the failover time.
async fn phase(
    args: &BenchArgs,
    m: &Mosquitto,
    shared: &Shared<'_>,
    n: usize,
    failover: bool,
) -> anyhow::Result<(Phase, Option<Duration>)> {
    let scratch = ScratchDatabase::create(shared.server, 10 + n as u32).await?;
    let work = tempfile::tempdir()?;
    let (store, keys) = crate::app::open_store(
        &settings(&scratch.url, work.path())?,
        bal_scd::Migrate::Auto,
    )
    .await?;
    create_producers(&store, &keys, args.producers).await?;
    let mut replicas = spawn(n, &scratch.url, m, shared)?;
    wait_live(&store, n).await?;

    let (count, poller) = count_stored(&store).await;
    // The server: the replicas, Mosquitto and PostgreSQL, all on this machine.
    let processes = ServerProcesses {
        this_process: false,
        others: replicas
            .children
            .iter()
            .map(|(_, c)| c.id())
            .chain(crate::proc_stat::listener_pid(m.addr.port()))
            .collect(),
        postgres: true,
    };
    let window = drive(
        args,
        &[m.addr],
        QoS::AtLeastOnce,
        Count::Counted(&count),
        &processes,
        false,
    )
    .await;
    poller.abort();
    let window = window?;
    let title: &'static str = match n {
        1 => "BAL via Mosquitto, 1 replica, QoS 1 (committed)",
        2 => "BAL via Mosquitto, 2 replicas, QoS 1 (committed)",
        3 => "BAL via Mosquitto, 3 replicas, QoS 1 (committed)",
        _ => "BAL via Mosquitto, N replicas, QoS 1 (committed)",
    };
    let failed_over = if failover {
        Some(measure_failover(&store, &mut replicas).await?)
    } else {
        None
    };
    let ids: Vec<String> = replicas
        .children
        .iter()
        .map(|(id, _)| ingest_id(id))
        .collect();
    drop(replicas);
    for id in ids {
        m.drop_ingest_session(&id).await;
    }
    drop(store);
    scratch.drop_now().await?;
    Ok((
        Phase::measured(
            "postgres_qos1_replicas",
            title,
            "mosquitto",
            "postgres",
            1,
            window,
        ),
        failed_over,
    ))
}

/// Kills the lease holder with SIGKILL while readings keep coming in, and returns how long
/// until a batch is anchored by another replica.
async fn measure_failover(
    store: &SharedStore,
    replicas: &mut Replicas,
) -> anyhow::Result<Duration> {
    let holder = store
        .lease(CERTIFY_LEASE)
        .await?
        .ok_or_else(|| anyhow::anyhow!("no replica took the certification lease"))?
        .holder;
    let feeder = {
        let store = store.clone();
        tokio::spawn(async move {
            let topic = Topic::parse("platone/producer0/failover").expect("valid topic");
            for i in 0u64.. {
                let m = NewMeasurement::new(topic.clone(), format!("failover-{i}").into_bytes());
                let _ = store.insert_measurements(&[m]).await;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    let (_, child) = replicas
        .children
        .iter_mut()
        .find(|(id, _)| *id == holder)
        .ok_or_else(|| anyhow::anyhow!("the lease holder {holder} is not one of the replicas"))?;
    child.kill()?;
    let killed = Instant::now();
    let killed_at = chrono::Utc::now();
    let deadline = killed + Duration::from_secs(60);
    let took = loop {
        let newest = store.batches(None, 1).await?;
        let anchored_since = newest
            .first()
            .and_then(|b| b.anchor)
            .is_some_and(|a| a.anchored_at > killed_at);
        let lease = store.lease(CERTIFY_LEASE).await?;
        if anchored_since && lease.is_some_and(|l| l.holder != holder) {
            break killed.elapsed();
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "no replica anchored after the kill"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    feeder.abort();
    Ok(took)
}

/// The whole `--replicas` run through Mosquitto: its table on stdout, or (with `--json`) its
/// phases returned for the document, the pass-through first.
pub(crate) async fn run(
    args: &BenchArgs,
    m: &Mosquitto,
    n: usize,
) -> anyhow::Result<Vec<serde_json::Value>> {
    let shared = Shared {
        server: args
            .database
            .as_deref()
            .ok_or_else(|| anyhow::anyhow!("--replicas needs --database (a PostgreSQL server)"))?,
        rpc: args
            .rpc
            .as_deref()
            .ok_or_else(|| anyhow::anyhow!("--replicas needs --rpc (an Ethereum node)"))?,
        operator_key: &args.operator_key.clone().ok_or_else(|| {
            anyhow::anyhow!("--replicas needs --operator-key (BAL_BENCH_OPERATOR_KEY)")
        })?,
    };
    let mut phases = Vec::new();
    let mut failover = None;
    for k in 1..=n.max(1) {
        let (p, f) = phase(args, m, &shared, k, k == n.max(1)).await?;
        phases.push(p);
        failover = failover.or(f);
    }
    // Last: the producers' accounts are on the broker by now.
    let raw = passthrough(args, Some(m)).await?;
    let one = phases[0].per_second.max(1.0);
    if args.json {
        let mut out = vec![raw.to_json(Some(&raw))?];
        for (k, p) in phases.iter().enumerate() {
            let mut v = p.to_json(Some(&raw))?;
            v["replicas"] = serde_json::json!(k + 1);
            v["vs_one_replica"] = serde_json::json!((p.per_second / one * 100.0).round() / 100.0);
            out.push(v);
        }
        if let (Some(f), Some(last)) = (failover, out.last_mut()) {
            last["failover_s"] = serde_json::json!((f.as_secs_f64() * 10.0).round() / 10.0);
        }
        return Ok(out);
    }
    println!();
    println!(
        "{:<52} {:>12} {:>12} {:>8} {:>10}",
        "phase", "offered/s", "done/s", "vs raw", "vs 1 rep."
    );
    println!(
        "{:<52} {:>12.0} {:>12.0} {:>8.2} {:>10}",
        raw.title, raw.offered, raw.per_second, 1.0, "-"
    );
    for p in &phases {
        println!(
            "{:<52} {:>12.0} {:>12.0} {:>8.2} {:>10.2}",
            p.title,
            p.offered,
            p.per_second,
            p.per_second / raw.per_second.max(1.0),
            p.per_second / one
        );
    }
    if let Some(f) = failover {
        println!(
            "failover: kill -9 of the lease holder -> first batch anchored by another replica: \
             {:.1} s (lease 10 s)",
            f.as_secs_f64()
        );
    }
    Ok(Vec::new())
}
