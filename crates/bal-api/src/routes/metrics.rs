//! `GET /metrics` for Prometheus, and the middleware that counts every HTTP request.

use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use bal_core::setpoint::SetpointState;
use bal_scd::{BROKER_LEASE, CERTIFY_LEASE};

use crate::AppState;
use crate::routes::health;

/// The longest a scrape waits for a reading from the database.
const READ_TIMEOUT: Duration = Duration::from_secs(2);

/// Counts a request by method, route pattern and status class, with its latency. The route is
/// the matched pattern (`/api/users/{username}`), never the raw path: no names, no ids.
pub async fn count_request(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = req.method().clone();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let response = next.run(req).await;
    state.metrics.http_request(
        method.as_str(),
        &route,
        response.status().as_u16(),
        started.elapsed(),
    );
    response
}

/// Every metric in the OpenMetrics text format. The readings (dependencies, lease, backlog,
/// pool) are taken now, by the checks `/readyz` runs, so the two never disagree.
pub async fn metrics(State(state): State<AppState>) -> Response {
    sample(&state).await;
    (
        [(header::CONTENT_TYPE, bal_metrics::CONTENT_TYPE)],
        state.metrics.render(),
    )
        .into_response()
}

async fn sample(state: &AppState) {
    let m = &state.metrics;
    let (readiness, backlog, broker_lease, setpoints) = tokio::join!(
        health::check(state),
        tokio::time::timeout(READ_TIMEOUT, state.store.certification_backlog()),
        tokio::time::timeout(READ_TIMEOUT, state.store.lease(BROKER_LEASE)),
        tokio::time::timeout(READ_TIMEOUT, state.store.setpoint_counts()),
    );
    match setpoints {
        Ok(Ok(counts)) => {
            let counts: Vec<_> = counts.iter().map(|(s, n)| (s.as_str(), *n)).collect();
            let states = SetpointState::ALL.map(SetpointState::as_str);
            m.set_setpoints(&states, &counts);
        }
        _ => m.scrape_error("setpoints"),
    }
    for (name, dependency) in &readiness.dependencies {
        m.set_dependency(name, dependency.state == "up");
    }
    if let Some(head) = readiness.chain_head {
        m.set_chain_head(head);
    }
    m.set_ready(readiness.status == "ready");
    let me = state.config.replica_id.as_str();
    m.set_replicas_live(readiness.cluster.replicas.len());
    if let Some(mqtt) = &readiness.mqtt_cluster {
        let up = mqtt.peers.iter().filter(|p| p.state == "up").count();
        m.set_mqtt_cluster_peers(up, mqtt.peers.len() - up);
    }
    m.set_lease_held(
        CERTIFY_LEASE,
        readiness.cluster.lease_holder.as_deref() == Some(me),
    );
    match broker_lease {
        Ok(Ok(lease)) => m.set_lease_held(
            BROKER_LEASE,
            lease.is_some_and(|l| l.holder == me && l.expires_at > chrono::Utc::now()),
        ),
        _ => m.scrape_error("broker_lease"),
    }
    match backlog {
        Ok(Ok(b)) => m.set_backlog(b.unbatched_measurements, b.pending_measurements),
        _ => m.scrape_error("certification_backlog"),
    }
    let pool = state.store.pool_usage();
    m.set_database_pool(pool.open, pool.idle, pool.max);
}
