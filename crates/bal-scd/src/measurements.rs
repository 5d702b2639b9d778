//! Measurements: ingest and history.

use std::fmt;
use std::str::FromStr;

use async_trait::async_trait;
use bal_core::{Measurement, NewMeasurement, Username};
use chrono::{DateTime, Utc};

use crate::StoreResult;

/// Filters for reading measurements, in the backend's page order (see [`MeasurementCursor`]).
#[derive(Debug, Clone)]
pub struct MeasurementQuery {
    /// Whose measurements: these producers' (none: an empty page), or everyone's (`None`).
    pub producers: Option<Vec<Username>>,
    /// Only measurements received at or after this time.
    pub from: Option<DateTime<Utc>>,
    /// Only measurements received before this time.
    pub to: Option<DateTime<Utc>>,
    /// Only measurements after this position: the cursor of the previous page.
    pub after: Option<MeasurementCursor>,
    pub limit: u32,
}

/// A position in the history: `<key>-<id>`, opaque to clients.
///
/// Pages come in **commit order**, so that a reader paging while writers commit sees every row
/// exactly once:
/// - SQLite has one writer at a time; reception times are stamped from the database's clock
///   under its write lock and never go backwards, so `key` is the reception time (ms) and the
///   order is also time order.
/// - PostgreSQL commits concurrently, and a lower id or an earlier time can commit after a
///   higher one. `key` is the id of the transaction that wrote the row, and a page only holds
///   rows of transactions older than every transaction still running (`pg_snapshot_xmin`), so
///   no row can later appear before a position already returned. Rows of one transaction are
///   ordered by id. Reception times are the database's clock at commit and follow this order
///   to within the length of a transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MeasurementCursor {
    pub key: i64,
    pub id: i64,
}

impl fmt::Display for MeasurementCursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.key, self.id)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed cursor")]
pub struct MalformedCursor;

impl FromStr for MeasurementCursor {
    type Err = MalformedCursor;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (key, id) = s.split_once('-').ok_or(MalformedCursor)?;
        Ok(Self {
            key: key.parse().map_err(|_| MalformedCursor)?,
            id: id.parse().map_err(|_| MalformedCursor)?,
        })
    }
}

/// One page of history.
#[derive(Debug, Clone, Default)]
pub struct MeasurementPage {
    pub items: Vec<Measurement>,
    /// Where the next page starts; `None` when this page was not full (the last page).
    pub next: Option<MeasurementCursor>,
    /// After this page's last row, full page or not: where a reader following new rows
    /// resumes. `None` for an empty page.
    pub resume: Option<MeasurementCursor>,
}

impl MeasurementPage {
    /// The empty page of a query that names no producer at all (a consumer with no grant):
    /// answered without asking the database.
    pub(crate) fn nothing_readable(query: &MeasurementQuery) -> Option<Self> {
        let none = query.producers.as_ref().is_some_and(Vec::is_empty);
        none.then(|| Self::new(Vec::new(), query.limit, None))
    }

    /// A page of `items` read with `limit`, whose last row is at `last`.
    pub(crate) fn new(
        items: Vec<Measurement>,
        limit: u32,
        last: Option<MeasurementCursor>,
    ) -> Self {
        let next = last.filter(|_| items.len() == limit as usize);
        Self {
            items,
            next,
            resume: last,
        }
    }
}

/// Measurements.
///
/// Guarantees, on every backend and with any number of writers (processes included):
/// - a batch is stored all or nothing, and its ids are returned in order;
/// - reception times come from the database's clock, not a process's;
/// - a redelivered item (MQTT DUP) whose origin and payload hash match one of the producer's
///   latest rows of the last 15 minutes is not stored again: it gets that row's id. There is no
///   unique key on the origin, since packet ids wrap within minutes at 200 msg/s;
/// - history pages never skip or repeat a row (see [`MeasurementCursor`]).
#[async_trait]
pub trait MeasurementStore: Send + Sync {
    /// Stores a batch in one transaction, all or nothing; returns one id per item, in order,
    /// and how many items were redeliveries of stored measurements (not stored again).
    async fn store_measurements(&self, batch: &[NewMeasurement]) -> StoreResult<StoredBatch>;
    /// [`MeasurementStore::store_measurements`], the ids only.
    async fn insert_measurements(&self, batch: &[NewMeasurement]) -> StoreResult<Vec<i64>> {
        Ok(self.store_measurements(batch).await?.ids)
    }
    /// [`MeasurementStore::store_measurements`], but where the backend can overlap commits
    /// (PostgreSQL) the transaction is left open: the group commit writes the next batch
    /// while this one commits. Ids, reception times and transaction ids follow the order of
    /// the calls; the caller commits in that same order, and commits a batch only once the
    /// one before it committed. Backends that cannot overlap (SQLite: one writer at a time)
    /// commit at once.
    async fn open_batch(&self, batch: &[NewMeasurement]) -> StoreResult<WrittenBatch> {
        Ok(WrittenBatch::Committed(
            self.store_measurements(batch).await?,
        ))
    }
    async fn measurement(&self, id: i64) -> StoreResult<Option<Measurement>>;
    async fn measurements(&self, query: &MeasurementQuery) -> StoreResult<MeasurementPage>;
}

/// What [`MeasurementStore::open_batch`] did with a batch.
pub enum WrittenBatch {
    Committed(StoredBatch),
    /// Written in a transaction still open: [`OpenBatch::commit`] commits it; dropping it
    /// rolls it back.
    Open(Box<dyn OpenBatch>),
}

/// A batch written in a transaction not yet committed.
#[async_trait]
pub trait OpenBatch: Send {
    async fn commit(self: Box<Self>) -> StoreResult<StoredBatch>;
}

/// What [`MeasurementStore::store_measurements`] did with a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredBatch {
    /// One per item, in order: the new row's, or the stored one a redelivery repeats.
    pub ids: Vec<i64>,
    /// How many items were redeliveries, not stored again.
    pub duplicates: usize,
}

impl StoredBatch {
    /// The ids of a batch, and for each item whether it was new (else a redelivery).
    pub(crate) fn of(ids: Vec<i64>, new: &[bool]) -> Self {
        let duplicates = new.iter().filter(|n| !**n).count();
        Self { ids, duplicates }
    }
}

/// How far back a redelivery is looked for: longer than a client takes to reconnect and resend
/// after a BAL restart. Older duplicates are stored again (and still carry their origin).
pub(crate) const REDELIVERY_WINDOW_MS: i64 = 15 * 60 * 1000;

/// At most this many of the producer's latest rows are searched per redelivery, so that a
/// reconnect storm of a busy producer cannot hold a writer for long (each lookup is a few
/// milliseconds); it also keeps a reused packet id from matching a message long gone by.
pub(crate) const REDELIVERY_SCAN_ROWS: i64 = 50_000;

/// The measurements a batch stored (leaving out redeliveries that were not stored again), as
/// the change feed announces them.
pub(crate) fn committed(
    batch: &[NewMeasurement],
    ids: &[i64],
    stored: &[bool],
    received_at: DateTime<Utc>,
) -> Vec<bal_core::Measurement> {
    batch
        .iter()
        .zip(ids)
        .zip(stored)
        .filter(|(_, is_new)| **is_new)
        .map(|((m, &id), _)| bal_core::Measurement {
            id,
            producer: m.producer.clone(),
            topic: m.topic.clone(),
            received_at,
            payload: m.payload.clone(),
            payload_hash: m.payload_hash,
            fields: m.fields.clone(),
        })
        .collect()
}
