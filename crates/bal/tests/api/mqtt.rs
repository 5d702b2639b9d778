//! The integration layer as devices and consumers see it: real MQTT clients (rumqttc), both
//! protocol versions, against the embedded broker.

use std::io::{Read, Write};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::*;
use crate::mqtt_client::*;

fn login<'a>(app: &TestApp, client_id: &'a str, username: &'a str, password: &'a str) -> Login<'a> {
    Login {
        port: app.mqtt_port,
        client_id,
        username,
        password,
        tls_ca: None,
        will_topic: None,
    }
}

async fn stored(app: &TestApp, producer: &str) -> Vec<Value> {
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

/// An app with producer1 (and its device), consumer1 granted, consumer2 not.
async fn granted_world() -> (TestApp, String, String) {
    let app = spawn_app().await;
    let p1 = app.user("producer1", "producer").await;
    let c1 = app.user("consumer1", "consumer").await;
    app.create_user("consumer2", "consumer").await;
    let id = app.request_subscription(&c1, "producer1").await;
    app.post_empty(&format!("/api/subscriptions/{id}/accept"), &p1)
        .await;
    (app, p1, id)
}

#[tokio::test]
async fn devices_log_in_with_their_bal_password_on_both_protocol_versions() {
    let app = spawn_app().await;
    app.create_user("producer1", "producer").await;
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

#[tokio::test]
async fn a_deleted_user_is_disconnected_and_cannot_log_in_again() {
    let app = spawn_app().await;
    app.create_user("producer1", "producer").await;
    let mut device = Mqtt::online(V5, login(&app, "pmu-1", "producer1", PASSWORD)).await;
    app.delete("/api/users/producer1", &app.admin).await;
    // At once, not at the next periodic re-check (every 5 s).
    let closed = device.next_within(Duration::from_secs(2)).await;
    assert!(matches!(closed, Some(Ev::Closed(_))), "{closed:?}");
    let mut again = Mqtt::connect(V5, login(&app, "pmu-1", "producer1", PASSWORD));
    assert!(matches!(again.next().await, Some(Ev::Closed(_))));
}

#[tokio::test]
async fn a_password_change_ends_mqtt_sessions_and_the_old_password_stops_working() {
    let app = spawn_app().await;
    app.create_user("producer1", "producer").await;
    // Two logins: the second is answered from the verified-credentials cache.
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

#[tokio::test]
async fn a_password_changed_by_another_process_stops_the_old_one_at_once() {
    let app = spawn_app().await;
    app.create_user("producer1", "producer").await;
    // Verified once: the broker now remembers this password.
    Mqtt::online(V5, login(&app, "pmu-1", "producer1", PASSWORD)).await;
    let mut cli = std::process::Command::new(env!("CARGO_BIN_EXE_bal"))
        .arg("--data-dir")
        .arg(&app.data_dir)
        .args(["user", "passwd", "producer1", "--password-stdin"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    use std::io::Write as _;
    cli.stdin
        .take()
        .unwrap()
        .write_all(b"changed-elsewhere\n")
        .unwrap();
    assert!(cli.wait().unwrap().success());
    let mut old = Mqtt::connect(V5, login(&app, "pmu-2", "producer1", PASSWORD));
    assert!(
        matches!(old.next().await, Some(Ev::Closed(_))),
        "old password refused"
    );
    Mqtt::online(V5, login(&app, "pmu-3", "producer1", "changed-elsewhere")).await;
}

#[tokio::test]
async fn every_message_a_producer_publishes_is_stored_exactly() {
    let app = spawn_app().await;
    app.create_user("producer1", "producer").await;
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
    }
    // QoS 0 has no acknowledgement to wait for.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let items = stored(&app, "producer1").await;
    assert_eq!(items.len(), 6);
    assert_eq!(items[0]["topic"], "platone/producer1/meter-1");
    assert_eq!(items[0]["fields"]["p_kw"], 1.5);
    assert_eq!(items[1]["payload_text"], std::str::from_utf8(pmu).unwrap());
    assert_eq!(items[1]["fields"]["frequency"], 50.01);
    assert_eq!(items[2]["payload_text"], "qos0");
}

#[tokio::test]
async fn publishing_outside_ones_own_topic_is_refused_and_stores_nothing() {
    let app = spawn_app().await;
    app.create_user("producer1", "producer").await;
    app.create_user("producer2", "producer").await;
    app.create_user("consumer1", "consumer").await;
    let mut v5 = Mqtt::online(V5, login(&app, "d5", "producer1", PASSWORD)).await;
    assert_eq!(
        v5.publish_acked("platone/producer2", b"1").await,
        Ev::PubAck("NotAuthorized".into())
    );
    assert_eq!(
        v5.publish_acked("elsewhere/x", b"1").await,
        Ev::PubAck("TopicNameInvalid".into())
    );
    let mut consumer = Mqtt::online(V5, login(&app, "c5", "consumer1", PASSWORD)).await;
    assert_eq!(
        consumer.publish_acked("platone/consumer1", b"1").await,
        Ev::PubAck("NotAuthorized".into())
    );
    // MQTT 3.1.1 has no negative PUBACK: the broker disconnects instead.
    let mut v3 = Mqtt::online(V311, login(&app, "d3", "producer1", PASSWORD)).await;
    assert!(matches!(
        v3.publish_acked("platone/producer2", b"1").await,
        Ev::Closed(_)
    ));
    for p in ["producer1", "producer2"] {
        assert!(stored(&app, p).await.is_empty(), "{p}");
    }
}

#[tokio::test]
async fn oversized_payloads_are_refused_with_a_reason_and_not_stored() {
    let app = spawn_app_with(|s| s.ingest.max_payload_bytes = 1024).await;
    app.create_user("producer1", "producer").await;
    let mut device = Mqtt::online(V5, login(&app, "d5", "producer1", PASSWORD)).await;
    let big = vec![b'x'; 2048];
    assert_eq!(
        device.publish_acked("platone/producer1", &big).await,
        Ev::PubAck("QuotaExceeded".into())
    );
    assert_eq!(
        device.publish_acked("platone/producer1", b"fits").await,
        Ev::PubAck("Success".into())
    );
    let items = stored(&app, "producer1").await;
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["payload_text"], "fits");
}

#[tokio::test]
async fn a_consumer_subscribes_only_after_the_producer_accepted() {
    let app = spawn_app().await;
    let p1 = app.user("producer1", "producer").await;
    let c1 = app.user("consumer1", "consumer").await;
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
        let mut c = Mqtt::online(v, login(&app, &format!("c2-{v:?}"), "consumer1", PASSWORD)).await;
        assert!(
            c.try_subscribe("platone/producer1/#").await,
            "{v:?} after acceptance"
        );
        device.publish_acked("platone/producer1/pmu-1", b"42").await;
        let got = c.until(|e| matches!(e, Ev::Message(..))).await;
        assert_eq!(
            got,
            Some(Ev::Message(
                "platone/producer1/pmu-1".into(),
                b"42".to_vec()
            ))
        );
    }
}

#[tokio::test]
async fn filters_reaching_beyond_a_granted_producer_are_refused_to_everyone() {
    let (app, _, _) = granted_world().await;
    app.create_user("admin2", "admin").await;
    for user in ["consumer1", "producer1", "admin2"] {
        let mut c = Mqtt::online(V5, login(&app, &format!("w-{user}"), user, PASSWORD)).await;
        for filter in [
            "#",
            "platone/#",
            "platone/+",
            "+/producer1",
            "$share/g/platone/#",
            "platone/+/x",
        ] {
            assert!(!c.try_subscribe(filter).await, "{user} {filter}");
        }
    }
    // consumer2 holds no grant at all.
    let mut c2 = Mqtt::online(V311, login(&app, "w-c2", "consumer2", PASSWORD)).await;
    assert!(!c2.try_subscribe("platone/producer1").await);
}

#[tokio::test]
async fn delivery_stops_within_a_second_of_revocation_on_a_live_subscription() {
    for v in [V311, V5] {
        let (app, p1, id) = granted_world().await;
        let mut device = Mqtt::online(V5, login(&app, "pmu-1", "producer1", PASSWORD)).await;
        let mut c = Mqtt::online(v, login(&app, "live", "consumer1", PASSWORD)).await;
        assert!(c.try_subscribe("platone/producer1/#").await);
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
        // And it cannot subscribe again.
        if let Some(Ev::Closed(_)) = c.next_within(Duration::from_millis(10)).await {
            c = Mqtt::online(v, login(&app, "live2", "consumer1", PASSWORD)).await;
        }
        assert!(!c.try_subscribe("platone/producer1/#").await, "{v:?}");
    }
}

#[tokio::test]
async fn delivery_stops_when_a_grant_expires_on_a_live_subscription() {
    let app = spawn_app().await;
    let p1 = app.user("producer1", "producer").await;
    let c1 = app.user("consumer1", "consumer").await;
    let id = app.request_subscription(&c1, "producer1").await;
    let until = chrono::Utc::now() + chrono::Duration::milliseconds(1500);
    let r = app
        .post(
            &format!("/api/subscriptions/{id}/accept"),
            &p1,
            serde_json::json!({ "expires_at": until }),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let mut device = Mqtt::online(V5, login(&app, "pmu-1", "producer1", PASSWORD)).await;
    let mut c = Mqtt::online(V5, login(&app, "live", "consumer1", PASSWORD)).await;
    assert!(c.try_subscribe("platone/producer1/#").await);
    device.publish_acked("platone/producer1/a", b"before").await;
    assert!(c.until(|e| matches!(e, Ev::Message(..))).await.is_some());

    // Expiry + the sweeper's second + the promised second.
    tokio::time::sleep(Duration::from_millis(3500)).await;
    device.publish_acked("platone/producer1/a", b"after").await;
    let leaked = c
        .until(|e| matches!(e, Ev::Message(_, p) if p == b"after"))
        .await;
    assert_eq!(leaked, None, "delivered after expiry");
    assert!(!c.try_subscribe("platone/producer1/#").await);
}

#[tokio::test]
async fn a_device_session_cannot_be_taken_over_by_another_user() {
    let (app, _, _) = granted_world().await;
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

#[tokio::test]
async fn a_will_outside_ones_own_topic_is_refused_at_connect() {
    let (app, _, _) = granted_world().await;
    let mut l = login(&app, "pmu-1", "producer1", PASSWORD);
    l.will_topic = Some("platone/consumer1");
    let mut c = Mqtt::connect(V5, l);
    assert!(matches!(c.next().await, Some(Ev::Closed(_))));
    let mut l = login(&app, "pmu-2", "producer1", PASSWORD);
    l.will_topic = Some("platone/producer1/status");
    assert_eq!(Mqtt::connect(V5, l).next().await, Some(Ev::Connected));
}

#[tokio::test]
async fn mqtt_over_tls_works_with_the_generated_ca() {
    let (app, _, _) = granted_world().await;
    let ca = app.ca.clone().unwrap();
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
    assert_eq!(stored(&app, "producer1").await.len(), 2);
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

#[tokio::test]
async fn a_redelivered_qos1_message_is_stored_once() {
    let app = spawn_app().await;
    app.create_user("producer1", "producer").await;
    let port = app.mqtt_port;
    // Hand-made packets: a client library never lets a test choose the DUP flag.
    let acks = tokio::task::spawn_blocking(move || {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut connect = Vec::new();
        mqtt_str(&mut connect, b"MQTT");
        connect.extend_from_slice(&[4, 0b1100_0010, 0, 30]);
        mqtt_str(&mut connect, b"dup-dev");
        mqtt_str(&mut connect, b"producer1");
        mqtt_str(&mut connect, PASSWORD.as_bytes());
        s.write_all(&packet(0x10, &connect)).unwrap();
        let mut connack = [0u8; 4];
        s.read_exact(&mut connack).unwrap();
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
