//! The embedded chain's `POST /rpc`, driven by Ethereum clients the BAL did not write: Foundry's
//! `cast` and viem (both installed by `npm ci` in `contracts/`; missing, they fail the test).
//! The server speaks plain HTTP on loopback here, so that neither tool needs the test CA.

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

use crate::certification::{proof, quick, upload};
use crate::helpers::*;

fn contracts_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../contracts")
}

fn cast_binary() -> PathBuf {
    if let Ok(p) = std::env::var("BAL_TEST_CAST") {
        return p.into();
    }
    let p = contracts_dir().join("node_modules/@foundry-rs/cast-linux-amd64/bin/cast");
    assert!(
        p.exists(),
        "cast not found at {}: run `npm ci` in contracts/ (or set BAL_TEST_CAST)",
        p.display()
    );
    p
}

/// Runs `cast` with `args` against `rpc`; its trimmed output, or a panic with what it said.
fn cast(rpc: &str, args: &[&str]) -> String {
    let out = Command::new(cast_binary())
        .args(args)
        .args(["--rpc-url", rpc])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(
        out.status.success(),
        "cast {args:?} failed: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foundry_cast_and_viem_read_the_embedded_chain_and_verify_a_proof_through_the_contract() {
    let app = spawn_app_with(|s| {
        quick(s);
        s.http.tls = false;
    })
    .await;
    let p1 = app.user("producer1", "producer").await;
    let ids = upload(&app, &p1, serde_json::json!([{"kW": 1.5}, {"kW": 2.5}])).await;
    let bundle = proof(&app, &p1, ids[1]).await;
    let rpc = app.url("/rpc");
    let field = |name: &str| bundle[name].as_str().unwrap().to_owned();
    let (contract, root, leaf, tx) = (
        field("contract"),
        field("root"),
        field("leaf"),
        field("transaction"),
    );
    let proof_list = format!(
        "[{}]",
        bundle["proof"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p.as_str().unwrap())
            .collect::<Vec<_>>()
            .join(",")
    );
    let block = bundle["block_number"].as_u64().unwrap();
    let (rpc2, bundle2, root2, tx2) = (rpc.clone(), bundle.clone(), root.clone(), tx.clone());

    let (cast_results, viem) = tokio::task::spawn_blocking(move || {
        let (rpc, bundle, root, tx) = (rpc2, bundle2, root2, tx2);
        let verify = "verify(bytes32,bytes32[],bytes32)(bool)";
        let results = vec![
            cast(&rpc, &["chain-id"]),
            cast(
                &rpc,
                &["call", &contract, verify, &root, &proof_list, &leaf],
            ),
            cast(
                &rpc,
                &[
                    "call",
                    &contract,
                    verify,
                    &root,
                    &proof_list,
                    &format!("0x{}", "00".repeat(32)),
                ],
            ),
            cast(
                &rpc,
                &["call", &contract, "anchoredAt(bytes32)(uint64)", &root],
            ),
            cast(&rpc, &["receipt", &tx, "status"]),
            cast(&rpc, &["tx", &tx, "blockNumber"]),
            cast(&rpc, &["block", &block.to_string(), "--field", "number"]),
            cast(
                &rpc,
                &[
                    "logs",
                    "--from-block",
                    "0",
                    "--address",
                    &contract,
                    "--json",
                ],
            ),
            cast(&rpc, &["code", &contract]),
        ];
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bundle.json");
        std::fs::write(&path, bundle.to_string()).unwrap();
        let out = Command::new("node")
            .arg(contracts_dir().join("viem-check.mjs"))
            .arg(&rpc)
            .arg(&path)
            .current_dir(contracts_dir())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "viem: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let viem: Value = serde_json::from_slice(&out.stdout).unwrap();
        (results, viem)
    })
    .await
    .unwrap();

    let [
        chain_id,
        verified,
        forged,
        anchored_at,
        status,
        tx_block,
        block_number,
        logs,
        code,
    ] = <[String; 9]>::try_from(cast_results).unwrap();
    let expected_chain: u64 = bundle["chain_id"].as_u64().unwrap();
    assert_eq!(chain_id, expected_chain.to_string());
    assert_eq!(verified, "true");
    assert_eq!(forged, "false");
    assert_eq!(anchored_at, block.to_string());
    assert!(
        status == "true" || status.starts_with('1') || status.contains("success"),
        "{status}"
    );
    assert_eq!(tx_block, block.to_string());
    assert_eq!(block_number, block.to_string());
    let logs: Value = serde_json::from_str(&logs).unwrap();
    assert!(
        logs.as_array()
            .unwrap()
            .iter()
            .any(|l| l["topics"][1] == root.as_str() && l["transactionHash"] == tx.as_str()),
        "{logs}"
    );
    assert!(code.len() > 100, "deployed bytecode: {code}");

    assert_eq!(viem["chainId"], expected_chain, "{viem}");
    assert_eq!(viem["receiptStatus"], "success", "{viem}");
    assert_eq!(viem["receiptBlock"], block, "{viem}");
    assert_eq!(viem["logs"], 1, "{viem}");
    assert_eq!(viem["logTransaction"], tx.as_str(), "{viem}");
    assert_eq!(viem["verified"], true, "{viem}");
    assert_eq!(viem["forged"], false, "{viem}");
    assert_eq!(viem["anchoredAt"], block, "{viem}");
}
