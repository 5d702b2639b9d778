//! `bal bench`: the ingest benchmark. N simulated devices publish at a set rate through the
//! broker, and the same run measures a raw pass-through baseline (a bare broker, the same load,
//! one subscriber, no storage), so the BAL's figures come as ratios against a baseline taken on
//! the same machine at the same time.

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
}

const PASSWORD: &str = "bench-password-0";
const WARM_UP: Duration = Duration::from_secs(2);

struct Phase {
    name: &'static str,
    per_second: f64,
    offered: f64,
}

/// Runs devices against `broker` and returns (counted per second, offered per second).
async fn drive(
    args: &BenchArgs,
    broker: SocketAddr,
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
                broker,
                client_id: format!("bench-{i}"),
                username: format!("producer{producer}"),
                password: PASSWORD.into(),
                topic: format!("platone/producer{producer}/dev-{i}"),
                period,
                qos,
                payload: payload.clone(),
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

async fn passthrough(args: &BenchArgs) -> anyhow::Result<Phase> {
    let broker = EmbeddedBroker::start_passthrough("127.0.0.1:0".parse()?).await?;
    let addr = broker.tcp_addr().expect("listening");
    // The one subscriber every message goes through.
    let mut options = rumqttc::MqttOptions::new("bench-subscriber", "127.0.0.1", addr.port());
    options.set_keep_alive(Duration::from_secs(30));
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
    let (acked, offered) = drive(args, addr, QoS::AtLeastOnce, |c| {
        c.acked.load(Ordering::Relaxed)
    })
    .await;
    let delivered = received.load(Ordering::Relaxed);
    subscriber.abort();
    broker.stop().await;
    println!("  (pass-through subscriber received {delivered} messages)");
    Ok(Phase {
        name: "raw pass-through, QoS 1 (no storage, 1 subscriber)",
        per_second: acked,
        offered,
    })
}

async fn bal_phase(args: &BenchArgs, qos: QoS) -> anyhow::Result<Phase> {
    let dir = tempfile::tempdir()?;
    let mut settings = Settings {
        data_dir: dir.path().to_owned(),
        ..Settings::default()
    };
    settings.http.listen = "127.0.0.1:0".parse()?;
    settings.mqtt.listen = Some("127.0.0.1:0".parse()?);
    settings.mqtt.listen_tls = None;
    settings.http.tls = false;
    let app = Application::build(settings).await?;
    let store = app.store();
    for p in 0..args.producers.max(1) {
        let name = Username::parse(&format!("producer{p}"))?;
        accounts::create_user(
            store.as_ref(),
            app.account_keys(),
            name,
            Role::Producer,
            PASSWORD.into(),
            &Actor::System,
        )
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    let broker = app.mqtt_addr().expect("listening");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until(async {
        let _ = stopped.await;
    }));
    let result = match qos {
        QoS::AtMostOnce => {
            // QoS 0 has no acknowledgement: count what the SCD announces as committed.
            let stored = Arc::new(AtomicU64::new(0));
            let mut changes = store.changes();
            let counter = stored.clone();
            let listener = tokio::spawn(async move {
                while let Ok(change) = changes.recv().await {
                    if let Change::Measurements(batch) = change {
                        counter.fetch_add(batch.len() as u64, Ordering::Relaxed);
                    }
                }
            });
            let (per_second, offered) =
                drive(args, broker, qos, |_| stored.load(Ordering::Relaxed)).await;
            listener.abort();
            Phase {
                name: "BAL, QoS 0 (stored)",
                per_second,
                offered,
            }
        }
        _ => {
            let (acked, offered) =
                drive(args, broker, qos, |c| c.acked.load(Ordering::Relaxed)).await;
            Phase {
                name: "BAL, QoS 1 (committed before PUBACK)",
                per_second: acked,
                offered,
            }
        }
    };
    let _ = stop.send(());
    server.await??;
    Ok(result)
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
    let raw = passthrough(&args).await?;
    let qos1 = bal_phase(&args, QoS::AtLeastOnce).await?;
    let qos0 = bal_phase(&args, QoS::AtMostOnce).await?;
    println!();
    println!(
        "{:<52} {:>12} {:>12} {:>8}",
        "phase", "offered/s", "done/s", "vs raw"
    );
    for p in [&raw, &qos1, &qos0] {
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
