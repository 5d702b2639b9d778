//! The PostgreSQL pool over TCP: every connection has Nagle's algorithm off, so a request longer
//! than one TCP segment is not held back for the server's delayed ACK. sqlx 0.9.1 sets
//! `TCP_NODELAY` itself (0.9.0 did not: each group-commit insert then waited ~40 ms); this
//! keeps it so. On a private server, so every socket to its port is the store's own.

use bal_scd::PgStore;
use bal_scd::testing::{self, PrivateCluster};

#[tokio::test]
async fn every_pool_connection_over_tcp_has_nagle_off() {
    let cluster = PrivateCluster::start(None);
    let store = PgStore::connect(&cluster.url("postgres"), &testing::options())
        .await
        .expect("connects over TCP");
    store.schema().await.expect("a query on the pool");
    let states = bal_scd::testing::tcp_nodelay_states(cluster.port()).expect("sockets listed");
    // At least the pool's first connection and the change listener's.
    assert!(states.len() >= 2, "sockets to the server: {states:?}");
    assert!(
        states.iter().all(|on| *on),
        "TCP_NODELAY per socket: {states:?}"
    );
}
