//! `bal bench --idle-connections N`: what an idle MQTT connection costs the server in memory.
//! The BAL (embedded broker, SQLite) runs in this process; a `bal bench-load --idle N` process
//! opens N connections that only answer keep-alives, and the growth of this process's resident
//! memory, divided by N, is the cost of one. Three kinds: plain MQTT, MQTT over TLS, and plain
//! connections each holding one subscription (to its set points, as a device that takes them).
//!
//! Each kind is measured in a fresh process (`bal bench --idle-kind K`, which this runs): memory
//! one kind freed would be reused by the next and hide its cost.
//!
//! Before the connections, the producers log in once each: the first login of an account
//! checks its password with Argon2 (19 MiB of working memory per check), and that memory is
//! reported apart (`rss_after_logins`) so that it does not count as the connections'.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde::Serialize;

use crate::app::Application;
use crate::bench::{BenchArgs, LoadProcess, create_producers};
use crate::proc_stat::rss_bytes;
use crate::settings::Settings;

/// The server's memory after `n` connections of one kind.
#[derive(Debug, Serialize)]
struct Kind {
    name: &'static str,
    connections: usize,
    rss_before: u64,
    rss_connected: u64,
    /// After the connections closed: what the server gave back.
    rss_after: u64,
    rss_bytes_per_connection: u64,
}

fn own_rss() -> u64 {
    rss_bytes(std::process::id()).unwrap_or(0)
}

/// Starts a load process of `n` idle connections and waits until all are up.
async fn connect(
    broker: SocketAddr,
    n: usize,
    producers: usize,
    tls_ca: Option<&Path>,
    subscribe: bool,
) -> anyhow::Result<LoadProcess> {
    let mut command = tokio::process::Command::new(std::env::current_exe()?);
    command
        .arg("bench-load")
        .args(["--broker", &broker.to_string()])
        .args(["--idle", &n.to_string()])
        .args(["--producers", &producers.to_string()]);
    if let Some(ca) = tls_ca {
        command.arg("--tls-ca").arg(ca);
    }
    if subscribe {
        command.arg("--subscribe");
    }
    let mut load = LoadProcess::spawn(command)?;
    load.expect("connected").await?;
    Ok(load)
}

/// Lets the server settle (sessions registered, buffers shrunk after the handshakes).
async fn settle() {
    tokio::time::sleep(Duration::from_secs(3)).await;
}

/// The kinds measured: name, over TLS, holding one subscription.
const KINDS: [(&str, bool, bool); 3] = [
    ("plain", false, false),
    ("tls", true, false),
    ("one_subscription", false, true),
];

pub(crate) async fn run(args: &BenchArgs, n: usize) -> anyhow::Result<()> {
    if let Some(kind) = &args.idle_kind {
        let (rss_at_start, rss_after_logins, kind) = one_kind(args, n, kind).await?;
        let report = serde_json::json!({
            "rss_at_start": rss_at_start,
            "rss_after_logins": rss_after_logins,
            "kind": kind,
        });
        println!("{report}");
        return Ok(());
    }
    // Each kind in a fresh process of its own (see `idle_kind`).
    let mut kinds = Vec::new();
    let mut first = None;
    for (name, _, _) in KINDS {
        let out = tokio::process::Command::new(std::env::current_exe()?)
            .args(["bench", "--idle-connections", &n.to_string()])
            .args(["--idle-kind", name])
            .args(["--producers", &args.producers.to_string()])
            .stderr(std::process::Stdio::inherit())
            .output()
            .await?;
        anyhow::ensure!(out.status.success(), "the {name} measurement failed");
        let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
        first.get_or_insert((v["rss_at_start"].clone(), v["rss_after_logins"].clone()));
        kinds.push(v["kind"].clone());
    }
    let (rss_at_start, rss_after_logins) = first.unwrap_or_default();
    if args.json {
        let report = serde_json::json!({
            "load_generator": "process",
            "idle_connections": {
                "connections": n,
                "rss_at_start": rss_at_start,
                "rss_after_logins": rss_after_logins,
                "rss_bytes_per_connection": kinds[0]["rss_bytes_per_connection"],
                "kinds": kinds,
            },
        });
        println!("{}", serde_json::to_string_pretty(&report)?);
    }
    Ok(())
}

/// One kind in this process: (resident memory at start, after the logins, the kind's figures).
async fn one_kind(args: &BenchArgs, n: usize, kind: &str) -> anyhow::Result<(u64, u64, Kind)> {
    let (name, over_tls, subscribe) = KINDS
        .into_iter()
        .find(|(k, _, _)| *k == kind)
        .ok_or_else(|| anyhow::anyhow!("--idle-kind: plain, tls or one_subscription"))?;
    crate::load::raise_open_files_limit();
    let dir = tempfile::tempdir()?;
    let mut settings = Settings {
        data_dir: dir.path().to_owned(),
        ..Settings::default()
    };
    settings.http.listen = "127.0.0.1:0".parse()?;
    settings.mqtt.listen = Some("127.0.0.1:0".parse()?);
    settings.mqtt.listen_tls = Some("127.0.0.1:0".parse()?);
    let app = Application::build(settings).await?;
    create_producers(&app.store(), app.account_keys(), args.producers).await?;
    let plain = app.mqtt_addr().expect("listening");
    let tls = app.mqtts_addr().expect("listening");
    let ca = app
        .ca_path()
        .ok_or_else(|| anyhow::anyhow!("no generated CA to trust"))?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until(async {
        let _ = stopped.await;
    }));
    settle().await;
    let rss_at_start = own_rss();
    // One login per account: its Argon2 check, then the credential cache.
    connect(plain, args.producers, args.producers, None, false)
        .await?
        .finish()
        .await?;
    settle().await;
    let rss_after_logins = own_rss();
    let (broker, tls_ca) = if over_tls {
        (tls, Some(ca.as_path()))
    } else {
        (plain, None)
    };
    let rss_before = own_rss();
    let load = connect(broker, n, args.producers, tls_ca, subscribe).await?;
    settle().await;
    let rss_connected = own_rss();
    load.finish().await?;
    settle().await;
    let kind = Kind {
        name,
        connections: n,
        rss_before,
        rss_connected,
        rss_after: own_rss(),
        rss_bytes_per_connection: rss_connected.saturating_sub(rss_before) / n.max(1) as u64,
    };
    eprintln!(
        "  {name}: {} bytes per connection ({} MB -> {} MB; {} MB after they closed; {} MB at \
         start, {} MB after one login per producer)",
        kind.rss_bytes_per_connection,
        kind.rss_before >> 20,
        kind.rss_connected >> 20,
        kind.rss_after >> 20,
        rss_at_start >> 20,
        rss_after_logins >> 20,
    );
    let _ = stop.send(());
    server.await??;
    Ok((rss_at_start, rss_after_logins, kind))
}
