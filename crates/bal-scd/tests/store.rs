//! The store's own guarantees, below the API, on the backend `BAL_TEST_DATABASE` names
//! (SQLite by default; the test command runs every suite on both): constraints, atomicity,
//! the append-only audit log, and the races the trait docs promise to survive.

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
    let _watch = db.store.watch_measurements();
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
    let left = scalar_text(
        &db,
        "SELECT broker_secret FROM users WHERE username = 'prod'",
    )
    .await;
    assert_eq!(left, None, "a deleted user's sealed password is wiped");
}

// ---- Races: each guarantee of the trait docs, with two pools on one database standing for
// ---- two processes (on SQLite they queue on the file lock; on PostgreSQL on row locks).

#[tokio::test]
async fn two_concurrent_deletions_of_the_last_two_admins_leave_one() {
    let db = db().await;
    let other = db.database.store().await;
    for round in 0..5 {
        let (a, b) = (format!("admin-a{round}"), format!("admin-b{round}"));
        for n in [&a, &b] {
            db.store
                .create_user(new_user(n, Role::Admin), &Actor::System, Utc::now())
                .await
                .unwrap();
        }
        // Leave exactly these two admins.
        for u in db.store.users().await.unwrap() {
            if u.role == Role::Admin && u.username.as_str() != a && u.username.as_str() != b {
                db.store
                    .delete_user(&u.username, &Actor::System, Utc::now())
                    .await
                    .unwrap();
            }
        }
        let (s1, s2) = (db.store.clone(), other.clone());
        let (na, nb) = (name(&a), name(&b));
        let one =
            tokio::spawn(async move { s1.delete_user(&na, &Actor::System, Utc::now()).await });
        let two =
            tokio::spawn(async move { s2.delete_user(&nb, &Actor::System, Utc::now()).await });
        let results = [one.await.unwrap(), two.await.unwrap()];
        let ok = results.iter().filter(|r| r.is_ok()).count();
        assert_eq!(ok, 1, "round {round}: {results:?}");
        assert!(
            results
                .iter()
                .any(|r| matches!(r, Err(StoreError::Conflict(_))))
        );
        let admins = db.store.users().await.unwrap();
        assert_eq!(admins.iter().filter(|u| u.role == Role::Admin).count(), 1);
    }
}

#[tokio::test]
async fn of_two_concurrent_decisions_on_one_grant_one_wins_with_one_audit_entry() {
    let db = db().await;
    seed(&db.store).await;
    let other = db.database.store().await;
    let producer = Actor::User(name("prod"));
    for _ in 0..5 {
        let sub = db
            .store
            .request_subscription(request(Utc::now()))
            .await
            .unwrap();
        let (s1, s2, p1, p2) = (
            db.store.clone(),
            other.clone(),
            producer.clone(),
            producer.clone(),
        );
        let accept = GrantAction::Accept { expires_at: None };
        let one = tokio::spawn(async move { s1.decide(sub.id, &accept, &p1, Utc::now()).await });
        let two = tokio::spawn(async move {
            s2.decide(sub.id, &GrantAction::Refuse, &p2, Utc::now())
                .await
        });
        let results = [one.await.unwrap(), two.await.unwrap()];
        let winners: Vec<_> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
        assert_eq!(winners.len(), 1, "{results:?}");
        let decisions = db
            .store
            .audit_log(&AuditQuery {
                object: Some(format!("subscription:{}", sub.id)),
                limit: 10,
                ..Default::default()
            })
            .await
            .unwrap();
        // The request and exactly one decision.
        assert_eq!(decisions.len(), 2, "{decisions:?}");
        let stored = db.store.subscription(sub.id).await.unwrap().unwrap();
        assert_eq!(stored.status, winners[0].status);
        if stored.status == SubscriptionStatus::Accepted {
            db.store
                .decide(sub.id, &GrantAction::Revoke, &producer, Utc::now())
                .await
                .unwrap();
        }
    }
}

#[tokio::test]
async fn no_session_survives_a_concurrent_password_change() {
    let db = db().await;
    seed(&db.store).await;
    let other = db.database.store().await;
    let mut hash = new_user("cons", Role::Consumer).password_hash;
    for i in 0..20u8 {
        let token = [i; 32];
        let next = format!("$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$round{i}");
        let (s1, s2, old, new) = (db.store.clone(), other.clone(), hash.clone(), next.clone());
        let login = tokio::spawn(async move {
            let now = Utc::now();
            s1.create_session(token, &name("cons"), &old, now, now + Duration::hours(1))
                .await
        });
        let change = tokio::spawn(async move {
            s2.set_password(&name("cons"), new, None, &Actor::System, Utc::now())
                .await
        });
        login.await.unwrap().unwrap();
        change.await.unwrap().unwrap();
        // Whichever came first, the session made with the old password does not work.
        assert_eq!(
            db.store.session_user(token, Utc::now()).await.unwrap(),
            None,
            "round {i}"
        );
        hash = next;
    }
}

#[tokio::test]
async fn expiries_run_by_several_processes_are_written_once() {
    let db = db().await;
    seed(&db.store).await;
    let t0 = Utc::now();
    let mut grants = Vec::new();
    for i in 0..6 {
        let consumer = format!("cons{i}");
        db.store
            .create_user(new_user(&consumer, Role::Consumer), &Actor::System, t0)
            .await
            .unwrap();
        let sub = db
            .store
            .request_subscription(Subscription::request(
                name(&consumer),
                &Topic::parse("platone/prod").unwrap(),
                t0,
            ))
            .await
            .unwrap();
        let accept = GrantAction::Accept {
            expires_at: Some(t0 + Duration::seconds(5)),
        };
        db.store
            .decide(sub.id, &accept, &Actor::User(name("prod")), t0)
            .await
            .unwrap();
        grants.push(sub.id);
    }
    let later = t0 + Duration::seconds(6);
    let mut stores = vec![db.store.clone()];
    for _ in 0..3 {
        stores.push(db.database.store().await);
    }
    let runs: Vec<_> = stores
        .into_iter()
        .map(|s| tokio::spawn(async move { s.expire_due(later).await.unwrap().len() }))
        .collect();
    let mut total = 0;
    for r in runs {
        total += r.await.unwrap();
    }
    assert_eq!(
        total,
        grants.len(),
        "each expiry is reported by exactly one run"
    );
    let expiries = db
        .store
        .audit_log(&AuditQuery {
            action: Some(bal_core::AuditAction::SubscriptionExpired),
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(expiries.len(), grants.len());
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
    let measurement_count = pending
        .items
        .iter()
        .filter(|i| i.kind == ItemKind::Measurement)
        .count() as u32;
    let batch = NewBatch {
        root,
        measurement_count,
        items: pending.items.iter().map(|i| i.id).collect(),
        leaves,
        measurements: pending.measurements,
        audit: pending.audit,
        created_at: Utc::now(),
    };
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

/// Set in the environment of the writer process of the race test below: the database URL.
const WRITER_URL: &str = "BAL_TEST_WRITER_URL";

/// Not a test of its own: the second process of the race test below, which only writes. The
/// test runs this binary again with only this entry selected and `BAL_TEST_WRITER_URL` set;
/// the process prints the ids of the readings it stored.
#[tokio::test]
async fn writer_process_entry() {
    let Ok(url) = std::env::var(WRITER_URL) else {
        return;
    };
    let store = bal_scd::connect(&url, &bal_scd::testing::options())
        .await
        .unwrap();
    store
        .create_user(
            new_user("cons2", Role::Consumer),
            &Actor::System,
            Utc::now(),
        )
        .await
        .unwrap();
    let mut ids = Vec::new();
    for i in 0..40 {
        let batch: Vec<_> = (0..(1 + i % 3))
            .map(|k| reading(&format!("process/{i}/{k}"), None))
            .collect();
        ids.extend(store.insert_measurements(&batch).await.unwrap());
        if i % 10 == 0 {
            let topic = Topic::parse("platone/prod").unwrap();
            let sub = store
                .request_subscription(Subscription::request(name("cons2"), &topic, Utc::now()))
                .await
                .unwrap();
            let p = Actor::User(name("prod"));
            store
                .decide(sub.id, &GrantAction::Refuse, &p, Utc::now())
                .await
                .unwrap();
        }
    }
    let ids: Vec<String> = ids.iter().map(i64::to_string).collect();
    println!("written: {}", ids.join(","));
}

/// Starts [`writer_process_entry`] in a process of its own on `url`; yields the ids it wrote.
fn spawn_writer_process(url: &str) -> tokio::task::JoinHandle<Vec<i64>> {
    let child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "writer_process_entry",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(WRITER_URL, url)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start the writer process");
    tokio::task::spawn_blocking(move || {
        let out = child.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "the writer process failed: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let line = stdout
            .lines()
            // libtest prints its "test ... " prefix on the same line.
            .find_map(|l| l.split_once("written: ").map(|(_, ids)| ids))
            .unwrap_or_else(|| panic!("the writer process printed no ids: {stdout}"));
        line.split(',').map(|id| id.parse().unwrap()).collect()
    })
}

#[tokio::test]
async fn with_concurrent_writers_every_reading_and_decision_is_batched_once_and_paged_once() {
    let db = db().await;
    seed(&db.store).await;
    let writers: Vec<SharedStore> = vec![db.database.store().await, db.database.store().await];
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    // Writers: a process of their own, and two pools in this one ("processes" too), several
    // tasks each, small batches.
    let process = spawn_writer_process(&db.database.url);
    let mut tasks = Vec::new();
    for (w, store) in writers.iter().enumerate() {
        for t in 0..3 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                let mut ids = Vec::new();
                for i in 0..40 {
                    let batch: Vec<_> = (0..(1 + i % 4))
                        .map(|k| reading(&format!("{w}/{t}/{i}/{k}"), None))
                        .collect();
                    ids.extend(store.insert_measurements(&batch).await.unwrap());
                }
                ids
            }));
        }
    }
    // A grant decision writer, for audit items.
    let decider = {
        let store = writers[0].clone();
        tokio::spawn(async move {
            for _ in 0..5 {
                let sub = store
                    .request_subscription(request(Utc::now()))
                    .await
                    .unwrap();
                let p = Actor::User(name("prod"));
                store
                    .decide(sub.id, &GrantAction::Refuse, &p, Utc::now())
                    .await
                    .unwrap();
            }
        })
    };
    // Two certifiers and a paging reader run all along.
    let certifiers: Vec<_> = [db.store.clone(), db.database.store().await]
        .into_iter()
        .map(|store| {
            let done = done.clone();
            tokio::spawn(async move {
                let mut batches = Vec::new();
                loop {
                    let finished = done.load(std::sync::atomic::Ordering::SeqCst);
                    match batch_pending(&store).await {
                        Some(b) => batches.push(b),
                        None if finished => return batches,
                        None => tokio::time::sleep(std::time::Duration::from_millis(5)).await,
                    }
                }
            })
        })
        .collect();
    let reader = {
        let store = db.store.clone();
        let done = done.clone();
        tokio::spawn(async move {
            let mut seen = Vec::new();
            let mut after = None;
            loop {
                let finished = done.load(std::sync::atomic::Ordering::SeqCst);
                let page = store
                    .measurements(&MeasurementQuery {
                        producers: Some(vec![name("prod")]),
                        from: None,
                        to: None,
                        after,
                        limit: 7,
                    })
                    .await
                    .unwrap();
                seen.extend(page.items.iter().map(|m| m.id));
                // A short page is the end for now; the next read resumes after its last row.
                after = page.resume.or(after);
                if page.next.is_none() {
                    if finished {
                        return seen;
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(3)).await;
                }
            }
        })
    };
    let mut written = Vec::new();
    for t in tasks {
        written.extend(t.await.unwrap());
    }
    decider.await.unwrap();
    written.extend(process.await.unwrap());
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    let mut batches = Vec::new();
    for c in certifiers {
        batches.extend(c.await.unwrap());
    }
    // Whatever the certifiers left between their last look and `done`.
    while let Some(b) = batch_pending(&db.store).await {
        batches.push(b);
    }
    written.sort_unstable();

    // Every reading is in exactly one batch's leaves, and found there by `batch_of`.
    let mut batched = Vec::new();
    for b in &batches {
        let leaves = db.store.batch_leaves(b.seq).await.unwrap().unwrap();
        batched.extend_from_slice(&leaves.items[..leaves.measurement_count as usize]);
    }
    batched.sort_unstable();
    assert_eq!(batched, written, "every reading in exactly one batch");
    for id in written.iter().step_by(17) {
        let b = db
            .store
            .batch_of(ItemKind::Measurement, *id)
            .await
            .unwrap()
            .unwrap();
        let leaves = db.store.batch_leaves(b.seq).await.unwrap().unwrap();
        assert!(leaves.index_of(ItemKind::Measurement, *id).is_some());
    }
    // Every grant decision (and request) is certified once too.
    let audit_items: usize = batches
        .iter()
        .map(|b| (b.leaf_count - b.measurement_count) as usize)
        .sum();
    let certified_actions = db
        .store
        .audit_log(&AuditQuery {
            limit: 1000,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.action.as_str().starts_with("subscription."))
        .count();
    assert_eq!(audit_items, certified_actions);
    let status = db.store.certification_status().await.unwrap();
    assert_eq!(status.unbatched_measurements, 0);

    // The reader saw every row exactly once.
    let mut seen = reader.await.unwrap();
    let len = seen.len();
    seen.sort_unstable();
    seen.dedup();
    assert_eq!(seen.len(), len, "no row twice");
    assert_eq!(seen, written, "no row skipped");
}

#[tokio::test]
async fn committed_changes_reach_this_process_and_on_postgresql_every_other_within_a_second() {
    let db = db().await;
    seed(&db.store).await;
    let other = db.database.store().await;
    let (_watch_here, _watch_there) = (db.store.watch_measurements(), other.watch_measurements());
    let mut here = db.store.changes();
    let mut there = other.changes();
    let sub = db
        .store
        .request_subscription(request(Utc::now()))
        .await
        .unwrap();
    let ids = db
        .store
        .insert_measurements(&[reading("x", None)])
        .await
        .unwrap();
    let wait = std::time::Duration::from_secs(1);
    // This process: at once, with the full values.
    match tokio::time::timeout(wait, here.recv())
        .await
        .unwrap()
        .unwrap()
    {
        Change::Subscription(s) => assert_eq!(s.id, sub.id),
        other => panic!("unexpected {other:?}"),
    }
    match tokio::time::timeout(wait, here.recv())
        .await
        .unwrap()
        .unwrap()
    {
        Change::Measurements(m) => assert_eq!(m[0].id, ids[0]),
        other => panic!("unexpected {other:?}"),
    }
    if db.database.backend == Backend::Sqlite {
        // SQLite's feed is in-process: another process's changes are found by re-reading.
        assert!(there.try_recv().is_err());
        return;
    }
    // Another process: through NOTIFY, read back from the database. (Within a second is the
    // promise; a loaded CI machine gets five before this counts as lost.)
    let wait = std::time::Duration::from_secs(5);
    match tokio::time::timeout(wait, there.recv())
        .await
        .unwrap()
        .unwrap()
    {
        Change::Subscription(s) => {
            assert_eq!(s.id, sub.id);
            assert_eq!(s.status, SubscriptionStatus::Requested);
        }
        other => panic!("unexpected {other:?}"),
    }
    match tokio::time::timeout(wait, there.recv())
        .await
        .unwrap()
        .unwrap()
    {
        Change::Measurements(m) => {
            assert_eq!(m.len(), 1);
            assert_eq!(m[0].id, ids[0]);
            assert_eq!(m[0].payload, b"x");
        }
        other => panic!("unexpected {other:?}"),
    }
    // A batch larger than one notification arrives whole.
    let big: Vec<_> = (0..3000).map(|i| reading(&i.to_string(), None)).collect();
    let big_ids = other.insert_measurements(&big).await.unwrap();
    let mut got = Vec::new();
    while got.len() < big_ids.len() {
        match tokio::time::timeout(wait, here.recv())
            .await
            .unwrap()
            .unwrap()
        {
            Change::Measurements(m) => got.extend(m.iter().map(|m| m.id)),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(got, big_ids);
}

#[tokio::test]
async fn an_open_transaction_holds_certification_back_only_on_its_own_database() {
    let db = db().await;
    seed(&db.store).await;
    if db.database.backend == Backend::Sqlite {
        // One writer at a time: an open write transaction blocks the next writer instead.
        return;
    }
    use sqlx::{Connection, Executor};
    let elsewhere = TestDatabase::new().await;
    let mut other = sqlx::PgConnection::connect(&elsewhere.url).await.unwrap();
    other
        .execute("BEGIN; CREATE TABLE t (x int);")
        .await
        .unwrap();
    let ids = db
        .store
        .insert_measurements(&[reading("a", None)])
        .await
        .unwrap();
    let pending = db.store.pending_items(10).await.unwrap();
    assert_eq!(
        pending.items.len(),
        1,
        "another database's transaction is not waited for"
    );
    // A writing transaction open on this database holds back what commits after it began.
    let mut here = sqlx::PgConnection::connect(&db.database.url).await.unwrap();
    here.execute("BEGIN; CREATE TABLE t (x int);")
        .await
        .unwrap();
    let later = db
        .store
        .insert_measurements(&[reading("b", None)])
        .await
        .unwrap();
    let pending = db.store.pending_items(10).await.unwrap();
    let ids_pending: Vec<i64> = pending.items.iter().map(|i| i.id).collect();
    assert_eq!(
        ids_pending, ids,
        "the later row waits for the open transaction"
    );
    here.execute("ROLLBACK").await.unwrap();
    let pending = db.store.pending_items(10).await.unwrap();
    assert_eq!(pending.items.len(), 2);
    assert_eq!(pending.items[1].id, later[0]);
    other.execute("ROLLBACK").await.unwrap();
}

#[tokio::test]
async fn a_consumer_reads_only_under_an_accepted_unexpired_grant() {
    let db = db().await;
    seed(&db.store).await;
    let (cons, prod) = (name("cons"), name("prod"));
    let t0 = Utc::now();
    let consumer = db.store.user(&cons).await.unwrap().unwrap();
    // What the read rule says, with the grants the store reads for it.
    let can_read = |at| {
        let (store, consumer, prod) = (&db.store, &consumer, &prod);
        async move {
            bal_scd::read_scope(&**store, consumer, Some(prod), at)
                .await
                .unwrap()
                .allows(prod)
        }
    };
    assert!(!can_read(t0).await);
    let sub = db.store.request_subscription(request(t0)).await.unwrap();
    assert!(!can_read(t0).await, "a request is not a grant");
    let until = t0 + Duration::seconds(30);
    let accept = GrantAction::Accept {
        expires_at: Some(until),
    };
    db.store
        .decide(sub.id, &accept, &Actor::User(prod.clone()), t0)
        .await
        .unwrap();
    assert!(can_read(t0).await);
    assert!(!can_read(until).await, "expired");
    db.store
        .decide(sub.id, &GrantAction::Revoke, &Actor::User(prod.clone()), t0)
        .await
        .unwrap();
    assert!(!can_read(t0).await, "revoked");
}

#[tokio::test]
async fn measurements_are_announced_only_while_someone_watches_them() {
    let db = db().await;
    seed(&db.store).await;
    let other = db.database.store().await;
    let mut here = db.store.changes();
    let mut there = other.changes();
    let unwatched = db
        .store
        .insert_measurements(&[reading("a", None)])
        .await
        .unwrap();
    // Time for the other process's listener to see the first notification, unwatched.
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    let watch_here = db.store.watch_measurements();
    let watch_there = other.watch_measurements();
    let watched = db
        .store
        .insert_measurements(&[reading("b", None)])
        .await
        .unwrap();
    let wait = std::time::Duration::from_secs(5);
    // This process announced only the reading committed while it watched.
    match tokio::time::timeout(wait, here.recv())
        .await
        .unwrap()
        .unwrap()
    {
        Change::Measurements(m) => assert_eq!(m[0].id, watched[0]),
        other => panic!("unexpected {other:?}"),
    }
    if db.database.backend == Backend::Postgres {
        // The other process reads back only what was notified while it watched.
        match tokio::time::timeout(wait, there.recv())
            .await
            .unwrap()
            .unwrap()
        {
            Change::Measurements(m) => {
                assert_eq!(m.iter().map(|m| m.id).collect::<Vec<_>>(), watched);
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_ne!(unwatched, watched);
    drop((watch_here, watch_there));
}
