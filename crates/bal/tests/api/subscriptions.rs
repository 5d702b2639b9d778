use std::time::Duration;

use chrono::Utc;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::*;

/// An app with producer1, producer2, consumer1 and consumer2, logged in.
struct World {
    app: TestApp,
    p1: String,
    p2: String,
    c1: String,
    c2: String,
}

async fn world() -> World {
    let app = spawn_app().await;
    let p1 = app.user("producer1", "producer").await;
    let p2 = app.user("producer2", "producer").await;
    let c1 = app.user("consumer1", "consumer").await;
    let c2 = app.user("consumer2", "consumer").await;
    World {
        app,
        p1,
        p2,
        c1,
        c2,
    }
}

fn status_of(producers: &Value, producer: &str) -> Value {
    producers
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["username"] == producer)
        .unwrap()["subscription_status"]
        .clone()
}

#[tokio::test]
async fn a_consumer_requests_and_the_producer_accepts_then_revokes() {
    let World { app, p1, c1, .. } = world().await;
    let producers = json_ok(app.get("/api/producers", &c1).await, StatusCode::OK).await;
    assert_eq!(producers.as_array().unwrap().len(), 2);
    assert_eq!(producers[0]["topic"], "platone/producer1");
    assert_eq!(status_of(&producers, "producer1"), Value::Null);

    let r = app.try_subscribe(&c1, "platone/producer1").await;
    let location = r.headers()["location"].to_str().unwrap().to_owned();
    let sub = json_ok(r, StatusCode::CREATED).await;
    let id = sub["id"].as_str().unwrap();
    assert_eq!(location, format!("/api/subscriptions/{id}"));
    assert_eq!(sub["status"], "requested");
    assert_eq!(sub["consumer"], "consumer1");
    assert_eq!(sub["producer"], "producer1");
    let producers = json_ok(app.get("/api/producers", &c1).await, StatusCode::OK).await;
    assert_eq!(status_of(&producers, "producer1"), "requested");

    let theirs = json_ok(app.get("/api/subscriptions", &p1).await, StatusCode::OK).await;
    assert_eq!(theirs[0]["id"], id);

    let accepted = app
        .post_empty(&format!("/api/subscriptions/{id}/accept"), &p1)
        .await;
    let accepted = json_ok(accepted, StatusCode::OK).await;
    assert_eq!(accepted["status"], "accepted");
    assert_eq!(accepted["decided_by"], "producer1");
    assert_eq!(accepted["expires_at"], Value::Null);
    assert!(accepted["modification_date"].as_str() >= sub["creation_date"].as_str());

    let revoked = app
        .post_empty(&format!("/api/subscriptions/{id}/revoke"), &p1)
        .await;
    assert_eq!(json_ok(revoked, StatusCode::OK).await["status"], "revoked");
    let producers = json_ok(app.get("/api/producers", &c1).await, StatusCode::OK).await;
    assert_eq!(status_of(&producers, "producer1"), "revoked");
}

#[tokio::test]
async fn a_producer_decides_only_requests_on_its_own_topic() {
    let World {
        app,
        p1,
        p2,
        c1,
        c2,
    } = world().await;
    let id = app.request_subscription(&c1, "producer1").await;
    for action in ["accept", "refuse", "revoke"] {
        let path = format!("/api/subscriptions/{id}/{action}");
        let r = app.post_empty(&path, &p2).await;
        assert_error(r, StatusCode::FORBIDDEN, "forbidden").await;
        // Consumers and admins never decide.
        for token in [&c1, &c2, &app.admin] {
            let r = app.post_empty(&path, token).await;
            assert_error(r, StatusCode::FORBIDDEN, "forbidden").await;
        }
    }
    let r = app.get(&format!("/api/subscriptions/{id}"), &p2).await;
    assert_error(r, StatusCode::FORBIDDEN, "forbidden").await;
    let still = json_ok(
        app.get(&format!("/api/subscriptions/{id}"), &p1).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(still["status"], "requested");
    let p2_sees = json_ok(app.get("/api/subscriptions", &p2).await, StatusCode::OK).await;
    assert_eq!(p2_sees, json!([]));
}

#[tokio::test]
async fn a_consumer_sees_and_cancels_only_its_own() {
    let World {
        app, p1, c1, c2, ..
    } = world().await;
    let id = app.request_subscription(&c1, "producer1").await;
    let r = app.get(&format!("/api/subscriptions/{id}"), &c2).await;
    assert_error(r, StatusCode::FORBIDDEN, "forbidden").await;
    let r = app
        .post_empty(&format!("/api/subscriptions/{id}/cancel"), &c2)
        .await;
    assert_error(r, StatusCode::FORBIDDEN, "forbidden").await;
    let r = app
        .post_empty(&format!("/api/subscriptions/{id}/cancel"), &p1)
        .await;
    assert_error(r, StatusCode::FORBIDDEN, "forbidden").await;
    assert_eq!(
        json_ok(app.get("/api/subscriptions", &c2).await, StatusCode::OK).await,
        json!([])
    );
    let all = json_ok(
        app.get("/api/subscriptions", &app.admin).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(all.as_array().unwrap().len(), 1);

    let r = app
        .post_empty(&format!("/api/subscriptions/{id}/cancel"), &c1)
        .await;
    let cancelled = json_ok(r, StatusCode::OK).await;
    assert_eq!(cancelled["status"], "cancelled");
    assert_eq!(cancelled["decided_by"], "consumer1");
}

#[tokio::test]
async fn one_live_request_per_consumer_and_topic_and_a_new_one_after_the_end() {
    let World {
        app, p1, c1, c2, ..
    } = world().await;
    let id = app.request_subscription(&c1, "producer1").await;
    // A sub-topic means the producer's topic, so it is the same request.
    for topic in ["platone/producer1", "platone/producer1/pmu-7"] {
        let r = app
            .post("/api/subscriptions", &c1, json!({ "topic": topic }))
            .await;
        assert_error(r, StatusCode::CONFLICT, "conflict").await;
    }
    // Another consumer is independent.
    app.request_subscription(&c2, "producer1").await;

    app.post_empty(&format!("/api/subscriptions/{id}/accept"), &p1)
        .await;
    let r = app.try_subscribe(&c1, "platone/producer1").await;
    assert_error(r, StatusCode::CONFLICT, "conflict").await;

    app.post_empty(&format!("/api/subscriptions/{id}/revoke"), &p1)
        .await;
    let again = app.request_subscription(&c1, "producer1").await;
    assert_ne!(again, id);
    app.post_empty(&format!("/api/subscriptions/{again}/refuse"), &p1)
        .await;
    app.request_subscription(&c1, "producer1").await;

    let mine = json_ok(app.get("/api/subscriptions", &c1).await, StatusCode::OK).await;
    let statuses: Vec<&str> = mine
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["status"].as_str().unwrap())
        .collect();
    assert_eq!(
        statuses,
        ["requested", "refused", "revoked"],
        "newest first"
    );
    let filtered = app.get("/api/subscriptions?status=refused", &c1).await;
    assert_eq!(
        json_ok(filtered, StatusCode::OK)
            .await
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let r = app.get("/api/subscriptions?status=bogus", &c1).await;
    assert_error(r, StatusCode::BAD_REQUEST, "bad_request").await;
}

#[tokio::test]
async fn illegal_transitions_are_409_and_change_nothing() {
    let World { app, p1, c1, .. } = world().await;
    let id = app.request_subscription(&c1, "producer1").await;
    let path = |a: &str| format!("/api/subscriptions/{id}/{a}");
    let r = app.post_empty(&path("revoke"), &p1).await;
    assert_error(r, StatusCode::CONFLICT, "conflict").await;
    app.post_empty(&path("refuse"), &p1).await;
    for action in ["accept", "refuse", "revoke"] {
        let r = app.post_empty(&path(action), &p1).await;
        let msg = assert_error(r, StatusCode::CONFLICT, "conflict").await;
        assert!(msg.contains("refused"), "{msg}");
    }
    let r = app.post_empty(&path("cancel"), &c1).await;
    assert_error(r, StatusCode::CONFLICT, "conflict").await;
    let now = app.get(&format!("/api/subscriptions/{id}"), &p1).await;
    let now = json_ok(now, StatusCode::OK).await;
    assert_eq!(now["status"], "refused");
}

#[tokio::test]
async fn bad_subscription_requests_get_clear_errors() {
    let World { app, p1, c1, .. } = world().await;
    let cases = [
        (json!({ "topic": "platone/nobody" }), StatusCode::NOT_FOUND),
        (
            json!({ "topic": "platone/consumer2" }),
            StatusCode::NOT_FOUND,
        ),
        (
            json!({ "topic": "platone/#" }),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            json!({ "topic": "platone/producer1/+" }),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            json!({ "topic": "other/producer1" }),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            json!({ "topic": "platone/producer1", "x": 1 }),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (json!({}), StatusCode::UNPROCESSABLE_ENTITY),
    ];
    for (body, status) in cases {
        let r = app.post("/api/subscriptions", &c1, body.clone()).await;
        assert_eq!(r.status(), status, "{body}");
    }
    // Only consumers request.
    for token in [&p1, &app.admin] {
        let r = app.try_subscribe(token, "platone/producer1").await;
        assert_error(r, StatusCode::FORBIDDEN, "forbidden").await;
    }
    for id in ["not-a-uuid", "0190f4a4-8f49-7c3e-9c5b-3f1f3b2a9d11"] {
        let r = app
            .post_empty(&format!("/api/subscriptions/{id}/accept"), &p1)
            .await;
        assert_error(r, StatusCode::NOT_FOUND, "not_found").await;
    }
    let id = app.request_subscription(&c1, "producer1").await;
    let r = app
        .client
        .post(app.url(&format!("/api/subscriptions/{id}/accept")))
        .bearer_auth(&p1)
        .body("{\"expires_at\": ")
        .send()
        .await
        .unwrap();
    assert_error(r, StatusCode::BAD_REQUEST, "bad_request").await;
    let r = app
        .post(
            &format!("/api/subscriptions/{id}/accept"),
            &p1,
            json!({ "expires_at": "soon" }),
        )
        .await;
    assert_error(r, StatusCode::UNPROCESSABLE_ENTITY, "invalid").await;
}

#[tokio::test]
async fn an_expiry_in_the_past_is_refused() {
    let World { app, p1, c1, .. } = world().await;
    let id = app.request_subscription(&c1, "producer1").await;
    let past = Utc::now() - chrono::Duration::minutes(1);
    let r = app
        .post(
            &format!("/api/subscriptions/{id}/accept"),
            &p1,
            json!({ "expires_at": past }),
        )
        .await;
    assert_error(r, StatusCode::UNPROCESSABLE_ENTITY, "invalid").await;
}

#[tokio::test]
async fn an_accepted_grant_expires_on_time_and_the_bal_writes_it_down() {
    let World { app, p1, c1, .. } = world().await;
    let id = app.request_subscription(&c1, "producer1").await;
    let until = Utc::now() + chrono::Duration::milliseconds(1500);
    let r = app
        .post(
            &format!("/api/subscriptions/{id}/accept"),
            &p1,
            json!({ "expires_at": until }),
        )
        .await;
    let accepted = json_ok(r, StatusCode::OK).await;
    assert_eq!(accepted["status"], "accepted");
    assert!(accepted["expires_at"].is_string());

    // The sweeper runs every second: within expiry + 2 s the stored status and the audit agree.
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let s = json_ok(
        app.get(&format!("/api/subscriptions/{id}"), &c1).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(s["status"], "expired");
    assert_eq!(s["decided_by"], "@system");
    let stored = json_ok(
        app.get("/api/subscriptions?status=expired", &app.admin)
            .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(
        stored.as_array().unwrap().len(),
        1,
        "the stored status is expired"
    );
    let audit = app
        .get(
            &format!("/api/audit?object=subscription:{id}&action=subscription.expire"),
            &app.admin,
        )
        .await;
    let audit = json_ok(audit, StatusCode::OK).await;
    assert_eq!(audit["entries"][0]["actor"], "@system");
    // A new request may follow.
    app.request_subscription(&c1, "producer1").await;
}

#[tokio::test]
async fn deleting_a_producer_revokes_its_grants_and_hides_it() {
    let World {
        app, p1, c1, c2, ..
    } = world().await;
    let granted = app.request_subscription(&c1, "producer1").await;
    app.post_empty(&format!("/api/subscriptions/{granted}/accept"), &p1)
        .await;
    let pending = app.request_subscription(&c2, "producer1").await;
    app.delete("/api/users/producer1", &app.admin).await;

    for (id, token) in [(&granted, &c1), (&pending, &c2)] {
        let s = app.get(&format!("/api/subscriptions/{id}"), token).await;
        let s = json_ok(s, StatusCode::OK).await;
        assert_eq!(s["status"], "revoked");
        assert_eq!(s["decided_by"], "admin");
    }
    let producers = json_ok(app.get("/api/producers", &c1).await, StatusCode::OK).await;
    assert!(
        producers
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["username"] != "producer1")
    );
    let r = app.try_subscribe(&c1, "platone/producer1").await;
    assert_error(r, StatusCode::NOT_FOUND, "not_found").await;
}
