//! `bal bench-certify`: the certification benchmark, in one run on one chain.
//!
//! 1. End to end: measurements are committed to a fresh SCD at a steady rate while the
//!    certifier batches and anchors them; every measurement's latency is the time from its
//!    commit to the moment its batch's receipt was recorded.
//! 2. Transactions and gas per 1 000 measurements, against the original BAL's design on the
//!    same chain: one anchor transaction per measurement.
//! 3. Proofs verified per second on one core (leaf hash from the values, then the proof), with
//!    raw keccak256 throughput of the same core as the baseline.

use std::sync::Arc;
use std::time::{Duration, Instant};

use alloy_primitives::{Address, B256, keccak256};
use bal_core::merkle::{self, LeafValues, MerkleTree};
use bal_core::{Actor, NewMeasurement, Role, Topic, Username, WalletAddress};
use bal_ledger::embedded::{DEFAULT_CHAIN_ID, EmbeddedChain};
use bal_ledger::node::{NodeChain, NodeConfig};
use bal_ledger::{Certifier, CertifierConfig, SharedLedger};
use bal_scd::{NewUser, SharedStore};
use chrono::Utc;
use tokio::sync::watch;

#[derive(Debug, Clone, clap::Args)]
pub struct CertifyBenchArgs {
    /// Measurements per second committed to the SCD.
    #[arg(long, default_value_t = 10_000)]
    pub rate: u32,
    /// Seconds of load.
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// The certifier's batch window, in milliseconds.
    #[arg(long, default_value_t = 1000)]
    pub window_ms: u64,
    /// Anchors sent one per measurement for the baseline.
    #[arg(long, default_value_t = 1000)]
    pub baseline: u32,
    /// Certify on this Ethereum node instead of a fresh embedded chain (e.g. anvil).
    #[arg(long)]
    pub rpc: Option<String>,
    /// With --rpc: the hex key that signs (funded on that chain).
    #[arg(long, env = "BAL_CHAIN__OPERATOR_KEY")]
    pub operator_key: Option<String>,
    /// Run on PostgreSQL: a server (postgres://USER@HOST/DB) on which a scratch database is
    /// created for the run and dropped after it. Default: a scratch SQLite file.
    #[arg(long)]
    pub database: Option<String>,
}

fn percentile(sorted: &[i64], p: f64) -> i64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

pub async fn run(args: CertifyBenchArgs) -> anyhow::Result<()> {
    let server = args.database.clone();
    crate::scratch::ScratchDatabase::around(server.as_deref(), 2, |url| async move {
        run_on(&args, url.as_deref()).await
    })
    .await
}

async fn run_on(args: &CertifyBenchArgs, database: Option<&str>) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let url = match database {
        Some(url) => url.to_owned(),
        None => format!("sqlite://{}", dir.path().join("bench.db").display()),
    };
    println!(
        "database: {}",
        if database.is_some() {
            "PostgreSQL (scratch)"
        } else {
            "SQLite (scratch)"
        }
    );
    let store = bal_scd::connect(&url, &Default::default()).await?;
    let signer = bal_ledger::operator::load(
        args.operator_key.as_deref(),
        &dir.path().join("operator.key"),
    )?;
    let ledger: SharedLedger = match &args.rpc {
        Some(rpc) => Arc::new(
            NodeChain::connect(
                NodeConfig {
                    url: rpc,
                    ca: None,
                    signer,
                    chain_id: None,
                    contract: None,
                    replica: "bench-certify",
                },
                &store,
            )
            .await?,
        ),
        None => Arc::new(EmbeddedChain::open(&*store, &url, signer, DEFAULT_CHAIN_ID).await?),
    };
    println!(
        "chain: {} (chain id {}), contract {}",
        ledger.describe(),
        ledger.chain_id(),
        ledger.contract()
    );
    let batched = end_to_end(args, &store, &ledger).await?;
    one_per_measurement(args, &ledger, batched).await?;
    proof_verification();
    Ok(())
}

/// Transactions and gas per 1 000 measurements.
#[derive(Debug, Clone, Copy)]
struct PerThousand {
    transactions: f64,
    gas: f64,
}

async fn end_to_end(
    args: &CertifyBenchArgs,
    store: &SharedStore,
    ledger: &SharedLedger,
) -> anyhow::Result<PerThousand> {
    let producer = Username::parse("bench-producer")?;
    let wallet = alloy_signer_local::PrivateKeySigner::random().address();
    store
        .create_user(
            NewUser {
                username: producer.clone(),
                role: Role::Producer,
                password_hash: "unused".into(),
                wallet: WalletAddress::parse(&wallet.to_checksum(None))?,
                account: "{}".into(),
                broker_secret: None,
            },
            &Actor::System,
            Utc::now(),
        )
        .await?;
    let topic = Topic::parse("platone/bench-producer/meter")?;
    let certifier = Certifier::new(
        store.clone(),
        ledger.clone(),
        CertifierConfig {
            window: Duration::from_millis(args.window_ms),
            max_batch: 50_000,
            ..CertifierConfig::default()
        },
        "bench-certify",
    );
    let (stop_tx, stop_rx) = watch::channel(false);
    let worker = tokio::spawn(certifier.run(stop_rx));

    // Commits every 10 ms, as an ingest group commit would.
    let per_tick = (args.rate / 100).max(1) as usize;
    let ticks = args.seconds * 100;
    let started = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    let mut n = 0u64;
    for _ in 0..ticks {
        tick.tick().await;
        let batch: Vec<NewMeasurement> = (0..per_tick)
            .map(|i| {
                NewMeasurement::new(
                    topic.clone(),
                    format!(r#"{{"p":{},"q":{i}}}"#, n + i as u64).into_bytes(),
                )
            })
            .collect();
        store.insert_measurements(&batch).await?;
        n += per_tick as u64;
    }
    let offered = started.elapsed();
    // Wait for the last batch.
    let deadline = Instant::now() + Duration::from_millis(args.window_ms) + Duration::from_secs(30);
    loop {
        let s = store.certification_status().await?;
        if s.unbatched_measurements == 0 && s.pending_batches == 0 {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "certification did not catch up: {s:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let drained = started.elapsed();
    let _ = stop_tx.send(true);
    let _ = worker.await;

    // Latency of every measurement: commit to its batch's recorded receipt.
    let mut latencies = Vec::with_capacity(n as usize);
    let mut txs = 0u64;
    let mut gas = 0u64;
    let mut before = None;
    loop {
        let page = store.batches(before, 1000).await?;
        if page.is_empty() {
            break;
        }
        for b in &page {
            let a = b.anchor.expect("all anchored");
            txs += 1;
            gas += a.gas_used;
            let anchored = a.anchored_at.timestamp_millis();
            let mut after = None;
            loop {
                let rows = store.batch_measurements(b, None, after, 10_000).await?;
                if rows.is_empty() {
                    break;
                }
                for m in &rows {
                    latencies.push(anchored - m.received_at.timestamp_millis());
                }
                after = rows.last().map(|m| m.id);
            }
        }
        before = page.last().map(|b| b.seq);
    }
    latencies.sort_unstable();
    anyhow::ensure!(
        latencies.len() as u64 == n,
        "{} of {n} measurements certified",
        latencies.len()
    );
    println!();
    println!(
        "end to end: {n} measurements at {} msg/s offered over {:.1} s, window {} ms",
        args.rate,
        offered.as_secs_f64(),
        args.window_ms
    );
    println!(
        "  certified/s: {:.0} (all {n} anchored {:.2} s after the first commit)",
        n as f64 / drained.as_secs_f64(),
        drained.as_secs_f64()
    );
    println!(
        "  latency commit -> anchored: p50 {} ms, p99 {} ms, max {} ms (target p99 <= window + 2 s = {} ms)",
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        latencies.last().copied().unwrap_or_default(),
        args.window_ms + 2000
    );
    println!(
        "  {txs} anchor transactions, {gas} gas: per 1 000 measurements {:.4} transactions, {:.0} gas",
        txs as f64 * 1000.0 / n as f64,
        gas as f64 * 1000.0 / n as f64
    );
    Ok(PerThousand {
        transactions: txs as f64 * 1000.0 / n as f64,
        gas: gas as f64 * 1000.0 / n as f64,
    })
}

async fn one_per_measurement(
    args: &CertifyBenchArgs,
    ledger: &SharedLedger,
    batched: PerThousand,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut gas = 0u64;
    for i in 0..args.baseline {
        let leaf = keccak256(format!("one-per-measurement {i} {:?}", Instant::now()));
        let a = ledger.anchor(leaf, 1, B256::ZERO).await?;
        gas += a.gas_used;
    }
    let took = started.elapsed();
    let n = f64::from(args.baseline);
    let per_k_gas = gas as f64 * 1000.0 / n;
    println!();
    println!(
        "baseline, one anchor transaction per measurement (the original BAL), {} anchors:",
        args.baseline
    );
    println!(
        "  per 1 000 measurements 1000 transactions, {per_k_gas:.0} gas; {:.0} anchors/s on this chain",
        n / took.as_secs_f64()
    );
    println!(
        "  batched vs baseline: {:.0}x fewer transactions, {:.0}x less gas",
        1000.0 / batched.transactions.max(f64::MIN_POSITIVE),
        per_k_gas / batched.gas.max(f64::MIN_POSITIVE)
    );
    Ok(())
}

fn proof_verification() {
    const LEAVES: usize = 50_000;
    let values: Vec<LeafValues> = (0..LEAVES as u64)
        .map(|id| LeafValues {
            producer_wallet: Address::repeat_byte(0x42),
            topic: "platone/bench-producer/meter".into(),
            id,
            received_at_ms: 1_764_000_000_000 + id,
            payload_hash: keccak256(id.to_be_bytes()),
        })
        .collect();
    let leaves: Vec<B256> = values.iter().map(LeafValues::leaf).collect();
    let tree = MerkleTree::new(&leaves).expect("not empty");
    let root = tree.root();
    let sample: Vec<(usize, Vec<B256>)> = (0..4096)
        .map(|i| {
            let at = (i * 7919) % LEAVES;
            (at, tree.proof(at).expect("in range"))
        })
        .collect();
    let budget = Duration::from_secs(2);

    // Baseline: keccak256 of 64 bytes (one inner node), on this core.
    let started = Instant::now();
    let mut hashes = 0u64;
    let mut acc = B256::ZERO;
    while started.elapsed() < budget {
        for _ in 0..10_000 {
            acc = merkle::hash_pair(&acc, &root);
        }
        hashes += 10_000;
    }
    let hash_rate = hashes as f64 / started.elapsed().as_secs_f64();

    let started = Instant::now();
    let mut verified = 0u64;
    while started.elapsed() < budget {
        for (at, proof) in &sample {
            let leaf = values[*at].leaf();
            assert!(merkle::verify(&root, &leaf, proof));
        }
        verified += sample.len() as u64;
    }
    let rate = verified as f64 / started.elapsed().as_secs_f64();
    println!();
    println!(
        "proof verification, one core, tree of {LEAVES} leaves (depth {}):",
        sample[0].1.len()
    );
    println!(
        "  {rate:.0} proofs/s (leaf from values + proof); baseline {hash_rate:.0} keccak256 pair hashes/s; ratio {:.3} ({:.1} hashes per proof)",
        rate / hash_rate,
        hash_rate / rate
    );
    std::hint::black_box(acc);
}
