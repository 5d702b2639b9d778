//! Set points: commands to one device of a producer, their life and its audit trail (issue 23;
//! the domain rules are `bal-core`'s `setpoint` module).

use std::time::Duration;

use async_trait::async_trait;
use bal_core::setpoint::{DeviceName, SetpointState, SetpointValues};
use bal_core::{Actor, Username};
use chrono::{DateTime, Utc};

use crate::StoreResult;

/// A stored set point.
#[derive(Debug, Clone, PartialEq)]
pub struct Setpoint {
    pub id: i64,
    pub issuer: Actor,
    pub producer: Username,
    pub device: DeviceName,
    pub values: SetpointValues,
    pub valid_until: DateTime<Utc>,
    /// The device's sequence number: it only grows, per producer and device.
    pub seq: i64,
    pub state: SetpointState,
    /// Why it was rejected (the device's words), superseded or failed.
    pub reason: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// How many times it was sent.
    pub attempts: u32,
    /// The issuer's EIP-191 signature of [`bal_core::setpoint::signed_message`], when its wallet
    /// could sign.
    pub signature: Option<String>,
}

/// A set point to store.
#[derive(Debug, Clone)]
pub struct NewSetpoint {
    pub issuer: Actor,
    pub producer: Username,
    pub device: DeviceName,
    pub values: SetpointValues,
    pub valid_until: DateTime<Utc>,
    pub signature: Option<String>,
}

/// Which set points to list, newest first.
#[derive(Debug, Clone, Default)]
pub struct SetpointQuery {
    pub producer: Option<Username>,
    /// Only those this user issued or whose producer it is (`None`: all, for admins).
    pub visible_to: Option<Username>,
    /// Only ids below this one: the cursor of the next page.
    pub before_id: Option<i64>,
    pub limit: u32,
}

/// How many set points are in each state, for `/metrics`.
pub type SetpointCounts = Vec<(SetpointState, u64)>;

/// Set points.
///
/// Guarantees, on every backend and with any number of writers (replicas included):
/// - every change of state is one transaction that also appends its audit entry
///   (`setpoint.<state>`, object `setpoint:<id>`), so the certified trail never disagrees with
///   the row; the change is made only if `bal-core`'s `SetpointState::can_become` allows it,
///   checked under the row's lock, so of two racing changes one wins and the other gets
///   `Conflict`;
/// - a device's sequence numbers are unique and grow in issue order;
/// - issuing a set point supersedes, in the same transaction, the open ones for the same device
///   whose every key it sets;
/// - [`SetpointStore::claim_setpoints`] hands a due set point to one caller only (a claim moves
///   its next attempt into the future), and never one past its `valid_until`.
#[async_trait]
pub trait SetpointStore: Send + Sync {
    /// Stores a set point `queued` at `now`. `NotFound("producer")` when the producer is no
    /// (live) producer.
    async fn issue_setpoint(&self, new: NewSetpoint, now: DateTime<Utc>) -> StoreResult<Setpoint>;
    async fn setpoint(&self, id: i64) -> StoreResult<Option<Setpoint>>;
    async fn setpoints(&self, query: &SetpointQuery) -> StoreResult<Vec<Setpoint>>;
    /// Moves a set point to `to` by `actor` at `now`. `NotFound("set point")` for an unknown
    /// id, `Conflict` when its state does not allow it (final, or already past `to`).
    async fn move_setpoint(
        &self,
        id: i64,
        to: SetpointState,
        actor: &Actor,
        reason: Option<&str>,
        now: DateTime<Utc>,
    ) -> StoreResult<Setpoint>;
    /// Up to `max` set points due for sending at `now` (queued, or sent and unanswered with
    /// their next attempt due), claimed: each one's attempts grow by one, its next attempt
    /// moves `retry` later, and a queued one becomes `sent` (with its audit entry), all in one
    /// transaction.
    async fn claim_setpoints(
        &self,
        now: DateTime<Utc>,
        retry: Duration,
        max: u32,
    ) -> StoreResult<Vec<Setpoint>>;
    /// Makes the unanswered set points (queued or sent, still valid) of `producer`'s `device`
    /// (`None`: of all its devices) due at once, without counting the send as an attempt: the
    /// device has just subscribed, and a broker that restarted (or a device that connected only
    /// now) holds nothing for it. Returns how many.
    async fn resend_setpoints(
        &self,
        producer: &Username,
        device: Option<&DeviceName>,
        now: DateTime<Utc>,
    ) -> StoreResult<u64>;
    /// Writes `expired` for every open set point whose `valid_until` has passed; returns them.
    async fn expire_setpoints(&self, now: DateTime<Utc>) -> StoreResult<Vec<Setpoint>>;
    async fn setpoint_counts(&self) -> StoreResult<SetpointCounts>;
}
