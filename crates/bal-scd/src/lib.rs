//! The Shared Customer Database (SCD): users, sessions, subscriptions, measurements, the
//! audit log and certification batches. Other tenants of the same database (`bal-ledger`'s
//! embedded chain) open their own [`Pool`] with [`open_pool`] and keep their own migrations.
//!
//! The store is a set of small traits, one per aggregate, that speak in `bal-core` types and
//! know nothing of SQL; [`Store`] bundles them for callers that need all. Their queries are
//! written once for both backends ([`SqlStore`], over [`dialect`]); each backend's module keeps
//! what only it does, and its own `migrations/` folder. Each trait's docs state the guarantees
//! every backend keeps with concurrent writers. Every method that changes users or grants also
//! appends to the audit log in the same transaction, so the log can never disagree with the
//! data, and every committed change is announced on the [`ChangeFeed`].
//!
//! - [`accounts`]: users and sessions; [`grants`]: subscriptions and the audit log;
//!   [`measurements`]: ingest and history; [`certification`]: Merkle batches and anchors;
//!   [`cluster`]: the registry of live replicas and the leases of jobs only one may do;
//!   [`setpoints`]: commands to producers' devices, each change of state audited.
//! - [`sqlite`]: the embedded default (one file, WAL). [`postgres`]: for production and for
//!   several replicas on one database.
//! - Who may read what is `bal-core`'s [`bal_core::ReadScope`]; [`read_scope`] reads the grants
//!   it needs.
#![forbid(unsafe_code)]

pub mod accounts;
pub mod certification;
pub mod cluster;
pub mod copy;
pub mod dialect;
mod error;
pub mod feed;
pub mod grants;
pub mod measurements;
pub mod postgres;
mod schema;
pub mod setpoints;
pub mod sqlite;
mod store;
#[cfg(feature = "testing")]
pub mod testing;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::broadcast;

pub use accounts::{AccountStore, Credentials, NewUser, User};
pub use certification::{
    AnchorRecord, Batch, BatchKey, BatchLeaves, CertificationBacklog, CertificationStatus,
    CertificationStore, ItemKind, Mark, NewBatch, PendingItem, PendingItems, Span,
};
pub use cluster::{
    BROKER_LEASE, CERTIFY_LEASE, ClusterStore, Fence, Lease, MqttRole, Replica, ReplicaInfo,
};
pub use error::{StoreError, StoreResult};
pub use feed::{Change, ChangeFeed, MeasurementWatch, SetpointChange};
pub use grants::{
    AuditEntry, AuditQuery, GrantStore, SubscriptionQuery, control_scope, read_scope,
};
pub use measurements::{
    MalformedCursor, MeasurementCursor, MeasurementPage, MeasurementQuery, MeasurementStore,
    OpenBatch, StoredBatch, WrittenBatch,
};
pub use schema::{Migrate, SchemaStatus};
pub use setpoints::{NewSetpoint, Setpoint, SetpointCounts, SetpointQuery, SetpointStore};
pub use store::SqlStore;

/// The SCD on SQLite: the embedded default (one file, WAL).
pub type SqliteStore = SqlStore<sqlx::Sqlite>;
/// The SCD on PostgreSQL: for production, and for several replicas on one database.
pub type PgStore = SqlStore<sqlx::Postgres>;

/// The store's traits, for callers that hold a [`SharedStore`] and call its methods.
pub mod prelude {
    pub use crate::{
        AccountStore, CertificationStore, ClusterStore, GrantStore, MeasurementStore,
        SetpointStore, Store,
    };
}

/// Which database a store runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    /// The backend a URL names, or a message saying which URLs exist.
    pub fn of(url: &str) -> StoreResult<Self> {
        let scheme = url.split(':').next().unwrap_or_default();
        match scheme {
            "sqlite" => Ok(Backend::Sqlite),
            "postgres" | "postgresql" => Ok(Backend::Postgres),
            other => Err(StoreError::Config(format!(
                "unsupported database URL scheme {other:?}: use sqlite://PATH or \
                 postgres://USER@HOST/DATABASE"
            ))),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }
}

/// A connection pool on the database a URL names, opened as the SCD opens its own (WAL,
/// busy timeout and the broken-transaction check on SQLite): for the database's other tenants,
/// which keep their own tables and migrations (`bal-ledger`'s embedded chain).
#[derive(Debug, Clone)]
pub enum Pool {
    Sqlite(sqlx::SqlitePool),
    Postgres(sqlx::PgPool),
}

/// Opens a [`Pool`] on the database at `url` (`options.migrate` is not used: the SCD's schema
/// is left as it is).
pub async fn open_pool(url: &str, options: &ConnectOptions) -> StoreResult<Pool> {
    Ok(match Backend::of(url)? {
        Backend::Sqlite => Pool::Sqlite(sqlite::pool(url, options).await?),
        Backend::Postgres => Pool::Postgres(postgres::pool(url, options).await?),
    })
}

/// The store's connections as `/metrics` reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolUsage {
    /// Connections open now.
    pub open: u32,
    /// Of those, the idle ones.
    pub idle: usize,
    /// The most the pool opens.
    pub max: u32,
}

/// How to open a store.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    /// The most connections the pool holds (PostgreSQL; SQLite keeps its own small pool).
    pub max_connections: u32,
    /// How long a caller waits for a free connection before the store is `Unavailable`.
    pub acquire_timeout: Duration,
    /// What to do with a schema older than this binary's.
    pub migrate: Migrate,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        Self {
            max_connections: 10,
            acquire_timeout: Duration::from_secs(3),
            migrate: Migrate::Auto,
        }
    }
}

/// The SCD as the BAL uses it: every aggregate's store, the change feed and a health check.
#[async_trait]
pub trait Store:
    AccountStore
    + GrantStore
    + MeasurementStore
    + CertificationStore
    + ClusterStore
    + SetpointStore
    + Send
    + Sync
    + 'static
{
    fn backend(&self) -> Backend;
    /// The connection pool's use, for `/metrics`.
    fn pool_usage(&self) -> PoolUsage;
    /// Fails when the database cannot answer: the readiness probe.
    async fn ping(&self) -> StoreResult<()>;
    /// Changes committed from now on, by this process and (on PostgreSQL) by every other.
    /// Measurements among them only while a [`Store::watch_measurements`] is held.
    fn changes(&self) -> broadcast::Receiver<Change>;
    /// Asks for [`Change::Measurements`] on the feed until the watch is dropped.
    fn watch_measurements(&self) -> MeasurementWatch;
    /// Records the master key's fingerprint on first use; afterwards `Config` when a process
    /// comes with another key (its wallets and sealed passwords would not open).
    async fn check_master_key(&self, fingerprint: &str) -> StoreResult<()>;
}

/// The message for a process whose master key is not the database's.
pub(crate) fn master_key_mismatch(stored: &str, ours: &str) -> StoreError {
    StoreError::Config(format!(
        "the database was set up with another master key (fingerprint {stored}, this process \
         has {ours}): use the same keys.master_key (BAL_KEYS__MASTER_KEY) or master.key file as \
         the processes that created it"
    ))
}

/// The store as the rest of the BAL holds it.
pub type SharedStore = Arc<dyn Store>;

/// Opens the store named by `url`: `sqlite://PATH` or `postgres://...` (`postgresql://`).
pub async fn connect(url: &str, options: &ConnectOptions) -> StoreResult<SharedStore> {
    Ok(match Backend::of(url)? {
        Backend::Sqlite => Arc::new(SqliteStore::connect_with(url, options).await?),
        Backend::Postgres => Arc::new(PgStore::connect(url, options).await?),
    })
}

/// Brings the schema at `url` up to date and says what was done; `bal db migrate`.
pub async fn migrate(url: &str, options: &ConnectOptions) -> StoreResult<SchemaStatus> {
    let options = ConnectOptions {
        migrate: Migrate::Auto,
        ..options.clone()
    };
    match Backend::of(url)? {
        Backend::Sqlite => {
            SqliteStore::connect_with(url, &options)
                .await?
                .schema()
                .await
        }
        Backend::Postgres => PgStore::connect(url, &options).await?.schema().await,
    }
}
