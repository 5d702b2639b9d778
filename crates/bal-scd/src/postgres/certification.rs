//! [`CertificationStore`] on PostgreSQL.

use alloy_primitives::{Address, B256};
use async_trait::async_trait;
use bal_core::merkle::LeafValues;
use bal_core::{Measurement, Username};
use sqlx::postgres::PgRow;
use sqlx::{Postgres, QueryBuilder};

use super::get;
use crate::PgStore;
use crate::certification::{
    AnchorRecord, Batch, BatchKey, BatchLeaves, CertificationBacklog, CertificationStatus,
    CertificationStore, ItemKind, Mark, NewBatch, PendingItem, PendingItems, Span,
};
use crate::dialect::sql;
use crate::error::corrupt;
use crate::store::check_fence;
use crate::store::rows::{self, ms, time};
use crate::{AuditEntry, Fence, StoreError, StoreResult};

/// A mark from two columns `<prefix>_xid` and `<prefix>_id`.
fn mark(row: &PgRow, xid: &str, id: &str) -> StoreResult<Mark> {
    Ok(Mark {
        xid: get(row, xid)?,
        id: get(row, id)?,
    })
}

fn span(row: &PgRow, kind: &str) -> StoreResult<Span> {
    let c = |part: &str| format!("{kind}_{part}");
    Ok(Span {
        after: mark(row, &c("after_xid"), &c("after_id"))?,
        upto: mark(row, &c("upto_xid"), &c("upto_id"))?,
    })
}

const BATCH_COLUMNS: &str = "seq, root, leaf_count, measurement_count, m_after_xid, m_after_id, \
     m_upto_xid, m_upto_id, a_after_xid, a_after_id, a_upto_xid, a_upto_id, created_at, chain_id, \
     contract, tx_hash, block_number, block_time, gas_used, anchored_at";

/// Serialises batch writers across processes for the length of a transaction.
const BATCH_LOCK: i64 = 0x6261_6c5f_6261_7463; // "bal_batc"

fn batch_from_row(row: &PgRow) -> StoreResult<Batch> {
    let tx_hash: Option<Vec<u8>> = get(row, "tx_hash")?;
    let anchor = match tx_hash {
        None => None,
        Some(tx) => {
            let contract: Vec<u8> = get(row, "contract")?;
            Some(AnchorRecord {
                chain_id: rows::u64_of::<Postgres>(row, "chain_id")?,
                contract: rows::address(&contract, "contract")?,
                tx_hash: B256::try_from(tx.as_slice()).map_err(|_| corrupt("tx_hash"))?,
                block_number: rows::u64_of::<Postgres>(row, "block_number")?,
                block_time: rows::u64_of::<Postgres>(row, "block_time")?,
                gas_used: rows::u64_of::<Postgres>(row, "gas_used")?,
                anchored_at: time(get(row, "anchored_at")?)?,
            })
        }
    };
    Ok(Batch {
        seq: get(row, "seq")?,
        root: rows::b256::<Postgres>(row, "root")?,
        leaf_count: rows::u64_of::<Postgres>(row, "leaf_count")? as u32,
        measurement_count: rows::u64_of::<Postgres>(row, "measurement_count")? as u32,
        measurements: span(row, "m")?,
        audit: span(row, "a")?,
        created_at: time(get(row, "created_at")?)?,
        anchor,
    })
}

/// Where the next batch starts: the last batch's ends, or the beginning.
async fn last_marks(conn: &mut sqlx::PgConnection) -> StoreResult<(Mark, Mark)> {
    let row = sqlx::query(
        "SELECT m_upto_xid, m_upto_id, a_upto_xid, a_upto_id FROM cert_batches \
         ORDER BY seq DESC LIMIT 1",
    )
    .fetch_optional(conn)
    .await?;
    match row {
        Some(r) => Ok((
            mark(&r, "m_upto_xid", "m_upto_id")?,
            mark(&r, "a_upto_xid", "a_upto_id")?,
        )),
        None => Ok((Mark::default(), Mark::default())),
    }
}

/// Measurements joined with their producer's wallet (deleted users keep theirs).
const MEASUREMENT_LEAF_SELECT: &str = "SELECT m.id, m.xid, m.topic, m.received_at, \
     m.payload_hash, u.wallet FROM measurements m JOIN users u ON u.username = m.producer";

/// Audit entries of grant decisions joined with their grant's topic and producer's wallet.
const AUDIT_LEAF_SELECT: &str = "SELECT a.id, a.xid, a.at, a.actor, a.action, a.object, a.detail, \
     s.topic, u.wallet FROM audit_log a \
     JOIN subscriptions s ON s.id = substr(a.object, 14) AND a.object LIKE 'subscription:%' \
     JOIN users u ON u.username = s.producer \
     WHERE a.action LIKE 'subscription.%'";

#[async_trait]
impl CertificationStore for PgStore {
    async fn pending_items(&self, max: u32) -> StoreResult<PendingItems> {
        // Other databases' running transactions, read before the snapshot (see
        // `bal_xid_horizon` in the migration), then one snapshot for the last batch, the
        // horizon and the rows, so that they agree.
        let elsewhere: Vec<i64> = sqlx::query_scalar("SELECT bal_xids_elsewhere()")
            .fetch_one(&self.pool)
            .await?;
        let mut tx = self.pool.begin().await?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .execute(&mut *tx)
            .await?;
        let (m_after, a_after) = last_marks(&mut tx).await?;
        // Read again within the snapshot's statement: a transaction elsewhere that began
        // between the first read and the snapshot is placed too.
        let horizon: i64 = sqlx::query_scalar("SELECT bal_xid_horizon($1 || bal_xids_elsewhere())")
            .bind(&elsewhere)
            .fetch_one(&mut *tx)
            .await?;
        let audit_rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "{AUDIT_LEAF_SELECT} AND (a.xid, a.id) > ($1, $2) AND a.xid < $3 \
             ORDER BY a.xid, a.id LIMIT $4"
        )))
        .bind(a_after.xid)
        .bind(a_after.id)
        .bind(horizon)
        .bind(i64::from(max))
        .fetch_all(&mut *tx)
        .await?;
        let room = i64::from(max) - audit_rows.len() as i64;
        let measurement_rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "{MEASUREMENT_LEAF_SELECT} WHERE (m.xid, m.id) > ($1, $2) AND m.xid < $3 \
             ORDER BY m.xid, m.id LIMIT $4"
        )))
        .bind(m_after.xid)
        .bind(m_after.id)
        .bind(horizon)
        .bind(room)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        let mut pending = PendingItems {
            items: Vec::with_capacity(audit_rows.len() + measurement_rows.len()),
            measurements: Span::at(m_after),
            audit: Span::at(a_after),
        };
        for row in &measurement_rows {
            pending.measurements.upto = mark(row, "xid", "id")?;
            let values = rows::measurement_leaf_from_row::<Postgres>(row)?;
            pending.items.push(PendingItem {
                kind: ItemKind::Measurement,
                id: values.id as i64,
                values,
            });
        }
        for row in &audit_rows {
            pending.audit.upto = mark(row, "xid", "id")?;
            let (values, _) = rows::audit_leaf_from_row::<Postgres>(row)?;
            pending.items.push(PendingItem {
                kind: ItemKind::Audit,
                id: values.id as i64,
                values,
            });
        }
        // The span is fixed; within it, leaves go by id (proof lookups search the id list).
        pending
            .items
            .sort_by_key(|i| (i.kind == ItemKind::Audit, i.id));
        Ok(pending)
    }

    async fn create_batch(&self, b: &NewBatch, fence: &Fence) -> StoreResult<Batch> {
        let mut tx = self.begin_write().await?;
        check_fence(&mut tx, fence).await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(BATCH_LOCK)
            .execute(&mut *tx)
            .await?;
        let (m_last, a_last) = last_marks(&mut tx).await?;
        if (m_last, a_last) != (b.measurements.after, b.audit.after) {
            return Err(StoreError::Conflict(
                "another batch was written meanwhile".into(),
            ));
        }
        let items: Vec<u8> = b.items.iter().flat_map(|i| i.to_be_bytes()).collect();
        let leaves: Vec<u8> = b.leaves.iter().flat_map(|l| l.0).collect();
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO cert_batches (seq, root, leaf_count, measurement_count, m_after_xid, \
             m_after_id, m_upto_xid, m_upto_id, a_after_xid, a_after_id, a_upto_xid, a_upto_id, \
             items, leaves, created_at) \
             SELECT COALESCE(MAX(seq), 0) + 1, $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, \
             $13, $14 FROM cert_batches RETURNING {BATCH_COLUMNS}"
        )))
        .bind(b.root.as_slice())
        .bind(b.leaves.len() as i64)
        .bind(i64::from(b.measurement_count))
        .bind(b.measurements.after.xid)
        .bind(b.measurements.after.id)
        .bind(b.measurements.upto.xid)
        .bind(b.measurements.upto.id)
        .bind(b.audit.after.xid)
        .bind(b.audit.after.id)
        .bind(b.audit.upto.xid)
        .bind(b.audit.upto.id)
        .bind(items)
        .bind(leaves)
        .bind(ms(b.created_at))
        .fetch_one(&mut *tx)
        .await?;
        let batch = batch_from_row(&row)?;
        tx.commit(self).await?;
        Ok(batch)
    }

    async fn unanchored_batches(&self) -> StoreResult<Vec<Batch>> {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {BATCH_COLUMNS} FROM cert_batches WHERE tx_hash IS NULL ORDER BY seq"
        )))
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(batch_from_row)
        .collect()
    }

    async fn record_anchor(&self, seq: i64, a: &AnchorRecord, fence: &Fence) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        check_fence(&mut tx, fence).await?;
        let done = sqlx::query(
            "UPDATE cert_batches SET chain_id = $1, contract = $2, tx_hash = $3, block_number = $4, \
             block_time = $5, gas_used = $6, anchored_at = $7 WHERE seq = $8 AND tx_hash IS NULL",
        )
        .bind(a.chain_id as i64)
        .bind(a.contract.as_slice())
        .bind(a.tx_hash.as_slice())
        .bind(a.block_number as i64)
        .bind(a.block_time as i64)
        .bind(a.gas_used as i64)
        .bind(ms(a.anchored_at))
        .bind(seq)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::Conflict(format!(
                "batch {seq} is unknown or already anchored"
            )));
        }
        tx.commit(self).await?;
        Ok(())
    }

    async fn batch(&self, key: BatchKey) -> StoreResult<Option<Batch>> {
        let (column, value): (&str, Vec<u8>) = match key {
            BatchKey::Seq(seq) => {
                return sqlx::query(sqlx::AssertSqlSafe(format!(
                    "SELECT {BATCH_COLUMNS} FROM cert_batches WHERE seq = $1"
                )))
                .bind(seq)
                .fetch_optional(&self.pool)
                .await?
                .as_ref()
                .map(batch_from_row)
                .transpose();
            }
            BatchKey::Root(r) => ("root", r.to_vec()),
            BatchKey::Transaction(t) => ("tx_hash", t.to_vec()),
        };
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {BATCH_COLUMNS} FROM cert_batches WHERE {column} = $1"
        )))
        .bind(value)
        .fetch_optional(&self.pool)
        .await?
        .as_ref()
        .map(batch_from_row)
        .transpose()
    }

    async fn batches(&self, before: Option<i64>, limit: u32) -> StoreResult<Vec<Batch>> {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {BATCH_COLUMNS} FROM cert_batches WHERE seq < $1 ORDER BY seq DESC LIMIT $2"
        )))
        .bind(before.unwrap_or(i64::MAX))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(batch_from_row)
        .collect()
    }

    async fn batch_leaves(&self, seq: i64) -> StoreResult<Option<BatchLeaves>> {
        let row: Option<(Vec<u8>, Vec<u8>, i64)> = sqlx::query_as(
            "SELECT items, leaves, measurement_count FROM cert_batches WHERE seq = $1",
        )
        .bind(seq)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|(items, leaves, count)| BatchLeaves {
            items: items
                .chunks_exact(8)
                .map(|c| i64::from_be_bytes(c.try_into().expect("8 bytes")))
                .collect(),
            leaves: leaves.chunks_exact(32).map(B256::from_slice).collect(),
            measurement_count: count as u32,
        }))
    }

    async fn batch_of(&self, kind: ItemKind, id: i64) -> StoreResult<Option<Batch>> {
        // The first batch whose span ends at or after the item's mark covers it, if its span
        // starts before: spans continue each other in order.
        let sql = match kind {
            ItemKind::Measurement => format!(
                "SELECT b.{} FROM measurements i, LATERAL (SELECT * FROM cert_batches \
                 WHERE (m_upto_xid, m_upto_id) >= (i.xid, i.id) \
                 ORDER BY m_upto_xid, m_upto_id, seq LIMIT 1) b \
                 WHERE i.id = $1 AND (b.m_after_xid, b.m_after_id) < (i.xid, i.id)",
                BATCH_COLUMNS.replace(", ", ", b.")
            ),
            ItemKind::Audit => format!(
                "SELECT b.{} FROM audit_log i, LATERAL (SELECT * FROM cert_batches \
                 WHERE (a_upto_xid, a_upto_id) >= (i.xid, i.id) \
                 ORDER BY a_upto_xid, a_upto_id, seq LIMIT 1) b \
                 WHERE i.id = $1 AND (b.a_after_xid, b.a_after_id) < (i.xid, i.id)",
                BATCH_COLUMNS.replace(", ", ", b.")
            ),
        };
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(batch_from_row)
            .transpose()
    }

    async fn batch_measurements(
        &self,
        batch: &Batch,
        producers: Option<&[Username]>,
        after: Option<i64>,
        limit: u32,
    ) -> StoreResult<Vec<Measurement>> {
        if producers.is_some_and(|p| p.is_empty()) {
            return Ok(Vec::new());
        }
        let mut sql = QueryBuilder::<Postgres>::new(sql!(Postgres;
            "SELECT ",
            MEASUREMENT_COLUMNS,
            " FROM measurements WHERE (xid, id) > ("
        ));
        let span = batch.measurements;
        sql.push_bind(span.after.xid)
            .push(", ")
            .push_bind(span.after.id)
            .push(") AND (xid, id) <= (")
            .push_bind(span.upto.xid)
            .push(", ")
            .push_bind(span.upto.id)
            .push(") AND id > ")
            .push_bind(after.unwrap_or(0));
        if let Some(p) = producers {
            sql.push(" AND producer IN (");
            let mut list = sql.separated(", ");
            for u in p {
                list.push_bind(u.as_str().to_owned());
            }
            sql.push(")");
        }
        sql.push(" ORDER BY id LIMIT ").push_bind(i64::from(limit));
        sql.build()
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(rows::measurement_from_row::<Postgres>)
            .collect()
    }

    async fn batch_audit_entries(&self, batch: &Batch) -> StoreResult<Vec<AuditEntry>> {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "{AUDIT_LEAF_SELECT} AND (a.xid, a.id) > ($1, $2) AND (a.xid, a.id) <= ($3, $4) \
             ORDER BY a.id"
        )))
        .bind(batch.audit.after.xid)
        .bind(batch.audit.after.id)
        .bind(batch.audit.upto.xid)
        .bind(batch.audit.upto.id)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(rows::audit_entry_from_row::<Postgres>)
        .collect()
    }

    async fn measurement_leaf(&self, id: i64) -> StoreResult<Option<LeafValues>> {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "{MEASUREMENT_LEAF_SELECT} WHERE m.id = $1"
        )))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        .as_ref()
        .map(rows::measurement_leaf_from_row::<Postgres>)
        .transpose()
    }

    async fn audit_leaf(&self, id: i64) -> StoreResult<Option<(LeafValues, Vec<u8>)>> {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "{AUDIT_LEAF_SELECT} AND a.id = $1"
        )))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        .as_ref()
        .map(rows::audit_leaf_from_row::<Postgres>)
        .transpose()
    }

    async fn certification_status(&self) -> StoreResult<CertificationStatus> {
        // The backlog first, then what history adds (the anchored batches, which grow).
        let backlog = self.certification_backlog().await?;
        let row = sqlx::query(
            "SELECT \
               (SELECT COUNT(*) FROM cert_batches WHERE tx_hash IS NULL) AS pending, \
               (SELECT COUNT(*) FROM cert_batches WHERE tx_hash IS NOT NULL) AS anchored, \
               (SELECT COALESCE(SUM(measurement_count), 0)::bigint FROM cert_batches \
                  WHERE tx_hash IS NOT NULL) AS certified",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(CertificationStatus {
            unbatched_measurements: backlog.unbatched_measurements,
            pending_batches: rows::u64_of::<Postgres>(&row, "pending")?,
            pending_measurements: backlog.pending_measurements,
            anchored_batches: rows::u64_of::<Postgres>(&row, "anchored")?,
            certified_measurements: rows::u64_of::<Postgres>(&row, "certified")?,
        })
    }

    async fn certification_backlog(&self) -> StoreResult<CertificationBacklog> {
        let mut conn = self.pool.acquire().await?;
        let (m_upto, _) = last_marks(&mut conn).await?;
        let row = sqlx::query(
            "SELECT \
               (SELECT COUNT(*) FROM measurements WHERE (xid, id) > ($1, $2)) AS unbatched, \
               (SELECT COALESCE(SUM(measurement_count), 0)::bigint FROM cert_batches \
                  WHERE tx_hash IS NULL) AS pending_measurements",
        )
        .bind(m_upto.xid)
        .bind(m_upto.id)
        .fetch_one(&mut *conn)
        .await?;
        Ok(CertificationBacklog {
            unbatched_measurements: rows::u64_of::<Postgres>(&row, "unbatched")?,
            pending_measurements: rows::u64_of::<Postgres>(&row, "pending_measurements")?,
        })
    }

    async fn chain_contract(&self, chain_id: u64) -> StoreResult<Option<Address>> {
        let row: Option<(Vec<u8>,)> =
            sqlx::query_as("SELECT contract FROM chain_contracts WHERE chain_id = $1")
                .bind(chain_id as i64)
                .fetch_optional(&self.pool)
                .await?;
        row.map(|(c,)| rows::address(&c, "contract")).transpose()
    }

    async fn remember_chain_contract(&self, chain_id: u64, contract: Address) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO chain_contracts (chain_id, contract, created_at) VALUES ($1, $2, $3) \
             ON CONFLICT (chain_id) DO UPDATE SET contract = excluded.contract",
        )
        .bind(chain_id as i64)
        .bind(contract.as_slice())
        .bind(ms(chrono::Utc::now()))
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}
