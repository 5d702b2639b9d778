//! The SCD's queries, written once and run on both backends ([`SqlStore<DB>`] for `DB` =
//! `Sqlite` or `Postgres`, see [`crate::dialect`]). Where the backends must differ (connecting,
//! the change feed's transport, the commit order of measurements and certification spans) the
//! code is in `crate::sqlite` and `crate::postgres`.
//!
//! Row locks are written into the queries (`FOR_UPDATE`, `FOR_SHARE`): PostgreSQL commits
//! concurrently and needs them so that read-then-write transactions (two decisions on one
//! grant, two deletions of the last admins, a login racing a password change) are serialised
//! on the rows that matter; SQLite needs none, its write transactions hold the one write lock
//! from their first statement.

mod accounts;
mod certification;
mod cluster;
mod grants;
pub(crate) mod rows;
mod setpoints;

use async_trait::async_trait;
use bal_core::{Actor, AuditAction, AuditDetail};
use chrono::{DateTime, Utc};
use sqlx::{Pool, Transaction};
use tokio::sync::broadcast;

use crate::dialect::{Dialect, Exec, QueryExt, first};
use crate::{Change, ChangeFeed, MeasurementStore, Store, StoreResult};

pub(crate) use crate::error::is_unique_violation;
pub(crate) use cluster::check_fence;
pub(crate) use grants::subscription_by_id;
pub(crate) use rows::ms;

/// The SCD on one backend.
pub struct SqlStore<DB: Dialect> {
    pub(crate) pool: Pool<DB>,
    pub(crate) feed: ChangeFeed,
    pub(crate) side: DB::Side,
}

impl<DB: Dialect> SqlStore<DB> {
    pub(crate) async fn begin_write(&self) -> StoreResult<Write<DB>> {
        Ok(Write {
            tx: DB::begin_write(&self.pool).await?,
            changes: Vec::new(),
        })
    }
}

/// A write transaction and the changes it will announce once committed.
pub(crate) struct Write<DB: Dialect> {
    pub(crate) tx: Transaction<'static, DB>,
    changes: Vec<Change>,
}

impl<DB: Dialect> Write<DB> {
    pub(crate) fn announce(&mut self, change: Change) {
        self.changes.push(change);
    }

    /// Commits a write whose changes are measurements only, which other processes learn of
    /// after the commit instead of by NOTIFY (see `postgres::listener::spawn_notifier`): so
    /// it needs only the feed, not the store, and can commit in a task of its own.
    pub(crate) async fn commit_measurements(self, feed: &crate::ChangeFeed) -> StoreResult<()> {
        debug_assert!(
            self.changes
                .iter()
                .all(|c| matches!(c, Change::Measurements(_)))
        );
        self.tx.commit().await?;
        feed.publish(self.changes);
        Ok(())
    }

    /// Commits, then publishes what was announced: nothing reaches the feed unless committed.
    pub(crate) async fn commit(mut self, store: &SqlStore<DB>) -> StoreResult<()> {
        DB::before_commit(&mut self.tx, &store.side, &self.changes).await?;
        self.tx.commit().await?;
        store.feed.publish(self.changes);
        Ok(())
    }
}

/// The transaction's connection, for the backend-specific queries that run in it.
impl<DB: Dialect> std::ops::Deref for Write<DB> {
    type Target = DB::Connection;
    fn deref(&self) -> &DB::Connection {
        &self.tx
    }
}

impl<DB: Dialect> std::ops::DerefMut for Write<DB> {
    fn deref_mut(&mut self) -> &mut DB::Connection {
        &mut self.tx
    }
}

impl<'c, DB: Dialect> From<&'c mut Write<DB>> for Exec<'c, DB> {
    fn from(write: &'c mut Write<DB>) -> Self {
        Exec::Conn(&mut *write.tx)
    }
}

pub(crate) async fn append_audit<DB: Dialect>(
    tx: &mut Write<DB>,
    at: DateTime<Utc>,
    actor: &Actor,
    action: AuditAction,
    object: &str,
    detail: &AuditDetail,
) -> StoreResult<()> {
    sqlx::query::<DB>(
        "INSERT INTO audit_log (at, actor, action, object, detail) VALUES ($1, $2, $3, $4, $5)",
    )
    .arg(ms(at))
    .arg(actor.to_string())
    .arg(action.as_str())
    .arg(object)
    .arg(detail.canonical_json())
    .run(tx)
    .await?;
    Ok(())
}

/// Whether the database at `pool` has a table of that name.
pub(crate) async fn table_exists<DB: Dialect>(pool: &Pool<DB>, table: &str) -> StoreResult<bool> {
    let row = sqlx::query::<DB>(crate::dialect::sql!(DB; {
        postgres: "SELECT to_regclass($1) IS NOT NULL",
        sqlite: "SELECT count(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = $1",
    }))
    .arg(table)
    .optional(pool)
    .await?;
    row.map_or(Ok(false), |r| first::<DB, bool>(&r))
}

/// The schema as this binary (whose migrations are `migrator`) sees the database at `pool`.
pub(crate) async fn schema_status<DB: Dialect>(
    pool: &Pool<DB>,
    migrator: &sqlx::migrate::Migrator,
) -> StoreResult<crate::SchemaStatus> {
    let has = |table: &'static str| table_exists(pool, table);
    let applied = if has("_sqlx_migrations").await? {
        sqlx::query::<DB>("SELECT version FROM _sqlx_migrations WHERE success ORDER BY version")
            .all(pool)
            .await?
            .iter()
            .map(first::<DB, i64>)
            .collect::<StoreResult<_>>()?
    } else {
        Vec::new()
    };
    let min_binary = if has("bal_schema").await? {
        sqlx::query::<DB>("SELECT value FROM bal_schema WHERE key = 'min_binary'")
            .optional(pool)
            .await?
            .map(|r| first::<DB, String>(&r))
            .transpose()?
    } else {
        None
    };
    Ok(crate::SchemaStatus {
        applied,
        latest_known: migrator.iter().map(|m| m.version).max().unwrap_or(0),
        min_binary,
    })
}

/// The rest of a history page's query, after the backend's start (which ends inside `WHERE`):
/// the producers, the time range, the cursor, and the order, by `key` (the column that
/// follows the backend's commit order) then id.
pub(crate) fn push_history_filters<DB: Dialect>(
    sql: &mut sqlx::QueryBuilder<DB>,
    query: &crate::MeasurementQuery,
    key: &'static str,
) {
    use crate::dialect::BuilderExt;
    use crate::store::rows::ms;
    match query.producers.as_deref() {
        // One producer: its index gives the page order without a sort.
        Some([one]) => {
            sql.push(" AND producer = ").push_arg(one.as_str());
        }
        Some(several) => {
            sql.push(" AND producer IN ")
                .push_list(several.iter().map(bal_core::Username::as_str));
        }
        None => {}
    }
    if let Some(from) = query.from {
        sql.push(" AND received_at >= ").push_arg(ms(from));
    }
    if let Some(to) = query.to {
        sql.push(" AND received_at < ").push_arg(ms(to));
    }
    if let Some(c) = query.after {
        sql.push(format_args!(" AND ({key}, id) > ("))
            .push_arg(c.key)
            .push(", ")
            .push_arg(c.id)
            .push(")");
    }
    sql.push(format_args!(" ORDER BY {key}, id LIMIT "))
        .push_arg(i64::from(query.limit));
}

/// One measurement by id (both backends' `MeasurementStore::measurement`).
pub(crate) async fn measurement_by_id<DB: Dialect>(
    pool: &Pool<DB>,
    id: i64,
) -> StoreResult<Option<bal_core::Measurement>> {
    sqlx::query::<DB>(crate::dialect::sql!(DB;
        "SELECT ", MEASUREMENT_COLUMNS, " FROM measurements WHERE id = $1"
    ))
    .arg(id)
    .optional(pool)
    .await?
    .as_ref()
    .map(rows::measurement_from_row::<DB>)
    .transpose()
}

/// The id of the stored copy of `m`, a redelivery from `origin`: the latest row of the same
/// producer and origin with the same payload, among the producer's latest rows and within the
/// redelivery window before `stamp` (both backends' `store_measurements`).
pub(crate) async fn redelivered_copy<DB: Dialect>(
    conn: &mut DB::Connection,
    m: &bal_core::NewMeasurement,
    origin: i64,
    stamp: i64,
) -> StoreResult<Option<i64>> {
    use crate::dialect::get;
    use crate::measurements::{REDELIVERY_SCAN_ROWS, REDELIVERY_WINDOW_MS};
    let latest = sqlx::query::<DB>(crate::dialect::sql!(DB;
        "SELECT id, payload_hash FROM ( \
             SELECT id, payload_hash, origin, received_at FROM measurements ",
        // SQLite's planner is told the index that reads the producer's latest rows first.
        { postgres: "", sqlite: "INDEXED BY measurements_by_producer_time " },
        "WHERE producer = $1 ORDER BY received_at DESC, id DESC LIMIT $2) AS latest \
         WHERE origin = $3 AND received_at >= $4 ORDER BY id DESC LIMIT 1"
    ))
    .arg(m.producer.as_str())
    .arg(REDELIVERY_SCAN_ROWS)
    .arg(origin)
    .arg(stamp - REDELIVERY_WINDOW_MS)
    .optional(Exec::Conn(conn))
    .await?;
    let Some(row) = latest else { return Ok(None) };
    let hash: Vec<u8> = get::<DB, _>(&row, "payload_hash")?;
    if hash[..] == m.payload_hash[..] {
        Ok(Some(get::<DB, i64>(&row, "id")?))
    } else {
        Ok(None)
    }
}

/// What each backend writes its own way in [`MeasurementStore`]: the ingest and the history
/// page, which follow the backend's commit order (see `crate::sqlite` and `crate::postgres`).
///
/// Plain `async fn`s (not `#[async_trait]`): only the generic code below calls them, so their
/// futures live inside [`MeasurementStore`]'s instead of in a second heap box per call
/// (callgrind counted that box, allocation and copy, on every ingest commit).
pub(crate) trait MeasurementOrder {
    fn write_batch(
        &self,
        batch: &[bal_core::NewMeasurement],
    ) -> impl std::future::Future<Output = StoreResult<crate::StoredBatch>> + Send;
    /// See [`MeasurementStore::open_batch`].
    fn open_batch(
        &self,
        batch: &[bal_core::NewMeasurement],
    ) -> impl std::future::Future<Output = StoreResult<crate::WrittenBatch>> + Send;
    /// A page of a query that names at least one producer (or all).
    fn history_page(
        &self,
        query: &crate::MeasurementQuery,
    ) -> impl std::future::Future<Output = StoreResult<crate::MeasurementPage>> + Send;
}

#[async_trait]
impl<DB: Dialect> MeasurementStore for SqlStore<DB>
where
    SqlStore<DB>: MeasurementOrder,
{
    async fn store_measurements(
        &self,
        batch: &[bal_core::NewMeasurement],
    ) -> StoreResult<crate::StoredBatch> {
        self.write_batch(batch).await
    }

    async fn open_batch(
        &self,
        batch: &[bal_core::NewMeasurement],
    ) -> StoreResult<crate::WrittenBatch> {
        MeasurementOrder::open_batch(self, batch).await
    }

    async fn measurement(&self, id: i64) -> StoreResult<Option<bal_core::Measurement>> {
        measurement_by_id(&self.pool, id).await
    }

    async fn measurements(
        &self,
        query: &crate::MeasurementQuery,
    ) -> StoreResult<crate::MeasurementPage> {
        match crate::MeasurementPage::nothing_readable(query) {
            Some(empty) => Ok(empty),
            None => self.history_page(query).await,
        }
    }
}

#[async_trait]
impl<DB: Dialect> Store for SqlStore<DB>
where
    SqlStore<DB>: MeasurementStore,
{
    fn backend(&self) -> crate::Backend {
        DB::BACKEND
    }

    fn pool_usage(&self) -> crate::PoolUsage {
        crate::PoolUsage {
            open: self.pool.size(),
            idle: self.pool.num_idle(),
            max: self.pool.options().get_max_connections(),
        }
    }

    async fn ping(&self) -> StoreResult<()> {
        sqlx::query::<DB>("SELECT 1").run(&self.pool).await?;
        Ok(())
    }

    fn changes(&self) -> broadcast::Receiver<Change> {
        self.feed.subscribe()
    }

    fn watch_measurements(&self) -> crate::MeasurementWatch {
        self.feed.watch_measurements()
    }

    async fn check_master_key(&self, fingerprint: &str) -> StoreResult<()> {
        sqlx::query::<DB>(
            "INSERT INTO bal_schema (key, value) VALUES ('master_key', $1) \
             ON CONFLICT (key) DO NOTHING",
        )
        .arg(fingerprint)
        .run(&self.pool)
        .await?;
        let row = sqlx::query::<DB>("SELECT value FROM bal_schema WHERE key = 'master_key'")
            .optional(&self.pool)
            .await?
            .ok_or_else(|| crate::error::corrupt("bal_schema has no master_key"))?;
        let stored: String = first::<DB, _>(&row)?;
        if stored == fingerprint {
            Ok(())
        } else {
            Err(crate::master_key_mismatch(&stored, fingerprint))
        }
    }
}
