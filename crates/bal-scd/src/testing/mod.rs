//! A fresh database per test, on the backend `BAL_TEST_DATABASE` names (`sqlite`, the default,
//! or `postgres`), for this crate's tests and those of the crates above it (feature `testing`).
//!
//! PostgreSQL: a database `bal_test_<pid>_<random>` is created on the server at
//! `BAL_TEST_POSTGRES_URL` (default `postgres://postgres@127.0.0.1:5432/postgres`) and dropped
//! (with `FORCE`) when the [`TestDatabase`] is dropped; those made by
//! [`create_postgres_database`] live as long as the test process, and the first database a
//! process creates sweeps away those of processes that have ended. When the server is missing
//! this panics: the tests fail, they never skip.

use std::time::Duration;

mod cluster;
mod sockets;
pub use cluster::{PrivateCluster, ServerTls};
#[cfg(target_os = "linux")]
pub use sockets::tcp_nodelay_states;

use crate::{Backend, ConnectOptions, Migrate, SharedStore};

/// Which backend the tests run on.
pub fn backend() -> Backend {
    match std::env::var("BAL_TEST_DATABASE").as_deref() {
        Ok("postgres") | Ok("postgresql") => Backend::Postgres,
        Ok("sqlite") | Ok("") | Err(_) => Backend::Sqlite,
        Ok(other) => panic!("BAL_TEST_DATABASE={other:?}: use sqlite or postgres"),
    }
}

/// The server tests create their databases on.
pub fn postgres_admin_url() -> String {
    std::env::var("BAL_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// Small pools: many tests run at once against one server (100 connections by default).
pub fn options() -> ConnectOptions {
    ConnectOptions {
        max_connections: 4,
        acquire_timeout: Duration::from_secs(10),
        migrate: Migrate::Auto,
    }
}

/// An empty database that is removed with this value.
pub struct TestDatabase {
    pub url: String,
    pub backend: Backend,
    dir: tempfile::TempDir,
    pg_name: Option<String>,
}

impl TestDatabase {
    /// A new database on the backend `BAL_TEST_DATABASE` names.
    pub async fn new() -> Self {
        Self::on(backend()).await
    }

    pub async fn on(backend: Backend) -> Self {
        let dir = tempfile::tempdir().expect("temporary folder");
        match backend {
            Backend::Sqlite => Self {
                url: format!("sqlite://{}", dir.path().join("bal.db").display()),
                backend,
                dir,
                pg_name: None,
            },
            Backend::Postgres => {
                let (url, name) = create(&postgres_admin_url()).await;
                Self {
                    url,
                    backend,
                    dir,
                    pg_name: Some(name),
                }
            }
        }
    }

    /// A folder that lives as long as the database (for keys and certificates).
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// Opens a store on this database (each call is a new pool: another "process").
    pub async fn store(&self) -> SharedStore {
        crate::connect(&self.url, &options())
            .await
            .expect("open the test database")
    }
}

/// Creates an empty database and returns its URL and name.
async fn create(admin: &str) -> (String, String) {
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(admin)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "PostgreSQL is needed at {admin} (BAL_TEST_POSTGRES_URL): {e}; \
                 start it with `pg_ctlcluster 15 main start`"
            )
        });
    static SWEPT: std::sync::Once = std::sync::Once::new();
    let mut sweep = false;
    SWEPT.call_once(|| sweep = true);
    if sweep {
        sweep_ended_processes(&mut conn).await;
    }
    let name = format!(
        "bal_test_{}_{:016x}",
        std::process::id(),
        rand::random::<u64>()
    );
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut conn)
        .await
        .expect("create the test database");
    let base = admin.rsplit_once('/').map_or(admin, |(b, _)| b);
    (format!("{base}/{name}"), name)
}

/// Drops the test databases of processes that no longer run.
async fn sweep_ended_processes(conn: &mut sqlx::PgConnection) {
    let names: Vec<String> =
        sqlx::query_scalar("SELECT datname FROM pg_database WHERE datname LIKE 'bal\\_test\\_%'")
            .fetch_all(&mut *conn)
            .await
            .unwrap_or_default();
    for name in names {
        let pid = name.split('_').nth(2).and_then(|p| p.parse::<u32>().ok());
        let alive = pid.is_some_and(|p| std::path::Path::new(&format!("/proc/{p}")).exists());
        if !alive {
            let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
            )))
            .execute(&mut *conn)
            .await;
        }
    }
}

/// A database for the whole test process (for harnesses that restart servers on one data
/// folder): its URL. Blocking, so that synchronous set-up code can call it.
pub fn create_postgres_database() -> String {
    let admin = postgres_admin_url();
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(create(&admin))
            .0
    })
    .join()
    .expect("create a test database")
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let Some(name) = self.pg_name.take() else {
            return;
        };
        let admin = postgres_admin_url();
        // Drop runs inside the tests' runtime: do the async work on a thread of its own.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                if let Ok(mut conn) =
                    <sqlx::PgConnection as sqlx::Connection>::connect(&admin).await
                {
                    let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                    )))
                    .execute(&mut conn)
                    .await;
                }
            });
        })
        .join();
    }
}
