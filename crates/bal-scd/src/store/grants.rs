//! [`GrantStore`] on either backend.

use async_trait::async_trait;
use bal_core::{
    Actor, AuditAction, AuditDetail, GrantAction, Subscription, SubscriptionId, Username,
};
use chrono::{DateTime, Utc};
use sqlx::QueryBuilder;

use super::rows::{audit_entry_from_row, ms, subscription_from_row, transition_detail};
use super::{SqlStore, Write, append_audit, is_unique_violation};
use crate::dialect::{BuilderExt, Dialect, QueryExt, first, sql};
use crate::{
    AuditEntry, AuditQuery, Change, GrantStore, StoreError, StoreResult, SubscriptionQuery,
};

#[async_trait]
impl<DB: Dialect> GrantStore for SqlStore<DB> {
    async fn request_subscription(&self, request: Subscription) -> StoreResult<Subscription> {
        let now = request.creation_date;
        let mut tx = self.begin_write().await?;
        // Shared lock: the producer cannot be deleted until this request is in.
        let producer_topic: Option<String> = sqlx::query::<DB>(sql!(DB;
            "SELECT topic FROM users WHERE username = $1 AND role = 'producer' \
             AND deleted_at IS NULL",
            FOR_SHARE
        ))
        .arg(request.producer.as_str())
        .optional(&mut tx)
        .await?
        .map(|r| first::<DB, String>(&r))
        .transpose()?;
        if producer_topic.as_deref() != Some(request.topic.as_str()) {
            return Err(StoreError::NotFound("producer"));
        }
        // A lapsed grant still marked accepted must not block a new request: write its expiry.
        let expired = expire_due_in(&mut tx, now).await?;
        let inserted = sqlx::query::<DB>(sql!(DB;
            "INSERT INTO subscriptions (",
            SUBSCRIPTION_COLUMNS,
            ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
        ))
        .arg(request.id.to_string())
        .arg(request.consumer.as_str())
        .arg(request.producer.as_str())
        .arg(request.topic.as_str())
        .arg(request.status.as_str())
        .arg(ms(request.creation_date))
        .arg(ms(request.modification_date))
        .arg(request.expires_at.map(ms))
        .arg(request.decided_by.as_ref().map(|a| a.to_string()))
        .arg(request.access.as_str())
        .run(&mut tx)
        .await;
        match inserted {
            Err(e) if is_unique_violation(&e) => {
                return Err(StoreError::Conflict(format!(
                    "{} already has a live {} subscription request for {}",
                    request.consumer, request.access, request.topic
                )));
            }
            other => other?,
        };
        let actor = Actor::User(request.consumer.clone());
        let detail = AuditDetail::SubscriptionRequested {
            consumer: request.consumer.clone(),
            topic: request.topic.clone(),
            access: request.access,
        };
        let object = format!("subscription:{}", request.id);
        let action = AuditAction::SubscriptionRequested;
        append_audit(&mut tx, now, &actor, action, &object, &detail).await?;
        for s in expired {
            tx.announce(Change::Subscription(s));
        }
        tx.announce(Change::Subscription(request.clone()));
        tx.commit(self).await?;
        Ok(request)
    }

    async fn subscription(&self, id: SubscriptionId) -> StoreResult<Option<Subscription>> {
        subscription_by_id(&self.pool, id).await
    }

    async fn subscriptions(&self, query: &SubscriptionQuery) -> StoreResult<Vec<Subscription>> {
        let mut sql = QueryBuilder::<DB>::new(sql!(DB;
            "SELECT ",
            SUBSCRIPTION_COLUMNS,
            " FROM subscriptions WHERE 1 = 1"
        ));
        if let Some(c) = &query.consumer {
            sql.push(" AND consumer = ").push_arg(c.as_str());
        }
        if let Some(p) = &query.producer {
            sql.push(" AND producer = ").push_arg(p.as_str());
        }
        if let Some(s) = query.status {
            sql.push(" AND status = ").push_arg(s.as_str());
        }
        if let Some(a) = query.access {
            sql.push(" AND access = ").push_arg(a.as_str());
        }
        sql.push(" ORDER BY creation_date DESC, id DESC");
        sql.build()
            .all(&self.pool)
            .await?
            .iter()
            .map(subscription_from_row::<DB>)
            .collect()
    }

    async fn decide(
        &self,
        id: SubscriptionId,
        action: &GrantAction,
        actor: &Actor,
        now: DateTime<Utc>,
    ) -> StoreResult<Subscription> {
        let mut tx = self.begin_write().await?;
        let sql = sql!(DB;
            "SELECT ",
            SUBSCRIPTION_COLUMNS,
            // Locked: a concurrent decision waits, then sees this one's result.
            " FROM subscriptions WHERE id = $1",
            FOR_UPDATE
        );
        let before = sqlx::query::<DB>(sql)
            .arg(id.to_string())
            .optional(&mut tx)
            .await?
            .as_ref()
            .map(subscription_from_row::<DB>)
            .transpose()?
            .ok_or(StoreError::NotFound("subscription"))?;
        let after = before.apply(action, actor, now)?;
        record_transition(&mut tx, &before, &after, action.into(), actor, None).await?;
        tx.announce(Change::Subscription(after.clone()));
        tx.commit(self).await?;
        Ok(after)
    }

    async fn expire_due(&self, now: DateTime<Utc>) -> StoreResult<Vec<Subscription>> {
        let mut tx = self.begin_write().await?;
        let expired = expire_due_in(&mut tx, now).await?;
        for s in &expired {
            tx.announce(Change::Subscription(s.clone()));
        }
        tx.commit(self).await?;
        Ok(expired)
    }

    async fn audit_log(&self, query: &AuditQuery) -> StoreResult<Vec<AuditEntry>> {
        let mut sql = QueryBuilder::<DB>::new(
            "SELECT id, at, actor, action, object, detail FROM audit_log WHERE 1 = 1",
        );
        if let Some(a) = &query.actor {
            sql.push(" AND actor = ").push_arg(a.to_string());
        }
        if let Some(a) = query.action {
            sql.push(" AND action = ").push_arg(a.as_str());
        }
        if let Some(o) = &query.object {
            sql.push(" AND object = ").push_arg(o.clone());
        }
        if let Some(b) = query.before_id {
            sql.push(" AND id < ").push_arg(b);
        }
        sql.push(" ORDER BY id DESC LIMIT ")
            .push_arg(i64::from(query.limit));
        sql.build()
            .all(&self.pool)
            .await?
            .iter()
            .map(audit_entry_from_row::<DB>)
            .collect()
    }
}

/// Writes a subscription's new state and its audit entry.
pub(super) async fn record_transition<DB: Dialect>(
    tx: &mut Write<DB>,
    before: &Subscription,
    after: &Subscription,
    action: AuditAction,
    actor: &Actor,
    reason: Option<&str>,
) -> StoreResult<()> {
    sqlx::query::<DB>(
        "UPDATE subscriptions SET status = $1, modification_date = $2, expires_at = $3, decided_by = $4 \
         WHERE id = $5",
    )
    .arg(after.status.as_str())
    .arg(ms(after.modification_date))
    .arg(after.expires_at.map(ms))
    .arg(after.decided_by.as_ref().map(|a| a.to_string()))
    .arg(after.id.to_string())
    .run(&mut *tx)
    .await?;
    let detail = transition_detail(before, after, reason);
    append_audit(
        tx,
        after.modification_date,
        actor,
        action,
        &format!("subscription:{}", after.id),
        &detail,
    )
    .await
}

pub(super) async fn live_subscriptions_of<DB: Dialect>(
    tx: &mut Write<DB>,
    username: &Username,
) -> StoreResult<Vec<Subscription>> {
    let sql = sql!(DB;
        "SELECT ",
        SUBSCRIPTION_COLUMNS,
        " FROM subscriptions \
         WHERE (consumer = $1 OR producer = $1) AND status IN ('requested', 'accepted') \
         ORDER BY id",
        FOR_UPDATE
    );
    sqlx::query::<DB>(sql)
        .arg(username.as_str())
        .all(tx)
        .await?
        .iter()
        .map(subscription_from_row::<DB>)
        .collect()
}

async fn expire_due_in<DB: Dialect>(
    tx: &mut Write<DB>,
    now: DateTime<Utc>,
) -> StoreResult<Vec<Subscription>> {
    let sql = sql!(DB;
        "SELECT ",
        SUBSCRIPTION_COLUMNS,
        " FROM subscriptions \
         WHERE status = 'accepted' AND expires_at IS NOT NULL AND expires_at <= $1 \
         ORDER BY id",
        FOR_UPDATE
    );
    // Locked in id order (no deadlock between two expirers); a row another process is
    // expiring is waited for and then re-read, no longer due, so each expiry is written once.
    let due: Vec<Subscription> = sqlx::query::<DB>(sql)
        .arg(ms(now))
        .all(&mut *tx)
        .await?
        .iter()
        .map(subscription_from_row::<DB>)
        .collect::<StoreResult<_>>()?;
    let mut expired = Vec::with_capacity(due.len());
    for before in due {
        let after = before.apply(&GrantAction::Expire, &Actor::System, now)?;
        let action = AuditAction::SubscriptionExpired;
        record_transition(tx, &before, &after, action, &Actor::System, None).await?;
        expired.push(after);
    }
    Ok(expired)
}

pub(crate) async fn subscription_by_id<DB: Dialect>(
    pool: &sqlx::Pool<DB>,
    id: SubscriptionId,
) -> StoreResult<Option<Subscription>> {
    let sql = sql!(DB;
        "SELECT ",
        SUBSCRIPTION_COLUMNS,
        " FROM subscriptions WHERE id = $1"
    );
    sqlx::query::<DB>(sql)
        .arg(id.to_string())
        .optional(pool)
        .await?
        .as_ref()
        .map(subscription_from_row::<DB>)
        .transpose()
}
