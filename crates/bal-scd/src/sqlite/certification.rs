//! [`CertificationStore`] on SQLite.

use alloy_primitives::{Address, B256};
use async_trait::async_trait;
use bal_core::merkle::LeafValues;
use bal_core::{Measurement, Username};
use sqlx::sqlite::SqliteRow;
use sqlx::{QueryBuilder, Sqlite};

use super::get;
use crate::SqliteStore;
use crate::certification::{
    AnchorRecord, Batch, BatchKey, BatchLeaves, CertificationBacklog, CertificationStatus,
    CertificationStore, ItemKind, Mark, NewBatch, PendingItem, PendingItems, Span,
};
use crate::dialect::sql;
use crate::error::corrupt;
use crate::store::check_fence;
use crate::store::rows::{self, ms, time};
use crate::{AuditEntry, Fence, StoreError, StoreResult};

/// On SQLite ids are assigned in commit order (one writer), so a mark is the id alone.
fn mark(id: i64) -> Mark {
    Mark { xid: 0, id }
}

fn span(row: &SqliteRow, after: &str, upto: &str) -> StoreResult<Span> {
    Ok(Span {
        after: mark(get(row, after)?),
        upto: mark(get(row, upto)?),
    })
}

const BATCH_COLUMNS: &str = "seq, root, leaf_count, measurement_count, measurements_after, \
     measurements_upto, audit_after, audit_upto, created_at, chain_id, contract, tx_hash, \
     block_number, block_time, gas_used, anchored_at";

fn batch_from_row(row: &SqliteRow) -> StoreResult<Batch> {
    let tx_hash: Option<Vec<u8>> = get(row, "tx_hash")?;
    let anchor = match tx_hash {
        None => None,
        Some(tx) => {
            let contract: Vec<u8> = get(row, "contract")?;
            Some(AnchorRecord {
                chain_id: rows::u64_of::<Sqlite>(row, "chain_id")?,
                contract: rows::address(&contract, "contract")?,
                tx_hash: B256::try_from(tx.as_slice()).map_err(|_| corrupt("tx_hash"))?,
                block_number: rows::u64_of::<Sqlite>(row, "block_number")?,
                block_time: rows::u64_of::<Sqlite>(row, "block_time")?,
                gas_used: rows::u64_of::<Sqlite>(row, "gas_used")?,
                anchored_at: time(get(row, "anchored_at")?)?,
            })
        }
    };
    Ok(Batch {
        seq: get(row, "seq")?,
        root: rows::b256::<Sqlite>(row, "root")?,
        leaf_count: rows::u64_of::<Sqlite>(row, "leaf_count")? as u32,
        measurement_count: rows::u64_of::<Sqlite>(row, "measurement_count")? as u32,
        measurements: span(row, "measurements_after", "measurements_upto")?,
        audit: span(row, "audit_after", "audit_upto")?,
        created_at: time(get(row, "created_at")?)?,
        anchor,
    })
}

/// The watermarks the next batch starts from: the last batch's, or 0.
async fn watermarks(store: &SqliteStore) -> StoreResult<(i64, i64)> {
    let row: Option<(i64, i64)> = sqlx::query_as(
        "SELECT measurements_upto, audit_upto FROM cert_batches ORDER BY seq DESC LIMIT 1",
    )
    .fetch_optional(&store.pool)
    .await?;
    Ok(row.unwrap_or((0, 0)))
}

/// Measurements joined with their producer's wallet (deleted users keep theirs).
const MEASUREMENT_LEAF_SELECT: &str = "SELECT m.id, m.topic, m.received_at, m.payload_hash, \
     u.wallet FROM measurements m JOIN users u ON u.username = m.producer";

/// Audit entries of grant decisions joined with their grant's topic and producer's wallet.
const AUDIT_LEAF_SELECT: &str = "SELECT a.id, a.at, a.actor, a.action, a.object, a.detail, \
     s.topic, u.wallet FROM audit_log a \
     JOIN subscriptions s ON s.id = substr(a.object, 14) AND a.object LIKE 'subscription:%' \
     JOIN users u ON u.username = s.producer \
     WHERE a.action LIKE 'subscription.%'";

#[async_trait]
impl CertificationStore for SqliteStore {
    async fn pending_items(&self, max: u32) -> StoreResult<PendingItems> {
        let (m_after, a_after) = watermarks(self).await?;
        let audit_rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "{AUDIT_LEAF_SELECT} AND a.id > ? ORDER BY a.id LIMIT ?"
        )))
        .bind(a_after)
        .bind(i64::from(max))
        .fetch_all(&self.pool)
        .await?;
        let room = i64::from(max) - audit_rows.len() as i64;
        let measurement_rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "{MEASUREMENT_LEAF_SELECT} WHERE m.id > ? ORDER BY m.id LIMIT ?"
        )))
        .bind(m_after)
        .bind(room)
        .fetch_all(&self.pool)
        .await?;
        let mut pending = PendingItems {
            items: Vec::with_capacity(audit_rows.len() + measurement_rows.len()),
            measurements: Span::at(mark(m_after)),
            audit: Span::at(mark(a_after)),
        };
        for row in &measurement_rows {
            let values = rows::measurement_leaf_from_row::<Sqlite>(row)?;
            pending.measurements.upto = mark(values.id as i64);
            pending.items.push(PendingItem {
                kind: ItemKind::Measurement,
                id: values.id as i64,
                values,
            });
        }
        for row in &audit_rows {
            let (values, _) = rows::audit_leaf_from_row::<Sqlite>(row)?;
            pending.audit.upto = mark(values.id as i64);
            pending.items.push(PendingItem {
                kind: ItemKind::Audit,
                id: values.id as i64,
                values,
            });
        }
        Ok(pending)
    }

    async fn create_batch(&self, b: &NewBatch, fence: &Fence) -> StoreResult<Batch> {
        let mut tx = self.begin_write().await?;
        check_fence(&mut tx, fence).await?;
        let last: Option<(i64, i64)> = sqlx::query_as(
            "SELECT measurements_upto, audit_upto FROM cert_batches ORDER BY seq DESC LIMIT 1",
        )
        .fetch_optional(&mut *tx)
        .await?;
        if last.unwrap_or((0, 0)) != (b.measurements.after.id, b.audit.after.id) {
            return Err(StoreError::Conflict(
                "another batch was written meanwhile".into(),
            ));
        }
        let items: Vec<u8> = b.items.iter().flat_map(|i| i.to_be_bytes()).collect();
        let leaves: Vec<u8> = b.leaves.iter().flat_map(|l| l.0).collect();
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO cert_batches (root, leaf_count, measurement_count, measurements_after, \
             measurements_upto, audit_after, audit_upto, items, leaves, created_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING {BATCH_COLUMNS}"
        )))
        .bind(b.root.as_slice())
        .bind(b.leaves.len() as i64)
        .bind(i64::from(b.measurement_count))
        .bind(b.measurements.after.id)
        .bind(b.measurements.upto.id)
        .bind(b.audit.after.id)
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
            "UPDATE cert_batches SET chain_id = ?, contract = ?, tx_hash = ?, block_number = ?, \
             block_time = ?, gas_used = ?, anchored_at = ? WHERE seq = ? AND tx_hash IS NULL",
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
                    "SELECT {BATCH_COLUMNS} FROM cert_batches WHERE seq = ?"
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
            "SELECT {BATCH_COLUMNS} FROM cert_batches WHERE {column} = ?"
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
            "SELECT {BATCH_COLUMNS} FROM cert_batches WHERE seq < ? ORDER BY seq DESC LIMIT ?"
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
            "SELECT items, leaves, measurement_count FROM cert_batches WHERE seq = ?",
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
        // The first batch whose watermark reaches the id covers it: watermarks never go down.
        let sql = match kind {
            ItemKind::Measurement => format!(
                "SELECT {BATCH_COLUMNS} FROM cert_batches WHERE measurements_upto >= ? \
                 AND measurements_after < ? ORDER BY measurements_upto, seq LIMIT 1"
            ),
            ItemKind::Audit => format!(
                "SELECT {BATCH_COLUMNS} FROM cert_batches WHERE audit_upto >= ? \
                 AND audit_after < ? ORDER BY audit_upto, seq LIMIT 1"
            ),
        };
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id)
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
        let mut sql = QueryBuilder::<Sqlite>::new(sql!(Sqlite;
            "SELECT ",
            MEASUREMENT_COLUMNS,
            " FROM measurements WHERE id > "
        ));
        sql.push_bind(after.unwrap_or(0).max(batch.measurements.after.id))
            .push(" AND id <= ")
            .push_bind(batch.measurements.upto.id);
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
            .map(rows::measurement_from_row::<Sqlite>)
            .collect()
    }

    async fn batch_audit_entries(&self, batch: &Batch) -> StoreResult<Vec<AuditEntry>> {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "{AUDIT_LEAF_SELECT} AND a.id > ? AND a.id <= ? ORDER BY a.id"
        )))
        .bind(batch.audit.after.id)
        .bind(batch.audit.upto.id)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(rows::audit_entry_from_row::<Sqlite>)
        .collect()
    }

    async fn measurement_leaf(&self, id: i64) -> StoreResult<Option<LeafValues>> {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "{MEASUREMENT_LEAF_SELECT} WHERE m.id = ?"
        )))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        .as_ref()
        .map(rows::measurement_leaf_from_row::<Sqlite>)
        .transpose()
    }

    async fn audit_leaf(&self, id: i64) -> StoreResult<Option<(LeafValues, Vec<u8>)>> {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "{AUDIT_LEAF_SELECT} AND a.id = ?"
        )))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        .as_ref()
        .map(rows::audit_leaf_from_row::<Sqlite>)
        .transpose()
    }

    async fn certification_status(&self) -> StoreResult<CertificationStatus> {
        // The backlog first, then what history adds (the anchored batches, which grow).
        let backlog = self.certification_backlog().await?;
        let row = sqlx::query(
            "SELECT \
               (SELECT COUNT(*) FROM cert_batches WHERE tx_hash IS NULL) AS pending, \
               (SELECT COUNT(*) FROM cert_batches WHERE tx_hash IS NOT NULL) AS anchored, \
               (SELECT COALESCE(SUM(measurement_count), 0) FROM cert_batches \
                  WHERE tx_hash IS NOT NULL) AS certified",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(CertificationStatus {
            unbatched_measurements: backlog.unbatched_measurements,
            pending_batches: rows::u64_of::<Sqlite>(&row, "pending")?,
            pending_measurements: backlog.pending_measurements,
            anchored_batches: rows::u64_of::<Sqlite>(&row, "anchored")?,
            certified_measurements: rows::u64_of::<Sqlite>(&row, "certified")?,
        })
    }

    async fn certification_backlog(&self) -> StoreResult<CertificationBacklog> {
        let (m_upto, _) = watermarks(self).await?;
        let row = sqlx::query(
            "SELECT \
               (SELECT COUNT(*) FROM measurements WHERE id > ?) AS unbatched, \
               (SELECT COALESCE(SUM(measurement_count), 0) FROM cert_batches \
                  WHERE tx_hash IS NULL) AS pending_measurements",
        )
        .bind(m_upto)
        .fetch_one(&self.pool)
        .await?;
        Ok(CertificationBacklog {
            unbatched_measurements: rows::u64_of::<Sqlite>(&row, "unbatched")?,
            pending_measurements: rows::u64_of::<Sqlite>(&row, "pending_measurements")?,
        })
    }

    async fn chain_contract(&self, chain_id: u64) -> StoreResult<Option<Address>> {
        let row: Option<(Vec<u8>,)> =
            sqlx::query_as("SELECT contract FROM chain_contracts WHERE chain_id = ?")
                .bind(chain_id as i64)
                .fetch_optional(&self.pool)
                .await?;
        row.map(|(c,)| rows::address(&c, "contract")).transpose()
    }

    async fn remember_chain_contract(&self, chain_id: u64, contract: Address) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO chain_contracts (chain_id, contract, created_at) VALUES (?, ?, ?) \
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
