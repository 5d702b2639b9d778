//! This process among replicas on one database: the registry, the lease holder in `/readyz`,
//! `bal cluster`, and the single-node parts that refuse to be shared.

use crate::helpers::*;
use crate::mosquitto_server::{self, MosquittoServer};

#[tokio::test]
async fn readyz_names_this_replica_the_live_ones_and_the_lease_holder() {
    let app = spawn_app_with(|s| s.cluster.replica_id = Some("bal-a".into())).await;
    eventually(5, "the certifier taking the lease", || async {
        let (_, body) = app.readyz().await;
        body["cluster"]["lease_holder"] == "bal-a"
    })
    .await;
    let (_, body) = app.readyz().await;
    assert_eq!(body["cluster"]["replica"], "bal-a");
    assert_eq!(body["cluster"]["replicas"], serde_json::json!(["bal-a"]));

    let out = bal_cli(&app.data_dir)
        .args(["cluster", "status"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("bal-a") && text.contains("embedded (single node)  embedded"),
        "{text}"
    );
    assert!(text.contains("certification lease: bal-a"), "{text}");

    // A live replica cannot be retired.
    let out = bal_cli(&app.data_dir)
        .args(["cluster", "leave", "bal-a"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is running"));

    // A clean stop leaves the registry and gives the lease up at once.
    let dir = app.data_dir.clone();
    let _kept = app.stop().await;
    let out = bal_cli(&dir).args(["cluster", "status"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!text.contains("bal-a  "), "{text}");
    assert!(
        text.contains("certification lease: free (last held by bal-a"),
        "{text}"
    );
}

#[tokio::test]
async fn a_second_embedded_bal_on_the_same_database_refuses_to_start() {
    let first = spawn_app_with(|s| s.cluster.replica_id = Some("bal-a".into())).await;
    let mut second = first.settings.clone();
    second.cluster.replica_id = Some("bal-b".into());
    let refused = bal::app::Application::build(second)
        .await
        .err()
        .expect("refused");
    let why = format!("{refused:#}");
    assert!(
        why.contains("\"bal-a\"") && why.contains("the embedded broker"),
        "{why}"
    );
    assert!(why.contains("broker.kind = \"mosquitto\""), "{why}");
    // The first one is untouched: still the only replica, still serving.
    let (status, body) = first.readyz().await;
    assert_eq!(status, reqwest::StatusCode::OK);
    assert_eq!(body["cluster"]["replicas"], serde_json::json!(["bal-a"]));
}

/// Connects as the ingest session of a replica `gone` would have had, with its session kept
/// (subscribing on the way when asked); returns whether Mosquitto still had the session.
async fn ingest_session_present(port: u16, subscribe: bool) -> bool {
    use rumqttc::v5::mqttbytes::QoS;
    use rumqttc::v5::mqttbytes::v5::Packet;
    use rumqttc::v5::{AsyncClient, Event, MqttOptions};
    let mut o = MqttOptions::new("bal-ingest-gone", "127.0.0.1", port);
    o.set_credentials(mosquitto_server::ADMIN, mosquitto_server::ADMIN_PASSWORD);
    o.set_clean_start(false);
    o.set_session_expiry_interval(Some(3600));
    let (client, mut events) = AsyncClient::new(o, 10);
    let present = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        let mut present = None;
        loop {
            match events.poll().await.expect("the broker answers") {
                Event::Incoming(Packet::ConnAck(ack)) => {
                    present = Some(ack.session_present);
                    if !subscribe {
                        break;
                    }
                    client
                        .subscribe("platone/#", QoS::AtLeastOnce)
                        .await
                        .unwrap();
                }
                Event::Incoming(Packet::SubAck(_)) => break,
                _ => {}
            }
        }
        present.unwrap()
    })
    .await
    .expect("connected within 10 s");
    client.disconnect().await.unwrap();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), events.poll()).await;
    present
}

#[tokio::test]
async fn leaving_for_good_ends_the_replicas_persistent_ingest_session_on_mosquitto() {
    let dir = tempfile::tempdir().unwrap();
    // The folder's database (on the PostgreSQL pass, one of its own).
    test_settings(dir.path());
    let mosquitto = MosquittoServer::start(256 * 1024);
    // What a replica removed for good leaves behind: its persistent, subscribed session.
    assert!(!ingest_session_present(mosquitto.port, true).await);
    assert!(ingest_session_present(mosquitto.port, false).await, "kept");

    let out = bal_cli(dir.path())
        .args(["cluster", "leave", "gone"])
        .env("BAL_BROKER__KIND", "mosquitto")
        .env(
            "BAL_BROKER__URL",
            format!("mqtt://127.0.0.1:{}", mosquitto.port),
        )
        .env("BAL_BROKER__ADMIN_USERNAME", mosquitto_server::ADMIN)
        .env(
            "BAL_BROKER__ADMIN_PASSWORD",
            mosquitto_server::ADMIN_PASSWORD,
        )
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("\"bal-ingest-gone\"") && text.contains("ended"),
        "{text}"
    );
    assert!(
        !ingest_session_present(mosquitto.port, false).await,
        "the session is gone"
    );
}
