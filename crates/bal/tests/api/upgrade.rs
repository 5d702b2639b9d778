//! Databases made by earlier releases: upgraded in place, and moved to PostgreSQL, every proof
//! issued before still verifies. The fixture `fixtures/release-0.1.0.db` is a `bal demo`
//! database made by release 0.1.0 (readings, a certified grant decision, anchored batches and
//! the embedded chain's blocks). `fixtures/release-3bce12b-postgres.sql` is that database as
//! the release before the embedded chain's tables moved to bal-ledger's own migrations put it
//! on PostgreSQL (its `bal db migrate`, then `bal db copy`; `pg_dump --inserts`).

use std::sync::Arc;

use alloy_signer_local::PrivateKeySigner;
use bal_core::merkle::MerkleTree;
use bal_core::proof::Outcome;
use bal_ledger::embedded::DEFAULT_CHAIN_ID;
use bal_ledger::proofs::{ProofState, Prover, check_with_ledger};
use bal_ledger::{EmbeddedChain, SharedLedger};
use bal_scd::{AuditQuery, ItemKind, SharedStore};

const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/release-0.1.0.db"
);

const POSTGRES_FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/release-3bce12b-postgres.sql"
);

/// A copy of the fixture in a folder of its own, as a `sqlite://` URL.
fn fixture_copy(dir: &std::path::Path) -> String {
    let path = dir.join("bal.db");
    std::fs::copy(FIXTURE, &path).unwrap();
    format!("sqlite://{}", path.display())
}

/// Every reading's proof and every certified grant decision verify on the store's chain;
/// returns how many of each.
async fn verify_everything(store: &SharedStore, url: &str) -> (usize, usize) {
    let chain = EmbeddedChain::open(&**store, url, PrivateKeySigner::random(), DEFAULT_CHAIN_ID)
        .await
        .unwrap();
    let ledger: SharedLedger = Arc::new(chain);
    let prover = Prover::new(store.clone());
    let mut readings = 0;
    for id in 1.. {
        let Some(m) = store.measurement(id).await.unwrap() else {
            break;
        };
        let ProofState::Ready(bundle) = prover.measurement(id, Some(&m.payload)).await.unwrap()
        else {
            continue; // stored after the last anchor of the demo run
        };
        let verdict = bundle.verify_offline(Some(&m.payload));
        assert!(verdict.valid, "reading {id}: {:?}", verdict.reason);
        let anchor = check_with_ledger(&ledger, &bundle).await;
        assert_eq!(
            anchor.outcome,
            Outcome::Passed,
            "reading {id}: {}",
            anchor.detail
        );
        readings += 1;
    }
    let mut decisions = 0;
    let log = store
        .audit_log(&AuditQuery {
            limit: 1000,
            ..Default::default()
        })
        .await
        .unwrap();
    for entry in log
        .iter()
        .filter(|e| e.action.as_str() == "subscription.accept")
    {
        let (values, _payload) = store.audit_leaf(entry.id).await.unwrap().unwrap();
        let batch = store
            .batch_of(ItemKind::Audit, entry.id)
            .await
            .unwrap()
            .unwrap();
        let leaves = store.batch_leaves(batch.seq).await.unwrap().unwrap();
        let index = leaves.index_of(ItemKind::Audit, entry.id).unwrap();
        assert_eq!(
            leaves.leaves[index],
            values.leaf(),
            "the stored text still makes the leaf"
        );
        let proof = MerkleTree::new(&leaves.leaves)
            .unwrap()
            .proof(index)
            .unwrap();
        assert!(
            ledger
                .verify(batch.root, &proof, values.leaf())
                .await
                .unwrap()
        );
        decisions += 1;
    }
    (readings, decisions)
}

/// Stores a reading in a database that holds the fixture's (ids up to ~140): it gets an id
/// after theirs and waits for the next batch. Returns its id.
async fn a_new_reading_waits_for_a_batch(store: &SharedStore) -> i64 {
    let reading = bal_core::NewMeasurement::new(
        bal_core::Topic::parse("platone/producer1").unwrap(),
        b"after the old ones".to_vec(),
    );
    let id = store.insert_measurements(&[reading]).await.unwrap()[0];
    assert!(id > 100, "ids go on after the old ones: {id}");
    let pending = store.pending_items(1000).await.unwrap();
    assert!(
        pending.items.iter().any(|i| i.id == id),
        "the new reading {id} waits for the next batch"
    );
    id
}

#[tokio::test]
async fn a_database_of_release_0_1_0_upgrades_in_place_and_its_proofs_still_verify() {
    let dir = tempfile::tempdir().unwrap();
    let url = fixture_copy(dir.path());
    // Commands that must not migrate refuse the old schema and say what to run.
    let refuse = bal_scd::ConnectOptions {
        migrate: bal_scd::Migrate::Refuse,
        ..Default::default()
    };
    let err = bal_scd::connect(&url, &refuse)
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("bal db migrate"), "{err}");
    let store = bal_scd::connect(&url, &Default::default()).await.unwrap();
    let (readings, decisions) = verify_everything(&store, &url).await;
    assert!(readings >= 100, "{readings} readings verified");
    assert_eq!(decisions, 1);
    a_new_reading_waits_for_a_batch(&store).await;
}

#[tokio::test]
async fn bal_db_copy_moves_a_sqlite_installation_to_postgresql_and_every_proof_still_verifies() {
    if bal_scd::testing::backend() != bal_scd::Backend::Postgres {
        // The PostgreSQL pass of the test command runs this one.
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let from = fixture_copy(dir.path());
    // Bring the old database up to date first, as `bal db migrate` does.
    let cli = |args: &[&str], to: &str| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_bal"))
            .args(["--data-dir", &dir.path().display().to_string()])
            .args(args)
            .env("BAL_DATABASE__URL", &from)
            .env("BAL_DB_COPY_TO", to)
            .output()
            .unwrap();
        crate::helpers::code_and_text(&out)
    };
    let (code, text) = cli(&["db", "migrate"], "");
    assert_eq!(code, Some(0), "{text}");
    // With a password in the URL (trust auth ignores it): it must never be printed.
    let to = bal_scd::testing::create_postgres_database().replacen("@", ":copy-secret@", 1);
    let (code, text) = cli(&["db", "copy", "--from", &from], &to);
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.contains("measurements") && text.contains("master key"),
        "{text}"
    );
    assert!(!text.contains("copy-secret"), "no password printed: {text}");
    let copied = bal_scd::connect(&to, &bal_scd::testing::options())
        .await
        .unwrap();
    let source = bal_scd::connect(&from, &Default::default()).await.unwrap();
    assert_eq!(
        verify_everything(&copied, &to).await,
        verify_everything(&source, &from).await
    );
    assert_eq!(copied.users().await.unwrap(), source.users().await.unwrap());
    // New readings on the copy go on from the copied ids, and get certified after them.
    a_new_reading_waits_for_a_batch(&copied).await;
    // Nothing pending is in a batch the copy brought along.
    let pending = copied.pending_items(1000).await.unwrap();
    for item in pending
        .items
        .iter()
        .filter(|i| i.kind == ItemKind::Measurement)
    {
        let batched = copied
            .batch_of(ItemKind::Measurement, item.id)
            .await
            .unwrap();
        assert_eq!(
            batched, None,
            "{} is pending and in no copied batch",
            item.id
        );
    }
    // A second copy into the same (now full) database is refused.
    let (code, text) = cli(&["db", "copy", "--from", &from], &to);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("already holds users"), "{text}");
}

#[tokio::test]
async fn a_postgresql_database_of_the_previous_release_upgrades_in_place_and_its_proofs_verify() {
    if bal_scd::testing::backend() != bal_scd::Backend::Postgres {
        // The PostgreSQL pass of the test command runs this one.
        return;
    }
    use sqlx::Connection;
    let url = bal_scd::testing::create_postgres_database();
    let dump = std::fs::read_to_string(POSTGRES_FIXTURE).unwrap();
    let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
    // Our own fixture, checked in: no outside input.
    sqlx::raw_sql(sqlx::AssertSqlSafe(dump))
        .execute(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();

    let store = bal_scd::connect(&url, &Default::default()).await.unwrap();
    let (readings, decisions) = verify_everything(&store, &url).await;
    assert!(readings >= 100, "{readings} readings verified");
    assert_eq!(decisions, 1);
    // The chain's tables, made by the SCD's migrations then, are now bal-ledger's: recorded
    // in its own migrations table, their rows kept.
    let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
    let (ledger, blocks): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM _bal_ledger_migrations), (SELECT count(*) FROM chain_blocks)",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert_eq!(ledger, 1);
    assert!(blocks > 1, "{blocks} blocks kept");
    // New readings go on after the old ones.
    a_new_reading_waits_for_a_batch(&store).await;
}
