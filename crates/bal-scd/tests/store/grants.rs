//! Subscriptions and the audit log.

use super::*;

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
    let entries = audit(&db.store, 10).await;
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
    let sub = requested(&db.store).await;
    let before = audit(&db.store, 100).await;
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
    let after = audit(&db.store, 100).await;
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
async fn of_two_concurrent_decisions_on_one_grant_one_wins_with_one_audit_entry() {
    let db = db().await;
    seed(&db.store).await;
    let other = db.database.store().await;
    let producer = Actor::User(name("prod"));
    for _ in 0..5 {
        let sub = requested(&db.store).await;
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
