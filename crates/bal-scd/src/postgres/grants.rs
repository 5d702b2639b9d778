//! [`GrantStore`] on PostgreSQL.

use async_trait::async_trait;
use bal_core::{
    Actor, AuditAction, AuditDetail, GrantAction, Subscription, SubscriptionId, Username,
};
use chrono::{DateTime, Utc};
use sqlx::{PgConnection, Postgres, QueryBuilder};

use super::{
    PgStore, append_audit, audit_entry_from_row, is_unique_violation, subscription_from_row,
};
use crate::rows::{ms, subscription_columns, transition_detail};
use crate::{
    AuditEntry, AuditQuery, Change, GrantStore, StoreError, StoreResult, SubscriptionQuery,
};

#[async_trait]
impl GrantStore for PgStore {
    async fn request_subscription(&self, request: Subscription) -> StoreResult<Subscription> {
        let now = request.creation_date;
        let mut tx = self.begin_write().await?;
        let producer_topic: Option<String> = sqlx::query_scalar(
            // Shared lock: the producer cannot be deleted until this request is in.
            "SELECT topic FROM users WHERE username = $1 AND role = 'producer' \
             AND deleted_at IS NULL FOR SHARE",
        )
        .bind(request.producer.as_str())
        .fetch_optional(&mut *tx)
        .await?;
        if producer_topic.as_deref() != Some(request.topic.as_str()) {
            return Err(StoreError::NotFound("producer"));
        }
        // A lapsed grant still marked accepted must not block a new request: write its expiry.
        let expired = expire_due_in(&mut tx, now).await?;
        let inserted = sqlx::query(concat!(
            "INSERT INTO subscriptions (",
            subscription_columns!(),
            ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
        ))
        .bind(request.id.to_string())
        .bind(request.consumer.as_str())
        .bind(request.producer.as_str())
        .bind(request.topic.as_str())
        .bind(request.status.as_str())
        .bind(ms(request.creation_date))
        .bind(ms(request.modification_date))
        .bind(request.expires_at.map(ms))
        .bind(request.decided_by.as_ref().map(|a| a.to_string()))
        .execute(&mut *tx)
        .await;
        match inserted {
            Err(e) if is_unique_violation(&e) => {
                return Err(StoreError::Conflict(format!(
                    "{} already has a live subscription request for {}",
                    request.consumer, request.topic
                )));
            }
            other => other?,
        };
        let actor = Actor::User(request.consumer.clone());
        let detail = AuditDetail::SubscriptionRequested {
            consumer: request.consumer.clone(),
            topic: request.topic.clone(),
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
        let mut sql = QueryBuilder::<Postgres>::new(concat!(
            "SELECT ",
            subscription_columns!(),
            " FROM subscriptions WHERE 1 = 1"
        ));
        if let Some(c) = &query.consumer {
            sql.push(" AND consumer = ").push_bind(c.as_str());
        }
        if let Some(p) = &query.producer {
            sql.push(" AND producer = ").push_bind(p.as_str());
        }
        if let Some(s) = query.status {
            sql.push(" AND status = ").push_bind(s.as_str());
        }
        sql.push(" ORDER BY creation_date DESC, id DESC");
        sql.build()
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(subscription_from_row)
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
        let sql = concat!(
            "SELECT ",
            subscription_columns!(),
            // Locked: a concurrent decision waits, then sees this one's result.
            " FROM subscriptions WHERE id = $1 FOR UPDATE"
        );
        let before = sqlx::query(sql)
            .bind(id.to_string())
            .fetch_optional(&mut *tx)
            .await?
            .as_ref()
            .map(subscription_from_row)
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
        let mut sql = QueryBuilder::<Postgres>::new(
            "SELECT id, at, actor, action, object, detail FROM audit_log WHERE 1 = 1",
        );
        if let Some(a) = &query.actor {
            sql.push(" AND actor = ").push_bind(a.to_string());
        }
        if let Some(a) = query.action {
            sql.push(" AND action = ").push_bind(a.as_str());
        }
        if let Some(o) = &query.object {
            sql.push(" AND object = ").push_bind(o.clone());
        }
        if let Some(b) = query.before_id {
            sql.push(" AND id < ").push_bind(b);
        }
        sql.push(" ORDER BY id DESC LIMIT ")
            .push_bind(i64::from(query.limit));
        sql.build()
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(audit_entry_from_row)
            .collect()
    }

    async fn can_read(
        &self,
        consumer: &Username,
        producer: &Username,
        now: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let found: Option<i64> = sqlx::query_scalar(
            "SELECT 1::bigint FROM subscriptions WHERE consumer = $1 AND producer = $2 \
             AND status = 'accepted' AND (expires_at IS NULL OR expires_at > $3) LIMIT 1",
        )
        .bind(consumer.as_str())
        .bind(producer.as_str())
        .bind(ms(now))
        .fetch_optional(&self.pool)
        .await?;
        Ok(found.is_some())
    }
}

/// Writes a subscription's new state and its audit entry.
pub(super) async fn record_transition(
    conn: &mut PgConnection,
    before: &Subscription,
    after: &Subscription,
    action: AuditAction,
    actor: &Actor,
    reason: Option<&str>,
) -> StoreResult<()> {
    sqlx::query(
        "UPDATE subscriptions SET status = $1, modification_date = $2, expires_at = $3, decided_by = $4 \
         WHERE id = $5",
    )
    .bind(after.status.as_str())
    .bind(ms(after.modification_date))
    .bind(after.expires_at.map(ms))
    .bind(after.decided_by.as_ref().map(|a| a.to_string()))
    .bind(after.id.to_string())
    .execute(&mut *conn)
    .await?;
    let detail = transition_detail(before, after, reason);
    append_audit(
        conn,
        after.modification_date,
        actor,
        action,
        &format!("subscription:{}", after.id),
        &detail,
    )
    .await
}

pub(super) async fn live_subscriptions_of(
    conn: &mut PgConnection,
    username: &Username,
) -> StoreResult<Vec<Subscription>> {
    let sql = concat!(
        "SELECT ",
        subscription_columns!(),
        " FROM subscriptions \
         WHERE (consumer = $1 OR producer = $1) AND status IN ('requested', 'accepted') \
         ORDER BY id FOR UPDATE"
    );
    sqlx::query(sql)
        .bind(username.as_str())
        .fetch_all(conn)
        .await?
        .iter()
        .map(subscription_from_row)
        .collect()
}

async fn expire_due_in(
    conn: &mut PgConnection,
    now: DateTime<Utc>,
) -> StoreResult<Vec<Subscription>> {
    let sql = concat!(
        "SELECT ",
        subscription_columns!(),
        " FROM subscriptions \
         WHERE status = 'accepted' AND expires_at IS NOT NULL AND expires_at <= $1 \
         ORDER BY id FOR UPDATE"
    );
    // Locked in id order (no deadlock between two expirers); a row another process is
    // expiring is waited for and then re-read, no longer due, so each expiry is written once.
    let due: Vec<Subscription> = sqlx::query(sql)
        .bind(ms(now))
        .fetch_all(&mut *conn)
        .await?
        .iter()
        .map(subscription_from_row)
        .collect::<StoreResult<_>>()?;
    let mut expired = Vec::with_capacity(due.len());
    for before in due {
        let after = before.apply(&GrantAction::Expire, &Actor::System, now)?;
        let action = AuditAction::SubscriptionExpired;
        record_transition(conn, &before, &after, action, &Actor::System, None).await?;
        expired.push(after);
    }
    Ok(expired)
}

pub(super) async fn subscription_by_id(
    pool: &sqlx::PgPool,
    id: SubscriptionId,
) -> StoreResult<Option<Subscription>> {
    let sql = concat!(
        "SELECT ",
        subscription_columns!(),
        " FROM subscriptions WHERE id = $1"
    );
    sqlx::query(sql)
        .bind(id.to_string())
        .fetch_optional(pool)
        .await?
        .as_ref()
        .map(subscription_from_row)
        .transpose()
}
