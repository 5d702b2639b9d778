//! The authorisation matrix: every REST operation and dashboard page, asked by every kind of
//! caller (anonymous, the admin, the producer that owns the data, another producer, a consumer
//! with an accepted grant, one whose grant was revoked, one with none), on objects in each state
//! that matters. Every cell says its status, and no answer may carry a reading of a producer
//! the caller may not read.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::certification::{proof, quick, upload};
use crate::helpers::*;
use crate::web::Browser;

/// The callers, in the order of every row below.
const CALLERS: [&str; 7] = [
    "anonymous",
    "admin",
    "owner",
    "other",
    "granted",
    "revoked",
    "none",
];

/// The marker in each producer's readings, and who may read them.
const OWNER_MARK: &str = "reading-of-producer1";
const OTHER_MARK: &str = "reading-of-producer2";

struct World {
    app: TestApp,
    /// One token per caller; empty for anonymous.
    tokens: Vec<String>,
    owner_reading: i64,
    other_reading: i64,
    accepted: String,
    revoked: String,
    requested: String,
    transaction: String,
    root: String,
}

async fn world() -> World {
    let app = spawn_app_with(quick).await;
    let owner = app.user("producer1", "producer").await;
    let other = app.user("producer2", "producer").await;
    let granted = app.user("consumer1", "consumer").await;
    let revoked_token = app.user("consumer2", "consumer").await;
    let none = app.user("consumer3", "consumer").await;
    let asker = app.user("consumer4", "consumer").await;

    let accepted = app.grant(&granted, &owner, "producer1").await;
    let revoked = app.grant(&revoked_token, &owner, "producer1").await;
    let r = app
        .post_empty(&format!("/api/subscriptions/{revoked}/revoke"), &owner)
        .await;
    assert_eq!(r.status(), StatusCode::OK, "revoke");
    let requested = app.request_subscription(&asker, "producer1").await;

    let owner_reading = upload(&app, &owner, json!([{ "mark": OWNER_MARK }])).await[0];
    let other_reading = upload(&app, &other, json!([{ "mark": OTHER_MARK }])).await[0];
    let bundle = proof(&app, &owner, owner_reading).await;
    proof(&app, &other, other_reading).await;
    let admin = app.admin.clone();
    World {
        tokens: vec![
            String::new(),
            admin,
            owner,
            other,
            granted,
            revoked_token,
            none,
        ],
        app,
        owner_reading,
        other_reading,
        accepted,
        revoked,
        requested,
        transaction: bundle["transaction"].as_str().unwrap().to_owned(),
        root: bundle["root"].as_str().unwrap().to_owned(),
    }
}

/// Which producers' readings each caller may see.
fn may_read(caller: &str) -> (bool, bool) {
    match caller {
        "admin" => (true, true),
        "owner" | "granted" => (true, false),
        "other" => (false, true),
        _ => (false, false),
    }
}

/// Asserts one cell: the status, and that the body holds no reading the caller may not read.
fn check(caller: &str, what: &str, expected: u16, status: StatusCode, body: &str) {
    assert_eq!(
        status.as_u16(),
        expected,
        "{what} as {caller}: {}",
        &body[..body.len().min(300)]
    );
    let (owner_ok, other_ok) = may_read(caller);
    assert!(
        owner_ok || !body.contains(OWNER_MARK),
        "{what} as {caller} shows producer1's reading"
    );
    assert!(
        other_ok || !body.contains(OTHER_MARK),
        "{what} as {caller} shows producer2's reading"
    );
}

async fn call(
    w: &World,
    caller: usize,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, String) {
    let token = (caller > 0).then(|| w.tokens[caller].as_str());
    let mut r = w.app.request(method, path, token, body).await;
    let status = r.status();
    // A live stream does not end by itself: its first bytes are enough.
    let text = if path.contains("/stream") {
        let chunk = tokio::time::timeout(std::time::Duration::from_millis(300), r.chunk()).await;
        chunk
            .ok()
            .and_then(|c| c.ok().flatten())
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    } else {
        r.text().await.unwrap()
    };
    (status, text)
}

#[tokio::test]
async fn every_api_operation_answers_each_caller_as_its_role_and_grants_allow() {
    let w = world().await;
    let (m1, m2) = (w.owner_reading, w.other_reading);
    let (acc, rev, req) = (&w.accepted, &w.revoked, &w.requested);
    // Reads and refusals: asking changes nothing, so the order of rows does not matter.
    //                anonymous admin owner other granted revoked none
    let api: Vec<(Method, String, Option<Value>, [u16; 7])> = vec![
        (
            Method::GET,
            "/api/me".into(),
            None,
            [401, 200, 200, 200, 200, 200, 200],
        ),
        (
            Method::GET,
            "/api/users".into(),
            None,
            [401, 200, 403, 403, 403, 403, 403],
        ),
        (
            Method::GET,
            "/api/users/producer1".into(),
            None,
            [401, 200, 403, 403, 403, 403, 403],
        ),
        (
            Method::GET,
            "/api/audit".into(),
            None,
            [401, 200, 403, 403, 403, 403, 403],
        ),
        (
            Method::GET,
            "/api/producers".into(),
            None,
            [401, 200, 200, 200, 200, 200, 200],
        ),
        (
            Method::GET,
            "/api/subscriptions".into(),
            None,
            [401, 200, 200, 200, 200, 200, 200],
        ),
        (
            Method::GET,
            format!("/api/subscriptions/{acc}"),
            None,
            [401, 200, 200, 403, 200, 403, 403],
        ),
        (
            Method::GET,
            format!("/api/subscriptions/{rev}"),
            None,
            [401, 200, 200, 403, 403, 200, 403],
        ),
        (
            Method::GET,
            format!("/api/subscriptions/{req}"),
            None,
            [401, 200, 200, 403, 403, 403, 403],
        ),
        (
            Method::GET,
            "/api/measurements?producer=producer1".into(),
            None,
            [401, 200, 200, 403, 200, 403, 403],
        ),
        (
            Method::GET,
            "/api/measurements?producer=producer2".into(),
            None,
            [401, 200, 403, 200, 403, 403, 403],
        ),
        (
            Method::GET,
            format!("/api/measurements/{m1}"),
            None,
            [401, 200, 200, 403, 200, 403, 403],
        ),
        (
            Method::GET,
            format!("/api/measurements/{m2}"),
            None,
            [401, 200, 403, 200, 403, 403, 403],
        ),
        (
            Method::GET,
            format!("/api/measurements/{m1}/proof"),
            None,
            [401, 200, 200, 403, 200, 403, 403],
        ),
        (
            Method::GET,
            format!("/api/measurements/{m2}/proof"),
            None,
            [401, 200, 403, 200, 403, 403, 403],
        ),
        (
            Method::GET,
            "/api/measurements/stream?producer=producer1".into(),
            None,
            [401, 200, 200, 403, 200, 403, 403],
        ),
        (
            Method::GET,
            "/api/certification/batches".into(),
            None,
            [401, 200, 200, 200, 200, 200, 200],
        ),
        (
            Method::GET,
            format!("/api/certification/batches/{}", w.root),
            None,
            [401, 200, 200, 200, 200, 200, 200],
        ),
        (
            Method::GET,
            format!(
                "/api/certification/getByTransaction?transaction={}",
                w.transaction
            ),
            None,
            [401, 200, 200, 200, 200, 200, 200],
        ),
        // Decisions by the wrong party, or in the wrong state.
        (
            Method::POST,
            format!("/api/subscriptions/{req}/accept"),
            None,
            [401, 403, 200, 403, 403, 403, 403],
        ),
        (
            Method::POST,
            format!("/api/subscriptions/{acc}/refuse"),
            None,
            [401, 403, 409, 403, 403, 403, 403],
        ),
        (
            Method::POST,
            format!("/api/subscriptions/{rev}/revoke"),
            None,
            [401, 403, 409, 403, 403, 403, 403],
        ),
        (
            Method::POST,
            format!("/api/subscriptions/{req}/cancel"),
            None,
            [401, 403, 403, 403, 403, 403, 403],
        ),
        (
            Method::POST,
            format!("/api/subscriptions/{rev}/cancel"),
            None,
            [401, 403, 403, 403, 403, 409, 403],
        ),
        (
            Method::POST,
            "/api/subscriptions".into(),
            Some(json!({ "topic": "platone/producer1" })),
            [401, 403, 403, 403, 409, 201, 201],
        ),
        (
            Method::POST,
            "/api/measurements?topic=platone/producer1".into(),
            Some(json!([1])),
            [401, 201, 201, 403, 403, 403, 403],
        ),
        // On a user who is none of the callers, so that no caller's session ends.
        (
            Method::PUT,
            "/api/users/consumer4/password".into(),
            Some(json!({ "password": "another-long-password" })),
            [401, 204, 403, 403, 403, 403, 403],
        ),
        (
            Method::DELETE,
            "/api/users/consumer4".into(),
            None,
            [401, 204, 403, 403, 403, 403, 403],
        ),
    ];
    for (method, path, body, statuses) in &api {
        // The admin last in each row: a change it may make must not decide another's cell.
        for caller in (2..7).chain([0, 1]) {
            let (status, text) = call(&w, caller, method.clone(), path, body.clone()).await;
            check(
                CALLERS[caller],
                &format!("{method} {path}"),
                statuses[caller],
                status,
                &text,
            );
        }
    }

    // What getByTransaction lists is what the caller may read, and all of it.
    let path = format!(
        "/api/certification/getByTransaction?transaction={}",
        w.transaction
    );
    for (caller, readable) in [
        (2, vec![m1]),
        (4, vec![m1]),
        (3, vec![m2]),
        (5, vec![]),
        (6, vec![]),
    ] {
        let (_, text) = call(&w, caller, Method::GET, &path, None).await;
        let data: Value = serde_json::from_str(&text).unwrap();
        let ids: Vec<i64> = data["measurements"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["id"].as_i64().unwrap())
            .collect();
        assert!(
            ids.iter().all(|id| readable.contains(id)),
            "getByTransaction as {} lists {ids:?}",
            CALLERS[caller]
        );
        if readable.contains(&m1) {
            assert!(ids.contains(&m1), "getByTransaction as {}", CALLERS[caller]);
        }
    }
}

#[tokio::test]
async fn every_dashboard_page_answers_each_caller_as_its_role_and_grants_allow() {
    let w = world().await;
    let m1 = w.owner_reading;
    let m2 = w.other_reading;
    let names = [
        "",
        "admin",
        "producer1",
        "producer2",
        "consumer1",
        "consumer2",
        "consumer3",
    ];
    //                anonymous admin owner other granted revoked none
    let pages: Vec<(String, [u16; 7])> = vec![
        ("/".into(), [303, 303, 303, 303, 303, 303, 303]),
        ("/login".into(), [200, 200, 200, 200, 200, 200, 200]),
        ("/admin".into(), [303, 200, 403, 403, 403, 403, 403]),
        ("/producer".into(), [303, 403, 200, 200, 403, 403, 403]),
        ("/consumer".into(), [303, 403, 403, 403, 200, 200, 200]),
        (
            "/data/producer1".into(),
            [303, 200, 200, 403, 200, 403, 403],
        ),
        (
            "/data/producer2".into(),
            [303, 200, 403, 200, 403, 403, 403],
        ),
        (
            "/data/producer1/history.csv".into(),
            [303, 200, 200, 403, 200, 403, 403],
        ),
        (
            "/data/producer1/chart.svg".into(),
            [303, 200, 200, 403, 200, 403, 403],
        ),
        ("/certification".into(), [303, 200, 200, 200, 200, 200, 200]),
        (
            format!("/certification/readings/{m1}"),
            [303, 200, 200, 403, 200, 403, 403],
        ),
        (
            format!("/certification/readings/{m2}"),
            [303, 200, 403, 200, 403, 403, 403],
        ),
    ];
    for (caller, name) in names.iter().enumerate() {
        let mut browser = Browser::new(&w.app);
        if caller > 0 {
            let password = if caller == 1 {
                ADMIN_PASSWORD
            } else {
                PASSWORD
            };
            let page = browser.login(name, password).await;
            assert_eq!(page.status, StatusCode::SEE_OTHER, "login as {name}");
        }
        for (path, statuses) in &pages {
            let page = browser.get(path).await;
            check(
                CALLERS[caller],
                &format!("GET {path}"),
                statuses[caller],
                page.status,
                &page.body,
            );
        }
    }
}
