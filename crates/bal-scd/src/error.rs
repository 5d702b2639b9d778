//! The one error type of the SCD, whatever the backend.

use bal_core::GrantError;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("{0}")]
    Conflict(String),
    #[error(transparent)]
    Grant(#[from] GrantError),
    /// The settings or the database's schema do not allow this: a message for the operator.
    #[error("{0}")]
    Config(String),
    /// The database cannot be reached right now (connection refused or lost, pool exhausted).
    /// Writes are refused and nothing is half-done; the caller may retry.
    #[error("the database is unavailable")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The database failed. The cause is for the log, never for a client.
    #[error("database error")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl StoreError {
    pub fn backend(e: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self::Backend(Box::new(e))
    }

    /// A row the database returned that cannot be what it should be (`what`: which column).
    pub fn corrupt(what: impl Into<String>) -> Self {
        Self::backend(Corrupt(what.into()))
    }

    /// Whether the driver's error under this one is a unique-key violation (a taken name, a
    /// second live request), which stores turn into a [`StoreError::Conflict`] with a message.
    pub fn is_unique_violation(&self) -> bool {
        match self {
            StoreError::Backend(b) => matches!(
                b.downcast_ref::<sqlx::Error>(),
                Some(sqlx::Error::Database(d)) if d.is_unique_violation()
            ),
            _ => false,
        }
    }

    /// The error with its whole cause chain on one line, for logs (`Display` alone stops at
    /// "database error": the cause is for the operator, never for a client).
    pub fn report(&self) -> String {
        let mut text = self.to_string();
        let mut cause = std::error::Error::source(self);
        while let Some(c) = cause {
            text.push_str(": ");
            text.push_str(&c.to_string());
            cause = c.source();
        }
        text
    }
}

/// The one conversion from the driver's errors: connection-level failures are
/// [`StoreError::Unavailable`], everything else [`StoreError::Backend`]. Constraint violations
/// that mean something (a taken name) are matched by the backends before they get here.
impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        match e {
            sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed => StoreError::Unavailable(Box::new(e)),
            sqlx::Error::Database(ref db) if is_transient(db.code().as_deref()) => {
                StoreError::Unavailable(Box::new(e))
            }
            e => StoreError::Backend(Box::new(e)),
        }
    }
}

/// Database errors that say the server cannot write now, not that the request was wrong: a
/// full disk (SQLite's `SQLITE_FULL`, PostgreSQL's `disk_full`), a server shutting down or
/// starting (`57P01`–`57P03`), a lost connection (class `08`). Nothing was written; the same
/// request can succeed later, so callers get a 503 and MQTT publishers are not acknowledged.
fn is_transient(code: Option<&str>) -> bool {
    match code {
        // PostgreSQL's SQLSTATEs are five characters, digits or not (`53100`, `08006`).
        Some(c) if c.len() == 5 => {
            c == "53100" || matches!(c, "57P01" | "57P02" | "57P03") || c.starts_with("08")
        }
        // SQLite reports its extended code, at most four digits; the primary code is its low
        // byte.
        Some(c) => c.parse::<u32>().is_ok_and(|n| n & 0xff == 13),
        None => false,
    }
}

impl From<sqlx::migrate::MigrateError> for StoreError {
    fn from(e: sqlx::migrate::MigrateError) -> Self {
        StoreError::Backend(Box::new(e))
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

/// A row the database returned that cannot be what it should be.
#[derive(Debug, thiserror::Error)]
#[error("corrupt row: {0}")]
pub(crate) struct Corrupt(pub String);

pub(crate) fn corrupt(what: impl Into<String>) -> StoreError {
    StoreError::corrupt(what)
}

pub(crate) fn is_unique_violation(e: &StoreError) -> bool {
    e.is_unique_violation()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_disk_or_a_server_going_away_is_unavailable_and_a_bad_query_is_not() {
        assert!(is_transient(Some("13"))); // SQLITE_FULL
        assert!(is_transient(Some("53100"))); // disk_full
        assert!(is_transient(Some("57P01"))); // admin_shutdown
        assert!(is_transient(Some("08006"))); // connection_failure
        assert!(!is_transient(Some("19"))); // SQLITE_CONSTRAINT
        assert!(!is_transient(Some("2067"))); // SQLITE_CONSTRAINT_UNIQUE
        assert!(!is_transient(Some("23505"))); // unique_violation
        assert!(!is_transient(Some("42P01"))); // undefined_table
        assert!(!is_transient(None));
    }

    #[test]
    fn reports_carry_the_whole_cause_chain_and_displays_do_not() {
        let e = StoreError::from(sqlx::Error::PoolTimedOut);
        assert!(matches!(e, StoreError::Unavailable(_)));
        assert_eq!(e.to_string(), "the database is unavailable");
        assert!(
            e.report().starts_with("the database is unavailable: "),
            "{}",
            e.report()
        );
        assert!(e.report().len() > e.to_string().len() + 2);
        let e = corrupt("payload_hash");
        assert_eq!(e.to_string(), "database error");
        assert!(
            e.report().contains("corrupt row: payload_hash"),
            "{}",
            e.report()
        );
    }
}
