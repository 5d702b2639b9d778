//! Certification over the API: proofs (409 until anchored), getByTransaction and who sees what
//! in it, batches, server-side verification, the embedded chain's `/rpc` with standard
//! Ethereum tooling, and `bal verify` against the embedded chain and against anvil.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use alloy_provider::Provider;
use bal_core::proof::Outcome;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::*;

/// Certification every 100 ms, so tests wait little.
pub(crate) fn quick(s: &mut bal::settings::Settings) {
    s.certify.batch_window_ms = 100;
}

pub(crate) async fn upload(app: &TestApp, token: &str, readings: Value) -> Vec<i64> {
    let r = app.post("/api/measurements", token, readings).await;
    let body = json_ok(r, StatusCode::CREATED).await;
    body["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_i64().unwrap())
        .collect()
}

/// The proof bundle of a reading, once anchored (within 10 s).
pub(crate) async fn proof(app: &TestApp, token: &str, id: i64) -> Value {
    for _ in 0..100 {
        let r = app
            .get(&format!("/api/measurements/{id}/proof"), token)
            .await;
        if r.status() == StatusCode::OK {
            return r.json().await.unwrap();
        }
        assert_eq!(
            r.status(),
            StatusCode::CONFLICT,
            "pending proofs answer 409"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("measurement {id} was not anchored within 10 s");
}

fn tx_of(bundle: &Value) -> String {
    bundle["transaction"].as_str().unwrap().to_owned()
}

async fn by_tx(app: &TestApp, token: &str, tx: &str) -> Value {
    let r = app
        .get(
            &format!("/api/certification/getByTransaction?transaction={tx}"),
            token,
        )
        .await;
    json_ok(r, StatusCode::OK).await
}

fn ids_in(data: &Value) -> Vec<i64> {
    data["measurements"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_i64().unwrap())
        .collect()
}

#[tokio::test]
async fn a_reading_gets_a_proof_that_verifies_and_forgeries_do_not() {
    let app = spawn_app_with(quick).await;
    let p1 = app.user("producer1", "producer").await;
    let ids = upload(
        &app,
        &p1,
        json!([{"p": 1.5}, {"p": 2.5}, "230.1,0.2,49.99,1.0,0.5"]),
    )
    .await;
    let bundle = proof(&app, &p1, ids[1]).await;
    assert_eq!(bundle["format"], "bal-proof/1");
    assert_eq!(bundle["leaf_values"][1], "platone/producer1");
    assert_eq!(bundle["leaf_values"][2], ids[1].to_string());
    assert!(bundle["payload_base64"].is_string());

    let verdict = json_ok(
        app.post("/api/certification/verify", &p1, json!({"bundle": bundle}))
            .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(verdict["valid"], true, "{verdict}");
    let anchor = verdict["checks"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(anchor["name"], "anchor");
    assert_eq!(anchor["outcome"], "passed", "{anchor}");

    // Another payload, a changed leaf value, a changed proof: each named as the reason.
    let other = json!({"bundle": bundle, "payload_base64": "b3RoZXI="});
    let v = json_ok(
        app.post("/api/certification/verify", &p1, other).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(v["valid"], false);
    assert!(
        v["reason"].as_str().unwrap().starts_with("payload_hash"),
        "{v}"
    );
    let mut forged = bundle.clone();
    forged["leaf_values"][3] = json!("1");
    let v = json_ok(
        app.post("/api/certification/verify", &p1, json!({"bundle": forged}))
            .await,
        StatusCode::OK,
    )
    .await;
    assert!(v["reason"].as_str().unwrap().starts_with("leaf"), "{v}");
    let mut forged = bundle.clone();
    let proof0 = forged["proof"][0].as_str().unwrap().to_owned();
    let flipped = if proof0.ends_with('0') { "1" } else { "0" };
    forged["proof"][0] = json!(format!("{}{flipped}", &proof0[..65]));
    let v = json_ok(
        app.post("/api/certification/verify", &p1, json!({"bundle": forged}))
            .await,
        StatusCode::OK,
    )
    .await;
    assert!(v["reason"].as_str().unwrap().starts_with("proof"), "{v}");
    // A bundle naming a look-alike contract is not vouched for by this BAL.
    let mut forged = bundle.clone();
    forged["contract"] = json!("0x000000000000000000000000000000000000dEaD");
    let v = json_ok(
        app.post("/api/certification/verify", &p1, json!({"bundle": forged}))
            .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(v["valid"], false, "{v}");
    assert!(v["reason"].as_str().unwrap().starts_with("anchor"), "{v}");
    // A bundle that is not one: a clear 4xx, not a verdict.
    let r = app
        .post(
            "/api/certification/verify",
            &p1,
            json!({"bundle": {"format": 1}}),
        )
        .await;
    assert!(r.status().is_client_error(), "{}", r.status());

    // The reading shows where it was certified.
    let tx = tx_of(&bundle);
    let one = json_ok(
        app.get(&format!("/api/measurements/{}", ids[1]), &p1).await,
        StatusCode::OK,
    )
    .await;
    let cert = &one["certification"];
    assert_eq!(cert["status"], "anchored", "{one}");
    assert_eq!(cert["transaction"], tx);
    assert_eq!(cert["root"], bundle["root"]);
    assert_eq!(cert["block_number"], bundle["block_number"]);
    assert!(cert["leaf_index"].is_u64());
    let data = by_tx(&app, &p1, &tx).await;
    assert_eq!(data["transaction"], tx);
    assert_eq!(data["root"], bundle["root"]);
    assert_eq!(data["status"], "anchored");
    assert_eq!(data["block_number"], bundle["block_number"]);
    assert!(data["block_time"].is_string());
    let m = data["measurements"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == ids[1])
        .expect("the reading is in its transaction's data");
    assert_eq!(m["payload_json"]["p"], 2.5);
    assert!(m["leaf_index"].is_u64());

    // Batches: listed, and found by root.
    let page = json_ok(
        app.get("/api/certification/batches", &p1).await,
        StatusCode::OK,
    )
    .await;
    assert!(
        page["batches"]
            .as_array()
            .unwrap()
            .iter()
            .any(|b| b["transaction"] == tx)
    );
    let root = bundle["root"].as_str().unwrap();
    let b = json_ok(
        app.get(&format!("/api/certification/batches/{root}"), &p1)
            .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(b["transaction"], tx);
    assert_error(
        app.get("/api/certification/batches/0x1234", &p1).await,
        StatusCode::BAD_REQUEST,
        "bad_request",
    )
    .await;
    let zero = format!("0x{}", "0".repeat(64));
    assert_error(
        app.get(&format!("/api/certification/batches/{zero}"), &p1)
            .await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
}

#[tokio::test]
async fn get_by_transaction_answers_400_for_a_malformed_hash_and_404_for_an_unknown_one() {
    let app = spawn_app().await;
    let c = app.user("consumer1", "consumer").await;
    for bad in [
        "0x12",
        "1234",
        "0xzz00000000000000000000000000000000000000000000000000000000000000",
    ] {
        assert_error(
            app.get(
                &format!("/api/certification/getByTransaction?transaction={bad}"),
                &c,
            )
            .await,
            StatusCode::BAD_REQUEST,
            "bad_request",
        )
        .await;
    }
    let unknown = format!("0x{}", "ab".repeat(32));
    assert_error(
        app.get(
            &format!("/api/certification/getByTransaction?transaction={unknown}"),
            &c,
        )
        .await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    assert_eq!(
        app.client
            .get(app.url(&format!(
                "/api/certification/getByTransaction?transaction={unknown}"
            )))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn a_proof_is_409_until_its_batch_is_anchored() {
    // A window of an hour: nothing is anchored during this test.
    let app = spawn_app_with(|s| s.certify.batch_window_ms = 3_600_000).await;
    let p1 = app.user("producer1", "producer").await;
    let ids = upload(&app, &p1, json!([{"p": 1}])).await;
    let msg = assert_error(
        app.get(&format!("/api/measurements/{}/proof", ids[0]), &p1)
            .await,
        StatusCode::CONFLICT,
        "conflict",
    )
    .await;
    assert!(msg.contains("not anchored yet"), "{msg}");
    assert_error(
        app.get("/api/measurements/999999/proof", &p1).await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
}

#[tokio::test]
async fn get_by_transaction_never_shows_a_caller_data_it_may_not_read() {
    // One window for everything uploaded below: a single batch holds both producers' data.
    let app = spawn_app_with(|s| s.certify.batch_window_ms = 1500).await;
    let p1 = app.user("producer1", "producer").await;
    let p2 = app.user("producer2", "producer").await;
    let c1 = app.user("consumer1", "consumer").await;
    let c2 = app.user("consumer2", "consumer").await;
    let sub = app.grant(&c1, &p1, "producer1").await;
    let a = upload(&app, &p1, json!([{"v": 1}, {"v": 2}])).await;
    let b = upload(&app, &p2, json!([{"v": 3}])).await;
    let tx = tx_of(&proof(&app, &p2, b[0]).await);
    let tx_a = tx_of(&proof(&app, &p1, a[0]).await);
    let same_batch = tx == tx_a;

    let admin = by_tx(&app, &app.admin, &tx).await;
    assert!(ids_in(&admin).contains(&b[0]));
    let decisions = admin["grant_decisions"].as_array().unwrap().len();

    // producer2 sees its own reading only; producer1 its own only.
    assert_eq!(ids_in(&by_tx(&app, &p2, &tx).await), b);
    let seen = ids_in(&by_tx(&app, &p1, &tx).await);
    assert!(!seen.contains(&b[0]));
    if same_batch {
        assert_eq!(seen, a);
        assert_eq!(ids_in(&admin).len(), 3);
    }
    // consumer1 (granted producer1) sees producer1's only; consumer2 (no grant) nothing.
    let c1_view = by_tx(&app, &c1, &tx).await;
    assert!(!ids_in(&c1_view).contains(&b[0]));
    let c2_view = by_tx(&app, &c2, &tx).await;
    assert!(ids_in(&c2_view).is_empty());
    assert!(c2_view["grant_decisions"].as_array().unwrap().is_empty());
    // Grant decisions: the consumer sees those on its own grant, no one else's.
    if same_batch && decisions > 0 {
        assert_eq!(
            c1_view["grant_decisions"].as_array().unwrap().len(),
            decisions
        );
        assert!(
            by_tx(&app, &p2, &tx).await["grant_decisions"]
                .as_array()
                .unwrap()
                .is_empty()
        );
    }
    // Proofs follow the same rule.
    assert_error(
        app.get(&format!("/api/measurements/{}/proof", b[0]), &c1)
            .await,
        StatusCode::FORBIDDEN,
        "forbidden",
    )
    .await;
    // After revocation, consumer1 sees nothing of producer1 any more.
    let r = app
        .post_empty(&format!("/api/subscriptions/{sub}/revoke"), &p1)
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    assert!(ids_in(&by_tx(&app, &c1, &tx_a).await).is_empty());
    assert_error(
        app.get(&format!("/api/measurements/{}/proof", a[0]), &c1)
            .await,
        StatusCode::FORBIDDEN,
        "forbidden",
    )
    .await;
}

/// Runs `bal` off the runtime's thread: the server under test runs on it.
async fn bal(args: &[&str]) -> Output {
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_bal"))
            .args(args)
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

#[tokio::test]
async fn standard_ethereum_tools_and_bal_verify_check_a_proof_against_the_embedded_chain() {
    let app = spawn_app_with(quick).await;
    let p1 = app.user("producer1", "producer").await;
    let ids = upload(&app, &p1, json!([{"kW": 3.2}])).await;
    let bundle = proof(&app, &p1, ids[0]).await;
    let rpc = app.url("/rpc");
    let ca = app.mqtt_ca.clone().expect("the generated CA");

    // alloy, as any Ethereum client, against POST /rpc.
    let provider = bal_ledger::node::read_only(&rpc, Some(&ca)).unwrap();
    let chain_id = provider.get_chain_id().await.unwrap();
    assert_eq!(Value::from(chain_id), bundle["chain_id"]);
    let tx: alloy_primitives::B256 = tx_of(&bundle).parse().unwrap();
    let receipt = provider.get_transaction_receipt(tx).await.unwrap().unwrap();
    assert!(receipt.status());
    assert_eq!(
        Value::from(receipt.block_number.unwrap()),
        bundle["block_number"]
    );
    let root: alloy_primitives::B256 = bundle["root"].as_str().unwrap().parse().unwrap();
    assert_eq!(receipt.inner.logs()[0].topics()[1], root);
    let block = provider
        .get_block_by_number(receipt.block_number.unwrap().into())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(Some(block.header.hash), receipt.block_hash);
    assert_eq!(
        block.header.hash,
        block.header.inner.hash_slow(),
        "a real header hash"
    );
    let sent = provider.get_transaction_by_hash(tx).await.unwrap().unwrap();
    assert_eq!(*sent.inner.tx_hash(), tx, "a real transaction hash");
    let parsed: bal_core::proof::ProofBundle = serde_json::from_value(bundle.clone()).unwrap();
    let check = bal_ledger::proofs::check_with_rpc(&provider, &parsed)
        .await
        .unwrap();
    assert_eq!(check.outcome, Outcome::Passed, "{check:?}");
    let logs = provider
        .get_logs(
            &alloy_rpc_types_eth::Filter::new()
                .from_block(0)
                .topic1(root),
        )
        .await
        .unwrap();
    assert_eq!(logs.len(), 1);
    assert_eq!(logs[0].transaction_hash, Some(tx));
    // Unknown methods and bad bodies get JSON-RPC errors; nobody may send transactions.
    let raw = |body: &str| {
        let client = app.client.clone();
        let url = rpc.clone();
        let body = body.to_owned();
        async move {
            let r = client
                .post(url)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), StatusCode::OK);
            r.json::<Value>().await.unwrap()
        }
    };
    let v = raw(r#"{"jsonrpc":"2.0","id":7,"method":"eth_sendRawTransaction","params":["0x00"]}"#)
        .await;
    assert_eq!(v["error"]["code"], -32601);
    assert_eq!(v["id"], 7);
    assert_eq!(raw("{not json").await["error"]["code"], -32700);
    let v = raw(r#"[{"jsonrpc":"2.0","id":1,"method":"eth_blockNumber"},{"jsonrpc":"2.0","id":2,"method":"eth_getBlockByNumber","params":["0xffffff",false]}]"#).await;
    assert!(v[0]["result"].is_string());
    assert!(v[1]["result"].is_null());
    // eth_call takes the call data as `input`, `data` or both (Foundry's cast sends both);
    // both unequal is refused.
    let selector = &alloy_primitives::keccak256("anchoredAt(bytes32)")[..4];
    let data = alloy_primitives::hex::encode_prefixed([selector, root.as_slice()].concat());
    let call = |fields: &str| {
        format!(
            r#"{{"jsonrpc":"2.0","id":3,"method":"eth_call","params":[{{"to":"{}",{fields}}},"latest"]}}"#,
            parsed.contract
        )
    };
    let mut answers = Vec::new();
    for fields in [
        format!(r#""input":"{data}""#),
        format!(r#""data":"{data}""#),
        format!(r#""input":"{data}","data":"{data}""#),
    ] {
        let v = raw(&call(&fields)).await;
        assert!(v["result"].is_string(), "{fields}: {v}");
        answers.push(v["result"].clone());
    }
    assert!(answers.iter().all(|a| *a == answers[0]), "{answers:?}");
    let anchored_at =
        u64::from_str_radix(answers[0].as_str().unwrap().trim_start_matches("0x"), 16);
    assert_eq!(Value::from(anchored_at.unwrap()), bundle["block_number"]);
    let v = raw(&call(&format!(r#""input":"{data}","data":"0x00""#))).await;
    assert_eq!(v["error"]["code"], -32602, "{v}");

    // `bal verify`: valid with the right payload and the anchor; 1 when forged; 2 on bad input.
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "bundle.json", bundle.to_string().as_bytes());
    let p = path.to_str().unwrap();
    let ca = ca.to_str().unwrap();
    let out = bal(&["verify", p, "--rpc", &rpc, "--ca", ca]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("VALID"));
    assert!(text(&out).contains("ok   anchor"), "{}", text(&out));
    let contract = bundle["contract"].as_str().unwrap();
    let out = bal(&[
        "verify",
        p,
        "--contract",
        contract,
        "--rpc",
        &rpc,
        "--ca",
        ca,
    ])
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let out = bal(&[
        "verify",
        p,
        "--contract",
        "0x000000000000000000000000000000000000dEaD",
    ])
    .await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("INVALID: contract"), "{}", text(&out));
    let payload = write(dir.path(), "payload.bin", br#"{"kW":3.2}"#);
    let out = bal(&["verify", p, "--payload", payload.to_str().unwrap()]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let wrong = write(dir.path(), "wrong.bin", br#"{"kW":9.9}"#);
    let out = bal(&[
        "verify",
        p,
        "--payload",
        wrong.to_str().unwrap(),
        "--rpc",
        &rpc,
        "--ca",
        ca,
    ])
    .await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("INVALID: payload_hash"),
        "{}",
        text(&out)
    );
    // A root the chain never anchored: the proof is internally consistent, the anchor is not.
    let mut other = bundle.clone();
    other["block_number"] = json!(bundle["block_number"].as_u64().unwrap() + 1000);
    let moved = write(dir.path(), "moved.json", other.to_string().as_bytes());
    let out = bal(&["verify", moved.to_str().unwrap(), "--rpc", &rpc, "--ca", ca]).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("INVALID: anchor"), "{}", text(&out));
    let junk = write(dir.path(), "junk.json", b"{}");
    assert_eq!(
        bal(&["verify", junk.to_str().unwrap()]).await.status.code(),
        Some(2)
    );
    assert_eq!(
        bal(&["verify", "/nonexistent/bundle.json"])
            .await
            .status
            .code(),
        Some(2)
    );
    assert_eq!(bal(&["verify"]).await.status.code(), Some(2));
    let out = bal(&["verify", p, "--rpc", "http://127.0.0.1:9/"]).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
}

#[tokio::test]
async fn with_chain_rpc_url_the_bal_certifies_on_anvil_and_bal_verify_checks_there() {
    let anvil = bal_ledger::testing::Anvil::start().await;
    let url = anvil.url.clone();
    let app = spawn_app_with(move |s| {
        quick(s);
        s.chain.rpc_url = Some(serde_json::from_value(json!(url)).unwrap());
        s.chain.operator_key =
            Some(serde_json::from_value(json!(bal_ledger::testing::ANVIL_KEY_0)).unwrap());
    })
    .await;
    let p1 = app.user("producer1", "producer").await;
    let ids = upload(&app, &p1, json!([{"kW": 1.0}, {"kW": 2.0}])).await;
    let bundle = proof(&app, &p1, ids[1]).await;
    assert_eq!(bundle["chain_id"], 31337);
    let data = by_tx(&app, &p1, &tx_of(&bundle)).await;
    assert_eq!(ids_in(&data), ids);
    let v = json_ok(
        app.post("/api/certification/verify", &p1, json!({"bundle": bundle}))
            .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(v["valid"], true, "{v}");
    // No embedded chain here: /rpc says where to look instead.
    let r = app
        .client
        .post(app.url("/rpc"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);

    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "bundle.json", bundle.to_string().as_bytes());
    let out = bal(&["verify", path.to_str().unwrap(), "--rpc", &anvil.url]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    // The same bundle against another chain (the embedded one of another BAL) is invalid.
    let other = spawn_app().await;
    let out = bal(&[
        "verify",
        path.to_str().unwrap(),
        "--rpc",
        &other.url("/rpc"),
        "--ca",
        other.mqtt_ca.as_ref().unwrap().to_str().unwrap(),
    ])
    .await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("chain"), "{}", text(&out));

    // The node goes away: the BAL still serves (ready), and says the chain is down.
    let anvil_url = anvil.url.clone();
    drop(anvil);
    let (status, body) = app.readyz().await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["dependencies"]["chain"]["state"], "down", "{body}");
    assert_eq!(body["dependencies"]["database"]["state"], "up", "{body}");
    assert!(
        !body.to_string().contains(&anvil_url),
        "no node URL in the body: {body}"
    );
}
