//! `POST /rpc`: the embedded chain's Ethereum JSON-RPC, for anyone (it holds only roots and
//! transaction data, which are public by design), so that standard Ethereum tools and
//! `bal verify --rpc` can check proofs against it.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::AppState;
use crate::error::ApiError;

pub async fn rpc(State(state): State<AppState>, body: Bytes) -> Response {
    let Some(chain) = state.certification.embedded.clone() else {
        return ApiError::NotFound(
            "embedded chain (this BAL certifies on an external Ethereum node: ask that node)",
        )
        .into_response();
    };
    match bal_ledger::embedded::rpc::handle(&chain, &body).await {
        Some(answer) => (
            [(header::CONTENT_TYPE, "application/json")],
            answer.to_string(),
        )
            .into_response(),
        None => StatusCode::NO_CONTENT.into_response(),
    }
}
