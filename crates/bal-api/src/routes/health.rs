//! Liveness and readiness probes for Kubernetes and load balancers.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::AppState;
use crate::error::Json;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(healthz))
        .routes(routes!(readyz))
}

#[derive(Serialize, ToSchema)]
pub struct Health {
    #[schema(example = "ok")]
    status: &'static str,
}

/// Liveness: the process answers.
#[utoipa::path(get, path = "/healthz", tag = "health",
    responses((status = 200, body = Health)))]
async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// How long `/readyz` waits for the database before calling it down: a probe must answer
/// well within a load balancer's timeout even when the pool is starved.
const PING_TIMEOUT: Duration = Duration::from_secs(2);

/// The readiness body: the verdict, and every dependency with its state.
#[derive(Serialize, ToSchema)]
pub struct Readiness {
    /// `ready`, or `unready` when this process cannot serve (the status is then 503).
    #[schema(example = "ready")]
    status: &'static str,
    /// By name (`database`).
    dependencies: BTreeMap<&'static str, DependencyState>,
}

#[derive(Clone, Serialize, ToSchema)]
pub struct DependencyState {
    /// `up` or `down`.
    #[schema(example = "up")]
    pub state: &'static str,
    /// When it last changed state (or, if it never did, when this process first checked).
    pub since: DateTime<Utc>,
    /// Why it is down; no secrets (the URL is never included).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Each dependency's last known state, so that `/readyz` can say since when.
#[derive(Default)]
pub struct Dependencies {
    states: Mutex<BTreeMap<&'static str, DependencyState>>,
}

impl Dependencies {
    /// Records a check of `name`; `since` moves only when the state changes.
    pub fn record(&self, name: &'static str, result: Result<(), String>) -> DependencyState {
        let mut states = self.states.lock().unwrap_or_else(|e| e.into_inner());
        let state = if result.is_ok() { "up" } else { "down" };
        let since = match states.get(name) {
            Some(old) if old.state == state => old.since,
            _ => Utc::now(),
        };
        let now = DependencyState {
            state,
            since,
            error: result.err(),
        };
        states.insert(name, now.clone());
        now
    }
}

/// Readiness: 503 when this process cannot serve (the database does not answer). The body
/// lists each dependency with its state either way.
#[utoipa::path(get, path = "/readyz", tag = "health",
    responses((status = 200, body = Readiness), (status = 503, body = Readiness)))]
async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<Readiness>) {
    let ping = match tokio::time::timeout(PING_TIMEOUT, state.store.ping()).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer within {} s", PING_TIMEOUT.as_secs())),
    };
    let ready = ping.is_ok();
    let database = state.dependencies.record("database", ping);
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = Readiness {
        status: if ready { "ready" } else { "unready" },
        dependencies: BTreeMap::from([("database", database)]),
    };
    (status, Json(body))
}
