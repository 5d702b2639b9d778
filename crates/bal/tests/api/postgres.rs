//! What only PostgreSQL deployments must prove: start-up errors that name `database.url`, and a
//! server running as a role that does not own the tables. Run by the PostgreSQL pass of the
//! test command (`BAL_TEST_DATABASE=postgres`); the SQLite pass skips them, so that it needs no
//! PostgreSQL.

use std::process::Command;

use reqwest::StatusCode;
use serde_json::json;
use sqlx::Connection;

use crate::helpers::*;

fn on_postgres() -> bool {
    bal_scd::testing::backend() == bal_scd::Backend::Postgres
}

/// `bal serve` with `database.url` set to `url`: its exit code and what it printed.
fn serve_with(url: &str) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_bal"))
        .args(["--data-dir", &dir.path().display().to_string(), "serve"])
        .env("BAL_DATABASE__URL", url)
        .env("BAL_DATABASE__ACQUIRE_TIMEOUT_MS", "2000")
        .env("BAL_HTTP__LISTEN", "127.0.0.1:0")
        .env("BAL_MQTT__LISTEN", "127.0.0.1:0")
        .env("BAL_MQTT__LISTEN_TLS", "127.0.0.1:0")
        .env("BAL_ADMIN_PASSWORD", ADMIN_PASSWORD)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), text)
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
    let id = app.request_subscription(&consumer, "producer1").await;
    let r = app
        .post_empty(&format!("/api/subscriptions/{id}/accept"), &producer)
        .await;
    assert_eq!(r.status(), StatusCode::OK);
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
