//! Set points (issue 23): control grants, the API and its refusals, and the whole loop with a
//! device we did not write (paho-mqtt, MQTT 5 and 3.1.1): issued, sent, received, applied or
//! rejected, every step certified and its proof checked.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::io::AsyncBufReadExt;

use crate::helpers::{Broker, PASSWORD, TestApp, assert_error, json_ok, spawn_app, spawn_app_on};
use crate::paho::python_script;

/// A producer `prod1`, an aggregator `agg1` holding an accepted control grant on it, and their
/// tokens: (producer, aggregator).
async fn with_control_grant(app: &TestApp) -> (String, String) {
    let prod = app.user("prod1", "producer").await;
    let agg = app.user("agg1", "consumer").await;
    let request = json!({"topic": "platone/prod1", "access": "control"});
    let grant = json_ok(
        app.post("/api/subscriptions", &agg, request).await,
        StatusCode::CREATED,
    )
    .await;
    assert_eq!(grant["access"], "control");
    let id = grant["id"].as_str().unwrap();
    let accepted = json_ok(
        app.post_empty(&format!("/api/subscriptions/{id}/accept"), &prod)
            .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(accepted["status"], "accepted");
    (prod, agg)
}

fn in_a_minute() -> String {
    (chrono::Utc::now() + chrono::Duration::seconds(60)).to_rfc3339()
}

async fn issue(app: &TestApp, token: &str, device: &str, values: Value) -> reqwest::Response {
    let body = json!({"producer": "prod1", "device": device, "values": values,
        "valid_until": in_a_minute()});
    app.post("/api/setpoints", token, body).await
}

/// A paho device of `prod1` answering set points on `device`; its output lines.
struct Device {
    _child: tokio::process::Child,
    lines: tokio::sync::mpsc::UnboundedReceiver<String>,
}

impl Device {
    async fn start(app: &TestApp, device: &str, version: u8, answer: &str) -> Self {
        let mut child = python_script("paho_setpoint_device.py")
            .args(["127.0.0.1", &app.mqtt_port.to_string(), "prod1", PASSWORD])
            .arg(format!("paho-sp-{device}"))
            .args([device, &version.to_string(), answer])
            .spawn()
            .expect("python runs");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut reader = tokio::io::BufReader::new(stdout).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                let _ = tx.send(line);
            }
        });
        let mut device = Self {
            _child: child,
            lines,
        };
        let first = device.next_line().await;
        assert_eq!(first, "subscribed");
        device
    }

    async fn next_line(&mut self) -> String {
        tokio::time::timeout(Duration::from_secs(30), self.lines.recv())
            .await
            .expect("the device says something within 30 s")
            .expect("the device runs")
    }
}

/// Waits until set point `id` is in `state`; returns its detail.
async fn wait_for_state(app: &TestApp, token: &str, id: i64, state: &str) -> Value {
    let mut last = Value::Null;
    for _ in 0..300 {
        last = json_ok(
            app.get(&format!("/api/setpoints/{id}"), token).await,
            StatusCode::OK,
        )
        .await;
        if last["state"] == state {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("set point {id} never became {state}: {last}");
}

fn states(detail: &Value) -> Vec<String> {
    detail["transitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["state"].as_str().unwrap().to_owned())
        .collect()
}

/// The whole loop with a paho device; returns the final detail once every transition is
/// certified.
async fn loop_with_paho(
    broker: Broker,
    version: u8,
    answer: &str,
    final_state: &str,
) -> (TestApp, Value) {
    let mosquitto = matches!(broker, Broker::Mosquitto);
    let app = spawn_app_on(broker, |_| {}).await;
    let (prod, agg) = with_control_grant(&app).await;
    if mosquitto {
        // The reconciler gives the new producer its dynsec role (set point topics included).
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let mut device = Device::start(&app, "inv-1", version, answer).await;

    let values = json!({"q_kvar": -1.5, "p_max_kw": 3.5});
    let issued = json_ok(
        issue(&app, &agg, "inv-1", values).await,
        StatusCode::CREATED,
    )
    .await;
    assert_eq!(issued["state"], "queued");
    assert_eq!(issued["seq"], 1);
    assert_eq!(issued["topic"], "setpoints/prod1/inv-1");
    let id = issued["id"].as_i64().unwrap();

    let got = device.next_line().await;
    let parts: Vec<&str> = got.splitn(6, ' ').collect();
    assert_eq!(parts[..3], ["got", &id.to_string(), "1"], "{got}");
    if version == 5 {
        // MQTT 5 request/response: the id as correlation data, the ack topic as response topic.
        assert_eq!(parts[3], id.to_string(), "{got}");
        assert_eq!(parts[4], "setpoints/prod1/inv-1/ack", "{got}");
    }
    assert_eq!(parts[5], r#"{"p_max_kw": 3.5, "q_kvar": -1.5}"#);

    let done = wait_for_state(&app, &agg, id, final_state).await;
    let seen = states(&done);
    let expected = ["queued", "sent", "received", final_state];
    let in_order: Vec<&String> = seen.iter().filter(|s| *s != "delivered").collect();
    assert_eq!(in_order, expected, "{seen:?}");
    // The embedded broker sees the device's PUBACK (it may come after `received`); Mosquitto
    // shows none.
    assert!(seen.len() <= 5, "{seen:?}");
    if mosquitto {
        assert!(!seen.iter().any(|s| s == "delivered"), "{seen:?}");
    }
    // The producer sees it too; another consumer does not know it exists.
    json_ok(
        app.get(&format!("/api/setpoints/{id}"), &prod).await,
        StatusCode::OK,
    )
    .await;
    let stranger = app.user("stranger1", "consumer").await;
    assert_error(
        app.get(&format!("/api/setpoints/{id}"), &stranger).await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;

    // Every transition is certified: its proof verifies against the BAL's contract.
    let mut certified = Value::Null;
    for _ in 0..300 {
        certified = wait_for_state(&app, &agg, id, final_state).await;
        let transitions = certified["transitions"].as_array().unwrap();
        if transitions.iter().all(|t| t["proof"].is_object()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let me = json_ok(app.get("/api/me", &agg).await, StatusCode::OK).await;
    let wallet = me["wallet"].as_str().unwrap().to_lowercase();
    for t in certified["transitions"].as_array().unwrap() {
        let bundle = &t["proof"];
        assert_eq!(
            bundle["leaf_values"][1],
            format!(
                "audit/setpoint.{}/setpoints/prod1/inv-1",
                t["state"].as_str().unwrap()
            )
        );
        let verdict = json_ok(
            app.post("/api/certification/verify", &agg, json!({"bundle": bundle}))
                .await,
            StatusCode::OK,
        )
        .await;
        assert_eq!(verdict["valid"], true, "{verdict}");
        // The issue is signed by the issuer's wallet, checkable from the bundle alone.
        let signature = verdict["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == "signature");
        if t["state"] == "queued" {
            let check = signature.expect("a signature check");
            // Reported, not judged: the reader compares the wallet with the issuer's.
            assert_eq!(check["outcome"], "skipped", "{check}");
            let said = check["detail"].as_str().unwrap().to_lowercase();
            assert!(said.contains(&wallet), "{said} names {wallet}");
        } else {
            assert!(signature.is_none(), "{verdict}");
        }
        assert_eq!(t["detail"]["values_hash"], certified["values_hash"]);
        assert_eq!(t["detail"]["issuer"], "agg1");
    }
    (app, certified)
}

#[tokio::test]
async fn a_set_point_reaches_an_mqtt5_paho_device_and_every_step_is_certified() {
    let (app, done) = loop_with_paho(Broker::Embedded, 5, "apply", "applied").await;
    assert_eq!(done["reason"], Value::Null);
    let metrics = app.client.get(app.url("/metrics")).send().await.unwrap();
    let text = metrics.text().await.unwrap();
    assert!(
        text.contains("bal_setpoints{state=\"applied\"} 1\n"),
        "{text}"
    );
    assert!(
        text.contains("bal_setpoints{state=\"queued\"} 0\n"),
        "{text}"
    );
    app.stop().await;
}

#[tokio::test]
async fn an_mqtt311_paho_device_answers_with_the_id_in_the_payload_and_its_reason_is_kept() {
    let reject = "reject:above the inverter's rating";
    let (app, done) = loop_with_paho(Broker::Embedded, 3, reject, "rejected").await;
    assert_eq!(done["reason"], "above the inverter's rating");
    let last = done["transitions"].as_array().unwrap().last().unwrap();
    assert_eq!(last["actor"], "prod1");
    assert_eq!(last["detail"]["reason"], "above the inverter's rating");
    app.stop().await;
}

#[tokio::test]
async fn set_points_travel_through_mosquitto_under_dynsec_roles() {
    let (app, done) = loop_with_paho(Broker::Mosquitto, 5, "apply", "applied").await;
    assert_eq!(done["state"], "applied");
    app.stop().await;
}

#[tokio::test]
async fn only_admins_and_control_grants_issue_and_bad_set_points_store_nothing() {
    let app = spawn_app().await;
    let (prod, agg) = with_control_grant(&app).await;
    // A data grant gives no control; a control grant gives no data.
    let reader = app.user("reader1", "consumer").await;
    app.grant(&reader, &prod, "prod1").await;
    assert_error(
        issue(&app, &reader, "inv-1", json!({"p": 1})).await,
        StatusCode::FORBIDDEN,
        "forbidden",
    )
    .await;
    let readings = app.get("/api/measurements?producer=prod1", &agg).await;
    assert_eq!(readings.status(), StatusCode::FORBIDDEN);
    // Producers do not command, not even their own devices through the BAL.
    assert_error(
        issue(&app, &prod, "inv-1", json!({"p": 1})).await,
        StatusCode::FORBIDDEN,
        "forbidden",
    )
    .await;

    let past = (chrono::Utc::now() - chrono::Duration::seconds(1)).to_rfc3339();
    let body = |device: Value, values: Value, until: &str| json!({"producer": "prod1", "device": device, "values": values, "valid_until": until});
    let until = in_a_minute();
    let too_far = (chrono::Utc::now() + chrono::Duration::days(31)).to_rfc3339();
    let cases = [
        (
            json!({"producer": "nobody1", "device": "d", "values": {"p": 1}, "valid_until": until}),
            StatusCode::NOT_FOUND,
        ),
        (
            body(json!("d"), json!({"p": 1}), &past),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            body(json!(""), json!({"p": 1}), &until),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            body(json!("a/b"), json!({"p": 1}), &until),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            body(json!("+"), json!({"p": 1}), &until),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            body(json!("dev#"), json!({"p": 1}), &until),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            body(json!("d"), json!([1, 2]), &until),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            body(json!("d"), json!(5), &until),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            body(json!("d"), json!({}), &until),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            body(json!("d"), json!({"p": 1}), "tomorrow"),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            body(json!("d"), json!({"p": 1}), &too_far),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            body(json!("d"), json!({"text": "x".repeat(5000)}), &until),
            StatusCode::PAYLOAD_TOO_LARGE,
        ),
    ];
    for (request, status) in cases {
        let r = app.post("/api/setpoints", &agg, request.clone()).await;
        assert_eq!(r.status(), status, "{request}");
        let error: Value = r.json().await.unwrap();
        assert!(error["message"].is_string(), "{error}");
    }
    // A number no double holds is valid JSON, but not a value we can keep exactly: 422.
    let raw = format!(
        r#"{{"producer":"prod1","device":"d","values":{{"p":1e999}},"valid_until":"{until}"}}"#
    );
    let r = app
        .client
        .post(app.url("/api/setpoints"))
        .bearer_auth(&agg)
        .header("content-type", "application/json")
        .body(raw)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let r = app
        .client
        .post(app.url("/api/setpoints"))
        .bearer_auth(&agg)
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let page = json_ok(app.get("/api/setpoints", &app.admin).await, StatusCode::OK).await;
    assert_eq!(page["setpoints"], json!([]), "nothing partial is stored");

    // The admin (the DSO) commands any producer; a newer set point of the same keys supersedes
    // the older, and the issuer cancels what the device has not received.
    let first = json_ok(
        issue(&app, &app.admin, "offline-1", json!({"p": 1, "q": 0})).await,
        StatusCode::CREATED,
    )
    .await;
    let second = json_ok(
        issue(&app, &agg, "offline-1", json!({"q": 1, "p": 2})).await,
        StatusCode::CREATED,
    )
    .await;
    assert_eq!(second["seq"], 2);
    let first_now = json_ok(
        app.get(&format!("/api/setpoints/{}", first["id"]), &app.admin)
            .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(first_now["state"], "superseded");
    let cancel = format!("/api/setpoints/{}/cancel", second["id"]);
    assert_error(
        app.post_empty(&cancel, &prod).await,
        StatusCode::FORBIDDEN,
        "forbidden",
    )
    .await;
    let cancelled = json_ok(app.post_empty(&cancel, &agg).await, StatusCode::OK).await;
    assert_eq!(cancelled["state"], "cancelled");
    assert_error(
        app.post_empty(&cancel, &agg).await,
        StatusCode::CONFLICT,
        "conflict",
    )
    .await;

    // Listing: the producer sees both, the aggregator only its own, pages by cursor.
    let mine = json_ok(app.get("/api/setpoints", &agg).await, StatusCode::OK).await;
    assert_eq!(mine["setpoints"].as_array().unwrap().len(), 1);
    let theirs = json_ok(
        app.get("/api/setpoints?producer=prod1&limit=1", &prod)
            .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(theirs["setpoints"][0]["id"], second["id"]);
    let next = theirs["next_before"].as_i64().unwrap();
    let older = json_ok(
        app.get(
            &format!("/api/setpoints?producer=prod1&before={next}"),
            &prod,
        )
        .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(older["setpoints"][0]["id"], first["id"]);
    app.stop().await;
}

/// The `/subscriptions/<id>/accept` form's id in a producer's requests page.
fn accept_form_id(html: &str) -> String {
    let at = html.find("/accept\"").expect("an accept form");
    let start = html[..at].rfind("/subscriptions/").unwrap() + "/subscriptions/".len();
    html[start..at].to_owned()
}

#[tokio::test]
async fn the_dashboard_asks_for_control_then_issues_follows_and_cancels_a_set_point() {
    use crate::web::{Browser, csrf_in};
    let app = crate::helpers::spawn_app_with(|s| s.certify.batch_window_ms = 100).await;
    app.create_user("prod1", "producer").await;
    app.create_user("agg1", "consumer").await;
    let mut c = Browser::new(&app);
    c.login("agg1", PASSWORD).await;
    let mut p = Browser::new(&app);
    p.login("prod1", PASSWORD).await;

    let none = c.get("/setpoints").await;
    assert_eq!(none.status, StatusCode::OK);
    assert!(!none.body.contains(r#"id="issue""#), "no control, no form");
    assert!(none.body.contains("control grant"), "{}", none.body);

    // Control is asked for on the producers page and accepted on the producer's.
    let csrf = c.csrf("/consumer").await;
    let asked = c
        .post(
            "/subscriptions",
            &[
                ("csrf", &csrf),
                ("topic", "platone/prod1"),
                ("access", "control"),
            ],
        )
        .await;
    assert_eq!(asked.status, StatusCode::SEE_OTHER);
    let list = c.get(asked.location.as_deref().unwrap()).await;
    assert!(
        list.body
            .contains("Requested control of the devices of platone/prod1"),
        "{}",
        list.body
    );
    let requests = p.get("/producer").await;
    assert!(requests.body.contains("control of your devices"));
    let id = accept_form_id(&requests.body);
    let accepted = p
        .post(
            &format!("/subscriptions/{id}/accept"),
            &[("csrf", &csrf_in(&requests.body)), ("expires_at", "")],
        )
        .await;
    assert_eq!(accepted.status, StatusCode::SEE_OTHER);

    // Issued by form; bad values come back as a 422 page, nothing stored.
    let form = c.get("/setpoints").await;
    assert!(form.body.contains(r#"id="issue""#) && form.body.contains(r#"<option value="prod1">"#));
    let csrf = csrf_in(&form.body);
    let fields = |values: &'static str| {
        [
            ("producer", "prod1"),
            ("device", "meter-9"),
            ("values", values),
            ("valid_minutes", "10"),
        ]
    };
    let mut bad = vec![("csrf", csrf.as_str())];
    bad.extend(fields("[1, 2]"));
    assert_eq!(
        c.post("/setpoints", &bad).await.status,
        StatusCode::UNPROCESSABLE_ENTITY
    );
    let mut good = vec![("csrf", csrf.as_str())];
    good.extend(fields(r#"{"p_max_kw": 2}"#));
    let issued = c.post("/setpoints", &good).await;
    assert_eq!(issued.status, StatusCode::SEE_OTHER);
    let location = issued.location.unwrap();
    let detail_path = location.split('?').next().unwrap().to_owned();
    let detail = c.get(&location).await;
    assert!(detail.body.contains("issued to prod1"), "{}", detail.body);
    assert!(detail.body.contains(r#"data-state="queued""#));

    // The producer sees it; another consumer does not.
    let theirs = p.get("/setpoints").await;
    assert!(theirs.body.contains("meter-9"));
    app.create_user("stranger1", "consumer").await;
    let mut s = Browser::new(&app);
    s.login("stranger1", PASSWORD).await;
    assert_eq!(s.get(&detail_path).await.status, StatusCode::NOT_FOUND);

    // Cancelled by form (no device has it), and each transition's bundle once anchored.
    let cancel = format!("{detail_path}/cancel");
    let cancelled = c.post(&cancel, &[("csrf", &csrf_in(&detail.body))]).await;
    assert_eq!(cancelled.status, StatusCode::SEE_OTHER);
    let mut page = c.get(&detail_path).await;
    assert!(
        page.body.contains(r#"data-state="cancelled""#),
        "{}",
        page.body
    );
    for _ in 0..100 {
        if !page.body.contains("pending (the next batch)") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        page = c.get(&detail_path).await;
    }
    let link_at = page.body.find("/proofs/").expect("a proof link");
    let start = page.body[..link_at].rfind('"').unwrap() + 1;
    let end = link_at + page.body[link_at..].find('"').unwrap();
    let bundle = c.get(&page.body[start..end]).await;
    assert_eq!(bundle.status, StatusCode::OK);
    let bundle: Value = serde_json::from_str(&bundle.body).unwrap();
    assert_eq!(bundle["format"], "bal-proof/1");
    app.stop().await;
}

#[tokio::test]
async fn an_issuer_over_its_rate_gets_429_with_a_retry_time_and_others_do_not() {
    let app = crate::helpers::spawn_app_with(|s| {
        s.setpoints.issue_burst = 2;
        s.setpoints.issue_per_second = 1;
    })
    .await;
    let (_prod, agg) = with_control_grant(&app).await;
    for _ in 0..2 {
        let r = issue(&app, &agg, "inv-1", json!({"p": 1})).await;
        assert_eq!(r.status(), StatusCode::CREATED);
    }
    let r = issue(&app, &agg, "inv-1", json!({"p": 1})).await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&retry), "{retry}");
    // The admin's budget is its own.
    let r = issue(&app, &app.admin, "inv-1", json!({"p": 1})).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    app.stop().await;
}

#[tokio::test]
async fn a_set_point_issued_while_its_device_is_away_reaches_it_as_soon_as_it_subscribes() {
    let app = spawn_app().await;
    let (_prod, agg) = with_control_grant(&app).await;
    let issued = json_ok(
        issue(&app, &agg, "late-1", json!({"p_max_kw": 1})).await,
        StatusCode::CREATED,
    )
    .await;
    let id = issued["id"].as_i64().unwrap();
    // Sent to nobody (no session holds a subscription): its next try is a retry away (10 s).
    wait_for_state(&app, &agg, id, "sent").await;
    let mut device = Device::start(&app, "late-1", 3, "apply").await;
    let subscribed = std::time::Instant::now();
    let got = device.next_line().await;
    assert!(got.starts_with(&format!("got {id} 1 ")), "{got}");
    wait_for_state(&app, &agg, id, "applied").await;
    assert!(
        subscribed.elapsed() < Duration::from_secs(5),
        "applied {:?} after the device subscribed: it waited for the retry",
        subscribed.elapsed()
    );
    app.stop().await;
}

#[tokio::test]
async fn no_control_grant_or_set_point_while_a_replica_of_an_earlier_release_runs() {
    let app = spawn_app().await;
    let (_prod, agg) = with_control_grant(&app).await;
    let url = app.settings.database_url();
    let store = bal_scd::connect(&url, &bal_scd::ConnectOptions::default())
        .await
        .unwrap();
    // A replica of release 0.1.0 (which reads a control grant as a data grant) is live.
    let old = bal_scd::ReplicaInfo {
        id: "bal-old".into(),
        version: "0.1.0".into(),
        mqtt: bal_scd::MqttRole::Mosquitto { shared: true },
        embedded_chain: false,
    };
    store
        .heartbeat(&old, std::time::Duration::from_secs(60))
        .await
        .unwrap();
    let refused = issue(&app, &agg, "inv-1", json!({"p": 1})).await;
    let message = assert_error(refused, StatusCode::CONFLICT, "conflict").await;
    assert!(message.contains("bal-old (0.1.0)"), "{message}");
    app.user("agg2", "consumer").await;
    let agg2 = app.token("agg2", PASSWORD).await;
    let request = json!({"topic": "platone/prod1", "access": "control"});
    let r = app.post("/api/subscriptions", &agg2, request.clone()).await;
    assert_error(r, StatusCode::CONFLICT, "conflict").await;
    // Data grants go on as before.
    let data = app
        .post(
            "/api/subscriptions",
            &agg2,
            json!({"topic": "platone/prod1"}),
        )
        .await;
    assert_eq!(data.status(), StatusCode::CREATED);
    // Once it is gone (its heartbeats stop), set points are accepted again.
    store.leave("bal-old").await.unwrap();
    let ok = issue(&app, &agg, "inv-1", json!({"p": 1})).await;
    assert_eq!(ok.status(), StatusCode::CREATED);
    app.stop().await;
}
