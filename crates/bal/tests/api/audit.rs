use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::*;

fn actions(page: &Value) -> Vec<(String, String)> {
    page["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["actor"].as_str().unwrap().to_owned(),
                e["action"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[tokio::test]
async fn every_user_and_grant_change_is_in_the_audit_log_in_order() {
    let app = spawn_app().await;
    let p1 = app.user("producer1", "producer").await;
    let c1 = app.user("consumer1", "consumer").await;
    let id = app.request_subscription(&c1, "producer1").await;
    app.post_empty(&format!("/api/subscriptions/{id}/accept"), &p1)
        .await;
    app.post_empty(&format!("/api/subscriptions/{id}/revoke"), &p1)
        .await;
    app.put(
        "/api/users/consumer1/password",
        &app.admin,
        serde_json::json!({ "password": "another-password" }),
    )
    .await;

    let page = json_ok(app.get("/api/audit", &app.admin).await, StatusCode::OK).await;
    let mut got = actions(&page);
    got.reverse();
    let want = [
        ("@system", "user.create"),
        ("admin", "user.create"),
        ("admin", "user.create"),
        ("consumer1", "subscription.request"),
        ("producer1", "subscription.accept"),
        ("producer1", "subscription.revoke"),
        ("admin", "user.password"),
    ];
    let want: Vec<(String, String)> = want
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    assert_eq!(got, want);
    let accept = &page["entries"][2];
    assert_eq!(accept["object"], format!("subscription:{id}"));
    assert_eq!(accept["detail"]["from"], "requested");
    assert_eq!(accept["detail"]["to"], "accepted");
    assert_eq!(accept["detail"]["consumer"], "consumer1");
}

#[tokio::test]
async fn the_audit_log_filters_and_pages() {
    let app = spawn_app().await;
    for i in 0..5 {
        app.create_user(&format!("consumer{i}"), "consumer").await;
    }
    let page = app.get("/api/audit?actor=admin&limit=2", &app.admin).await;
    let page = json_ok(page, StatusCode::OK).await;
    assert_eq!(page["entries"].as_array().unwrap().len(), 2);
    assert_eq!(page["entries"][0]["object"], "user:consumer4");
    let next = page["next_before"].as_i64().unwrap();
    let page2 = app
        .get(
            &format!("/api/audit?actor=admin&limit=2&before={next}"),
            &app.admin,
        )
        .await;
    let page2 = json_ok(page2, StatusCode::OK).await;
    assert_eq!(page2["entries"][0]["object"], "user:consumer2");

    let only = app
        .get("/api/audit?object=user:consumer0", &app.admin)
        .await;
    let only = json_ok(only, StatusCode::OK).await;
    assert_eq!(only["entries"].as_array().unwrap().len(), 1);
    assert_eq!(only["next_before"], Value::Null);

    for bad in [
        "limit=0",
        "limit=5000",
        "action=user.explode",
        "before=abc",
        "actor=Bad!",
    ] {
        let r = app.get(&format!("/api/audit?{bad}"), &app.admin).await;
        assert_error(r, StatusCode::BAD_REQUEST, "bad_request").await;
    }
}
