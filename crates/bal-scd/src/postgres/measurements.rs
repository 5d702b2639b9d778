//! [`MeasurementStore`] on PostgreSQL.

use bal_core::{Measurement, NewMeasurement};
use sqlx::postgres::PgPool;
use sqlx::{PgConnection, Postgres, QueryBuilder};

use super::get;
use crate::PgStore;
use crate::dialect::sql;
use crate::measurements::{StoredBatch, committed};
use crate::store::rows::{self, time};
use crate::store::{MeasurementOrder, redelivered_copy};
use crate::{
    Change, MeasurementCursor, MeasurementPage, MeasurementQuery, OpenBatch, StoreError,
    StoreResult, WrittenBatch,
};

impl MeasurementOrder for PgStore {
    async fn write_batch(&self, batch: &[NewMeasurement]) -> StoreResult<StoredBatch> {
        match self.open_batch(batch).await? {
            WrittenBatch::Committed(stored) => Ok(stored),
            WrittenBatch::Open(open) => open.commit().await,
        }
    }

    /// Everything but the commit: the ids (allocated here, so in the order of the calls), the
    /// stamp (read here) and the transaction id (taken by the first insert) follow the order
    /// in which batches are opened.
    async fn open_batch(&self, batch: &[NewMeasurement]) -> StoreResult<WrittenBatch> {
        let mut tx = self.begin_write().await?;
        // One round trip for the database's clock and an id for every item (ids of items that
        // turn out to be redeliveries are left unused: sequences have gaps anyway).
        let (stamp, mut free): (i64, Vec<i64>) = sqlx::query_as(
            "SELECT bal_now_ms(), ARRAY(SELECT nextval(pg_get_serial_sequence('measurements', 'id')) \
             FROM generate_series(1, $1))",
        )
        .bind(batch.len() as i64)
        .fetch_one(&mut *tx)
        .await?;
        free.sort_unstable();
        free.reverse();
        let mut ids = Vec::with_capacity(batch.len());
        // Whether each item was stored now (false: a redelivery of a stored measurement).
        let mut new = Vec::with_capacity(batch.len());
        let mut fresh: Vec<(i64, &NewMeasurement)> = Vec::with_capacity(batch.len());
        // Runs of new measurements go in one UNNEST insert each; a redelivery is looked up
        // first, in order, so it sees the rows inserted before it in the same batch.
        for m in batch {
            if let (Some(origin), true) = (m.origin, m.redelivered) {
                insert_rows(&mut tx, &fresh, stamp).await?;
                fresh.clear();
                if let Some(id) = redelivered_copy::<Postgres>(&mut tx, m, origin, stamp).await? {
                    ids.push(id);
                    new.push(false);
                    continue;
                }
            }
            let id = free
                .pop()
                .ok_or_else(|| crate::error::corrupt("fewer ids than items"))?;
            fresh.push((id, m));
            ids.push(id);
            new.push(true);
        }
        insert_rows(&mut tx, &fresh, stamp).await?;
        let stored: Vec<i64> = ids
            .iter()
            .zip(&new)
            .filter(|(_, n)| **n)
            .map(|(i, _)| *i)
            .collect();
        if !stored.is_empty() && self.feed.wants_measurements() {
            let rows = committed(batch, &ids, &new, time(stamp)?);
            tx.announce(Change::Measurements(rows.into()));
        }
        Ok(WrittenBatch::Open(Box::new(PgOpenBatch {
            tx,
            feed: self.feed.clone(),
            notices: self.side.measurement_notices.clone(),
            stored,
            batch: StoredBatch::of(ids, &new),
        })))
    }

    async fn history_page(&self, query: &MeasurementQuery) -> StoreResult<MeasurementPage> {
        // Commit order: by writing transaction, and only transactions older than every one
        // still running, so a later commit never lands behind the cursor.
        let elsewhere: Vec<i64> = sqlx::query_scalar("SELECT bal_xids_elsewhere()")
            .fetch_one(&self.pool)
            .await?;
        let mut sql = QueryBuilder::<Postgres>::new(sql!(Postgres;
            "SELECT ",
            MEASUREMENT_COLUMNS,
            ", xid FROM measurements WHERE xid < bal_xid_horizon("
        ));
        sql.push_bind(elsewhere).push(" || bal_xids_elsewhere())");
        crate::store::push_history_filters(&mut sql, query, "xid");
        let rows = sql.build().fetch_all(&self.pool).await?;
        let items = rows
            .iter()
            .map(rows::measurement_from_row::<Postgres>)
            .collect::<StoreResult<Vec<_>>>()?;
        let last = match rows.last() {
            Some(row) => Some(MeasurementCursor {
                key: get(row, "xid")?,
                id: get(row, "id")?,
            }),
            None => None,
        };
        Ok(MeasurementPage::new(items, query.limit, last))
    }
}

/// A batch of measurements written, not yet committed.
struct PgOpenBatch {
    tx: crate::store::Write<Postgres>,
    feed: crate::ChangeFeed,
    notices: tokio::sync::mpsc::UnboundedSender<Vec<i64>>,
    /// The ids of the rows stored now (not of redeliveries).
    stored: Vec<i64>,
    batch: StoredBatch,
}

#[async_trait::async_trait]
impl OpenBatch for PgOpenBatch {
    async fn commit(self: Box<Self>) -> StoreResult<StoredBatch> {
        let this = *self;
        this.tx.commit_measurements(&this.feed).await?;
        if !this.stored.is_empty() {
            // After the commit, not in it: see `listener::spawn_notifier`.
            let _ = this.notices.send(this.stored);
        }
        Ok(this.batch)
    }
}

/// Measurements by id, in id order (for other processes' notifications).
pub(super) async fn by_ids(pool: &PgPool, ids: &[i64]) -> StoreResult<Vec<Measurement>> {
    sqlx::query(sql!(Postgres;
        "SELECT ",
        MEASUREMENT_COLUMNS,
        " FROM measurements WHERE id = ANY($1) ORDER BY id"
    ))
    .bind(ids)
    .fetch_all(pool)
    .await?
    .iter()
    .map(rows::measurement_from_row::<Postgres>)
    .collect()
}

/// Inserts `rows` (with their allocated ids) in one statement of arrays: one round trip and
/// one plan whatever the batch size.
async fn insert_rows(
    conn: &mut PgConnection,
    rows: &[(i64, &NewMeasurement)],
    received_at_ms: i64,
) -> StoreResult<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let mut ids = Vec::with_capacity(rows.len());
    let mut producers = Vec::with_capacity(rows.len());
    let mut topics = Vec::with_capacity(rows.len());
    let mut payloads = Vec::with_capacity(rows.len());
    let mut hashes = Vec::with_capacity(rows.len());
    let mut fields = Vec::with_capacity(rows.len());
    let mut origins = Vec::with_capacity(rows.len());
    for (id, m) in rows {
        ids.push(*id);
        producers.push(m.producer.as_str());
        topics.push(m.topic.as_str());
        payloads.push(&m.payload[..]);
        hashes.push(m.payload_hash.as_slice());
        fields.push(
            m.fields
                .as_ref()
                .map(|f| serde_json::to_string(f).map_err(StoreError::backend))
                .transpose()?,
        );
        origins.push(m.origin);
    }
    sqlx::query(
        "INSERT INTO measurements \
         (id, producer, topic, received_at, payload, payload_hash, fields, origin) \
         SELECT u.id, u.producer, u.topic, $8, u.payload, u.payload_hash, u.fields, u.origin \
         FROM UNNEST($1::bigint[], $2::text[], $3::text[], $4::bytea[], $5::bytea[], $6::text[], \
                     $7::bigint[]) AS u(id, producer, topic, payload, payload_hash, fields, origin)",
    )
    .bind(ids)
    .bind(producers)
    .bind(topics)
    .bind(payloads)
    .bind(hashes)
    .bind(fields)
    .bind(origins)
    .bind(received_at_ms)
    .execute(conn)
    .await?;
    Ok(())
}
