//! The PostgreSQL backend: for production, and for several BAL processes on one database.
//!
//! PostgreSQL commits concurrently, so nothing here leans on a single writer:
//! - read-then-write transactions lock the rows they read (`SELECT ... FOR UPDATE`), so two
//!   decisions on one grant, two deletions of the last admins, or a login racing a password
//!   change are serialised on the rows that matter and each sees the other's result;
//! - certification and history paging order rows by the id of the transaction that wrote them
//!   and only go up to the oldest transaction still running (see `crate::certification`);
//! - reception times are the database's clock;
//! - every committed change is also sent with `NOTIFY` in its own transaction (so it is
//!   delivered if and only if the change commits), carrying ids only; [`listener`] turns other
//!   processes' notifications back into changes.
//!
//! TLS is set in the URL (`sslmode=require`, or `verify-full` with `sslrootcert=...`).
//! The queries both backends share are in `crate::store`; what is here is PostgreSQL's own:
//! connecting, the change feed's transport, and the commit order of measurements and
//! certification.

mod certification;

pub(crate) use certification::{lock_batches, snapshot};
mod import;
mod listener;
mod measurements;

use std::str::FromStr;

use sqlx::Postgres;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow};

use crate::schema::{self, Plan, SchemaStatus};
use crate::{Change, ChangeFeed, ConnectOptions, PgStore, StoreError, StoreResult};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// Migrations edited after release (see `schema::accept_rewritten`): 0001 lost the embedded
/// chain's tables to bal-ledger's own migrations.
const REWRITTEN: &[(i64, &str)] = &[(
    1,
    "57afb5fc6e1a2f59964c2b177f60c3531b147c390ce20085db6901857c9f2616a9ee1ea03a6d35e22162d4ff2b9fc815",
)];

/// A column of a PostgreSQL row, for the queries only PostgreSQL runs.
pub(crate) fn get<'r, T>(row: &'r PgRow, column: &str) -> StoreResult<T>
where
    T: sqlx::Decode<'r, Postgres> + sqlx::Type<Postgres>,
{
    Ok(sqlx::Row::try_get(row, column)?)
}

/// The channel every BAL process on the database listens on.
const CHANNEL: &str = "bal_changes";

/// What a store on PostgreSQL holds besides its pool and feed.
pub struct Side {
    /// Tells this process's own notifications from other processes'.
    origin: String,
    /// Other processes' notices of stored measurements, sent after commit (see
    /// `listener::spawn_notifier`).
    measurement_notices: tokio::sync::mpsc::UnboundedSender<Vec<i64>>,
    /// Stop the listener and the notifier with the store.
    _listener: listener::Handle,
    _notifier: listener::Handle,
}

impl PgStore {
    /// Connects to the database at `url`; an outdated schema is migrated or refused as
    /// `options.migrate` says. Unreachable servers, wrong credentials and a schema too new are
    /// errors here, before anything is served.
    pub async fn connect(url: &str, options: &ConnectOptions) -> StoreResult<Self> {
        let pool = pool(url, options).await?;
        schema::accept_rewritten(&pool, &MIGRATOR, REWRITTEN, options.migrate).await?;
        let status = schema_status(&pool).await?;
        if schema::plan(&MIGRATOR, &status, options.migrate, "PostgreSQL")? == Plan::Migrate {
            MIGRATOR.run(&pool).await?;
        }
        let feed = ChangeFeed::new();
        let origin = format!("{:016x}", rand_u64());
        let handle = listener::spawn(pool.clone(), feed.clone(), origin.clone()).await?;
        let (measurement_notices, notices) = tokio::sync::mpsc::unbounded_channel();
        let notifier = listener::spawn_notifier(pool.clone(), origin.clone(), notices);
        Ok(Self {
            pool,
            feed,
            side: Side {
                origin,
                measurement_notices,
                _listener: handle,
                _notifier: notifier,
            },
        })
    }

    /// The schema as this binary sees it.
    pub async fn schema(&self) -> StoreResult<SchemaStatus> {
        schema_status(&self.pool).await
    }
}

/// Connects to the server at `url`, for the SCD and for the database's other tenants
/// (`crate::open_pool`).
pub(crate) async fn pool(url: &str, options: &ConnectOptions) -> StoreResult<PgPool> {
    let connect = PgConnectOptions::from_str(url).map_err(|e| {
        StoreError::Config(format!("invalid PostgreSQL URL: {}", scrub(&e.to_string())))
    })?;
    // sqlx (0.9.1 and later) turns Nagle's algorithm off on its TCP connections itself.
    Ok(PgPoolOptions::new()
        .max_connections(options.max_connections.max(2))
        .acquire_timeout(options.acquire_timeout)
        .connect_with(connect)
        .await?)
}

async fn schema_status(pool: &PgPool) -> StoreResult<SchemaStatus> {
    crate::store::schema_status(pool, &MIGRATOR).await
}

/// Removes anything that looks like a password from a message about a URL.
fn scrub(text: &str) -> String {
    match (text.find("://"), text.find('@')) {
        (Some(s), Some(at)) if at > s => format!("{}://<redacted>{}", &text[..s], &text[at..]),
        _ => text.to_owned(),
    }
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    h.write_u128(now.map_or(0, |d| d.as_nanos()));
    h.write_u32(std::process::id());
    h.finish()
}

/// Sends the changes of users and grants a write transaction announces to the other processes,
/// in that transaction (PostgreSQL delivers a NOTIFY at commit, or never).
pub(crate) async fn notify(
    tx: &mut sqlx::Transaction<'static, Postgres>,
    side: &Side,
    changes: &[Change],
) -> StoreResult<()> {
    let notices: Vec<listener::Notice> = changes.iter().filter_map(listener::Notice::of).collect();
    if notices.is_empty() {
        return Ok(());
    }
    let payloads = listener::payloads(&side.origin, &notices);
    sqlx::query("SELECT pg_notify($1, p) FROM unnest($2::text[]) AS p")
        .bind(CHANNEL)
        .bind(payloads)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Creates the empty database `name` on the server at `server` (any database URL of it) and
/// returns its URL. For scratch databases (benchmarks); `name` is the caller's, never input.
pub async fn create_database(server: &str, name: &str) -> StoreResult<String> {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(server).await?;
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut conn)
        .await?;
    // Keep the query (sslmode, host=/run/postgresql, ...): only the path names the database.
    let (without_query, query) = match server.split_once('?') {
        Some((u, q)) => (u, format!("?{q}")),
        None => (server, String::new()),
    };
    let base = without_query
        .rsplit_once('/')
        .map_or(without_query, |(b, _)| b);
    Ok(format!("{base}/{name}{query}"))
}

/// Drops the database `name` on the server at `server`, closing its connections.
pub async fn drop_database(server: &str, name: &str) -> StoreResult<()> {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(server).await?;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
    )))
    .execute(&mut conn)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn urls_in_messages_lose_their_password() {
        let s = super::scrub("error with postgres://bal:hunter2@db.example/bal");
        assert!(!s.contains("hunter2"), "{s}");
        assert!(s.contains("db.example"), "{s}");
    }
}
