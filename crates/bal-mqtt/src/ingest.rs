//! Group commit: many publishers' messages become one transaction, and each publisher is told
//! only once its measurement is committed.
//!
//! A writer task takes the first waiting message, then every other message already queued (up
//! to `max_batch`), stores them in one transaction and answers each. Under load, batches grow
//! by themselves, so throughput rises with the number of publishers while an idle system
//! commits each message at once. One writer on every backend, even PostgreSQL, which could take
//! several: batches are stored in the order they were taken, so messages that arrive in order
//! (one device's, or those Mosquitto hands over on the ingest session) are stored, paged and
//! certified in that order. On PostgreSQL that one writer keeps two batches in flight (see
//! [`write_batches`]).

use std::sync::Arc;
use std::time::Instant;

use bal_core::NewMeasurement;
use bal_metrics::{Metrics, Source, Stored};
use bal_scd::{MeasurementStore, StoreError, WrittenBatch};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tracing::Instrument;

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("the measurement could not be stored")]
    Store(#[source] std::sync::Arc<StoreError>),
    #[error("ingest is shutting down")]
    Closed,
    /// The batch before this one failed to commit, so this one was rolled back to keep the
    /// order of commits; sending it again stores it.
    #[error("the measurement was not stored (the batch before it failed)")]
    RolledBack,
}

struct Job {
    measurement: NewMeasurement,
    reply: oneshot::Sender<Result<i64, IngestError>>,
}

/// The handle publishers submit to; cheap to clone.
#[derive(Clone)]
pub struct Ingest {
    jobs: mpsc::Sender<Job>,
    metrics: Arc<Metrics>,
}

/// Messages waiting beyond this make publishers wait their turn (back-pressure) instead of
/// growing memory without bound.
const QUEUE: usize = 64 * 1024;

impl Ingest {
    /// Starts the writer. Abort the returned task to stop it: uncommitted messages then get
    /// [`IngestError::Closed`], and their publishers (never acknowledged) send them again.
    /// Commits are counted in `metrics` (MQTT measurements stored and duplicate, commit
    /// latency and batch size).
    pub fn start(
        store: Arc<dyn MeasurementStore>,
        max_batch: usize,
        metrics: Arc<Metrics>,
    ) -> (Self, JoinHandle<()>) {
        let (jobs, rx) = mpsc::channel(QUEUE);
        let writer = tokio::spawn(write_batches(store, rx, max_batch.max(1), metrics.clone()));
        (Self { jobs, metrics }, writer)
    }

    /// Where the brokers count what they refuse.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Stores `measurement`; returns its id once committed (or the id of the measurement it
    /// duplicates).
    pub async fn submit(&self, measurement: NewMeasurement) -> Result<i64, IngestError> {
        let (reply, answer) = oneshot::channel();
        self.jobs
            .send(Job { measurement, reply })
            .await
            .map_err(|_| IngestError::Closed)?;
        answer.await.map_err(|_| IngestError::Closed)?
    }
}

/// A batch's publishers and what its commit counts towards the metrics.
struct Replies {
    to: Vec<oneshot::Sender<Result<i64, IngestError>>>,
    size: usize,
    started: Instant,
}

impl Replies {
    /// Answers every publisher of the batch; true when it was stored.
    fn send(
        self,
        stored: Result<bal_scd::StoredBatch, Arc<StoreError>>,
        metrics: &Metrics,
    ) -> bool {
        match stored {
            Ok(bal_scd::StoredBatch { ids, duplicates }) => {
                metrics.ingest_commit(self.size, self.started.elapsed());
                let dup = duplicates as u64;
                metrics.measurement_stored(Source::Mqtt, Stored::New, self.size as u64 - dup);
                metrics.measurement_stored(Source::Mqtt, Stored::Duplicate, dup);
                for (reply, id) in self.to.into_iter().zip(ids) {
                    let _ = reply.send(Ok(id));
                }
                true
            }
            Err(e) => {
                tracing::error!(error = %e.report(), size = self.size, "ingest batch failed");
                for reply in self.to {
                    let _ = reply.send(Err(IngestError::Store(e.clone())));
                }
                false
            }
        }
    }
}

/// A batch whose commit runs in a task of its own while the next batch is written.
type Committing = JoinHandle<(Result<bal_scd::StoredBatch, Arc<StoreError>>, Replies)>;

/// Waits for the commit in flight, if any, and answers its publishers; true unless it failed.
async fn finish(committing: &mut Option<Committing>, metrics: &Metrics) -> bool {
    let Some(task) = committing.take() else {
        return true;
    };
    match task.await {
        Ok((stored, replies)) => replies.send(stored, metrics),
        // The task panicked: its publishers' senders are dropped, so they hear `Closed`.
        Err(e) => {
            tracing::error!(error = %e, "ingest commit task failed");
            false
        }
    }
}

/// The group commit, with two batches in flight where the store allows (PostgreSQL): while
/// batch N commits (the server's WAL flush, a round trip), batch N+1 is written in a second
/// transaction. Every order stays that of one writer:
/// - ids, reception stamps and transaction ids: N+1 is written only after N was written;
/// - commits: N+1's commit starts only after N's ended, and only if N committed (otherwise N+1
///   is rolled back and its publishers send again, behind N's);
/// - PUBACKs: N's publishers are answered before N+1 commits;
/// - a batch holding a redelivery is written only after N committed, so the lookup of the
///   stored copy sees N's rows.
async fn write_batches(
    store: Arc<dyn MeasurementStore>,
    mut rx: mpsc::Receiver<Job>,
    max_batch: usize,
    metrics: Arc<Metrics>,
) {
    let mut jobs = Vec::with_capacity(max_batch);
    let mut batch = Vec::with_capacity(max_batch);
    let mut committing: Option<Committing> = None;
    loop {
        let taken = match committing.as_mut() {
            // Answer the batch in flight as soon as it commits, even if nothing new comes.
            Some(task) => tokio::select! {
                biased;
                done = task => {
                    committing = None;
                    match done {
                        Ok((stored, replies)) => {
                            replies.send(stored, &metrics);
                        }
                        Err(e) => tracing::error!(error = %e, "ingest commit task failed"),
                    }
                    continue;
                }
                n = rx.recv_many(&mut jobs, max_batch) => n,
            },
            None => rx.recv_many(&mut jobs, max_batch).await,
        };
        if taken == 0 {
            break;
        }
        let mut replies = Replies {
            to: Vec::with_capacity(jobs.len()),
            size: jobs.len(),
            started: Instant::now(),
        };
        // Moved apart, not cloned: the store takes a slice of measurements.
        for job in jobs.drain(..) {
            batch.push(job.measurement);
            replies.to.push(job.reply);
        }
        let mut before_ok = true;
        if batch.iter().any(|m| m.redelivered) {
            before_ok = finish(&mut committing, &metrics).await;
        }
        let span = tracing::debug_span!("ingest_batch", size = batch.len());
        let written = store.open_batch(&batch).instrument(span).await;
        batch.clear();
        before_ok &= finish(&mut committing, &metrics).await;
        match written {
            Ok(WrittenBatch::Committed(stored)) => {
                replies.send(Ok(stored), &metrics);
            }
            Ok(WrittenBatch::Open(open)) if before_ok => {
                committing = Some(tokio::spawn(async move {
                    (open.commit().await.map_err(Arc::new), replies)
                }));
            }
            Ok(WrittenBatch::Open(open)) => {
                // Rolled back: committing it after the batch before failed would store these
                // ahead of that batch's resent messages.
                drop(open);
                for reply in replies.to {
                    let _ = reply.send(Err(IngestError::RolledBack));
                }
            }
            Err(e) => {
                replies.send(Err(Arc::new(e)), &metrics);
            }
        }
    }
    finish(&mut committing, &metrics).await;
}
