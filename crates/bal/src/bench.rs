//! `bal bench`: the ingest benchmark. N simulated devices publish at a set rate through the
//! broker, and the same run measures a raw pass-through baseline (a bare broker, the same load,
//! one subscriber, no storage), so the BAL's figures come as ratios against a baseline taken on
//! the same machine at the same time.
//!
//! With `--mosquitto URL` the same phases run through an external Mosquitto instead: the BAL
//! ingesting from it (counted as committed rows), then the bare pass-through of that Mosquitto.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bal_api::accounts;
use bal_core::{Actor, Role, Username};
use bal_mqtt::EmbeddedBroker;
use bal_scd::Change;
use rumqttc::QoS;

use tokio::io::AsyncBufReadExt;

use crate::app::Application;
use crate::load::LoadReport;
use crate::proc_stat;
use crate::settings::Settings;

#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// Simulated devices.
    #[arg(long, default_value_t = 1000)]
    pub devices: usize,
    /// Messages per second each device offers.
    #[arg(long, default_value_t = 40)]
    pub rate: u32,
    /// Seconds measured per phase (after a warm-up of 2 s).
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// Producer accounts the devices log in as (each has devices / producers devices).
    #[arg(long, default_value_t = 10)]
    pub producers: usize,
    /// Measure through this Mosquitto 2.0 (mqtt://HOST:PORT, set up by
    /// deploy/mosquitto/bootstrap.sh) instead of the embedded broker. A scratch broker: the
    /// BAL replaces its accounts. Its admin: BAL_BROKER__ADMIN_USERNAME, _PASSWORD.
    #[arg(long)]
    pub mosquitto: Option<String>,
    /// Also measure QoS 1 on PostgreSQL: a server (postgres://USER@HOST/DB) on which a
    /// scratch database is created for the phase and dropped after it.
    #[arg(long)]
    pub database: Option<String>,
    /// Measure QoS 1 with 1, 2 … N separate `bal serve` processes on one scratch database of
    /// --database each: the embedded MQTT cluster (devices spread over the nodes, a consumer on
    /// another node than its producer), then, with --mosquitto, the same load through
    /// Mosquitto, and the failover time; needs --rpc.
    #[arg(long)]
    pub replicas: Option<usize>,
    /// The Ethereum node the replicas anchor on (with --replicas).
    #[arg(long)]
    pub rpc: Option<String>,
    /// The key that anchors on --rpc (with --replicas).
    #[arg(long, env = "BAL_BENCH_OPERATOR_KEY", hide_env_values = true)]
    pub operator_key: Option<String>,
    /// Prints one JSON document on stdout instead of the table (progress goes to stderr).
    #[arg(long)]
    pub json: bool,
    /// Runs only these phases (comma-separated: passthrough, sqlite_qos1, sqlite_qos0,
    /// postgres_qos1); all by default.
    #[arg(long, value_delimiter = ',')]
    pub phases: Vec<String>,
    /// Measures memory instead: opens N idle MQTT connections from the load process, plain,
    /// over TLS and each holding one subscription, and reports the server's resident memory
    /// per connection.
    #[arg(long)]
    pub idle_connections: Option<usize>,
    /// With --idle-connections: only this kind (plain, tls, one_subscription), in this process.
    /// Without it each kind runs in a fresh process, since memory freed by one kind is reused
    /// by the next and would hide its cost.
    #[arg(long, hide = true)]
    pub idle_kind: Option<String>,
}

/// The external broker of `--mosquitto`.
pub(crate) struct Mosquitto {
    pub(crate) url: String,
    pub(crate) admin: String,
    pub(crate) password: String,
    pub(crate) addr: SocketAddr,
}

impl Mosquitto {
    fn from_args(url: &str) -> anyhow::Result<Self> {
        let admin =
            std::env::var("BAL_BROKER__ADMIN_USERNAME").unwrap_or_else(|_| "bal-admin".into());
        let password = std::env::var("BAL_BROKER__ADMIN_PASSWORD")
            .map_err(|_| anyhow::anyhow!("--mosquitto needs BAL_BROKER__ADMIN_PASSWORD"))?;
        let conn = bal_mqtt::BrokerConnection::new(url, None, admin.clone(), password.clone())?;
        anyhow::ensure!(
            !conn.is_tls(),
            "--mosquitto: use the plain mqtt:// listener"
        );
        let addr = std::net::ToSocketAddrs::to_socket_addrs(&(conn.host.as_str(), conn.port))?
            .next()
            .ok_or_else(|| anyhow::anyhow!("--mosquitto: cannot resolve {url}"))?;
        Ok(Self {
            url: url.to_owned(),
            admin,
            password,
            addr,
        })
    }

    /// Ends the BAL's persistent ingest session, so that no queue for it builds up.
    pub(crate) async fn drop_ingest_session(&self, client_id: &str) {
        let mut o =
            rumqttc::v5::MqttOptions::new(client_id, self.addr.ip().to_string(), self.addr.port());
        o.set_credentials(&self.admin, &self.password);
        o.set_clean_start(true);
        let (client, mut events) = rumqttc::v5::AsyncClient::new(o, 10);
        let _ = tokio::time::timeout(Duration::from_secs(5), async {
            while let Ok(e) = events.poll().await {
                if let rumqttc::v5::Event::Incoming(rumqttc::v5::mqttbytes::v5::Packet::ConnAck(
                    _,
                )) = e
                {
                    let _ = client.disconnect().await;
                    break;
                }
            }
        })
        .await;
    }
}

const BENCH_INGEST_ID: &str = "bal-ingest-bench";

pub(crate) use crate::load::PASSWORD;
const WARM_UP: Duration = Duration::from_secs(2);

/// One measured phase.
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct Phase {
    /// A short name that stays the same from release to release (`passthrough`, `sqlite_qos1` …).
    pub(crate) name: &'static str,
    /// What it measures, for people.
    #[serde(skip)]
    pub(crate) title: &'static str,
    /// `embedded` or `mosquitto`.
    pub(crate) broker: &'static str,
    /// `none` (the pass-through), `sqlite` or `postgres`.
    pub(crate) database: &'static str,
    pub(crate) qos: u8,
    #[serde(rename = "offered_per_s", serialize_with = "whole")]
    pub(crate) offered: f64,
    #[serde(rename = "done_per_s", serialize_with = "whole")]
    pub(crate) per_second: f64,
    /// Messages done in the measured window.
    pub(crate) done: u64,
    /// The server's CPU time (user + system) per message done: the broker's process, with the
    /// BAL in it or beside it, plus PostgreSQL's processes in a PostgreSQL phase.
    #[serde(rename = "server_cpu_us_per_msg", serialize_with = "tenths")]
    pub(crate) cpu_us_per_msg: Option<f64>,
    /// PostgreSQL's part of `server_cpu_us_per_msg` (its phase only).
    #[serde(serialize_with = "tenths", skip_serializing_if = "Option::is_none")]
    pub(crate) database_cpu_us_per_msg: Option<f64>,
}

impl Phase {
    /// The phase `name` (`title` for people) with the figures of its measured window.
    pub(crate) fn measured(
        name: &'static str,
        title: &'static str,
        broker: &'static str,
        database: &'static str,
        qos: u8,
        window: Window,
    ) -> Self {
        Phase {
            name,
            title,
            broker,
            database,
            qos,
            per_second: window.per_second,
            done: window.done,
            offered: window.offered,
            cpu_us_per_msg: window.cpu_us_per_msg,
            database_cpu_us_per_msg: window.database_cpu_us_per_msg,
        }
    }

    /// Its rate against the pass-through's (`raw`), when that was measured.
    pub(crate) fn vs_raw(&self, raw: Option<&Phase>) -> Option<f64> {
        raw.map(|r| self.per_second / r.per_second.max(1.0))
    }

    /// Its CPU per message against the pass-through broker's.
    pub(crate) fn cpu_vs_raw(&self, raw: Option<&Phase>) -> Option<f64> {
        Some(self.cpu_us_per_msg? / raw?.cpu_us_per_msg?)
    }

    /// The phase in `bal bench --json`'s document, with both ratios to hundredths.
    pub(crate) fn to_json(&self, raw: Option<&Phase>) -> serde_json::Result<serde_json::Value> {
        let round = |v: Option<f64>| v.map(|v| (v * 100.0).round() / 100.0);
        let mut v = serde_json::to_value(self)?;
        v["vs_raw"] = serde_json::json!(round(self.vs_raw(raw)));
        v["cpu_vs_raw"] = serde_json::json!(round(self.cpu_vs_raw(raw)));
        Ok(v)
    }
}

fn whole<S: serde::Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(v.round())
}

fn tenths<S: serde::Serializer>(v: &Option<f64>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(v) => s.serialize_f64((v * 10.0).round() / 10.0),
        None => s.serialize_none(),
    }
}

/// The accounts the devices log in as: `producer0` … with [`PASSWORD`].
pub(crate) async fn create_producers(
    store: &bal_scd::SharedStore,
    keys: &accounts::AccountKeys,
    producers: usize,
) -> anyhow::Result<()> {
    for p in 0..producers.max(1) {
        let name = Username::parse(&format!("producer{p}"))?;
        accounts::create_user(
            store.as_ref(),
            keys,
            name,
            Role::Producer,
            PASSWORD.into(),
            &Actor::System,
        )
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    Ok(())
}

/// What a phase counts as done.
pub(crate) enum Count<'a> {
    /// The PUBACKs the devices received.
    Acked,
    /// What the caller counts (rows the database committed).
    Counted(&'a AtomicU64),
}

/// The processes whose CPU time is the server's.
#[derive(Debug, Default)]
pub(crate) struct ServerProcesses {
    /// This process (the broker and the BAL run in it).
    pub(crate) this_process: bool,
    /// Others: an external Mosquitto, `bal serve` children.
    pub(crate) others: Vec<u32>,
    /// Every PostgreSQL process on this machine.
    pub(crate) postgres: bool,
}

impl ServerProcesses {
    /// CPU time so far: (the server's processes, PostgreSQL's).
    fn cpu_time(&self) -> (Duration, Duration) {
        let own = if self.this_process {
            proc_stat::own_cpu_time()
        } else {
            Duration::ZERO
        };
        let database = if self.postgres {
            proc_stat::postgres_cpu_time().unwrap_or_default()
        } else {
            Duration::ZERO
        };
        let others: Duration = self.others.iter().map(|p| proc_stat::cpu_time(*p)).sum();
        (own + others, database)
    }
}

/// What one measured window gave.
pub(crate) struct Window {
    pub(crate) per_second: f64,
    pub(crate) done: u64,
    pub(crate) offered: f64,
    /// The server's CPU time per message done, in microseconds, PostgreSQL's included.
    pub(crate) cpu_us_per_msg: Option<f64>,
    /// PostgreSQL's part of it.
    pub(crate) database_cpu_us_per_msg: Option<f64>,
}

/// Runs the devices in a `bal bench-load` process against `brokers` (device `i` on
/// `brokers[i % len]`), with the pass-through subscriber when `subscriber`, and measures one
/// window after the warm-up.
pub(crate) async fn drive(
    args: &BenchArgs,
    brokers: &[SocketAddr],
    qos: QoS,
    count: Count<'_>,
    server: &ServerProcesses,
    subscriber: bool,
) -> anyhow::Result<Window> {
    let mut command = tokio::process::Command::new(std::env::current_exe()?);
    command.arg("bench-load");
    for b in brokers {
        command.arg("--broker").arg(b.to_string());
    }
    command
        .args(["--devices", &args.devices.to_string()])
        .args(["--rate", &args.rate.to_string()])
        .args(["--seconds", &args.seconds.to_string()])
        .args(["--warm-up", &WARM_UP.as_secs().to_string()])
        .args(["--producers", &args.producers.to_string()])
        .args(["--qos", if qos == QoS::AtMostOnce { "0" } else { "1" }]);
    if subscriber {
        command.arg("--subscriber");
    }
    let mut load = LoadProcess::spawn(command)?;
    load.expect("measuring").await?;
    let counted = |c: &Count<'_>| match c {
        Count::Acked => 0,
        Count::Counted(n) => n.load(Ordering::Relaxed),
    };
    let (n0, (cpu0, db0), t0) = (counted(&count), server.cpu_time(), Instant::now());
    if callgrind_window() {
        callgrind_control("--instr=on");
    }
    let report: LoadReport = serde_json::from_value(load.expect("published").await?)?;
    if callgrind_window() {
        callgrind_control("--instr=off");
    }
    let (n1, (cpu1, db1), secs) = (counted(&count), server.cpu_time(), t0.elapsed());
    load.finish().await?;
    let (done, secs) = match count {
        Count::Acked => (report.acked, report.seconds),
        Count::Counted(_) => (n1 - n0, secs.as_secs_f64()),
    };
    if report.errors > 0 {
        tracing::warn!(errors = report.errors, "the devices saw connection errors");
    }
    let database = db1.saturating_sub(db0);
    let cpu = cpu1.saturating_sub(cpu0) + database;
    let per_msg = |t: Duration| (done > 0).then(|| t.as_secs_f64() * 1e6 / done as f64);
    Ok(Window {
        per_second: done as f64 / secs,
        done,
        offered: report.published as f64 / report.seconds,
        cpu_us_per_msg: per_msg(cpu).filter(|_| cpu > Duration::ZERO),
        database_cpu_us_per_msg: per_msg(database).filter(|_| server.postgres),
    })
}

/// `BAL_BENCH_CALLGRIND=1`: the benchmark runs under `valgrind --tool=callgrind
/// --instr-atstart=no` (scripts/profile-ingest), and counts instructions only in the measured
/// windows.
fn callgrind_window() -> bool {
    std::env::var_os("BAL_BENCH_CALLGRIND").is_some()
}

fn callgrind_control(switch: &str) {
    let pid = std::process::id().to_string();
    match std::process::Command::new("callgrind_control")
        .args([switch, &pid])
        .output()
    {
        Ok(out) if out.status.success() => {}
        Ok(out) => eprintln!(
            "callgrind_control {switch}: {}",
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(e) => eprintln!("callgrind_control {switch}: {e}"),
    }
}

/// A `bal bench-load` child and the JSON lines it prints.
pub(crate) struct LoadProcess {
    child: tokio::process::Child,
    lines: tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
}

impl LoadProcess {
    pub(crate) fn spawn(mut command: tokio::process::Command) -> anyhow::Result<Self> {
        command
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true);
        let mut child = command.spawn()?;
        let stdout = child.stdout.take().expect("piped");
        Ok(Self {
            child,
            lines: tokio::io::BufReader::new(stdout).lines(),
        })
    }

    /// The next line, which must hold `key`.
    pub(crate) async fn expect(&mut self, key: &str) -> anyhow::Result<serde_json::Value> {
        let line = self
            .lines
            .next_line()
            .await?
            .ok_or_else(|| anyhow::anyhow!("the load process ended before {key:?}"))?;
        let value: serde_json::Value = serde_json::from_str(&line)
            .map_err(|e| anyhow::anyhow!("the load process printed {line:?}: {e}"))?;
        anyhow::ensure!(
            value.get(key).is_some(),
            "the load process printed {line:?}, not {key:?}"
        );
        Ok(value)
    }

    /// Closes its stdin (which ends an idle load) and waits for it to exit.
    pub(crate) async fn finish(mut self) -> anyhow::Result<()> {
        drop(self.child.stdin.take());
        let status = tokio::time::timeout(Duration::from_secs(30), self.child.wait()).await??;
        anyhow::ensure!(status.success(), "the load process failed: {status}");
        Ok(())
    }
}

/// The pass-through baseline: the bare broker (embedded, in this process, or the external
/// Mosquitto), the same load, one subscriber, no storage.
pub(crate) async fn passthrough(
    args: &BenchArgs,
    mosquitto: Option<&Mosquitto>,
) -> anyhow::Result<Phase> {
    let embedded = match mosquitto {
        Some(_) => None,
        None => Some(EmbeddedBroker::start_passthrough("127.0.0.1:0".parse()?).await?),
    };
    let addr = match (mosquitto, &embedded) {
        (Some(m), _) => m.addr,
        (None, Some(b)) => b.tcp_addr().expect("listening"),
        (None, None) => unreachable!("one broker or the other"),
    };
    let window = drive(
        args,
        &[addr],
        QoS::AtLeastOnce,
        Count::Acked,
        &server_processes(mosquitto.is_none(), mosquitto, false),
        true,
    )
    .await?;
    if let Some(broker) = embedded {
        broker.stop().await;
    }
    let title = if mosquitto.is_some() {
        "Mosquitto pass-through, QoS 1 (no BAL, 1 subscriber)"
    } else {
        "raw pass-through, QoS 1 (no storage, 1 subscriber)"
    };
    Ok(Phase::measured(
        "passthrough",
        title,
        broker_name(mosquitto),
        "none",
        1,
        window,
    ))
}

fn broker_name(mosquitto: Option<&Mosquitto>) -> &'static str {
    if mosquitto.is_some() {
        "mosquitto"
    } else {
        "embedded"
    }
}

/// The server's processes: this one when the broker or the BAL runs in it, the external
/// Mosquitto when it runs on this machine, PostgreSQL's.
fn server_processes(
    this_process: bool,
    mosquitto: Option<&Mosquitto>,
    postgres: bool,
) -> ServerProcesses {
    let others = mosquitto
        .and_then(|m| {
            let pid = proc_stat::listener_pid(m.addr.port());
            if pid.is_none() {
                eprintln!("  (Mosquitto's process is not on this machine: its CPU is not counted)");
            }
            pid
        })
        .into_iter()
        .collect();
    ServerProcesses {
        this_process,
        others,
        postgres,
    }
}

async fn bal_phase(
    args: &BenchArgs,
    qos: QoS,
    mosquitto: Option<&Mosquitto>,
    database: Option<&str>,
) -> anyhow::Result<Phase> {
    let dir = tempfile::tempdir()?;
    let mut settings = Settings {
        data_dir: dir.path().to_owned(),
        ..Settings::default()
    };
    if let Some(url) = database {
        settings.database.url = Some(serde_json::from_value(serde_json::json!(url))?);
    }
    settings.http.listen = "127.0.0.1:0".parse()?;
    settings.mqtt.listen = Some("127.0.0.1:0".parse()?);
    settings.mqtt.listen_tls = None;
    settings.http.tls = false;
    if let Some(m) = mosquitto {
        settings.broker.kind = crate::settings::BrokerKind::Mosquitto;
        settings.broker.url = m.url.clone();
        settings.broker.admin_username = m.admin.clone();
        settings.broker.admin_password =
            Some(serde_json::from_value(serde_json::json!(m.password))?);
        settings.broker.ingest_client_id = Some(BENCH_INGEST_ID.into());
    }
    let app = Application::build(settings).await?;
    let store = app.store();
    create_producers(&store, app.account_keys(), args.producers).await?;
    let broker = match mosquitto {
        Some(m) => m.addr,
        None => app.mqtt_addr().expect("listening"),
    };
    if mosquitto.is_some() {
        // The accounts reach the broker at the next reconciliation; wait for it.
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until(async {
        let _ = stopped.await;
    }));
    let processes = server_processes(true, mosquitto, database.is_some());
    // Mosquitto acknowledges devices itself, and QoS 0 has no acknowledgement: there, count
    // what the SCD announces as committed.
    let counts_commits = mosquitto.is_some() || qos == QoS::AtMostOnce;
    let window = if counts_commits {
        drive_counting_commits(args, &store, broker, qos, &processes).await?
    } else {
        drive(args, &[broker], qos, Count::Acked, &processes, false).await?
    };
    let _ = stop.send(());
    server.await??;
    if let Some(m) = mosquitto {
        m.drop_ingest_session(BENCH_INGEST_ID).await;
    }
    let (name, title) = match (qos, mosquitto.is_some(), database.is_some()) {
        (QoS::AtMostOnce, false, _) => ("sqlite_qos0", "BAL, QoS 0 (stored)"),
        (QoS::AtMostOnce, true, _) => ("sqlite_qos0", "BAL via Mosquitto, QoS 0 (stored)"),
        (_, false, false) => ("sqlite_qos1", "BAL, QoS 1 (committed before PUBACK)"),
        (_, true, false) => ("sqlite_qos1", "BAL via Mosquitto, QoS 1 (committed)"),
        (_, false, true) => (
            "postgres_qos1",
            "BAL on PostgreSQL, QoS 1 (committed before PUBACK)",
        ),
        (_, true, true) => (
            "postgres_qos1",
            "BAL via Mosquitto on PostgreSQL, QoS 1 (committed)",
        ),
    };
    let database = if database.is_some() {
        "postgres"
    } else {
        "sqlite"
    };
    let qos = if qos == QoS::AtMostOnce { 0 } else { 1 };
    Ok(Phase::measured(
        name,
        title,
        broker_name(mosquitto),
        database,
        qos,
        window,
    ))
}

/// Drives devices and counts the measurements the SCD announces as committed.
async fn drive_counting_commits(
    args: &BenchArgs,
    store: &bal_scd::SharedStore,
    broker: SocketAddr,
    qos: QoS,
    processes: &ServerProcesses,
) -> anyhow::Result<Window> {
    let stored = Arc::new(AtomicU64::new(0));
    let watch = store.watch_measurements();
    let mut changes = store.changes();
    let counter = stored.clone();
    let listener = tokio::spawn(async move {
        while let Ok(change) = changes.recv().await {
            if let Change::Measurements(batch) = change {
                counter.fetch_add(batch.len() as u64, Ordering::Relaxed);
            }
        }
    });
    let result = drive(
        args,
        &[broker],
        qos,
        Count::Counted(&stored),
        processes,
        false,
    )
    .await;
    listener.abort();
    drop(watch);
    result
}

/// `bal bench --json`'s document.
#[derive(serde::Serialize)]
struct Report {
    load_generator: &'static str,
    devices: usize,
    rate_per_device: u32,
    seconds: u64,
    cores: usize,
    date: String,
    phases: Vec<serde_json::Value>,
}

impl Report {
    fn new(args: &BenchArgs, phases: Vec<serde_json::Value>) -> Self {
        Report {
            load_generator: "process",
            devices: args.devices,
            rate_per_device: args.rate,
            seconds: args.seconds,
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            date: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            phases,
        }
    }
}

/// Says `what` on stderr with `--json` (stdout is the document), else on stdout.
pub(crate) fn progress(args: &BenchArgs, what: &str) {
    if args.json {
        eprintln!("{what}");
    } else {
        println!("{what}");
    }
}

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    if let Some(n) = args.idle_connections {
        return crate::bench_idle::run(&args, n).await;
    }
    progress(
        &args,
        &format!(
            "bench: {} devices x {} msg/s offered, {} producers, {} s per phase after {} s \
             warm-up; the devices run in a process of their own",
            args.devices,
            args.rate,
            args.producers,
            args.seconds,
            WARM_UP.as_secs()
        ),
    );
    let mosquitto = args
        .mosquitto
        .as_deref()
        .map(Mosquitto::from_args)
        .transpose()?;
    let m = mosquitto.as_ref();
    if let Some(n) = args.replicas {
        // The embedded MQTT cluster, then the same load through Mosquitto when one is given.
        let mut phases = crate::bench_cluster::run(&args, n).await?;
        if let Some(m) = m {
            phases.extend(crate::bench_replicas::run(&args, m, n).await?);
        }
        if args.json {
            println!(
                "{}",
                serde_json::to_string_pretty(&Report::new(&args, phases))?
            );
        }
        return Ok(());
    }
    let wanted = |name: &str| args.phases.is_empty() || args.phases.iter().any(|p| p == name);
    let mut phases = Vec::new();
    // Through Mosquitto the BAL runs first, so that the producer accounts exist on the broker
    // for the baseline.
    if m.is_none() && wanted("passthrough") {
        phases.push(passthrough(&args, None).await?);
    }
    if wanted("sqlite_qos1") {
        phases.push(bal_phase(&args, QoS::AtLeastOnce, m, None).await?);
    }
    if wanted("sqlite_qos0") {
        phases.push(bal_phase(&args, QoS::AtMostOnce, m, None).await?);
    }
    if m.is_some() && wanted("passthrough") {
        phases.insert(0, passthrough(&args, m).await?);
    }
    if let Some(server) = &args.database
        && wanted("postgres_qos1")
    {
        let scratch = crate::scratch::ScratchDatabase::create(server, 1).await?;
        let phase = bal_phase(&args, QoS::AtLeastOnce, m, Some(&scratch.url)).await;
        scratch.drop_now().await?;
        phases.push(phase?);
    }
    let raw = phases.iter().find(|p| p.name == "passthrough").cloned();
    let raw = raw.as_ref();
    if args.json {
        let phases = phases
            .iter()
            .map(|p| p.to_json(raw))
            .collect::<Result<_, serde_json::Error>>()?;
        let report = Report::new(&args, phases);
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    let ratio = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.2}"));
    println!();
    println!(
        "{:<52} {:>10} {:>10} {:>7} {:>10} {:>8}",
        "phase", "offered/s", "done/s", "vs raw", "CPU us/msg", "CPU x"
    );
    for p in &phases {
        println!(
            "{:<52} {:>10.0} {:>10.0} {:>7} {:>10} {:>8}",
            p.title,
            p.offered,
            p.per_second,
            ratio(p.vs_raw(raw)),
            p.cpu_us_per_msg
                .map_or_else(|| "-".to_owned(), |c| format!("{c:.1}")),
            ratio(p.cpu_vs_raw(raw)),
        );
    }
    println!(
        "(CPU: the server's user + system time per message done, PostgreSQL's processes \
         included in its phase; CPU x: against the pass-through broker's)"
    );
    Ok(())
}
