//! Certification: proof bundles of readings, the certified data of an anchor transaction
//! (`getByTransaction`, the seed's v2 path), the anchored batches, and server-side verification
//! of a bundle. What a caller sees of a batch is exactly what it may read elsewhere: its own
//! readings (producer), those of producers that granted it access (consumer), all (admin).

use alloy_primitives::B256;
use axum::extract::State;
use bal_core::Role;
use bal_core::proof::{Check, Outcome, ProofBundle, Verdict};
use bal_ledger::proofs::{ProofState, check_with_ledger};
use bal_scd::{Batch, BatchKey, ItemKind, SubscriptionQuery, User};
use base64::Engine as _;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::AppState;
use crate::auth::AuthUser;
use crate::error::{ApiError, ErrorBody, Json, Path, Query};
use crate::routes::measurements::{readable_measurement, readable_producers};
use crate::views::{AuditView, MeasurementView};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(proof))
        .routes(routes!(get_by_transaction))
        .routes(routes!(list_batches))
        .routes(routes!(get_batch))
        .routes(routes!(verify))
}

const DEFAULT_LIMIT: u32 = 100;
const MAX_LIMIT: u32 = 1000;

/// A page size: 1 to 1000, 100 by default (batches and set points).
pub(crate) fn limit(l: Option<u32>) -> Result<u32, ApiError> {
    let l = l.unwrap_or(DEFAULT_LIMIT);
    if (1..=MAX_LIMIT).contains(&l) {
        Ok(l)
    } else {
        Err(ApiError::BadRequest(format!(
            "limit must be 1 to {MAX_LIMIT}"
        )))
    }
}

fn hash32(raw: &str, what: &str) -> Result<B256, ApiError> {
    let hex = raw.strip_prefix("0x").unwrap_or_default();
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ApiError::BadRequest(format!(
            "{what} must be 0x followed by 64 hex digits"
        )));
    }
    raw.parse()
        .map_err(|_| ApiError::BadRequest(format!("{what} is not a 32-byte hex value")))
}

/// The `bal-proof/1` bundle (see DESIGN.md): `bal verify` and any Ethereum tool check it.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct ProofBundleDoc {
    #[schema(example = "bal-proof/1")]
    format: String,
    chain_id: u64,
    /// The certification contract.
    #[schema(pattern = "^(0x)?[0-9a-fA-F]{40}$")]
    contract: String,
    /// The anchor transaction.
    #[schema(pattern = "^(0x)?[0-9a-fA-F]{64}$")]
    transaction: String,
    block_number: u64,
    #[schema(pattern = "^(0x)?[0-9a-fA-F]{64}$")]
    root: String,
    /// `[producerWallet, topic, id, receivedAtMs, payloadHash]`, as strings.
    #[schema(min_items = 5, max_items = 5)]
    leaf_values: Vec<String>,
    #[schema(pattern = "^(0x)?[0-9a-fA-F]{64}$")]
    leaf: String,
    #[schema(inline)]
    proof: Vec<Hash32Doc>,
    #[schema(format = Byte)]
    payload_base64: Option<String>,
}

/// A 32-byte value in hex, as in a proof.
#[derive(ToSchema)]
#[allow(dead_code)]
#[schema(pattern = "^(0x)?[0-9a-fA-F]{64}$")]
pub struct Hash32Doc(String);

/// A reading's proof bundle, with its payload: 409 until its batch is anchored (within the
/// batch window and one block of its arrival).
#[utoipa::path(get, path = "/api/measurements/{id}/proof", tag = "certification",
    security(("bearer" = [])),
    params(("id" = i64, Path, minimum = 1, description = "The reading's id")),
    responses((status = 200, body = ProofBundleDoc), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn proof(
    State(state): State<AppState>,
    caller: AuthUser,
    Path(id): Path<String>,
) -> Result<Json<ProofBundle>, ApiError> {
    Ok(Json(readable_proof(&state, &caller.user, &id).await?))
}

/// The proof bundle of the reading a path's `id` names, if `caller` may read it: 409 until its
/// batch is anchored.
pub(crate) async fn readable_proof(
    state: &AppState,
    caller: &User,
    id: &str,
) -> Result<ProofBundle, ApiError> {
    let m = readable_measurement(state, caller, id).await?;
    let id = m.id;
    match state
        .certification
        .prover
        .measurement(id, Some(&m.payload))
        .await?
    {
        ProofState::Ready(bundle) => Ok(*bundle),
        ProofState::Pending => Err(ApiError::Conflict(format!(
            "reading {id} is not anchored yet; try again in a few seconds"
        ))),
        ProofState::Unknown => Err(ApiError::NotFound("measurement")),
    }
}

/// An anchored (or pending) batch.
#[derive(Serialize, ToSchema)]
pub struct BatchView {
    /// The batch number, also its on-chain `batchId`.
    batch: i64,
    root: String,
    leaf_count: u32,
    measurement_count: u32,
    created_at: DateTime<Utc>,
    /// `pending` or `anchored`.
    #[schema(example = "anchored")]
    status: &'static str,
    chain_id: Option<u64>,
    contract: Option<String>,
    transaction: Option<String>,
    block_number: Option<u64>,
    block_time: Option<DateTime<Utc>>,
    gas_used: Option<u64>,
}

impl From<&Batch> for BatchView {
    fn from(b: &Batch) -> Self {
        let a = b.anchor.as_ref();
        Self {
            batch: b.seq,
            root: b.root.to_string(),
            leaf_count: b.leaf_count,
            measurement_count: b.measurement_count,
            created_at: b.created_at,
            status: if a.is_some() { "anchored" } else { "pending" },
            chain_id: a.map(|a| a.chain_id),
            contract: a.map(|a| a.contract.to_checksum(None)),
            transaction: a.map(|a| a.tx_hash.to_string()),
            block_number: a.map(|a| a.block_number),
            block_time: a.and_then(|a| DateTime::from_timestamp(a.block_time as i64, 0)),
            gas_used: a.map(|a| a.gas_used),
        }
    }
}

/// A certified reading within its batch.
#[derive(Serialize, ToSchema)]
pub struct CertifiedMeasurement {
    #[serde(flatten)]
    measurement: MeasurementView,
    leaf_index: Option<usize>,
}

/// A certified grant decision within its batch.
#[derive(Serialize, ToSchema)]
pub struct CertifiedDecision {
    #[serde(flatten)]
    entry: AuditView,
    leaf_index: Option<usize>,
}

/// The certified data of one anchor transaction that the caller may read.
#[derive(Serialize, ToSchema)]
pub struct TransactionData {
    #[serde(flatten)]
    batch: BatchView,
    /// The readings in this page, by id.
    measurements: Vec<CertifiedMeasurement>,
    /// The grant decisions certified in this batch that concern the caller (all, for admins).
    grant_decisions: Vec<CertifiedDecision>,
    /// Pass as `cursor` for the next page of readings; absent on the last page.
    next_cursor: Option<i64>,
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct TransactionParams {
    /// The anchor transaction's hash, 0x and 64 hex digits.
    #[param(pattern = "^0x[0-9a-fA-F]{64}$")]
    transaction: String,
    /// Readings per page, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
    /// The `next_cursor` of the previous page.
    cursor: Option<i64>,
}

/// The certified data of an anchor transaction (v2 API `getByTransaction`): the batch, its
/// anchor, and the readings and grant decisions in it that the caller may read.
#[utoipa::path(get, path = "/api/certification/getByTransaction", tag = "certification",
    security(("bearer" = [])),
    params(TransactionParams),
    responses((status = 200, body = TransactionData), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
async fn get_by_transaction(
    State(state): State<AppState>,
    caller: AuthUser,
    Query(p): Query<TransactionParams>,
) -> Result<Json<TransactionData>, ApiError> {
    let tx = hash32(&p.transaction, "transaction")?;
    let limit = limit(p.limit)?;
    let batch = state
        .store
        .batch(BatchKey::Transaction(tx))
        .await?
        .ok_or(ApiError::NotFound("anchor transaction"))?;
    let caller = caller.user;
    let producers = readable_producers(&state, &caller).await?;
    let rows = state
        .store
        .batch_measurements(&batch, producers.as_deref(), p.cursor, limit)
        .await?;
    let next_cursor = (rows.len() == limit as usize)
        .then(|| rows.last().map(|m| m.id))
        .flatten();
    let prover = &state.certification.prover;
    let mut measurements = Vec::with_capacity(rows.len());
    for m in &rows {
        measurements.push(CertifiedMeasurement {
            measurement: MeasurementView::from(m),
            leaf_index: prover
                .leaf_index(&batch, ItemKind::Measurement, m.id)
                .await?,
        });
    }
    let mut grant_decisions = Vec::new();
    if p.cursor.is_none() {
        let mine: Option<std::collections::HashSet<String>> = match caller.role {
            Role::Admin => None,
            role => {
                let query = SubscriptionQuery {
                    consumer: (role == Role::Consumer).then(|| caller.username.clone()),
                    producer: (role == Role::Producer).then(|| caller.username.clone()),
                    ..SubscriptionQuery::default()
                };
                Some(
                    state
                        .store
                        .subscriptions(&query)
                        .await?
                        .iter()
                        .map(|s| format!("subscription:{}", s.id))
                        .collect(),
                )
            }
        };
        for e in state.store.batch_audit_entries(&batch).await? {
            if mine.as_ref().is_none_or(|m| m.contains(&e.object)) {
                grant_decisions.push(CertifiedDecision {
                    leaf_index: prover.leaf_index(&batch, ItemKind::Audit, e.id).await?,
                    entry: AuditView::from(&e),
                });
            }
        }
    }
    Ok(Json(TransactionData {
        batch: BatchView::from(&batch),
        measurements,
        grant_decisions,
        next_cursor,
    }))
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct BatchParams {
    /// The `next_before` of the previous page.
    before: Option<i64>,
    /// Batches per page, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
}

#[derive(Serialize, ToSchema)]
pub struct BatchPage {
    batches: Vec<BatchView>,
    /// Pass as `before` for the next (older) page; absent on the last page.
    next_before: Option<i64>,
}

/// The batches, newest first. Roots and anchors are public on chain; the readings in a batch
/// are read through `getByTransaction`, under the usual rules.
#[utoipa::path(get, path = "/api/certification/batches", tag = "certification",
    security(("bearer" = [])),
    params(BatchParams),
    responses((status = 200, body = BatchPage), (status = 400, body = ErrorBody)))]
async fn list_batches(
    State(state): State<AppState>,
    _caller: AuthUser,
    Query(p): Query<BatchParams>,
) -> Result<Json<BatchPage>, ApiError> {
    let limit = limit(p.limit)?;
    let batches = state.store.batches(p.before, limit).await?;
    let next_before = (batches.len() == limit as usize)
        .then(|| batches.last().map(|b| b.seq))
        .flatten();
    Ok(Json(BatchPage {
        batches: batches.iter().map(BatchView::from).collect(),
        next_before,
    }))
}

/// One batch, by its Merkle root.
#[utoipa::path(get, path = "/api/certification/batches/{root}", tag = "certification",
    security(("bearer" = [])),
    params(("root" = String, Path, pattern = "^0x[0-9a-fA-F]{64}$",
        description = "The batch's Merkle root, 0x and 64 hex digits")),
    responses((status = 200, body = BatchView), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
async fn get_batch(
    State(state): State<AppState>,
    _caller: AuthUser,
    Path(root): Path<String>,
) -> Result<Json<BatchView>, ApiError> {
    let root = hash32(&root, "root")?;
    let batch = state
        .store
        .batch(BatchKey::Root(root))
        .await?
        .ok_or(ApiError::NotFound("batch"))?;
    Ok(Json(BatchView::from(&batch)))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VerifyRequest {
    #[schema(value_type = ProofBundleDoc)]
    bundle: ProofBundle,
    /// The payload to check against the bundle, base64; otherwise the bundle's own, if any.
    #[schema(format = Byte)]
    payload_base64: Option<String>,
}

/// A check of the verdict.
#[derive(Serialize, ToSchema)]
pub struct CheckDoc {
    /// `format`, `payload_hash`, `leaf`, `proof` or `anchor`.
    name: String,
    /// `passed`, `failed` or `skipped`.
    outcome: String,
    detail: String,
}

/// The verdict on a bundle.
#[derive(Serialize, ToSchema)]
pub struct VerdictDoc {
    valid: bool,
    /// The first failed check, when invalid.
    reason: Option<String>,
    checks: Vec<CheckDoc>,
}

/// Verifies a proof bundle: the payload's hash, the leaf, the proof up to the root, and the
/// anchor on this BAL's chain (through the contract's own `verify`). Anyone can do the same
/// without the BAL: `bal verify BUNDLE --rpc URL`.
#[utoipa::path(post, path = "/api/certification/verify", tag = "certification",
    security(("bearer" = [])),
    request_body = VerifyRequest,
    responses((status = 200, body = VerdictDoc), (status = 400, body = ErrorBody),
        (status = 422, body = ErrorBody)))]
async fn verify(
    State(state): State<AppState>,
    _caller: AuthUser,
    Json(req): Json<VerifyRequest>,
) -> Result<Json<Verdict>, ApiError> {
    let payload = req
        .payload_base64
        .map(|p| {
            base64::engine::general_purpose::STANDARD
                .decode(p.trim())
                .map_err(|_| ApiError::Unprocessable("payload_base64 is not base64".into()))
        })
        .transpose()?;
    let verdict = req.bundle.verify_offline(payload.as_deref());
    let anchor = if verdict.valid {
        check_with_ledger(&state.certification.ledger, &req.bundle).await
    } else {
        Check::new(
            "anchor",
            Outcome::Skipped,
            "not asked: an offline check failed",
        )
    };
    Ok(Json(verdict.with(anchor)))
}
