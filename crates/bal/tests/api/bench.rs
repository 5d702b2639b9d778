//! `bal bench`'s machine-readable output, on a tiny load: the load generator runs as a process
//! of its own, and each phase reports the fields the README documents. The figures themselves
//! are a benchmark's business, not a test's: only their presence and sanity are checked.

use std::process::Command;

fn bench(args: &[&str]) -> serde_json::Value {
    bench_with(args, &[])
}

/// `bal bench ARGS` with these environment variables; its stdout as one JSON document.
fn bench_with(args: &[&str], env: &[(&str, &str)]) -> serde_json::Value {
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    let out = Command::new(env!("CARGO_BIN_EXE_bal"))
        .arg("bench")
        .args(&args)
        .env("RUST_LOG", "error")
        .envs(env.iter().copied())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "bal bench {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not one JSON document ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn bench_json_reports_every_phase_with_the_servers_cpu() {
    let mut args: Vec<String> = [
        "--json",
        "--devices",
        "20",
        "--rate",
        "10",
        "--seconds",
        "2",
        "--producers",
        "2",
    ]
    .map(String::from)
    .to_vec();
    let database = bal_scd::testing::postgres_admin_url();
    let on_postgres = bal_scd::testing::backend() == bal_scd::Backend::Postgres;
    if on_postgres {
        args.extend(["--database".to_owned(), database]);
    } else {
        args.extend(["--phases", "passthrough,sqlite_qos1,sqlite_qos0"].map(String::from));
    }
    let report = tokio::task::spawn_blocking(move || {
        bench(&args.iter().map(String::as_str).collect::<Vec<_>>())
    })
    .await
    .unwrap();
    assert_eq!(report["load_generator"], "process");
    let phases = report["phases"].as_array().unwrap();
    let names: Vec<&str> = phases.iter().map(|p| p["name"].as_str().unwrap()).collect();
    let mut expected = vec!["passthrough", "sqlite_qos1", "sqlite_qos0"];
    if on_postgres {
        expected.push("postgres_qos1");
    }
    assert_eq!(names, expected);
    for p in phases {
        let done = p["done"].as_u64().unwrap();
        assert!(done > 0, "{p}");
        assert!(p["offered_per_s"].as_f64().unwrap() > 0.0, "{p}");
        assert!(p["vs_raw"].as_f64().unwrap() > 0.0, "{p}");
        assert_eq!(p["broker"], "embedded");
        let qos = p["qos"].as_u64().unwrap();
        assert!(qos <= 1);
        // CPU is read in clock ticks of 10 ms: present, and not absurd per message.
        let cpu = p["server_cpu_us_per_msg"].as_f64().unwrap();
        assert!(cpu > 0.0 && cpu < 1_000_000.0, "{p}");
        assert!(p["cpu_vs_raw"].as_f64().unwrap() > 0.0, "{p}");
    }
    assert_eq!(phases[0]["database"], "none");
    assert_eq!(phases[1]["database"], "sqlite");
    if on_postgres {
        assert_eq!(phases[3]["database"], "postgres");
        assert!(phases[3]["database_cpu_us_per_msg"].as_f64().is_some());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn idle_connections_are_measured_per_kind_in_fresh_processes() {
    let report = tokio::task::spawn_blocking(|| {
        bench(&["--json", "--idle-connections", "50", "--producers", "2"])
    })
    .await
    .unwrap();
    assert_eq!(report["load_generator"], "process");
    let idle = &report["idle_connections"];
    assert_eq!(idle["connections"], 50);
    let kinds: Vec<&str> = idle["kinds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["name"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["plain", "tls", "one_subscription"]);
    for k in idle["kinds"].as_array().unwrap() {
        assert!(k["rss_connected"].as_u64().unwrap() > 1 << 20, "{k}");
        assert!(k["rss_bytes_per_connection"].as_u64().is_some(), "{k}");
    }
    assert!(idle["rss_after_logins"].as_u64().unwrap() >= 1 << 20);
}

/// `--replicas N --json`: the embedded cluster's phases (1 … N nodes), then the pass-through
/// and the replica phases through Mosquitto, the last with the failover time, in one document.
#[tokio::test(flavor = "multi_thread")]
async fn bench_json_reports_the_cluster_and_the_replicas() {
    if bal_scd::testing::backend() != bal_scd::Backend::Postgres {
        return; // the PostgreSQL pass runs it (the nodes and replicas share PostgreSQL)
    }
    crate::helpers::install_crypto_provider();
    let mosquitto = crate::mosquitto_server::MosquittoServer::start(256 * 1024);
    let anvil = bal_ledger::testing::Anvil::start().await;
    let args: Vec<String> = vec![
        "--json".into(),
        "--devices".into(),
        "20".into(),
        "--rate".into(),
        "10".into(),
        "--seconds".into(),
        "2".into(),
        "--producers".into(),
        "2".into(),
        "--replicas".into(),
        "2".into(),
        "--database".into(),
        bal_scd::testing::postgres_admin_url(),
        "--rpc".into(),
        anvil.url.clone(),
        "--mosquitto".into(),
        format!("mqtt://127.0.0.1:{}", mosquitto.port),
    ];
    let report = tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        bench_with(
            &args,
            &[
                ("BAL_BENCH_OPERATOR_KEY", bal_ledger::testing::ANVIL_KEY_0),
                ("BAL_BROKER__ADMIN_USERNAME", crate::mosquitto_server::ADMIN),
                (
                    "BAL_BROKER__ADMIN_PASSWORD",
                    crate::mosquitto_server::ADMIN_PASSWORD,
                ),
            ],
        )
    })
    .await
    .unwrap();
    assert_eq!(report["load_generator"], "process");
    let phases = report["phases"].as_array().unwrap();
    let described: Vec<(&str, u64)> = phases
        .iter()
        .map(|p| {
            let n = p["nodes"].as_u64().or(p["replicas"].as_u64()).unwrap_or(0);
            (p["name"].as_str().unwrap(), n)
        })
        .collect();
    assert_eq!(
        described,
        [
            ("embedded_cluster_qos1", 1),
            ("embedded_cluster_qos1", 2),
            ("passthrough", 0),
            ("postgres_qos1_replicas", 1),
            ("postgres_qos1_replicas", 2),
        ]
    );
    for p in phases {
        assert!(p["done_per_s"].as_f64().unwrap() > 0.0, "{p}");
        assert_eq!(p["qos"], 1);
    }
    assert_eq!(
        phases[1]["node_cpu_us_per_msg"].as_array().unwrap().len(),
        2
    );
    assert_eq!(phases[2]["broker"], "mosquitto");
    assert!(phases[4]["vs_raw"].as_f64().unwrap() > 0.0);
    assert!(
        phases[4]["failover_s"].as_f64().unwrap() > 0.0,
        "{}",
        phases[4]
    );
}
