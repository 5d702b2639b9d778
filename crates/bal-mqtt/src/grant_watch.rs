//! The grant watcher: follows the SCD's changes so that live MQTT sessions lose what their
//! users may no longer hold (a revoked, cancelled or expired grant's subscriptions; every
//! session of a deleted user or a changed password), with a periodic re-check behind the
//! change announcements.

use std::time::Duration;

use bal_core::{SubscriptionStatus, Username};
use bal_scd::{Change, SharedStore};
use rmqtt::context::ServerContext;
use rmqtt::types::{Id, Unsubscribe};
use tokio::sync::broadcast::error::RecvError;

use crate::access::may_subscribe;
use crate::embedded::Hooks;

/// How often every live session's subscriptions are re-checked against the grants, as a safety
/// net behind the change announcements.
const RECHECK: Duration = Duration::from_secs(5);

/// The ids of the sessions whose username passes `keep`. Collected before any session is
/// touched: kicking while the session map is being iterated can deadlock.
pub(crate) async fn session_ids(
    scx: &ServerContext,
    keep: impl Fn(Option<&str>) -> bool,
) -> Vec<Id> {
    let shared = scx.extends.shared().await;
    shared
        .iter()
        .filter_map(|e| e.session().map(|s| s.id.clone()))
        .filter(|id| keep(id.username.as_deref()))
        .collect()
}

pub(crate) async fn kick(scx: &ServerContext, id: Id) {
    let mut entry = scx.extends.shared().await.entry(id.clone());
    if let Err(e) = entry.kick(true, true, true).await {
        tracing::warn!(client_id = %id.client_id, error = %e, "kick failed");
    }
}

/// Follows the SCD's changes: when a grant ends, the consumer's live subscriptions that it no
/// longer may hold are removed; when a user is deleted, its sessions are ended.
pub(crate) async fn enforce_grants(scx: ServerContext, store: SharedStore, hooks: Hooks) {
    let mut changes = store.changes();
    let mut recheck = tokio::time::interval(RECHECK);
    loop {
        tokio::select! {
            change = changes.recv() => match change {
                Ok(Change::Subscription(s)) => {
                    hooks.reads.forget(Some(s.consumer.as_str()));
                    if matches!(
                        s.status,
                        SubscriptionStatus::Revoked | SubscriptionStatus::Cancelled | SubscriptionStatus::Expired
                    ) {
                        recheck_sessions(&scx, &store, Some(s.consumer.as_str())).await
                    }
                }
                // Like HTTPS sessions, MQTT sessions end when the password changes or the user
                // goes; the old password stops working at once.
                Ok(Change::PasswordChanged(u) | Change::UserDeleted(u)) => {
                    hooks.verified.forget(u.as_str());
                    hooks.users.write().expect("user cache lock").remove(u.as_str());
                    for id in session_ids(&scx, |name| name == Some(u.as_str())).await {
                        kick(&scx, id).await;
                    }
                }
                // Missed changes (a slow follower, or another process's while the database
                // listener reconnected): re-check every session. (The credential cache needs
                // no flush: it is keyed by the stored hash, which a password change replaces.)
                Ok(Change::Resync) | Err(RecvError::Lagged(_)) => {
                    hooks.reads.forget(None);
                    recheck_sessions(&scx, &store, None).await
                }
                Ok(_) => {}
                Err(RecvError::Closed) => return,
            },
            _ = recheck.tick() => recheck_sessions(&scx, &store, None).await,
        }
    }
}

/// Removes every subscription (of `username`'s sessions, or of all sessions) that its user may
/// no longer hold. A session whose user is gone is ended.
async fn recheck_sessions(scx: &ServerContext, store: &SharedStore, username: Option<&str>) {
    let ids = session_ids(scx, |name| username.is_none() || name == username).await;
    for id in ids {
        let user = match id.username.as_deref().map(Username::parse) {
            Some(Ok(name)) => store.user(&name).await,
            _ => Ok(None),
        };
        let user = match user {
            Ok(Some(u)) => u,
            Ok(None) => {
                kick(scx, id).await;
                continue;
            }
            Err(e) => {
                tracing::error!(error = %e.report(), "grant re-check failed");
                continue;
            }
        };
        let entry = scx.extends.shared().await.entry(id.clone());
        for sub in entry.subscriptions().await.unwrap_or_default() {
            let filter = sub.topic.to_string();
            if matches!(may_subscribe(&**store, &user, &filter).await, Ok(true)) {
                continue;
            }
            let removed = match Unsubscribe::from(&sub.topic, false, false) {
                Ok(u) => entry.unsubscribe(&u).await.map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            match removed {
                Ok(_) => {
                    tracing::info!(username = %user.username, filter, "unsubscribed: grant ended")
                }
                Err(e) => {
                    tracing::warn!(username = %user.username, error = %e, "unsubscribe failed; disconnecting");
                    kick(scx, id.clone()).await;
                    break;
                }
            }
        }
    }
}
