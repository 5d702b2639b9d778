//! `bal db copy`: a SQLite installation moved to PostgreSQL in one transaction.
//!
//! Everything is copied as stored, byte for byte: users (hashes, wallets, sealed keys and
//! passwords), grants, the audit log (its certified text untouched), measurements, batches,
//! the tables of the database's other tenants the caller names (the embedded chain's), and the
//! master key's fingerprint; sequences are set past the copied
//! ids. Sessions are not copied: users log in again. Every proof issued before the copy
//! verifies after it, since leaves are rebuilt from the same values and the chain's blocks are
//! the same bytes. A target that holds any user is refused.

use crate::{Backend, ConnectOptions, Migrate, PgStore, SqliteStore, StoreError, StoreResult};

/// One column's value, as the two backends store it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Value {
    Null,
    Int(i64),
    Text(String),
    Bytes(Vec<u8>),
}

/// The rows of one table, columns in `columns` order.
#[derive(Debug, Clone)]
pub(crate) struct Table {
    pub name: &'static str,
    pub columns: Vec<String>,
    pub rows: Vec<Vec<Value>>,
}

/// The SCD's tables copied, parents before children.
const TABLES: [&str; 6] = [
    "users",
    "subscriptions",
    "measurements",
    "audit_log",
    "cert_batches",
    "chain_contracts",
];

/// What was copied: rows per table.
#[derive(Debug, Clone, Default)]
pub struct CopyReport {
    pub tables: Vec<(&'static str, usize)>,
}

/// Copies the SQLite database at `from` into the empty PostgreSQL database at `to`: the SCD's
/// tables, then `tenants'` (other crates' tables in the same database, parents first, which
/// their owners have already created at `to`). A tenant's table missing at `from` (the
/// embedded chain never ran there) copies as empty.
pub async fn copy(
    from: &str,
    to: &str,
    options: &ConnectOptions,
    tenants: &[&'static str],
) -> StoreResult<CopyReport> {
    if Backend::of(from)? != Backend::Sqlite || Backend::of(to)? != Backend::Postgres {
        return Err(StoreError::Config(
            "bal db copy moves a SQLite database (--from sqlite://...) to PostgreSQL \
             (--to postgres://...)"
                .into(),
        ));
    }
    let source = SqliteStore::connect_with(
        from,
        &ConnectOptions {
            migrate: Migrate::Refuse,
            ..options.clone()
        },
    )
    .await?;
    let target = PgStore::connect(
        to,
        &ConnectOptions {
            migrate: Migrate::Auto,
            ..options.clone()
        },
    )
    .await?;
    let mut tables = Vec::with_capacity(TABLES.len() + tenants.len());
    for &name in TABLES.iter().chain(tenants) {
        tables.push(source.export(name).await?);
    }
    let fingerprint = source.stored_master_key().await?;
    target.import(&tables, fingerprint.as_deref()).await?;
    Ok(CopyReport {
        tables: tables.iter().map(|t| (t.name, t.rows.len())).collect(),
    })
}
