//! The integration layer as devices and consumers see it: real MQTT clients (rumqttc), both
//! protocol versions, against the embedded broker and against a real Mosquitto driven through
//! its Dynamic Security plugin. One behaviour, one function; [`on_both_brokers!`] runs it on
//! each. Where Mosquitto answers differently (its reason codes, its PUBACK before the BAL
//! commits), the test says so.

use std::io::{Read, Write};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::*;
use crate::mqtt_client::*;

/// Runs each named `async fn(Broker)` as two tests: `embedded::<name>` and `mosquitto::<name>`.
macro_rules! on_both_brokers {
    ($($name:ident),* $(,)?) => {
        mod embedded {
            $( #[tokio::test] async fn $name() { super::$name(super::Broker::Embedded).await } )*
        }
        mod mosquitto {
            $( #[tokio::test] async fn $name() { super::$name(super::Broker::Mosquitto).await } )*
        }
    };
}

on_both_brokers!(
    devices_log_in_with_their_bal_password_on_both_protocol_versions,
    a_deleted_user_is_disconnected_and_cannot_log_in_again,
    a_password_change_ends_mqtt_sessions_and_the_old_password_stops_working,
    a_password_changed_by_another_process_stops_the_old_one,
    every_message_a_producer_publishes_is_stored_exactly,
    publishing_outside_ones_own_topic_is_refused_and_stores_nothing,
    oversized_payloads_are_refused_and_not_stored,
    a_consumer_subscribes_only_after_the_producer_accepted,
    filters_reaching_beyond_a_granted_producer_are_refused_to_everyone,
    delivery_stops_within_a_second_of_revocation_on_a_live_subscription,
    delivery_stops_when_a_grant_expires_on_a_live_subscription,
    mqtt_over_tls_works_with_the_brokers_ca,
    https_uploads_are_stored_beside_mqtt_messages,
);

pub(crate) fn login<'a>(
    app: &TestApp,
    client_id: &'a str,
    username: &'a str,
    password: &'a str,
) -> Login<'a> {
    Login {
        port: app.mqtt_port,
        client_id,
        username,
        password,
        tls_ca: None,
        will_topic: None,
    }
}

pub(crate) async fn stored(app: &TestApp, producer: &str) -> Vec<Value> {
    let page = app
        .get(
            &format!("/api/measurements?producer={producer}&limit=1000"),
            &app.admin,
        )
        .await;
    json_ok(page, StatusCode::OK).await["items"]
        .as_array()
        .unwrap()
        .clone()
}

/// The producer's measurements once at least `n` are stored (within 5 s). Mosquitto
/// acknowledges a device before the BAL commits, so storage is awaited, not assumed.
pub(crate) async fn stored_at_least(app: &TestApp, producer: &str, n: usize) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let items = stored(app, producer).await;
        if items.len() >= n || tokio::time::Instant::now() > deadline {
            return items;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Connects and subscribes, retrying for up to 2 s: with Mosquitto a decision reaches the
/// broker a few milliseconds after the API answered, and reconnects the consumer.
pub(crate) async fn subscribed(
    app: &TestApp,
    v: Version,
    client_id: &str,
    user: &str,
    filter: &str,
) -> Mqtt {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    loop {
        let mut c = Mqtt::connect(v, login(app, client_id, user, PASSWORD));
        // A refusal, or a disconnect (Mosquitto ends a consumer's sessions when the BAL
        // changes its role), both mean: not yet.
        if c.next().await == Some(Ev::Connected)
            && c.subscribe_answer(filter).await == Some(Ev::SubAck(vec![true]))
        {
            return c;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{user} could not subscribe to {filter}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until `user` can log in with `password` (at once with the embedded broker; after the
/// change reaches Mosquitto otherwise), within `limit`.
pub(crate) async fn logs_in_within(
    app: &TestApp,
    user: &str,
    password: &str,
    limit: Duration,
) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let probe = format!("probe-{user}");
        let mut c = Mqtt::connect(V5, login(app, &probe, user, password));
        if c.next().await == Some(Ev::Connected) {
            return true;
        }
        if tokio::time::Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// An app with producer1 (and its device), consumer1 granted, consumer2 not.
pub(crate) async fn granted_world(b: Broker) -> (TestApp, String, String) {
    let app = spawn_app_on(b, |_| {}).await;
    let p1 = app.user("producer1", "producer").await;
    let c1 = app.user("consumer1", "consumer").await;
    app.create_user("consumer2", "consumer").await;
    let id = app.grant(&c1, &p1, "producer1").await;
    for user in ["producer1", "consumer1", "consumer2"] {
        assert!(
            logs_in_within(&app, user, PASSWORD, Duration::from_secs(2)).await,
            "{user}"
        );
    }
    (app, p1, id)
}

/// Creates a user and waits until its devices can log in (at once with the embedded broker).
async fn device_user(app: &TestApp, name: &str, role: &str) {
    app.create_user(name, role).await;
    assert!(
        logs_in_within(app, name, PASSWORD, Duration::from_secs(2)).await,
        "{name}"
    );
}

async fn devices_log_in_with_their_bal_password_on_both_protocol_versions(b: Broker) {
    let app = spawn_app_on(b, |_| {}).await;
    device_user(&app, "producer1", "producer").await;
    for v in [V311, V5] {
        let mut ok = Mqtt::connect(v, login(&app, "pmu-1", "producer1", PASSWORD));
        assert_eq!(ok.next().await, Some(Ev::Connected), "{v:?}");
        for (user, pass) in [
            ("producer1", "wrong-password"),
            ("nobody", PASSWORD),
            ("", ""),
        ] {
            let mut bad = Mqtt::connect(v, login(&app, "intruder", user, pass));
            match bad.next().await {
                Some(Ev::Closed(reason)) => assert!(
                    reason.contains("BadUserNamePassword") || reason.contains("NotAuthorized"),
                    "{v:?} {user}: {reason}"
                ),
                other => panic!("{v:?} {user}: expected a refusal, got {other:?}"),
            }
        }
    }
}

async fn a_deleted_user_is_disconnected_and_cannot_log_in_again(b: Broker) {
    let app = spawn_app_on(b, |_| {}).await;
    device_user(&app, "producer1", "producer").await;
    let mut device = Mqtt::online(V5, login(&app, "pmu-1", "producer1", PASSWORD)).await;
    app.delete("/api/users/producer1", &app.admin).await;
    // At once, not at the next periodic re-check.
    let closed = device.next_within(Duration::from_secs(2)).await;
    assert!(matches!(closed, Some(Ev::Closed(_))), "{closed:?}");
    let mut again = Mqtt::connect(V5, login(&app, "pmu-1", "producer1", PASSWORD));
    assert!(matches!(again.next().await, Some(Ev::Closed(_))));
}

async fn a_password_change_ends_mqtt_sessions_and_the_old_password_stops_working(b: Broker) {
    let app = spawn_app_on(b, |_| {}).await;
    device_user(&app, "producer1", "producer").await;
    // Two logins: with the embedded broker the second is answered from the verified-credentials
    // cache, which must not outlive the password.
    let _first = Mqtt::online(V5, login(&app, "pmu-1", "producer1", PASSWORD)).await;
    let mut device = Mqtt::online(V5, login(&app, "pmu-2", "producer1", PASSWORD)).await;
    let r = app
        .put(
            "/api/users/producer1/password",
            &app.admin,
            serde_json::json!({ "password": "a-new-password" }),
        )
        .await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert!(
        matches!(device.next().await, Some(Ev::Closed(_))),
        "session ended"
    );
    let mut old = Mqtt::connect(V5, login(&app, "pmu-2", "producer1", PASSWORD));
    assert!(
        matches!(old.next().await, Some(Ev::Closed(_))),
        "old password refused"
    );
    Mqtt::online(V5, login(&app, "pmu-2", "producer1", "a-new-password")).await;
}

async fn a_password_changed_by_another_process_stops_the_old_one(b: Broker) {
    let app = spawn_app_on(b, |_| {}).await;
    device_user(&app, "producer1", "producer").await;
    // Verified once: the embedded broker now remembers this password.
    Mqtt::online(V5, login(&app, "pmu-1", "producer1", PASSWORD)).await;
    let mut cli = crate::helpers::bal_cli(&app.data_dir);
    cli.args(["user", "passwd", "producer1", "--password-stdin"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null());
    if b == Broker::Mosquitto {
        // The other process knows the broker too, as with a shared bal.toml.
        cli.env("BAL_BROKER__KIND", "mosquitto");
    }
    let mut cli = cli.spawn().unwrap();
    use std::io::Write as _;
    cli.stdin
        .take()
        .unwrap()
        .write_all(b"changed-elsewhere\n")
        .unwrap();
    assert!(cli.wait().unwrap().success());
    // The embedded broker checks the SCD at each login; Mosquitto hears of it at the next
    // reconciliation (every second in these tests).
    let limit = match b {
        Broker::Embedded => Duration::ZERO,
        Broker::Mosquitto => Duration::from_secs(3),
    };
    assert!(
        logs_in_within(&app, "producer1", "changed-elsewhere", limit).await,
        "new password works"
    );
    let mut old = Mqtt::connect(V5, login(&app, "pmu-2", "producer1", PASSWORD));
    assert!(
        matches!(old.next().await, Some(Ev::Closed(_))),
        "old password refused"
    );
}

async fn every_message_a_producer_publishes_is_stored_exactly(b: Broker) {
    let app = spawn_app_on(b, |_| {}).await;
    device_user(&app, "producer1", "producer").await;
    let pmu = b"230.1\t-12.5\t50.01\t7\t1700000000123456";
    for v in [V311, V5] {
        let mut device = Mqtt::online(v, login(&app, "meter-1", "producer1", PASSWORD)).await;
        let ack = device
            .publish_acked("platone/producer1/meter-1", br#"{"p_kw": 1.5}"#)
            .await;
        assert_eq!(ack, Ev::PubAck("Success".into()), "{v:?}");
        let ack = device.publish_acked("platone/producer1", pmu).await;
        assert_eq!(ack, Ev::PubAck("Success".into()), "{v:?}");
        device.publish("platone/producer1", false, b"qos0").await;
        if b == Broker::Embedded {
            // The PUBACK was sent after the commit: both are there already.
            let n = stored(&app, "producer1").await.len();
            assert!(n >= if v == V311 { 2 } else { 5 }, "{v:?}: {n}");
        }
    }
    let items = stored_at_least(&app, "producer1", 6).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(stored(&app, "producer1").await.len(), 6, "each stored once");
    assert_eq!(items[0]["topic"], "platone/producer1/meter-1");
    assert_eq!(items[0]["fields"]["p_kw"], 1.5);
    assert_eq!(items[1]["payload_text"], std::str::from_utf8(pmu).unwrap());
    assert_eq!(items[1]["fields"]["frequency"], 50.01);
    assert_eq!(items[2]["payload_text"], "qos0");
}

async fn publishing_outside_ones_own_topic_is_refused_and_stores_nothing(b: Broker) {
    let app = spawn_app_on(b, |_| {}).await;
    device_user(&app, "producer1", "producer").await;
    app.create_user("producer2", "producer").await;
    device_user(&app, "consumer1", "consumer").await;
    let mut v5 = Mqtt::online(V5, login(&app, "d5", "producer1", PASSWORD)).await;
    assert_eq!(
        v5.publish_acked("platone/producer2", b"1").await,
        Ev::PubAck("NotAuthorized".into())
    );
    // The embedded broker tells an invalid topic from someone else's; Mosquitto's ACL only
    // knows "not authorised".
    let outside = match b {
        Broker::Embedded => "TopicNameInvalid",
        Broker::Mosquitto => "NotAuthorized",
    };
    assert_eq!(
        v5.publish_acked("elsewhere/x", b"1").await,
        Ev::PubAck(outside.into())
    );
    let mut consumer = Mqtt::online(V5, login(&app, "c5", "consumer1", PASSWORD)).await;
    assert_eq!(
        consumer.publish_acked("platone/consumer1", b"1").await,
        Ev::PubAck("NotAuthorized".into())
    );
    // MQTT 3.1.1 has no negative PUBACK: the embedded broker disconnects; Mosquitto
    // acknowledges and drops the message.
    let mut v3 = Mqtt::online(V311, login(&app, "d3", "producer1", PASSWORD)).await;
    let answer = v3.publish_acked("platone/producer2", b"1").await;
    match b {
        Broker::Embedded => assert!(matches!(answer, Ev::Closed(_)), "{answer:?}"),
        Broker::Mosquitto => assert_eq!(answer, Ev::PubAck("Success".into())),
    }
    // A message that is allowed, sent last: once it is stored, the refused ones would be too.
    v5.publish_acked("platone/producer1", b"fence").await;
    let items = stored_at_least(&app, "producer1", 1).await;
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["payload_text"], "fence");
    assert!(stored(&app, "producer2").await.is_empty());
}

async fn oversized_payloads_are_refused_and_not_stored(b: Broker) {
    // Mosquitto's limit covers its dynsec replies too: small, but not tiny.
    let app = spawn_app_on(b, |s| s.ingest.max_payload_bytes = 16 * 1024).await;
    device_user(&app, "producer1", "producer").await;
    let mut device = Mqtt::online(V5, login(&app, "d5", "producer1", PASSWORD)).await;
    let big = vec![b'x'; 20 * 1024];
    let answer = device.publish_acked("platone/producer1", &big).await;
    match b {
        Broker::Embedded => assert_eq!(answer, Ev::PubAck("QuotaExceeded".into())),
        // Mosquitto answers 0x95 (packet too large), which is not a PUBACK code MQTT 5 defines:
        // rumqttc drops the connection on it.
        Broker::Mosquitto => assert!(
            matches!(&answer, Ev::Closed(r) if r.contains("149")),
            "{answer:?}"
        ),
    }
    let mut device = Mqtt::online(V5, login(&app, "d5b", "producer1", PASSWORD)).await;
    assert_eq!(
        device.publish_acked("platone/producer1", b"fits").await,
        Ev::PubAck("Success".into())
    );
    let items = stored_at_least(&app, "producer1", 1).await;
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["payload_text"], "fits");
}

async fn a_consumer_subscribes_only_after_the_producer_accepted(b: Broker) {
    let app = spawn_app_on(b, |_| {}).await;
    let p1 = app.user("producer1", "producer").await;
    let c1 = app.user("consumer1", "consumer").await;
    assert!(logs_in_within(&app, "consumer1", PASSWORD, Duration::from_secs(2)).await);
    for v in [V311, V5] {
        let mut c = Mqtt::online(v, login(&app, &format!("c-{v:?}"), "consumer1", PASSWORD)).await;
        assert!(
            !c.try_subscribe("platone/producer1").await,
            "{v:?} before any request"
        );
    }
    let id = app.request_subscription(&c1, "producer1").await;
    let mut c = Mqtt::online(V5, login(&app, "c-pending", "consumer1", PASSWORD)).await;
    assert!(
        !c.try_subscribe("platone/producer1/#").await,
        "while only requested"
    );

    app.post_empty(&format!("/api/subscriptions/{id}/accept"), &p1)
        .await;
    let mut device = Mqtt::online(V5, login(&app, "pmu-1", "producer1", PASSWORD)).await;
    for v in [V311, V5] {
        let mut c = subscribed(
            &app,
            v,
            &format!("c2-{v:?}"),
            "consumer1",
            "platone/producer1/#",
        )
        .await;
        device.publish_acked("platone/producer1/pmu-1", b"42").await;
        let got = c.until(|e| matches!(e, Ev::Message(..))).await;
        assert_eq!(
            got,
            Some(Ev::Message(
                "platone/producer1/pmu-1".into(),
                b"42".to_vec()
            )),
            "{v:?}"
        );
    }
}

async fn filters_reaching_beyond_a_granted_producer_are_refused_to_everyone(b: Broker) {
    let (app, _, _) = granted_world(b).await;
    app.create_user("admin2", "admin").await;
    for user in ["consumer1", "producer1", "admin2"] {
        // Granted reads work (so the refusals below are about the filter, not the login).
        let mut c = subscribed(&app, V5, &format!("w-{user}"), user, "platone/producer1").await;
        for filter in [
            "#",
            "platone/#",
            "platone/+",
            "+/producer1",
            "$share/g/platone/#",
            "$share/g/platone/producer1",
            "platone/+/x",
        ] {
            assert!(!c.try_subscribe(filter).await, "{user} {filter}");
        }
    }
    // A name that merely starts like a granted producer's is another producer.
    let mut c = subscribed(&app, V5, "w-c1b", "consumer1", "platone/producer1").await;
    assert!(!c.try_subscribe("platone/producer1x").await);
    // consumer2 holds no grant at all.
    let mut c2 = Mqtt::online(V311, login(&app, "w-c2", "consumer2", PASSWORD)).await;
    assert!(!c2.try_subscribe("platone/producer1").await);
}

async fn delivery_stops_within_a_second_of_revocation_on_a_live_subscription(b: Broker) {
    for v in [V311, V5] {
        let (app, p1, id) = granted_world(b).await;
        let mut device = Mqtt::online(V5, login(&app, "pmu-1", "producer1", PASSWORD)).await;
        let mut c = subscribed(&app, v, "live", "consumer1", "platone/producer1/#").await;
        device.publish_acked("platone/producer1/a", b"before").await;
        assert!(
            c.until(|e| matches!(e, Ev::Message(..))).await.is_some(),
            "{v:?}"
        );

        let r = app
            .post_empty(&format!("/api/subscriptions/{id}/revoke"), &p1)
            .await;
        assert_eq!(r.status(), StatusCode::OK);
        tokio::time::sleep(Duration::from_secs(1)).await;
        device.publish_acked("platone/producer1/a", b"after").await;
        let leaked = c
            .until(|e| matches!(e, Ev::Message(_, p) if p == b"after"))
            .await;
        assert_eq!(leaked, None, "{v:?}: delivered after revocation");
        // And it cannot subscribe again (Mosquitto disconnected it: log in anew).
        if b == Broker::Mosquitto {
            c = Mqtt::online(v, login(&app, "live2", "consumer1", PASSWORD)).await;
        }
        assert!(!c.try_subscribe("platone/producer1/#").await, "{v:?}");
    }
}

async fn delivery_stops_when_a_grant_expires_on_a_live_subscription(b: Broker) {
    let app = spawn_app_on(b, |_| {}).await;
    let p1 = app.user("producer1", "producer").await;
    let c1 = app.user("consumer1", "consumer").await;
    for user in ["producer1", "consumer1"] {
        assert!(logs_in_within(&app, user, PASSWORD, Duration::from_secs(2)).await);
    }
    let id = app.request_subscription(&c1, "producer1").await;
    let until = chrono::Utc::now() + chrono::Duration::milliseconds(2000);
    let r = app
        .post(
            &format!("/api/subscriptions/{id}/accept"),
            &p1,
            serde_json::json!({ "expires_at": until }),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let mut device = Mqtt::online(V5, login(&app, "pmu-1", "producer1", PASSWORD)).await;
    let mut c = subscribed(&app, V5, "live", "consumer1", "platone/producer1/#").await;
    device.publish_acked("platone/producer1/a", b"before").await;
    assert!(c.until(|e| matches!(e, Ev::Message(..))).await.is_some());

    // Expiry + the sweeper's second + the promised second.
    let left = (until - chrono::Utc::now()).to_std().unwrap_or_default();
    tokio::time::sleep(left + Duration::from_secs(2)).await;
    device.publish_acked("platone/producer1/a", b"after").await;
    let leaked = c
        .until(|e| matches!(e, Ev::Message(_, p) if p == b"after"))
        .await;
    assert_eq!(leaked, None, "delivered after expiry");
    if b == Broker::Mosquitto {
        c = Mqtt::online(V5, login(&app, "live2", "consumer1", PASSWORD)).await;
    }
    assert!(!c.try_subscribe("platone/producer1/#").await);
}

/// Embedded broker only: Mosquitto 2.0.11 does not refuse such a will at CONNECT.
#[tokio::test]
async fn a_will_outside_ones_own_topic_is_refused_at_connect() {
    let (app, _, _) = granted_world(Broker::Embedded).await;
    let mut l = login(&app, "pmu-1", "producer1", PASSWORD);
    l.will_topic = Some("platone/consumer1");
    let mut c = Mqtt::connect(V5, l);
    assert!(matches!(c.next().await, Some(Ev::Closed(_))));
    let mut l = login(&app, "pmu-2", "producer1", PASSWORD);
    l.will_topic = Some("platone/producer1/status");
    assert_eq!(Mqtt::connect(V5, l).next().await, Some(Ev::Connected));
}

async fn mqtt_over_tls_works_with_the_brokers_ca(b: Broker) {
    let (app, _, _) = granted_world(b).await;
    assert!(logs_in_within(&app, "producer1", PASSWORD, Duration::from_secs(2)).await);
    let ca = app.mqtt_ca.clone().unwrap();
    for v in [V311, V5] {
        let mut l = login(&app, "tls-dev", "producer1", PASSWORD);
        l.port = app.mqtts_port;
        l.tls_ca = Some(&ca);
        let mut d = Mqtt::online(v, l).await;
        assert_eq!(
            d.publish_acked("platone/producer1", b"over tls").await,
            Ev::PubAck("Success".into())
        );
    }
    assert_eq!(stored_at_least(&app, "producer1", 2).await.len(), 2);
}

async fn https_uploads_are_stored_beside_mqtt_messages(b: Broker) {
    let app = spawn_app_on(b, |_| {}).await;
    let p1 = app.user("producer1", "producer").await;
    assert!(logs_in_within(&app, "producer1", PASSWORD, Duration::from_secs(2)).await);
    let mut device = Mqtt::online(V5, login(&app, "pmu-1", "producer1", PASSWORD)).await;
    device
        .publish_acked("platone/producer1", b"over mqtt")
        .await;
    stored_at_least(&app, "producer1", 1).await;
    let r = app
        .post(
            "/api/measurements",
            &p1,
            serde_json::json!([{ "energy_kwh": 0.25 }, "over https"]),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    // 201 means committed: no waiting.
    let items = stored(&app, "producer1").await;
    assert_eq!(items.len(), 3);
    assert_eq!(items[1]["fields"]["energy_kwh"], 0.25);
    assert_eq!(items[2]["payload_text"], "over https");
}

#[tokio::test]
async fn a_device_session_cannot_be_taken_over_by_another_user() {
    // Embedded broker only: Mosquitto 2.0 lets any authenticated client take over a client id.
    let (app, _, _) = granted_world(Broker::Embedded).await;
    let mut device = Mqtt::online(V5, login(&app, "pmu-1", "producer1", PASSWORD)).await;
    let mut thief = Mqtt::connect(V5, login(&app, "pmu-1", "consumer1", PASSWORD));
    assert!(matches!(thief.next().await, Some(Ev::Closed(_))));
    assert_eq!(
        device
            .publish_acked("platone/producer1", b"still here")
            .await,
        Ev::PubAck("Success".into())
    );
}

/// `mqtt.max_sessions`: a full node refuses the next CONNECT with "server unavailable" on
/// both protocol versions, keeps serving the sessions it has, lets a client that holds one
/// reconnect, and takes new ones again once a session ends.
#[tokio::test]
async fn a_full_node_refuses_new_sessions_and_serves_the_ones_it_has() {
    let app = spawn_app_on(Broker::Embedded, |s| s.mqtt.max_sessions = 2).await;
    app.user("producer1", "producer").await;
    let port = app.mqtt_port;
    let mut first = Mqtt::online(V5, login(&app, "pmu-1", "producer1", PASSWORD)).await;
    let (second, accepted) = tokio::task::spawn_blocking(move || raw_connect(port, b"pmu-2"))
        .await
        .unwrap();
    assert_eq!(accepted, [0x20, 2, 0, 0]);
    for v in [V311, V5] {
        let refused = Mqtt::connect(v, login(&app, "pmu-3", "producer1", PASSWORD))
            .next()
            .await;
        match refused {
            Some(Ev::Closed(why)) => assert!(why.contains("Unavailable"), "{v:?}: {why}"),
            other => panic!("{v:?}: the third session was not refused: {other:?}"),
        }
    }
    assert_eq!(
        first
            .publish_acked("platone/producer1", b"still served")
            .await,
        Ev::PubAck("Success".into())
    );
    // A client whose session exists may come back: it takes its session over.
    let mut again = Mqtt::online(V311, login(&app, "pmu-1", "producer1", PASSWORD)).await;
    assert_eq!(
        again.publish_acked("platone/producer1", b"came back").await,
        Ev::PubAck("Success".into())
    );
    // The raw client leaves (DISCONNECT, then the socket closes): its clean session ends.
    tokio::task::spawn_blocking(move || {
        let mut second = second;
        second.write_all(&[0xE0, 0]).unwrap();
    })
    .await
    .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let mut c = Mqtt::connect(V311, login(&app, "pmu-3", "producer1", PASSWORD));
        let got = c.next().await;
        if got == Some(Ev::Connected) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "a session ended but no new one is accepted: {got:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(stored_at_least(&app, "producer1", 2).await.len(), 2);
}

/// A hand-made MQTT 3.1.1 CONNECT (clean session) as producer1: the open socket and the
/// CONNACK's four bytes.
fn raw_connect(port: u16, client_id: &[u8]) -> (std::net::TcpStream, [u8; 4]) {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut connect = Vec::new();
    mqtt_str(&mut connect, b"MQTT");
    connect.extend_from_slice(&[4, 0b1100_0010, 0, 30]);
    mqtt_str(&mut connect, client_id);
    mqtt_str(&mut connect, b"producer1");
    mqtt_str(&mut connect, PASSWORD.as_bytes());
    s.write_all(&packet(0x10, &connect)).unwrap();
    let mut connack = [0u8; 4];
    s.read_exact(&mut connack).unwrap();
    (s, connack)
}

/// Writes an MQTT 3.1.1 string (length-prefixed).
fn mqtt_str(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(&(s.len() as u16).to_be_bytes());
    out.extend_from_slice(s);
}

fn packet(kind: u8, body: &[u8]) -> Vec<u8> {
    assert!(body.len() < 128, "one length byte is enough here");
    let mut p = vec![kind, body.len() as u8];
    p.extend_from_slice(body);
    p
}

/// Embedded broker only: it is the BAL that sees the device's DUP flag. With Mosquitto, the
/// broker handles device redeliveries, and the BAL's own redeliveries are tested in
/// `mosquitto::a_stopped_bal_loses_nothing_the_broker_queued_and_stores_it_once`.
#[tokio::test]
async fn a_redelivered_qos1_message_is_stored_once() {
    let app = spawn_app().await;
    app.create_user("producer1", "producer").await;
    let port = app.mqtt_port;
    // Hand-made packets: a client library never lets a test choose the DUP flag.
    let acks = tokio::task::spawn_blocking(move || {
        let (mut s, connack) = raw_connect(port, b"dup-dev");
        assert_eq!(connack, [0x20, 2, 0, 0], "accepted");
        let mut publish = Vec::new();
        mqtt_str(&mut publish, b"platone/producer1");
        publish.extend_from_slice(&[0, 7]);
        publish.extend_from_slice(b"{\"v\": 1}");
        let mut acks = Vec::new();
        // First delivery, then the same packet id again with DUP set, as after a lost PUBACK.
        for kind in [0x32, 0x3A] {
            s.write_all(&packet(kind, &publish)).unwrap();
            let mut ack = [0u8; 4];
            s.read_exact(&mut ack).unwrap();
            acks.push(ack);
        }
        // A new message that reuses the packet id is a new measurement.
        publish.truncate(publish.len() - 8);
        publish.extend_from_slice(b"{\"v\": 2}");
        s.write_all(&packet(0x32, &publish)).unwrap();
        let mut ack = [0u8; 4];
        s.read_exact(&mut ack).unwrap();
        acks.push(ack);
        acks
    })
    .await
    .unwrap();
    assert!(acks.iter().all(|a| *a == [0x40, 2, 0, 7]), "{acks:?}");
    let items = stored(&app, "producer1").await;
    let values: Vec<&Value> = items.iter().map(|m| &m["payload_json"]["v"]).collect();
    assert_eq!(values, [1, 2]);
}
