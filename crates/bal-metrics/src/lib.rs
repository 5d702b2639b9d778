//! The metrics operators watch, in one registry per process, rendered for Prometheus at
//! `GET /metrics` (OpenMetrics text).
//!
//! Every part of the BAL takes an `Arc<Metrics>` and counts what it does; values that are a
//! reading rather than a count (the certification backlog, the database pool, whether each
//! dependency is up) are sampled when `/metrics` is scraped, by the same checks `/readyz` runs.
//!
//! Labels are low-cardinality on purpose: sources, results, reasons, route *patterns*, status
//! classes, dependency and lease names. Never a user name, a topic or a raw path: a label value
//! is a time series in the operator's Prometheus, kept for weeks.
#![forbid(unsafe_code)]

mod labels;

use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use bal_core::SubscriptionStatus;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// The `Content-Type` of [`Metrics::render`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

use labels::*;
pub use labels::{Channel, Refusal, Source, Stored};

/// Latencies from half a millisecond to about 16 s.
fn latency_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

/// Anchor latency (stored → anchored): from 0.25 s to about 17 min, since a chain outage
/// holds every reading until it ends.
fn anchor_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.25, 2.0, 13))
}

type FloatGauge = Gauge<f64, AtomicU64>;

/// Every metric the BAL exports. Cheap to share: hold it in an `Arc`.
pub struct Metrics {
    registry: Registry,
    stored: Family<StoredLabels, Counter>,
    refused: Family<RefusedLabels, Counter>,
    ingest_commit: Histogram,
    ingest_batch: Histogram,
    mqtt_connections: Gauge,
    mqtt_sessions: Gauge,
    http_requests: Family<HttpLabels, Counter>,
    http_duration: Family<RouteLabels, Histogram, fn() -> Histogram>,
    backlog: Family<StageLabels, Gauge>,
    setpoints: Family<StateLabels, Gauge>,
    batches_anchored: Counter,
    measurements_anchored: Counter,
    anchor_latency: Histogram,
    anchor_failures: Counter,
    chain_head: Gauge,
    lease_held: Family<LeaseLabels, Gauge>,
    replicas_live: Gauge,
    mqtt_cluster_peers: Family<StateLabels, Gauge>,
    grant_decisions: Family<DecisionLabels, Counter>,
    failed_logins: Family<ChannelLabels, Counter>,
    db_connections: Family<StateLabels, Gauge>,
    db_max_connections: Gauge,
    dependency_up: Family<DependencyLabels, Gauge>,
    ready: Gauge,
    scrape_errors: Family<NameLabels, Counter>,
    started: FloatGauge,
    /// Readings taken just before each rendering (see [`Metrics::on_render`]).
    samplers: Mutex<Vec<Sampler>>,
}

type Sampler = Box<dyn Fn(&Metrics) + Send + Sync>;

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut r = Registry::with_prefix("bal");
        let m = Self {
            stored: Family::default(),
            refused: Family::default(),
            ingest_commit: latency_buckets(),
            ingest_batch: Histogram::new(exponential_buckets(1.0, 2.0, 13)),
            mqtt_connections: Gauge::default(),
            mqtt_sessions: Gauge::default(),
            http_requests: Family::default(),
            http_duration: Family::new_with_constructor(latency_buckets as fn() -> Histogram),
            backlog: Family::default(),
            setpoints: Family::default(),
            batches_anchored: Counter::default(),
            measurements_anchored: Counter::default(),
            anchor_latency: anchor_buckets(),
            anchor_failures: Counter::default(),
            chain_head: Gauge::default(),
            lease_held: Family::default(),
            replicas_live: Gauge::default(),
            mqtt_cluster_peers: Family::default(),
            grant_decisions: Family::default(),
            failed_logins: Family::default(),
            db_connections: Family::default(),
            db_max_connections: Gauge::default(),
            dependency_up: Family::default(),
            ready: Gauge::default(),
            scrape_errors: Family::default(),
            started: FloatGauge::default(),
            samplers: Mutex::default(),
            registry: Registry::default(),
        };
        r.register(
            "measurements",
            "Measurements accepted for storing, by source and result (stored, duplicate)",
            m.stored.clone(),
        );
        r.register(
            "measurements_refused",
            "Measurements not stored, by source and reason",
            m.refused.clone(),
        );
        r.register_with_unit(
            "ingest_commit_duration",
            "Time to commit one group of ingested measurements",
            prometheus_client::registry::Unit::Seconds,
            m.ingest_commit.clone(),
        );
        r.register(
            "ingest_batch_size",
            "Measurements per ingest commit",
            m.ingest_batch.clone(),
        );
        r.register(
            "mqtt_connections",
            "MQTT clients connected to the embedded broker",
            m.mqtt_connections.clone(),
        );
        r.register(
            "mqtt_sessions",
            "MQTT sessions the embedded broker holds (connected or persistent)",
            m.mqtt_sessions.clone(),
        );
        r.register(
            "http_requests",
            "HTTP requests answered, by method, route pattern and status class",
            m.http_requests.clone(),
        );
        r.register_with_unit(
            "http_request_duration",
            "Time to answer an HTTP request, by method and route pattern",
            prometheus_client::registry::Unit::Seconds,
            m.http_duration.clone(),
        );
        r.register(
            "certification_backlog",
            "Measurements stored but not yet anchored: not yet in a batch (unbatched), or in a \
             batch whose anchor is not recorded (unanchored)",
            m.backlog.clone(),
        );
        r.register(
            "setpoints",
            "Set points in the database by state (all replicas')",
            m.setpoints.clone(),
        );
        r.register(
            "batches_anchored",
            "Batches this replica anchored",
            m.batches_anchored.clone(),
        );
        r.register(
            "measurements_anchored",
            "Measurements in the batches this replica anchored",
            m.measurements_anchored.clone(),
        );
        r.register_with_unit(
            "anchor_latency",
            "Time from a measurement's storing to its batch's anchor being recorded",
            prometheus_client::registry::Unit::Seconds,
            m.anchor_latency.clone(),
        );
        r.register(
            "anchor_failures",
            "Certification rounds that failed (chain or database), retried with back-off",
            m.anchor_failures.clone(),
        );
        r.register(
            "chain_head_block",
            "The chain's latest block number, as last seen",
            m.chain_head.clone(),
        );
        r.register(
            "lease_held",
            "1 while this replica holds the lease (certify: anchoring; broker: driving Mosquitto)",
            m.lease_held.clone(),
        );
        r.register(
            "replicas_live",
            "Replicas whose heartbeats reach the database",
            m.replicas_live.clone(),
        );
        r.register(
            "mqtt_cluster_peers",
            "The other nodes of this node's MQTT cluster, by state (up: answered the last probe \
             through the node-to-node port)",
            m.mqtt_cluster_peers.clone(),
        );
        r.register(
            "grant_decisions",
            "Grant requests and decisions, by kind",
            m.grant_decisions.clone(),
        );
        r.register(
            "failed_logins",
            "Logins refused for a wrong password or an unknown user, by channel",
            m.failed_logins.clone(),
        );
        r.register(
            "database_connections",
            "Connections of this process's database pool, by state (in_use, idle)",
            m.db_connections.clone(),
        );
        r.register(
            "database_max_connections",
            "The most connections this process's pool holds",
            m.db_max_connections.clone(),
        );
        r.register(
            "dependency_up",
            "1 when the dependency answers (database, broker, chain), as /readyz reports it",
            m.dependency_up.clone(),
        );
        r.register("ready", "1 when /readyz answers 200", m.ready.clone());
        r.register(
            "scrape_errors",
            "Readings that failed while /metrics was rendered, by reading",
            m.scrape_errors.clone(),
        );
        r.register(
            "start_time_seconds",
            "When this process started, in seconds since the Unix epoch",
            m.started.clone(),
        );
        let build = Family::<BuildLabels, Gauge>::default();
        build
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION"),
            })
            .set(1);
        r.register("build_info", "The running version", build);
        m.started.set(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs_f64(),
        );
        Self { registry: r, ..m }
    }

    /// Runs `sample` before every rendering: for a reading that lives in a part which does
    /// not see the registry otherwise (the embedded broker's connection count).
    pub fn on_render(&self, sample: impl Fn(&Metrics) + Send + Sync + 'static) {
        self.samplers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Box::new(sample));
    }

    /// Renders every metric in the OpenMetrics text format.
    pub fn render(&self) -> String {
        for sample in self
            .samplers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            sample(self);
        }
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            // Writing to a String cannot fail; say so rather than panic if it ever did.
            let _ = writeln!(out, "# encoding failed: {e}");
        }
        out
    }

    pub fn measurement_stored(&self, source: Source, result: Stored, n: u64) {
        if n > 0 {
            self.stored
                .get_or_create(&StoredLabels {
                    source: source.as_str(),
                    result: result.as_str(),
                })
                .inc_by(n);
        }
    }

    pub fn measurement_refused(&self, source: Source, reason: Refusal, n: u64) {
        if n > 0 {
            self.refused
                .get_or_create(&RefusedLabels {
                    source: source.as_str(),
                    reason: reason.as_str(),
                })
                .inc_by(n);
        }
    }

    /// One group commit of `size` measurements that took `took`.
    pub fn ingest_commit(&self, size: usize, took: Duration) {
        self.ingest_commit.observe(took.as_secs_f64());
        self.ingest_batch.observe(size as f64);
    }

    pub fn set_mqtt_clients(&self, connections: usize, sessions: usize) {
        self.mqtt_connections.set(connections as i64);
        self.mqtt_sessions.set(sessions as i64);
    }

    /// An answered HTTP request: `route` is the matched pattern, never the raw path.
    pub fn http_request(&self, method: &str, route: &str, status: u16, took: Duration) {
        let method = method_label(method);
        let route = route.to_owned();
        self.http_requests
            .get_or_create(&HttpLabels {
                method,
                route: route.clone(),
                status: status_class(status),
            })
            .inc();
        self.http_duration
            .get_or_create(&RouteLabels { method, route })
            .observe(took.as_secs_f64());
    }

    pub fn set_backlog(&self, unbatched: u64, unanchored: u64) {
        for (stage, n) in [("unbatched", unbatched), ("unanchored", unanchored)] {
            self.backlog
                .get_or_create(&StageLabels { stage })
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
    }

    /// How many set points are in each state; states not listed have none.
    pub fn set_setpoints(&self, states: &[&'static str], counts: &[(&'static str, u64)]) {
        for state in states {
            let n = counts.iter().find(|(s, _)| s == state).map_or(0, |c| c.1);
            self.setpoints
                .get_or_create(&StateLabels { state })
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
    }

    /// A batch anchored and recorded by this replica; `ages` are its measurements' times from
    /// storing to now.
    pub fn batch_anchored(&self, measurements: u64, ages: impl IntoIterator<Item = Duration>) {
        self.batches_anchored.inc();
        self.measurements_anchored.inc_by(measurements);
        for age in ages {
            self.anchor_latency.observe(age.as_secs_f64());
        }
    }

    pub fn anchor_failed(&self) {
        self.anchor_failures.inc();
    }

    pub fn set_chain_head(&self, block: u64) {
        self.chain_head
            .set(i64::try_from(block).unwrap_or(i64::MAX));
    }

    pub fn set_lease_held(&self, lease: &'static str, held: bool) {
        self.lease_held
            .get_or_create(&LeaseLabels { lease })
            .set(i64::from(held));
    }

    /// How many of the MQTT cluster's other nodes answer (`up`) and do not (`down`).
    pub fn set_mqtt_cluster_peers(&self, up: usize, down: usize) {
        for (state, n) in [("up", up), ("down", down)] {
            self.mqtt_cluster_peers
                .get_or_create(&StateLabels { state })
                .set(n as i64);
        }
    }

    pub fn set_replicas_live(&self, n: usize) {
        self.replicas_live.set(n as i64);
    }

    /// A grant request or decision, by the status it led to (requested, accepted, refused,
    /// revoked, cancelled, expired).
    pub fn grant_decision(&self, status: SubscriptionStatus) {
        self.grant_decisions
            .get_or_create(&DecisionLabels {
                decision: status.as_str(),
            })
            .inc();
    }

    pub fn failed_login(&self, channel: Channel) {
        self.failed_logins
            .get_or_create(&ChannelLabels {
                channel: channel.as_str(),
            })
            .inc();
    }

    pub fn set_database_pool(&self, size: u32, idle: usize, max: u32) {
        let idle = idle as i64;
        self.db_connections
            .get_or_create(&StateLabels { state: "in_use" })
            .set((i64::from(size) - idle).max(0));
        self.db_connections
            .get_or_create(&StateLabels { state: "idle" })
            .set(idle);
        self.db_max_connections.set(i64::from(max));
    }

    pub fn set_dependency(&self, dependency: &'static str, up: bool) {
        self.dependency_up
            .get_or_create(&DependencyLabels { dependency })
            .set(i64::from(up));
    }

    pub fn set_ready(&self, ready: bool) {
        self.ready.set(i64::from(ready));
    }

    /// A reading that failed while rendering (the rest is still served).
    pub fn scrape_error(&self, name: &'static str) {
        self.scrape_errors.get_or_create(&NameLabels { name }).inc();
    }
}

/// The methods the API serves, and `other`: a client cannot make up label values.
fn method_label(method: &str) -> &'static str {
    match method {
        "GET" => "GET",
        "HEAD" => "HEAD",
        "POST" => "POST",
        "PUT" => "PUT",
        "PATCH" => "PATCH",
        "DELETE" => "DELETE",
        "OPTIONS" => "OPTIONS",
        _ => "other",
    }
}

fn status_class(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_render_with_their_labels_and_units() {
        let m = Metrics::new();
        m.measurement_stored(Source::Mqtt, Stored::New, 3);
        m.measurement_stored(Source::Mqtt, Stored::Duplicate, 1);
        m.measurement_refused(Source::Https, Refusal::TooLarge, 2);
        m.http_request(
            "GET",
            "/api/users/{username}",
            404,
            Duration::from_millis(3),
        );
        m.http_request("BREW", "unmatched", 405, Duration::from_millis(1));
        m.set_dependency("database", true);
        let text = m.render();
        for line in [
            "bal_measurements_total{source=\"mqtt\",result=\"stored\"} 3",
            "bal_measurements_total{source=\"mqtt\",result=\"duplicate\"} 1",
            "bal_measurements_refused_total{source=\"https\",reason=\"too_large\"} 2",
            "bal_http_requests_total{method=\"GET\",route=\"/api/users/{username}\",status=\"4xx\"} 1",
            "bal_http_requests_total{method=\"other\",route=\"unmatched\",status=\"4xx\"} 1",
            "bal_dependency_up{dependency=\"database\"} 1",
            "bal_build_info{version=\"",
            "# TYPE bal_ingest_commit_duration_seconds histogram",
            "# TYPE bal_anchor_latency_seconds histogram",
            "# EOF",
        ] {
            assert!(text.contains(line), "missing {line:?} in:\n{text}");
        }
    }

    #[test]
    fn pool_in_use_is_size_minus_idle_and_never_negative() {
        let m = Metrics::new();
        m.set_database_pool(3, 5, 10);
        let text = m.render();
        assert!(
            text.contains("bal_database_connections{state=\"in_use\"} 0"),
            "{text}"
        );
        m.set_database_pool(7, 2, 10);
        let text = m.render();
        assert!(
            text.contains("bal_database_connections{state=\"in_use\"} 5"),
            "{text}"
        );
        assert!(text.contains("bal_database_max_connections 10"), "{text}");
    }
}
