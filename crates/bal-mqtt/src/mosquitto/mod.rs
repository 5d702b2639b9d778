//! The Mosquitto backend (`broker.kind = "mosquitto"`): the BAL starts no broker; it drives
//! Mosquitto 2.0's Dynamic Security plugin so that the broker enforces the same rules as the
//! embedded one, and ingests from it.
//!
//! - [`connection`]: the broker's URL, TLS trust and the dynsec admin's credentials.
//! - [`dynsec`]: the JSON control client.
//! - [`plan`]: the users, roles and rules the broker should hold, and the commands to get there.
//! - [`ingest`]: the persistent subscriber (plain, or shared among several BALs) that
//!   acknowledges after commit.
//!
//! The SCD is the truth. The broker is reconciled with it at start, at once after every change
//! of users or grants this process commits, and every `reconcile_every` (changes made by other
//! replicas or by `bal user` in another process, a wiped or tampered broker).

pub mod connection;
pub mod dynsec;
pub mod ingest;
pub mod plan;

use std::collections::HashMap;
use std::time::Duration;

use anyhow::Context;
use bal_core::SubscriptionStatus;
use bal_scd::{Change, SharedStore, SubscriptionQuery};
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
}

/// The running adapter: the reconciler and the ingest subscriber.
pub struct MosquittoBroker {
    reconciler: JoinHandle<()>,
    ingest: JoinHandle<()>,
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
        };
        reconciler
            .reconcile()
            .await
            .context("cannot bring the broker in line with the SCD")?;
        let reconciler = tokio::spawn(reconciler.follow(store, config.reconcile_every));
        let filter = if config.shared_ingest {
            ingest::SHARED_FILTER
        } else {
            ingest::FILTER
        };
        let ingest = tokio::spawn(ingest::run(
            config.connection,
            config.ingest_client_id,
            filter,
            ingest,
            config.max_payload_bytes,
        ));
        Ok(Self { reconciler, ingest })
    }

    /// Stops reconciling and ingesting. Messages delivered but not yet committed are not
    /// acknowledged, so the broker delivers them again to the next session.
    pub async fn stop(self) {
        self.ingest.abort();
        self.reconciler.abort();
        let _ = self.ingest.await;
        let _ = self.reconciler.await;
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
    /// password changed, so the broker gets the new one and the user's sessions end.
    pushed: HashMap<String, String>,
}

impl Reconciler {
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
