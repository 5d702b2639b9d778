//! What only PostgreSQL deployments must prove: start-up errors that name `database.url`, and a
//! server running as a role that does not own the tables. Run by the PostgreSQL pass of the
//! test command (`BAL_TEST_DATABASE=postgres`); the SQLite pass skips them, so that it needs no
//! PostgreSQL.

use std::process::Command;

use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::Connection;

use crate::helpers::*;
use crate::paho::{PahoDevice, Readings};

fn on_postgres() -> bool {
    bal_scd::testing::backend() == bal_scd::Backend::Postgres
}

/// `bal <args>` with `database.url` set to `url` (and every listener on port 0, for
/// `serve`): its exit code and what it printed.
fn bal_on(url: &str, args: &[&str]) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_bal"))
        .args(["--data-dir", &dir.path().display().to_string()])
        .args(args)
        .env("BAL_DATABASE__URL", url)
        .env("BAL_DATABASE__ACQUIRE_TIMEOUT_MS", "2000")
        .env("BAL_HTTP__LISTEN", "127.0.0.1:0")
        .env("BAL_MQTT__LISTEN", "127.0.0.1:0")
        .env("BAL_MQTT__LISTEN_TLS", "127.0.0.1:0")
        .env("BAL_ADMIN_PASSWORD", ADMIN_PASSWORD)
        .output()
        .unwrap();
    crate::helpers::code_and_text(&out)
}

fn serve_with(url: &str) -> (Option<i32>, String) {
    bal_on(url, &["serve"])
}

fn db_status(url: &str) -> (Option<i32>, String) {
    bal_on(url, &["db", "status"])
}

async fn superuser() -> sqlx::PgConnection {
    sqlx::PgConnection::connect(&bal_scd::testing::postgres_admin_url())
        .await
        .unwrap()
}

#[tokio::test]
async fn an_unreachable_database_wrong_credentials_or_a_newer_schema_stop_serve_with_exit_1() {
    if !on_postgres() {
        return;
    }
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let url = bal_scd::testing::create_postgres_database();
    let base = url.rsplit_once('/').unwrap().0.to_owned();
    let name = url.rsplit_once('/').unwrap().1.to_owned();
    let cases = [
        (
            format!("postgres://postgres:pw-secret@127.0.0.1:{port}/bal"),
            "database.url",
        ),
        (
            format!("{}/{name}", base.replacen("postgres@", "no_such_role@", 1)),
            "database.url",
        ),
    ];
    for (url, expected) in &cases {
        let (code, text) = serve_with(url);
        assert_eq!(code, Some(1), "{url}: {text}");
        assert!(text.contains(expected), "{url}: {text}");
        assert!(!text.contains("pw-secret"), "no password printed: {text}");
        assert!(!text.contains("panicked"), "{text}");
    }
    // A schema made for a newer release refuses this binary.
    let store = bal_scd::connect(&url, &bal_scd::testing::options())
        .await
        .unwrap();
    drop(store);
    let mut db = sqlx::PgConnection::connect(&url).await.unwrap();
    sqlx::query("UPDATE bal_schema SET value = '99.0.0' WHERE key = 'min_binary'")
        .execute(&mut db)
        .await
        .unwrap();
    let (code, text) = serve_with(&url);
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains("needs bal 99.0.0") && text.contains("database.url"),
        "{text}"
    );
}

#[tokio::test]
async fn a_server_running_as_a_non_owner_role_works_and_cannot_touch_the_audit_log() {
    if !on_postgres() {
        return;
    }
    let tag = format!("{}_{:08x}", std::process::id(), rand::random::<u32>());
    let (owner, app_role, dbname) = (
        format!("bal_test_owner_{tag}"),
        format!("bal_test_app_{tag}"),
        format!("bal_test_{tag}"),
    );
    let mut su = superuser().await;
    for sql in [
        format!("CREATE ROLE {owner} LOGIN"),
        format!("CREATE ROLE {app_role} LOGIN"),
        format!("CREATE DATABASE {dbname} OWNER {owner}"),
    ] {
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .execute(&mut su)
            .await
            .unwrap();
    }
    let admin = bal_scd::testing::postgres_admin_url();
    let base = admin.rsplit_once('/').unwrap().0;
    let as_role = |role: &str| {
        format!(
            "{}/{dbname}",
            base.replacen("postgres@", &format!("{role}@"), 1)
        )
    };

    // The owner migrates, then grants what deploy/postgres/grants.sql says.
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_bal"))
        .args([
            "--data-dir",
            &dir.path().display().to_string(),
            "db",
            "migrate",
        ])
        .env("BAL_DATABASE__URL", as_role(&owner))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let grants =
        include_str!("../../../../deploy/postgres/grants.sql").replace("bal_app", &app_role);
    let mut as_owner = sqlx::PgConnection::connect(&as_role(&owner)).await.unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(grants))
        .execute(&mut as_owner)
        .await
        .unwrap();

    // The server, as the non-owner role, without migrating.
    let mut settings = test_settings(dir.path());
    settings.database.url = Some(serde_json::from_value(json!(as_role(&app_role))).unwrap());
    settings.database.auto_migrate = false;
    let app = start(settings).await;
    let producer = app.user("producer1", "producer").await;
    let consumer = app.user("consumer1", "consumer").await;
    app.grant(&consumer, &producer, "producer1").await;
    let r = app
        .post("/api/measurements", &producer, json!([{"p_kw": 1.5}]))
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = app
        .get("/api/measurements?producer=producer1", &consumer)
        .await;
    assert_eq!(r.status(), StatusCode::OK);

    // What the role cannot do, even by hand.
    let mut as_app = sqlx::PgConnection::connect(&as_role(&app_role))
        .await
        .unwrap();
    for sql in [
        "UPDATE audit_log SET actor = 'mallory'",
        "DELETE FROM audit_log",
        "TRUNCATE audit_log",
        "ALTER TABLE audit_log DISABLE TRIGGER audit_log_no_change",
        "DROP TRIGGER audit_log_no_change ON audit_log",
    ] {
        let err = sqlx::query(sql).execute(&mut as_app).await.unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("permission denied")
                || text.contains("must be owner")
                || text.contains("append-only"),
            "{sql}: {text}"
        );
    }
    drop(as_app);
    drop(as_owner);
    drop(app);
    for sql in [
        format!("DROP DATABASE IF EXISTS {dbname} WITH (FORCE)"),
        format!("DROP ROLE IF EXISTS {app_role}"),
        format!("DROP ROLE IF EXISTS {owner}"),
    ] {
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .execute(&mut su)
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn verify_full_tls_connects_to_a_server_signed_by_the_given_ca_and_to_no_other() {
    if !on_postgres() {
        return;
    }
    let certs = tempfile::tempdir().unwrap();
    let server = bal::tls::ensure_self_signed(&certs.path().join("server"), &[]).unwrap();
    let other = bal::tls::ensure_self_signed(&certs.path().join("other"), &[]).unwrap();
    let cluster = bal_scd::testing::PrivateCluster::start(Some(bal_scd::testing::ServerTls {
        cert_pem: std::fs::read_to_string(&server.cert).unwrap(),
        key_pem: std::fs::read_to_string(&server.key).unwrap(),
    }));
    let base = format!("postgres://postgres@localhost:{}/postgres", cluster.port());
    let with_ca = |mode: &str, ca: &std::path::Path| {
        format!("{base}?sslmode={mode}&sslrootcert={}", ca.display())
    };

    let (code, text) = db_status(&with_ca("verify-full", server.ca.as_ref().unwrap()));
    assert_eq!(code, Some(0), "{text}\n{}", cluster.log());
    // The server takes TCP connections over TLS only, so this one was encrypted.
    let (code, text) = db_status(&format!("{base}?sslmode=disable"));
    assert_eq!(
        code,
        Some(1),
        "plain TCP is refused by the test server: {text}"
    );
    // A server whose certificate another CA signed is not trusted.
    let (code, text) = db_status(&with_ca("verify-full", other.ca.as_ref().unwrap()));
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("database.url"), "{text}");
    assert!(!text.contains("panicked"), "{text}");
    // Nor is a name the certificate does not carry.
    let wrong_name = with_ca("verify-full", server.ca.as_ref().unwrap())
        .replace("@localhost:", "@localhost.localdomain.invalid:");
    let (code, _) = db_status(&wrong_name);
    assert_eq!(code, Some(1));
}

/// Measurements stored through the API by `token`, as the history lists them.
async fn stored_payloads(app: &TestApp, token: &str) -> Vec<Value> {
    let page = json_ok(
        app.get("/api/measurements?limit=1000", token).await,
        StatusCode::OK,
    )
    .await;
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["payload_json"].clone())
        .collect()
}

/// A server on a PostgreSQL cluster of its own, which the test may stop and start.
async fn app_on_private_cluster() -> (bal_scd::testing::PrivateCluster, TestApp) {
    let cluster = bal_scd::testing::PrivateCluster::start(None);
    let mut su = sqlx::PgConnection::connect(&cluster.url("postgres"))
        .await
        .unwrap();
    sqlx::query("CREATE DATABASE bal")
        .execute(&mut su)
        .await
        .unwrap();
    drop(su);
    let url = cluster.url("bal");
    let app = spawn_app_with(|s| {
        s.database.url = Some(serde_json::from_value(json!(url)).unwrap());
        s.database.acquire_timeout_ms = 1000;
    })
    .await;
    (cluster, app)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos1_readings_published_while_the_database_is_down_arrive_once_when_it_is_back() {
    if !on_postgres() {
        return;
    }
    const READINGS: usize = 240;
    let (mut cluster, app) = app_on_private_cluster().await;
    app.create_user("device1", "producer").await;
    // MQTT 5, where a negative PUBACK would count as an answer (and the reading be lost to a
    // device that trusts it); the crash loop covers 3.1.1.
    let readings = Readings {
        count: READINGS,
        version: 5,
        ..Readings::default()
    };
    let device = PahoDevice::start_with(app.mqtt_port, "device1", PASSWORD, &readings);
    // The outage falls in the middle of the six seconds the device publishes.
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    cluster.halt();
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    cluster.resume();
    let acked = device.finish(READINGS).await;

    let seen = app.reading_counts("device1").await;
    for payload in &acked {
        assert_eq!(seen.get(payload), Some(&1), "{payload}");
    }
    assert_eq!(seen.len(), READINGS, "nothing else was stored");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_lost_mid_run_makes_the_server_unready_and_it_recovers_by_itself() {
    if !on_postgres() {
        return;
    }
    let (mut cluster, app) = app_on_private_cluster().await;
    let producer = app.user("producer1", "producer").await;
    let r = app
        .post("/api/measurements", &producer, json!([{"n": 1}]))
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);

    cluster.halt();
    eventually(15, "/readyz turning 503", || async {
        app.readyz().await.0 == StatusCode::SERVICE_UNAVAILABLE
    })
    .await;
    let (_, body) = app.readyz().await;
    assert_eq!(body["status"], "unready", "{body}");
    assert_eq!(body["dependencies"]["database"]["state"], "down", "{body}");
    // Writes are refused with the documented error, not a 500 and not a hang.
    let r = app
        .post("/api/measurements", &producer, json!([{"n": 2}]))
        .await;
    assert_error(r, StatusCode::SERVICE_UNAVAILABLE, "unavailable").await;
    let r = app.login("producer1", PASSWORD).await;
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);

    cluster.resume();
    eventually(30, "/readyz turning 200 again", || async {
        app.readyz().await.0 == StatusCode::OK
    })
    .await;
    assert_eq!(
        app.readyz().await.1["dependencies"]["database"]["state"],
        "up"
    );
    // The session from before the outage still works, and nothing stored was lost.
    let r = app
        .post("/api/measurements", &producer, json!([{"n": 3}]))
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(
        stored_payloads(&app, &producer).await,
        vec![json!({"n": 1}), json!({"n": 3})]
    );

    // The change listener reconnected: a reading another process stores reaches a live
    // stream on this server.
    let stream = app
        .client
        .get(app.url("/api/measurements/stream"))
        .bearer_auth(&producer)
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), StatusCode::OK);
    let other = bal_scd::connect(&cluster.url("bal"), &bal_scd::testing::options())
        .await
        .unwrap();
    let topic: bal_core::Topic = "platone/producer1".parse().unwrap();
    let writer = tokio::spawn(async move {
        // The stream may still be opening: write until it has been read.
        for n in 4..40 {
            let m = bal_core::NewMeasurement::new(topic.clone(), format!("{{\"n\":{n}}}").into());
            other.insert_measurements(&[m]).await.unwrap();
            tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        }
    });
    let events = read_events(stream, std::time::Duration::from_secs(10), |name, _| {
        name == "measurement"
    })
    .await;
    writer.abort();
    assert!(
        events.iter().any(|(name, _)| name == "measurement"),
        "a reading stored by another process arrived: {events:?}"
    );
    app.stop().await;
}
