//! [`ClusterStore`] on either backend: the registry and leases, on the database's clock.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::QueryBuilder;

use super::rows::time;
use super::{SqlStore, Write};
use crate::cluster::{Fence, Lease, MqttRole, Replica, ReplicaInfo, fence_lost, ttl_ms};
use crate::dialect::{BuilderExt, Dialect, QueryExt, first, get, sql};
use crate::{ClusterStore, StoreResult};

#[async_trait]
impl<DB: Dialect> ClusterStore for SqlStore<DB> {
    async fn heartbeat(&self, r: &ReplicaInfo, ttl: Duration) -> StoreResult<()> {
        // A row that had expired belongs to an earlier life of this replica: start afresh.
        sqlx::query::<DB>(sql!(DB;
            "INSERT INTO replicas (id, version, embedded_broker, embedded_chain, mqtt, \
             started_at, seen_at, expires_at) VALUES ($1, $2, $3, $4, $6, ",
            NOW, ", ", NOW, ", ", NOW, " + $5) \
             ON CONFLICT (id) DO UPDATE SET version = EXCLUDED.version, \
             embedded_broker = EXCLUDED.embedded_broker, embedded_chain = EXCLUDED.embedded_chain, \
             mqtt = EXCLUDED.mqtt, \
             started_at = CASE WHEN replicas.expires_at <= EXCLUDED.seen_at \
                          THEN EXCLUDED.started_at ELSE replicas.started_at END, \
             seen_at = EXCLUDED.seen_at, expires_at = EXCLUDED.expires_at"
        ))
        .arg(r.id.as_str())
        .arg(r.version.as_str())
        .arg(r.mqtt == MqttRole::Embedded)
        .arg(r.embedded_chain)
        .arg(ttl_ms(ttl))
        .arg(r.mqtt.to_column())
        .run(&self.pool)
        .await?;
        Ok(())
    }

    async fn live_replicas(&self) -> StoreResult<Vec<Replica>> {
        let rows = sqlx::query::<DB>(sql!(DB;
            "SELECT id, version, embedded_broker, embedded_chain, mqtt, started_at, seen_at \
             FROM replicas WHERE expires_at > ", NOW, " ORDER BY id"
        ))
        .all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                let mqtt: Option<String> = get::<DB, _>(row, "mqtt")?;
                Ok(Replica {
                    info: ReplicaInfo {
                        id: get::<DB, _>(row, "id")?,
                        version: get::<DB, _>(row, "version")?,
                        mqtt: MqttRole::from_columns(
                            mqtt.as_deref(),
                            get::<DB, _>(row, "embedded_broker")?,
                        ),
                        embedded_chain: get::<DB, _>(row, "embedded_chain")?,
                    },
                    started_at: time(get::<DB, _>(row, "started_at")?)?,
                    seen_at: time(get::<DB, _>(row, "seen_at")?)?,
                })
            })
            .collect()
    }

    async fn leave(&self, id: &str) -> StoreResult<bool> {
        let done = sqlx::query::<DB>("DELETE FROM replicas WHERE id = $1")
            .arg(id)
            .run(&self.pool)
            .await?;
        Ok(done > 0)
    }

    async fn acquire_lease(
        &self,
        lease: &'static str,
        holder: &str,
        ttl: Duration,
    ) -> StoreResult<Option<Fence>> {
        // PostgreSQL: the row lock of ON CONFLICT serialises acquirers, and waits for a
        // transaction that checked the fence (FOR SHARE, `check_fence`) to commit first.
        // SQLite: one writer at a time, so the upsert waits for such a transaction (under
        // BEGIN IMMEDIATE) to commit first.
        let row = sqlx::query::<DB>(sql!(DB;
            "INSERT INTO leases (name, holder, epoch, expires_at) \
             VALUES ($1, $2, 1, ", NOW, " + $3) \
             ON CONFLICT (name) DO UPDATE SET \
             epoch = CASE WHEN leases.holder = EXCLUDED.holder \
                          AND leases.expires_at > ", NOW, " \
                     THEN leases.epoch ELSE leases.epoch + 1 END, \
             holder = EXCLUDED.holder, expires_at = EXCLUDED.expires_at \
             WHERE leases.holder = EXCLUDED.holder OR leases.expires_at <= ", NOW, " \
             RETURNING epoch"
        ))
        .arg(lease)
        .arg(holder)
        .arg(ttl_ms(ttl))
        .optional(&self.pool)
        .await?;
        row.map(|row| {
            Ok(Fence {
                lease,
                holder: holder.to_owned(),
                epoch: first::<DB, i64>(&row)?,
            })
        })
        .transpose()
    }

    async fn release_lease(&self, f: &Fence) -> StoreResult<()> {
        sqlx::query::<DB>(sql!(DB;
            "UPDATE leases SET expires_at = ", NOW, " \
             WHERE name = $1 AND holder = $2 AND epoch = $3 AND expires_at > ", NOW
        ))
        .arg(f.lease)
        .arg(f.holder.as_str())
        .arg(f.epoch)
        .run(&self.pool)
        .await?;
        Ok(())
    }

    async fn lease(&self, lease: &'static str) -> StoreResult<Option<Lease>> {
        let row = sqlx::query::<DB>("SELECT holder, epoch, expires_at FROM leases WHERE name = $1")
            .arg(lease)
            .optional(&self.pool)
            .await?;
        row.map(|row| {
            Ok(Lease {
                holder: get::<DB, _>(&row, "holder")?,
                epoch: get::<DB, _>(&row, "epoch")?,
                expires_at: time(get::<DB, _>(&row, "expires_at")?)?,
            })
        })
        .transpose()
    }

    async fn broker_pushed(&self) -> StoreResult<HashMap<String, String>> {
        sqlx::query::<DB>("SELECT username, sealed FROM broker_pushed")
            .all(&self.pool)
            .await?
            .iter()
            .map(|row| Ok((get::<DB, _>(row, "username")?, get::<DB, _>(row, "sealed")?)))
            .collect()
    }

    async fn record_broker_pushed(
        &self,
        pushed: &HashMap<String, String>,
        fence: &Fence,
    ) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        check_fence(&mut tx, fence).await?;
        sqlx::query::<DB>("DELETE FROM broker_pushed")
            .run(&mut tx)
            .await?;
        // Multi-row inserts, far below either backend's limit of parameters per statement.
        let pushed: Vec<_> = pushed.iter().collect();
        for chunk in pushed.chunks(500) {
            let mut insert =
                QueryBuilder::<DB>::new("INSERT INTO broker_pushed (username, sealed) VALUES ");
            for (i, (name, sealed)) in chunk.iter().enumerate() {
                insert.push(if i == 0 { "(" } else { ", (" });
                insert
                    .push_arg(name.as_str())
                    .push(", ")
                    .push_arg(sealed.as_str())
                    .push(")");
            }
            insert.build().run(&mut tx).await?;
        }
        tx.commit(self).await?;
        Ok(())
    }
}

/// Fails unless `fence` holds its lease now, and keeps it held until this transaction ends:
/// on PostgreSQL the shared row lock makes a new holder's `acquire_lease` wait for the commit;
/// on SQLite the transaction holds the one write lock.
pub(crate) async fn check_fence<DB: Dialect>(tx: &mut Write<DB>, f: &Fence) -> StoreResult<()> {
    let held = sqlx::query::<DB>(sql!(DB;
        "SELECT 1 FROM leases WHERE name = $1 AND holder = $2 AND epoch = $3 \
         AND expires_at > ", NOW, FOR_SHARE
    ))
    .arg(f.lease)
    .arg(f.holder.as_str())
    .arg(f.epoch)
    .optional(tx)
    .await?;
    held.map(|_| ()).ok_or_else(|| fence_lost(f))
}
