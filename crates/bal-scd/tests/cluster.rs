//! The replica registry and leases, on the backend `BAL_TEST_DATABASE` names: one holder at a
//! time, takeover after expiry, and fencing of an ex-holder's writes.

use std::time::Duration;

use alloy_primitives::{Address, B256};
use bal_scd::testing::TestDatabase;
use bal_scd::{AnchorRecord, CERTIFY_LEASE, Fence, MqttRole, ReplicaInfo, SharedStore, StoreError};

async fn store() -> (TestDatabase, SharedStore) {
    let database = TestDatabase::new().await;
    let store = database.store().await;
    (database, store)
}

fn replica(id: &str) -> ReplicaInfo {
    ReplicaInfo {
        id: id.into(),
        version: "0.1.0".into(),
        mqtt: MqttRole::Mosquitto { shared: true },
        embedded_chain: false,
    }
}

const LONG: Duration = Duration::from_secs(60);

async fn take(store: &SharedStore, holder: &str, ttl: Duration) -> Option<Fence> {
    store
        .acquire_lease(CERTIFY_LEASE, holder, ttl)
        .await
        .unwrap()
}

/// Records an anchor for a batch that does not exist: the fence is checked first, so the
/// error says which check failed.
async fn record_with(store: &SharedStore, fence: &Fence) -> String {
    let anchor = AnchorRecord {
        chain_id: 1,
        contract: Address::ZERO,
        tx_hash: B256::ZERO,
        block_number: 1,
        block_time: 1,
        gas_used: 1,
        anchored_at: chrono::Utc::now(),
    };
    match store.record_anchor(999, &anchor, fence).await {
        Err(StoreError::Conflict(why)) => why,
        other => panic!("expected a conflict, got {other:?}"),
    }
}

#[tokio::test]
async fn one_holder_at_a_time_renewals_keep_the_epoch_and_a_release_hands_over() {
    let (_db, store) = store().await;
    assert_eq!(store.lease(CERTIFY_LEASE).await.unwrap(), None);
    let a = take(&store, "replica-a", LONG).await.expect("a free lease");
    assert_eq!(take(&store, "replica-b", LONG).await, None, "held by a");
    let renewed = take(&store, "replica-a", LONG).await.unwrap();
    assert_eq!(renewed, a, "a renewal is the same fence");
    let shown = store.lease(CERTIFY_LEASE).await.unwrap().unwrap();
    assert_eq!((shown.holder.as_str(), shown.epoch), ("replica-a", a.epoch));

    // The holder's fence passes (the batch is unknown), another's does not.
    assert!(record_with(&store, &a).await.contains("unknown"));

    store.release_lease(&a).await.unwrap();
    let b = take(&store, "replica-b", LONG).await.expect("released");
    assert!(b.epoch > a.epoch);
    // The ex-holder can neither write nor take the lease back while b holds it.
    assert!(record_with(&store, &a).await.contains("no longer held"));
    assert_eq!(take(&store, "replica-a", LONG).await, None);
    assert!(record_with(&store, &b).await.contains("unknown"));
}

#[tokio::test]
async fn a_lapsed_lease_goes_to_the_next_taker_and_fences_the_old_holder_out() {
    let (_db, store) = store().await;
    let a = take(&store, "replica-a", Duration::from_millis(300))
        .await
        .unwrap();
    assert_eq!(take(&store, "replica-b", LONG).await, None);
    tokio::time::sleep(Duration::from_millis(600)).await;
    // Lapsed: even its old holder no longer passes the fence.
    assert!(record_with(&store, &a).await.contains("no longer held"));
    let b = take(&store, "replica-b", LONG).await.expect("lapsed");
    assert_eq!(b.epoch, a.epoch + 1);
    assert!(record_with(&store, &a).await.contains("no longer held"));
    // A holder that let its lease lapse and takes it again gets a new epoch too.
    store.release_lease(&b).await.unwrap();
    let again = take(&store, "replica-b", LONG).await.unwrap();
    assert_eq!(again.epoch, b.epoch + 1);
}

#[tokio::test]
async fn of_many_concurrent_takers_exactly_one_gets_the_lease() {
    let (_db, store) = store().await;
    let takers: Vec<_> = (0..8)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move { take(&store, &format!("replica-{i}"), LONG).await })
        })
        .collect();
    let mut held = Vec::new();
    for t in takers {
        held.extend(t.await.unwrap());
    }
    assert_eq!(held.len(), 1, "{held:?}");
    let shown = store.lease(CERTIFY_LEASE).await.unwrap().unwrap();
    assert_eq!(shown.holder, held[0].holder);
}

#[tokio::test]
async fn the_registry_keeps_how_each_replica_serves_mqtt() {
    let (_db, store) = store().await;
    let roles = [
        MqttRole::Embedded,
        MqttRole::ClusterNode {
            node_id: 2,
            membership: "1@bal-0:5363,2@bal-1:5363".into(),
        },
        MqttRole::Mosquitto { shared: false },
        MqttRole::Mosquitto { shared: true },
    ];
    for (i, role) in roles.iter().enumerate() {
        let mut r = replica(&format!("bal-{i}"));
        r.mqtt = role.clone();
        store.heartbeat(&r, LONG).await.unwrap();
    }
    let live = store.live_replicas().await.unwrap();
    let found: Vec<MqttRole> = live.into_iter().map(|r| r.info.mqtt).collect();
    assert_eq!(found, roles);
}

#[tokio::test]
async fn the_registry_lists_replicas_until_their_heartbeats_stop_or_they_leave() {
    let (_db, store) = store().await;
    store.heartbeat(&replica("bal-0"), LONG).await.unwrap();
    store
        .heartbeat(&replica("bal-1"), Duration::from_millis(300))
        .await
        .unwrap();
    let mut broker = replica("bal-2");
    broker.mqtt = MqttRole::Embedded;
    store.heartbeat(&broker, LONG).await.unwrap();
    let ids = |v: Vec<bal_scd::Replica>| v.into_iter().map(|r| r.info.id).collect::<Vec<_>>();
    assert_eq!(
        ids(store.live_replicas().await.unwrap()),
        ["bal-0", "bal-1", "bal-2"]
    );
    let live = store.live_replicas().await.unwrap();
    assert!(live[2].info.single_node() && !live[0].info.single_node());
    let first_seen = live[0].seen_at;

    tokio::time::sleep(Duration::from_millis(600)).await;
    store.heartbeat(&replica("bal-0"), LONG).await.unwrap();
    let live = store.live_replicas().await.unwrap();
    assert_eq!(
        ids(live.clone()),
        ["bal-0", "bal-2"],
        "bal-1 missed its heartbeat"
    );
    assert!(live[0].seen_at > first_seen);

    assert!(store.leave("bal-2").await.unwrap());
    assert!(!store.leave("bal-2").await.unwrap());
    assert_eq!(ids(store.live_replicas().await.unwrap()), ["bal-0"]);
}

#[tokio::test]
async fn what_the_broker_was_given_is_kept_for_the_next_holder_and_fenced() {
    let (_db, store) = store().await;
    assert!(store.broker_pushed().await.unwrap().is_empty());
    let a = store
        .acquire_lease(bal_scd::BROKER_LEASE, "replica-a", LONG)
        .await
        .unwrap()
        .unwrap();
    let given = std::collections::HashMap::from([
        ("meter1".to_owned(), "sealed-1".to_owned()),
        ("dso".to_owned(), "sealed-2".to_owned()),
    ]);
    store.record_broker_pushed(&given, &a).await.unwrap();
    assert_eq!(store.broker_pushed().await.unwrap(), given);
    // The broker lease is not the certification lease.
    assert!(take(&store, "replica-b", LONG).await.is_some());

    store.release_lease(&a).await.unwrap();
    let b = store
        .acquire_lease(bal_scd::BROKER_LEASE, "replica-b", LONG)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        store.broker_pushed().await.unwrap(),
        given,
        "b reads what a gave"
    );
    let mut now = given.clone();
    now.remove("dso");
    now.insert("meter1".into(), "sealed-3".into());
    // The ex-holder's write is refused and changes nothing.
    let refused = store.record_broker_pushed(&now, &a).await;
    assert!(
        matches!(refused, Err(StoreError::Conflict(_))),
        "{refused:?}"
    );
    assert_eq!(store.broker_pushed().await.unwrap(), given);
    store.record_broker_pushed(&now, &b).await.unwrap();
    assert_eq!(store.broker_pushed().await.unwrap(), now);
}
