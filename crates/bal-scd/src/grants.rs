//! Subscriptions (grants) and the audit log that records every change to users and grants.

use async_trait::async_trait;
use bal_core::{
    Actor, AuditAction, ControlScope, GrantAccess, GrantAction, ReadScope, Subscription,
    SubscriptionId, SubscriptionStatus, User, Username,
};
use chrono::{DateTime, Utc};

use crate::StoreResult;

/// One line of the audit log.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditEntry {
    pub id: i64,
    pub at: DateTime<Utc>,
    pub actor: Actor,
    pub action: AuditAction,
    /// What was changed: `user:<name>` or `subscription:<id>`.
    pub object: String,
    pub detail: serde_json::Value,
}

/// Filters for reading the audit log, newest first.
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    pub actor: Option<Actor>,
    pub action: Option<AuditAction>,
    pub object: Option<String>,
    /// Only entries with an id below this one: the cursor for the next page.
    pub before_id: Option<i64>,
    pub limit: u32,
}

/// Filters for listing subscriptions, newest first. `None` fields match everything.
#[derive(Debug, Clone, Default)]
pub struct SubscriptionQuery {
    pub consumer: Option<Username>,
    pub producer: Option<Username>,
    pub status: Option<SubscriptionStatus>,
    pub access: Option<GrantAccess>,
}

/// Subscriptions and the audit log.
///
/// Guarantees, on every backend and with any number of writers (processes included):
/// - at most one live (`requested` or `accepted`) subscription per consumer and topic (a
///   unique index, not a check-then-insert);
/// - `decide` reads the subscription under a row lock and applies the state machine of
///   `bal-core`: of two concurrent decisions on one grant, one wins and the other sees its
///   result (usually an illegal transition); exactly one audit entry is written per change;
/// - `expire_due` writes each expiry once, even when several processes run it at once (rows
///   already being expired by another are skipped, and re-checked under the lock);
/// - the audit log is append-only (the database refuses UPDATE and DELETE on it) and its
///   `detail` text is [`bal_core::AuditDetail::canonical_json`], stored as text.
#[async_trait]
pub trait GrantStore: Send + Sync {
    /// Stores a new request. `Conflict` while the consumer has a live one on that topic.
    async fn request_subscription(&self, request: Subscription) -> StoreResult<Subscription>;
    async fn subscription(&self, id: SubscriptionId) -> StoreResult<Option<Subscription>>;
    async fn subscriptions(&self, query: &SubscriptionQuery) -> StoreResult<Vec<Subscription>>;
    /// Applies a decision through the state machine of `bal-core`, atomically.
    async fn decide(
        &self,
        id: SubscriptionId,
        action: &GrantAction,
        actor: &Actor,
        now: DateTime<Utc>,
    ) -> StoreResult<Subscription>;
    /// Writes down every accepted grant whose expiry has passed; returns them.
    async fn expire_due(&self, now: DateTime<Utc>) -> StoreResult<Vec<Subscription>>;

    async fn audit_log(&self, query: &AuditQuery) -> StoreResult<Vec<AuditEntry>>;
}

/// `user`'s [`ReadScope`] at `now`: `bal-core`'s one read rule, with the grants it needs read
/// from `store` (none unless `user` is a consumer). With `producer`, only the grants on that
/// producer are read: enough to ask [`ReadScope::allows`] about it.
pub async fn read_scope(
    store: &(impl GrantStore + ?Sized),
    user: &User,
    producer: Option<&Username>,
    now: DateTime<Utc>,
) -> StoreResult<ReadScope> {
    if !ReadScope::depends_on_grants(user.role) {
        return Ok(ReadScope::of(user, [], now));
    }
    let grants = store
        .subscriptions(&SubscriptionQuery {
            consumer: Some(user.username.clone()),
            producer: producer.cloned(),
            status: Some(SubscriptionStatus::Accepted),
            access: Some(GrantAccess::Read),
        })
        .await?;
    Ok(ReadScope::of(user, &grants, now))
}

/// `user`'s [`ControlScope`] at `now`: whose devices it may send set points to, with the
/// control grants it needs read from `store` (only a consumer's, and with `producer` only
/// those on that producer).
pub async fn control_scope(
    store: &(impl GrantStore + ?Sized),
    user: &User,
    producer: Option<&Username>,
    now: DateTime<Utc>,
) -> StoreResult<ControlScope> {
    if user.role != bal_core::Role::Consumer {
        return Ok(ControlScope::of(user, [], now));
    }
    let grants = store
        .subscriptions(&SubscriptionQuery {
            consumer: Some(user.username.clone()),
            producer: producer.cloned(),
            status: Some(SubscriptionStatus::Accepted),
            access: Some(GrantAccess::Control),
        })
        .await?;
    Ok(ControlScope::of(user, &grants, now))
}
