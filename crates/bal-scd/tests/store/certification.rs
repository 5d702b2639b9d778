//! Certification spans with concurrent writers and open transactions.

use super::*;

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
            refused(&store, "cons2").await;
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
            "certification::writer_process_entry",
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
                refused(&store, "cons").await;
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
    let certified_actions = audit(&db.store, 1000)
        .await
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
async fn an_open_transaction_holds_certification_back_only_on_its_own_database() {
    let db = db().await;
    seed(&db.store).await;
    if db.database.backend == Backend::Sqlite {
        // One writer at a time: an open write transaction blocks the next writer instead.
        return;
    }
    use sqlx::{Connection, Executor};
    let elsewhere = TestDatabase::new().await;
    // A connection holding a writing transaction (one with an xid) open on the database at `url`.
    let writing = |url: String| async move {
        let mut c = sqlx::PgConnection::connect(&url).await.unwrap();
        c.execute("BEGIN; CREATE TABLE t (x int);").await.unwrap();
        c
    };
    let store = |payload: &'static str| {
        let store = db.store.clone();
        async move { store.insert_measurements(&[reading(payload, None)]).await }
    };
    let mut other = writing(elsewhere.url.clone()).await;
    let ids = store("a").await.unwrap();
    let pending = db.store.pending_items(10).await.unwrap();
    assert_eq!(
        pending.items.len(),
        1,
        "another database's transaction is not waited for"
    );
    // A writing transaction open on this database holds back what commits after it began.
    let mut here = writing(db.database.url.clone()).await;
    let later = store("b").await.unwrap();
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
