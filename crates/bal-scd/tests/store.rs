//! The store's own guarantees, below the API, on the backend `BAL_TEST_DATABASE` names
//! (SQLite by default; the test command runs every suite on both): constraints, atomicity,
//! the append-only audit log, and the races the trait docs promise to survive.

use bal_core::{Actor, GrantAction, Role, Subscription, SubscriptionStatus, Topic, Username};
use bal_scd::testing::TestDatabase;
use bal_scd::{
    AuditQuery, Backend, Change, ItemKind, MeasurementQuery, NewBatch, NewUser, SharedStore,
    StoreError, SubscriptionQuery,
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
            let mut c = sqlx::SqliteConnection::connect(&db.database.url).await.unwrap();
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

#[tokio::test]
async fn the_audit_log_refuses_edits_and_deletions() {
    let db = db().await;
    seed(&db.store).await;
    let mut refused = vec![
        "UPDATE audit_log SET actor = 'mallory'",
        "DELETE FROM audit_log",
    ];
    if db.database.backend == Backend::Postgres {
        refused.push("TRUNCATE audit_log");
    }
    for sql in refused {
        let err = exec(&db, sql).await.unwrap_err();
        assert!(err.to_string().contains("append-only"), "{sql}: {err}");
    }
    let entries = db
        .store
        .audit_log(&AuditQuery {
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(entries.len(), 3);
    assert!(entries.iter().all(|e| e.actor == Actor::System));
}

#[tokio::test]
async fn concurrent_requests_for_the_same_topic_leave_exactly_one_live() {
    let db = db().await;
    seed(&db.store).await;
    let store = db.store.clone();
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            store.request_subscription(request(Utc::now())).await
        }));
    }
    let mut ok = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => ok += 1,
            Err(StoreError::Conflict(_)) => {}
            Err(e) => panic!("unexpected {e}"),
        }
    }
    assert_eq!(ok, 1);
    let all = store
        .subscriptions(&SubscriptionQuery::default())
        .await
        .unwrap();
    assert_eq!(all.len(), 1);
}

#[tokio::test]
async fn a_refused_decision_writes_neither_the_change_nor_an_audit_entry() {
    let db = db().await;
    seed(&db.store).await;
    let sub = db
        .store
        .request_subscription(request(Utc::now()))
        .await
        .unwrap();
    let before = db
        .store
        .audit_log(&AuditQuery {
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap();
    let err = db
        .store
        .decide(
            sub.id,
            &GrantAction::Revoke,
            &Actor::User(name("prod")),
            Utc::now(),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Grant(_)));
    let after = db
        .store
        .audit_log(&AuditQuery {
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(before.len(), after.len());
    let stored = db.store.subscription(sub.id).await.unwrap().unwrap();
    assert_eq!(stored.status, SubscriptionStatus::Requested);
}

#[tokio::test]
async fn a_lapsed_grant_does_not_block_a_new_request() {
    let db = db().await;
    seed(&db.store).await;
    let t0 = Utc::now();
    let sub = db.store.request_subscription(request(t0)).await.unwrap();
    let until = t0 + Duration::seconds(10);
    let accept = GrantAction::Accept {
        expires_at: Some(until),
    };
    db.store
        .decide(sub.id, &accept, &Actor::User(name("prod")), t0)
        .await
        .unwrap();
    // Before the sweeper has run, a request after the expiry writes the expiry first.
    let later = until + Duration::seconds(1);
    db.store.request_subscription(request(later)).await.unwrap();
    let old = db.store.subscription(sub.id).await.unwrap().unwrap();
    assert_eq!(old.status, SubscriptionStatus::Expired);
    assert_eq!(old.decided_by, Some(Actor::System));
}

#[tokio::test]
async fn reopening_the_database_keeps_everything() {
    let db = db().await;
    seed(&db.store).await;
    let sub = db
        .store
        .request_subscription(request(Utc::now()))
        .await
        .unwrap();
    drop(db.store);
    let again = db.database.store().await;
    assert_eq!(again.users().await.unwrap().len(), 3);
    assert_eq!(again.subscription(sub.id).await.unwrap().unwrap(), sub);
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

#[tokio::test]
async fn a_batch_keeps_its_order_and_stores_a_matching_redelivery_once() {
    let db = db().await;
    seed(&db.store).await;
    let mut changes = db.store.changes();
    let batch = [
        reading("a", Some((7, false))),
        reading("b", None),
        // The redelivery of "a": same origin, same payload.
        reading("a", Some((7, true))),
        // Same origin reused for a different payload: a new message.
        reading("c", Some((7, true))),
        reading("d", None),
    ];
    let ids = db.store.insert_measurements(&batch).await.unwrap();
    assert_eq!(ids.len(), 5);
    assert_eq!(
        ids[2], ids[0],
        "the redelivery maps to the stored measurement"
    );
    assert!(ids[0] < ids[1] && ids[1] < ids[3] && ids[3] < ids[4]);
    for (i, payload) in [(0, "a"), (1, "b"), (3, "c"), (4, "d")] {
        let m = db.store.measurement(ids[i]).await.unwrap().unwrap();
        assert_eq!(
            m.payload,
            payload.as_bytes(),
            "id {} holds {payload}",
            ids[i]
        );
    }
    match changes.recv().await.unwrap() {
        bal_scd::Change::Measurements(stored) => {
            let payloads: Vec<&[u8]> = stored.iter().map(|m| &m.payload[..]).collect();
            assert_eq!(payloads, [&b"a"[..], b"b", b"c", b"d"]);
        }
        other => panic!("unexpected {other:?}"),
    }
    // A redelivery in a later batch is recognised too.
    let again = db
        .store
        .insert_measurements(&[reading("c", Some((7, true)))])
        .await
        .unwrap();
    assert_eq!(again, [ids[3]]);
}

#[tokio::test]
async fn reception_is_stamped_at_commit_and_never_goes_backwards() {
    let db = db().await;
    seed(&db.store).await;
    let before = Utc::now();
    let mut last = None;
    for i in 0..20 {
        let ids = db
            .store
            .insert_measurements(&[reading(&i.to_string(), None)])
            .await
            .unwrap();
        let m = db.store.measurement(ids[0]).await.unwrap().unwrap();
        assert!(m.received_at >= bal_core::millis(before));
        if let Some(prev) = last {
            assert!(m.received_at >= prev, "stamps follow commit order");
        }
        last = Some(m.received_at);
    }
}

#[tokio::test]
async fn a_broker_secret_is_kept_only_for_the_password_just_verified_and_dies_with_the_user() {
    let db = db().await;
    seed(&db.store).await;
    let hash = new_user("prod", Role::Producer).password_hash;
    assert!(db.store.broker_secrets().await.unwrap().is_empty());
    // A stale hash (the password changed after the check) writes nothing.
    assert!(
        !db.store
            .keep_broker_secret(&name("prod"), "$argon2id$other", "sealed-old".into())
            .await
            .unwrap()
    );
    let has = |c: Option<bal_scd::Credentials>| c.unwrap().has_broker_secret;
    assert!(!has(db.store.credentials(&name("prod")).await.unwrap()));
    assert!(
        db.store
            .keep_broker_secret(&name("prod"), &hash, "sealed-1".into())
            .await
            .unwrap()
    );
    assert!(has(db.store.credentials(&name("prod")).await.unwrap()));
    // An existing copy is never overwritten by a login.
    assert!(
        !db.store
            .keep_broker_secret(&name("prod"), &hash, "sealed-2".into())
            .await
            .unwrap()
    );
    assert_eq!(
        db.store.broker_secrets().await.unwrap(),
        vec![(name("prod"), "sealed-1".to_owned())]
    );
    // A password change replaces the copy in the same step; `None` removes it.
    db.store
        .set_password(
            &name("prod"),
            "$argon2id$new".into(),
            Some("sealed-3".into()),
            &Actor::System,
            Utc::now(),
        )
        .await
        .unwrap();
    assert_eq!(db.store.broker_secrets().await.unwrap()[0].1, "sealed-3");
    db.store
        .set_password(
            &name("cons"),
            "$argon2id$new".into(),
            Some("sealed-c".into()),
            &Actor::System,
            Utc::now(),
        )
        .await
        .unwrap();
    db.store
        .delete_user(&name("prod"), &Actor::System, Utc::now())
        .await
        .unwrap();
    assert_eq!(
        db.store.broker_secrets().await.unwrap(),
        vec![(name("cons"), "sealed-c".to_owned())]
    );
    let left = scalar_text(&db, "SELECT broker_secret FROM users WHERE username = 'prod'").await;
    assert_eq!(left, None, "a deleted user's sealed password is wiped");
}
