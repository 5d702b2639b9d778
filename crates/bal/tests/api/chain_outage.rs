//! The Ethereum node goes away and comes back: anvil stopped with SIGTERM and started again on
//! the same port from its `--state` file. Ingest goes on meanwhile, `/readyz` stays ready and
//! says the chain is down, and afterwards the backlog is anchored by itself and every proof, old
//! and new, verifies on the node. What anvil keeps of its history across the restart is printed,
//! not relied upon: the contract's storage is what proofs are checked against.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::certification::{proof, quick, upload};
use crate::helpers::{eventually, free_port, json_ok, spawn_app_with};
use bal_ledger::testing::{ANVIL_KEY_0 as KEY_0, Anvil};

async fn rpc(url: &str, method: &str, params: Value) -> Value {
    let body = json!({ "jsonrpc": "2.0", "id": 1, "method": method, "params": params });
    let r = reqwest::Client::new()
        .post(url)
        .json(&body)
        .send()
        .await
        .unwrap();
    r.json::<Value>().await.unwrap()["result"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chain_stopped_and_restarted_from_its_state_gets_the_backlog_anchored() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("anvil-state.json");
    let port = free_port();
    let anvil = Anvil::start_on(port, Some(&state)).await;
    let url = anvil.url.clone();
    let app = spawn_app_with(move |s| {
        quick(s);
        s.chain.rpc_url = Some(serde_json::from_value(json!(url)).unwrap());
        s.chain.operator_key = Some(serde_json::from_value(json!(KEY_0)).unwrap());
    })
    .await;
    let producer = app.user("producer1", "producer").await;
    let before = upload(&app, &producer, json!([{ "kW": 1.0 }])).await;
    let old = proof(&app, &producer, before[0]).await;

    anvil.terminate();
    assert!(state.exists(), "anvil wrote its state on SIGTERM");
    eventually(10, "/readyz saying the chain is down", || async {
        app.readyz().await.1["dependencies"]["chain"]["state"] == "down"
    })
    .await;
    let (status, body) = app.readyz().await;
    assert_eq!(
        status,
        StatusCode::OK,
        "the chain does not gate readiness: {body}"
    );
    // Readings are still stored; their proofs wait for the node.
    let during = upload(&app, &producer, json!([{ "kW": 2.0 }, { "kW": 3.0 }])).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let r = app
        .get(&format!("/api/measurements/{}/proof", during[0]), &producer)
        .await;
    assert_eq!(
        r.status(),
        StatusCode::CONFLICT,
        "not anchored while the node is down"
    );

    let anvil = Anvil::start_on(port, Some(&state)).await;
    let old_tx = old["transaction"].as_str().unwrap();
    let receipt = rpc(&anvil.url, "eth_getTransactionReceipt", json!([old_tx])).await;
    let head = rpc(&anvil.url, "eth_blockNumber", json!([])).await;
    println!(
        "after the restart anvil has its head at {head} and {} the old anchor's receipt",
        if receipt.is_null() { "lost" } else { "kept" }
    );

    let new = proof(&app, &producer, during[1]).await;
    assert_ne!(
        new["root"], old["root"],
        "the backlog is a batch of its own"
    );
    eventually(10, "/readyz saying the chain is up", || async {
        app.readyz().await.1["dependencies"]["chain"]["state"] == "up"
    })
    .await;
    for bundle in [&old, &new] {
        let v = json_ok(
            app.post(
                "/api/certification/verify",
                &producer,
                json!({ "bundle": bundle }),
            )
            .await,
            StatusCode::OK,
        )
        .await;
        assert_eq!(v["valid"], true, "{v}");
    }
    let during_first = proof(&app, &producer, during[0]).await;
    assert_eq!(during_first["root"], new["root"]);
}
