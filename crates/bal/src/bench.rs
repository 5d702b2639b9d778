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

use crate::app::Application;
use crate::devices::{self, Counters, DeviceSpec};
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

pub(crate) const PASSWORD: &str = "bench-password-0";
const WARM_UP: Duration = Duration::from_secs(2);

pub(crate) struct Phase {
    pub(crate) name: &'static str,
    pub(crate) per_second: f64,
    pub(crate) offered: f64,
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

/// Runs devices against `brokers` (device `i` on `brokers[i % len]`) and returns (counted per
/// second, offered per second).
pub(crate) async fn drive(
    args: &BenchArgs,
    brokers: &[SocketAddr],
    qos: QoS,
    count: impl Fn(&Counters) -> u64,
) -> (f64, f64) {
    let counters = Arc::new(Counters::default());
    let period = Duration::from_secs_f64(1.0 / f64::from(args.rate.max(1)));
    let payload = devices::power_reading(0.0);
    let tasks: Vec<_> = (0..args.devices)
        .map(|i| {
            let producer = i % args.producers.max(1);
            let spec = DeviceSpec {
                broker: brokers[i % brokers.len()],
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
    tokio::time::sleep(WARM_UP).await;
    let (c0, p0, t0) = (
        count(&counters),
        counters.published.load(Ordering::Relaxed),
        Instant::now(),
    );
    tokio::time::sleep(Duration::from_secs(args.seconds)).await;
    let secs = t0.elapsed().as_secs_f64();
    let counted = (count(&counters) - c0) as f64 / secs;
    let offered = (counters.published.load(Ordering::Relaxed) - p0) as f64 / secs;
    for t in tasks {
        t.abort();
    }
    (counted, offered)
}

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
    // The one subscriber every message goes through.
    let mut options =
        rumqttc::MqttOptions::new("bench-subscriber", addr.ip().to_string(), addr.port());
    options.set_keep_alive(Duration::from_secs(30));
    if let Some(m) = mosquitto {
        options.set_credentials(&m.admin, &m.password);
    }
    let (sub, mut events) = rumqttc::AsyncClient::new(options, 1000);
    sub.subscribe("platone/#", QoS::AtMostOnce).await?;
    let received = Arc::new(AtomicU64::new(0));
    let seen = received.clone();
    let subscriber = tokio::spawn(async move {
        while let Ok(e) = events.poll().await {
            if let rumqttc::Event::Incoming(rumqttc::Packet::Publish(_)) = e {
                seen.fetch_add(1, Ordering::Relaxed);
            }
        }
    });
    let (acked, offered) = drive(args, &[addr], QoS::AtLeastOnce, |c| {
        c.acked.load(Ordering::Relaxed)
    })
    .await;
    let delivered = received.load(Ordering::Relaxed);
    subscriber.abort();
    if let Some(broker) = embedded {
        broker.stop().await;
    }
    println!("  (pass-through subscriber received {delivered} messages)");
    Ok(Phase {
        name: if mosquitto.is_some() {
            "Mosquitto pass-through, QoS 1 (no BAL, 1 subscriber)"
        } else {
            "raw pass-through, QoS 1 (no storage, 1 subscriber)"
        },
        per_second: acked,
        offered,
    })
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
    let result = match qos {
        // Mosquitto acknowledges devices itself: count what the SCD commits.
        QoS::AtLeastOnce if mosquitto.is_some() => {
            let (per_second, offered) = drive_counting_commits(args, &store, broker, qos).await;
            Phase {
                name: "BAL via Mosquitto, QoS 1 (committed)",
                per_second,
                offered,
            }
        }
        // QoS 0 has no acknowledgement: count what the SCD announces as committed.
        QoS::AtMostOnce => {
            let (per_second, offered) = drive_counting_commits(args, &store, broker, qos).await;
            Phase {
                name: if mosquitto.is_some() {
                    "BAL via Mosquitto, QoS 0 (stored)"
                } else {
                    "BAL, QoS 0 (stored)"
                },
                per_second,
                offered,
            }
        }
        _ => {
            let (acked, offered) =
                drive(args, &[broker], qos, |c| c.acked.load(Ordering::Relaxed)).await;
            Phase {
                name: if database.is_some() {
                    "BAL on PostgreSQL, QoS 1 (committed before PUBACK)"
                } else {
                    "BAL, QoS 1 (committed before PUBACK)"
                },
                per_second: acked,
                offered,
            }
        }
    };
    let _ = stop.send(());
    server.await??;
    if let Some(m) = mosquitto {
        m.drop_ingest_session(BENCH_INGEST_ID).await;
    }
    Ok(result)
}

/// Drives devices and counts the measurements the SCD announces as committed.
async fn drive_counting_commits(
    args: &BenchArgs,
    store: &bal_scd::SharedStore,
    broker: SocketAddr,
    qos: QoS,
) -> (f64, f64) {
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
    let result = drive(args, &[broker], qos, |_| stored.load(Ordering::Relaxed)).await;
    listener.abort();
    drop(watch);
    result
}

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    println!(
        "bench: {} devices x {} msg/s offered, {} producers, {} s per phase after {} s warm-up",
        args.devices,
        args.rate,
        args.producers,
        args.seconds,
        WARM_UP.as_secs()
    );
    let mosquitto = args
        .mosquitto
        .as_deref()
        .map(Mosquitto::from_args)
        .transpose()?;
    let m = mosquitto.as_ref();
    if let Some(n) = args.replicas {
        // The embedded MQTT cluster, then the same load through Mosquitto when one is given.
        crate::bench_cluster::run(&args, n).await?;
        if let Some(m) = m {
            crate::bench_replicas::run(&args, m, n).await?;
        }
        return Ok(());
    }
    let (raw, qos1, qos0) = if m.is_some() {
        // The BAL first, so that the producer accounts exist on the broker for the baseline.
        let qos1 = bal_phase(&args, QoS::AtLeastOnce, m, None).await?;
        let qos0 = bal_phase(&args, QoS::AtMostOnce, m, None).await?;
        (passthrough(&args, m).await?, qos1, qos0)
    } else {
        let raw = passthrough(&args, None).await?;
        let qos1 = bal_phase(&args, QoS::AtLeastOnce, None, None).await?;
        (
            raw,
            qos1,
            bal_phase(&args, QoS::AtMostOnce, None, None).await?,
        )
    };
    let mut phases = vec![raw, qos1, qos0];
    if let Some(server) = &args.database {
        let scratch = crate::scratch::ScratchDatabase::create(server, 1).await?;
        let phase = bal_phase(&args, QoS::AtLeastOnce, m, Some(&scratch.url)).await;
        scratch.drop_now().await?;
        phases.push(phase?);
    }
    let raw = &phases[0];
    println!();
    println!(
        "{:<52} {:>12} {:>12} {:>8}",
        "phase", "offered/s", "done/s", "vs raw"
    );
    for p in &phases {
        println!(
            "{:<52} {:>12.0} {:>12.0} {:>8.2}",
            p.name,
            p.offered,
            p.per_second,
            p.per_second / raw.per_second.max(1.0)
        );
    }
    Ok(())
}
