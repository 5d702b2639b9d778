//! The certification explorer, for every role: look up an anchor transaction (what
//! getByTransaction returns, as a page), open a reading's proof, see it verified on the server
//! with each check shown, and download the bundle for `bal verify`.

use alloy_primitives::B256;
use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use bal_core::proof::{Outcome, ProofBundle};
use bal_ledger::proofs::check_with_ledger;
use bal_scd::BatchKey;
use maud::{Markup, html};
use serde::Deserialize;

use super::WebError;
use super::layout::{page, when};
use super::session::WebUser;
use crate::AppState;
use crate::error::ApiError;
use crate::routes::certification::readable_proof;
use crate::routes::measurements::readable_producers;

#[derive(Deserialize)]
pub struct ExplorerQuery {
    transaction: Option<String>,
}

/// Readings shown per transaction (the API pages through all of them).
const SHOWN: u32 = 200;

pub async fn show(
    State(state): State<AppState>,
    who: WebUser,
    Query(q): Query<ExplorerQuery>,
) -> Result<Response, WebError> {
    let fail = |e: ApiError| WebError::new(e, &who);
    let tx = q
        .transaction
        .as_deref()
        .map(str::trim)
        .filter(|t| !t.is_empty());
    let mut found = None;
    let mut problem = None;
    if let Some(raw) = tx {
        let hex = raw.strip_prefix("0x").unwrap_or_default();
        if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            problem = Some("A transaction hash is 0x followed by 64 hex digits.".to_owned());
        } else {
            let hash: B256 = raw
                .parse()
                .map_err(|_| fail(ApiError::BadRequest("hash".into())))?;
            match state.store.batch(BatchKey::Transaction(hash)).await? {
                None => problem = Some("No batch was anchored by this transaction.".to_owned()),
                Some(batch) => {
                    let producers = readable_producers(&state, &who.user).await.map_err(fail)?;
                    let rows = state
                        .store
                        .batch_measurements(&batch, producers.as_deref(), None, SHOWN)
                        .await?;
                    found = Some((batch, rows));
                }
            }
        }
    }
    let body = html! {
        form.inline method="get" action="/certification" {
            label for="transaction" { "Anchor transaction hash " }
            input #transaction name="transaction" size="70" value=(tx.unwrap_or_default())
                placeholder="0x…" pattern="0x[0-9a-fA-F]{64}";
            " "
            button type="submit" { "Look up" }
        }
        @if let Some(p) = problem {
            p.error role="alert" { (p) }
        }
        @if let Some((batch, rows)) = &found {
            @let a = batch.anchor.as_ref();
            dl #batch {
                dt { "Batch" } dd { (batch.seq) }
                dt { "Root" } dd.mono { (batch.root) }
                dt { "Leaves" } dd { (batch.leaf_count) " (" (batch.measurement_count) " readings)" }
                @if let Some(a) = a {
                    dt { "Block" } dd { (a.block_number) }
                    dt { "Block time" } dd { (chrono::DateTime::from_timestamp(a.block_time as i64, 0).as_ref().map(when).unwrap_or_default()) }
                    dt { "Chain" } dd { (a.chain_id) ", contract " span.mono { (a.contract) } }
                    dt { "Gas used" } dd { (a.gas_used) }
                }
            }
            div.table-wrap {
                table #certified {
                    caption { "Readings in this batch that you may read (" (rows.len()) " shown)" }
                    thead { tr {
                        th scope="col" { "Id" } th scope="col" { "Producer" } th scope="col" { "Received" }
                        th scope="col" { "Payload hash" } th scope="col" { "Proof" }
                    } }
                    tbody {
                        @for m in rows {
                            tr {
                                th scope="row" { (m.id) } td { (m.producer) } td { (when(&m.received_at)) }
                                td.mono { (m.payload_hash) }
                                td { a href={ "/certification/readings/" (m.id) } { "Open proof" } }
                            }
                        }
                        @if rows.is_empty() {
                            tr { td colspan="5" { "None of the readings in this batch are yours to read." } }
                        }
                    }
                }
            }
        }
    };
    Ok(page("Certification", Some(&who), None, body).into_response())
}

async fn bundle_of(state: &AppState, who: &WebUser, raw: &str) -> Result<ProofBundle, WebError> {
    readable_proof(state, &who.user, raw)
        .await
        .map_err(|e| WebError::new(e, who))
}

fn outcome_class(o: Outcome) -> &'static str {
    match o {
        Outcome::Passed => "passed",
        Outcome::Failed => "failed",
        Outcome::Skipped => "skipped",
    }
}

fn bundle_view(b: &ProofBundle) -> Markup {
    html! {
        dl #bundle {
            dt { "Format" } dd { (b.format) }
            dt { "Chain id" } dd { (b.chain_id) }
            dt { "Contract" } dd.mono { (b.contract) }
            dt { "Transaction" } dd.mono {
                a href={ "/certification?transaction=" (b.transaction) } { (b.transaction) }
            }
            dt { "Block" } dd { (b.block_number) }
            dt { "Root" } dd.mono { (b.root) }
            dt { "Leaf values" } dd.mono { (b.leaf_values.0.join(", ")) }
            dt { "Leaf" } dd.mono { (b.leaf) }
            dt { "Proof" } dd.mono {
                @for p in &b.proof { (p) br; }
                @if b.proof.is_empty() { "(empty: the reading is the batch's only leaf)" }
            }
        }
    }
}

/// A reading's proof, verified on the server, each check shown.
pub async fn reading(
    State(state): State<AppState>,
    who: WebUser,
    Path(raw): Path<String>,
) -> Result<Response, WebError> {
    let bundle = bundle_of(&state, &who, &raw).await?;
    let offline = bundle.verify_offline(None);
    let verdict = if offline.valid {
        offline.with(check_with_ledger(&state.certification.ledger, &bundle).await)
    } else {
        offline
    };
    let body = html! {
        p {
            a #download href={ "/certification/readings/" (raw) "/bundle.json" } download { "Download the proof bundle" }
            " — check it anywhere with "
            code { "bal verify bundle.json --rpc <Ethereum JSON-RPC>" }
        }
        h2 { "Verification" }
        p #verdict class=(if verdict.valid { "passed" } else { "failed" }) role="status" {
            @if verdict.valid { "Valid." } @else { "Invalid: " (verdict.reason.clone().unwrap_or_default()) }
        }
        div.table-wrap {
            table #checks {
                thead { tr { th scope="col" { "Check" } th scope="col" { "Outcome" } th scope="col" { "Detail" } } }
                tbody {
                    @for c in &verdict.checks {
                        tr data-check=(c.name) {
                            th scope="row" { (c.name) }
                            td class=(outcome_class(c.outcome)) { (outcome_class(c.outcome)) }
                            td.mono { (c.detail) }
                        }
                    }
                }
            }
        }
        h2 { "Proof bundle" }
        (bundle_view(&bundle))
    };
    Ok(page(&format!("Proof of reading {raw}"), Some(&who), None, body).into_response())
}

/// The bundle as a file.
pub async fn bundle(
    State(state): State<AppState>,
    who: WebUser,
    Path(raw): Path<String>,
) -> Result<Response, WebError> {
    let bundle = bundle_of(&state, &who, &raw).await?;
    let json = serde_json::to_string_pretty(&bundle)
        .map_err(|e| WebError::new(ApiError::internal(e), &who))?;
    Ok((
        [
            (header::CONTENT_TYPE, "application/json".to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"reading-{raw}-proof.json\""),
            ),
        ],
        json,
    )
        .into_response())
}
