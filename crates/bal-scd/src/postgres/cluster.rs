//! [`ClusterStore`] on PostgreSQL: the registry and leases on the database's clock.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::PgConnection;

use super::PgStore;
use crate::cluster::{Fence, Lease, MqttRole, Replica, ReplicaInfo, fence_lost, ttl_ms};
use crate::rows::time;
use crate::{ClusterStore, StoreResult};

#[async_trait]
impl ClusterStore for PgStore {
    async fn heartbeat(&self, r: &ReplicaInfo, ttl: Duration) -> StoreResult<()> {
        // A row that had expired belongs to an earlier life of this replica: start afresh.
        sqlx::query(
            "INSERT INTO replicas (id, version, embedded_broker, embedded_chain, mqtt, \
             started_at, seen_at, expires_at) VALUES ($1, $2, $3, $4, $6, bal_now_ms(), bal_now_ms(), \
             bal_now_ms() + $5) \
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
             FROM replicas WHERE expires_at > bal_now_ms() ORDER BY id",
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
        let done = sqlx::query("DELETE FROM replicas WHERE id = $1")
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
        // The row lock of ON CONFLICT serialises acquirers, and waits for a transaction that
        // checked the fence (FOR SHARE, `check_fence`) to commit first.
        let epoch: Option<i64> = sqlx::query_scalar(
            "INSERT INTO leases (name, holder, epoch, expires_at) \
             VALUES ($1, $2, 1, bal_now_ms() + $3) \
             ON CONFLICT (name) DO UPDATE SET \
             epoch = CASE WHEN leases.holder = EXCLUDED.holder \
                          AND leases.expires_at > bal_now_ms() \
                     THEN leases.epoch ELSE leases.epoch + 1 END, \
             holder = EXCLUDED.holder, expires_at = EXCLUDED.expires_at \
             WHERE leases.holder = EXCLUDED.holder OR leases.expires_at <= bal_now_ms() \
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
            "UPDATE leases SET expires_at = bal_now_ms() \
             WHERE name = $1 AND holder = $2 AND epoch = $3 AND expires_at > bal_now_ms()",
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
            sqlx::query_as("SELECT holder, epoch, expires_at FROM leases WHERE name = $1")
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
        let (names, sealed): (Vec<&str>, Vec<&str>) =
            pushed.iter().map(|(n, s)| (n.as_str(), s.as_str())).unzip();
        sqlx::query(
            "INSERT INTO broker_pushed (username, sealed) \
             SELECT * FROM unnest($1::text[], $2::text[])",
        )
        .bind(names)
        .bind(sealed)
        .execute(&mut *tx)
        .await?;
        tx.commit(self).await?;
        Ok(())
    }
}

/// Fails unless `fence` holds its lease now, and keeps it held until this transaction ends: the
/// shared row lock makes a new holder's `acquire_lease` wait for the commit.
pub(super) async fn check_fence(conn: &mut PgConnection, f: &Fence) -> StoreResult<()> {
    let held: Option<i32> = sqlx::query_scalar(
        "SELECT 1 FROM leases WHERE name = $1 AND holder = $2 AND epoch = $3 \
         AND expires_at > bal_now_ms() FOR SHARE",
    )
    .bind(f.lease)
    .bind(&f.holder)
    .bind(f.epoch)
    .fetch_optional(conn)
    .await?;
    held.map(|_| ()).ok_or_else(|| fence_lost(f))
}
