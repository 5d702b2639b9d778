//! The communication layer: the BAL's HTTPS REST API.
//!
//! - [`router`]: every route, its OpenAPI description at `/api/openapi.json` and Swagger UI at
//!   `/api/docs`, the body cap and request tracing.
//! - [`auth`]: bearer sessions and the extractors that yield the caller, typed by role.
//! - [`accounts`]: creating users (password hash + wallet) and changing passwords, shared by the
//!   API and the `bal user` commands.
//! - [`error`]: the JSON error type every handler returns.
//! - `openapi`: the document's common parts: statuses every operation of a kind answers, links.
//! - `routes`: one module per resource, and `POST /rpc` for the embedded chain.
//! - [`web`]: the dashboard, HTML pages for browsers at `/`.
#![forbid(unsafe_code)]

pub mod accounts;
pub mod auth;
pub mod client;
pub mod error;
mod linger;
mod openapi;
mod routes;
pub mod views;
pub mod web;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderName, Request};
use bal_ledger::certifier::CertifierHealth;
use bal_ledger::proofs::Prover;
use bal_ledger::{EmbeddedChain, SharedLedger};
use bal_metrics::Metrics;
use bal_scd::SharedStore;

use crate::accounts::AccountKeys;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_swagger_ui::SwaggerUi;

pub use bal_auth::{LimiterConfig, LoginLimiter};
pub use error::ApiError;
pub use routes::health::{MqttClusterProbe, MqttClusterState, MqttPeerState};

/// What the API needs from the settings.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// How long a login token stays valid.
    pub session_ttl: Duration,
    /// The largest request body accepted, in bytes.
    pub body_limit: usize,
    /// The largest measurement upload accepted, in bytes.
    pub ingest_body_limit: usize,
    /// The largest single measurement payload, in bytes.
    pub max_payload_bytes: usize,
    pub login_limits: LimiterConfig,
    /// Session cookies carry `Secure` (true whenever the server speaks HTTPS).
    pub secure_cookies: bool,
    /// How MQTT is served, as the admin's health section says it.
    pub broker: String,
    /// The external broker `/readyz` checks is reachable; `None` for the embedded one.
    pub broker_address: Option<(String, u16)>,
    /// This process's `cluster.replica_id`, as `/readyz` reports it.
    pub replica_id: String,
    /// Proxies whose `X-Forwarded-For` names the client (`http.trusted_proxies`).
    pub trusted_proxies: Vec<client::TrustedProxy>,
    /// Each issuer's set point budget per replica: (burst, per second).
    pub setpoint_rate: (u32, u32),
    /// Whether `GET /metrics` is served here; false when `metrics.listen` gives it a listener
    /// of its own (see [`metrics_router`]).
    pub metrics_route: bool,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            session_ttl: Duration::from_secs(12 * 3600),
            body_limit: 1024 * 1024,
            ingest_body_limit: 32 * 1024 * 1024,
            max_payload_bytes: 256 * 1024,
            login_limits: LimiterConfig::default(),
            secure_cookies: true,
            broker: "embedded (inside bal)".to_owned(),
            broker_address: None,
            replica_id: "bal".to_owned(),
            trusted_proxies: Vec::new(),
            metrics_route: true,
            setpoint_rate: (1000, 100),
        }
    }
}

/// Shared by every handler; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub store: SharedStore,
    pub keys: Arc<AccountKeys>,
    pub limiter: Arc<LoginLimiter>,
    pub config: Arc<ApiConfig>,
    pub certification: Arc<Certification>,
    /// What `/readyz` reports: each dependency's state and since when.
    pub dependencies: Arc<routes::health::Dependencies>,
    /// What `/metrics` exports; the brokers and the certifier count in the same registry.
    pub metrics: Arc<Metrics>,
    /// The MQTT cluster's state, when the embedded broker is a cluster node.
    pub mqtt_cluster: Option<routes::health::MqttClusterProbe>,
    /// Each issuer's budget of set points.
    pub setpoint_rate: Arc<routes::setpoints::SetpointRate>,
    /// Issuers' unlocked wallets, for signing set points.
    pub setpoint_signers: Arc<routes::setpoints::SignerCache>,
}

/// The chain side: where batches are anchored, proofs, and the certifier's health.
pub struct Certification {
    pub ledger: SharedLedger,
    /// The embedded chain, when it is the ledger: `POST /rpc` serves it.
    pub embedded: Option<Arc<EmbeddedChain>>,
    pub prover: Prover,
    pub health: Arc<Mutex<CertifierHealth>>,
}

impl AppState {
    pub fn new(
        store: SharedStore,
        keys: AccountKeys,
        config: ApiConfig,
        certification: Certification,
    ) -> Self {
        let (burst, per_second) = config.setpoint_rate;
        Self {
            store,
            keys: Arc::new(keys),
            limiter: Arc::new(LoginLimiter::new(config.login_limits.clone())),
            config: Arc::new(config),
            certification: Arc::new(certification),
            dependencies: Arc::default(),
            metrics: Arc::default(),
            mqtt_cluster: None,
            setpoint_rate: Arc::new(routes::setpoints::SetpointRate::new(burst, per_second)),
            setpoint_signers: Arc::default(),
        }
    }

    /// Reports the MQTT cluster in `/readyz`, `/metrics` and the admin's health section.
    pub fn with_mqtt_cluster(mut self, probe: routes::health::MqttClusterProbe) -> Self {
        self.mqtt_cluster = Some(probe);
        self
    }

    /// Counts in `metrics`, the registry the rest of the process counts in.
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = metrics;
        self
    }
}

/// Every documented route; the OpenAPI document is generated from the handlers' annotations.
fn documented_routes(config: &ApiConfig) -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .merge(routes::auth::router())
        .merge(routes::users::router())
        .merge(routes::subscriptions::router())
        .merge(routes::setpoints::router())
        // Uploads carry up to 10 000 readings: their own, larger cap.
        .merge(
            routes::measurements::router().layer(DefaultBodyLimit::max(config.ingest_body_limit)),
        )
        .merge(routes::certification::router())
        .merge(routes::audit::router())
        .merge(routes::health::router())
}

/// The whole API: the documented routes, their OpenAPI document and Swagger UI.
pub fn router(state: AppState) -> Router {
    let body_limit = state.config.body_limit;
    // The outer cap applies where a route sets none of its own.
    let (api, mut doc) = documented_routes(&state.config).split_for_parts();
    openapi::complete(&mut doc);
    let request_id = HeaderName::from_static("x-request-id");
    let mut app = api
        .merge(SwaggerUi::new("/api/docs").url("/api/openapi.json", doc))
        .route("/rpc", axum::routing::post(routes::rpc::rpc));
    if state.config.metrics_route {
        app = app.route("/metrics", axum::routing::get(routes::metrics::metrics));
    }
    app.merge(web::router())
        .fallback(routes::not_found)
        .method_not_allowed_fallback(routes::method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            routes::metrics::count_request,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            linger::drain_unread,
        ))
        .with_state(state)
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(PropagateRequestIdLayer::new(request_id.clone()))
        .layer(
            TraceLayer::new_for_http().make_span_with(|req: &Request<_>| {
                let id = req
                    .headers()
                    .get("x-request-id")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("-");
                // The matched route, not the raw path: low cardinality, and no ids or names.
                let route = req
                    .extensions()
                    .get::<axum::extract::MatchedPath>()
                    .map_or("unmatched", |p| p.as_str());
                tracing::info_span!("http", method = %req.method(), route, request_id = id)
            }),
        )
        .layer(SetRequestIdLayer::new(request_id, MakeRequestUuid))
}

/// `GET /metrics` alone, for the listener `metrics.listen` names (plain HTTP, meant for the
/// pod network or loopback, never the public port).
pub fn metrics_router(state: AppState) -> Router {
    Router::new()
        .route("/metrics", axum::routing::get(routes::metrics::metrics))
        .fallback(routes::not_found)
        .with_state(state)
}

/// The OpenAPI document alone, for `bal` to print or tests to inspect.
pub fn openapi() -> utoipa::openapi::OpenApi {
    let mut doc = documented_routes(&ApiConfig::default()).split_for_parts().1;
    openapi::complete(&mut doc);
    doc
}
