//! `spawn_app()` and the typed request helpers every test uses.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;

use bal::app::Application;
use bal::settings::{Secret, Settings};
use reqwest::{Method, Response, StatusCode};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use serde_json::{Value, json};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::mosquitto_server::MosquittoServer;

pub const ADMIN_PASSWORD: &str = "admin-password-for-tests";
pub const PASSWORD: &str = "a-good-long-password";

/// Which MQTT broker a test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Broker {
    /// The broker inside `bal`.
    Embedded,
    /// A real Mosquitto with Dynamic Security, started for the test.
    Mosquitto,
}

pub struct TestApp {
    pub base: String,
    pub broker: Broker,
    /// The plain and TLS MQTT ports devices use (the embedded broker's, or Mosquitto's).
    pub mqtt_port: u16,
    pub mqtts_port: u16,
    /// The CA of the MQTT over TLS certificate.
    pub mqtt_ca: Option<PathBuf>,
    pub mosquitto: Option<MosquittoServer>,
    pub client: reqwest::Client,
    pub admin: String,
    pub data_dir: PathBuf,
    pub settings: Settings,
    stop: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<anyhow::Result<()>>>,
    _dir: Option<tempfile::TempDir>,
}

/// Settings for a test: its own data folder, port 0, a known admin password.
pub fn test_settings(data_dir: &Path) -> Settings {
    let mut s = Settings {
        data_dir: data_dir.to_owned(),
        admin_password: Some(serde_json::from_value::<Secret>(json!(ADMIN_PASSWORD)).unwrap()),
        ..Settings::default()
    };
    s.http.listen = "127.0.0.1:0".parse().unwrap();
    s.mqtt.listen = Some("127.0.0.1:0".parse().unwrap());
    s.mqtt.listen_tls = Some("127.0.0.1:0".parse().unwrap());
    // No load balancer to tell: stop at once.
    s.http.shutdown_delay_ms = 0;
    if bal_scd::testing::backend() == bal_scd::Backend::Postgres {
        // A database of its own, named in the data folder so that every `bal` command run on
        // this folder (see `bal_cli`) and every restart use it too.
        let url = match std::fs::read_to_string(data_dir.join(DATABASE_URL_FILE)) {
            Ok(url) => url,
            Err(_) => {
                let url = bal_scd::testing::create_postgres_database();
                std::fs::create_dir_all(data_dir).unwrap();
                std::fs::write(data_dir.join(DATABASE_URL_FILE), &url).unwrap();
                url
            }
        };
        s.database.url = Some(serde_json::from_value::<Secret>(json!(url)).unwrap());
        s.database.max_connections = 4;
    }
    s
}

/// Where `test_settings` notes the PostgreSQL database of a data folder.
const DATABASE_URL_FILE: &str = "test-database-url";

/// The `bal` binary on `data_dir`, with the same database as the servers on it.
pub fn bal_cli(data_dir: &Path) -> std::process::Command {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_bal"));
    cmd.arg("--data-dir").arg(data_dir);
    match std::fs::read_to_string(data_dir.join(DATABASE_URL_FILE)) {
        Ok(url) => cmd.env("BAL_DATABASE__URL", url),
        Err(_) => cmd.env_remove("BAL_DATABASE__URL"),
    };
    cmd
}

/// `bal serve` on `data_dir` with its listeners on these loopback ports and the tests' admin
/// password: a server of its own process, for tests that kill it.
pub fn bal_serve(data_dir: &Path, http: u16, mqtt: u16, mqtts: u16) -> std::process::Command {
    let mut cmd = bal_cli(data_dir);
    cmd.arg("serve")
        .env("BAL_HTTP__LISTEN", format!("127.0.0.1:{http}"))
        .env("BAL_MQTT__LISTEN", format!("127.0.0.1:{mqtt}"))
        .env("BAL_MQTT__LISTEN_TLS", format!("127.0.0.1:{mqtts}"))
        .env("BAL_ADMIN_PASSWORD", ADMIN_PASSWORD)
        .env("RUST_LOG", "error");
    cmd
}

/// A client that trusts exactly the CA at `ca` (and no public roots).
pub fn client_trusting(ca: &Path) -> reqwest::Client {
    client_builder_trusting(ca).build().unwrap()
}

/// A client builder whose TLS trusts only the CA at `ca`.
pub fn client_builder_trusting(ca: &Path) -> reqwest::ClientBuilder {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    reqwest::Client::builder().use_preconfigured_tls(tls)
}

/// A finished command's exit code, and its stdout and stderr as one text.
pub fn code_and_text(out: &std::process::Output) -> (Option<i32>, String) {
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), text)
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

pub async fn spawn_app_with(configure: impl FnOnce(&mut Settings)) -> TestApp {
    spawn_app_on(Broker::Embedded, configure).await
}

/// An app on the given broker; with Mosquitto, a broker of its own is started first.
pub async fn spawn_app_on(broker: Broker, configure: impl FnOnce(&mut Settings)) -> TestApp {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = test_settings(dir.path());
    configure(&mut settings);
    let mosquitto = (broker == Broker::Mosquitto).then(|| {
        let m = MosquittoServer::start(settings.ingest.max_payload_bytes);
        m.configure(&mut settings);
        m
    });
    let mut app = start(settings).await;
    app._dir = Some(dir);
    if let Some(m) = mosquitto {
        app.broker = Broker::Mosquitto;
        app.mqtt_port = m.port;
        app.mqtts_port = m.tls_port;
        app.mqtt_ca = Some(m.ca.clone());
        app.mosquitto = Some(m);
    }
    app
}

/// reqwest's own TLS set-up (plain clients) needs a process-wide rustls provider; the BAL
/// itself never relies on one.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Starts the application with exactly these settings (the data folder is the caller's).
pub async fn start(settings: Settings) -> TestApp {
    install_crypto_provider();
    let app = Application::build(settings.clone())
        .await
        .expect("app builds");
    let base = app.base_url();
    let mqtt_port = app.mqtt_addr().map_or(0, |a| a.port());
    let mqtts_port = app.mqtts_addr().map_or(0, |a| a.port());
    let ca = app.ca_path();
    let client = match app.ca_path() {
        Some(ca) => client_trusting(&ca),
        None => reqwest::Client::new(),
    };
    let (stop, stopped) = oneshot::channel();
    let server = tokio::spawn(app.run_until(async {
        let _ = stopped.await;
    }));
    let mut test = TestApp {
        base,
        broker: Broker::Embedded,
        mqtt_port,
        mqtts_port,
        mqtt_ca: ca,
        mosquitto: None,
        client,
        admin: String::new(),
        data_dir: settings.data_dir.clone(),
        settings,
        stop: Some(stop),
        server: Some(server),
        _dir: None,
    };
    test.admin = test.token("admin", ADMIN_PASSWORD).await;
    test
}

impl TestApp {
    /// Shuts the server down gracefully and waits for it; the data folder stays.
    pub async fn stop(mut self) -> Option<tempfile::TempDir> {
        self.begin_stop();
        self.server.take().unwrap().await.unwrap().unwrap();
        self._dir.take()
    }

    /// `GET /readyz`: its status and JSON body.
    pub async fn readyz(&self) -> (StatusCode, Value) {
        let r = self.client.get(self.url("/readyz")).send().await.unwrap();
        let status = r.status();
        (status, r.json().await.unwrap())
    }

    /// Tells the server to shut down (as SIGTERM does) without waiting for it.
    pub fn begin_stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn request(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Response {
        let mut req = self.client.request(method, self.url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        req.send().await.expect("request sent")
    }

    pub async fn get(&self, path: &str, token: &str) -> Response {
        self.request(Method::GET, path, Some(token), None).await
    }

    pub async fn post(&self, path: &str, token: &str, body: Value) -> Response {
        self.request(Method::POST, path, Some(token), Some(body))
            .await
    }

    /// A POST without a body, as the decision routes take.
    pub async fn post_empty(&self, path: &str, token: &str) -> Response {
        self.request(Method::POST, path, Some(token), None).await
    }

    pub async fn put(&self, path: &str, token: &str, body: Value) -> Response {
        self.request(Method::PUT, path, Some(token), Some(body))
            .await
    }

    pub async fn delete(&self, path: &str, token: &str) -> Response {
        self.request(Method::DELETE, path, Some(token), None).await
    }

    pub async fn login(&self, username: &str, password: &str) -> Response {
        let body = json!({ "username": username, "password": password });
        self.request(Method::POST, "/api/auth/login", None, Some(body))
            .await
    }

    pub async fn token(&self, username: &str, password: &str) -> String {
        let r = self.login(username, password).await;
        assert_eq!(r.status(), StatusCode::OK, "login as {username}");
        let body: Value = r.json().await.unwrap();
        body["token"].as_str().unwrap().to_owned()
    }

    /// Creates a user as admin and returns its JSON view.
    pub async fn create_user(&self, username: &str, role: &str) -> Value {
        let body = json!({ "username": username, "password": PASSWORD, "role": role });
        let r = self.post("/api/users", &self.admin, body).await;
        assert_eq!(r.status(), StatusCode::CREATED, "create {username}");
        r.json().await.unwrap()
    }

    /// Creates a user and logs it in.
    pub async fn user(&self, username: &str, role: &str) -> String {
        self.create_user(username, role).await;
        self.token(username, PASSWORD).await
    }

    /// The consumer requests the producer's topic and the producer accepts; returns the
    /// subscription id.
    pub async fn grant(&self, consumer: &str, producer_token: &str, producer: &str) -> String {
        let id = self.request_subscription(consumer, producer).await;
        let r = self
            .post_empty(&format!("/api/subscriptions/{id}/accept"), producer_token)
            .await;
        assert_eq!(r.status(), StatusCode::OK, "accept");
        id
    }

    /// How often each text payload of `producer` is stored (read as admin).
    pub async fn reading_counts(&self, producer: &str) -> std::collections::HashMap<String, usize> {
        let mut counts = std::collections::HashMap::new();
        for (_, text) in readings_of(&self.client, &self.base, &self.admin, producer).await {
            *counts.entry(text).or_default() += 1;
        }
        counts
    }

    /// The consumer requests the producer's topic; returns the subscription id.
    /// `POST /api/subscriptions` for `topic`, as `consumer`: the response, whatever it is.
    pub async fn try_subscribe(&self, consumer: &str, topic: &str) -> Response {
        self.post("/api/subscriptions", consumer, json!({ "topic": topic }))
            .await
    }

    pub async fn request_subscription(&self, consumer: &str, producer: &str) -> String {
        let r = self
            .try_subscribe(consumer, &format!("platone/{producer}"))
            .await;
        assert_eq!(r.status(), StatusCode::CREATED);
        let v: Value = r.json().await.unwrap();
        v["id"].as_str().unwrap().to_owned()
    }
}

/// Asserts the status and the error code of an error response; returns its message.
pub async fn assert_error(r: Response, status: StatusCode, code: &str) -> String {
    assert_eq!(r.status(), status, "status");
    let body: Value = r.json().await.expect("a JSON error body");
    assert_eq!(body["error"], code, "error code in {body}");
    body["message"].as_str().expect("a message").to_owned()
}

/// The JSON body of a response with the expected status.
pub async fn json_ok(r: Response, status: StatusCode) -> Value {
    assert_eq!(r.status(), status);
    r.json().await.unwrap()
}

/// Waits until `check` holds, up to `secs` seconds.
pub async fn eventually<F, Fut>(secs: u64, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..secs * 10 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{what} did not happen within {secs} s");
}

/// Reads server-sent events until `until` returns true on an event name and data, or time runs
/// out; returns every (event, data) seen.
pub async fn read_events(
    response: reqwest::Response,
    limit: Duration,
    until: impl Fn(&str, &str) -> bool,
) -> Vec<(String, String)> {
    let mut stream = response.bytes_stream();
    let mut buffer = String::new();
    let mut events = Vec::new();
    let deadline = tokio::time::Instant::now() + limit;
    while let Ok(Some(chunk)) = tokio::time::timeout_at(deadline, stream.next()).await {
        buffer.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
        while let Some(end) = buffer.find("\n\n") {
            let block: String = buffer.drain(..end + 2).collect();
            let mut name = String::new();
            let mut data = String::new();
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("event:") {
                    name = v.trim().to_owned();
                } else if let Some(v) = line.strip_prefix("data:") {
                    data.push_str(v.trim());
                }
            }
            if name.is_empty() {
                continue;
            }
            let done = until(&name, &data);
            events.push((name, data));
            if done {
                return events;
            }
        }
    }
    events
}

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Every reading of `producer` on the server at `base`, oldest first: (id, text payload).
pub async fn readings_of(
    client: &reqwest::Client,
    base: &str,
    token: &str,
    producer: &str,
) -> Vec<(i64, String)> {
    let mut out = Vec::new();
    let mut cursor = String::new();
    loop {
        let url = format!("{base}/api/measurements?producer={producer}&limit=1000{cursor}");
        let r = client.get(url).bearer_auth(token).send().await.unwrap();
        let page = json_ok(r, StatusCode::OK).await;
        for m in page["items"].as_array().unwrap() {
            let text = m["payload_text"].as_str().unwrap_or_default().to_owned();
            out.push((m["id"].as_i64().unwrap(), text));
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = format!("&cursor={c}"),
            None => return out,
        }
    }
}
