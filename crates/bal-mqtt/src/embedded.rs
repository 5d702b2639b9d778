//! The embedded broker: rmqtt, with the BAL deciding every login, subscribe and publish.
//!
//! - CONNECT: the BAL username and password (as the Platone field devices used), with the same
//!   failed-login limits as HTTPS. A client id already held by another user's session is
//!   refused, so nobody can take over someone else's device session.
//! - PUBLISH: only on the producer's own topics; the measurement is committed (group commit)
//!   before the broker forwards it or sends the QoS 1 PUBACK, so an acknowledged message is
//!   never lost. A redelivery (DUP) of a committed message is stored once.
//! - SUBSCRIBE: only filters within one producer's topics that the user may read now.
//! - Revocation: rmqtt checks grants only at SUBSCRIBE time, so a watcher follows the SCD's
//!   changes and unsubscribes affected consumers' live sessions at once (and re-checks every
//!   session periodically in case an announcement was missed). A password change or a deleted
//!   user ends that user's sessions.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::Context;
use bal_auth::{CredentialCache, LimiterConfig, LoginLimiter, password};
use bal_core::measurement::mqtt_origin;
use bal_core::{NewMeasurement, Role, Username};
use bal_metrics::{Channel, Refusal, Source};
use bal_scd::{SharedStore, User};
use rmqtt::codec::v5::{PublishAckReason, SubscribeAckReason};
use rmqtt::context::ServerContext;
use rmqtt::hook::{Handler, HookResult, Parameter, ReturnType, Type};
use rmqtt::net::Builder;
use rmqtt::server::MqttServer;
use rmqtt::session::Session;
use rmqtt::types::{
    AuthResult, ConnectInfo, LastWill, Publish, PublishAclResult, PublishResult, SubscribeAclResult,
};
use tokio::task::JoinHandle;

use crate::access::{
    PublishRefusal, check_publish, is_setpoint_topic, may_receive_setpoint, may_subscribe,
};
use crate::cluster::{self, ClusterConfig, ClusterHealth};
use crate::delivery::ReadChecks;
use crate::grant_watch;
use crate::ingest::Ingest;
use crate::setpoints::{AnswerOutcome, SetpointLink, take_answer, take_delivery};

/// Where and how the embedded broker listens.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    /// Plain MQTT; `None` disables it.
    pub listen: Option<SocketAddr>,
    /// MQTT over TLS; `None` disables it.
    pub listen_tls: Option<SocketAddr>,
    /// PEM certificate chain and key for the TLS listener.
    pub tls_cert: PathBuf,
    pub tls_key: PathBuf,
    /// Largest accepted payload; larger publishes are refused and nothing is stored.
    pub max_payload_bytes: usize,
    pub login_limits: LimiterConfig,
    /// What one node holds for its sessions (`mqtt.max_*`).
    pub limits: SessionLimits,
    /// This node's place in an MQTT cluster (`mqtt.cluster.*`); `None`: a single node.
    pub cluster: Option<ClusterConfig>,
}

/// The bounds on what sessions hold, and so on the broker's memory: each connection costs
/// ~17 KB idle (most of it the codec's two 8 KiB buffers, fixed in rmqtt-net), and each queued
/// message its payload.
#[derive(Debug, Clone, Copy)]
pub struct SessionLimits {
    /// Sessions on this node, connected or kept for a client that comes back; the next
    /// CONNECT is refused with "server unavailable". 0: no limit.
    pub max_sessions: usize,
    /// Messages sent to a client and not yet acknowledged.
    pub max_inflight: std::num::NonZeroU16,
    /// Messages held for a slow or offline client beyond the in-flight window.
    pub max_queued_messages: usize,
}

/// A running embedded broker.
pub struct EmbeddedBroker {
    scx: ServerContext,
    server: JoinHandle<()>,
    watcher: JoinHandle<()>,
    tcp_addr: Option<SocketAddr>,
    tls_addr: Option<SocketAddr>,
    /// The peers' reachability, and the task that probes it, in a cluster.
    cluster: Option<(ClusterHealth, JoinHandle<()>)>,
}

/// How long a verified MQTT password is remembered (see [`CredentialCache`]).
const CREDENTIAL_TTL: Duration = Duration::from_secs(10 * 60);

/// Packets may exceed the payload limit by this much (topic, properties) before the broker
/// cuts the connection instead of answering with a reason.
const PACKET_OVERHEAD: usize = 64 * 1024;

impl EmbeddedBroker {
    /// Binds the listeners and starts serving. A port in use is an error naming the setting.
    pub async fn start(
        config: BrokerConfig,
        store: SharedStore,
        ingest: Ingest,
    ) -> anyhow::Result<Self> {
        let builder = match &config.cluster {
            Some(c) => cluster::context(c),
            None => ServerContext::new(),
        };
        let scx = builder
            // The busy check refuses CONNECTs when the CPU is loaded: wrong for a small box
            // that is busy precisely because devices are publishing.
            .busy_check_enable(false)
            .mqtt_max_sessions(isize::try_from(config.limits.max_sessions).unwrap_or(isize::MAX))
            .build()
            .await;
        let max_packet = u32::try_from(config.max_payload_bytes + PACKET_OVERHEAD)
            .context("ingest.max_payload_bytes is too large")?;
        let listener = |name: &str, addr: SocketAddr| {
            Builder::new()
                .name(name)
                .laddr(addr)
                // A restart after a crash must bind at once, not after TIME_WAIT (a minute),
                // but a second process on the same port must still fail: no SO_REUSEPORT.
                .reuseaddr(Some(true))
                .reuseport(Some(false))
                .allow_anonymous(false)
                .max_packet_size(max_packet)
                .max_inflight(config.limits.max_inflight)
                .max_mqueue_len(config.limits.max_queued_messages)
                .handshake_timeout(Duration::from_secs(15))
        };
        let mut server = MqttServer::new(scx.clone());
        let mut tcp_addr = None;
        let mut tls_addr = None;
        if let Some(addr) = config.listen {
            let l = listener("mqtt", addr)
                .bind()
                .and_then(|l| l.tcp())
                .map_err(|e| {
                    anyhow::anyhow!(
                        "cannot listen on {addr} (mqtt.listen): {e}; is another MQTT broker \
                         running? Set mqtt.listen (BAL_MQTT__LISTEN) to a free address, or \"off\""
                    )
                })?;
            tcp_addr = Some(l.local_addr().map_err(|e| anyhow::anyhow!("{e}"))?);
            server = server.listener_by_id(l, 1);
        }
        if let Some(addr) = config.listen_tls {
            let l = listener("mqtts", addr)
                .tls_cert(Some(config.tls_cert.display().to_string()))
                .tls_key(Some(config.tls_key.display().to_string()))
                .bind()
                .and_then(|l| l.tls())
                .map_err(|e| {
                    anyhow::anyhow!(
                        "cannot listen on {addr} (mqtt.listen_tls): {e}; set mqtt.listen_tls \
                         (BAL_MQTT__LISTEN_TLS) to a free address, or \"off\""
                    )
                })?;
            tls_addr = Some(l.local_addr().map_err(|e| anyhow::anyhow!("{e}"))?);
            server = server.listener_by_id(l, 2);
        }

        // The context's own counters (a clone of a counter would be a copy of its value).
        let counted = scx.clone();
        ingest.metrics().on_render(move |m| {
            let count = |c: isize| usize::try_from(c).unwrap_or(0);
            m.set_mqtt_clients(
                count(counted.connections.count()),
                count(counted.sessions.count()),
            );
        });
        let hooks = Hooks {
            store: Arc::downgrade(&store),
            ingest,
            limiter: Arc::new(LoginLimiter::new(config.login_limits)),
            verified: Arc::new(CredentialCache::new(CREDENTIAL_TTL)),
            users: Arc::default(),
            max_payload: config.max_payload_bytes,
            scx: scx.clone(),
            dropped_qos0: Arc::default(),
            reads: Arc::default(),
        };
        let register = scx.extends.hook_mgr().register();
        for t in [
            Type::ClientAuthenticate,
            Type::ClientSubscribeCheckAcl,
            Type::MessagePublishCheckAcl,
            Type::MessageExpiryCheck,
            Type::MessageAcked,
        ] {
            register.add(t, Box::new(hooks.clone())).await;
        }
        register.start().await;
        // In a cluster, the other nodes are known before the first client is accepted, so
        // that its client id is checked against theirs.
        let cluster = match &config.cluster {
            Some(c) => {
                cluster::join(&scx, c).await?;
                Some(cluster::probe(scx.clone(), c))
            }
            None => None,
        };

        let server = server.build();
        let server = tokio::spawn(async move {
            if let Err(e) = server.run().await {
                tracing::error!(error = %e, "MQTT broker stopped");
            }
        });
        let watcher = tokio::spawn(grant_watch::enforce_grants(
            scx.clone(),
            store,
            hooks.clone(),
        ));
        Ok(Self {
            scx,
            server,
            watcher,
            tcp_addr,
            tls_addr,
            cluster,
        })
    }

    /// A bare broker with no BAL rules: anonymous, no storage, no access checks. Only for the
    /// benchmark's pass-through baseline; never exposed by `bal serve`.
    pub async fn start_passthrough(listen: SocketAddr) -> anyhow::Result<Self> {
        let scx = ServerContext::new().busy_check_enable(false).build().await;
        let l = Builder::new()
            .name("passthrough")
            .laddr(listen)
            .allow_anonymous(true)
            .bind()
            .and_then(|l| l.tcp())
            .map_err(|e| anyhow::anyhow!("cannot listen on {listen}: {e}"))?;
        let tcp_addr = Some(l.local_addr().map_err(|e| anyhow::anyhow!("{e}"))?);
        let server = MqttServer::new(scx.clone()).listener_by_id(l, 1).build();
        let server = tokio::spawn(async move {
            let _ = server.run().await;
        });
        Ok(Self {
            scx,
            server,
            watcher: tokio::spawn(async {}),
            tcp_addr,
            tls_addr: None,
            cluster: None,
        })
    }

    /// The plain listener's address, with the real port.
    /// What the set point sender publishes through.
    pub fn setpoint_link(&self) -> Arc<dyn SetpointLink> {
        Arc::new(EmbeddedLink {
            scx: self.scx.clone(),
        })
    }

    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        self.tcp_addr
    }

    /// The TLS listener's address, with the real port.
    pub fn tls_addr(&self) -> Option<SocketAddr> {
        self.tls_addr
    }

    /// In a cluster: every peer's reachability, as this node last probed it.
    pub fn cluster_health(&self) -> Option<ClusterHealth> {
        self.cluster.as_ref().map(|(health, _)| health.clone())
    }

    /// Stops listening and disconnects every client. rmqtt has no shutdown of its own:
    /// aborting its task closes the listening sockets, and kicking ends live connections.
    /// (In a cluster the node-to-node port stays open until the process exits; peers see this
    /// node's clients gone.)
    pub async fn stop(self) {
        self.server.abort();
        self.watcher.abort();
        if let Some((_, probe)) = &self.cluster {
            probe.abort();
        }
        for id in grant_watch::session_ids(&self.scx, |_| true).await {
            grant_watch::kick(&self.scx, id).await;
        }
    }
}

/// The users of live sessions, so that publish checks need no database round trip. Roles never
/// change; a deleted user is removed (and kicked) by `grant_watch::enforce_grants`.
/// Shared, so that a publish check clones a pointer, not the user's strings.
type UserCache = Arc<RwLock<HashMap<String, Arc<User>>>>;

#[derive(Clone)]
pub(crate) struct Hooks {
    /// Weak: rmqtt's hook manager keeps the hooks as long as the broker's context lives, which
    /// can outlast the broker (the context and its hooks reference each other); a strong
    /// reference would keep the store and its database connections open after the BAL stops.
    store: std::sync::Weak<dyn bal_scd::Store>,
    ingest: Ingest,
    limiter: Arc<LoginLimiter>,
    pub(crate) verified: Arc<CredentialCache>,
    pub(crate) users: UserCache,
    max_payload: usize,
    scx: ServerContext,
    /// QoS 0 readings that could not be stored (the database was down): nobody resends them.
    dropped_qos0: Arc<std::sync::atomic::AtomicU64>,
    /// The read check on every delivery.
    pub(crate) reads: Arc<ReadChecks>,
}

fn publish_result(reason: PublishAckReason, text: &str, disconnect: bool) -> HookResult {
    HookResult::PublishAclResult(PublishAclResult(PublishResult::reason_code(
        reason,
        Some(text.into()),
        disconnect,
    )))
}

fn auth(result: AuthResult) -> ReturnType {
    (false, Some(HookResult::AuthResult(result)))
}

impl Hooks {
    /// The store, while the BAL that started this broker runs.
    fn store(&self) -> Option<SharedStore> {
        self.store.upgrade()
    }

    async fn user_of(&self, session: &Session) -> Option<Arc<User>> {
        let name = session.id.username.as_deref()?;
        if let Some(u) = self.users.read().expect("user cache lock").get(name) {
            return Some(u.clone());
        }
        let user = Arc::new(
            self.store()?
                .user(&Username::parse(name).ok()?)
                .await
                .ok()??,
        );
        self.users
            .write()
            .expect("user cache lock")
            .insert(name.to_owned(), user.clone());
        Some(user)
    }

    async fn authenticate(&self, ci: &ConnectInfo) -> ReturnType {
        let name = ci.username().map(|u| u.to_string()).unwrap_or_default();
        let address = ci
            .id()
            .remote_addr
            .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |a| a.ip());
        let Ok(attempt) = self.limiter.begin(&name, address) else {
            tracing::warn!(%address, "MQTT login refused: too many failures");
            return auth(AuthResult::NotAuthorized);
        };
        let password = ci
            .password()
            .and_then(|p| std::str::from_utf8(p).ok())
            .unwrap_or_default()
            .to_owned();
        let Some(store) = self.store() else {
            return auth(AuthResult::NotAuthorized);
        };
        let credentials = match Username::parse(&name) {
            Ok(u) => match store.credentials(&u).await {
                Ok(c) => c,
                Err(e) => {
                    tracing::error!(error = %e.report(), "MQTT login: database error");
                    return auth(AuthResult::NotAuthorized);
                }
            },
            Err(_) => None,
        };
        let phc = credentials.as_ref().map(|c| c.password_hash.clone());
        let cached = phc
            .as_deref()
            .is_some_and(|h| self.verified.matches(&name, h, &password));
        let valid = if cached {
            true
        } else {
            match password::verify(password.clone(), phc.clone()).await {
                Ok(true) => {
                    if let Some(h) = &phc {
                        self.verified.remember(&name, h, &password);
                    }
                    true
                }
                Ok(false) => false,
                Err(e) => {
                    tracing::error!(error = %e, "MQTT login: password check failed");
                    return auth(AuthResult::NotAuthorized);
                }
            }
        };
        let Some(user) = credentials.filter(|_| valid).map(|c| c.user) else {
            let delay = attempt.failed();
            self.ingest.metrics().failed_login(Channel::Mqtt);
            tracing::warn!(%address, "MQTT login failed");
            tokio::time::sleep(delay).await;
            return auth(AuthResult::BadUsernameOrPassword);
        };
        attempt.succeeded();

        // A will skips the publish check, so it must pass it here.
        if let Some(will) = ci.last_will() {
            let topic = match will {
                LastWill::V3(w) => w.topic.to_string(),
                LastWill::V5(w) => w.topic.to_string(),
            };
            if check_publish(&user, &topic).is_err() {
                tracing::warn!(username = %user.username, "MQTT login refused: will topic");
                return auth(AuthResult::NotAuthorized);
            }
        }
        // Refuse to take over a session that belongs to someone else, on this node or, in a
        // cluster, on any node that answers (rmqtt asks them; a node that does not answer
        // holds no session anyone can reach).
        let existing = self
            .scx
            .extends
            .shared()
            .await
            .session_status(&ci.id().client_id)
            .await;
        if let Some(s) = existing
            && s.id.username.as_deref() != Some(user.username.as_str())
        {
            tracing::warn!(username = %user.username, "MQTT login refused: client id in use");
            return auth(AuthResult::NotAuthorized);
        }
        self.users
            .write()
            .expect("user cache lock")
            .insert(name, Arc::new(user));
        auth(AuthResult::Allow(false, None))
    }

    async fn check_subscribe(
        &self,
        session: &Session,
        filter: &str,
        qos: rmqtt::codec::types::QoS,
    ) -> HookResult {
        let allowed = match (self.user_of(session).await, self.store()) {
            (Some(user), Some(store)) => match may_subscribe(&*store, &user, filter).await {
                Ok(allowed) => allowed,
                Err(e) => {
                    tracing::error!(error = %e.report(), "subscribe check failed");
                    false
                }
            },
            _ => false,
        };
        if allowed && is_setpoint_topic(filter) {
            self.setpoints_wanted(session, filter);
        }
        HookResult::SubscribeAclResult(if allowed {
            SubscribeAclResult::new_success(qos, None)
        } else {
            SubscribeAclResult::new_failure(SubscribeAckReason::NotAuthorized)
        })
    }

    fn refused(&self, reason: Refusal) {
        self.ingest
            .metrics()
            .measurement_refused(Source::Mqtt, reason, 1);
    }

    async fn publish(&self, session: &Session, p: &Publish) -> HookResult {
        // MQTT 3.1.1 has no negative PUBACK: the only refusal it understands is a disconnect.
        let v3 = session.protocol().await.map_or(true, |v| v < 5);
        let Some(user) = self.user_of(session).await else {
            return publish_result(PublishAckReason::NotAuthorized, "unknown user", true);
        };
        if is_setpoint_topic(&p.topic) {
            return self.setpoint_answer(&user, p, v3).await;
        }
        let topic = match check_publish(&user, &p.topic) {
            Ok(t) => t,
            Err(PublishRefusal::InvalidTopic) => {
                self.refused(Refusal::InvalidTopic);
                return publish_result(
                    PublishAckReason::TopicNameInvalid,
                    "not a platone/<producer> topic",
                    v3,
                );
            }
            Err(PublishRefusal::NotAuthorized) => {
                self.refused(Refusal::NotAuthorized);
                return publish_result(PublishAckReason::NotAuthorized, "not your topic", v3);
            }
        };
        if p.payload.len() > self.max_payload {
            self.refused(Refusal::TooLarge);
            return publish_result(
                PublishAckReason::QuotaExceeded,
                "payload over the limit",
                v3,
            );
        }
        let mut m = NewMeasurement::new(topic, p.payload.to_vec());
        if let Some(packet_id) = p.packet_id {
            let origin = mqtt_origin(&session.id.client_id, packet_id.get());
            m = m.with_origin(origin, p.dup);
        }
        let qos0 = p.packet_id.is_none();
        match self.ingest.submit(m).await {
            Ok(_) => HookResult::PublishAclResult(PublishAclResult::allow()),
            Err(e) if qos0 => {
                self.refused(Refusal::NotStored);
                // Not stored, so not forwarded either: a consumer never sees an uncertified
                // reading. QoS 0 promised nothing more; the loss is counted.
                let dropped = 1 + self.dropped_qos0.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %e, dropped_total = dropped, "QoS 0 reading not stored");
                publish_result(
                    PublishAckReason::ImplementationSpecificError,
                    "not stored",
                    false,
                )
            }
            Err(e) => {
                self.refused(Refusal::NotStored);
                // No PUBACK, not even a negative one (after which an MQTT 5 client would
                // consider the message done): the connection closes with the message
                // unacknowledged, so a client with a session sends it again when it reconnects,
                // as it does after any lost connection. The store finds it if it was stored.
                tracing::error!(error = %e, "MQTT ingest failed; closing the connection");
                publish_result(
                    PublishAckReason::ImplementationSpecificError,
                    "not stored; send it again",
                    true,
                )
            }
        }
    }
}

impl Hooks {
    /// A device's answer to a set point: only its producer may publish on its ack topics.
    async fn setpoint_answer(&self, user: &User, p: &Publish, v3: bool) -> HookResult {
        let target = bal_core::setpoint::parse_ack_topic(&p.topic)
            .filter(|(producer, _)| user.role == Role::Producer && *producer == user.username);
        let Some((producer, device)) = target else {
            return publish_result(
                PublishAckReason::NotAuthorized,
                "only setpoints/<your name>/<device>/ack",
                v3,
            );
        };
        let Some(store) = self.store() else {
            return publish_result(PublishAckReason::ImplementationSpecificError, "", true);
        };
        match take_answer(&*store, &producer, &device, &p.payload).await {
            Ok(AnswerOutcome::Recorded(_) | AnswerOutcome::Ignored) => {
                HookResult::PublishAclResult(PublishAclResult::allow())
            }
            // A 3.1.1 device cannot be told why; it is not cut off for a malformed answer.
            Ok(AnswerOutcome::Invalid) => publish_result(
                PublishAckReason::PayloadFormatInvalid,
                "an answer is {\"id\": <set point id>, \"status\": \"received\" | \"applied\" | \"rejected\"}",
                false,
            ),
            Err(e) => {
                // As for readings: no PUBACK, so the device sends its answer again.
                tracing::error!(error = %e.report(), "set point answer not recorded");
                publish_result(
                    PublishAckReason::ImplementationSpecificError,
                    "not recorded; send it again",
                    true,
                )
            }
        }
    }

    /// A producer's device subscribed to its set points: what waits for it is sent now rather
    /// than at its next retry (its session, and what the broker held for it, may be new).
    fn setpoints_wanted(&self, session: &Session, filter: &str) {
        let (Some(store), Some(name)) = (self.store(), session.id.username.as_deref()) else {
            return;
        };
        let Ok(producer) = Username::parse(name) else {
            return;
        };
        // `setpoints/<producer>/<device>` names one device; a wildcard, every one.
        let levels: Vec<&str> = filter.split('/').collect();
        let device = match levels[..] {
            [_, _, d] => bal_core::setpoint::DeviceName::parse(d).ok(),
            _ => None,
        };
        tokio::spawn(async move {
            let now = chrono::Utc::now();
            if let Err(e) = store
                .resend_setpoints(&producer, device.as_ref(), now)
                .await
            {
                tracing::warn!(error = %e.report(), "set points not made due on subscribe");
            }
        });
    }

    /// A device's PUBACK of a set point the BAL sent: `delivered`. Recorded off the session's
    /// loop, which the hook runs in.
    fn setpoint_acked(&self, p: &Publish) {
        let Some(store) = self.store() else { return };
        let id = p
            .properties
            .as_ref()
            .and_then(|props| props.correlation_data.as_ref())
            .and_then(|c| std::str::from_utf8(c).ok())
            .and_then(|c| c.parse::<i64>().ok());
        let Some(id) = id else { return };
        tokio::spawn(async move {
            if let Err(e) = take_delivery(&*store, id).await {
                tracing::warn!(setpoint = id, error = %e.report(), "delivery not recorded");
            }
        });
    }
}

/// Publishes set points through the embedded broker (to whichever node holds the device's
/// session, in a cluster).
pub struct EmbeddedLink {
    scx: ServerContext,
}

#[async_trait::async_trait]
impl SetpointLink for EmbeddedLink {
    async fn publish(&self, s: &bal_scd::Setpoint) -> anyhow::Result<()> {
        use rmqtt::codec::v5::PublishProperties;
        use rmqtt::session::SessionState;
        use rmqtt::types::{CodecPublish, From, Id, QoS};

        let left = (s.valid_until - chrono::Utc::now()).num_seconds();
        let Some(expiry) =
            std::num::NonZeroU32::new(u32::try_from(left.max(0)).unwrap_or(u32::MAX))
        else {
            // Under a second left: the sweep expires it.
            return Ok(());
        };
        let properties = PublishProperties {
            response_topic: Some(bal_core::setpoint::ack_topic(&s.producer, &s.device).into()),
            correlation_data: Some(bytes::Bytes::from(s.id.to_string())),
            message_expiry_interval: Some(expiry),
            content_type: Some("application/json".into()),
            is_utf8_payload: true,
            ..Default::default()
        };
        let payload = bal_core::setpoint::delivery_payload(s.id, &s.values, s.valid_until, s.seq);
        let publish = Publish::from(CodecPublish {
            dup: false,
            retain: false,
            qos: QoS::AtLeastOnce,
            topic: bal_core::setpoint::command_topic(&s.producer, &s.device).into(),
            packet_id: None,
            payload: payload.into(),
            properties: Some(properties),
        })
        // Without a creation time rmqtt never expires the message.
        .create_time(rmqtt::utils::timestamp_millis());
        let id = Id::new(
            self.scx.node.id(),
            0,
            None,
            None,
            "bal-setpoints".into(),
            Some("bal".into()),
        );
        SessionState::forwards(&self.scx, From::from_system(id), publish, false, None)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))
    }
}

#[async_trait::async_trait]
impl Handler for Hooks {
    async fn hook(&self, param: &Parameter, acc: Option<HookResult>) -> ReturnType {
        match param {
            Parameter::ClientAuthenticate(ci) => self.authenticate(ci).await,
            Parameter::ClientSubscribeCheckAcl(session, sub) => {
                let result = self
                    .check_subscribe(session, &sub.topic_filter, sub.opts.qos())
                    .await;
                (false, Some(result))
            }
            Parameter::MessagePublishCheckAcl(session, p) => {
                (false, Some(self.publish(session, p).await))
            }
            Parameter::MessageAcked(_, from, p) => {
                if from.is_system() && is_setpoint_topic(&p.topic) {
                    self.setpoint_acked(p);
                }
                (true, acc)
            }
            Parameter::MessageExpiryCheck(session, _, p) => {
                let allowed = match (self.user_of(session).await, self.store()) {
                    (Some(user), _) if is_setpoint_topic(&p.topic) => {
                        may_receive_setpoint(&user, &p.topic)
                    }
                    (Some(user), Some(store)) => {
                        self.reads.may_receive(&*store, &user, &p.topic).await
                    }
                    _ => false,
                };
                if allowed {
                    (true, acc)
                } else {
                    // Dropped as rmqtt drops an expired message: never delivered.
                    tracing::info!(client_id = %session.id.client_id, "delivery refused: no read grant");
                    (false, Some(HookResult::MessageExpiry))
                }
            }
            _ => (true, acc),
        }
    }
}
