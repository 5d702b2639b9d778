//! Layered settings: built-in defaults, then `bal.toml`, then `BAL_*` environment variables
//! (`__` separates levels: `BAL_HTTP__LISTEN`), then command-line flags.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

pub use crate::mqtt_cluster::MqttClusterSettings;

/// A secret from the settings. Its `Debug` and `Display` never show it.
#[derive(Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// Holds the SQLite database, the master key and the generated certificates.
    pub data_dir: PathBuf,
    pub http: HttpSettings,
    pub mqtt: MqttSettings,
    pub broker: BrokerSettings,
    pub database: DatabaseSettings,
    pub keys: KeySettings,
    pub auth: AuthSettings,
    pub ingest: IngestSettings,
    pub chain: ChainSettings,
    pub certify: CertifySettings,
    pub setpoints: SetpointSettings,
    pub cluster: ClusterSettings,
    pub metrics: MetricsSettings,
    pub log: LogSettings,
    /// The first admin's password, used only when no admin exists yet (`BAL_ADMIN_PASSWORD`).
    pub admin_password: Option<Secret>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpSettings {
    pub listen: SocketAddr,
    /// Plain HTTP (`false`) is accepted only on a loopback address.
    pub tls: bool,
    /// PEM certificate chain; with `key_file`. Unset: a generated CA and certificate.
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    /// Extra DNS names or IP addresses for the generated certificate.
    pub tls_names: Vec<String>,
    /// Largest request body accepted, in bytes.
    pub body_limit_bytes: usize,
    /// Largest measurement upload (`POST /api/measurements`) accepted, in bytes.
    pub ingest_body_limit_bytes: usize,
    /// After SIGTERM, how long `/readyz` answers 503 while everything is still served, so that
    /// a load balancer stops sending before the listeners close.
    pub shutdown_delay_ms: u64,
    /// Load balancers or proxies (addresses or networks, `10.0.0.0/8`) whose `X-Forwarded-For`
    /// names the client; the login limits count that address. Empty: the peer's own.
    pub trusted_proxies: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct MqttSettings {
    /// Plain MQTT; `"off"` disables it.
    #[serde(with = "optional_address")]
    pub listen: Option<SocketAddr>,
    /// MQTT over TLS, with the HTTPS certificate; `"off"` disables it.
    #[serde(with = "optional_address")]
    pub listen_tls: Option<SocketAddr>,
    /// Plain MQTT is refused on a non-loopback address unless this is true.
    pub allow_plain_remote: bool,
    /// Most MQTT sessions on this node (connected, or kept for a client that comes back);
    /// the next CONNECT is refused with "server unavailable". 0: no limit.
    pub max_sessions: usize,
    /// Messages a session may have sent to its client and not yet had acknowledged.
    pub max_inflight: std::num::NonZeroU16,
    /// Messages held for a slow or offline client beyond the in-flight window; when full,
    /// new ones for it are dropped.
    pub max_queued_messages: usize,
    /// This replica as one node of an MQTT cluster; unset: a single node.
    pub cluster: MqttClusterSettings,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BrokerKind {
    /// The broker inside `bal` (rmqtt).
    Embedded,
    /// An external Mosquitto driven through its Dynamic Security plugin.
    Mosquitto,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct BrokerSettings {
    pub kind: BrokerKind,
    /// With `mosquitto`: `mqtt://host:port` or `mqtts://host:port`.
    pub url: String,
    /// With `mqtts://`: the PEM CA that signed the broker's certificate.
    pub ca_file: Option<PathBuf>,
    /// The dynsec admin the BAL logs in as (`deploy/mosquitto/bootstrap.sh` creates it).
    pub admin_username: String,
    pub admin_password: Option<Secret>,
    /// The persistent ingest session's client id; distinct and stable per replica. Unset:
    /// `bal-ingest-<cluster.replica_id>`.
    pub ingest_client_id: Option<String>,
    /// Whether the ingest session joins the shared subscription `$share/bal/platone/#`, for
    /// several BALs that split the load. Off (one BAL): a plain subscription to `platone/#`,
    /// which Mosquitto 2.0 restores from its persistence file after a restart; shared ones it
    /// forgets, and what devices publish before the BAL subscribes again is dropped.
    pub shared_ingest: bool,
    /// Full reconciliations of the broker with the SCD happen at least this often.
    pub reconcile_secs: u64,
}

/// This machine's name (a pod's name on Kubernetes), for per-replica identifiers.
fn host_name() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "bal".into())
}

/// `"off"` (or `""`) for no listener, otherwise a socket address.
pub(crate) mod optional_address {
    use std::net::SocketAddr;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &Option<SocketAddr>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(a) => s.collect_str(a),
            None => s.serialize_str("off"),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SocketAddr>, D::Error> {
        let raw = String::deserialize(d)?;
        match raw.trim() {
            "" | "off" => Ok(None),
            a => a.parse().map(Some).map_err(serde::de::Error::custom),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseSettings {
    /// Unset: `sqlite://<data_dir>/bal.db`. `postgres://` or `postgresql://` for PostgreSQL
    /// (it may carry a password: a secret).
    pub url: Option<Secret>,
    /// The most connections this process holds (PostgreSQL).
    pub max_connections: u32,
    /// How long a request waits for a free connection before it is refused with 503.
    pub acquire_timeout_ms: u64,
    /// Whether `serve` and `demo` bring an outdated schema up to date on start; every other
    /// command refuses one (`bal db migrate` migrates alone).
    pub auto_migrate: bool,
}

impl Default for DatabaseSettings {
    fn default() -> Self {
        Self {
            url: None,
            max_connections: 10,
            acquire_timeout_ms: 3000,
            auto_migrate: true,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct KeySettings {
    /// Encrypts every wallet key at rest. Unset: `<data_dir>/master.key`, created with mode 0600.
    pub master_key: Option<Secret>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthSettings {
    pub session_ttl_secs: u64,
    pub max_failed_logins_per_user: u32,
    pub max_failed_logins_per_address: u32,
    pub failed_login_window_secs: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngestSettings {
    /// Largest single measurement payload, over MQTT or HTTPS, in bytes.
    pub max_payload_bytes: usize,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ChainSettings {
    /// An Ethereum node's JSON-RPC (`http(s)://`). Unset: the embedded chain.
    pub rpc_url: Option<Secret>,
    /// With `rpc_url` over `https://` behind a private CA: that CA, PEM.
    pub ca_file: Option<PathBuf>,
    /// The embedded chain's id; with `rpc_url`, the id the node must report (unset: any).
    pub chain_id: Option<u64>,
    /// The hex key that signs anchors. Unset: `<data_dir>/operator.key`, created once.
    pub operator_key: Option<Secret>,
    /// The certification contract. Unset: deployed on first use and remembered.
    pub contract: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct CertifySettings {
    /// How often stored measurements are batched and anchored, in milliseconds.
    pub batch_window_ms: u64,
    /// The most leaves in one Merkle batch.
    pub max_batch: u32,
    /// How long the certification lease lasts unless renewed: how soon another replica takes
    /// over anchoring when the holder dies.
    pub lease_secs: u64,
}

impl Default for CertifySettings {
    fn default() -> Self {
        Self {
            batch_window_ms: 1000,
            max_batch: 50_000,
            lease_secs: 10,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SetpointSettings {
    /// Set points one user may issue at once, per replica (a token bucket's size).
    pub issue_burst: u32,
    /// ... refilled at this many per second.
    pub issue_per_second: u32,
    /// Seconds before an unanswered set point is sent again (same id, same seq).
    pub retry_secs: u64,
    /// Sends without the device's `received` before a set point `failed`.
    pub max_attempts: u32,
}

impl Default for SetpointSettings {
    fn default() -> Self {
        Self {
            issue_burst: 1000,
            issue_per_second: 100,
            retry_secs: 10,
            max_attempts: 30,
        }
    }
}

impl SetpointSettings {
    pub fn sender(&self) -> bal_mqtt::setpoints::SenderConfig {
        bal_mqtt::setpoints::SenderConfig {
            retry: Duration::from_secs(self.retry_secs.max(1)),
            max_attempts: self.max_attempts.max(1),
            ..bal_mqtt::setpoints::SenderConfig::default()
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterSettings {
    /// This replica's name: in the registry of live replicas, as the lease holder and in the
    /// default ingest client id. Unset: the host name (a StatefulSet pod's name).
    pub replica_id: Option<String>,
    /// How often this replica says it is alive, in seconds; it counts as gone after three
    /// missed heartbeats.
    pub heartbeat_secs: u64,
}

impl Default for ClusterSettings {
    fn default() -> Self {
        Self {
            replica_id: None,
            heartbeat_secs: 3,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsSettings {
    /// `GET /metrics` on a listener of its own, plain HTTP (the pod network or loopback), and
    /// not on the HTTPS one. `"off"` (the default): served on `http.listen`.
    #[serde(with = "optional_address")]
    pub listen: Option<SocketAddr>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogSettings {
    pub format: LogFormat,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("./bal-data"),
            http: HttpSettings::default(),
            mqtt: MqttSettings::default(),
            broker: BrokerSettings::default(),
            database: DatabaseSettings::default(),
            keys: KeySettings::default(),
            auth: AuthSettings::default(),
            ingest: IngestSettings::default(),
            chain: ChainSettings::default(),
            certify: CertifySettings::default(),
            setpoints: SetpointSettings::default(),
            cluster: ClusterSettings::default(),
            metrics: MetricsSettings::default(),
            log: LogSettings::default(),
            admin_password: None,
        }
    }
}

impl Default for HttpSettings {
    fn default() -> Self {
        Self {
            listen: "0.0.0.0:8443".parse().expect("valid address"),
            tls: true,
            cert_file: None,
            key_file: None,
            tls_names: Vec::new(),
            body_limit_bytes: 1024 * 1024,
            ingest_body_limit_bytes: 32 * 1024 * 1024,
            shutdown_delay_ms: 2000,
            trusted_proxies: Vec::new(),
        }
    }
}

impl Default for MqttSettings {
    fn default() -> Self {
        Self {
            listen: Some("127.0.0.1:1883".parse().expect("valid address")),
            listen_tls: Some("0.0.0.0:8883".parse().expect("valid address")),
            allow_plain_remote: false,
            max_sessions: 100_000,
            max_inflight: std::num::NonZeroU16::new(16).expect("not zero"),
            max_queued_messages: 1000,
            cluster: MqttClusterSettings::default(),
        }
    }
}

impl Default for BrokerSettings {
    fn default() -> Self {
        Self {
            kind: BrokerKind::Embedded,
            url: "mqtt://127.0.0.1:1883".into(),
            ca_file: None,
            admin_username: "bal-admin".into(),
            admin_password: None,
            ingest_client_id: None,
            shared_ingest: false,
            reconcile_secs: 30,
        }
    }
}

impl Default for AuthSettings {
    fn default() -> Self {
        Self {
            session_ttl_secs: 12 * 3600,
            max_failed_logins_per_user: 5,
            max_failed_logins_per_address: 20,
            failed_login_window_secs: 15 * 60,
        }
    }
}

impl Default for IngestSettings {
    fn default() -> Self {
        Self {
            max_payload_bytes: 256 * 1024,
        }
    }
}

impl Default for LogSettings {
    fn default() -> Self {
        Self {
            format: LogFormat::Text,
        }
    }
}

/// What `bal config default` prints: every setting at its default, with its environment name.
pub const DEFAULT_TOML: &str = include_str!("default-settings.toml");

/// The top-level keys an environment variable may set; other `BAL_*` variables (such as a
/// shell's `BAL_HOME`) are not settings and are ignored rather than refused.
const TOP_LEVEL_KEYS: [&str; 14] = [
    "data_dir",
    "http",
    "mqtt",
    "broker",
    "database",
    "keys",
    "auth",
    "ingest",
    "chain",
    "certify",
    "cluster",
    "metrics",
    "log",
    "admin_password",
];

/// Command-line values that override everything else.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub data_dir: Option<PathBuf>,
    pub http_listen: Option<SocketAddr>,
}

impl Settings {
    /// Defaults, then the file (`bal.toml` when none is named and it exists), then the
    /// environment, then `overrides`.
    pub fn load(file: Option<&Path>, overrides: &Overrides) -> anyhow::Result<Self> {
        let mut figment = Figment::from(Serialized::defaults(Settings::default()));
        match file {
            Some(path) => {
                anyhow::ensure!(path.exists(), "config file {} not found", path.display());
                figment = figment.merge(Toml::file(path));
            }
            None => figment = figment.merge(Toml::file("bal.toml")),
        }
        let env = Env::prefixed("BAL_").split("__").filter(|key| {
            // Keys keep the variable's case here (`HTTP.LISTEN`); figment lowercases later.
            let top = key.as_str().split('.').next().unwrap_or_default();
            TOP_LEVEL_KEYS.iter().any(|k| k.eq_ignore_ascii_case(top))
        });
        let mut settings: Settings = figment
            .merge(env)
            .extract()
            .map_err(|e| anyhow::anyhow!("invalid settings: {e}"))?;
        if let Some(d) = &overrides.data_dir {
            settings.data_dir = d.clone();
        }
        if let Some(l) = overrides.http_listen {
            settings.http.listen = l;
        }
        Ok(settings)
    }

    /// How to use the external broker (`broker.kind = "mosquitto"`).
    pub fn mosquitto_config(&self) -> anyhow::Result<bal_mqtt::MosquittoConfig> {
        let b = &self.broker;
        let password = b
            .admin_password
            .as_ref()
            .map(|p| p.expose().to_owned())
            .unwrap_or_default();
        let connection = bal_mqtt::BrokerConnection::new(
            &b.url,
            b.ca_file.clone(),
            b.admin_username.clone(),
            password,
        )?;
        let ingest_client_id = match &b.ingest_client_id {
            Some(id) => id.clone(),
            None => format!("bal-ingest-{}", self.replica_id()?),
        };
        Ok(bal_mqtt::MosquittoConfig {
            connection,
            ingest_client_id,
            shared_ingest: b.shared_ingest,
            reconcile_every: Duration::from_secs(b.reconcile_secs.max(1)),
            max_payload_bytes: self.ingest.max_payload_bytes,
            replica_id: self.replica_id()?,
            lease: Duration::from_secs(self.certify.lease_secs.max(1)),
        })
    }

    /// How this replica serves MQTT, as the replica registry compares it with the others.
    pub fn mqtt_role(&self) -> anyhow::Result<bal_scd::MqttRole> {
        Ok(match self.broker.kind {
            BrokerKind::Mosquitto => bal_scd::MqttRole::Mosquitto {
                shared: self.broker.shared_ingest,
            },
            BrokerKind::Embedded => match self.mqtt.cluster.config(true)? {
                Some(c) => bal_scd::MqttRole::ClusterNode {
                    node_id: c.node_id,
                    membership: c.membership(),
                },
                None => bal_scd::MqttRole::Embedded,
            },
        })
    }

    /// `http.trusted_proxies`, parsed.
    pub fn trusted_proxies(&self) -> anyhow::Result<Vec<bal_api::client::TrustedProxy>> {
        self.http
            .trusted_proxies
            .iter()
            .map(|t| {
                bal_api::client::TrustedProxy::parse(t)
                    .map_err(|e| anyhow::anyhow!("http.trusted_proxies: {e}"))
            })
            .collect()
    }

    /// `cluster.replica_id`, or the host name: letters, digits, `.`, `_` and `-`, at most 63.
    pub fn replica_id(&self) -> anyhow::Result<String> {
        let id = self.cluster.replica_id.clone().unwrap_or_else(host_name);
        anyhow::ensure!(
            !id.is_empty()
                && id.len() <= 63
                && id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')),
            "cluster.replica_id {id:?}: use 1 to 63 letters, digits, '.', '_' or '-'"
        );
        Ok(id)
    }

    /// How to open the database; `migrate` says whether this command may migrate it.
    pub fn connect_options(&self, migrate: bal_scd::Migrate) -> bal_scd::ConnectOptions {
        bal_scd::ConnectOptions {
            max_connections: self.database.max_connections,
            acquire_timeout: Duration::from_millis(self.database.acquire_timeout_ms),
            migrate,
        }
    }

    pub fn database_url(&self) -> String {
        match &self.database.url {
            Some(url) => url.expose().to_owned(),
            None => format!("sqlite://{}", self.data_dir.join("bal.db").display()),
        }
    }

    pub fn api_config(&self) -> bal_api::ApiConfig {
        bal_api::ApiConfig {
            session_ttl: Duration::from_secs(self.auth.session_ttl_secs),
            body_limit: self.http.body_limit_bytes,
            ingest_body_limit: self.http.ingest_body_limit_bytes,
            max_payload_bytes: self.ingest.max_payload_bytes,
            login_limits: bal_api::LimiterConfig {
                per_username: self.auth.max_failed_logins_per_user,
                per_address: self.auth.max_failed_logins_per_address,
                window: Duration::from_secs(self.auth.failed_login_window_secs),
                ..bal_api::LimiterConfig::default()
            },
            secure_cookies: self.http.tls,
            setpoint_rate: (
                self.setpoints.issue_burst.max(1),
                self.setpoints.issue_per_second.max(1),
            ),
            // Refused at start when invalid (Application::build).
            trusted_proxies: self.trusted_proxies().unwrap_or_default(),
            // Refused at start when invalid (Application::build).
            replica_id: self.replica_id().unwrap_or_default(),
            metrics_route: self.metrics.listen.is_none(),
            broker_address: match self.broker.kind {
                BrokerKind::Embedded => None,
                BrokerKind::Mosquitto => self
                    .mosquitto_config()
                    .ok()
                    .map(|c| (c.connection.host, c.connection.port)),
            },
            broker: match self.broker.kind {
                BrokerKind::Embedded => "embedded (inside bal)".to_owned(),
                BrokerKind::Mosquitto => format!(
                    "Mosquitto at {}, kept in line with the database",
                    self.broker.url
                ),
            },
        }
    }
}

#[cfg(test)]
#[allow(clippy::result_large_err)] // figment::Jail's closures must return its large error type.
mod tests {
    use super::*;

    #[test]
    fn the_printed_default_file_is_exactly_the_defaults() {
        let parsed: Settings = Figment::from(Toml::string(DEFAULT_TOML)).extract().unwrap();
        assert_eq!(parsed, Settings::default());
    }

    #[test]
    fn environment_overrides_file_and_flags_override_both() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "bal.toml",
                "data_dir = \"/from/file\"\n[http]\nlisten = \"127.0.0.1:1\"\ntls = false\n",
            )?;
            jail.set_env("BAL_HTTP__LISTEN", "127.0.0.1:2");
            jail.set_env("BAL_ADMIN_PASSWORD", "from-the-environment");
            jail.set_env("BAL_UNRELATED", "ignored");
            let s = Settings::load(None, &Overrides::default()).unwrap();
            assert_eq!(s.data_dir, PathBuf::from("/from/file"));
            assert_eq!(s.http.listen, "127.0.0.1:2".parse().unwrap());
            assert!(!s.http.tls);
            assert_eq!(
                s.admin_password.as_ref().unwrap().expose(),
                "from-the-environment"
            );

            let flags = Overrides {
                data_dir: Some("/from/flag".into()),
                http_listen: Some("127.0.0.1:3".parse().unwrap()),
            };
            let s = Settings::load(None, &flags).unwrap();
            assert_eq!(s.data_dir, PathBuf::from("/from/flag"));
            assert_eq!(s.http.listen, "127.0.0.1:3".parse().unwrap());
            Ok(())
        });
    }

    #[test]
    fn typos_are_refused_with_the_key_named() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("BAL_HTTP__LISTN", "127.0.0.1:2");
            let err = Settings::load(None, &Overrides::default()).unwrap_err();
            assert!(err.to_string().contains("listn"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn secrets_never_appear_in_debug_output() {
        let s = Settings {
            admin_password: Some(Secret("hunter2-hunter2".into())),
            keys: KeySettings {
                master_key: Some(Secret("0123456789abcdef-master".into())),
            },
            database: DatabaseSettings {
                url: Some(Secret("postgres://bal:dbpass@db/bal".into())),
                ..DatabaseSettings::default()
            },
            ..Settings::default()
        };
        let debug = format!("{s:?}");
        for secret in ["hunter2", "0123456789abcdef", "dbpass"] {
            assert!(!debug.contains(secret), "{secret} leaked: {debug}");
        }
    }
}
