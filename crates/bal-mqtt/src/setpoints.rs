//! Set points over MQTT, whichever the broker: the sender that takes due set points from the
//! SCD and publishes them (QoS 1 on `setpoints/<producer>/<device>`), the expiry sweep, and what
//! a device's answer on `setpoints/<producer>/<device>/ack` does.
//!
//! Every replica runs a sender; the store's claim hands each due set point to one of them, and
//! marks it `sent` before it is published, so that a device answering at once always finds it
//! past `queued`. Brokers keep sessions in memory, so anything unanswered is sent again
//! (same id, same `seq`) every `retry` until the device says `received`, it expires, or
//! `max_attempts` is reached (`failed`).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bal_core::setpoint::{DeviceAnswer, DeviceName, SetpointState};
use bal_core::{Actor, Username};
use bal_scd::{Change, SetpointStore, SharedStore, StoreError};
use chrono::Utc;
use tokio::sync::broadcast::error::RecvError;

/// How set points leave the BAL: one broker's publish.
#[async_trait]
pub trait SetpointLink: Send + Sync {
    /// Hands one set point to the broker for delivery at QoS 1.
    async fn publish(&self, setpoint: &bal_scd::Setpoint) -> anyhow::Result<()>;
}

/// The sender's timing.
#[derive(Debug, Clone)]
pub struct SenderConfig {
    /// How long an unanswered set point waits before it is sent again.
    pub retry: Duration,
    /// After this many sends without the device's `received`, the set point `failed`.
    pub max_attempts: u32,
    /// How often due set points and expiries are looked for when no change wakes the sender.
    pub tick: Duration,
}

impl Default for SenderConfig {
    fn default() -> Self {
        Self {
            retry: Duration::from_secs(10),
            max_attempts: 30,
            tick: Duration::from_secs(1),
        }
    }
}

/// How many set points one pass claims.
const CLAIM_BATCH: u32 = 200;

/// Runs the sender until the store is dropped.
pub async fn run_sender(store: SharedStore, link: Arc<dyn SetpointLink>, config: SenderConfig) {
    let mut changes = store.changes();
    loop {
        if let Err(e) = send_due(&*store, &*link, &config).await {
            tracing::warn!(error = %e.report(), "set point sender: store unavailable");
        }
        // Woken by a newly queued set point (on any replica), else by the tick.
        let wake = async {
            loop {
                match changes.recv().await {
                    Ok(Change::Setpoint(c)) if c.state == SetpointState::Queued => return true,
                    Ok(Change::Resync) | Err(RecvError::Lagged(_)) => return true,
                    Ok(_) => {}
                    Err(RecvError::Closed) => return false,
                }
            }
        };
        tokio::select! {
            open = wake => if !open { return },
            () = tokio::time::sleep(config.tick) => {}
        }
    }
}

/// One pass: writes expiries, then claims and sends what is due.
pub async fn send_due(
    store: &dyn SetpointStore,
    link: &dyn SetpointLink,
    config: &SenderConfig,
) -> Result<usize, StoreError> {
    let now = Utc::now();
    store.expire_setpoints(now).await?;
    let mut sent = 0;
    loop {
        let claimed = store
            .claim_setpoints(Utc::now(), config.retry, CLAIM_BATCH)
            .await?;
        let full = claimed.len() == CLAIM_BATCH as usize;
        for s in claimed {
            if s.attempts > config.max_attempts {
                let reason = format!("not received after {} sends", config.max_attempts);
                ignore_conflict(
                    store
                        .move_setpoint(
                            s.id,
                            SetpointState::Failed,
                            &Actor::System,
                            Some(&reason),
                            Utc::now(),
                        )
                        .await,
                )?;
                continue;
            }
            match link.publish(&s).await {
                Ok(()) => sent += 1,
                // Sent again at the next attempt.
                Err(e) => tracing::warn!(setpoint = s.id, error = %e, "set point not published"),
            }
        }
        if !full {
            return Ok(sent);
        }
    }
}

/// A state change that lost a race (or came too late) changes nothing: not an error.
fn ignore_conflict<T>(r: Result<T, StoreError>) -> Result<Option<T>, StoreError> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(StoreError::Conflict(_) | StoreError::NotFound(_)) => Ok(None),
        Err(e) => Err(e),
    }
}

/// What became of a device's answer.
#[derive(Debug, PartialEq)]
pub enum AnswerOutcome {
    /// The set point moved to the answer's state.
    Recorded(SetpointState),
    /// Well-formed, but for an unknown, closed or other device's set point, or a step already
    /// past: nothing changed.
    Ignored,
    /// Not an answer (`bal-core`'s `DeviceAnswer`).
    Invalid,
}

/// Records `producer`'s device's answer (a publish on its ack topic).
pub async fn take_answer(
    store: &dyn SetpointStore,
    producer: &Username,
    device: &DeviceName,
    payload: &[u8],
) -> Result<AnswerOutcome, StoreError> {
    let Ok(answer) = DeviceAnswer::parse(payload) else {
        return Ok(AnswerOutcome::Invalid);
    };
    let Some(s) = store.setpoint(answer.id).await? else {
        return Ok(AnswerOutcome::Ignored);
    };
    if s.producer != *producer || s.device != *device {
        return Ok(AnswerOutcome::Ignored);
    }
    let actor = Actor::User(producer.clone());
    let moved = store
        .move_setpoint(
            s.id,
            answer.state,
            &actor,
            answer.reason.as_deref(),
            Utc::now(),
        )
        .await;
    Ok(match ignore_conflict(moved)? {
        Some(after) => AnswerOutcome::Recorded(after.state),
        None => AnswerOutcome::Ignored,
    })
}

/// Records that the device's PUBACK for set point `id` arrived (the embedded broker sees it).
pub async fn take_delivery(store: &dyn SetpointStore, id: i64) -> Result<(), StoreError> {
    let moved = store
        .move_setpoint(
            id,
            SetpointState::Delivered,
            &Actor::System,
            None,
            Utc::now(),
        )
        .await;
    ignore_conflict(moved).map(|_| ())
}
