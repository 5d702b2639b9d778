//! Schema versions: which migrations a database has, whether this binary may use it, and when
//! to migrate. The decision is the same for every backend; each backend reads the facts.
//!
//! Migrations are written expand/contract: a release only adds (tables, nullable columns,
//! indexes) so that the previous release's processes keep working beside it during a rolling
//! update, and removes what it no longer uses one release later. Each database records in
//! `bal_schema` the oldest binary version that may use it (`min_binary`); an older binary
//! refuses with a message instead of misreading the data.

use sqlx::migrate::Migrator;

use crate::dialect::{Dialect, QueryExt};
use crate::{StoreError, StoreResult};

/// What to do with a database whose schema is older than this binary's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Migrate {
    /// Bring it up to date (`bal serve` and `bal demo` with `database.auto_migrate`, and
    /// `bal db migrate`).
    Auto,
    /// Refuse with a message naming `bal db migrate` (every other command, so that a production
    /// database is never migrated by a stray `bal user`). An empty database is still set up.
    Refuse,
}

/// A database's schema as this binary sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaStatus {
    /// Versions of the migrations applied, in order.
    pub applied: Vec<i64>,
    /// The newest migration this binary knows.
    pub latest_known: i64,
    /// The oldest binary version that may use the database.
    pub min_binary: Option<String>,
}

impl SchemaStatus {
    /// The newest migration applied (0 for an empty database).
    pub fn version(&self) -> i64 {
        self.applied.last().copied().unwrap_or(0)
    }
}

/// What opening a database must do first.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Plan {
    /// The schema is this binary's, or a newer one that still admits it.
    Use,
    /// Apply the missing migrations.
    Migrate,
}

/// This binary's version, as recorded in `bal_schema.min_binary` by migrations.
pub(crate) const BINARY_VERSION: &str = env!("CARGO_PKG_VERSION");

fn version_tuple(v: &str) -> Option<(u64, u64, u64)> {
    let mut parts = v.split(['.', '-', '+']).map(str::parse::<u64>);
    Some((
        parts.next()?.ok()?,
        parts.next()?.ok()?,
        parts.next()?.ok()?,
    ))
}

/// Decides what to do with a database whose applied migrations and `min_binary` are given.
pub(crate) fn plan(
    migrator: &Migrator,
    status: &SchemaStatus,
    migrate: Migrate,
    backend: &str,
) -> StoreResult<Plan> {
    let newer = status.applied.iter().any(|v| !migrator.version_exists(*v));
    if let Some(min) = &status.min_binary {
        let too_old = match (version_tuple(BINARY_VERSION), version_tuple(min)) {
            (Some(ours), Some(needed)) => ours < needed,
            _ => true,
        };
        if too_old {
            return Err(StoreError::Config(format!(
                "the {backend} database (schema version {}) needs bal {min} or newer; this is bal \
                 {BINARY_VERSION}: upgrade this binary (database.url)",
                status.version()
            )));
        }
    }
    if newer {
        return Ok(Plan::Use);
    }
    let missing = migrator
        .iter()
        .any(|m| !status.applied.contains(&m.version));
    if !missing {
        return Ok(Plan::Use);
    }
    if status.applied.is_empty() || migrate == Migrate::Auto {
        return Ok(Plan::Migrate);
    }
    Err(StoreError::Config(format!(
        "the {backend} database's schema is at version {}, this bal needs {}: run `bal db migrate` \
         (or start `bal serve`, which migrates when database.auto_migrate is true)",
        status.version(),
        status.latest_known
    )))
}

/// Tells a database that applied one of the `rewritten` migrations, as released, the checksum of
/// this binary's text. sqlx refuses a database whose applied migration differs from the
/// binary's; a few migrations were edited after release to hand tables to another crate's
/// migrations (`(version, released SHA-384 in hex)`), which leaves the schema they build the
/// same. Any other checksum is still refused by sqlx, as an edit nobody meant.
///
/// Only where this process may migrate (`Migrate::Auto`), and only when a checksum is the
/// released one: a server running as a role that may not change the schema
/// (`deploy/postgres/grants.sql`) reads and writes nothing here. sqlx looks at checksums only
/// when it migrates, which such a server never does.
pub(crate) async fn accept_rewritten<DB: Dialect>(
    pool: &sqlx::Pool<DB>,
    migrator: &Migrator,
    rewritten: &[(i64, &str)],
    migrate: Migrate,
) -> StoreResult<()> {
    if migrate == Migrate::Refuse || !crate::store::table_exists(pool, "_sqlx_migrations").await? {
        return Ok(());
    }
    for (version, released) in rewritten {
        let Some(now) = migrator.iter().find(|m| m.version == *version) else {
            continue;
        };
        let released = alloy_primitives::hex::decode(released)
            .map_err(|_| StoreError::Config(format!("migration {version}: bad checksum")))?;
        let applied = sqlx::query::<DB>("SELECT checksum FROM _sqlx_migrations WHERE version = $1")
            .arg(*version)
            .optional(pool)
            .await?
            .map(|row| crate::dialect::first::<DB, Vec<u8>>(&row))
            .transpose()?;
        if applied.as_deref() == Some(&released[..]) {
            sqlx::query::<DB>("UPDATE _sqlx_migrations SET checksum = $1 WHERE version = $2")
                .arg(now.checksum.to_vec())
                .arg(*version)
                .run(pool)
                .await?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    static MIGRATOR: Migrator = sqlx::migrate!("./migrations/sqlite");

    fn status(applied: &[i64], min: Option<&str>) -> SchemaStatus {
        SchemaStatus {
            applied: applied.to_vec(),
            latest_known: MIGRATOR.iter().last().unwrap().version,
            min_binary: min.map(str::to_owned),
        }
    }

    #[test]
    fn an_empty_database_is_set_up_by_any_command() {
        let s = status(&[], None);
        assert_eq!(
            plan(&MIGRATOR, &s, Migrate::Refuse, "sqlite").unwrap(),
            Plan::Migrate
        );
    }

    #[test]
    fn an_outdated_schema_is_migrated_only_when_allowed() {
        let s = status(&[1, 2], Some("0.1.0"));
        assert_eq!(
            plan(&MIGRATOR, &s, Migrate::Auto, "sqlite").unwrap(),
            Plan::Migrate
        );
        let err = plan(&MIGRATOR, &s, Migrate::Refuse, "sqlite").unwrap_err();
        assert!(err.to_string().contains("bal db migrate"), "{err}");
    }

    #[test]
    fn a_newer_schema_is_used_when_it_admits_this_binary_and_refused_otherwise() {
        let all: Vec<i64> = MIGRATOR.iter().map(|m| m.version).chain([9999]).collect();
        let ok = status(&all, Some("0.0.1"));
        assert_eq!(
            plan(&MIGRATOR, &ok, Migrate::Refuse, "postgres").unwrap(),
            Plan::Use
        );
        let too_new = status(&all, Some("99.0.0"));
        let err = plan(&MIGRATOR, &too_new, Migrate::Auto, "postgres").unwrap_err();
        assert!(
            err.to_string().contains("needs bal 99.0.0 or newer"),
            "{err}"
        );
    }
}
