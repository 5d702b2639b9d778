//! [`ClusterStore`] on SQLite: the registry and leases, on the clock SQLite reads.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::SqliteConnection;

use super::SqliteStore;
use crate::cluster::{Fence, Lease, MqttRole, Replica, ReplicaInfo, fence_lost, ttl_ms};
use crate::rows::time;
use crate::{ClusterStore, StoreResult};

#[async_trait]
impl ClusterStore for SqliteStore {
    async fn heartbeat(&self, r: &ReplicaInfo, ttl: Duration) -> StoreResult<()> {
        // A row that had expired belongs to an earlier life of this replica: start afresh.
        sqlx::query(
            "INSERT INTO replicas (id, version, embedded_broker, embedded_chain, mqtt, \
             started_at, seen_at, expires_at) VALUES (?1, ?2, ?3, ?4, ?6, CAST(unixepoch('subsec') * 1000 AS INTEGER), CAST(unixepoch('subsec') * 1000 AS INTEGER), \
             CAST(unixepoch('subsec') * 1000 AS INTEGER) + ?5) \
             ON CONFLICT (id) DO UPDATE SET version = EXCLUDED.version, \
             embedded_broker = EXCLUDED.embedded_broker, embedded_chain = EXCLUDED.embedded_chain, \
             mqtt = EXCLUDED.mqtt, \
             started_at = CASE WHEN replicas.expires_at <= EXCLUDED.seen_at \
                          THEN EXCLUDED.started_at ELSE replicas.started_at END, \
             seen_at = EXCLUDED.seen_at, expires_at = EXCLUDED.expires_at",
        )
        .bind(&r.id)
        .bind(&r.version)
        .bind(r.mqtt == MqttRole::Embedded)
        .bind(r.embedded_chain)
        .bind(ttl_ms(ttl))
        .bind(r.mqtt.to_column())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn live_replicas(&self) -> StoreResult<Vec<Replica>> {
        let rows: Vec<(String, String, bool, bool, Option<String>, i64, i64)> = sqlx::query_as(
            "SELECT id, version, embedded_broker, embedded_chain, mqtt, started_at, seen_at \
             FROM replicas WHERE expires_at > CAST(unixepoch('subsec') * 1000 AS INTEGER) ORDER BY id",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(
                |(id, version, embedded_broker, embedded_chain, mqtt, started, seen)| {
                    Ok(Replica {
                        info: ReplicaInfo {
                            id,
                            version,
                            mqtt: MqttRole::from_columns(mqtt.as_deref(), embedded_broker),
                            embedded_chain,
                        },
                        started_at: time(started)?,
                        seen_at: time(seen)?,
                    })
                },
            )
            .collect()
    }

    async fn leave(&self, id: &str) -> StoreResult<bool> {
        let done = sqlx::query("DELETE FROM replicas WHERE id = ?")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn acquire_lease(
        &self,
        lease: &'static str,
        holder: &str,
        ttl: Duration,
    ) -> StoreResult<Option<Fence>> {
        // One writer at a time: the upsert waits for a transaction that checked the fence
        // (`check_fence`, under BEGIN IMMEDIATE) to commit first.
        let epoch: Option<i64> = sqlx::query_scalar(
            "INSERT INTO leases (name, holder, epoch, expires_at) \
             VALUES (?, ?, 1, CAST(unixepoch('subsec') * 1000 AS INTEGER) + ?) \
             ON CONFLICT (name) DO UPDATE SET \
             epoch = CASE WHEN leases.holder = EXCLUDED.holder \
                          AND leases.expires_at > CAST(unixepoch('subsec') * 1000 AS INTEGER) \
                     THEN leases.epoch ELSE leases.epoch + 1 END, \
             holder = EXCLUDED.holder, expires_at = EXCLUDED.expires_at \
             WHERE leases.holder = EXCLUDED.holder OR leases.expires_at <= CAST(unixepoch('subsec') * 1000 AS INTEGER) \
             RETURNING epoch",
        )
        .bind(lease)
        .bind(holder)
        .bind(ttl_ms(ttl))
        .fetch_optional(&self.pool)
        .await?;
        Ok(epoch.map(|epoch| Fence {
            lease,
            holder: holder.to_owned(),
            epoch,
        }))
    }

    async fn release_lease(&self, f: &Fence) -> StoreResult<()> {
        sqlx::query(
            "UPDATE leases SET expires_at = CAST(unixepoch('subsec') * 1000 AS INTEGER) \
             WHERE name = ? AND holder = ? AND epoch = ? AND expires_at > CAST(unixepoch('subsec') * 1000 AS INTEGER)",
        )
        .bind(f.lease)
        .bind(&f.holder)
        .bind(f.epoch)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn lease(&self, lease: &'static str) -> StoreResult<Option<Lease>> {
        let row: Option<(String, i64, i64)> =
            sqlx::query_as("SELECT holder, epoch, expires_at FROM leases WHERE name = ?")
                .bind(lease)
                .fetch_optional(&self.pool)
                .await?;
        row.map(|(holder, epoch, expires)| {
            Ok(Lease {
                holder,
                epoch,
                expires_at: time(expires)?,
            })
        })
        .transpose()
    }
    async fn broker_pushed(&self) -> StoreResult<HashMap<String, String>> {
        let rows: Vec<(String, String)> =
            sqlx::query_as("SELECT username, sealed FROM broker_pushed")
                .fetch_all(&self.pool)
                .await?;
        Ok(rows.into_iter().collect())
    }

    async fn record_broker_pushed(
        &self,
        pushed: &HashMap<String, String>,
        fence: &Fence,
    ) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        check_fence(&mut tx, fence).await?;
        sqlx::query("DELETE FROM broker_pushed")
            .execute(&mut *tx)
            .await?;
        for (name, sealed) in pushed {
            sqlx::query("INSERT INTO broker_pushed (username, sealed) VALUES (?, ?)")
                .bind(name)
                .bind(sealed)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit(&self.feed).await?;
        Ok(())
    }
}

/// Fails unless `fence` holds its lease now. Called in a write transaction (BEGIN IMMEDIATE), so
/// no other holder can take the lease before this transaction ends.
pub(super) async fn check_fence(conn: &mut SqliteConnection, f: &Fence) -> StoreResult<()> {
    let held: Option<i32> = sqlx::query_scalar(
        "SELECT 1 FROM leases WHERE name = ? AND holder = ? AND epoch = ? \
         AND expires_at > CAST(unixepoch('subsec') * 1000 AS INTEGER)",
    )
    .bind(f.lease)
    .bind(&f.holder)
    .bind(f.epoch)
    .fetch_optional(conn)
    .await?;
    held.map(|_| ()).ok_or_else(|| fence_lost(f))
}
