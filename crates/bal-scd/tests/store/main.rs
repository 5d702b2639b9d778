//! The store's own guarantees, below the API, on the backend `BAL_TEST_DATABASE` names
//! (SQLite by default; the test command runs every suite on both): constraints, atomicity,
//! the append-only audit log, and the races the trait docs promise to survive. Races are run
//! with two pools on one database standing for two processes (on SQLite they queue on the file
//! lock; on PostgreSQL on row locks).

mod accounts;
mod certification;
mod grants;
mod measurements;
mod schema;
mod setpoints;

use bal_core::{Actor, GrantAction, Role, Subscription, SubscriptionStatus, Topic, Username};
use bal_scd::testing::TestDatabase;
use bal_scd::{
    AuditQuery, Backend, CERTIFY_LEASE, Change, ItemKind, MeasurementQuery, NewBatch, NewUser,
    SharedStore, StoreError, SubscriptionQuery,
};
use chrono::{Duration, Utc};

struct Db {
    store: SharedStore,
    database: TestDatabase,
}

async fn db() -> Db {
    let database = TestDatabase::new().await;
    let store = database.store().await;
    Db { store, database }
}

/// Runs one statement directly on the database, as an intruder or an operator would.
async fn exec(db: &Db, sql: &str) -> Result<(), sqlx::Error> {
    use sqlx::Connection;
    let sql = sqlx::AssertSqlSafe(sql.to_owned());
    match db.database.backend {
        Backend::Sqlite => {
            let mut c = sqlx::SqliteConnection::connect(&db.database.url).await?;
            sqlx::query(sql).execute(&mut c).await.map(drop)
        }
        Backend::Postgres => {
            let mut c = sqlx::PgConnection::connect(&db.database.url).await?;
            sqlx::query(sql).execute(&mut c).await.map(drop)
        }
    }
}

async fn scalar_text(db: &Db, sql: &str) -> Option<String> {
    use sqlx::Connection;
    let sql = sqlx::AssertSqlSafe(sql.to_owned());
    match db.database.backend {
        Backend::Sqlite => {
            let mut c = sqlx::SqliteConnection::connect(&db.database.url)
                .await
                .unwrap();
            sqlx::query_scalar(sql).fetch_one(&mut c).await.unwrap()
        }
        Backend::Postgres => {
            let mut c = sqlx::PgConnection::connect(&db.database.url).await.unwrap();
            sqlx::query_scalar(sql).fetch_one(&mut c).await.unwrap()
        }
    }
}

fn name(n: &str) -> Username {
    Username::parse(n).unwrap()
}

/// A distinct, valid wallet per user, derived from its name.
fn new_user(n: &str, role: Role) -> NewUser {
    let mut bytes = [0u8; 20];
    for (i, b) in n.bytes().enumerate() {
        bytes[i % 20] ^= b;
    }
    NewUser {
        username: name(n),
        role,
        password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into(),
        wallet: bal_core::WalletAddress::parse(&format!("0x{}", hex(&bytes))).unwrap(),
        account: "{}".into(),
        broker_secret: None,
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

async fn seed(store: &SharedStore) {
    for (n, r) in [
        ("admin", Role::Admin),
        ("prod", Role::Producer),
        ("cons", Role::Consumer),
    ] {
        store
            .create_user(new_user(n, r), &Actor::System, Utc::now())
            .await
            .unwrap();
    }
}

fn request(now: chrono::DateTime<Utc>) -> Subscription {
    Subscription::request(name("cons"), &Topic::parse("platone/prod").unwrap(), now)
}

/// `cons` asks for `prod`'s data now.
async fn requested(store: &SharedStore) -> Subscription {
    store
        .request_subscription(request(Utc::now()))
        .await
        .unwrap()
}

/// `consumer` asks for `prod`'s data and `prod` refuses: two audit entries.
async fn refused(store: &SharedStore, consumer: &str) {
    let topic = Topic::parse("platone/prod").unwrap();
    let request = Subscription::request(name(consumer), &topic, Utc::now());
    let sub = store.request_subscription(request).await.unwrap();
    let p = Actor::User(name("prod"));
    store
        .decide(sub.id, &GrantAction::Refuse, &p, Utc::now())
        .await
        .unwrap();
}

/// The latest `limit` audit entries.
async fn audit(store: &SharedStore, limit: u32) -> Vec<bal_scd::AuditEntry> {
    let query = AuditQuery {
        limit,
        ..Default::default()
    };
    store.audit_log(&query).await.unwrap()
}

fn reading(payload: &str, origin: Option<(i64, bool)>) -> bal_core::NewMeasurement {
    let m = bal_core::NewMeasurement::new(
        Topic::parse("platone/prod").unwrap(),
        payload.as_bytes().to_vec(),
    );
    match origin {
        Some((origin, dup)) => m.with_origin(origin, dup),
        None => m,
    }
}

/// Writes a batch of everything pending, as the certifier does (the root is not checked by
/// the store); `None` when nothing is pending.
async fn batch_pending(store: &SharedStore) -> Option<bal_scd::Batch> {
    let pending = store.pending_items(500).await.unwrap();
    if pending.items.is_empty() {
        return None;
    }
    let leaves: Vec<_> = pending.items.iter().map(|i| i.values.leaf()).collect();
    let root = alloy_primitives::keccak256(leaves.iter().flat_map(|l| l.0).collect::<Vec<u8>>());
    let batch = NewBatch::of(&pending, leaves, root);
    let fence = store
        .acquire_lease(
            CERTIFY_LEASE,
            "batch-test",
            std::time::Duration::from_secs(60),
        )
        .await
        .unwrap()
        .expect("only this holder takes the lease here");
    match store.create_batch(&batch, &fence).await {
        Ok(b) => Some(b),
        // Another certifier got there first: its batch covers these.
        Err(StoreError::Conflict(_)) => None,
        Err(e) => panic!("{e}"),
    }
}
