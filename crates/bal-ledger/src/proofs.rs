//! Proof bundles (`bal-proof/1`) for certified items, and the on-chain half of checking one.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use alloy_primitives::Bytes;
use alloy_provider::{DynProvider, Provider};
use alloy_rpc_types_eth::TransactionRequest;
use alloy_sol_types::SolCall;
use bal_core::merkle::MerkleTree;
use bal_core::proof::{Check, FORMAT, Outcome, ProofBundle};
use bal_scd::{Batch, BatchLeaves, CertificationStore, ItemKind, StoreResult};
use base64::Engine as _;

use crate::contract::{anchoredAtCall, verifyCall};
use crate::{LedgerError, SharedLedger};

/// Where a proof request stands.
#[derive(Debug)]
pub enum ProofState {
    /// Certified: the bundle.
    Ready(Box<ProofBundle>),
    /// Stored, but its batch is not anchored yet (or it is in no batch yet).
    Pending,
    /// No such item.
    Unknown,
}

/// How many batch trees are kept: rebuilding one of 50 000 leaves takes tens of
/// milliseconds, and proofs are asked for in bursts of the same batch.
const CACHED_TREES: usize = 8;

/// A batch's tree with the items it was built from.
type CachedTree = Arc<(MerkleTree, BatchLeaves)>;

/// Builds proof bundles from the SCD.
pub struct Prover {
    store: Arc<dyn CertificationStore>,
    /// Recently used batch trees, oldest first.
    cache: Mutex<VecDeque<(i64, CachedTree)>>,
}

impl Prover {
    pub fn new(store: Arc<dyn CertificationStore>) -> Self {
        Self {
            store,
            cache: Mutex::default(),
        }
    }

    async fn batch_tree(&self, seq: i64) -> StoreResult<Option<CachedTree>> {
        if let Some((_, t)) = self
            .cache
            .lock()
            .expect("cache lock")
            .iter()
            .find(|(s, _)| *s == seq)
        {
            return Ok(Some(t.clone()));
        }
        let Some(leaves) = self.store.batch_leaves(seq).await? else {
            return Ok(None);
        };
        let Ok(tree) = MerkleTree::new(&leaves.leaves) else {
            return Ok(None);
        };
        let entry = Arc::new((tree, leaves));
        let mut cache = self.cache.lock().expect("cache lock");
        if cache.len() >= CACHED_TREES {
            cache.pop_front();
        }
        cache.push_back((seq, entry.clone()));
        Ok(Some(entry))
    }

    /// The bundle of a measurement; with its payload embedded when `payload` is given.
    pub async fn measurement(&self, id: i64, payload: Option<&[u8]>) -> StoreResult<ProofState> {
        let Some(values) = self.store.measurement_leaf(id).await? else {
            return Ok(ProofState::Unknown);
        };
        self.bundle(ItemKind::Measurement, id, &values, payload)
            .await
    }

    /// The bundle of a certified audit entry (a grant decision or a set point's transition),
    /// with its payload: the entry as certified.
    pub async fn audit_entry(&self, id: i64) -> StoreResult<ProofState> {
        let Some((values, payload)) = self.store.audit_leaf(id).await? else {
            return Ok(ProofState::Unknown);
        };
        self.bundle(ItemKind::Audit, id, &values, Some(&payload))
            .await
    }

    async fn bundle(
        &self,
        kind: ItemKind,
        id: i64,
        values: &bal_core::merkle::LeafValues,
        payload: Option<&[u8]>,
    ) -> StoreResult<ProofState> {
        let Some(batch) = self.store.batch_of(kind, id).await? else {
            return Ok(ProofState::Pending);
        };
        let Some(anchor) = batch.anchor else {
            return Ok(ProofState::Pending);
        };
        let Some(entry) = self.batch_tree(batch.seq).await? else {
            return Ok(ProofState::Pending);
        };
        let (tree, leaves) = &*entry;
        let Some(index) = leaves.index_of(kind, id) else {
            return Ok(ProofState::Pending);
        };
        let proof = tree.proof(index).unwrap_or_default();
        Ok(ProofState::Ready(Box::new(ProofBundle {
            format: FORMAT.to_owned(),
            chain_id: anchor.chain_id,
            contract: anchor.contract,
            transaction: anchor.tx_hash,
            block_number: anchor.block_number,
            root: batch.root,
            leaf_values: values.into(),
            leaf: leaves.leaves[index],
            proof,
            payload_base64: payload.map(|p| base64::engine::general_purpose::STANDARD.encode(p)),
        })))
    }

    /// The leaf index of an item in its batch.
    pub async fn leaf_index(
        &self,
        batch: &Batch,
        kind: ItemKind,
        id: i64,
    ) -> StoreResult<Option<usize>> {
        Ok(self
            .batch_tree(batch.seq)
            .await?
            .and_then(|e| e.1.index_of(kind, id)))
    }
}

/// Judges the chain's two answers about a bundle.
fn judge(bundle: &ProofBundle, anchored_at: u64, verified: bool) -> Check {
    if anchored_at == 0 {
        return Check::new(
            "anchor",
            Outcome::Failed,
            format!(
                "root {} is not anchored by contract {} on chain {}",
                bundle.root, bundle.contract, bundle.chain_id
            ),
        );
    }
    if anchored_at != bundle.block_number {
        return Check::new(
            "anchor",
            Outcome::Failed,
            format!(
                "root {} is anchored in block {anchored_at}, the bundle says {}",
                bundle.root, bundle.block_number
            ),
        );
    }
    if !verified {
        return Check::new(
            "anchor",
            Outcome::Failed,
            "the contract's verify() rejects this proof",
        );
    }
    Check::new(
        "anchor",
        Outcome::Passed,
        format!(
            "anchored in block {anchored_at} by contract {} on chain {}; the contract's verify() accepts the proof",
            bundle.contract, bundle.chain_id
        ),
    )
}

/// Checks the anchor against the BAL's own ledger. A bundle naming another chain or contract
/// fails: anyone can deploy a look-alike contract and anchor a forged root in it, so only the
/// BAL's own contract vouches for its data.
pub async fn check_with_ledger(ledger: &SharedLedger, bundle: &ProofBundle) -> Check {
    if bundle.chain_id != ledger.chain_id() || bundle.contract != ledger.contract() {
        return Check::new(
            "anchor",
            Outcome::Failed,
            format!(
                "the bundle names contract {} on chain {}; this BAL certifies on contract {} on chain {}",
                bundle.contract,
                bundle.chain_id,
                ledger.contract(),
                ledger.chain_id()
            ),
        );
    }
    let answers = async {
        let at = ledger.anchored_at(bundle.root).await?;
        let ok = ledger
            .verify(bundle.root, &bundle.proof, bundle.leaf)
            .await?;
        Ok::<_, LedgerError>((at, ok))
    };
    match answers.await {
        Ok((at, ok)) => judge(bundle, at, ok),
        Err(e) => Check::new(
            "anchor",
            Outcome::Failed,
            format!("cannot ask the chain: {e}"),
        ),
    }
}

/// Checks the anchor through any Ethereum JSON-RPC endpoint. `Err` when the endpoint cannot be
/// asked (an I/O problem, not a verdict).
pub async fn check_with_rpc(provider: &DynProvider, bundle: &ProofBundle) -> anyhow::Result<Check> {
    let chain_id = provider.get_chain_id().await?;
    if chain_id != bundle.chain_id {
        return Ok(Check::new(
            "anchor",
            Outcome::Failed,
            format!(
                "the endpoint serves chain {chain_id}, the bundle names chain {}",
                bundle.chain_id
            ),
        ));
    }
    let call = |data: Vec<u8>| {
        TransactionRequest::default()
            .to(bundle.contract)
            .input(Bytes::from(data).into())
    };
    let at = provider
        .call(call(anchoredAtCall { root: bundle.root }.abi_encode()))
        .await?;
    let at = anchoredAtCall::abi_decode_returns(&at)?;
    let ok = provider
        .call(call(
            verifyCall {
                root: bundle.root,
                proof: bundle.proof.clone(),
                leaf: bundle.leaf,
            }
            .abi_encode(),
        ))
        .await?;
    let ok = verifyCall::abi_decode_returns(&ok)?;
    Ok(judge(bundle, at, ok))
}
