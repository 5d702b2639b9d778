//! Shared by the ledger's tests: a fresh SCD, users, and anvil.
#![allow(dead_code)]

use alloy_signer_local::PrivateKeySigner;
use bal_core::{Actor, NewMeasurement, Role, Subscription, Topic, Username, WalletAddress};
use bal_ledger::embedded::{DEFAULT_CHAIN_ID, EmbeddedChain};
use bal_scd::{NewUser, SharedStore};
use chrono::Utc;

#[allow(unused_imports)] // each test binary uses its own part
pub use bal_ledger::testing::{ANVIL_KEY_0, ANVIL_KEY_1, Anvil};

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

/// anvil on a free port.
pub async fn anvil() -> Anvil {
    Anvil::start().await
}

/// The embedded chain on `store` (opened on the test database at `url`, as the application
/// opens it), operated by anvil's first key.
pub async fn embedded_chain(store: &SharedStore, url: &str) -> EmbeddedChain {
    EmbeddedChain::open(&**store, url, signer(ANVIL_KEY_0), DEFAULT_CHAIN_ID)
        .await
        .unwrap()
}
