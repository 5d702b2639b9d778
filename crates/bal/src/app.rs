//! Wiring: from settings to a running server.
//!
//! [`Application::build`] does everything that can fail at start (data folder, database,
//! master key, first admin, certificate, binding the port) and reports it clearly; then
//! [`Application::run_until`] serves until the shutdown future resolves, drains connections and
//! stops the background tasks. Tests bind port 0 and read the real port back.

use std::future::Future;
use std::net::{SocketAddr, TcpListener};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum_server::Handle;
use axum_server::tls_rustls::RustlsConfig;
use bal_api::accounts::{self, AccountKeys, FirstAdmin};
use bal_api::{AppState, Certification, MqttClusterState, MqttPeerState};
use bal_ledger::embedded::DEFAULT_CHAIN_ID;
use bal_ledger::node::{NodeChain, NodeConfig};
use bal_ledger::proofs::Prover;
use bal_ledger::{Certifier, CertifierConfig, EmbeddedChain, SharedLedger};
use bal_mqtt::{BrokerConfig, EmbeddedBroker, Ingest, MosquittoBroker};
use bal_scd::SharedStore;
use bal_wallet::{MasterKey, Sealer};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::cluster;
use crate::settings::{BrokerKind, Settings};
use crate::tls;

/// How long open requests may take to finish once shutdown starts.
const DRAIN: Duration = Duration::from_secs(10);

/// The most MQTT messages committed in one transaction.
const INGEST_BATCH: usize = 4096;

pub struct Application {
    listener: TcpListener,
    local_addr: SocketAddr,
    /// `metrics.listen`: `/metrics` alone, plain HTTP.
    metrics_listener: Option<TcpListener>,
    tls: Option<(RustlsConfig, tls::TlsFiles)>,
    ca: Option<PathBuf>,
    state: AppState,
    first_admin: FirstAdmin,
    broker: Broker,
    ingest_writer: tokio::task::JoinHandle<()>,
    certifier: Certifier,
    /// This replica in the registry, and how often it says it is alive.
    replica: bal_scd::ReplicaInfo,
    heartbeat_every: Duration,
    /// `http.shutdown_delay_ms`.
    shutdown_delay: Duration,
    /// `setpoints.*`: how set points are sent and retried.
    setpoint_sender: bal_mqtt::setpoints::SenderConfig,
}

/// The MQTT side: the broker inside `bal`, or the adapter of an external Mosquitto.
enum Broker {
    Embedded(EmbeddedBroker),
    Mosquitto(MosquittoBroker),
}

impl Broker {
    async fn start(
        settings: &Settings,
        files: Option<&tls::TlsFiles>,
        store: SharedStore,
        keys: &AccountKeys,
        ingest: Ingest,
    ) -> anyhow::Result<Self> {
        match settings.broker.kind {
            BrokerKind::Embedded => {
                let config = BrokerConfig {
                    listen: settings.mqtt.listen,
                    listen_tls: settings.mqtt.listen_tls,
                    tls_cert: files.map(|f| f.cert.clone()).unwrap_or_default(),
                    tls_key: files.map(|f| f.key.clone()).unwrap_or_default(),
                    max_payload_bytes: settings.ingest.max_payload_bytes,
                    login_limits: settings.api_config().login_limits,
                    limits: bal_mqtt::embedded::SessionLimits {
                        max_sessions: settings.mqtt.max_sessions,
                        max_inflight: settings.mqtt.max_inflight,
                        max_queued_messages: settings.mqtt.max_queued_messages,
                    },
                    cluster: settings.mqtt.cluster.config(true)?,
                };
                Ok(Self::Embedded(
                    EmbeddedBroker::start(config, store, ingest).await?,
                ))
            }
            BrokerKind::Mosquitto => {
                let sealer = keys
                    .broker
                    .clone()
                    .context("broker passwords need the sealing key")?;
                let config = settings.mosquitto_config()?;
                Ok(Self::Mosquitto(
                    MosquittoBroker::start(config, store, ingest, sealer).await?,
                ))
            }
        }
    }

    /// What set points are published through.
    fn setpoint_link(&self) -> Arc<dyn bal_mqtt::setpoints::SetpointLink> {
        match self {
            Self::Embedded(b) => b.setpoint_link(),
            Self::Mosquitto(b) => b.setpoint_link(),
        }
    }

    fn embedded(&self) -> Option<&EmbeddedBroker> {
        match self {
            Self::Embedded(b) => Some(b),
            Self::Mosquitto(_) => None,
        }
    }

    async fn stop(self) {
        match self {
            Self::Embedded(b) => b.stop().await,
            Self::Mosquitto(b) => b.stop().await,
        }
    }
}

/// The MQTT cluster as `/readyz` reports it.
fn mqtt_cluster_state(view: &bal_mqtt::ClusterView) -> MqttClusterState {
    MqttClusterState {
        node_id: view.node_id,
        peers: view
            .peers
            .iter()
            .map(|p| MqttPeerState {
                node_id: p.node_id,
                address: p.address.clone(),
                state: if p.up { "up" } else { "down" },
                since: p.since,
                error: p.error.clone(),
            })
            .collect(),
    }
}

/// The operator's certificate, or the generated one.
fn tls_files(settings: &Settings) -> anyhow::Result<tls::TlsFiles> {
    match (&settings.http.cert_file, &settings.http.key_file) {
        (Some(cert), Some(key)) => Ok(tls::TlsFiles {
            cert: cert.clone(),
            key: key.clone(),
            ca: None,
        }),
        (None, None) => {
            tls::ensure_self_signed(&settings.data_dir.join("tls"), &settings.http.tls_names)
        }
        _ => anyhow::bail!("set both http.cert_file and http.key_file, or neither"),
    }
}

/// Creates the data folder readable by its owner only: it holds the keys.
fn ensure_data_dir(dir: &Path) -> anyhow::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("cannot create data folder {}", dir.display()))
}

pub fn master_key(settings: &Settings) -> anyhow::Result<MasterKey> {
    Ok(match &settings.keys.master_key {
        Some(secret) => MasterKey::from_passphrase(secret.expose())
            .context("keys.master_key (BAL_KEYS__MASTER_KEY)")?,
        None => MasterKey::load_or_create(&settings.data_dir.join("master.key"))?,
    })
}

/// Opens the data folder, the database and the keys: what `serve` and `bal user` share.
/// `migrate` says whether this command may bring an outdated schema up to date.
pub async fn open_store(
    settings: &Settings,
    migrate: bal_scd::Migrate,
) -> anyhow::Result<(SharedStore, AccountKeys)> {
    ensure_data_dir(&settings.data_dir)?;
    let master = master_key(settings)?;
    // Only an external broker needs the passwords back (see `bal_wallet::sealed`).
    let broker = (settings.broker.kind == BrokerKind::Mosquitto).then(|| Sealer::new(&master));
    let store = bal_scd::connect(&settings.database_url(), &settings.connect_options(migrate))
        .await
        .context("cannot open the database (database.url)")?;
    store.check_master_key(&master.fingerprint()).await?;
    Ok((store, AccountKeys { master, broker }))
}

/// The chain certification uses: the embedded one, or the node at `chain.rpc_url`.
pub async fn open_ledger(
    settings: &Settings,
    store: &SharedStore,
    replica: &str,
) -> anyhow::Result<(SharedLedger, Option<Arc<EmbeddedChain>>)> {
    let c = &settings.chain;
    let signer = bal_ledger::operator::load(
        c.operator_key.as_ref().map(|k| k.expose()),
        &settings.data_dir.join("operator.key"),
    )
    .context("chain.operator_key (BAL_CHAIN__OPERATOR_KEY)")?;
    let contract = c
        .contract
        .as_deref()
        .map(|a| {
            bal_core::WalletAddress::parse(a)
                .map(|w| w.address())
                .map_err(|e| anyhow::anyhow!("chain.contract: {e}"))
        })
        .transpose()?;
    match &c.rpc_url {
        Some(url) => {
            let chain = NodeChain::connect(
                NodeConfig {
                    url: url.expose(),
                    ca: c.ca_file.as_deref(),
                    signer,
                    chain_id: c.chain_id,
                    contract,
                    replica,
                },
                store,
            )
            .await?;
            Ok((Arc::new(chain), None))
        }
        None => {
            anyhow::ensure!(
                contract.is_none(),
                "chain.contract applies to chain.rpc_url only: the embedded chain deploys its own"
            );
            let chain = EmbeddedChain::open(
                &**store,
                &settings.database_url(),
                signer,
                c.chain_id.unwrap_or(DEFAULT_CHAIN_ID),
            )
            .await
            .context("cannot open the embedded chain")?;
            let chain = Arc::new(chain);
            Ok((chain.clone(), Some(chain)))
        }
    }
}

impl Application {
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        crate::check::validate(&settings)?;
        let listen = settings.http.listen;
        let embedded = settings.broker.kind == BrokerKind::Embedded;
        // serve and demo migrate on start unless the operator says otherwise.
        let migrate = if settings.database.auto_migrate {
            bal_scd::Migrate::Auto
        } else {
            bal_scd::Migrate::Refuse
        };
        let (store, keys) = open_store(&settings, migrate).await?;
        let replica = bal_scd::ReplicaInfo {
            id: settings.replica_id()?,
            version: env!("CARGO_PKG_VERSION").to_owned(),
            mqtt: settings.mqtt_role()?,
            embedded_chain: settings.chain.rpc_url.is_none(),
        };
        let heartbeat_every = Duration::from_secs(settings.cluster.heartbeat_secs.max(1));
        // Before anything is started: a refusal leaves nothing half-running.
        let own_ca = settings.http.tls && settings.http.cert_file.is_none();
        cluster::join(
            &store,
            &replica,
            own_ca,
            cluster::heartbeat_ttl(heartbeat_every),
        )
        .await?;
        let admin_password = settings
            .admin_password
            .as_ref()
            .map(|s| s.expose().to_owned());
        let first_admin = accounts::ensure_first_admin(store.as_ref(), &keys, admin_password)
            .await
            .map_err(|e| anyhow::Error::new(e).context("cannot create the first admin"))?;

        let files = if settings.http.tls || (embedded && settings.mqtt.listen_tls.is_some()) {
            Some(tls_files(&settings)?)
        } else {
            None
        };
        let tls = match (&files, settings.http.tls) {
            (Some(files), true) => Some((
                RustlsConfig::from_config(tls::server_config(files)?),
                files.clone(),
            )),
            _ => None,
        };

        let listener = TcpListener::bind(listen)
            .with_context(|| format!("cannot listen on {listen} (http.listen)"))?;
        listener.set_nonblocking(true)?;
        let local_addr = listener.local_addr()?;
        let metrics_listener = match settings.metrics.listen {
            Some(addr) => {
                let l = TcpListener::bind(addr)
                    .with_context(|| format!("cannot listen on {addr} (metrics.listen)"))?;
                l.set_nonblocking(true)?;
                Some(l)
            }
            None => None,
        };
        let metrics = Arc::new(bal_metrics::Metrics::new());

        let (ledger, embedded) = open_ledger(&settings, &store, &replica.id).await?;
        let certifier = Certifier::new(
            store.clone(),
            ledger.clone(),
            CertifierConfig {
                window: Duration::from_millis(settings.certify.batch_window_ms.max(1)),
                max_batch: settings.certify.max_batch.max(1),
                lease: Duration::from_secs(settings.certify.lease_secs.max(1)),
            },
            replica.id.clone(),
        )
        .with_metrics(metrics.clone());
        let certification = Certification {
            ledger,
            embedded,
            prover: Prover::new(store.clone()),
            health: certifier.health(),
        };

        let (ingest, ingest_writer) = Ingest::start(store.clone(), INGEST_BATCH, metrics.clone());
        let started = Broker::start(&settings, files.as_ref(), store.clone(), &keys, ingest).await;
        let broker = match started {
            Ok(b) => b,
            Err(e) => {
                ingest_writer.abort();
                return Err(e);
            }
        };
        let mut state =
            AppState::new(store, keys, settings.api_config(), certification).with_metrics(metrics);
        if let Some(health) = broker.embedded().and_then(EmbeddedBroker::cluster_health) {
            state = state.with_mqtt_cluster(Arc::new(move || mqtt_cluster_state(&health.view())));
        }
        Ok(Self {
            listener,
            local_addr,
            metrics_listener,
            tls,
            ca: files.and_then(|f| f.ca),
            state,
            first_admin,
            broker,
            ingest_writer,
            certifier,
            replica,
            heartbeat_every,
            shutdown_delay: Duration::from_millis(settings.http.shutdown_delay_ms),
            setpoint_sender: settings.setpoints.sender(),
        })
    }

    /// The bound address, with the real port when the settings asked for port 0.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The base URL clients use: the loopback address of the bound family when bound to every
    /// address or loopback. Not `localhost`: it resolves to `::1` first, where another program
    /// may hold the same port number as this IPv4 listener (seen in CI: a browser's port).
    pub fn base_url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let ip = self.local_addr.ip();
        let host = match ip {
            std::net::IpAddr::V4(v4) if v4.is_unspecified() || v4.is_loopback() => {
                "127.0.0.1".to_owned()
            }
            std::net::IpAddr::V6(v6) if v6.is_unspecified() || v6.is_loopback() => {
                "[::1]".to_owned()
            }
            std::net::IpAddr::V4(v4) => v4.to_string(),
            std::net::IpAddr::V6(v6) => format!("[{v6}]"),
        };
        format!("{scheme}://{host}:{}", self.local_addr.port())
    }

    /// The address of `metrics.listen`, with the real port, when it is set.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_listener
            .as_ref()
            .and_then(|l| l.local_addr().ok())
    }

    /// The generated CA certificate clients should trust, if one is in use.
    pub fn ca_path(&self) -> Option<PathBuf> {
        self.ca.clone()
    }

    /// The plain MQTT listener's address, with the real port.
    pub fn mqtt_addr(&self) -> Option<SocketAddr> {
        self.broker.embedded().and_then(EmbeddedBroker::tcp_addr)
    }

    /// The MQTT over TLS listener's address, with the real port.
    pub fn mqtts_addr(&self) -> Option<SocketAddr> {
        self.broker.embedded().and_then(EmbeddedBroker::tls_addr)
    }

    /// Where certification happens, for people: the chain and the contract, and for the
    /// embedded chain where its JSON-RPC is served.
    pub fn chain_summary(&self) -> String {
        let l = &self.state.certification.ledger;
        let place = match self.state.certification.embedded {
            Some(_) => format!("embedded, JSON-RPC at {}/rpc", self.base_url()),
            None => l.describe(),
        };
        format!(
            "{place}; chain id {}, contract {}",
            l.chain_id(),
            l.contract()
        )
    }

    /// What start-up did about the first admin (so `serve` can print a generated password).
    pub fn first_admin(&self) -> &FirstAdmin {
        &self.first_admin
    }

    pub fn store(&self) -> SharedStore {
        self.state.store.clone()
    }

    /// The keys new users' accounts are written with.
    pub fn account_keys(&self) -> &AccountKeys {
        &self.state.keys
    }

    /// Serves until `shutdown` resolves, then drains requests and stops background work.
    pub async fn run_until(self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut tasks = JoinSet::new();
        tasks.spawn(expire_grants(
            self.state.store.clone(),
            self.state.metrics.clone(),
            stop_rx.clone(),
        ));
        if let Some(listener) = self.metrics_listener {
            let app = bal_api::metrics_router(self.state.clone());
            let mut stop = stop_rx.clone();
            tasks.spawn(async move {
                let listener = match tokio::net::TcpListener::from_std(listener) {
                    Ok(l) => l,
                    Err(e) => return tracing::error!(error = %e, "metrics listener failed"),
                };
                let stopped = async move {
                    let _ = stop.changed().await;
                };
                if let Err(e) = axum::serve(listener, app)
                    .with_graceful_shutdown(stopped)
                    .await
                {
                    tracing::error!(error = %e, "metrics listener failed");
                }
            });
        }
        tasks.spawn(purge_sessions(self.state.store.clone(), stop_rx.clone()));
        tasks.spawn(cluster::heartbeats(
            self.state.store.clone(),
            self.replica,
            self.heartbeat_every,
            stop_rx.clone(),
        ));
        {
            let (store, link) = (self.state.store.clone(), self.broker.setpoint_link());
            let mut stop = stop_rx.clone();
            let config = self.setpoint_sender.clone();
            tasks.spawn(async move {
                tokio::select! {
                    () = bal_mqtt::setpoints::run_sender(store, link, config) => {}
                    _ = stop.changed() => {}
                }
            });
        }
        tasks.spawn(self.certifier.run(stop_rx));

        let handle = Handle::new();
        let dependencies = self.state.dependencies.clone();
        let shutdown_delay = self.shutdown_delay;
        let app = bal_api::router(self.state).into_make_service_with_connect_info::<SocketAddr>();
        let server = {
            let handle = handle.clone();
            async move {
                match self.tls {
                    Some((config, _)) => {
                        axum_server::from_tcp_rustls(self.listener, config)
                            .handle(handle)
                            .serve(app)
                            .await
                    }
                    None => {
                        axum_server::from_tcp(self.listener)
                            .handle(handle)
                            .serve(app)
                            .await
                    }
                }
            }
        };
        let mut server = std::pin::pin!(server);
        let broker = self.broker;
        let served = tokio::select! {
            result = &mut server => result.context("HTTP server failed"),
            () = shutdown => {
                dependencies.shut_down();
                tracing::info!(delay_ms = shutdown_delay.as_millis() as u64, "shutting down: /readyz answers 503, then requests drain and MQTT clients are disconnected");
                // Still serving: the load balancer sees 503 and stops sending first.
                tokio::select! {
                    result = &mut server => return result.context("HTTP server failed"),
                    () = tokio::time::sleep(shutdown_delay) => {}
                }
                handle.graceful_shutdown(Some(DRAIN));
                server.await.context("HTTP server failed while draining")
            }
        };
        broker.stop().await;
        // Only now: every publish the broker acknowledged has been committed already.
        self.ingest_writer.abort();
        let _ = stop_tx.send(true);
        while tasks.join_next().await.is_some() {}
        tracing::info!("stopped");
        served
    }
}

/// Runs `work` every `period` until told to stop; failures are logged and retried next time.
async fn every<F, Fut>(period: Duration, mut stop: watch::Receiver<bool>, mut work: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => work().await,
            _ = stop.changed() => return,
        }
    }
}

/// Writes down lapsed grants, with their audit entries. Readers already treat a lapsed grant as
/// expired; this makes the stored status and the audit log say so within a second.
async fn expire_grants(
    store: SharedStore,
    metrics: Arc<bal_metrics::Metrics>,
    stop: watch::Receiver<bool>,
) {
    every(Duration::from_secs(1), stop, || async {
        match store.expire_due(chrono::Utc::now()).await {
            Ok(expired) => {
                for s in expired {
                    metrics.grant_decision(s.status);
                    tracing::info!(subscription = %s.id, consumer = %s.consumer, "grant expired");
                }
            }
            Err(e) => tracing::error!(error = %e.report(), "expiring grants failed"),
        }
    })
    .await
}

async fn purge_sessions(store: SharedStore, stop: watch::Receiver<bool>) {
    every(Duration::from_secs(3600), stop, || async {
        if let Err(e) = store.purge_sessions(chrono::Utc::now()).await {
            tracing::error!(error = %e.report(), "purging sessions failed");
        }
    })
    .await
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}
