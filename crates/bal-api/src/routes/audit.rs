//! The audit log, newest first, for admins.

use axum::extract::State;
use bal_core::{Actor, AuditAction};
use bal_scd::AuditQuery;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::AppState;
use crate::auth::Admin;
use crate::error::{ApiError, ErrorBody, Json, Query};
use crate::views::AuditView;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(audit_log))
}

const DEFAULT_LIMIT: u32 = 100;
const MAX_LIMIT: u32 = 1000;

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AuditParams {
    /// Only changes by this user (`@system` for the BAL).
    #[param(pattern = "^(@system|[a-z][a-z0-9_-]{2,31})$")]
    actor: Option<String>,
    /// Only this action, e.g. `subscription.accept`.
    #[param(
        pattern = "^(user\\.(create|delete|password)|subscription\\.(request|accept|refuse|revoke|cancel|expire))$"
    )]
    action: Option<String>,
    /// Only this object, e.g. `user:producer1` or `subscription:<id>`.
    object: Option<String>,
    /// The `next_before` of the previous page.
    before: Option<i64>,
    /// Entries per page, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
}

#[derive(Serialize, ToSchema)]
pub struct AuditPage {
    entries: Vec<AuditView>,
    /// Pass as `before` for the next (older) page; absent on the last page.
    next_before: Option<i64>,
}

/// The audit log of every user and grant change.
#[utoipa::path(get, path = "/api/audit", tag = "audit",
    security(("bearer" = [])),
    params(AuditParams),
    responses((status = 200, body = AuditPage), (status = 400, body = ErrorBody),
        (status = 403, body = ErrorBody)))]
async fn audit_log(
    State(state): State<AppState>,
    _admin: Admin,
    Query(p): Query<AuditParams>,
) -> Result<Json<AuditPage>, ApiError> {
    let limit = p.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::BadRequest(format!(
            "limit must be 1 to {MAX_LIMIT}"
        )));
    }
    let bad = |what: &str| ApiError::BadRequest(format!("unknown {what}"));
    let query = AuditQuery {
        actor: p
            .actor
            .map(|a| a.parse::<Actor>())
            .transpose()
            .map_err(|_| bad("actor"))?,
        action: p
            .action
            .map(|a| a.parse::<AuditAction>())
            .transpose()
            .map_err(|_| bad("action"))?,
        object: p.object,
        before_id: p.before,
        limit,
    };
    let entries = state.store.audit_log(&query).await?;
    let next_before = (entries.len() == limit as usize)
        .then(|| entries.last().map(|e| e.id))
        .flatten();
    Ok(Json(AuditPage {
        entries: entries.iter().map(AuditView::from).collect(),
        next_before,
    }))
}
