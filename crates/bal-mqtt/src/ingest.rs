//! Group commit: many publishers' messages become one transaction, and each publisher is told
//! only once its measurement is committed.
//!
//! A writer task takes the first waiting message, then every other message already queued (up
//! to `max_batch`), stores them in one transaction and answers each. Under load, batches grow
//! by themselves, so throughput rises with the number of publishers while an idle system
//! commits each message at once. SQLite has one writer at a time, so one task; PostgreSQL
//! commits concurrently, so several tasks keep several transactions in flight (while one waits
//! for its commit to reach the disk, another is being written). One device's messages are
//! never reordered: a connection's next publish is only read once the previous one is answered.

use bal_core::NewMeasurement;
use bal_scd::{SharedStore, StoreError};
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
}

/// Messages waiting beyond this make publishers wait their turn (back-pressure) instead of
/// growing memory without bound.
const QUEUE: usize = 64 * 1024;

impl Ingest {
    /// Starts the writer. Abort the returned task to stop it: uncommitted messages then get
    /// [`IngestError::Closed`], and their publishers (never acknowledged) send them again.
    pub fn start(store: SharedStore, max_batch: usize) -> (Self, JoinHandle<()>) {
        let (jobs, rx) = mpsc::channel(QUEUE);
        let writers = match store.backend() {
            bal_scd::Backend::Sqlite => 1,
            bal_scd::Backend::Postgres => POSTGRES_WRITERS,
        };
        let rx = std::sync::Arc::new(tokio::sync::Mutex::new(rx));
        let writer = tokio::spawn(async move {
            let mut tasks = tokio::task::JoinSet::new();
            for _ in 0..writers {
                tasks.spawn(write_batches(store.clone(), rx.clone(), max_batch.max(1)));
            }
            while tasks.join_next().await.is_some() {}
        });
        (Self { jobs }, writer)
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

/// Transactions in flight on PostgreSQL (each holds one pooled connection while it writes).
const POSTGRES_WRITERS: usize = 4;

async fn write_batches(
    store: SharedStore,
    rx: std::sync::Arc<tokio::sync::Mutex<mpsc::Receiver<Job>>>,
    max_batch: usize,
) {
    let mut jobs = Vec::with_capacity(max_batch);
    loop {
        // Take what is waiting, then let the next writer take what comes meanwhile.
        let taken = rx.lock().await.recv_many(&mut jobs, max_batch).await;
        if taken == 0 {
            return;
        }
        let batch: Vec<NewMeasurement> = jobs.iter().map(|j| j.measurement.clone()).collect();
        let span = tracing::debug_span!("ingest_batch", size = batch.len());
        match store.insert_measurements(&batch).instrument(span).await {
            Ok(ids) => {
                for (job, id) in jobs.drain(..).zip(ids) {
                    let _ = job.reply.send(Ok(id));
                }
            }
            Err(e) => {
                tracing::error!(error = %e.report(), size = batch.len(), "ingest batch failed");
                let e = std::sync::Arc::new(e);
                for job in jobs.drain(..) {
                    let _ = job.reply.send(Err(IngestError::Store(e.clone())));
                }
            }
        }
    }
}
