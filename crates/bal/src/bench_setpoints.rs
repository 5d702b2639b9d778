//! `bal bench-setpoints`: set points end to end. N simulated devices (MQTT 3.1.1, persistent
//! sessions) each take set points; the admin issues them over the HTTP API, the embedded broker
//! delivers them, each device answers `received` then `applied`, and the certifier anchors every
//! transition. Rounds follow each other (every device gets one set point per round, the next
//! round once this one is applied). Reports, per set point, issue → applied (the HTTP request's start to the commit
//! of the device's `applied`) and applied → certified (that transition's commit to its batch's
//! anchor being recorded), as p50 / p99 / max.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bal_core::AuditAction;
use bal_core::setpoint::SetpointState;
use bal_scd::{AuditQuery, Change, ItemKind};
use futures_util::StreamExt;
use rumqttc::QoS;
use serde_json::json;
use tokio::sync::Mutex;

use crate::app::Application;
use crate::bench::{PASSWORD, create_producers};
use crate::devices::{self, Counters, DeviceSpec};
use crate::settings::Settings;

#[derive(Debug, Clone, clap::Args)]
pub struct SetpointBenchArgs {
    /// Simulated devices, each taking set points.
    #[arg(long, default_value_t = 1000)]
    pub devices: usize,
    /// Set points per device, issued in rounds (every device once per round).
    #[arg(long, default_value_t = 3)]
    pub rounds: u32,
    /// Producer accounts the devices belong to.
    #[arg(long, default_value_t = 10)]
    pub producers: usize,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    /// Set points issued per second, paced; 0: as fast as --concurrency allows (a burst, as a
    /// DSO setting every inverter at once).
    #[arg(long, default_value_t = 0)]
    pub rate: u32,
    /// The certifier's batch window, in milliseconds.
    #[arg(long, default_value_t = 1000)]
    pub window_ms: u64,
    /// Run on PostgreSQL: a server (postgres://USER@HOST/DB) on which a scratch database is
    /// created for the run and dropped after it. Default: a scratch SQLite file.
    #[arg(long)]
    pub database: Option<String>,
}

fn percentiles(mut ms: Vec<f64>) -> String {
    if ms.is_empty() {
        return "none".into();
    }
    ms.sort_by(f64::total_cmp);
    let at = |p: f64| ms[(((ms.len() - 1) as f64) * p).round() as usize];
    format!(
        "p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms (n = {})",
        at(0.5),
        at(0.99),
        ms[ms.len() - 1],
        ms.len()
    )
}

pub async fn run(args: SetpointBenchArgs) -> anyhow::Result<()> {
    let server = args.database.clone();
    crate::scratch::ScratchDatabase::around(server.as_deref(), 3, |url| async move {
        run_on(&args, url.as_deref()).await
    })
    .await
}

async fn run_on(args: &SetpointBenchArgs, database: Option<&str>) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut settings = Settings {
        data_dir: dir.path().to_owned(),
        admin_password: Some(serde_json::from_value(json!(PASSWORD))?),
        ..Settings::default()
    };
    if let Some(url) = database {
        settings.database.url = Some(serde_json::from_value(json!(url))?);
    }
    settings.http.listen = "127.0.0.1:0".parse()?;
    settings.http.tls = false;
    settings.mqtt.listen = Some("127.0.0.1:0".parse()?);
    settings.mqtt.listen_tls = None;
    settings.certify.batch_window_ms = args.window_ms;
    // A thousand devices log in from one address at once: not an attack.
    settings.auth.max_failed_logins_per_address = u32::MAX;
    // The benchmark is one issuer setting every device: no rate limit in the way.
    settings.setpoints.issue_burst = u32::MAX / 2;
    settings.setpoints.issue_per_second = u32::MAX / 2;
    let app = Application::build(settings).await?;
    let store = app.store();
    create_producers(&store, app.account_keys(), args.producers).await?;
    let base = app.base_url();
    let mqtt = app.mqtt_addr().expect("listening");
    println!(
        "database: {}; {} devices, {} rounds, {}, batch window {} ms",
        if database.is_some() {
            "PostgreSQL (scratch)"
        } else {
            "SQLite (scratch)"
        },
        args.devices,
        args.rounds,
        match args.rate {
            0 => format!("bursts of {} requests in flight", args.concurrency),
            r => format!("{r} set points/s"),
        },
        args.window_ms
    );
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until(async {
        let _ = stopped.await;
    }));

    // When each set point was applied, from the change feed.
    let applied_at: Arc<Mutex<HashMap<i64, Instant>>> = Arc::default();
    let mut changes = store.changes();
    let seen = applied_at.clone();
    let watcher = tokio::spawn(async move {
        while let Ok(change) = changes.recv().await {
            if let Change::Setpoint(c) = change
                && c.state == SetpointState::Applied
            {
                seen.lock().await.insert(c.id, Instant::now());
            }
        }
    });

    let counters = Arc::new(Counters::default());
    let fleet: Vec<_> = (0..args.devices)
        .map(|i| {
            let producer = i % args.producers.max(1);
            let spec = DeviceSpec {
                broker: mqtt,
                client_id: format!("bench-sp-{i}"),
                username: format!("producer{producer}"),
                password: PASSWORD.into(),
                topic: format!("platone/producer{producer}/dev-{i}"),
                // One reading an hour: the load here is the set points.
                period: Duration::from_secs(3600),
                qos: QoS::AtLeastOnce,
                payload: devices::power_reading(0.0),
                setpoints: Some(format!("dev-{i}")),
            };
            devices::spawn(spec, counters.clone())
        })
        .collect();
    // Every device subscribed (a set point sent before waits for its retry).
    let deadline = Instant::now() + Duration::from_secs(60);
    while counters
        .subscribed
        .load(std::sync::atomic::Ordering::Relaxed)
        < args.devices as u64
    {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the devices did not all subscribe in 60 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Plain HTTP on loopback; reqwest still wants a process-wide TLS provider.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = reqwest::Client::new();
    let login: serde_json::Value = http
        .post(format!("{base}/api/auth/login"))
        .json(&json!({"username": "admin", "password": PASSWORD}))
        .send()
        .await?
        .json()
        .await?;
    let token = login["token"]
        .as_str()
        .ok_or_else(|| anyhow::anyhow!("admin login failed: {login}"))?
        .to_owned();

    let issued_at: Arc<Mutex<HashMap<i64, Instant>>> = Arc::default();
    let started = Instant::now();
    let mut refused = 0usize;
    for round in 0..args.rounds {
        let round_start = tokio::time::Instant::now();
        let requests = (0..args.devices).map(|i| {
            let (http, token, base) = (http.clone(), token.clone(), base.clone());
            let issued_at = issued_at.clone();
            let at = (args.rate > 0)
                .then(|| round_start + Duration::from_secs_f64(i as f64 / f64::from(args.rate)));
            async move {
                if let Some(at) = at {
                    tokio::time::sleep_until(at).await;
                }
                let body = json!({
                    "producer": format!("producer{}", i % args.producers.max(1)),
                    "device": format!("dev-{i}"),
                    "values": {"p_max_kw": 3.0 + f64::from(round), "round": round},
                    "valid_until": (chrono::Utc::now() + chrono::Duration::seconds(120)).to_rfc3339(),
                });
                let t0 = Instant::now();
                let r = http
                    .post(format!("{base}/api/setpoints"))
                    .bearer_auth(&token)
                    .json(&body)
                    .send()
                    .await
                    .ok()?;
                let v: serde_json::Value = r.json().await.ok()?;
                let id = v["id"].as_i64()?;
                issued_at.lock().await.insert(id, t0);
                Some(id)
            }
        });
        let results: Vec<Option<i64>> = futures_util::stream::iter(requests)
            .buffer_unordered(args.concurrency.max(1))
            .collect()
            .await;
        refused += results.iter().filter(|r| r.is_none()).count();
        // The next round waits for this one: a set point issued while the device's previous
        // one is open would supersede it (the same keys), and latency would include queueing.
        let ids: Vec<i64> = results.into_iter().flatten().collect();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            let done = applied_at.lock().await;
            if ids.iter().all(|id| done.contains_key(id)) {
                break;
            }
            drop(done);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let total = issued_at.lock().await.len();
    let issue_secs = started.elapsed().as_secs_f64();
    // Every set point applied, or a minute passed.
    let deadline = Instant::now() + Duration::from_secs(60);
    while applied_at.lock().await.len() < total && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let applied_all = started.elapsed().as_secs_f64();
    let (issued, applied) = (
        issued_at.lock().await.clone(),
        applied_at.lock().await.clone(),
    );
    let to_applied: Vec<f64> = issued
        .iter()
        .filter_map(|(id, t0)| Some(applied.get(id)?.duration_since(*t0).as_secs_f64() * 1e3))
        .collect();

    // Every applied transition's batch anchored: the batch window, plus the anchor.
    let deadline = Instant::now() + Duration::from_millis(args.window_ms) + Duration::from_secs(30);
    let mut to_certified = Vec::new();
    loop {
        to_certified.clear();
        let mut pending = 0usize;
        let mut before = None;
        loop {
            let page = store
                .audit_log(&AuditQuery {
                    action: Some(AuditAction::Setpoint(SetpointState::Applied)),
                    before_id: before,
                    limit: 1000,
                    ..AuditQuery::default()
                })
                .await?;
            let Some(last) = page.last() else { break };
            before = Some(last.id);
            for e in &page {
                match store
                    .batch_of(ItemKind::Audit, e.id)
                    .await?
                    .and_then(|b| b.anchor)
                {
                    Some(a) => {
                        to_certified.push((a.anchored_at - e.at).num_milliseconds().max(0) as f64)
                    }
                    None => pending += 1,
                }
            }
        }
        if pending == 0 || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    println!(
        "issued {total} set points in {issue_secs:.1} s ({:.0}/s; {refused} requests failed)",
        total as f64 / issue_secs
    );
    println!(
        "applied {} of {total} ({:.0}/s over the run); devices answered applied {}, rejected {}",
        applied.len(),
        applied.len() as f64 / applied_all,
        counters.applied.load(std::sync::atomic::Ordering::Relaxed),
        counters.rejected.load(std::sync::atomic::Ordering::Relaxed),
    );
    println!("issue -> applied:     {}", percentiles(to_applied));
    println!(
        "applied -> certified: {} (batch window {} ms)",
        percentiles(to_certified),
        args.window_ms
    );

    for d in fleet {
        d.abort();
    }
    watcher.abort();
    let _ = stop.send(());
    server.await??;
    Ok(())
}
