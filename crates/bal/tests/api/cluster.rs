//! This process among replicas on one database: the registry, the lease holder in `/readyz`,
//! `bal cluster`, and the single-node parts that refuse to be shared.

use crate::helpers::*;

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
        text.contains("bal-a") && text.contains("embedded broker, embedded chain"),
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
