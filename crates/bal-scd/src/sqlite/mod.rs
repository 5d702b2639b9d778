//! The SQLite backend: one file in WAL mode, the BAL's embedded default.
//!
//! Writes open `BEGIN IMMEDIATE` transactions so that two writers (tasks or processes) queue on
//! the file lock instead of failing halfway with `SQLITE_BUSY` when a read lock would have to be
//! upgraded. That single writer is what the read-then-write transactions and the certification
//! spans rely on here; the PostgreSQL backend gets the same guarantees with row locks and
//! transaction ids. The queries both backends share are in `crate::store`; what is here is
//! SQLite's own: opening the file, and the commit order of measurements and certification.

mod export;
mod measurements;

use std::str::FromStr;
use std::time::Duration;

use sqlx::Sqlite;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use crate::schema::{self, Plan, SchemaStatus};
use crate::store::Write;
use crate::{ChangeFeed, ConnectOptions, SqliteStore, StoreError, StoreResult};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// Migrations edited after release (see `schema::accept_rewritten`): 0004 lost the embedded
/// chain's tables to bal-ledger's own migrations.
const REWRITTEN: &[(i64, &str)] = &[(
    4,
    "26b1ae33b6bfd86f1329e24212f34098656d4852db57ca7cb770444ab33c761d7219c5e985a1cad48515ecaca5cfdef6",
)];

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
        let pool = pool(url, options).await?;
        let store = Self {
            pool,
            feed: ChangeFeed::new(),
            side: (),
        };
        schema::accept_rewritten(&store.pool, &MIGRATOR, REWRITTEN, options.migrate).await?;
        let status = store.schema().await?;
        if schema::plan(&MIGRATOR, &status, options.migrate, "SQLite")? == Plan::Migrate {
            MIGRATOR.run(&store.pool).await?;
        }
        Ok(store)
    }

    /// The schema as this binary sees it.
    pub async fn schema(&self) -> StoreResult<SchemaStatus> {
        crate::store::schema_status(&self.pool, &MIGRATOR).await
    }
}

/// Opens (creating if needed) the file at `url` in WAL mode, for the SCD and for the
/// database's other tenants (`crate::open_pool`).
pub(crate) async fn pool(url: &str, options: &ConnectOptions) -> StoreResult<SqlitePool> {
    let connect = SqliteConnectOptions::from_str(url)
        .map_err(|e| StoreError::Config(format!("invalid SQLite URL: {e}")))?
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        // With WAL, NORMAL loses nothing on a process crash (kill -9); only an OS crash or
        // power cut can drop the last commits. FULL would fsync on every commit.
        .synchronous(SqliteSynchronous::Normal)
        .foreign_keys(true)
        .busy_timeout(Duration::from_secs(10));
    Ok(SqlitePoolOptions::new()
        .max_connections(8)
        .before_acquire(|conn, _| Box::pin(usable(conn)))
        .acquire_timeout(options.acquire_timeout.max(Duration::from_secs(10)))
        .connect_with(connect)
        .await?)
}

/// The database's clock (ms) for the rows committed now, never before the stamp of the
/// last row committed (the highest id: ids follow commit order under the write lock). So
/// stamps follow commit order for every producer at once, even when the system clock steps
/// back or several processes write; history pages go by producer in reception-time order.
/// One query and one primary-key seek on every ingest commit, instead of a query per
/// producer in the batch.
pub(crate) async fn stamp(tx: &mut Write<Sqlite>) -> StoreResult<i64> {
    let stamp: i64 = sqlx::query_scalar(
            "SELECT MAX(CAST(unixepoch('subsec') * 1000 AS INTEGER), \
                        COALESCE((SELECT received_at FROM measurements ORDER BY id DESC LIMIT 1), 0))",
        )
        .fetch_one(&mut **tx)
        .await?;
    Ok(stamp)
}
