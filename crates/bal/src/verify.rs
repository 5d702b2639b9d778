//! `bal verify BUNDLE.json [--payload FILE] [--rpc URL] [--ca FILE]`: checks a `bal-proof/1`
//! bundle without the BAL — the payload's hash, the leaf, the proof up to the root and, with
//! `--rpc`, that the bundle's contract on that chain anchored the root in the stated block and
//! accepts the proof. `--contract` pins the contract the verifier trusts: anyone can deploy a
//! look-alike and anchor a forged root in it. Exit status: 0 valid, 1 invalid (with the
//! reason), 2 usage or I/O error.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use bal_core::proof::{Check, Outcome, ProofBundle, Verdict};

#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    /// The proof bundle (JSON), as `GET /api/measurements/{id}/proof` returns it.
    pub bundle: PathBuf,
    /// The payload to check; otherwise the bundle's own `payload_base64`, if any.
    #[arg(long)]
    pub payload: Option<PathBuf>,
    /// An Ethereum JSON-RPC endpoint of the bundle's chain: any node, or a BAL's `/rpc`.
    #[arg(long)]
    pub rpc: Option<String>,
    /// A PEM CA to trust for an `https://` endpoint (e.g. a BAL's generated `ca.pem`).
    #[arg(long, requires = "rpc")]
    pub ca: Option<PathBuf>,
    /// The certification contract you trust (its address, as the BAL's operator publishes
    /// it); a bundle naming another contract is invalid.
    #[arg(long)]
    pub contract: Option<String>,
}

pub const VALID: u8 = 0;
pub const INVALID: u8 = 1;
pub const USAGE_OR_IO: u8 = 2;

pub async fn run(args: VerifyArgs) -> ExitCode {
    match verdict(&args).await {
        Ok(v) => {
            print(&v);
            ExitCode::from(if v.valid { VALID } else { INVALID })
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(USAGE_OR_IO)
        }
    }
}

async fn verdict(args: &VerifyArgs) -> anyhow::Result<Verdict> {
    let text = std::fs::read(&args.bundle)
        .with_context(|| format!("cannot read {}", args.bundle.display()))?;
    let bundle: ProofBundle = serde_json::from_slice(&text)
        .with_context(|| format!("{} is not a proof bundle", args.bundle.display()))?;
    let payload = args
        .payload
        .as_ref()
        .map(|p| std::fs::read(p).with_context(|| format!("cannot read {}", p.display())))
        .transpose()?;
    let trusted = args
        .contract
        .as_deref()
        .map(|c| {
            c.parse::<alloy_primitives::Address>()
                .with_context(|| format!("--contract {c:?} is not an address"))
        })
        .transpose()?;
    let mut verdict = bundle.verify_offline(payload.as_deref());
    if let Some(trusted) = trusted {
        verdict = verdict.with(if trusted == bundle.contract {
            Check::new(
                "contract",
                Outcome::Passed,
                format!("{trusted} is the contract you trust"),
            )
        } else {
            Check::new(
                "contract",
                Outcome::Failed,
                format!(
                    "the bundle names contract {}, not {trusted}",
                    bundle.contract
                ),
            )
        });
    }
    let anchor = match &args.rpc {
        None => Check::new(
            "anchor",
            Outcome::Skipped,
            "no --rpc given: the anchor on chain was not checked",
        ),
        Some(_) if !verdict.valid => Check::new(
            "anchor",
            Outcome::Skipped,
            "not asked: an offline check failed",
        ),
        Some(url) => {
            let provider = bal_ledger::node::read_only(url, args.ca.as_deref())?;
            bal_ledger::proofs::check_with_rpc(&provider, &bundle)
                .await
                .with_context(|| format!("cannot ask {}", bal_ledger::node::redact(url)))?
        }
    };
    Ok(verdict.with(anchor))
}

fn print(v: &Verdict) {
    for c in &v.checks {
        let mark = match c.outcome {
            Outcome::Passed => "ok  ",
            Outcome::Failed => "FAIL",
            Outcome::Skipped => "skip",
        };
        println!("{mark} {:<13} {}", c.name, c.detail);
    }
    let unchecked: Vec<&str> = v
        .checks
        .iter()
        .filter(|c| c.outcome == Outcome::Skipped)
        .map(|c| c.name.as_str())
        .collect();
    match &v.reason {
        None if unchecked.is_empty() => println!("VALID"),
        None => println!("VALID (not checked: {})", unchecked.join(", ")),
        Some(r) => println!("INVALID: {r}"),
    }
}
