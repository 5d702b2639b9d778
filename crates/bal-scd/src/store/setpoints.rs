//! [`SetpointStore`] on either backend.

use std::time::Duration;

use async_trait::async_trait;
use bal_core::setpoint::{SetpointState, SetpointValues};
use bal_core::{Actor, AuditAction, AuditDetail};
use chrono::{DateTime, Utc};
use sqlx::QueryBuilder;

use super::rows::{b256, ms, parse, parse_opt, time};
use super::{SqlStore, Write, append_audit};
use crate::dialect::{BuilderExt, Dialect, QueryExt, first, get, sql};
use crate::error::corrupt;
use crate::setpoints::{NewSetpoint, Setpoint, SetpointCounts, SetpointQuery, SetpointStore};
use crate::{Change, StoreError, StoreResult};

fn setpoint_from_row<DB: Dialect>(row: &DB::Row) -> StoreResult<Setpoint> {
    let values: String = get::<DB, _>(row, "values_json")?;
    let values = serde_json::from_str(&values)
        .ok()
        .and_then(|v| SetpointValues::new(&v).ok())
        .ok_or_else(|| corrupt("values_json"))?;
    let attempts: i64 = get::<DB, _>(row, "attempts")?;
    Ok(Setpoint {
        id: get::<DB, _>(row, "id")?,
        issuer: parse::<DB, _>(row, "issuer")?,
        producer: parse::<DB, _>(row, "producer")?,
        device: parse::<DB, _>(row, "device")?,
        values,
        valid_until: time(get::<DB, _>(row, "valid_until")?)?,
        seq: get::<DB, _>(row, "seq")?,
        state: parse::<DB, _>(row, "state")?,
        reason: get::<DB, _>(row, "reason")?,
        created_at: time(get::<DB, _>(row, "created_at")?)?,
        updated_at: time(get::<DB, _>(row, "updated_at")?)?,
        attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
        signature: parse_opt::<DB, String>(row, "signature")?,
    })
    .and_then(|s| {
        // The stored hash is what was certified: it must still be the values' hash.
        let hash = b256::<DB>(row, "values_hash")?;
        if hash == s.values.hash() {
            Ok(s)
        } else {
            Err(corrupt(format!("values_hash of set point {}", s.id)))
        }
    })
}

/// The audit entry of a set point reaching `to` from `from`.
fn detail(s: &Setpoint, from: Option<SetpointState>, to: SetpointState) -> AuditDetail {
    AuditDetail::Setpoint {
        from,
        to,
        issuer: s.issuer.clone(),
        producer: s.producer.clone(),
        device: s.device.clone(),
        values_hash: s.values.hash(),
        valid_until: s.valid_until,
        seq: s.seq,
        reason: s.reason.clone(),
        signature: if from.is_none() {
            s.signature.clone()
        } else {
            None
        },
    }
}

/// Writes `after`'s state and its audit entry, and announces it.
async fn record<DB: Dialect>(
    tx: &mut Write<DB>,
    before: Option<SetpointState>,
    after: &Setpoint,
    actor: &Actor,
) -> StoreResult<()> {
    if before.is_some() {
        sqlx::query::<DB>(
            "UPDATE setpoints SET state = $1, reason = $2, updated_at = $3 WHERE id = $4",
        )
        .arg(after.state.as_str())
        .arg(after.reason.clone())
        .arg(ms(after.updated_at))
        .arg(after.id)
        .run(&mut *tx)
        .await?;
    }
    let object = format!("setpoint:{}", after.id);
    let action = AuditAction::Setpoint(after.state);
    let detail = detail(after, before, after.state);
    append_audit(tx, after.updated_at, actor, action, &object, &detail).await?;
    tx.announce(Change::Setpoint(after.into()));
    Ok(())
}

async fn locked<DB: Dialect>(tx: &mut Write<DB>, id: i64) -> StoreResult<Option<Setpoint>> {
    sqlx::query::<DB>(sql!(DB;
        "SELECT ", SETPOINT_COLUMNS,
        " FROM setpoints WHERE id = $1", FOR_UPDATE
    ))
    .arg(id)
    .optional(&mut *tx)
    .await?
    .as_ref()
    .map(setpoint_from_row::<DB>)
    .transpose()
}

/// Moves a locked set point to `to`; `Conflict` when its state does not allow it.
async fn move_locked<DB: Dialect>(
    tx: &mut Write<DB>,
    before: Setpoint,
    to: SetpointState,
    actor: &Actor,
    reason: Option<&str>,
    now: DateTime<Utc>,
) -> StoreResult<Setpoint> {
    if !before.state.can_become(to) {
        return Err(StoreError::Conflict(format!(
            "set point {} is {} and cannot become {to}",
            before.id, before.state
        )));
    }
    let after = Setpoint {
        state: to,
        reason: reason.map(str::to_owned).or(before.reason.clone()),
        updated_at: bal_core::millis(now),
        ..before.clone()
    };
    record(tx, Some(before.state), &after, actor).await?;
    Ok(after)
}

#[async_trait]
impl<DB: Dialect> SetpointStore for SqlStore<DB> {
    async fn issue_setpoint(&self, new: NewSetpoint, now: DateTime<Utc>) -> StoreResult<Setpoint> {
        let now = bal_core::millis(now);
        let mut tx = self.begin_write().await?;
        // Shared lock: the producer cannot be deleted until this set point is in.
        let producer = sqlx::query::<DB>(sql!(DB;
            "SELECT username FROM users WHERE username = $1 AND role = 'producer' \
             AND deleted_at IS NULL",
            FOR_SHARE
        ))
        .arg(new.producer.as_str())
        .optional(&mut tx)
        .await?;
        if producer.is_none() {
            return Err(StoreError::NotFound("producer"));
        }
        // The device's next number; the row lock orders concurrent issuers.
        let seq_row = sqlx::query::<DB>(
            "INSERT INTO setpoint_devices (producer, device, last_seq) VALUES ($1, $2, 1) \
             ON CONFLICT (producer, device) DO UPDATE SET last_seq = setpoint_devices.last_seq + 1 \
             RETURNING last_seq",
        )
        .arg(new.producer.as_str())
        .arg(new.device.as_str())
        .optional(&mut tx)
        .await?
        .ok_or_else(|| corrupt("no sequence number"))?;
        let seq: i64 = first::<DB, i64>(&seq_row)?;

        // The open set points this one leaves nothing of.
        let open = sqlx::query::<DB>(sql!(DB;
            "SELECT ", SETPOINT_COLUMNS,
            " FROM setpoints WHERE producer = $1 AND device = $2 AND state IN \
              ('queued', 'sent', 'delivered', 'received') ORDER BY id",
            FOR_UPDATE
        ))
        .arg(new.producer.as_str())
        .arg(new.device.as_str())
        .all(&mut tx)
        .await?
        .iter()
        .map(setpoint_from_row::<DB>)
        .collect::<StoreResult<Vec<_>>>()?;

        let row = sqlx::query::<DB>(sql!(DB;
            "INSERT INTO setpoints (issuer, producer, device, values_json, values_hash, \
             valid_until, seq, state, created_at, updated_at, next_attempt_at, signature) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, 'queued', $8, $8, $8, $9) RETURNING ",
            SETPOINT_COLUMNS
        ))
        .arg(new.issuer.to_string())
        .arg(new.producer.as_str())
        .arg(new.device.as_str())
        .arg(new.values.canonical_json().to_owned())
        .arg(new.values.hash().to_vec())
        .arg(ms(new.valid_until))
        .arg(seq)
        .arg(ms(now))
        .arg(new.signature.clone())
        .optional(&mut tx)
        .await?
        .ok_or_else(|| corrupt("insert returned no row"))?;
        let issued = setpoint_from_row::<DB>(&row)?;
        record(&mut tx, None, &issued, &new.issuer).await?;
        for older in open {
            if issued.values.supersedes(&older.values) {
                let reason = format!("superseded by set point {}", issued.id);
                move_locked(
                    &mut tx,
                    older,
                    SetpointState::Superseded,
                    &new.issuer,
                    Some(&reason),
                    now,
                )
                .await?;
            }
        }
        tx.commit(self).await?;
        Ok(issued)
    }

    async fn setpoint(&self, id: i64) -> StoreResult<Option<Setpoint>> {
        sqlx::query::<DB>(sql!(DB; "SELECT ", SETPOINT_COLUMNS, " FROM setpoints WHERE id = $1"))
            .arg(id)
            .optional(&self.pool)
            .await?
            .as_ref()
            .map(setpoint_from_row::<DB>)
            .transpose()
    }

    async fn setpoints(&self, query: &SetpointQuery) -> StoreResult<Vec<Setpoint>> {
        let mut sql = QueryBuilder::<DB>::new(
            sql!(DB; "SELECT ", SETPOINT_COLUMNS, " FROM setpoints WHERE 1 = 1"),
        );
        if let Some(p) = &query.producer {
            sql.push(" AND producer = ").push_arg(p.as_str());
        }
        if let Some(u) = &query.visible_to {
            sql.push(" AND (producer = ")
                .push_arg(u.as_str())
                .push(" OR issuer = ")
                .push_arg(u.as_str())
                .push(")");
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
            .map(setpoint_from_row::<DB>)
            .collect()
    }

    async fn move_setpoint(
        &self,
        id: i64,
        to: SetpointState,
        actor: &Actor,
        reason: Option<&str>,
        now: DateTime<Utc>,
    ) -> StoreResult<Setpoint> {
        let mut tx = self.begin_write().await?;
        let before = locked(&mut tx, id)
            .await?
            .ok_or(StoreError::NotFound("set point"))?;
        let after = move_locked(&mut tx, before, to, actor, reason, now).await?;
        tx.commit(self).await?;
        Ok(after)
    }

    async fn claim_setpoints(
        &self,
        now: DateTime<Utc>,
        retry: Duration,
        max: u32,
    ) -> StoreResult<Vec<Setpoint>> {
        let retry_ms = i64::try_from(retry.as_millis()).unwrap_or(i64::MAX / 2);
        let mut tx = self.begin_write().await?;
        // Rows another replica is claiming are skipped, not waited for: it sends them.
        let rows = sqlx::query::<DB>(sql!(DB;
            "UPDATE setpoints SET attempts = attempts + 1, next_attempt_at = $1 + $2 \
             WHERE id IN (SELECT id FROM setpoints WHERE state IN ('queued', 'sent', 'delivered') \
             AND state IN ('queued', 'sent', 'delivered', 'received') \
             AND next_attempt_at <= $1 AND valid_until > $1 ORDER BY next_attempt_at, id LIMIT $3",
            { postgres: " FOR UPDATE SKIP LOCKED", sqlite: "" },
            ") RETURNING ",
            SETPOINT_COLUMNS
        ))
        .arg(ms(now))
        .arg(retry_ms)
        .arg(i64::from(max))
        .all(&mut tx)
        .await?;
        let mut claimed = rows
            .iter()
            .map(setpoint_from_row::<DB>)
            .collect::<StoreResult<Vec<_>>>()?;
        claimed.sort_by_key(|s| s.id);
        // Marked sent before they are, in the claim's transaction: a device answering at once
        // finds its set point past `queued`, and a thousand set points are one commit.
        for s in &mut claimed {
            if s.state == SetpointState::Queued {
                *s = move_locked(
                    &mut tx,
                    s.clone(),
                    SetpointState::Sent,
                    &Actor::System,
                    None,
                    now,
                )
                .await?;
            }
        }
        tx.commit(self).await?;
        Ok(claimed)
    }

    async fn resend_setpoints(
        &self,
        producer: &bal_core::Username,
        device: Option<&bal_core::setpoint::DeviceName>,
        now: DateTime<Utc>,
    ) -> StoreResult<u64> {
        let mut tx = self.begin_write().await?;
        // The claim will count the send; this one is owed to the device, not a retry.
        let woken = sqlx::query::<DB>(
            "UPDATE setpoints SET next_attempt_at = $1, \
             attempts = CASE WHEN attempts > 0 THEN attempts - 1 ELSE 0 END \
             WHERE producer = $2 AND (CAST($3 AS TEXT) IS NULL OR device = $3) \
             AND state IN ('queued', 'sent') AND valid_until > $1 AND next_attempt_at > $1",
        )
        .arg(ms(now))
        .arg(producer.as_str())
        .arg(device.map(|d| d.as_str().to_owned()))
        .run(&mut tx)
        .await?;
        tx.commit(self).await?;
        Ok(woken)
    }

    async fn expire_setpoints(&self, now: DateTime<Utc>) -> StoreResult<Vec<Setpoint>> {
        let mut tx = self.begin_write().await?;
        // Locked in id order (no deadlock between two sweepers); one that another replica
        // expires meanwhile is skipped.
        let due = sqlx::query::<DB>(sql!(DB;
            "SELECT ", SETPOINT_COLUMNS,
            " FROM setpoints WHERE state IN ('queued', 'sent', 'delivered', 'received') \
              AND valid_until <= $1 ORDER BY id",
            { postgres: " FOR UPDATE SKIP LOCKED", sqlite: "" }
        ))
        .arg(ms(now))
        .all(&mut tx)
        .await?
        .iter()
        .map(setpoint_from_row::<DB>)
        .collect::<StoreResult<Vec<_>>>()?;
        let mut expired = Vec::with_capacity(due.len());
        for before in due {
            let after = move_locked(
                &mut tx,
                before,
                SetpointState::Expired,
                &Actor::System,
                Some("no final answer before valid_until"),
                now,
            )
            .await?;
            expired.push(after);
        }
        tx.commit(self).await?;
        Ok(expired)
    }

    async fn setpoint_counts(&self) -> StoreResult<SetpointCounts> {
        sqlx::query::<DB>("SELECT state, COUNT(*) AS n FROM setpoints GROUP BY state")
            .all(&self.pool)
            .await?
            .iter()
            .map(|r| {
                let n: i64 = get::<DB, _>(r, "n")?;
                Ok((parse::<DB, _>(r, "state")?, u64::try_from(n).unwrap_or(0)))
            })
            .collect()
    }
}
