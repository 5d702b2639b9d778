//! [`CertificationStore`] on either backend.
//!
//! The two backends order items differently (see `crate::certification`): SQLite's single
//! writer assigns ids in commit order, so a mark is `(0, id)`; PostgreSQL orders by `(xid, id)`
//! and only up to the horizon of transactions still running. The queries are the same but for
//! those conditions (`sql!`'s `{ postgres, sqlite }` pieces) and for two steps each backend
//! takes its own way: [`Dialect::snapshot`] and [`Dialect::lock_batches`].

use alloy_primitives::{Address, B256};
use async_trait::async_trait;
use bal_core::merkle::LeafValues;
use bal_core::{Measurement, Username};
use sqlx::QueryBuilder;

use super::rows::{self, ms, time};
use super::{SqlStore, check_fence};
use crate::certification::{
    AnchorRecord, Batch, BatchKey, BatchLeaves, CertificationBacklog, CertificationStatus,
    CertificationStore, ItemKind, Mark, NewBatch, PendingItem, PendingItems, Span,
};
use crate::dialect::{BuilderExt, Dialect, Exec, QueryExt, get, sql};
use crate::error::corrupt;
use crate::{AuditEntry, Fence, StoreError, StoreResult};

/// A mark from two columns `<prefix>_xid` and `<prefix>_id`.
fn mark<DB: Dialect>(row: &DB::Row, xid: &str, id: &str) -> StoreResult<Mark> {
    Ok(Mark {
        xid: get::<DB, _>(row, xid)?,
        id: get::<DB, _>(row, id)?,
    })
}

fn span<DB: Dialect>(row: &DB::Row, kind: &str) -> StoreResult<Span> {
    let c = |part: &str| format!("{kind}_{part}");
    Ok(Span {
        after: mark::<DB>(row, &c("after_xid"), &c("after_id"))?,
        upto: mark::<DB>(row, &c("upto_xid"), &c("upto_id"))?,
    })
}

fn batch_from_row<DB: Dialect>(row: &DB::Row) -> StoreResult<Batch> {
    let tx_hash: Option<Vec<u8>> = get::<DB, _>(row, "tx_hash")?;
    let anchor = match tx_hash {
        None => None,
        Some(tx) => {
            let contract: Vec<u8> = get::<DB, _>(row, "contract")?;
            Some(AnchorRecord {
                chain_id: rows::u64_of::<DB>(row, "chain_id")?,
                contract: rows::address(&contract, "contract")?,
                tx_hash: B256::try_from(tx.as_slice()).map_err(|_| corrupt("tx_hash"))?,
                block_number: rows::u64_of::<DB>(row, "block_number")?,
                block_time: rows::u64_of::<DB>(row, "block_time")?,
                gas_used: rows::u64_of::<DB>(row, "gas_used")?,
                anchored_at: time(get::<DB, _>(row, "anchored_at")?)?,
            })
        }
    };
    Ok(Batch {
        seq: get::<DB, _>(row, "seq")?,
        root: rows::b256::<DB>(row, "root")?,
        leaf_count: rows::u64_of::<DB>(row, "leaf_count")? as u32,
        measurement_count: rows::u64_of::<DB>(row, "measurement_count")? as u32,
        measurements: span::<DB>(row, "m")?,
        audit: span::<DB>(row, "a")?,
        created_at: time(get::<DB, _>(row, "created_at")?)?,
        anchor,
    })
}

/// Where the next batch starts: the last batch's ends, or the beginning.
async fn last_marks<DB: Dialect>(on: Exec<'_, DB>) -> StoreResult<(Mark, Mark)> {
    let row = sqlx::query::<DB>(sql!(DB; LAST_MARKS)).optional(on).await?;
    match row {
        Some(r) => Ok((
            mark::<DB>(&r, "m_upto_xid", "m_upto_id")?,
            mark::<DB>(&r, "a_upto_xid", "a_upto_id")?,
        )),
        None => Ok((Mark::default(), Mark::default())),
    }
}

/// Measurements joined with their producer's wallet (deleted users keep theirs).
macro_rules! measurement_leaf_select {
    ($db:ty; $($rest:tt),+) => {
        sql!($db;
            "SELECT m.id, ", M_XID, ", m.topic, m.received_at, m.payload_hash, u.wallet \
             FROM measurements m JOIN users u ON u.username = m.producer",
            $($rest),+
        )
    };
}

/// The certified audit entries (grant decisions and set point transitions), each joined with
/// its topic (the grant's; `setpoints/<producer>/<device>` for a set point) and its producer's
/// wallet. The `CASE` keeps PostgreSQL from casting a grant's object to a number.
macro_rules! audit_leaf_select {
    ($db:ty; $($rest:tt),+) => {
        sql!($db;
            "SELECT a.id, ", A_XID, ", a.at, a.actor, a.action, a.object, a.detail, \
             COALESCE(s.topic, 'setpoints/' || p.producer || '/' || p.device) AS topic, \
             u.wallet FROM audit_log a \
             LEFT JOIN subscriptions s \
               ON a.object LIKE 'subscription:%' AND s.id = substr(a.object, 14) \
             LEFT JOIN setpoints p ON p.id = CASE WHEN a.object LIKE 'setpoint:%' \
               THEN CAST(substr(a.object, 10) AS BIGINT) END \
             JOIN users u ON u.username = COALESCE(s.producer, p.producer) \
             WHERE (a.action LIKE 'subscription.%' OR a.action LIKE 'setpoint.%')",
            $($rest),+
        )
    };
}

#[async_trait]
impl<DB: Dialect> CertificationStore for SqlStore<DB> {
    async fn pending_items(&self, max: u32) -> StoreResult<PendingItems> {
        // One snapshot for the last batch, the horizon and the rows, so that they agree.
        let (mut tx, horizon) = DB::snapshot(&self.pool).await?;
        let (m_after, a_after) = last_marks::<DB>((&mut tx).into()).await?;
        let audit_rows = sqlx::query::<DB>(audit_leaf_select!(DB;
            " AND ",
            {
                postgres: "(a.xid, a.id) > ($1, $2) AND a.xid < $3 ORDER BY a.xid, a.id",
                sqlite: "a.id > $2 ORDER BY a.id",
            },
            " LIMIT $4"
        ))
        .arg(a_after.xid)
        .arg(a_after.id)
        .arg(horizon)
        .arg(i64::from(max))
        .all(&mut tx)
        .await?;
        let room = i64::from(max) - audit_rows.len() as i64;
        let measurement_rows = sqlx::query::<DB>(measurement_leaf_select!(DB;
            " WHERE ",
            {
                postgres: "(m.xid, m.id) > ($1, $2) AND m.xid < $3 ORDER BY m.xid, m.id",
                sqlite: "m.id > $2 ORDER BY m.id",
            },
            " LIMIT $4"
        ))
        .arg(m_after.xid)
        .arg(m_after.id)
        .arg(horizon)
        .arg(room)
        .all(&mut tx)
        .await?;
        tx.commit().await?;
        let mut pending = PendingItems {
            items: Vec::with_capacity(audit_rows.len() + measurement_rows.len()),
            measurements: Span::at(m_after),
            audit: Span::at(a_after),
        };
        for row in &measurement_rows {
            pending.measurements.upto = mark::<DB>(row, "xid", "id")?;
            let values = rows::measurement_leaf_from_row::<DB>(row)?;
            pending.items.push(PendingItem {
                kind: ItemKind::Measurement,
                id: values.id as i64,
                values,
            });
        }
        for row in &audit_rows {
            pending.audit.upto = mark::<DB>(row, "xid", "id")?;
            let (values, _) = rows::audit_leaf_from_row::<DB>(row)?;
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
        DB::lock_batches(&mut tx.tx).await?;
        let (m_last, a_last) = last_marks::<DB>((&mut tx).into()).await?;
        if (m_last, a_last) != (b.measurements.after, b.audit.after) {
            return Err(StoreError::Conflict(
                "another batch was written meanwhile".into(),
            ));
        }
        let items: Vec<u8> = b.items.iter().flat_map(|i| i.to_be_bytes()).collect();
        let leaves: Vec<u8> = b.leaves.iter().flat_map(|l| l.0).collect();
        let row = sqlx::query::<DB>(sql!(DB;
            "INSERT INTO cert_batches (seq, root, leaf_count, measurement_count, ",
            {
                postgres: "m_after_xid, m_after_id, m_upto_xid, m_upto_id, a_after_xid, \
                           a_after_id, a_upto_xid, a_upto_id",
                sqlite: "measurements_after, measurements_upto, audit_after, audit_upto",
            },
            ", items, leaves, created_at) SELECT COALESCE(MAX(seq), 0) + 1, $1, $2, $3, ",
            {
                postgres: "$4, $5, $6, $7, $8, $9, $10, $11",
                sqlite: "$5, $7, $9, $11",
            },
            ", $12, $13, $14 FROM cert_batches RETURNING ",
            BATCH_COLUMNS
        ))
        .arg(b.root.as_slice())
        .arg(b.leaves.len() as i64)
        .arg(i64::from(b.measurement_count))
        .arg(b.measurements.after.xid)
        .arg(b.measurements.after.id)
        .arg(b.measurements.upto.xid)
        .arg(b.measurements.upto.id)
        .arg(b.audit.after.xid)
        .arg(b.audit.after.id)
        .arg(b.audit.upto.xid)
        .arg(b.audit.upto.id)
        .arg(items)
        .arg(leaves)
        .arg(ms(b.created_at))
        .optional(&mut tx)
        .await?
        .ok_or_else(|| corrupt("INSERT ... RETURNING returned no row"))?;
        let batch = batch_from_row::<DB>(&row)?;
        tx.commit(self).await?;
        Ok(batch)
    }

    async fn unanchored_batches(&self) -> StoreResult<Vec<Batch>> {
        sqlx::query::<DB>(sql!(DB;
            "SELECT ", BATCH_COLUMNS, " FROM cert_batches WHERE tx_hash IS NULL ORDER BY seq"
        ))
        .all(&self.pool)
        .await?
        .iter()
        .map(batch_from_row::<DB>)
        .collect()
    }

    async fn record_anchor(&self, seq: i64, a: &AnchorRecord, fence: &Fence) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        check_fence(&mut tx, fence).await?;
        let done = sqlx::query::<DB>(
            "UPDATE cert_batches SET chain_id = $1, contract = $2, tx_hash = $3, block_number = $4, \
             block_time = $5, gas_used = $6, anchored_at = $7 WHERE seq = $8 AND tx_hash IS NULL",
        )
        .arg(a.chain_id as i64)
        .arg(a.contract.as_slice())
        .arg(a.tx_hash.as_slice())
        .arg(a.block_number as i64)
        .arg(a.block_time as i64)
        .arg(a.gas_used as i64)
        .arg(ms(a.anchored_at))
        .arg(seq)
        .run(&mut tx)
        .await?;
        if done == 0 {
            return Err(StoreError::Conflict(format!(
                "batch {seq} is unknown or already anchored"
            )));
        }
        tx.commit(self).await?;
        Ok(())
    }

    async fn batch(&self, key: BatchKey) -> StoreResult<Option<Batch>> {
        let query = match key {
            BatchKey::Seq(seq) => sqlx::query::<DB>(sql!(DB;
                "SELECT ", BATCH_COLUMNS, " FROM cert_batches WHERE seq = $1"
            ))
            .arg(seq),
            BatchKey::Root(r) => sqlx::query::<DB>(sql!(DB;
                "SELECT ", BATCH_COLUMNS, " FROM cert_batches WHERE root = $1"
            ))
            .arg(r.to_vec()),
            BatchKey::Transaction(t) => sqlx::query::<DB>(sql!(DB;
                "SELECT ", BATCH_COLUMNS, " FROM cert_batches WHERE tx_hash = $1"
            ))
            .arg(t.to_vec()),
        };
        query
            .optional(&self.pool)
            .await?
            .as_ref()
            .map(batch_from_row::<DB>)
            .transpose()
    }

    async fn batches(&self, before: Option<i64>, limit: u32) -> StoreResult<Vec<Batch>> {
        sqlx::query::<DB>(sql!(DB;
            "SELECT ", BATCH_COLUMNS, " FROM cert_batches WHERE seq < $1 ORDER BY seq DESC LIMIT $2"
        ))
        .arg(before.unwrap_or(i64::MAX))
        .arg(i64::from(limit))
        .all(&self.pool)
        .await?
        .iter()
        .map(batch_from_row::<DB>)
        .collect()
    }

    async fn batch_leaves(&self, seq: i64) -> StoreResult<Option<BatchLeaves>> {
        let row = sqlx::query::<DB>(
            "SELECT items, leaves, measurement_count FROM cert_batches WHERE seq = $1",
        )
        .arg(seq)
        .optional(&self.pool)
        .await?;
        row.map(|row| {
            let items: Vec<u8> = get::<DB, _>(&row, "items")?;
            let leaves: Vec<u8> = get::<DB, _>(&row, "leaves")?;
            Ok(BatchLeaves {
                items: items
                    .chunks_exact(8)
                    .map(|c| i64::from_be_bytes(c.try_into().expect("8 bytes")))
                    .collect(),
                leaves: leaves.chunks_exact(32).map(B256::from_slice).collect(),
                measurement_count: rows::u64_of::<DB>(&row, "measurement_count")? as u32,
            })
        })
        .transpose()
    }

    async fn batch_of(&self, kind: ItemKind, id: i64) -> StoreResult<Option<Batch>> {
        // The first batch whose span ends at or after the item's mark covers it, if its span
        // starts before: spans continue each other in order.
        let sql = match kind {
            ItemKind::Measurement => sql!(DB;
                "SELECT ", BATCH_COLUMNS, " FROM cert_batches WHERE seq = (",
                {
                    postgres: "SELECT b.seq FROM measurements i, LATERAL (SELECT seq, \
                               m_after_xid, m_after_id FROM cert_batches \
                               WHERE (m_upto_xid, m_upto_id) >= (i.xid, i.id) \
                               ORDER BY m_upto_xid, m_upto_id, seq LIMIT 1) b \
                               WHERE i.id = $1 AND (b.m_after_xid, b.m_after_id) < (i.xid, i.id)",
                    sqlite: "SELECT seq FROM cert_batches WHERE measurements_upto >= $1 \
                             AND measurements_after < $1 ORDER BY measurements_upto, seq LIMIT 1",
                },
                ")"
            ),
            ItemKind::Audit => sql!(DB;
                "SELECT ", BATCH_COLUMNS, " FROM cert_batches WHERE seq = (",
                {
                    postgres: "SELECT b.seq FROM audit_log i, LATERAL (SELECT seq, \
                               a_after_xid, a_after_id FROM cert_batches \
                               WHERE (a_upto_xid, a_upto_id) >= (i.xid, i.id) \
                               ORDER BY a_upto_xid, a_upto_id, seq LIMIT 1) b \
                               WHERE i.id = $1 AND (b.a_after_xid, b.a_after_id) < (i.xid, i.id)",
                    sqlite: "SELECT seq FROM cert_batches WHERE audit_upto >= $1 \
                             AND audit_after < $1 ORDER BY audit_upto, seq LIMIT 1",
                },
                ")"
            ),
        };
        sqlx::query::<DB>(sql)
            .arg(id)
            .optional(&self.pool)
            .await?
            .as_ref()
            .map(batch_from_row::<DB>)
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
        let span = batch.measurements;
        let mut sql = QueryBuilder::<DB>::new(sql!(DB;
            "SELECT ", MEASUREMENT_COLUMNS, " FROM measurements WHERE "
        ));
        match DB::BACKEND {
            // PostgreSQL: the span in (xid, id) order.
            crate::Backend::Postgres => {
                sql.push("(xid, id) > (")
                    .push_arg(span.after.xid)
                    .push(", ")
                    .push_arg(span.after.id)
                    .push(") AND (xid, id) <= (")
                    .push_arg(span.upto.xid)
                    .push(", ")
                    .push_arg(span.upto.id)
                    .push(")");
            }
            // SQLite: ids in commit order (the rowid's range).
            crate::Backend::Sqlite => {
                sql.push("id > ")
                    .push_arg(span.after.id)
                    .push(" AND id <= ")
                    .push_arg(span.upto.id);
            }
        }
        sql.push(" AND id > ").push_arg(after.unwrap_or(0));
        if let Some(p) = producers {
            sql.push(" AND producer IN ")
                .push_list(p.iter().map(Username::as_str));
        }
        sql.push(" ORDER BY id LIMIT ").push_arg(i64::from(limit));
        sql.build()
            .all(&self.pool)
            .await?
            .iter()
            .map(rows::measurement_from_row::<DB>)
            .collect()
    }

    async fn batch_audit_entries(&self, batch: &Batch) -> StoreResult<Vec<AuditEntry>> {
        sqlx::query::<DB>(audit_leaf_select!(DB;
            " AND ",
            {
                postgres: "(a.xid, a.id) > ($1, $2) AND (a.xid, a.id) <= ($3, $4)",
                sqlite: "a.id > $2 AND a.id <= $4",
            },
            " ORDER BY a.id"
        ))
        .arg(batch.audit.after.xid)
        .arg(batch.audit.after.id)
        .arg(batch.audit.upto.xid)
        .arg(batch.audit.upto.id)
        .all(&self.pool)
        .await?
        .iter()
        .map(rows::audit_entry_from_row::<DB>)
        .collect()
    }

    async fn measurement_leaf(&self, id: i64) -> StoreResult<Option<LeafValues>> {
        sqlx::query::<DB>(measurement_leaf_select!(DB; " WHERE m.id = $1"))
            .arg(id)
            .optional(&self.pool)
            .await?
            .as_ref()
            .map(rows::measurement_leaf_from_row::<DB>)
            .transpose()
    }

    async fn audit_leaf(&self, id: i64) -> StoreResult<Option<(LeafValues, Vec<u8>)>> {
        sqlx::query::<DB>(audit_leaf_select!(DB; " AND a.id = $1"))
            .arg(id)
            .optional(&self.pool)
            .await?
            .as_ref()
            .map(rows::audit_leaf_from_row::<DB>)
            .transpose()
    }

    async fn certification_status(&self) -> StoreResult<CertificationStatus> {
        // The backlog first, then what history adds (the anchored batches, which grow).
        let backlog = self.certification_backlog().await?;
        let row = sqlx::query::<DB>(
            "SELECT \
               (SELECT COUNT(*) FROM cert_batches WHERE tx_hash IS NULL) AS pending, \
               (SELECT COUNT(*) FROM cert_batches WHERE tx_hash IS NOT NULL) AS anchored, \
               (SELECT CAST(COALESCE(SUM(measurement_count), 0) AS BIGINT) FROM cert_batches \
                  WHERE tx_hash IS NOT NULL) AS certified",
        )
        .optional(&self.pool)
        .await?
        .ok_or_else(|| corrupt("no status row"))?;
        Ok(CertificationStatus {
            unbatched_measurements: backlog.unbatched_measurements,
            pending_batches: rows::u64_of::<DB>(&row, "pending")?,
            pending_measurements: backlog.pending_measurements,
            anchored_batches: rows::u64_of::<DB>(&row, "anchored")?,
            certified_measurements: rows::u64_of::<DB>(&row, "certified")?,
        })
    }

    async fn certification_backlog(&self) -> StoreResult<CertificationBacklog> {
        let mut conn = self.pool.acquire().await?;
        let (m_upto, _) = last_marks::<DB>((&mut conn).into()).await?;
        let row = sqlx::query::<DB>(sql!(DB;
            "SELECT (SELECT COUNT(*) FROM measurements WHERE ",
            { postgres: "(xid, id) > ($1, $2)", sqlite: "id > $2" },
            ") AS unbatched, \
             (SELECT CAST(COALESCE(SUM(measurement_count), 0) AS BIGINT) FROM cert_batches \
                WHERE tx_hash IS NULL) AS pending_measurements"
        ))
        .arg(m_upto.xid)
        .arg(m_upto.id)
        .optional(&mut conn)
        .await?
        .ok_or_else(|| corrupt("no backlog row"))?;
        Ok(CertificationBacklog {
            unbatched_measurements: rows::u64_of::<DB>(&row, "unbatched")?,
            pending_measurements: rows::u64_of::<DB>(&row, "pending_measurements")?,
        })
    }

    async fn chain_contract(&self, chain_id: u64) -> StoreResult<Option<Address>> {
        let row = sqlx::query::<DB>("SELECT contract FROM chain_contracts WHERE chain_id = $1")
            .arg(chain_id as i64)
            .optional(&self.pool)
            .await?;
        row.map(|r| rows::address(&get::<DB, Vec<u8>>(&r, "contract")?, "contract"))
            .transpose()
    }

    async fn remember_chain_contract(&self, chain_id: u64, contract: Address) -> StoreResult<()> {
        sqlx::query::<DB>(
            "INSERT INTO chain_contracts (chain_id, contract, created_at) VALUES ($1, $2, $3) \
             ON CONFLICT (chain_id) DO UPDATE SET contract = excluded.contract",
        )
        .arg(chain_id as i64)
        .arg(contract.as_slice())
        .arg(ms(chrono::Utc::now()))
        .run(&self.pool)
        .await?;
        Ok(())
    }
}
