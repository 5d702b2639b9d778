//! Set points: sequence numbers, superseding, state changes only as the rules allow (each with
//! its audit entry), one sender per set point across processes, expiry, and certification of
//! every transition.

use std::collections::HashSet;
use std::time::Duration as StdDuration;

use bal_core::setpoint::{DeviceName, SetpointState, SetpointValues};
use bal_core::{Actor, AuditAction};
use bal_scd::{ItemKind, NewSetpoint, SetpointQuery, StoreError};
use chrono::{Duration, Utc};
use serde_json::json;

use super::{audit, batch_pending, db, name, seed};

fn new_setpoint(device: &str, values: serde_json::Value, valid_for: Duration) -> NewSetpoint {
    NewSetpoint {
        issuer: Actor::User(name("admin")),
        producer: name("prod"),
        device: DeviceName::parse(device).unwrap(),
        values: SetpointValues::new(&values).unwrap(),
        valid_until: Utc::now() + valid_for,
        signature: None,
    }
}

#[tokio::test]
async fn issuing_numbers_each_device_and_supersedes_only_what_it_fully_replaces() {
    let db = db().await;
    seed(&db.store).await;
    let minute = Duration::minutes(1);
    let s = &db.store;
    let a = s
        .issue_setpoint(
            new_setpoint("inv-1", json!({"p": 1, "q": 2}), minute),
            Utc::now(),
        )
        .await
        .unwrap();
    let other_device = s
        .issue_setpoint(new_setpoint("inv-2", json!({"p": 1}), minute), Utc::now())
        .await
        .unwrap();
    // Sets only `p`: `a` still has `q` to apply, so it stands.
    let b = s
        .issue_setpoint(new_setpoint("inv-1", json!({"p": 5}), minute), Utc::now())
        .await
        .unwrap();
    // Sets `p` and `q`: both earlier ones of inv-1 are left with nothing.
    let c = s
        .issue_setpoint(
            new_setpoint("inv-1", json!({"q": 0, "p": 0}), minute),
            Utc::now(),
        )
        .await
        .unwrap();
    assert_eq!((a.seq, b.seq, c.seq, other_device.seq), (1, 2, 3, 1));
    let state = |id| async move { s.setpoint(id).await.unwrap().unwrap() };
    assert_eq!(state(a.id).await.state, SetpointState::Superseded);
    assert_eq!(state(b.id).await.state, SetpointState::Superseded);
    assert_eq!(
        state(a.id).await.reason.as_deref(),
        Some(&*format!("superseded by set point {}", c.id))
    );
    assert_eq!(state(other_device.id).await.state, SetpointState::Queued);

    let unknown = NewSetpoint {
        producer: name("cons"),
        ..new_setpoint("inv-1", json!({"p": 1}), minute)
    };
    assert!(matches!(
        s.issue_setpoint(unknown, Utc::now()).await,
        Err(StoreError::NotFound("producer"))
    ));
    let listed = s
        .setpoints(&SetpointQuery {
            visible_to: Some(name("prod")),
            limit: 10,
            ..SetpointQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(listed.len(), 4);
    assert!(listed.windows(2).all(|w| w[0].id > w[1].id), "newest first");
}

#[tokio::test]
async fn states_move_only_forward_and_each_move_is_one_audit_entry() {
    let db = db().await;
    seed(&db.store).await;
    let s = &db.store;
    let sp = s
        .issue_setpoint(
            new_setpoint("inv-1", json!({"p": 1}), Duration::minutes(1)),
            Utc::now(),
        )
        .await
        .unwrap();
    let device = Actor::User(name("prod"));
    // The device cannot answer what was never sent.
    let early = s
        .move_setpoint(sp.id, SetpointState::Applied, &device, None, Utc::now())
        .await;
    assert!(matches!(early, Err(StoreError::Conflict(_))), "{early:?}");
    for to in [
        SetpointState::Sent,
        SetpointState::Received,
        SetpointState::Rejected,
    ] {
        s.move_setpoint(sp.id, to, &device, Some("too high"), Utc::now())
            .await
            .unwrap();
    }
    // Closed: a late answer, a cancel or an expiry change nothing.
    for to in [
        SetpointState::Applied,
        SetpointState::Cancelled,
        SetpointState::Expired,
    ] {
        let late = s.move_setpoint(sp.id, to, &device, None, Utc::now()).await;
        assert!(
            matches!(late, Err(StoreError::Conflict(_))),
            "{to}: {late:?}"
        );
    }
    let missing = s
        .move_setpoint(999_999, SetpointState::Sent, &device, None, Utc::now())
        .await;
    assert!(matches!(missing, Err(StoreError::NotFound(_))));
    let done = s.setpoint(sp.id).await.unwrap().unwrap();
    assert_eq!(done.state, SetpointState::Rejected);
    assert_eq!(done.reason.as_deref(), Some("too high"));

    let entries: Vec<_> = audit(s, 20)
        .await
        .into_iter()
        .filter(|e| e.object == format!("setpoint:{}", sp.id))
        .collect();
    let actions: Vec<_> = entries.iter().rev().map(|e| e.action).collect();
    assert_eq!(
        actions,
        [
            SetpointState::Queued,
            SetpointState::Sent,
            SetpointState::Received,
            SetpointState::Rejected
        ]
        .map(AuditAction::Setpoint)
    );
    assert_eq!(entries[0].detail["from"], "received");
    assert_eq!(
        entries[0].detail["values_hash"],
        done.values.hash().to_string()
    );
}

#[tokio::test]
async fn each_due_set_point_goes_to_one_sender_and_none_after_its_validity() {
    let db = db().await;
    seed(&db.store).await;
    let mut ids = HashSet::new();
    for i in 0..40 {
        let sp = db
            .store
            .issue_setpoint(
                new_setpoint(&format!("dev-{i}"), json!({"p": i}), Duration::minutes(1)),
                Utc::now(),
            )
            .await
            .unwrap();
        ids.insert(sp.id);
    }
    let lapsed = db
        .store
        .issue_setpoint(
            new_setpoint("late", json!({"p": 1}), Duration::milliseconds(50)),
            Utc::now(),
        )
        .await
        .unwrap();
    tokio::time::sleep(StdDuration::from_millis(100)).await;

    // Two processes claim at once, in small bites.
    let other = db.database.store().await;
    let retry = StdDuration::from_secs(10);
    let claim = |store: bal_scd::SharedStore| async move {
        let mut mine = Vec::new();
        loop {
            let got = store.claim_setpoints(Utc::now(), retry, 3).await.unwrap();
            if got.is_empty() {
                return mine;
            }
            mine.extend(got.into_iter().map(|s| s.id));
        }
    };
    let (a, b) = tokio::join!(claim(db.store.clone()), claim(other));
    let claimed: Vec<i64> = a.iter().chain(&b).copied().collect();
    let unique: HashSet<i64> = claimed.iter().copied().collect();
    assert_eq!(claimed.len(), unique.len(), "a set point claimed twice");
    assert_eq!(unique, ids, "every valid one claimed, the lapsed one not");

    // Claimed ones come back only after the retry interval (and while still valid).
    assert!(
        db.store
            .claim_setpoints(Utc::now(), retry, 100)
            .await
            .unwrap()
            .is_empty()
    );
    let again = db
        .store
        .claim_setpoints(Utc::now() + Duration::seconds(11), retry, 100)
        .await
        .unwrap();
    assert_eq!(again.len(), ids.len());
    assert!(again.iter().all(|s| s.attempts == 2));

    let expired = db.store.expire_setpoints(Utc::now()).await.unwrap();
    assert_eq!(
        expired.iter().map(|s| s.id).collect::<Vec<_>>(),
        [lapsed.id]
    );
    assert!(
        db.store
            .expire_setpoints(Utc::now())
            .await
            .unwrap()
            .is_empty()
    );
    let counts = db.store.setpoint_counts().await.unwrap();
    assert!(counts.contains(&(SetpointState::Expired, 1)), "{counts:?}");
    // A claim marks what it takes sent, with the audit entry, in its own transaction.
    assert!(counts.contains(&(SetpointState::Sent, 40)), "{counts:?}");
    let sent = audit(&db.store, 200)
        .await
        .into_iter()
        .filter(|e| e.action == AuditAction::Setpoint(SetpointState::Sent))
        .count();
    assert_eq!(sent, 40, "one entry each, however often claimed");
}

#[tokio::test]
async fn every_transition_is_certified_beside_grant_decisions() {
    let db = db().await;
    seed(&db.store).await;
    let sp = db
        .store
        .issue_setpoint(
            new_setpoint("inv-1", json!({"p": 1}), Duration::minutes(1)),
            Utc::now(),
        )
        .await
        .unwrap();
    db.store
        .move_setpoint(sp.id, SetpointState::Sent, &Actor::System, None, Utc::now())
        .await
        .unwrap();
    let batch = batch_pending(&db.store).await.expect("a batch");
    let entries = db.store.batch_audit_entries(&batch).await.unwrap();
    let certified: Vec<_> = entries.iter().map(|e| e.action).collect();
    assert!(certified.contains(&AuditAction::Setpoint(SetpointState::Queued)));
    assert!(certified.contains(&AuditAction::Setpoint(SetpointState::Sent)));
    // Users' creation is not certified; transitions are, each with its own leaf.
    assert!(!certified.contains(&AuditAction::UserCreated));
    let queued = entries
        .iter()
        .find(|e| e.action == AuditAction::Setpoint(SetpointState::Queued))
        .unwrap();
    let (values, payload) = db.store.audit_leaf(queued.id).await.unwrap().unwrap();
    assert_eq!(values.topic, "audit/setpoint.queued/setpoints/prod/inv-1");
    assert_eq!(values.payload_hash, alloy_primitives::keccak256(&payload));
    let leaves = db.store.batch_leaves(batch.seq).await.unwrap().unwrap();
    let index = leaves.index_of(ItemKind::Audit, queued.id).unwrap();
    assert_eq!(leaves.leaves[index], values.leaf());
}

#[tokio::test]
async fn a_subscribing_device_gets_its_own_set_points_now_and_the_send_is_not_counted() {
    let db = db().await;
    seed(&db.store).await;
    let minute = Duration::minutes(1);
    let mut ids = Vec::new();
    for device in ["dev-a", "dev-b"] {
        let sp = db
            .store
            .issue_setpoint(new_setpoint(device, json!({"p": 1}), minute), Utc::now())
            .await
            .unwrap();
        ids.push(sp.id);
    }
    let retry = StdDuration::from_secs(10);
    let first = db
        .store
        .claim_setpoints(Utc::now(), retry, 10)
        .await
        .unwrap();
    assert_eq!(first.len(), 2);
    // dev-a subscribes: only its set point is due again, and its attempt is given back.
    let device = DeviceName::parse("dev-a").unwrap();
    let woken = db
        .store
        .resend_setpoints(&name("prod"), Some(&device), Utc::now())
        .await
        .unwrap();
    assert_eq!(woken, 1);
    let again = db
        .store
        .claim_setpoints(Utc::now(), retry, 10)
        .await
        .unwrap();
    assert_eq!(again.iter().map(|s| s.id).collect::<Vec<_>>(), [ids[0]]);
    assert_eq!(
        again[0].attempts, 1,
        "a send owed to the device is not a retry"
    );
    // A wildcard subscription wakes every device of the producer, no other producer's.
    let all = db
        .store
        .resend_setpoints(&name("prod"), None, Utc::now())
        .await
        .unwrap();
    assert_eq!(all, 2);
    let none = db
        .store
        .resend_setpoints(&name("cons"), None, Utc::now())
        .await
        .unwrap();
    assert_eq!(none, 0);
}
