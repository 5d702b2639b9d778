//! Databases whose migrations were applied by an earlier release.

use super::*;

/// The migration each backend edited after release (the embedded chain's tables went to
/// bal-ledger's own migrations), with the checksum it was released with.
fn rewritten(backend: Backend) -> (i64, &'static str) {
    match backend {
        Backend::Sqlite => (
            4,
            "26b1ae33b6bfd86f1329e24212f34098656d4852db57ca7cb770444ab33c761d7219c5e985a1cad48515ecaca5cfdef6",
        ),
        Backend::Postgres => (
            1,
            "57afb5fc6e1a2f59964c2b177f60c3531b147c390ce20085db6901857c9f2616a9ee1ea03a6d35e22162d4ff2b9fc815",
        ),
    }
}

async fn set_checksum(db: &Db, version: i64, hex: &str) {
    let value = match db.database.backend {
        Backend::Sqlite => format!("X'{hex}'"),
        Backend::Postgres => format!("decode('{hex}', 'hex')"),
    };
    exec(
        db,
        &format!("UPDATE _sqlx_migrations SET checksum = {value} WHERE version = {version}"),
    )
    .await
    .unwrap();
}

async fn checksum(db: &Db, version: i64) -> String {
    let hex = match db.database.backend {
        Backend::Sqlite => "lower(hex(checksum))",
        Backend::Postgres => "encode(checksum, 'hex')",
    };
    scalar_text(
        db,
        &format!("SELECT {hex} FROM _sqlx_migrations WHERE version = {version}"),
    )
    .await
    .unwrap()
}

/// sqlx's own check of every applied migration against this binary's text: what a later
/// migration run does first.
async fn sqlx_accepts(db: &Db) -> Result<(), sqlx::migrate::MigrateError> {
    match db.database.backend {
        Backend::Sqlite => {
            let pool = sqlx::SqlitePool::connect(&db.database.url).await.unwrap();
            sqlx::migrate!("./migrations/sqlite").run(&pool).await
        }
        Backend::Postgres => {
            let pool = sqlx::PgPool::connect(&db.database.url).await.unwrap();
            sqlx::migrate!("./migrations/postgres").run(&pool).await
        }
    }
}

#[tokio::test]
async fn a_migration_applied_as_released_is_accepted_after_its_edit_and_no_other() {
    let db = db().await;
    let (version, released) = rewritten(db.database.backend);
    let ours = checksum(&db, version).await;
    assert_ne!(ours, released, "the migration's text is the edited one");

    // As a database migrated by an earlier release has it.
    set_checksum(&db, version, released).await;
    assert!(sqlx_accepts(&db).await.is_err(), "sqlx alone refuses it");
    // A process that may not migrate (a server as a role without DDL rights) leaves it alone.
    let refuse = bal_scd::ConnectOptions {
        migrate: bal_scd::Migrate::Refuse,
        ..bal_scd::testing::options()
    };
    drop(bal_scd::connect(&db.database.url, &refuse).await.unwrap());
    assert_eq!(checksum(&db, version).await, released);
    drop(db.database.store().await);
    assert_eq!(checksum(&db, version).await, ours);
    sqlx_accepts(&db).await.unwrap();

    // A checksum nobody released is left for sqlx to refuse.
    let other = "00".repeat(48);
    set_checksum(&db, version, &other).await;
    drop(db.database.store().await);
    assert_eq!(checksum(&db, version).await, other);
    assert!(sqlx_accepts(&db).await.is_err());
}
