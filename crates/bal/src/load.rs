//! `bal bench-load`: the benchmarks' load generator, in a process of its own, so that the CPU
//! time and memory a benchmark reads of the server are the server's alone.
//!
//! The benchmark spawns it and reads JSON lines from its stdout:
//! - publishing: `{"measuring":true}` when the warm-up ends, then one [`LoadReport`] when the
//!   measured window ends, then it exits;
//! - idle (`--idle N`): `{"connected":N}` once N connections are up (and subscribed), then it
//!   holds them until killed or its stdin closes.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use rumqttc::QoS;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncBufReadExt;

use crate::devices::{self, Counters, DeviceSpec};

/// The producer accounts' password (`producer0` …), which the benchmark creates.
pub(crate) const PASSWORD: &str = "bench-password-0";

#[derive(Debug, Clone, clap::Args)]
pub struct LoadArgs {
    /// The brokers (device i connects to the i-th modulo their number).
    #[arg(long = "broker", required = true)]
    pub brokers: Vec<SocketAddr>,
    #[arg(long, default_value_t = 1000)]
    pub devices: usize,
    /// Messages per second per device.
    #[arg(long, default_value_t = 40)]
    pub rate: u32,
    /// The measured window, after the warm-up.
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    #[arg(long, default_value_t = 2)]
    pub warm_up: u64,
    #[arg(long, default_value_t = 10)]
    pub producers: usize,
    /// 0 or 1.
    #[arg(long, default_value_t = 1)]
    pub qos: u8,
    /// Also runs the pass-through subscriber (`platone/#`, QoS 0) on the first broker, logged
    /// in as BAL_BROKER__ADMIN_USERNAME with BAL_BROKER__ADMIN_PASSWORD when that is set.
    #[arg(long)]
    pub subscriber: bool,
    /// Opens this many idle connections instead of publishing.
    #[arg(long)]
    pub idle: Option<usize>,
    /// Idle connections over TLS, trusting this CA certificate (PEM).
    #[arg(long)]
    pub tls_ca: Option<PathBuf>,
    /// Each idle connection subscribes to its producer's set points (one subscription).
    #[arg(long)]
    pub subscribe: bool,
}

/// What the load process saw in the measured window.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct LoadReport {
    pub seconds: f64,
    pub published: u64,
    /// PUBACKs the devices received (QoS 1).
    pub acked: u64,
    /// Messages the pass-through subscriber received.
    pub received: u64,
    pub errors: u64,
}

fn emit(line: &serde_json::Value) {
    // One line per event; the benchmark reads them as they come.
    println!("{line}");
}

pub async fn run(args: LoadArgs) -> anyhow::Result<()> {
    raise_open_files_limit();
    if let Some(n) = args.idle {
        return idle(&args, n).await;
    }
    let counters = Arc::new(Counters::default());
    let received = Arc::new(AtomicU64::new(0));
    let subscriber = args
        .subscriber
        .then(|| pass_through_subscriber(args.brokers[0], received.clone()));
    let qos = if args.qos == 0 {
        QoS::AtMostOnce
    } else {
        QoS::AtLeastOnce
    };
    let period = Duration::from_secs_f64(1.0 / f64::from(args.rate.max(1)));
    let payload = devices::power_reading(0.0);
    let tasks: Vec<_> = (0..args.devices)
        .map(|i| {
            let producer = i % args.producers.max(1);
            let spec = DeviceSpec {
                broker: args.brokers[i % args.brokers.len()],
                client_id: format!("bench-{i}"),
                username: format!("producer{producer}"),
                password: PASSWORD.into(),
                topic: format!("platone/producer{producer}/dev-{i}"),
                period,
                qos,
                payload: payload.clone(),
                setpoints: None,
            };
            devices::spawn(spec, counters.clone())
        })
        .collect();
    // The warm-up starts once every device is connected: what they queued while logging in
    // is sent then, and must not count in the window.
    let deadline = Instant::now() + Duration::from_secs(120);
    while (counters.connected.load(Ordering::Relaxed) as usize) < args.devices {
        anyhow::ensure!(
            Instant::now() < deadline,
            "only {} of {} devices connected",
            counters.connected.load(Ordering::Relaxed),
            args.devices
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_secs(args.warm_up)).await;
    let snapshot = |c: &Counters| {
        (
            c.published.load(Ordering::Relaxed),
            c.acked.load(Ordering::Relaxed),
            received.load(Ordering::Relaxed),
            c.errors.load(Ordering::Relaxed),
        )
    };
    let (p0, a0, r0, e0) = snapshot(&counters);
    let t0 = Instant::now();
    emit(&serde_json::json!({"measuring": true}));
    tokio::time::sleep(Duration::from_secs(args.seconds)).await;
    let (p1, a1, r1, e1) = snapshot(&counters);
    let report = LoadReport {
        seconds: t0.elapsed().as_secs_f64(),
        published: p1 - p0,
        acked: a1 - a0,
        received: r1 - r0,
        errors: e1 - e0,
    };
    emit(&serde_json::to_value(&report)?);
    for t in tasks {
        t.abort();
    }
    if let Some(s) = subscriber {
        s.abort();
    }
    Ok(())
}

/// The one subscriber every pass-through message goes through.
fn pass_through_subscriber(
    broker: SocketAddr,
    received: Arc<AtomicU64>,
) -> tokio::task::JoinHandle<()> {
    let mut options =
        rumqttc::MqttOptions::new("bench-subscriber", broker.ip().to_string(), broker.port());
    options.set_keep_alive(Duration::from_secs(30));
    if let Ok(password) = std::env::var("BAL_BROKER__ADMIN_PASSWORD") {
        let admin =
            std::env::var("BAL_BROKER__ADMIN_USERNAME").unwrap_or_else(|_| "bal-admin".into());
        options.set_credentials(admin, password);
    }
    let (client, mut events) = rumqttc::AsyncClient::new(options, 1000);
    tokio::spawn(async move {
        let _ = client.subscribe("platone/#", QoS::AtMostOnce).await;
        while let Ok(e) = events.poll().await {
            if let rumqttc::Event::Incoming(rumqttc::Packet::Publish(_)) = e {
                received.fetch_add(1, Ordering::Relaxed);
            }
        }
    })
}

/// Opens `n` connections that then only answer keep-alives, a few hundred handshakes at a
/// time, and holds them until stdin closes.
async fn idle(args: &LoadArgs, n: usize) -> anyhow::Result<()> {
    let tls = match &args.tls_ca {
        Some(path) => Some(bal_mqtt::mosquitto::connection::client_tls(path).context("--tls-ca")?),
        None => None,
    };
    let ready = Arc::new(AtomicU64::new(0));
    let gate = Arc::new(tokio::sync::Semaphore::new(200));
    let mut clients = Vec::with_capacity(n);
    for i in 0..n {
        let broker = args.brokers[i % args.brokers.len()];
        let producer = format!("producer{}", i % args.producers.max(1));
        // Over TLS the address is also the name checked (the generated certificate holds
        // 127.0.0.1).
        let mut o =
            rumqttc::MqttOptions::new(format!("idle-{i}"), broker.ip().to_string(), broker.port());
        o.set_credentials(&producer, PASSWORD);
        o.set_keep_alive(Duration::from_secs(60));
        if let Some(config) = &tls {
            o.set_transport(rumqttc::Transport::Tls(rumqttc::TlsConfiguration::Rustls(
                config.clone(),
            )));
        }
        let (client, mut events) = rumqttc::AsyncClient::new(o, 10);
        let topic = args
            .subscribe
            .then(|| format!("setpoints/{producer}/idle-{i}"));
        let ready = ready.clone();
        let permit = gate.clone().acquire_owned().await?;
        clients.push(tokio::spawn(async move {
            let mut permit = Some(permit);
            loop {
                match events.poll().await {
                    Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(_))) => match &topic {
                        Some(t) => {
                            let _ = client.try_subscribe(t, QoS::AtLeastOnce);
                        }
                        None => {
                            ready.fetch_add(1, Ordering::Relaxed);
                            permit.take();
                        }
                    },
                    Ok(rumqttc::Event::Incoming(rumqttc::Packet::SubAck(_))) => {
                        ready.fetch_add(1, Ordering::Relaxed);
                        permit.take();
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "idle connection failed");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
        }));
    }
    let deadline = Instant::now() + Duration::from_secs(300);
    while (ready.load(Ordering::Relaxed) as usize) < n {
        anyhow::ensure!(
            Instant::now() < deadline,
            "only {} of {n} connections came up",
            ready.load(Ordering::Relaxed)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    emit(&serde_json::json!({"connected": n}));
    // Hold the connections until the benchmark closes our stdin (or kills us).
    let mut stdin = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    while let Ok(Some(_)) = stdin.next_line().await {}
    for c in clients {
        c.abort();
    }
    Ok(())
}

/// Thousands of connections need thousands of descriptors: the soft limit (often 1 024) is
/// raised to the hard one, as a server would be configured.
pub(crate) fn raise_open_files_limit() {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current < limit.maximum {
        limit.current = limit.maximum;
        if let Err(e) = setrlimit(Resource::Nofile, limit) {
            tracing::warn!(error = %e, "cannot raise the open files limit");
        }
    }
}
