//! What the SCD keeps of certification: Merkle batches, their anchors, and the items in them.
//!
//! A batch covers a span of items in the backend's certification order, from the mark after
//! the previous batch's last item to its own last item. Certification needs no write per item
//! on the ingest path; what makes a span safe with concurrent writers is that it only ever
//! ends at an item after which no earlier item can still commit:
//! - SQLite: one writer at a time assigns ids in commit order; the mark is `(0, id)`.
//! - PostgreSQL: every row carries the id of the transaction that wrote it (`xid`, a column
//!   default of `pg_current_xact_id()`); the order is `(xid, id)`, and `pending_items` only
//!   takes rows whose `xid` is below the horizon `bal_xid_horizon(..)`: the oldest transaction
//!   of this database still running in the current snapshot (`pg_snapshot_xip`, less those
//!   that `pg_stat_activity`, read just before, showed running in other databases). Every transaction below it has ended, so no
//!   row can appear later inside a span already batched. (A claim column on the audit row is
//!   impossible, the log being append-only, and a side table of claims would cost a write per
//!   measurement on the ingest path.) The price: a writing transaction left open on this
//!   database (or one the BAL's role cannot place, such as a prepared transaction) holds
//!   certification back until it ends; the BAL's own transactions are short.

use alloy_primitives::{Address, B256};
use async_trait::async_trait;
use bal_core::merkle::LeafValues;
use bal_core::{Measurement, Username};
use chrono::{DateTime, Utc};

use crate::cluster::Fence;
use crate::{AuditEntry, StoreResult};

/// The two kinds of certified item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ItemKind {
    Measurement,
    /// An audit log entry of a grant decision.
    Audit,
}

/// An item waiting for a batch, with the values its leaf is made of.
#[derive(Debug, Clone, PartialEq)]
pub struct PendingItem {
    pub kind: ItemKind,
    pub id: i64,
    pub values: LeafValues,
}

/// A position in the certification order of one kind of item: `(xid, id)`, compared in that
/// order (`xid` is 0 on SQLite).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Mark {
    pub xid: i64,
    pub id: i64,
}

/// The items of one kind a batch covers: those after `after`, up to and including `upto`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Span {
    pub after: Mark,
    pub upto: Mark,
}

impl Span {
    /// An empty span starting where `mark` is.
    pub fn at(mark: Mark) -> Self {
        Self {
            after: mark,
            upto: mark,
        }
    }

    pub fn contains(&self, mark: Mark) -> bool {
        self.after < mark && mark <= self.upto
    }
}

/// The next items to certify, and the spans a batch of them covers.
#[derive(Debug, Clone, Default)]
pub struct PendingItems {
    /// Measurements first (by id), then audit entries (by id).
    pub items: Vec<PendingItem>,
    pub measurements: Span,
    pub audit: Span,
}

/// A batch about to be written: `items` and `leaves` in the tree's input order.
#[derive(Debug, Clone)]
pub struct NewBatch {
    pub root: B256,
    pub measurement_count: u32,
    pub items: Vec<i64>,
    pub leaves: Vec<B256>,
    pub measurements: Span,
    pub audit: Span,
    pub created_at: DateTime<Utc>,
}

impl NewBatch {
    /// The batch of everything `pending` holds, whose `leaves` (the items' leaves, in order)
    /// make the tree of `root`; created now.
    pub fn of(pending: &PendingItems, leaves: Vec<B256>, root: B256) -> Self {
        let measurement_count = pending
            .items
            .iter()
            .filter(|i| i.kind == ItemKind::Measurement)
            .count() as u32;
        Self {
            root,
            measurement_count,
            items: pending.items.iter().map(|i| i.id).collect(),
            leaves,
            measurements: pending.measurements,
            audit: pending.audit,
            created_at: Utc::now(),
        }
    }
}

/// Where and when a batch's root was anchored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AnchorRecord {
    pub chain_id: u64,
    pub contract: Address,
    pub tx_hash: B256,
    pub block_number: u64,
    /// The block's timestamp, Unix seconds.
    pub block_time: u64,
    pub gas_used: u64,
    /// When the BAL saw the receipt.
    pub anchored_at: DateTime<Utc>,
}

/// A batch without its item lists.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    /// The batch's number, also its on-chain `batchId`.
    pub seq: i64,
    pub root: B256,
    pub leaf_count: u32,
    pub measurement_count: u32,
    pub measurements: Span,
    pub audit: Span,
    pub created_at: DateTime<Utc>,
    /// `None` while pending.
    pub anchor: Option<AnchorRecord>,
}

/// A batch's items and leaf hashes, in the tree's input order.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchLeaves {
    pub items: Vec<i64>,
    pub leaves: Vec<B256>,
    /// The first `measurement_count` items are measurements, the rest audit entries.
    pub measurement_count: u32,
}

impl BatchLeaves {
    /// The leaf index of an item, if it is in the batch.
    pub fn index_of(&self, kind: ItemKind, id: i64) -> Option<usize> {
        let split = self.measurement_count as usize;
        let (range, offset) = match kind {
            ItemKind::Measurement => (&self.items[..split], 0),
            ItemKind::Audit => (&self.items[split..], split),
        };
        range.binary_search(&id).ok().map(|i| i + offset)
    }
}

/// How a batch is looked up.
#[derive(Debug, Clone, Copy)]
pub enum BatchKey {
    Seq(i64),
    Root(B256),
    Transaction(B256),
}

/// The certification backlog, for health and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CertificationStatus {
    /// Measurements stored but in no batch yet.
    pub unbatched_measurements: u64,
    /// Batches written but not anchored yet.
    pub pending_batches: u64,
    /// Measurements in those batches.
    pub pending_measurements: u64,
    pub anchored_batches: u64,
    /// Measurements in anchored batches.
    pub certified_measurements: u64,
}

/// Measurements stored but not yet anchored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CertificationBacklog {
    /// In no batch yet.
    pub unbatched_measurements: u64,
    /// In batches written but not anchored yet.
    pub pending_measurements: u64,
}

/// The certification part of the SCD.
///
/// Guarantees, on every backend and with any number of writers (processes included): every
/// committed measurement and grant decision is in exactly one batch (spans continue each other
/// without gap or overlap, and never end before an item that can still commit); a batch is
/// written before its anchor is sent and its anchor recorded once.
#[async_trait]
pub trait CertificationStore: Send + Sync {
    /// Up to `max` items not in any batch yet, measurements before audit entries of grant
    /// decisions; leaf values carry the producer's wallet as of now (wallets never change).
    async fn pending_items(&self, max: u32) -> StoreResult<PendingItems>;
    /// Writes a batch, if `fence` still holds the certification lease. `Conflict` when its spans
    /// do not continue the last batch's (another certifier got there first) or the lease is lost.
    async fn create_batch(&self, batch: &NewBatch, fence: &Fence) -> StoreResult<Batch>;
    /// Batches not anchored yet, oldest first.
    async fn unanchored_batches(&self) -> StoreResult<Vec<Batch>>;
    /// Records a batch's anchor, if `fence` still holds the certification lease (`Conflict`
    /// otherwise: the next holder finds the anchor on chain and records it).
    async fn record_anchor(
        &self,
        seq: i64,
        anchor: &AnchorRecord,
        fence: &Fence,
    ) -> StoreResult<()>;
    async fn batch(&self, key: BatchKey) -> StoreResult<Option<Batch>>;
    /// Newest first; only batches numbered below `before` when given.
    async fn batches(&self, before: Option<i64>, limit: u32) -> StoreResult<Vec<Batch>>;
    async fn batch_leaves(&self, seq: i64) -> StoreResult<Option<BatchLeaves>>;
    /// The batch an item is in, if it is in one yet.
    async fn batch_of(&self, kind: ItemKind, id: i64) -> StoreResult<Option<Batch>>;
    /// The measurements of a batch from `producers` (all when `None`), by id, with ids above
    /// `after`.
    async fn batch_measurements(
        &self,
        batch: &Batch,
        producers: Option<&[Username]>,
        after: Option<i64>,
        limit: u32,
    ) -> StoreResult<Vec<Measurement>>;
    /// The certified audit entries of a batch, by id.
    async fn batch_audit_entries(&self, batch: &Batch) -> StoreResult<Vec<AuditEntry>>;
    /// The certified values of one measurement (its producer may have been deleted since).
    async fn measurement_leaf(&self, id: i64) -> StoreResult<Option<LeafValues>>;
    /// The certified values and payload of one audit entry (grant decisions only).
    async fn audit_leaf(&self, id: i64) -> StoreResult<Option<(LeafValues, Vec<u8>)>>;
    async fn certification_status(&self) -> StoreResult<CertificationStatus>;
    /// What [`CertificationStatus`] says of the work still to do, alone: cheap at any size
    /// (the unbatched tail and the pending batches, by index), for `/metrics` at every scrape.
    /// The full status also counts every anchored batch, which grows with history.
    async fn certification_backlog(&self) -> StoreResult<CertificationBacklog>;
    /// The certification contract remembered for a chain.
    async fn chain_contract(&self, chain_id: u64) -> StoreResult<Option<Address>>;
    async fn remember_chain_contract(&self, chain_id: u64, contract: Address) -> StoreResult<()>;
}
