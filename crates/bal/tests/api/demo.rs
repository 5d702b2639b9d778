//! `bal demo` as a new user meets it: it starts even with its ports taken, prints where
//! everything is, and data flows at once.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::*;

/// `bal demo` on its own data folder; on the PostgreSQL pass on a database of its own, where
/// its embedded chain keeps its blocks too.
fn demo_command(data_dir: &std::path::Path) -> Command {
    let mut demo = Command::new(env!("CARGO_BIN_EXE_bal"));
    if bal_scd::testing::backend() == bal_scd::Backend::Postgres {
        demo.env(
            "BAL_DATABASE__URL",
            bal_scd::testing::create_postgres_database(),
        );
    }
    demo.arg("--data-dir").arg(data_dir).arg("demo");
    demo
}

#[tokio::test]
async fn the_demo_starts_on_taken_ports_and_shows_data_flowing_to_the_granted_consumer() {
    let taken_mqtt = TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_http = TcpListener::bind("127.0.0.1:0").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut child = demo_command(dir.path())
        .env(
            "BAL_MQTT__LISTEN",
            taken_mqtt.local_addr().unwrap().to_string(),
        )
        .env(
            "BAL_HTTP__LISTEN",
            taken_http.local_addr().unwrap().to_string(),
        )
        .env("BAL_MQTT__LISTEN_TLS", "127.0.0.1:0")
        .env_remove("BAL_ADMIN_PASSWORD")
        .stdout(Stdio::piped())
        // Kept for the failure message: what the demo logged.
        .stderr(std::fs::File::create(dir.path().join("demo.log")).unwrap())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let lines = tokio::task::spawn_blocking(move || {
        let mut lines = Vec::new();
        let mut reader = BufReader::new(stdout).lines();
        for line in reader.by_ref() {
            let line = line.unwrap();
            let done = line.starts_with("Try:");
            lines.push(line);
            if done {
                break;
            }
        }
        // Keep reading what the demo prints later, as a terminal would.
        std::thread::spawn(move || reader.for_each(drop));
        lines
    });
    let lines = tokio::time::timeout(Duration::from_secs(60), lines)
        .await
        .unwrap()
        .unwrap();
    let text = lines.join("\n");
    let field = |prefix: &str| {
        lines
            .iter()
            .find_map(|l| l.trim().strip_prefix(prefix))
            .unwrap_or_else(|| panic!("no {prefix} in:\n{text}"))
            .split_whitespace()
            .next()
            .unwrap()
            .to_owned()
    };
    let api = field("REST API");
    let mqtt = field("MQTT ");
    let consumer1 = field("consumer1  consumer");
    assert!(text.contains("is in use"), "{text}");
    assert!(!mqtt.ends_with(&format!(":{}", taken_mqtt.local_addr().unwrap().port())));
    assert!(!api.contains(&format!(":{}/", taken_http.local_addr().unwrap().port())));

    let ca = dir.path().join("tls/ca.pem");
    let client = client_trusting(&ca);
    let base = api.trim_end_matches("/api");
    let login: Value = client
        .post(format!("{base}/api/auth/login"))
        .json(&json!({ "username": "consumer1", "password": consumer1 }))
        .send()
        .await
        .unwrap_or_else(|e| {
            let log = std::fs::read_to_string(dir.path().join("demo.log")).unwrap_or_default();
            panic!("login at {base}: {e}\ndemo log:\n{log}")
        })
        .json()
        .await
        .unwrap();
    let token = login["token"].as_str().unwrap().to_owned();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let readings = client
        .get(format!("{base}/api/measurements?producer=producer1"))
        .bearer_auth(&token);
    let page = json_ok(readings.send().await.unwrap(), StatusCode::OK).await;
    assert!(!page["items"].as_array().unwrap().is_empty(), "{page}");
    // The demo's readings get certified: a proof for the first, within a few seconds.
    let first = page["items"][0]["id"].as_i64().unwrap();
    let mut bundle = Value::Null;
    for _ in 0..50 {
        let r = client
            .get(format!("{base}/api/measurements/{first}/proof"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        if r.status() == StatusCode::OK {
            bundle = r.json().await.unwrap();
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(bundle["format"], "bal-proof/1", "a proof of a demo reading");
    // The printed dashboard URL serves the login page.
    let dashboard = field("Dashboard");
    let login_page = client
        .get(format!("{dashboard}login"))
        .send()
        .await
        .unwrap();
    assert_eq!(login_page.status(), StatusCode::OK);
    assert!(login_page.text().await.unwrap().contains("Log in"));
    let denied = client
        .get(format!("{base}/api/measurements?producer=producer3"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(denied.status(), StatusCode::FORBIDDEN);

    // SIGTERM stops it cleanly.
    let pid = child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    assert!(status.success(), "{status:?}");
}

#[tokio::test]
async fn the_demo_keeps_serving_when_its_standard_output_is_closed() {
    // The reader of the demo's instructions going away (a closed pipe) once made the demo
    // panic on its next line of output and stop serving.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    let mut child = demo_command(dir.path())
        .env("BAL_HTTP__LISTEN", format!("127.0.0.1:{port}"))
        .env("BAL_MQTT__LISTEN", "127.0.0.1:0")
        .env("BAL_MQTT__LISTEN_TLS", "127.0.0.1:0")
        .env_remove("BAL_ADMIN_PASSWORD")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    install_crypto_provider();
    let ca = dir.path().join("tls/ca.pem");
    let mut healthy = false;
    let mut client = None;
    for _ in 0..240 {
        if client.is_none() && ca.exists() {
            client = Some(client_trusting(&ca));
        }
        if let Some(c) = &client
            && let Ok(r) = c
                .get(format!("https://127.0.0.1:{port}/healthz"))
                .send()
                .await
        {
            healthy = r.status().is_success();
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let client = client.expect("the demo made its CA");
    // Still serving a moment later, after it printed everything.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let later = client
        .get(format!("https://127.0.0.1:{port}/healthz"))
        .send()
        .await;
    let alive = child.try_wait().unwrap().is_none();
    let _ = child.kill();
    assert!(healthy, "the demo never served");
    assert!(
        alive && later.is_ok(),
        "the demo stopped after its output was closed"
    );
}
