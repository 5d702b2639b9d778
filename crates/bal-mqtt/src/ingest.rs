//! Group commit: many publishers' messages become one transaction, and each publisher is told
//! only once its measurement is committed.
//!
//! A writer task takes the first waiting message, then every other message already queued (up
//! to `max_batch`), stores them in one transaction and answers each. Under load, batches grow
//! by themselves, so throughput rises with the number of publishers while an idle system
//! commits each message at once. One writer on every backend, even PostgreSQL, which could take
//! several: batches are stored in the order they were taken, so messages that arrive in order
//! (one device's, or those Mosquitto hands over on the ingest session) are stored, paged and
//! certified in that order.

use std::sync::Arc;
use std::time::Instant;

use bal_core::NewMeasurement;
use bal_metrics::{Metrics, Source, Stored};
use bal_scd::{MeasurementStore, StoreError};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tracing::Instrument;

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("the measurement could not be stored")]
    Store(#[source] std::sync::Arc<StoreError>),
    #[error("ingest is shutting down")]
    Closed,
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

async fn write_batches(
    store: Arc<dyn MeasurementStore>,
    mut rx: mpsc::Receiver<Job>,
    max_batch: usize,
    metrics: Arc<Metrics>,
) {
    let mut jobs = Vec::with_capacity(max_batch);
    let mut batch = Vec::with_capacity(max_batch);
    let mut replies = Vec::with_capacity(max_batch);
    while rx.recv_many(&mut jobs, max_batch).await > 0 {
        // Moved apart, not cloned: the store takes a slice of measurements.
        for job in jobs.drain(..) {
            batch.push(job.measurement);
            replies.push(job.reply);
        }
        let span = tracing::debug_span!("ingest_batch", size = batch.len());
        let started = Instant::now();
        let stored = store.store_measurements(&batch).instrument(span).await;
        let size = batch.len();
        batch.clear();
        match stored {
            Ok(bal_scd::StoredBatch { ids, duplicates }) => {
                metrics.ingest_commit(size, started.elapsed());
                let dup = duplicates as u64;
                metrics.measurement_stored(Source::Mqtt, Stored::New, size as u64 - dup);
                metrics.measurement_stored(Source::Mqtt, Stored::Duplicate, dup);
                for (reply, id) in replies.drain(..).zip(ids) {
                    let _ = reply.send(Ok(id));
                }
            }
            Err(e) => {
                tracing::error!(error = %e.report(), size, "ingest batch failed");
                let e = std::sync::Arc::new(e);
                for reply in replies.drain(..) {
                    let _ = reply.send(Err(IngestError::Store(e.clone())));
                }
            }
        }
    }
}
