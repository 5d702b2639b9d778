use std::net::TcpListener;

use bal::app::Application;
use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::*;

#[tokio::test]
async fn health_and_readiness_answer_without_a_token() {
    let app = spawn_app().await;
    let r = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(r.json::<Value>().await.unwrap()["status"], "ok");
    let r = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.headers().contains_key("x-request-id"));
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["status"], "ready", "{body}");
    let database = &body["dependencies"]["database"];
    assert_eq!(database["state"], "up", "{body}");
    let since = database["since"].as_str().unwrap();
    assert!(
        chrono::DateTime::parse_from_rfc3339(since).is_ok(),
        "{body}"
    );
    // `since` is when the state last changed, not when it was last checked.
    let (_, again) = app.readyz().await;
    assert_eq!(again["dependencies"]["database"]["since"], since);
}

#[tokio::test]
async fn readiness_lists_every_dependency_and_turns_503_as_soon_as_shutdown_begins() {
    let mut app = spawn_app_with(|s| s.http.shutdown_delay_ms = 3000).await;
    let (_, body) = app.readyz().await;
    for dependency in ["database", "broker", "chain"] {
        assert_eq!(body["dependencies"][dependency]["state"], "up", "{body}");
    }
    app.begin_stop();
    // Still served during the delay, but no longer ready.
    eventually(2, "/readyz turning 503", || async {
        app.readyz().await.0 == StatusCode::SERVICE_UNAVAILABLE
    })
    .await;
    let (_, body) = app.readyz().await;
    assert_eq!(body["status"], "shutting_down", "{body}");
    assert_eq!(body["dependencies"]["database"]["state"], "up", "{body}");
    app.stop().await;
}

#[tokio::test]
async fn the_openapi_document_describes_every_route_and_swagger_ui_is_served() {
    let app = spawn_app().await;
    let r = app
        .client
        .get(app.url("/api/openapi.json"))
        .send()
        .await
        .unwrap();
    let doc = json_ok(r, StatusCode::OK).await;
    assert_eq!(doc["openapi"], "3.1.0");
    let paths = doc["paths"].as_object().unwrap();
    for (path, method) in [
        ("/api/auth/login", "post"),
        ("/api/auth/logout", "post"),
        ("/api/me", "get"),
        ("/api/users", "get"),
        ("/api/users", "post"),
        ("/api/users/{username}", "get"),
        ("/api/users/{username}", "delete"),
        ("/api/users/{username}/password", "put"),
        ("/api/producers", "get"),
        ("/api/subscriptions", "get"),
        ("/api/subscriptions", "post"),
        ("/api/subscriptions/{id}", "get"),
        ("/api/subscriptions/{id}/accept", "post"),
        ("/api/subscriptions/{id}/refuse", "post"),
        ("/api/subscriptions/{id}/revoke", "post"),
        ("/api/subscriptions/{id}/cancel", "post"),
        ("/api/audit", "get"),
        ("/healthz", "get"),
        ("/readyz", "get"),
    ] {
        assert!(
            paths.get(path).and_then(|p| p.get(method)).is_some(),
            "{method} {path}"
        );
    }
    assert!(doc["components"]["securitySchemes"]["bearer"].is_object());

    let ui = app.client.get(app.url("/api/docs/")).send().await.unwrap();
    assert_eq!(ui.status(), StatusCode::OK);
    assert!(ui.text().await.unwrap().contains("swagger"));
}

#[tokio::test]
async fn unknown_routes_and_methods_get_json_errors() {
    let app = spawn_app().await;
    let r = app.get("/api/nothing-here", &app.admin).await;
    assert_error(r, StatusCode::NOT_FOUND, "not_found").await;
    let r = app.delete("/api/me", &app.admin).await;
    assert_error(r, StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed").await;
}

#[tokio::test]
async fn the_listener_speaks_only_tls() {
    let app = spawn_app().await;
    install_crypto_provider();
    let plain = app.base.replace("https://", "http://");
    let r = reqwest::Client::new()
        .get(format!("{plain}/healthz"))
        .send()
        .await;
    assert!(r.is_err() || !r.unwrap().status().is_success());
    // A client that does not trust the generated CA refuses the server.
    let stranger = reqwest::Client::builder()
        .use_preconfigured_tls(
            rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth(),
        )
        .build()
        .unwrap();
    assert!(stranger.get(app.url("/healthz")).send().await.is_err());
}

#[tokio::test]
async fn a_restart_keeps_users_certificate_and_wallets() {
    let app = spawn_app().await;
    let before = app.create_user("producer1", "producer").await;
    let settings = app.settings.clone();
    let ca = std::fs::read(app.data_dir.join("tls/ca.pem")).unwrap();
    let dir = app.stop().await;

    let app = start(settings).await;
    assert_eq!(std::fs::read(app.data_dir.join("tls/ca.pem")).unwrap(), ca);
    let token = app.token("producer1", PASSWORD).await;
    let me = json_ok(app.get("/api/me", &token).await, StatusCode::OK).await;
    assert_eq!(me["wallet"], before["wallet"]);
    // The admin was created once; the restart did not create another or reset its password.
    let audit = json_ok(
        app.get("/api/audit?actor=@system", &app.admin).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(audit["entries"].as_array().unwrap().len(), 1);
    drop(dir);
}

#[tokio::test]
async fn plain_http_is_refused_off_loopback_and_served_on_loopback() {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = test_settings(dir.path());
    settings.http.tls = false;
    settings.http.listen = "0.0.0.0:0".parse().unwrap();
    let err = Application::build(settings.clone()).await.err().unwrap();
    assert!(err.to_string().contains("http.tls = false"), "{err}");

    settings.http.listen = "127.0.0.1:0".parse().unwrap();
    let app = start(settings).await;
    assert!(app.base.starts_with("http://"));
    assert_eq!(
        app.get("/api/me", &app.admin).await.status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn a_port_in_use_is_a_clear_start_up_error() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut settings = test_settings(dir.path());
    settings.http.listen = taken.local_addr().unwrap();
    let err = Application::build(settings.clone()).await.err().unwrap();
    let text = format!("{err:#}");
    assert!(text.contains("http.listen"), "{text}");

    settings.http.listen = "127.0.0.1:0".parse().unwrap();
    settings.mqtt.listen = Some(taken.local_addr().unwrap());
    let err = Application::build(settings).await.err().unwrap();
    let text = format!("{err:#}");
    assert!(
        text.contains("mqtt.listen") && text.contains("BAL_MQTT__LISTEN"),
        "{text}"
    );
}

/// Waits until something accepts connections on `port`.
fn wait_listening(port: u16, child: &mut std::process::Child) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Ok(Some(status)) = child.try_wait() {
            let mut err = String::new();
            std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
            panic!("bal serve exited with {status} before listening on {port}: {err}");
        }
        assert!(
            std::time::Instant::now() < deadline,
            "nothing listens on {port}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

#[test]
fn after_kill_9_with_devices_connected_serve_binds_its_ports_again_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let (http, mqtt, mqtts) = (free_port(), free_port(), free_port());
    let serve = || {
        bal_serve(dir.path(), http, mqtt, mqtts)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    for round in 0..3 {
        let mut child = serve();
        for port in [http, mqtt, mqtts] {
            wait_listening(port, &mut child);
        }
        if round == 0 {
            // SO_REUSEADDR, never SO_REUSEPORT: a second server on the same ports still fails.
            let second = serve().wait_with_output().unwrap();
            assert_eq!(
                second.status.code(),
                Some(1),
                "a second bal serve must not start"
            );
            assert!(
                String::from_utf8_lossy(&second.stderr).contains("http.listen"),
                "{}",
                String::from_utf8_lossy(&second.stderr)
            );
        }
        // Devices connected when the server dies: their server-side sockets end in TIME_WAIT
        // on the server's ports once the devices see the connection drop and close it.
        let devices: Vec<std::net::TcpStream> = [mqtt, mqtt, mqtts, mqtts, http]
            .iter()
            .map(|port| std::net::TcpStream::connect(("127.0.0.1", *port)).unwrap())
            .collect();
        std::thread::sleep(std::time::Duration::from_millis(200));
        child.kill().unwrap();
        child.wait().unwrap();
        for mut device in devices {
            device
                .set_read_timeout(Some(std::time::Duration::from_secs(5)))
                .unwrap();
            let _ = std::io::Read::read_to_end(&mut device, &mut Vec::new());
        }
    }
    // The fourth start, at once, after the third kill.
    let mut child = serve();
    for port in [http, mqtt, mqtts] {
        wait_listening(port, &mut child);
    }
    child.kill().unwrap();
    child.wait().unwrap();
}

#[tokio::test]
async fn a_broken_database_gives_a_generic_500_and_the_server_stays_up() {
    let app = spawn_app().await;
    // Break the schema behind the server's back.
    let url = app.settings.database_url();
    let break_it = "ALTER TABLE subscriptions RENAME TO subscriptions_gone";
    use sqlx::Connection;
    if url.starts_with("sqlite:") {
        let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
        sqlx::query(break_it).execute(&mut conn).await.unwrap();
    } else {
        let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
        sqlx::query(break_it).execute(&mut conn).await.unwrap();
    }
    let r = app.get("/api/subscriptions", &app.admin).await;
    assert_eq!(r.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let body = r.text().await.unwrap();
    assert_eq!(body, r#"{"error":"internal","message":"internal error"}"#);
    // Everything that does not need the broken table still works.
    assert_eq!(
        app.get("/api/me", &app.admin).await.status(),
        StatusCode::OK
    );
}
