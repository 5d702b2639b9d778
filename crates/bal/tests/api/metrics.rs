//! `/metrics`: what it counts, that it names no user, that the alert rules and the dashboard
//! name only metrics it exports; `metrics.listen`; `bal health` and `bal config check`.

use std::collections::BTreeSet;
use std::process::Output;

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::*;
use crate::mqtt::login;
use crate::mqtt_client::{Ev, Mqtt, V5};

async fn scrape(app: &TestApp) -> String {
    let r = app.client.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let kind = r.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(kind.starts_with("application/openmetrics-text"), "{kind}");
    r.text().await.unwrap()
}

/// The value of the sample `series` (name and labels exactly as rendered), if present.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map(|v| v.split(' ').next().unwrap().parse().unwrap())
}

/// The metric families `/metrics` declares (`# TYPE name kind`).
fn families(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .map(|l| l.split(' ').next().unwrap().to_owned())
        .collect()
}

/// Every `bal_*` metric a rule file or dashboard names, as its family: without the suffixes a
/// query adds to a counter's or histogram's samples.
fn named_in(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while let Some(at) = text[i..].find("bal_") {
        let start = i + at;
        let before = start.checked_sub(1).map(|b| bytes[b]);
        let mut end = start;
        while end < bytes.len()
            && (bytes[end].is_ascii_lowercase()
                || bytes[end].is_ascii_digit()
                || bytes[end] == b'_')
        {
            end += 1;
        }
        if !before.is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_') {
            let mut name = &text[start..end];
            for suffix in ["_bucket", "_count", "_sum", "_total", "_created"] {
                name = name.strip_suffix(suffix).unwrap_or(name);
            }
            names.insert(name.to_owned());
        }
        i = end;
    }
    names
}

#[tokio::test]
async fn metrics_count_ingest_logins_grants_and_anchors_without_naming_anyone() {
    let app = spawn_app().await;
    let producer = app.user("meter-owner-7", "producer").await;
    let consumer = app.user("aggregator-3", "consumer").await;

    let r = app
        .post(
            "/api/measurements",
            &producer,
            json!([{"p": 1}, {"p": 2}, {"p": 3}]),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = app
        .post(
            "/api/measurements?topic=platone/aggregator-3",
            &producer,
            json!([1]),
        )
        .await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        app.login("meter-owner-7", "not-the-password")
            .await
            .status(),
        StatusCode::UNAUTHORIZED
    );
    app.grant(&consumer, &producer, "meter-owner-7").await;

    let mut device = Mqtt::connect(V5, login(&app, "meter-7-dev", "meter-owner-7", PASSWORD));
    assert_eq!(device.next().await, Some(Ev::Connected));
    let ack = device
        .publish_acked("platone/meter-owner-7", b"{\"kw\": 4.2}")
        .await;
    assert!(matches!(ack, Ev::PubAck(_)), "{ack:?}");
    let refused = device.publish_acked("platone/aggregator-3", b"{}").await;
    assert!(
        !matches!(refused, Ev::PubAck(ref r) if r == "Success"),
        "{refused:?}"
    );

    let text = scrape(&app).await;
    let expect = [
        (
            "bal_measurements_total{source=\"https\",result=\"stored\"}",
            3.0,
        ),
        (
            "bal_measurements_total{source=\"mqtt\",result=\"stored\"}",
            1.0,
        ),
        (
            "bal_measurements_refused_total{source=\"https\",reason=\"not_authorized\"}",
            1.0,
        ),
        (
            "bal_measurements_refused_total{source=\"mqtt\",reason=\"not_authorized\"}",
            1.0,
        ),
        ("bal_failed_logins_total{channel=\"https\"}", 1.0),
        ("bal_grant_decisions_total{decision=\"requested\"}", 1.0),
        ("bal_grant_decisions_total{decision=\"accepted\"}", 1.0),
        ("bal_dependency_up{dependency=\"database\"}", 1.0),
        ("bal_dependency_up{dependency=\"chain\"}", 1.0),
        ("bal_ready", 1.0),
        ("bal_replicas_live", 1.0),
        ("bal_mqtt_connections", 1.0),
        ("bal_ingest_commit_duration_seconds_count", 1.0),
    ];
    for (series, want) in expect {
        assert_eq!(sample(&text, series), Some(want), "{series} in:\n{text}");
    }
    assert!(
        sample(
            &text,
            "bal_http_requests_total{method=\"POST\",route=\"/api/measurements\",status=\"2xx\"}"
        ) == Some(1.0),
        "{text}"
    );
    // Route patterns, never raw paths; no user name, no topic anywhere.
    for private in ["meter-owner-7", "aggregator-3", "platone/"] {
        assert!(
            !text.contains(private),
            "{private} leaked into /metrics:\n{text}"
        );
    }

    // The embedded chain anchors within a few batch windows; the latency is observed per
    // measurement, the lease held by this only replica.
    eventually(30, "a batch anchored", || async {
        let text = scrape(&app).await;
        sample(&text, "bal_batches_anchored_total").unwrap_or(0.0) >= 1.0
            && sample(&text, "bal_anchor_latency_seconds_count").unwrap_or(0.0) >= 4.0
    })
    .await;
    let text = scrape(&app).await;
    assert_eq!(
        sample(&text, "bal_lease_held{lease=\"certify\"}"),
        Some(1.0)
    );
    assert!(
        sample(&text, "bal_chain_head_block").unwrap() >= 1.0,
        "{text}"
    );

    // Every metric the alert rules and the dashboard use is one this binary exports.
    let exported = families(&text);
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
    for file in ["deploy/prometheus/alerts.yml", "deploy/grafana/bal.json"] {
        let used = named_in(&std::fs::read_to_string(format!("{root}/{file}")).unwrap());
        assert!(used.len() >= 8, "{file} names too few metrics: {used:?}");
        let unknown: Vec<_> = used.difference(&exported).collect();
        assert!(
            unknown.is_empty(),
            "{file} names metrics bal does not export: {unknown:?}\nexported: {exported:?}"
        );
    }
    app.stop().await;
}

#[test]
fn metric_names_are_read_from_queries_as_families() {
    let names = named_in(
        "rate(bal_anchor_latency_seconds_bucket[5m]) + bal_measurements_total{x=\"bal_no\"} \
         / BalNotReady / label_values(bal_build_info, pod) / foo_bal_x",
    );
    let want: BTreeSet<String> = [
        "bal_anchor_latency_seconds",
        "bal_measurements",
        "bal_no",
        "bal_build_info",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    assert_eq!(names, want);
}

#[tokio::test]
async fn metrics_listen_serves_metrics_apart_from_the_https_port() {
    let port = free_port();
    let app =
        spawn_app_with(|s| s.metrics.listen = Some(format!("127.0.0.1:{port}").parse().unwrap()))
            .await;
    let r = reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let text = r.text().await.unwrap();
    assert!(text.contains("bal_build_info{version=\""), "{text}");
    assert_eq!(sample(&text, "bal_ready"), Some(1.0), "{text}");
    // Only /metrics there; and not on the public port.
    let r = reqwest::get(format!("http://127.0.0.1:{port}/api/users"))
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let r = app.client.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    app.stop().await;
}

/// `bal health` against the server at `base` (its port on every address, as a container's
/// settings say), with the certificate of `data_dir`. Off the test's runtime thread, which
/// serves the answer.
async fn bal_health(base: &str, data_dir: &std::path::Path) -> Output {
    let port = base.rsplit(':').next().unwrap();
    let mut cmd = bal_cli(data_dir);
    cmd.arg("health")
        .env("BAL_HTTP__LISTEN", format!("0.0.0.0:{port}"));
    tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap()
}

#[tokio::test]
async fn bal_health_exits_0_only_for_a_ready_server_with_the_pinned_certificate() {
    let app = spawn_app().await;
    let ok = bal_health(&app.base, &app.data_dir).await;
    let out = String::from_utf8_lossy(&ok.stdout);
    assert_eq!(
        ok.status.code(),
        Some(0),
        "{out} {}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(out.contains("200 ready"), "{out}");

    // Another installation's certificate is not this server's: refused, exit 1.
    let other = tempfile::tempdir().unwrap();
    bal::tls::ensure_self_signed(&other.path().join("tls"), &[]).unwrap();
    let wrong = bal_health(&app.base, other.path()).await;
    assert_eq!(wrong.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&wrong.stderr).contains("not ready"));

    let data_dir = app.data_dir.clone();
    let base = app.base.clone();
    let dir = app.stop().await;
    let down = bal_health(&base, &data_dir).await;
    assert_eq!(down.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&down.stderr).contains("no answer"),
        "{down:?}"
    );
    drop(dir);
}

#[test]
fn bal_config_check_accepts_valid_settings_and_names_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let check = |env: &[(&str, &str)]| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_bal"));
        cmd.args(["--data-dir"])
            .arg(dir.path())
            .args(["config", "check"]);
        cmd.env_remove("BAL_DATABASE__URL");
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.output().unwrap()
    };
    let ok = check(&[(
        "BAL_DATABASE__URL",
        "postgres://bal:sekrit-pw@db.example/bal",
    )]);
    let out = String::from_utf8_lossy(&ok.stdout);
    assert_eq!(ok.status.code(), Some(0), "{out}");
    assert!(
        out.contains("settings are valid") && out.contains("PostgreSQL"),
        "{out}"
    );
    assert!(!out.contains("sekrit"), "{out}");
    // It checked, and created nothing.
    assert!(std::fs::read_dir(dir.path()).unwrap().next().is_none());

    // An MQTT cluster node, its peers from the environment as the chart gives them.
    let node = [
        ("BAL_MQTT__CLUSTER__POD_INDEX", "1"),
        ("BAL_MQTT__CLUSTER__LISTEN", "0.0.0.0:5363"),
        (
            "BAL_MQTT__CLUSTER__PEERS",
            "1@bal-0.bal-headless:5363,2@bal-1.bal-headless:5363,3@bal-2.bal-headless:5363",
        ),
    ];
    let ok = check(&node);
    let out = String::from_utf8_lossy(&ok.stdout);
    assert_eq!(ok.status.code(), Some(0), "{out}");
    assert!(out.contains("MQTT cluster node 2 of 3"), "{out}");

    for (env, says) in [
        (vec![("BAL_HTTP__TLS", "false")], "loopback"),
        (
            vec![("BAL_METRICS__LISTEN", "0.0.0.0:8443")],
            "metrics.listen",
        ),
        (vec![("BAL_HTTP__LISTN", "x")], "listn"),
        (vec![("BAL_CLUSTER__REPLICA_ID", "no spaces")], "replica_id"),
        (vec![("BAL_KEYS__MASTER_KEY", "short")], "master_key"),
        (vec![("BAL_CHAIN__OPERATOR_KEY", "0x1234")], "operator_key"),
        (
            vec![
                ("BAL_HTTP__CERT_FILE", "/nonexistent.pem"),
                ("BAL_HTTP__KEY_FILE", "/nonexistent.key"),
            ],
            "cert",
        ),
        (vec![("BAL_DATABASE__URL", "mysql://x")], "database.url"),
        (
            vec![("BAL_MQTT__MAX_QUEUED_MESSAGES", "0")],
            "mqtt.max_queued_messages",
        ),
        (vec![("BAL_MQTT__MAX_INFLIGHT", "0")], "MAX_INFLIGHT"),
        (
            vec![("BAL_MQTT__CLUSTER__NODE_ID", "1")],
            "mqtt.cluster.listen",
        ),
        (
            vec![
                ("BAL_MQTT__CLUSTER__NODE_ID", "1"),
                ("BAL_MQTT__CLUSTER__LISTEN", "8.8.8.8:5363"),
                ("BAL_MQTT__CLUSTER__PEERS", "1@a:1,2@b:1"),
            ],
            "public address",
        ),
        (
            vec![
                ("BAL_MQTT__CLUSTER__NODE_ID", "3"),
                ("BAL_MQTT__CLUSTER__LISTEN", "10.0.0.3:5363"),
                ("BAL_MQTT__CLUSTER__PEERS", "1@a:1,2@b:1"),
            ],
            "mqtt.cluster.peers",
        ),
        (
            vec![
                ("BAL_BROKER__KIND", "mosquitto"),
                ("BAL_BROKER__ADMIN_PASSWORD", "x"),
                ("BAL_MQTT__CLUSTER__NODE_ID", "1"),
            ],
            "broker.kind",
        ),
    ] {
        let bad = check(&env);
        let err = String::from_utf8_lossy(&bad.stderr);
        assert_eq!(bad.status.code(), Some(1), "{env:?}: {err}");
        assert!(err.contains(says), "{env:?}: {err}");
    }
}
