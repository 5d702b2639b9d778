//! Users, sessions and broker secrets.

use super::*;

#[tokio::test]
async fn reopening_the_database_keeps_everything() {
    let db = db().await;
    seed(&db.store).await;
    let sub = requested(&db.store).await;
    drop(db.store);
    let again = db.database.store().await;
    assert_eq!(again.users().await.unwrap().len(), 3);
    assert_eq!(again.subscription(sub.id).await.unwrap().unwrap(), sub);
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
