//! The Mosquitto backend (`broker.kind = "mosquitto"`): the BAL starts no broker; it drives
//! Mosquitto 2.0's Dynamic Security plugin so that the broker enforces the same rules as the
//! embedded one, and ingests from it.
//!
//! - [`connection`]: the broker's URL, TLS trust and the dynsec admin's credentials.
//! - [`dynsec`]: the JSON control client.
//! - [`plan`]: the users, roles and rules the broker should hold, and the commands to get there.
//! - [`ingest`]: the persistent subscriber (plain, or shared among several BALs) that
//!   acknowledges after commit.
//! - [`setpoints`]: the client that publishes set points and takes the devices' answers.
//!
//! The SCD is the truth. The broker is reconciled with it at start, at once after every change
//! of users or grants (this process's, and on PostgreSQL every other's), and every
//! `reconcile_every` (a wiped or tampered broker). With several replicas only the holder of the
//! broker lease ([`bal_scd::BROKER_LEASE`]) reconciles, so that a change reaches the broker
//! once and a user whose password changed is disconnected once; what it gave the broker is
//! kept in the database, so the next holder carries on where it stopped.

pub mod connection;
pub mod dynsec;
pub mod ingest;
pub mod plan;
pub mod setpoints;

use std::collections::HashMap;
use std::time::Duration;

use anyhow::Context;
use bal_core::SubscriptionStatus;
use bal_scd::{BROKER_LEASE, Change, Fence, SharedStore, SubscriptionQuery};
use bal_wallet::Sealer;
use chrono::Utc;
use serde_json::json;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio::task::JoinHandle;

pub use connection::BrokerConnection;
use dynsec::Dynsec;

use crate::ingest::Ingest;

/// How the BAL uses an external Mosquitto.
#[derive(Debug, Clone)]
pub struct MosquittoConfig {
    pub connection: BrokerConnection,
    /// The persistent ingest session's client id: distinct and stable per replica.
    pub ingest_client_id: String,
    /// Subscribe to [`ingest::SHARED_FILTER`] (several BALs) instead of [`ingest::FILTER`].
    pub shared_ingest: bool,
    /// Full reconciliations happen at least this often.
    pub reconcile_every: Duration,
    /// Larger messages are dropped (and acknowledged) instead of stored.
    pub max_payload_bytes: usize,
    /// This replica's id, as the broker lease's holder.
    pub replica_id: String,
    /// How long the broker lease lasts unless renewed (renewed every third of it).
    pub lease: Duration,
}

/// The running adapter: the reconciler and the ingest subscriber.
pub struct MosquittoBroker {
    reconciler: JoinHandle<()>,
    ingest: JoinHandle<()>,
    setpoints: (std::sync::Arc<setpoints::MosquittoLink>, JoinHandle<()>),
    store: SharedStore,
    replica_id: String,
}

impl MosquittoBroker {
    /// Connects as the dynsec admin, brings the broker in line with the SCD, and starts
    /// reconciling and ingesting. Fails, naming the setting, when the broker cannot be reached
    /// or refuses the admin.
    pub async fn start(
        config: MosquittoConfig,
        store: SharedStore,
        ingest: Ingest,
        sealer: Sealer,
    ) -> anyhow::Result<Self> {
        let dynsec = Dynsec::connect(&config.connection, Duration::from_secs(10))
            .await
            .context("broker.url, broker.admin_username, broker.admin_password")?;
        let mut reconciler = Reconciler {
            dynsec,
            store: store.clone(),
            sealer,
            admin: config.connection.username.clone(),
            pushed: HashMap::new(),
            holder: config.replica_id.clone(),
            lease: config.lease,
            fence: None,
        };
        // The lease holder reconciles now, so that a broker that cannot be brought in line
        // stops the start; the others checked the admin's access by connecting.
        if reconciler.lead().await? {
            reconciler
                .reconcile()
                .await
                .context("cannot bring the broker in line with the SCD")?;
        }
        let reconciler = tokio::spawn(reconciler.follow(store.clone(), config.reconcile_every));
        let filter = if config.shared_ingest {
            ingest::SHARED_FILTER
        } else {
            ingest::FILTER
        };
        let (link, answers) = setpoints::start(
            config.connection.clone(),
            format!("{}-setpoints", config.ingest_client_id),
            config.shared_ingest,
            store.clone(),
        );
        let ingest = tokio::spawn(ingest::run(
            config.connection,
            config.ingest_client_id,
            filter,
            ingest,
            config.max_payload_bytes,
        ));
        Ok(Self {
            reconciler,
            ingest,
            setpoints: (std::sync::Arc::new(link), answers),
            store,
            replica_id: config.replica_id,
        })
    }

    /// Stops reconciling and ingesting. Messages delivered but not yet committed are not
    /// acknowledged, so the broker delivers them again to the next session.
    /// What the set point sender publishes through.
    pub fn setpoint_link(&self) -> std::sync::Arc<dyn crate::setpoints::SetpointLink> {
        self.setpoints.0.clone()
    }

    pub async fn stop(self) {
        self.ingest.abort();
        self.reconciler.abort();
        self.setpoints.1.abort();
        let _ = self.ingest.await;
        let _ = self.reconciler.await;
        // Another replica takes over the reconciliation at once.
        if let Err(e) = self
            .store
            .release_if_held(BROKER_LEASE, &self.replica_id)
            .await
        {
            tracing::warn!(error = %e.report(), "could not give up the broker lease");
        }
    }
}

/// Clients or roles per listing reply.
const LIST_PAGE: usize = 50;

/// Marks a user given a random password: no sealed text is ever empty.
const LOCKED: &str = "";

struct Reconciler {
    dynsec: Dynsec,
    store: SharedStore,
    sealer: Sealer,
    admin: String,
    /// The sealed password last given to the broker per user: a different one means the
    /// password changed, so the broker gets the new one and the user's sessions end. Kept in
    /// the database too, for the next holder of the lease.
    pushed: HashMap<String, String>,
    /// This replica's id and the broker lease it holds, if it does.
    holder: String,
    lease: Duration,
    fence: Option<Fence>,
}

impl Reconciler {
    /// Takes or renews the broker lease; true while this replica holds it. A replica that
    /// takes it (again) first reads what the broker was last given, by whichever holder.
    async fn lead(&mut self) -> anyhow::Result<bool> {
        let fence = self
            .store
            .acquire_lease(BROKER_LEASE, &self.holder, self.lease)
            .await?;
        let epoch = |f: &Option<Fence>| f.as_ref().map(|f| f.epoch);
        if fence.is_some() && epoch(&fence) != epoch(&self.fence) {
            self.pushed = self.store.broker_pushed().await?;
            tracing::info!(replica = %self.holder, "this replica keeps the broker in line now");
        }
        self.fence = fence;
        Ok(self.fence.is_some())
    }

    async fn reconcile(&mut self) -> anyhow::Result<()> {
        let now = Utc::now();
        let users = self.store.users().await?;
        let query = SubscriptionQuery {
            status: Some(SubscriptionStatus::Accepted),
            ..SubscriptionQuery::default()
        };
        let grants = self.store.subscriptions(&query).await?;
        let desired = plan::desired(&users, &grants, now);
        anyhow::ensure!(
            !desired.contains_key(&self.admin),
            "broker.admin_username {:?} is also a BAL user: give the broker's admin another name",
            self.admin
        );
        let replies = self
            .dynsec
            .run_ok(vec![json!({ "command": "getDefaultACLAccess" })])
            .await?;
        let clients = self.list("listClients", "clients").await?;
        let roles = self.list("listRoles", "roles").await?;
        let actual = plan::Actual::from_replies(&clients, &roles, &replies[0].data);
        // A client the broker lost (wiped, or deleted by hand) is created anew without a
        // password: it needs its password again.
        self.pushed
            .retain(|name, _| actual.clients.contains_key(name));
        let commands = plan::plan(&desired, &actual, &self.admin);
        if !commands.is_empty() {
            tracing::info!(
                changes = commands.len(),
                "bringing the broker in line with the SCD"
            );
            for r in self.dynsec.run(commands).await? {
                if let Some(e) = r.error {
                    tracing::warn!(command = r.command, error = e, "broker change refused");
                }
            }
        }
        let sender = plan::sender_plan(&actual, &self.admin);
        if !sender.is_empty() {
            // Mosquitto disconnects the admin as it gives it the role, reply unsent; the next
            // reconciliation checks that it holds it.
            tracing::info!("letting the BAL's broker client send set points");
            self.dynsec.run_changing_admin(sender).await?;
        }
        self.passwords(&desired).await
    }

    /// Every entry of a verbose `listClients` or `listRoles`, page by page: the broker's
    /// `message_size_limit` applies to its replies too, so one reply must stay small.
    async fn list(&self, command: &str, key: &str) -> anyhow::Result<serde_json::Value> {
        let mut all = Vec::new();
        loop {
            let page = self
                .dynsec
                .run_ok(vec![json!({
                    "command": command, "verbose": true, "count": LIST_PAGE, "offset": all.len(),
                })])
                .await?;
            let entries = page[0].data[key].as_array().cloned().unwrap_or_default();
            let done = entries.len() < LIST_PAGE;
            all.extend(entries);
            if done {
                return Ok(json!({ key: all }));
            }
        }
    }

    /// Gives the broker every password it may not have; ends the sessions of users whose
    /// password changed while the BAL was watching. A user without a sealed copy (created
    /// before the broker was configured, or whose password was changed by a `bal` that did not
    /// know of the broker) is locked out with a random password until its next HTTPS login or
    /// password change: the broker must never keep accepting a password the SCD no longer has.
    async fn passwords(&mut self, desired: &plan::Desired) -> anyhow::Result<()> {
        let mut secrets: HashMap<String, String> = self
            .store
            .broker_secrets()
            .await?
            .into_iter()
            .map(|(u, s)| (u.to_string(), s))
            .collect();
        // Only the users this reconciliation created clients for: one created since is handled
        // by the next (its announcement triggers one).
        secrets.retain(|name, _| desired.contains_key(name));
        for name in desired.keys() {
            secrets
                .entry(name.clone())
                .or_insert_with(|| LOCKED.to_owned());
        }
        let mut set = Vec::new();
        let mut changed = Vec::new();
        let mut pushed = HashMap::with_capacity(secrets.len());
        for (name, sealed) in secrets {
            if self.pushed.get(&name) != Some(&sealed) {
                let password = if sealed == LOCKED {
                    zeroize::Zeroizing::new(hex::encode(rand::random::<[u8; 32]>()))
                } else {
                    match self.sealer.open(&name, &sealed) {
                        Ok(p) => p,
                        Err(e) => {
                            tracing::error!(username = %name, error = %e, "cannot open a broker password");
                            continue;
                        }
                    }
                };
                set.push(json!({ "command": "setClientPassword", "username": name, "password": password.as_str() }));
                if self.pushed.contains_key(&name) {
                    changed.push(name.clone());
                }
            }
            pushed.insert(name, sealed);
        }
        if !set.is_empty() {
            self.dynsec.run_ok(set).await?;
        }
        // Dynsec has no kick command: disabling a client disconnects it.
        let kicks = changed
            .iter()
            .flat_map(|u| {
                [
                    json!({ "command": "disableClient", "username": u }),
                    json!({ "command": "enableClient", "username": u }),
                ]
            })
            .collect::<Vec<_>>();
        if !kicks.is_empty() {
            self.dynsec.run_ok(kicks).await?;
        }
        if pushed != self.pushed
            && let Some(fence) = &self.fence
        {
            self.store.record_broker_pushed(&pushed, fence).await?;
        }
        self.pushed = pushed;
        Ok(())
    }

    /// Reconciles after each change of users or grants (announcements that arrive together are
    /// handled together), on every tick, and again a second after a failure.
    async fn follow(mut self, store: SharedStore, every: Duration) {
        let mut changes = store.changes();
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        let mut renew = tokio::time::interval(self.lease / 3);
        renew.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        renew.tick().await;
        let mut failing = false;
        loop {
            let retry = async {
                if failing {
                    tokio::time::sleep(Duration::from_secs(1)).await
                } else {
                    std::future::pending().await
                }
            };
            tokio::select! {
                change = changes.recv() => match change {
                    Ok(Change::Measurements(_)) => continue,
                    Ok(_) | Err(RecvError::Lagged(_)) => {}
                    Err(RecvError::Closed) => return,
                },
                _ = tick.tick() => {}
                () = retry => {}
                _ = renew.tick() => {
                    // Renewing is all a holder does here; one that just took the lease over
                    // reconciles at once.
                    let held = self.fence.is_some();
                    match self.lead().await {
                        Ok(true) if !held => {}
                        Ok(_) => continue,
                        Err(e) => {
                            tracing::warn!(error = %format!("{e:#}"), "cannot renew the broker lease");
                            continue;
                        }
                    }
                }
            }
            match self.lead().await {
                Ok(true) => {}
                // Another replica holds the lease: it reconciles.
                Ok(false) => continue,
                Err(e) => {
                    tracing::warn!(error = %format!("{e:#}"), "cannot take the broker lease");
                    failing = true;
                    continue;
                }
            }
            // Announcements that arrived meanwhile are covered by this reconciliation.
            while let Ok(_) | Err(TryRecvError::Lagged(_)) = changes.try_recv() {}
            match self.reconcile().await {
                Ok(()) => {
                    if failing {
                        tracing::info!("the broker is in line with the SCD again");
                    }
                    failing = false;
                }
                Err(e) => {
                    if !failing {
                        tracing::error!(error = %format!("{e:#}"), "reconciling the broker failed; retrying");
                    }
                    failing = true;
                }
            }
        }
    }
}
