//! Set points: the grid operator (an admin) or the holder of a control grant commands one
//! device of a producer; the BAL stores the command before anything is sent, delivers it over
//! MQTT and records (and certifies) every step until the device's answer. A set point is seen
//! by its issuer, its producer and admins; for anyone else it does not exist (404).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use bal_core::proof::ProofBundle;
use bal_core::setpoint::{
    DeviceName, SetpointError, SetpointState, SetpointValues, check_valid_until,
};
use bal_core::{Actor, AuditAction, Role, Username};
use bal_ledger::proofs::ProofState;
use bal_scd::{AuditQuery, NewSetpoint, Setpoint, SetpointQuery, User, control_scope};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::AppState;
use crate::auth::AuthUser;
use crate::error::{ApiError, ErrorBody, Json, Path, Query};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_setpoints, issue_setpoint))
        .routes(routes!(get_setpoint))
        .routes(routes!(cancel_setpoint))
}

/// A set point as its issuer, its producer and admins see it.
#[derive(Debug, Serialize, ToSchema)]
pub struct SetpointView {
    pub id: i64,
    /// Who issued it; `@system` for the BAL itself.
    pub issuer: String,
    pub producer: String,
    #[schema(example = "inverter-1")]
    pub device: String,
    /// Where the device receives it: `setpoints/<producer>/<device>`.
    #[schema(example = "setpoints/producer1/inverter-1")]
    pub topic: String,
    /// The values, in their canonical form (keys sorted).
    #[schema(value_type = Object)]
    pub values: serde_json::Value,
    /// `keccak256` of the canonical values: what each transition's certified entry carries.
    pub values_hash: String,
    pub valid_until: DateTime<Utc>,
    /// The device's sequence number: it only grows.
    pub seq: i64,
    /// `queued`, `sent`, `delivered`, `received`, `applied`, `rejected`, `expired`,
    /// `cancelled`, `superseded` or `failed`.
    #[schema(example = "applied")]
    pub state: String,
    /// Why it was rejected (the device's words), superseded, expired or failed.
    pub reason: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// How many times it was sent.
    pub attempts: u32,
}

impl From<&Setpoint> for SetpointView {
    fn from(s: &Setpoint) -> Self {
        Self {
            id: s.id,
            issuer: s.issuer.to_string(),
            producer: s.producer.to_string(),
            device: s.device.to_string(),
            topic: bal_core::setpoint::command_topic(&s.producer, &s.device),
            values: s.values.to_value(),
            values_hash: s.values.hash().to_string(),
            valid_until: s.valid_until,
            seq: s.seq,
            state: s.state.to_string(),
            reason: s.reason.clone(),
            created_at: s.created_at,
            updated_at: s.updated_at,
            attempts: s.attempts,
        }
    }
}

/// One step of a set point's life, with its proof once certified.
#[derive(Debug, Serialize, ToSchema)]
pub struct TransitionView {
    #[schema(example = "applied")]
    pub state: String,
    pub at: DateTime<Utc>,
    /// Who caused it: the issuer, the producer (its device's answer) or `@system`.
    pub actor: String,
    /// The audit entry that records it (`GET /api/audit`).
    pub audit_id: i64,
    /// The entry as certified (the proof's payload).
    #[schema(value_type = Object)]
    pub detail: serde_json::Value,
    /// The `bal-proof/1` bundle once its batch is anchored, else null.
    #[schema(value_type = Option<crate::routes::certification::ProofBundleDoc>)]
    pub proof: Option<ProofBundle>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SetpointDetail {
    #[serde(flatten)]
    pub setpoint: SetpointView,
    /// Oldest first.
    pub transitions: Vec<TransitionView>,
}

/// The body of `POST /api/setpoints`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IssueSetpoint {
    #[schema(value_type = String, example = "producer1")]
    producer: String,
    /// One topic level: 1 to 64 characters, no `/`, `+`, `#`, control characters or leading `$`.
    #[schema(value_type = String, example = "inverter-1", min_length = 1, max_length = 64,
        pattern = "^[^/+#$\\x00-\\x1f\\x7f-\\x9f][^/+#\\x00-\\x1f\\x7f-\\x9f]{0,63}$")]
    device: String,
    /// What to set: a JSON object with at least one key, at most 4096 bytes in canonical form.
    #[schema(schema_with = values_schema)]
    values: serde_json::Value,
    /// When the set point stops being valid: never sent after it, `expired` if the device has
    /// given no final answer by then.
    valid_until: DateTime<Utc>,
}

/// `values`: any JSON object with at least one key.
fn values_schema() -> utoipa::openapi::schema::Object {
    use utoipa::openapi::schema::{ObjectBuilder, Type};
    ObjectBuilder::new()
        .schema_type(Type::Object)
        .min_properties(Some(1))
        .examples([serde_json::json!({"p_max_kw": 3.5})])
        .build()
}

/// Issues a set point to one device of a producer: stored `queued` (and certified) before
/// anything is sent, then delivered on `setpoints/<producer>/<device>`.
#[utoipa::path(post, path = "/api/setpoints", tag = "setpoints",
    security(("bearer" = [])),
    request_body = IssueSetpoint,
    responses(
        (status = 201, body = SetpointView),
        (status = 400, body = ErrorBody, description = "not JSON"),
        (status = 403, body = ErrorBody, description = "neither an admin nor holding a control grant on this producer"),
        (status = 404, body = ErrorBody, description = "no such producer"),
        (status = 409, body = ErrorBody, description = "a replica of an earlier release is running"),
        (status = 413, body = ErrorBody, description = "values over 4096 bytes"),
        (status = 422, body = ErrorBody, description = "bad device, values or valid_until"),
        (status = 429, body = ErrorBody, description = "over the issuer's rate"),
    ))]
async fn issue_setpoint(
    State(state): State<AppState>,
    caller: AuthUser,
    body: Bytes,
) -> Result<impl IntoResponse, ApiError> {
    let caller = caller.user;
    let req: IssueSetpoint = serde_json::from_slice(&body).map_err(|e| {
        // A number too large for a double is well-formed JSON that we cannot keep exactly.
        let data = e.classify() == serde_json::error::Category::Data
            || e.to_string().contains("number out of range");
        if data {
            ApiError::Unprocessable(e.to_string())
        } else {
            ApiError::BadRequest(e.to_string())
        }
    })?;
    let issued = issue(
        &state,
        &caller,
        &req.producer,
        &req.device,
        &req.values,
        req.valid_until,
    )
    .await?;
    let location = format!("/api/setpoints/{}", issued.id);
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(SetpointView::from(&issued)),
    ))
}

/// Issues a set point as `caller`, after every check in order: the caller's rate (429), the
/// producer exists (404), the caller may command it (403), the device, values and validity are
/// acceptable (422, 413).
/// Used by the API and the dashboard.
pub(crate) async fn issue(
    state: &AppState,
    caller: &User,
    producer: &str,
    device: &str,
    values: &serde_json::Value,
    valid_until: DateTime<Utc>,
) -> Result<Setpoint, ApiError> {
    state.setpoint_rate.take(&caller.username)?;
    ensure_replicas_know_setpoints(state).await?;
    let producer = Username::parse(producer).map_err(|_| ApiError::NotFound("producer"))?;
    let is_producer = state
        .store
        .user(&producer)
        .await?
        .is_some_and(|u| u.role == Role::Producer);
    if !is_producer {
        return Err(ApiError::NotFound("producer"));
    }
    let now = Utc::now();
    if !control_scope(&*state.store, caller, Some(&producer), now)
        .await?
        .allows(&producer)
    {
        return Err(ApiError::Forbidden(format!(
            "sending set points to {producer}'s devices needs an admin or an accepted control grant"
        )));
    }
    let device = DeviceName::parse(device).map_err(invalid)?;
    let values = SetpointValues::new(values).map_err(invalid)?;
    check_valid_until(valid_until, now).map_err(invalid)?;
    let signature = sign(state, caller, &producer, &device, &values, valid_until).await?;
    let new = NewSetpoint {
        issuer: Actor::User(caller.username.clone()),
        producer,
        device,
        values,
        valid_until,
        signature: Some(signature),
    };
    let issued = state.store.issue_setpoint(new, now).await?;
    tracing::info!(setpoint = issued.id, producer = %issued.producer, device = %issued.device, "set point issued");
    Ok(issued)
}

/// The issuer's wallet signs what it issues (`bal-core`'s `signed_message`, EIP-191), so the
/// certified `setpoint.queued` entry shows who commanded what. The key is unlocked here, on
/// the server, and never leaves it.
async fn sign(
    state: &AppState,
    caller: &User,
    producer: &Username,
    device: &DeviceName,
    values: &SetpointValues,
    valid_until: DateTime<Utc>,
) -> Result<String, ApiError> {
    use alloy_signer::SignerSync;
    let message = bal_core::setpoint::signed_message(
        caller.username.as_str(),
        producer,
        device,
        &values.hash(),
        valid_until,
    );
    let signer = match state.setpoint_signers.get(&caller.username) {
        Some(signer) => signer,
        None => {
            let keystore = state
                .store
                .wallet_keystore(&caller.username)
                .await?
                .ok_or_else(|| ApiError::internal(anyhow::anyhow!("the issuer has no wallet")))?;
            let keys = state.keys.clone();
            // scrypt: milliseconds of CPU and megabytes of memory, off the async workers.
            let signer = tokio::task::spawn_blocking(move || {
                bal_wallet::Wallet::unlock(&keystore, &keys.master)
            })
            .await
            .map_err(ApiError::internal)?
            .map_err(ApiError::internal)?;
            state.setpoint_signers.keep(&caller.username, signer)
        }
    };
    let signature = signer
        .sign_message_sync(message.as_bytes())
        .map_err(ApiError::internal)?;
    Ok(format!("0x{}", hex::encode(signature.as_bytes())))
}

/// Issuers' unlocked wallets, kept for a while: unlocking one costs a scrypt (tens of
/// milliseconds of CPU), which a DSO setting a thousand inverters would pay a thousand times.
/// The keys stay in this process's memory, as they are while a set point is signed; they are
/// dropped (and zeroed) after [`SignerCache::TTL`] or when the cache is full.
#[derive(Default)]
pub struct SignerCache {
    signers: Mutex<HashMap<Username, (Arc<alloy_signer_local::PrivateKeySigner>, Instant)>>,
}

impl SignerCache {
    const TTL: std::time::Duration = std::time::Duration::from_secs(10 * 60);
    const MAX: usize = 256;

    fn get(&self, user: &Username) -> Option<Arc<alloy_signer_local::PrivateKeySigner>> {
        let signers = self.signers.lock().unwrap_or_else(|e| e.into_inner());
        signers
            .get(user)
            .filter(|(_, at)| at.elapsed() < Self::TTL)
            .map(|(s, _)| s.clone())
    }

    fn keep(
        &self,
        user: &Username,
        signer: alloy_signer_local::PrivateKeySigner,
    ) -> Arc<alloy_signer_local::PrivateKeySigner> {
        let signer = Arc::new(signer);
        let mut signers = self.signers.lock().unwrap_or_else(|e| e.into_inner());
        signers.retain(|_, (_, at)| at.elapsed() < Self::TTL);
        if signers.len() >= Self::MAX
            && let Some(oldest) = signers
                .iter()
                .min_by_key(|(_, (_, at))| *at)
                .map(|(u, _)| u.clone())
        {
            signers.remove(&oldest);
        }
        signers.insert(user.clone(), (signer.clone(), Instant::now()));
        signer
    }
}

impl std::fmt::Debug for SignerCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the keys.
        f.debug_struct("SignerCache").finish_non_exhaustive()
    }
}

/// The first release that knows control grants and set points.
const SETPOINTS_SINCE: (u64, u64) = (0, 2);

/// Refuses control grants and set points while a replica of an earlier release is live on the
/// database: it would read a control grant as a data grant (and let its holder read the
/// producer's data), never certify set point transitions if it held the certification lease,
/// and remove the Mosquitto role the BAL sends set points with. 409 until the upgrade is done.
pub(crate) async fn ensure_replicas_know_setpoints(state: &AppState) -> Result<(), ApiError> {
    let older: Vec<String> = state
        .store
        .live_replicas()
        .await?
        .into_iter()
        .filter(|r| {
            let mut parts = r.info.version.split(['.', '-', '+']);
            let major = parts.next().and_then(|p| p.parse::<u64>().ok());
            let minor = parts.next().and_then(|p| p.parse::<u64>().ok());
            match (major, minor) {
                (Some(major), Some(minor)) => (major, minor) < SETPOINTS_SINCE,
                _ => true,
            }
        })
        .map(|r| format!("{} ({})", r.info.id, r.info.version))
        .collect();
    if older.is_empty() {
        Ok(())
    } else {
        Err(ApiError::Conflict(format!(
            "replicas of an earlier release are running ({}): they do not know control grants \
             and set points; finish the upgrade first",
            older.join(", ")
        )))
    }
}

fn invalid(e: SetpointError) -> ApiError {
    match e {
        SetpointError::TooLarge => ApiError::PayloadTooLarge(e.to_string()),
        _ => ApiError::Unprocessable(e.to_string()),
    }
}

/// A set point `caller` may see: its issuer, its producer, an admin. `NotFound` otherwise.
pub(crate) async fn visible(
    state: &AppState,
    caller: &User,
    id: &str,
) -> Result<Setpoint, ApiError> {
    let not_found = ApiError::NotFound("set point");
    let Ok(id) = id.parse::<i64>() else {
        return Err(not_found);
    };
    let s = state.store.setpoint(id).await?.ok_or(not_found)?;
    let mine = s.issuer.username() == Some(&caller.username) || s.producer == caller.username;
    if mine || caller.role == Role::Admin {
        Ok(s)
    } else {
        Err(ApiError::NotFound("set point"))
    }
}

/// One set point with its transitions, each with its proof once anchored.
#[utoipa::path(get, path = "/api/setpoints/{id}", tag = "setpoints",
    security(("bearer" = [])),
    params(("id" = i64, Path, minimum = 1)),
    responses((status = 200, body = SetpointDetail), (status = 404, body = ErrorBody)))]
async fn get_setpoint(
    State(state): State<AppState>,
    caller: AuthUser,
    Path(id): Path<String>,
) -> Result<Json<SetpointDetail>, ApiError> {
    let s = visible(&state, &caller.user, &id).await?;
    Ok(Json(SetpointDetail {
        transitions: transitions(&state, &s).await?,
        setpoint: SetpointView::from(&s),
    }))
}

/// A set point's transitions, oldest first, each with its proof once anchored.
pub(crate) async fn transitions(
    state: &AppState,
    s: &Setpoint,
) -> Result<Vec<TransitionView>, ApiError> {
    let mut entries = state
        .store
        .audit_log(&AuditQuery {
            object: Some(format!("setpoint:{}", s.id)),
            limit: 100,
            ..AuditQuery::default()
        })
        .await?;
    entries.reverse();
    let mut transitions = Vec::with_capacity(entries.len());
    for e in entries {
        let AuditAction::Setpoint(to) = e.action else {
            continue;
        };
        let proof = match state.certification.prover.audit_entry(e.id).await? {
            ProofState::Ready(bundle) => Some(*bundle),
            ProofState::Pending | ProofState::Unknown => None,
        };
        transitions.push(TransitionView {
            state: to.to_string(),
            at: e.at,
            actor: e.actor.to_string(),
            audit_id: e.id,
            detail: e.detail,
            proof,
        });
    }
    Ok(transitions)
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// Only this producer's devices.
    #[param(pattern = "^[a-z][a-z0-9_-]{2,31}$")]
    producer: Option<String>,
    /// The `next_before` of the previous page.
    #[param(minimum = 1)]
    before: Option<i64>,
    /// Set points per page, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
}

#[derive(Serialize, ToSchema)]
pub struct SetpointPage {
    setpoints: Vec<SetpointView>,
    /// Pass as `before` for the next (older) page; absent on the last page.
    next_before: Option<i64>,
}

/// The set points the caller may see (issued by it, or to its devices; all for an admin),
/// newest first.
#[utoipa::path(get, path = "/api/setpoints", tag = "setpoints",
    security(("bearer" = [])),
    params(ListParams),
    responses((status = 200, body = SetpointPage), (status = 400, body = ErrorBody)))]
async fn list_setpoints(
    State(state): State<AppState>,
    caller: AuthUser,
    Query(p): Query<ListParams>,
) -> Result<Json<SetpointPage>, ApiError> {
    let limit = crate::routes::certification::limit(p.limit)?;
    if p.before.is_some_and(|b| b < 1) {
        return Err(ApiError::BadRequest("before must be a set point id".into()));
    }
    let producer = match p.producer {
        Some(raw) => Some(
            Username::parse(&raw)
                .map_err(|_| ApiError::BadRequest("producer is not a username".into()))?,
        ),
        None => None,
    };
    let caller = caller.user;
    let query = SetpointQuery {
        producer,
        visible_to: (caller.role != Role::Admin).then(|| caller.username.clone()),
        before_id: p.before,
        limit,
    };
    let list = state.store.setpoints(&query).await?;
    let next_before = (list.len() == limit as usize)
        .then(|| list.last().map(|s| s.id))
        .flatten();
    Ok(Json(SetpointPage {
        setpoints: list.iter().map(SetpointView::from).collect(),
        next_before,
    }))
}

/// Cancels a set point the device has not yet received (by its issuer or an admin).
#[utoipa::path(post, path = "/api/setpoints/{id}/cancel", tag = "setpoints",
    security(("bearer" = [])),
    params(("id" = i64, Path, minimum = 1)),
    responses((status = 200, body = SetpointView), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "the device has it already, or it is closed")))]
async fn cancel_setpoint(
    State(state): State<AppState>,
    caller: AuthUser,
    Path(id): Path<String>,
) -> Result<Json<SetpointView>, ApiError> {
    Ok(Json(SetpointView::from(
        &cancel(&state, &caller.user, &id).await?,
    )))
}

/// Cancels set point `id` as `caller`: its issuer or an admin (403), while the device has not
/// received it (409).
pub(crate) async fn cancel(
    state: &AppState,
    caller: &User,
    id: &str,
) -> Result<Setpoint, ApiError> {
    let s = visible(state, caller, id).await?;
    if s.issuer.username() != Some(&caller.username) && caller.role != Role::Admin {
        return Err(ApiError::Forbidden(
            "only the issuer or an admin cancels a set point".into(),
        ));
    }
    let actor = Actor::User(caller.username.clone());
    Ok(state
        .store
        .move_setpoint(s.id, SetpointState::Cancelled, &actor, None, Utc::now())
        .await?)
}

/// Each issuer's budget of set points: a token bucket per user, per replica. Generous enough
/// for a DSO that sets a thousand inverters at once, tight enough that a runaway script cannot
/// flood the devices' queues.
#[derive(Debug)]
pub struct SetpointRate {
    burst: f64,
    per_second: f64,
    buckets: Mutex<HashMap<Username, (f64, Instant)>>,
}

impl SetpointRate {
    pub fn new(burst: u32, per_second: u32) -> Self {
        Self {
            burst: f64::from(burst),
            per_second: f64::from(per_second),
            buckets: Mutex::default(),
        }
    }

    /// Takes one set point from `user`'s budget, or says when to retry.
    fn take(&self, user: &Username) -> Result<(), ApiError> {
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let (tokens, at) = buckets.entry(user.clone()).or_insert((self.burst, now));
        *tokens =
            (*tokens + now.duration_since(*at).as_secs_f64() * self.per_second).min(self.burst);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            let wait = ((1.0 - *tokens) / self.per_second).ceil().max(1.0) as u64;
            Err(ApiError::TooManyRequests {
                retry_after_secs: wait,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rate_allows_a_burst_then_refuses_with_a_retry_time() {
        let rate = SetpointRate::new(3, 1);
        let dso = Username::parse("dso").unwrap();
        for _ in 0..3 {
            rate.take(&dso).unwrap();
        }
        match rate.take(&dso) {
            Err(ApiError::TooManyRequests { retry_after_secs }) => assert!(retry_after_secs >= 1),
            other => panic!("{other:?}"),
        }
        // Another issuer has its own budget.
        rate.take(&Username::parse("other").unwrap()).unwrap();
    }
}
