//! The certifier: a background worker that, every batch window, puts everything stored but not
//! yet certified (measurements, and the audit entries of grant decisions) into Merkle batches of
//! at most `max_batch` leaves and anchors each root in one transaction.
//!
//! A batch is written to the SCD *before* its anchor is sent, and its anchor recorded after the
//! receipt. So after a crash, a restart or a chain outage, every batch without an anchor is
//! resumed: if its root is on chain already (the transaction went through but the receipt was
//! never recorded) the anchor is recognised and recorded; otherwise it is sent again. The
//! contract refuses a root twice, so nothing is ever anchored twice, and nothing stored is left
//! out, because batches follow the SCD's watermarks.
//!
//! With several replicas on one database, only the holder of the certification lease
//! ([`bal_scd::CERTIFY_LEASE`], on the database's clock) batches and anchors; the others try to
//! take it every window, so one of them takes over within the lease's length when the holder
//! dies. Writing a batch and recording an anchor check the lease in their own transaction
//! (fencing): a holder that lost the lease while it waited for a receipt writes nothing, and
//! the next holder recognises its anchor on chain instead of sending the root again.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use alloy_primitives::{B256, U256};
use bal_core::merkle::MerkleTree;
use bal_metrics::Metrics;
use bal_scd::{
    AnchorRecord, Batch, CERTIFY_LEASE, CertificationStore, ClusterStore, Fence, NewBatch,
    SharedStore, StoreError,
};
use chrono::{DateTime, Utc};
use tokio::sync::watch;

use crate::{Anchor, LedgerError, SharedLedger};

#[derive(Debug, Clone, Copy)]
pub struct CertifierConfig {
    /// How often stored items are batched: the most a measurement waits for its batch.
    pub window: Duration,
    /// The most leaves in one tree.
    pub max_batch: u32,
    /// How long the certification lease lasts unless renewed: the longest a dead holder's
    /// work waits for another replica (renewed every third of it).
    pub lease: Duration,
}

impl Default for CertifierConfig {
    fn default() -> Self {
        Self {
            window: Duration::from_millis(1000),
            max_batch: 50_000,
            lease: Duration::from_secs(10),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CertifyError {
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What the certifier last did, for health checks.
#[derive(Debug, Clone, Default)]
pub struct CertifierHealth {
    pub last_anchor_at: Option<DateTime<Utc>>,
    /// The last round's failure, cleared by a round that succeeds.
    pub last_error: Option<String>,
    pub batches_anchored: u64,
    pub leaves_anchored: u64,
    /// Whether this process held the certification lease at its last round.
    pub leader: bool,
}

/// What the certifier reads and writes: batches and anchors, and the lease that lets one
/// replica certify at a time. `From` a whole store.
#[derive(Clone)]
pub struct CertifierStores {
    pub batches: Arc<dyn CertificationStore>,
    pub leases: Arc<dyn ClusterStore>,
}

impl From<SharedStore> for CertifierStores {
    fn from(store: SharedStore) -> Self {
        Self {
            batches: store.clone(),
            leases: store,
        }
    }
}

pub struct Certifier {
    batches: Arc<dyn CertificationStore>,
    leases: Arc<dyn ClusterStore>,
    ledger: SharedLedger,
    config: CertifierConfig,
    /// This replica's id: the lease holder's name.
    holder: String,
    health: Arc<Mutex<CertifierHealth>>,
    metrics: Arc<Metrics>,
}

/// The on-chain batch id of batch `seq`: the number, as a 32-byte word.
pub fn batch_id(seq: i64) -> B256 {
    B256::from(U256::from(seq as u64))
}

/// The longest pause between retries while the chain is out.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// The pause after a failed round: doubling from the batch window up to [`MAX_BACKOFF`] (or
/// the window itself, when that is longer).
fn backoff(pause: Duration, window: Duration) -> Duration {
    (pause * 2).clamp(window, MAX_BACKOFF.max(window))
}

impl Certifier {
    /// A certifier that anchors while `holder` (the replica id) holds the certification lease.
    pub fn new(
        stores: impl Into<CertifierStores>,
        ledger: SharedLedger,
        config: CertifierConfig,
        holder: impl Into<String>,
    ) -> Self {
        let CertifierStores { batches, leases } = stores.into();
        Self {
            batches,
            leases,
            ledger,
            config,
            holder: holder.into(),
            health: Arc::default(),
            metrics: Arc::default(),
        }
    }

    /// Counts batches, anchor latency and failures in `metrics` (a private registry otherwise).
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = metrics;
        self
    }

    /// A handle on the health the worker reports.
    pub fn health(&self) -> Arc<Mutex<CertifierHealth>> {
        self.health.clone()
    }

    /// Runs rounds every batch window until `stop` turns true, renewing the lease meanwhile so
    /// that a long round (a slow receipt) keeps it; gives the lease up on the way out, so that
    /// another replica takes over at once. A round interrupted by the stop is simply resumed at
    /// the next start, here or elsewhere.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let renewal = tokio::spawn(renew_lease(
            self.leases.clone(),
            self.holder.clone(),
            self.config.lease,
        ));
        self.rounds(&mut stop).await;
        renewal.abort();
        if let Err(e) = self
            .leases
            .release_if_held(CERTIFY_LEASE, &self.holder)
            .await
        {
            tracing::warn!(error = %e.report(), "could not give up the certification lease");
        }
    }

    async fn rounds(&self, stop: &mut watch::Receiver<bool>) {
        let mut pause = self.config.window;
        loop {
            tokio::select! {
                () = tokio::time::sleep(pause) => {}
                _ = stop.changed() => return,
            }
            let round = tokio::select! {
                r = self.round() => r,
                _ = stop.changed() => return,
            };
            pause = match round {
                Ok(_) => {
                    self.health.lock().expect("health lock").last_error = None;
                    self.config.window
                }
                Err(e) => {
                    self.metrics.anchor_failed();
                    tracing::warn!(error = %e, chain = %self.ledger.describe(), "certification paused; retrying");
                    self.health.lock().expect("health lock").last_error = Some(e.to_string());
                    backoff(pause, self.config.window)
                }
            };
        }
    }

    /// The lease, taken or renewed for this replica; `None` while another holds it.
    async fn held_lease(&self) -> Result<Option<Fence>, StoreError> {
        self.leases
            .acquire_lease(CERTIFY_LEASE, &self.holder, self.config.lease)
            .await
    }

    /// One round, if this replica holds the lease (or takes it now): settles the batches left
    /// pending, then batches and anchors everything stored so far. Returns the batches
    /// anchored (none while another replica holds the lease).
    pub async fn round(&self) -> Result<Vec<Batch>, CertifyError> {
        let fence = self.held_lease().await?;
        self.health.lock().expect("health lock").leader = fence.is_some();
        self.metrics.set_lease_held(CERTIFY_LEASE, fence.is_some());
        let Some(fence) = fence else {
            return Ok(Vec::new());
        };
        let mut done = Vec::new();
        for batch in self.batches.unanchored_batches().await? {
            let batch = self.settle(batch, true, &fence).await?;
            self.metrics
                .batch_anchored(u64::from(batch.measurement_count), []);
            done.push(batch);
        }
        loop {
            let pending = self.batches.pending_items(self.config.max_batch).await?;
            if pending.items.is_empty() {
                return Ok(done);
            }
            let full = pending.items.len() >= self.config.max_batch as usize;
            let leaves: Vec<B256> = pending.items.iter().map(|i| i.values.leaf()).collect();
            let tree = MerkleTree::new(&leaves).expect("not empty");
            let root = tree.root();
            let batch = self
                .batches
                .create_batch(&NewBatch::of(&pending, leaves, root), &fence)
                .await?;
            let batch = self.settle(batch, false, &fence).await?;
            // Latency from storing to the recorded anchor, per measurement (a resumed batch's
            // measurements are not at hand: only fresh ones are observed).
            let anchored_ms = Utc::now().timestamp_millis();
            self.metrics.batch_anchored(
                u64::from(batch.measurement_count),
                pending
                    .items
                    .iter()
                    .filter(|i| i.kind == bal_scd::ItemKind::Measurement)
                    .map(|i| {
                        let age = anchored_ms.saturating_sub(i.values.received_at_ms as i64);
                        Duration::from_millis(u64::try_from(age).unwrap_or(0))
                    }),
            );
            done.push(batch);
            if !full {
                return Ok(done);
            }
        }
    }

    /// Anchors a written batch, or recognises its anchor when a previous attempt got through.
    async fn settle(
        &self,
        batch: Batch,
        resumed: bool,
        fence: &Fence,
    ) -> Result<Batch, CertifyError> {
        let found = if resumed {
            self.ledger.find_anchor(batch.root).await?
        } else {
            None
        };
        let anchor = match found {
            Some(a) => {
                tracing::info!(batch = batch.seq, tx = %a.tx_hash, "resumed batch was anchored already");
                a
            }
            None => match self
                .ledger
                .anchor(batch.root, batch.leaf_count, batch_id(batch.seq))
                .await
            {
                Ok(a) => a,
                Err(LedgerError::AlreadyAnchored(block)) => self
                    .ledger
                    .anchor_in_block(batch.root, block)
                    .await?
                    .ok_or_else(|| {
                        LedgerError::Unavailable(format!(
                            "root {} is anchored in block {block} but its event was not found",
                            batch.root
                        ))
                    })?,
                Err(e) => return Err(e.into()),
            },
        };
        self.record(batch, anchor, fence).await
    }

    async fn record(
        &self,
        mut batch: Batch,
        a: Anchor,
        fence: &Fence,
    ) -> Result<Batch, CertifyError> {
        let record = AnchorRecord {
            chain_id: self.ledger.chain_id(),
            contract: self.ledger.contract(),
            tx_hash: a.tx_hash,
            block_number: a.block_number,
            block_time: a.block_time,
            gas_used: a.gas_used,
            anchored_at: Utc::now(),
        };
        self.batches
            .record_anchor(batch.seq, &record, fence)
            .await?;
        tracing::debug!(batch = batch.seq, leaves = batch.leaf_count, tx = %a.tx_hash, block = a.block_number, "batch anchored");
        let mut h = self.health.lock().expect("health lock");
        h.last_anchor_at = Some(record.anchored_at);
        h.batches_anchored += 1;
        h.leaves_anchored += u64::from(batch.leaf_count);
        batch.anchor = Some(record);
        Ok(batch)
    }
}

/// Keeps renewing the lease while `holder` has it, every third of its length, so that a round
/// longer than the lease does not lose it; takes nothing it does not hold already.
async fn renew_lease(store: Arc<dyn ClusterStore>, holder: String, lease: Duration) {
    let mut tick = tokio::time::interval(lease / 3);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let held = matches!(store.lease(CERTIFY_LEASE).await, Ok(Some(l)) if l.holder == holder);
        if held && let Err(e) = store.acquire_lease(CERTIFY_LEASE, &holder, lease).await {
            tracing::warn!(error = %e.report(), "could not renew the certification lease");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_a_cap_and_never_panics_on_long_windows() {
        let s = Duration::from_secs;
        assert_eq!(backoff(s(1), s(1)), s(2));
        assert_eq!(backoff(s(20), s(1)), s(30));
        assert_eq!(backoff(s(30), s(1)), s(30));
        // A window longer than the cap (it once made `clamp` panic and stopped certifying).
        assert_eq!(backoff(s(60), s(60)), s(60));
        assert_eq!(backoff(Duration::from_millis(1), s(45)), s(45));
    }
}
