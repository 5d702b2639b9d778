//! [`MeasurementStore`] on SQLite.

use bal_core::NewMeasurement;
use sqlx::{QueryBuilder, Sqlite, SqliteConnection};

use crate::SqliteStore;
use crate::dialect::sql;
use crate::measurements::{StoredBatch, committed};
use crate::store::rows::{self, ms, time};
use crate::store::{MeasurementOrder, redelivered_copy};
use crate::{
    Change, MeasurementCursor, MeasurementPage, MeasurementQuery, StoreError, StoreResult,
    WrittenBatch,
};

impl MeasurementOrder for SqliteStore {
    async fn write_batch(&self, batch: &[NewMeasurement]) -> StoreResult<StoredBatch> {
        let mut tx = self.begin_write().await?;
        let stamp = super::stamp(&mut tx).await?;
        let mut ids = Vec::with_capacity(batch.len());
        // Whether each item was stored now (false: a redelivery of a stored measurement).
        let mut new = Vec::with_capacity(batch.len());
        let mut fresh: Vec<&NewMeasurement> = Vec::with_capacity(batch.len());
        // Runs of new measurements go in multi-row INSERTs; a redelivery is looked up first,
        // in order, so it sees the rows inserted before it in the same batch.
        for m in batch {
            if let (Some(origin), true) = (m.origin, m.redelivered) {
                insert_rows(&mut tx, &fresh, stamp, &mut ids).await?;
                new.resize(ids.len(), true);
                fresh.clear();
                if let Some(id) = redelivered_copy::<Sqlite>(&mut tx, m, origin, stamp).await? {
                    ids.push(id);
                    new.push(false);
                    continue;
                }
            }
            fresh.push(m);
        }
        insert_rows(&mut tx, &fresh, stamp, &mut ids).await?;
        new.resize(ids.len(), true);
        if self.feed.wants_measurements() {
            let stored = committed(batch, &ids, &new, time(stamp)?);
            if !stored.is_empty() {
                tx.announce(Change::Measurements(stored.into()));
            }
        }
        tx.commit(self).await?;
        Ok(StoredBatch::of(ids, &new))
    }

    /// One writer at a time: a second transaction would wait for this one's lock, so there is
    /// nothing to overlap.
    async fn open_batch(&self, batch: &[NewMeasurement]) -> StoreResult<WrittenBatch> {
        Ok(WrittenBatch::Committed(self.write_batch(batch).await?))
    }

    async fn history_page(&self, query: &MeasurementQuery) -> StoreResult<MeasurementPage> {
        let mut sql = QueryBuilder::<Sqlite>::new(sql!(Sqlite;
            "SELECT ",
            MEASUREMENT_COLUMNS,
            " FROM measurements WHERE 1 = 1"
        ));
        crate::store::push_history_filters(&mut sql, query, "received_at");
        let items = sql
            .build()
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(rows::measurement_from_row::<Sqlite>)
            .collect::<StoreResult<Vec<_>>>()?;
        // Reception times are stamped in commit order, for every producer at once (`stamp`).
        let last = items.last().map(|m| MeasurementCursor {
            key: ms(m.received_at),
            id: m.id,
        });
        Ok(MeasurementPage::new(items, query.limit, last))
    }
}

/// Rows per INSERT statement: 7 parameters each stays far below SQLite's 32 766.
const ROWS_PER_INSERT: usize = 500;

/// Inserts `rows` with multi-row INSERTs and appends their ids to `ids`, in order. Inside the
/// write transaction nobody else inserts, so one statement's AUTOINCREMENT ids are consecutive
/// and end at `last_insert_rowid`.
async fn insert_rows(
    conn: &mut SqliteConnection,
    rows: &[&NewMeasurement],
    received_at_ms: i64,
    ids: &mut Vec<i64>,
) -> StoreResult<()> {
    for chunk in rows.chunks(ROWS_PER_INSERT) {
        let mut fields = Vec::with_capacity(chunk.len());
        for m in chunk {
            fields.push(
                m.fields
                    .as_ref()
                    .map(|f| serde_json::to_string(f).map_err(StoreError::backend))
                    .transpose()?,
            );
        }
        let mut sql = QueryBuilder::<Sqlite>::new(
            "INSERT INTO measurements \
             (producer, topic, received_at, payload, payload_hash, fields, origin) ",
        );
        sql.push_values(chunk.iter().zip(fields), |mut row, (m, f)| {
            row.push_bind(m.producer.as_str())
                .push_bind(m.topic.as_str())
                .push_bind(received_at_ms)
                .push_bind(&m.payload[..])
                .push_bind(m.payload_hash.as_slice())
                .push_bind(f)
                .push_bind(m.origin);
        });
        let done = sql.build().execute(&mut *conn).await?;
        let last = done.last_insert_rowid();
        let first = last - chunk.len() as i64 + 1;
        ids.extend(first..=last);
    }
    Ok(())
}
