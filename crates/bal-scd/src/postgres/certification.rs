//! What certification does only on PostgreSQL: its snapshot and horizon, and the batch writers'
//! lock (the queries are in `crate::store::certification`).

use sqlx::{PgPool, Postgres, Transaction};

use crate::StoreResult;

/// Serialises batch writers across processes for the length of a transaction.
const BATCH_LOCK: i64 = 0x6261_6c5f_6261_7463; // "bal_batc"

/// A repeatable-read snapshot and the horizon in it (see `crate::certification`).
pub(crate) async fn snapshot(pool: &PgPool) -> StoreResult<(Transaction<'static, Postgres>, i64)> {
    // Other databases' running transactions, read before the snapshot (see `bal_xid_horizon`
    // in the migration), then one snapshot for the last batch, the horizon and the rows.
    let elsewhere: Vec<i64> = sqlx::query_scalar("SELECT bal_xids_elsewhere()")
        .fetch_one(pool)
        .await?;
    let mut tx = pool.begin().await?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .execute(&mut *tx)
        .await?;
    // Read again within the snapshot's statement: a transaction elsewhere that began between
    // the first read and the snapshot is placed too.
    let horizon: i64 = sqlx::query_scalar("SELECT bal_xid_horizon($1 || bal_xids_elsewhere())")
        .bind(&elsewhere)
        .fetch_one(&mut *tx)
        .await?;
    Ok((tx, horizon))
}

pub(crate) async fn lock_batches(tx: &mut Transaction<'static, Postgres>) -> StoreResult<()> {
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(BATCH_LOCK)
        .execute(&mut **tx)
        .await?;
    Ok(())
}
