//! The SQLite backend: one file in WAL mode, the BAL's embedded default.
//!
//! Writes open `BEGIN IMMEDIATE` transactions so that two writers (tasks or processes) queue on
//! the file lock instead of failing halfway with `SQLITE_BUSY` when a read lock would have to be
//! upgraded. That single writer is what the read-then-write transactions and the certification
//! spans rely on here; the PostgreSQL backend gets the same guarantees with row locks and
//! transaction ids. SQLite's SQL stays in this module.

mod accounts;
mod certification;
mod cluster;
mod export;
mod grants;
mod measurements;

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{Sqlite, SqliteConnection};
use tokio::sync::broadcast;

use crate::rows::row_mapping;
use crate::schema::{self, Plan, SchemaStatus};
use crate::{Backend, Change, ChangeFeed, ConnectOptions, Store, StoreError, StoreResult};
use bal_core::{Actor, AuditAction, AuditDetail};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

row_mapping!(SqliteRow, Sqlite);

pub struct SqliteStore {
    pool: SqlitePool,
    feed: ChangeFeed,
}

/// Whether a pooled connection may be handed out again.
///
/// A COMMIT that fails for lack of room (`SQLITE_FULL`) is rolled back by SQLite itself, but
/// sqlx still counts the transaction as open: every later BEGIN on that connection fails
/// ("begin_with at non-zero transaction depth"), and the writer would stay broken after the
/// disk has room again (the full-disk test caught it). Such a connection is closed instead.
/// A depth of 0 is the common case and costs nothing to read. Otherwise it may be a rollback
/// still queued from a dropped transaction: the ping goes through the connection's worker
/// after it, so a depth still open afterwards is a real leftover.
async fn usable(conn: &mut sqlx::SqliteConnection) -> Result<bool, sqlx::Error> {
    use sqlx::Connection;
    use sqlx_core::transaction::TransactionManager;
    let depth = |c: &sqlx::SqliteConnection| {
        <sqlx::Sqlite as sqlx::Database>::TransactionManager::get_transaction_depth(c)
    };
    if depth(conn) == 0 {
        return Ok(true);
    }
    conn.ping().await?;
    Ok(depth(conn) == 0)
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `url` and brings its schema up to date.
    pub async fn connect(url: &str) -> StoreResult<Self> {
        Self::connect_with(url, &ConnectOptions::default()).await
    }

    /// Opens the database at `url` (creating an empty one if needed); an outdated schema is
    /// migrated or refused as `options.migrate` says.
    pub async fn connect_with(url: &str, options: &ConnectOptions) -> StoreResult<Self> {
        let connect = SqliteConnectOptions::from_str(url)
            .map_err(|e| StoreError::Config(format!("invalid SQLite URL: {e}")))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // With WAL, NORMAL loses nothing on a process crash (kill -9); only an OS crash or
            // power cut can drop the last commits. FULL would fsync on every commit.
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .before_acquire(|conn, _| Box::pin(usable(conn)))
            .acquire_timeout(options.acquire_timeout.max(Duration::from_secs(10)))
            .connect_with(connect)
            .await?;
        let store = Self {
            pool,
            feed: ChangeFeed::new(),
        };
        let status = store.schema().await?;
        if schema::plan(&MIGRATOR, &status, options.migrate, "SQLite")? == Plan::Migrate {
            MIGRATOR.run(&store.pool).await?;
        }
        Ok(store)
    }

    /// The schema as this binary sees it.
    pub async fn schema(&self) -> StoreResult<SchemaStatus> {
        let has = |table: &'static str| {
            sqlx::query_scalar::<_, i64>(
                "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = ?",
            )
            .bind(table)
            .fetch_one(&self.pool)
        };
        let applied = if has("_sqlx_migrations").await? > 0 {
            sqlx::query_scalar(
                "SELECT version FROM _sqlx_migrations WHERE success ORDER BY version",
            )
            .fetch_all(&self.pool)
            .await?
        } else {
            Vec::new()
        };
        let min_binary = if has("bal_schema").await? > 0 {
            sqlx::query_scalar("SELECT value FROM bal_schema WHERE key = 'min_binary'")
                .fetch_optional(&self.pool)
                .await?
        } else {
            None
        };
        Ok(SchemaStatus {
            applied,
            latest_known: MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0),
            min_binary,
        })
    }

    async fn begin_write(&self) -> StoreResult<Write> {
        Ok(Write {
            tx: self.pool.begin_with("BEGIN IMMEDIATE").await?,
            changes: Vec::new(),
        })
    }
}

/// A write transaction and the changes it will announce once committed.
pub(crate) struct Write {
    tx: sqlx::Transaction<'static, Sqlite>,
    changes: Vec<Change>,
}

impl Write {
    pub(crate) fn announce(&mut self, change: Change) {
        self.changes.push(change);
    }

    /// Commits, then publishes what was announced: nothing reaches the feed unless committed.
    pub(crate) async fn commit(self, feed: &ChangeFeed) -> StoreResult<()> {
        self.tx.commit().await?;
        feed.publish(self.changes);
        Ok(())
    }

    /// The database's clock (ms) for the rows committed now, never before the stamp of the
    /// last row committed (the highest id: ids follow commit order under the write lock). So
    /// stamps follow commit order for every producer at once, even when the system clock steps
    /// back or several processes write; history pages go by producer in reception-time order.
    /// One query and one primary-key seek on every ingest commit, instead of a query per
    /// producer in the batch.
    pub(crate) async fn stamp(&mut self) -> StoreResult<i64> {
        let stamp: i64 = sqlx::query_scalar(
            "SELECT MAX(CAST(unixepoch('subsec') * 1000 AS INTEGER), \
                        COALESCE((SELECT received_at FROM measurements ORDER BY id DESC LIMIT 1), 0))",
        )
        .fetch_one(&mut **self)
        .await?;
        Ok(stamp)
    }
}

impl std::ops::Deref for Write {
    type Target = SqliteConnection;
    fn deref(&self) -> &SqliteConnection {
        &self.tx
    }
}

impl std::ops::DerefMut for Write {
    fn deref_mut(&mut self) -> &mut SqliteConnection {
        &mut self.tx
    }
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_unique_violation())
}

async fn append_audit(
    conn: &mut SqliteConnection,
    at: DateTime<Utc>,
    actor: &Actor,
    action: AuditAction,
    object: &str,
    detail: &AuditDetail,
) -> StoreResult<()> {
    sqlx::query("INSERT INTO audit_log (at, actor, action, object, detail) VALUES (?, ?, ?, ?, ?)")
        .bind(crate::rows::ms(at))
        .bind(actor.to_string())
        .bind(action.as_str())
        .bind(object)
        .bind(detail.canonical_json())
        .execute(conn)
        .await?;
    Ok(())
}

#[async_trait]
impl Store for SqliteStore {
    fn backend(&self) -> Backend {
        Backend::Sqlite
    }

    fn pool(&self) -> crate::Pool {
        crate::Pool::Sqlite(self.pool.clone())
    }

    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    fn changes(&self) -> broadcast::Receiver<Change> {
        self.feed.subscribe()
    }

    fn watch_measurements(&self) -> crate::MeasurementWatch {
        self.feed.watch_measurements()
    }

    async fn check_master_key(&self, fingerprint: &str) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO bal_schema (key, value) VALUES ('master_key', ?) \
             ON CONFLICT (key) DO NOTHING",
        )
        .bind(fingerprint)
        .execute(&self.pool)
        .await?;
        let stored: String =
            sqlx::query_scalar("SELECT value FROM bal_schema WHERE key = 'master_key'")
                .fetch_one(&self.pool)
                .await?;
        if stored == fingerprint {
            Ok(())
        } else {
            Err(crate::master_key_mismatch(&stored, fingerprint))
        }
    }
}
