//! `kill -9` at random moments, under load: a device we did not write (paho-mqtt, QoS 1, a
//! persistent session, reconnecting by itself) publishes while a backend uploads batches over
//! HTTPS, and `bal serve` is killed and restarted on the same ports and data again and again.
//! Afterwards every acknowledged reading is stored exactly once, every upload that got its 201
//! is there whole (and no upload is there in part), every restart served within 2 s, and every
//! reading is in exactly one anchored batch, with no root twice.

use std::collections::{HashMap, HashSet};
use std::process::Stdio;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::process::{Child, Command};

use crate::helpers::{
    ADMIN_PASSWORD, PASSWORD, bal_serve, client_trusting, eventually, free_port,
    install_crypto_provider, readings_of,
};
use crate::paho::PahoDevice;

const KILLS: usize = 20;
/// Readings the device publishes, and how fast: the kills happen while it publishes.
const READINGS: usize = 1200;
const RATE: u32 = 80;
/// Readings per HTTPS upload.
const UPLOAD: usize = 10;
/// How soon after a restart the server must serve again (the bound for supervisors).
const RESTART_BOUND: Duration = Duration::from_secs(2);

/// One `bal serve` process on fixed ports and one data folder, killed and started again.
struct Server {
    dir: tempfile::TempDir,
    http: u16,
    mqtt: u16,
    mqtts: u16,
    child: Option<Child>,
}

impl Server {
    fn spawn(&mut self) {
        let mut cmd = Command::from(bal_serve(self.dir.path(), self.http, self.mqtt, self.mqtts));
        let child = cmd
            .env("BAL_CERTIFY__BATCH_WINDOW_MS", "300")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("bal serve starts");
        self.child = Some(child);
    }

    fn url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.http)
    }

    /// Waits until the MQTT port accepts and `/readyz` answers 200; returns how long it took.
    async fn wait_serving(&mut self, started: Instant, client: &reqwest::Client) -> Duration {
        let deadline = started + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("bal serve exited with {status} while starting");
            }
            let mqtt_up = tokio::net::TcpStream::connect(("127.0.0.1", self.mqtt))
                .await
                .is_ok();
            if mqtt_up {
                let ready = client.get(self.url("/readyz")).send().await;
                if ready.is_ok_and(|r| r.status() == StatusCode::OK) {
                    return started.elapsed();
                }
            }
            assert!(Instant::now() < deadline, "bal serve did not start");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn kill(&mut self) {
        let mut child = self.child.take().unwrap();
        child.start_kill().unwrap(); // SIGKILL
        child.wait().await.unwrap();
    }
}

/// A small, seeded generator: the kill moments differ from run to run and the seed is printed,
/// so a failing schedule can be replayed (`BAL_TEST_CRASH_SEED`).
struct Moments(u64);

impl Moments {
    fn next_ms(&mut self, from: u64, to: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        from + (self.0 >> 33) % (to - from)
    }
}

/// Uploads batches of `UPLOAD` text readings until told to stop; returns the batches that got a
/// 201 (number → ids) and how many were tried.
async fn upload_until(
    client: reqwest::Client,
    url: String,
    token: String,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> (HashMap<usize, Vec<i64>>, usize) {
    let mut created = HashMap::new();
    let mut n = 0;
    while !*stop.borrow() {
        let body: Vec<String> = (0..UPLOAD).map(|k| format!("upload-{n}-{k}")).collect();
        let sent = client
            .post(&url)
            .bearer_auth(&token)
            .json(&body)
            .timeout(Duration::from_secs(5))
            .send()
            .await;
        if let Ok(r) = sent
            && r.status() == StatusCode::CREATED
            && let Ok(v) = r.json::<Value>().await
        {
            let ids = v["ids"].as_array().unwrap().iter();
            created.insert(n, ids.map(|i| i.as_i64().unwrap()).collect());
        }
        // Whatever the answer, the next upload is a new batch: one whose answer was lost may
        // or may not be stored, but never in part.
        n += 1;
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(50)) => {}
            _ = stop.changed() => {}
        }
    }
    (created, n)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_kill_9s_under_load_lose_no_acknowledged_reading_and_store_none_twice() {
    install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    // On the PostgreSQL pass, this makes the folder's own database, which every `bal` started
    // on the folder uses (see `bal_cli`).
    crate::helpers::test_settings(dir.path());
    let mut server = Server {
        dir,
        http: free_port(),
        mqtt: free_port(),
        mqtts: free_port(),
        child: None,
    };
    let seed = std::env::var("BAL_TEST_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    println!("crash schedule seed {seed} (BAL_TEST_CRASH_SEED)");
    let mut moments = Moments(seed);

    // The first start makes the data folder, its CA and the database.
    server.spawn();
    let ca = server.dir.path().join("tls/ca.pem");
    let plain = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .build()
        .unwrap();
    server.wait_serving(Instant::now(), &plain).await;
    let client = client_trusting(&ca);
    let login = |user: &'static str, password: &'static str| {
        let (client, url) = (client.clone(), server.url("/api/auth/login"));
        async move {
            let r = client
                .post(url)
                .json(&json!({ "username": user, "password": password }))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), StatusCode::OK, "login as {user}");
            r.json::<Value>().await.unwrap()["token"]
                .as_str()
                .unwrap()
                .to_owned()
        }
    };
    let admin = login("admin", ADMIN_PASSWORD).await;
    let r = client
        .post(server.url("/api/users"))
        .bearer_auth(&admin)
        .json(&json!({ "username": "device1", "password": PASSWORD, "role": "producer" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let producer = login("device1", PASSWORD).await;

    let device = PahoDevice::start(server.mqtt, "device1", PASSWORD, READINGS, RATE);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let uploader = tokio::spawn(upload_until(
        client.clone(),
        server.url("/api/measurements"),
        producer.clone(),
        stop_rx,
    ));

    let mut restarts = Vec::new();
    for _ in 0..KILLS {
        tokio::time::sleep(Duration::from_millis(moments.next_ms(150, 900))).await;
        server.kill().await;
        let started = Instant::now();
        server.spawn();
        restarts.push(server.wait_serving(started, &client).await);
    }
    let slowest = restarts.iter().max().unwrap();
    println!("restarts: {restarts:?}");
    assert!(
        *slowest <= RESTART_BOUND,
        "a restart took {slowest:?} to serve again (bound {RESTART_BOUND:?})"
    );

    // The device gets every reading acknowledged once the server stays up.
    let acked = device.finish(READINGS).await;
    stop_tx.send(true).unwrap();
    let (created, tried) = uploader.await.unwrap();
    assert!(
        created.len() >= 5,
        "too few uploads succeeded to mean anything: {} of {tried}",
        created.len()
    );

    let base = server.url("");
    let readings = readings_of(&client, &base, &admin, "device1").await;
    let mut count: HashMap<&str, usize> = HashMap::new();
    for (_, text) in &readings {
        *count.entry(text.as_str()).or_default() += 1;
    }
    for payload in &acked {
        assert_eq!(count.get(payload.as_str()), Some(&1), "{payload}");
    }
    let by_id: HashMap<i64, &str> = readings.iter().map(|(i, t)| (*i, t.as_str())).collect();
    for (n, ids) in &created {
        for (k, id) in ids.iter().enumerate() {
            assert_eq!(
                by_id.get(id).copied(),
                Some(format!("upload-{n}-{k}").as_str())
            );
        }
    }
    for n in 0..tried {
        let present = (0..UPLOAD)
            .filter(|k| count.contains_key(format!("upload-{n}-{k}").as_str()))
            .count();
        assert!(
            present == 0 || present == UPLOAD,
            "upload {n} is stored in part ({present} of {UPLOAD})"
        );
    }
    assert!(count.values().all(|c| *c == 1), "a reading stored twice");

    // Every reading ends up in exactly one anchored batch; no root is anchored twice.
    let total = readings.len() as u64;
    eventually(60, "every reading anchored", || async {
        let r = client
            .get(server.url("/api/certification/batches?limit=1000"))
            .bearer_auth(&admin)
            .send()
            .await
            .unwrap();
        let page: Value = r.json().await.unwrap();
        let batches = page["batches"].as_array().unwrap();
        let anchored: u64 = batches
            .iter()
            .filter(|b| b["status"] == "anchored")
            .map(|b| b["measurement_count"].as_u64().unwrap())
            .sum();
        let roots: HashSet<&str> = batches
            .iter()
            .map(|b| b["root"].as_str().unwrap())
            .collect();
        assert_eq!(roots.len(), batches.len(), "a root twice");
        assert!(anchored <= total, "more readings anchored than stored");
        anchored == total && batches.iter().all(|b| b["status"] == "anchored")
    })
    .await;
    println!(
        "{KILLS} kills; {} readings acknowledged and stored once; {} of {tried} uploads created; \
         slowest restart {slowest:?}",
        acked.len(),
        created.len()
    );
    server.kill().await;
}
