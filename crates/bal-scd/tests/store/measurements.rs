//! Ingest, reception times and the change feed.

use super::*;

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
async fn committed_changes_reach_this_process_and_on_postgresql_every_other_within_a_second() {
    let db = db().await;
    seed(&db.store).await;
    let other = db.database.store().await;
    let (_watch_here, _watch_there) = (db.store.watch_measurements(), other.watch_measurements());
    let mut here = db.store.changes();
    let mut there = other.changes();
    let sub = requested(&db.store).await;
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

/// The group commit's second batch in flight: written while the first is still open, it takes
/// later ids, a later or equal stamp and (PostgreSQL) a later transaction id; history pages
/// show the first before the second; a batch dropped before its commit leaves nothing.
#[tokio::test]
async fn open_batches_keep_the_order_they_were_written_in() {
    let db = db().await;
    seed(&db.store).await;
    let everything = MeasurementQuery {
        producers: None,
        from: None,
        to: None,
        after: None,
        limit: 10,
    };
    let first = db
        .store
        .open_batch(&[reading("first-a", None), reading("first-b", None)])
        .await
        .unwrap();
    // SQLite commits at once (one writer at a time); PostgreSQL leaves the batch open.
    let open = matches!(first, bal_scd::WrittenBatch::Open(_));
    assert_eq!(open, db.database.backend == Backend::Postgres);
    let second = db
        .store
        .open_batch(&[reading("second", None)])
        .await
        .unwrap();
    let dropped = db
        .store
        .open_batch(&[reading("rolled-back", None)])
        .await
        .unwrap();
    let commit = |w: bal_scd::WrittenBatch| async move {
        match w {
            bal_scd::WrittenBatch::Committed(s) => s,
            bal_scd::WrittenBatch::Open(o) => o.commit().await.unwrap(),
        }
    };
    if open {
        // Rolled back (the test pool is small: it also frees the connection for the read).
        match dropped {
            bal_scd::WrittenBatch::Open(o) => drop(o),
            bal_scd::WrittenBatch::Committed(_) => unreachable!("PostgreSQL leaves it open"),
        }
        // Nothing is visible before its commit.
        let page = db.store.measurements(&everything).await.unwrap();
        assert!(page.items.is_empty(), "uncommitted rows are invisible");
    }
    let first = commit(first).await.ids;
    let second = commit(second).await.ids;
    assert!(first[0] < first[1] && first[1] < second[0]);
    let page = db.store.measurements(&everything).await.unwrap();
    let payloads: Vec<&[u8]> = page.items.iter().map(|m| &m.payload[..]).collect();
    if open {
        assert_eq!(payloads, [&b"first-a"[..], b"first-b", b"second"]);
        assert!(page.items[1].received_at <= page.items[2].received_at);
        let xids = scalar_text(
            &db,
            "SELECT string_agg(xid::text, ',' ORDER BY id) FROM measurements",
        )
        .await
        .unwrap();
        let xids: Vec<i64> = xids.split(',').map(|x| x.parse().unwrap()).collect();
        assert!(
            xids[0] == xids[1] && xids[1] < xids[2],
            "transaction ids in batch order: {xids:?}"
        );
    } else {
        // SQLite committed the third batch at once.
        assert_eq!(
            payloads,
            [&b"first-a"[..], b"first-b", b"second", b"rolled-back"]
        );
    }
}

/// A reading names an existing producer (PostgreSQL checks it once per insert statement since
/// its migration 0005, SQLite row by row): a batch naming anyone else stores nothing. And a
/// producer with readings cannot be deleted or renamed from under them.
#[tokio::test]
async fn readings_name_an_existing_producer_who_stays() {
    let db = db().await;
    seed(&db.store).await;
    let ghost =
        bal_core::NewMeasurement::new(Topic::parse("platone/ghost").unwrap(), b"boo".to_vec());
    let refused = db
        .store
        .insert_measurements(&[reading("real", None), ghost])
        .await;
    assert!(refused.is_err(), "a reading of nobody was stored");
    let count = "SELECT CAST(count(*) AS TEXT) FROM measurements";
    assert_eq!(scalar_text(&db, count).await.as_deref(), Some("0"));
    db.store
        .insert_measurements(&[reading("real", None)])
        .await
        .unwrap();
    assert_eq!(scalar_text(&db, count).await.as_deref(), Some("1"));
    for sql in [
        "DELETE FROM users WHERE username = 'prod'",
        "UPDATE users SET username = 'renamed' WHERE username = 'prod'",
    ] {
        assert!(exec(&db, sql).await.is_err(), "{sql}");
    }
    // Marking an account deleted is how it goes; its readings stay.
    let delete = "UPDATE users SET deleted_at = 1, password_hash = NULL, account = NULL \
                  WHERE username = 'prod'";
    exec(&db, delete).await.unwrap();
    assert_eq!(scalar_text(&db, count).await.as_deref(), Some("1"));
}
