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

    /// Whether retrying later may succeed (the database was unreachable or the transaction lost
    /// a race that the database resolved by aborting it).
    pub fn is_transient(&self) -> bool {
        matches!(self, StoreError::Unavailable(_))
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
            e => StoreError::Backend(Box::new(e)),
        }
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
    StoreError::backend(Corrupt(what.into()))
}
