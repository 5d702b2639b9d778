//! Shared by the ledger's tests: a fresh SCD, users, and anvil.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use alloy_signer_local::PrivateKeySigner;
use bal_core::{Actor, NewMeasurement, Role, Subscription, Topic, Username, WalletAddress};
use bal_scd::{NewUser, SharedStore};
use chrono::Utc;

/// anvil's first two dev accounts (the well-known "test test ... junk" mnemonic).
pub const ANVIL_KEY_0: &str = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80";
pub const ANVIL_KEY_1: &str = "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d";

/// A fresh SCD on the backend `BAL_TEST_DATABASE` names.
pub struct Db {
    pub store: SharedStore,
    pub database: bal_scd::testing::TestDatabase,
}

impl Db {
    /// The same database opened again, as a restarted process would.
    pub async fn reopen(&self) -> SharedStore {
        self.database.store().await
    }
}

pub async fn db() -> Db {
    let database = bal_scd::testing::TestDatabase::new().await;
    let store = database.store().await;
    Db { store, database }
}

pub fn signer(hex: &str) -> PrivateKeySigner {
    hex.parse().unwrap()
}

pub fn name(n: &str) -> Username {
    Username::parse(n).unwrap()
}

pub async fn user(store: &SharedStore, n: &str, role: Role) {
    let wallet = PrivateKeySigner::random().address();
    store
        .create_user(
            NewUser {
                username: name(n),
                role,
                password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into(),
                wallet: WalletAddress::parse(&wallet.to_checksum(None)).unwrap(),
                account: "{}".into(),
                broker_secret: None,
            },
            &Actor::System,
            Utc::now(),
        )
        .await
        .unwrap();
}

/// Stores `n` measurements of `producer`; returns their ids.
pub async fn measurements(store: &SharedStore, producer: &str, n: usize) -> Vec<i64> {
    let topic = Topic::parse(&format!("platone/{producer}/meter")).unwrap();
    let batch: Vec<NewMeasurement> = (0..n)
        .map(|i| NewMeasurement::new(topic.clone(), format!(r#"{{"p":{i}}}"#).into_bytes()))
        .collect();
    store.insert_measurements(&batch).await.unwrap()
}

/// A consumer asks for `producer`'s data and the producer accepts: two audit entries.
pub async fn grant(store: &SharedStore, consumer: &str, producer: &str) {
    let topic = Topic::parse(&format!("platone/{producer}")).unwrap();
    let s = store
        .request_subscription(Subscription::request(name(consumer), &topic, Utc::now()))
        .await
        .unwrap();
    store
        .decide(
            s.id,
            &bal_core::GrantAction::Accept { expires_at: None },
            &Actor::User(name(producer)),
            Utc::now(),
        )
        .await
        .unwrap();
}

/// anvil, from the npm package `@foundry-rs/anvil-linux-amd64` (`contracts/`'s `npm ci`), or
/// `BAL_TEST_ANVIL`. Missing anvil fails the test: these tests never skip.
pub fn anvil_binary() -> PathBuf {
    if let Ok(p) = std::env::var("BAL_TEST_ANVIL") {
        return p.into();
    }
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../contracts/node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil");
    assert!(
        p.exists(),
        "anvil not found at {}: run `npm ci` in contracts/ (or set BAL_TEST_ANVIL)",
        p.display()
    );
    p
}

/// A running anvil on a free port; killed on drop.
pub struct Anvil {
    child: Child,
    pub url: String,
}

impl Drop for Anvil {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub async fn anvil() -> Anvil {
    // HTTP clients built without an explicit TLS provider use the process default, as `bal`
    // sets it.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(anvil_binary())
        .args([
            "--port",
            &port.to_string(),
            "--host",
            "127.0.0.1",
            "--silent",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("cannot start anvil");
    let anvil = Anvil {
        child,
        url: format!("http://127.0.0.1:{port}"),
    };
    let client = reqwest::Client::new();
    for _ in 0..100 {
        let up = client
            .post(&anvil.url)
            .json(&serde_json::json!({"jsonrpc":"2.0","id":1,"method":"eth_chainId","params":[]}))
            .send()
            .await;
        if up.is_ok() {
            return anvil;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("anvil did not start on {}", anvil.url);
}
