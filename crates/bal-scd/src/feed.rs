//! The change feed: what changed, announced after the change is committed, so that live
//! deliveries (MQTT sessions, server-sent event streams, the broker's reconciliation) follow the
//! database without polling it.
//!
//! Every backend publishes through [`ChangeFeed::publish`], once its transaction has committed,
//! and nowhere else. On SQLite the feed is in-process. On PostgreSQL the same transaction also
//! sends a `NOTIFY` carrying ids only (never payloads: NOTIFY's 8 000-byte limit), which every
//! other process's listener turns back into changes by reading the committed rows; see
//! `postgres::listener`.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bal_core::setpoint::{DeviceName, SetpointState};
use bal_core::{Measurement, Subscription, Username};
use tokio::sync::broadcast;

/// One committed change.
#[derive(Debug, Clone)]
pub enum Change {
    /// A user was created.
    UserCreated(Username),
    /// A user's sealed broker password was stored (without a password change).
    BrokerSecret(Username),
    /// A subscription changed status (decision, expiry, or its user was deleted).
    Subscription(Subscription),
    /// A user was deleted.
    UserDeleted(Username),
    /// A user's password changed (its sessions ended).
    PasswordChanged(Username),
    /// A set point changed state (issued, sent, answered, expired...).
    Setpoint(SetpointChange),
    /// Measurements were committed (duplicates that were not stored again are left out).
    Measurements(Arc<[Measurement]>),
    /// Changes may have been missed (another process's notifications were lost while the
    /// listener reconnected): re-check everything, as for a lagged receiver.
    Resync,
}

/// What [`Change::Setpoint`] says: enough for a sender to act and a page to refresh, small
/// enough for a PostgreSQL notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetpointChange {
    pub id: i64,
    pub producer: Username,
    pub device: DeviceName,
    pub state: SetpointState,
}

impl From<&crate::Setpoint> for SetpointChange {
    fn from(s: &crate::Setpoint) -> Self {
        Self {
            id: s.id,
            producer: s.producer.clone(),
            device: s.device.clone(),
            state: s.state,
        }
    }
}

impl SetpointChange {
    /// `<id>,<state>,<producer>,<device>`: the notification's text (the device, last, may
    /// hold commas).
    pub(crate) fn to_notice(&self) -> String {
        format!(
            "{},{},{},{}",
            self.id, self.state, self.producer, self.device
        )
    }

    pub(crate) fn from_notice(data: &str) -> Option<Self> {
        let mut parts = data.splitn(4, ',');
        Some(Self {
            id: parts.next()?.parse().ok()?,
            state: parts.next()?.parse().ok()?,
            producer: parts.next()?.parse().ok()?,
            device: parts.next()?.parse().ok()?,
        })
    }
}

/// Room for bursts of changes before a slow listener starts missing some (it is told, and
/// re-reads the database).
const CHANGE_BUFFER: usize = 4096;

/// The committed changes of this process and, on PostgreSQL, of every other process on the
/// same database.
#[derive(Debug, Clone)]
pub struct ChangeFeed {
    sender: broadcast::Sender<Change>,
    /// Live [`MeasurementWatch`]es. Measurements are announced only while one exists: copying
    /// every committed reading into the feed (and, on PostgreSQL, reading back every reading
    /// another replica stored) is work that nobody needs most of the time.
    watchers: Arc<AtomicUsize>,
}

/// Held by whoever wants [`Change::Measurements`] (a live stream): while one is held, committed
/// measurements are announced on the feed.
#[derive(Debug)]
pub struct MeasurementWatch(Arc<AtomicUsize>);

impl Drop for MeasurementWatch {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Default for ChangeFeed {
    fn default() -> Self {
        Self::new()
    }
}

impl ChangeFeed {
    pub fn new() -> Self {
        let (sender, _) = broadcast::channel(CHANGE_BUFFER);
        Self {
            sender,
            watchers: Arc::default(),
        }
    }

    /// Changes committed from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Change> {
        self.sender.subscribe()
    }

    /// Asks for measurements on the feed until the watch is dropped. Take it before
    /// [`ChangeFeed::subscribe`]-ing, so that nothing committed in between is missed.
    pub fn watch_measurements(&self) -> MeasurementWatch {
        self.watchers.fetch_add(1, Ordering::SeqCst);
        MeasurementWatch(self.watchers.clone())
    }

    /// Whether committed measurements are to be announced (someone holds a watch).
    pub fn wants_measurements(&self) -> bool {
        self.watchers.load(Ordering::SeqCst) > 0 && self.sender.receiver_count() > 0
    }

    /// Announces changes that are committed. The one place changes enter the feed.
    pub(crate) fn publish(&self, changes: impl IntoIterator<Item = Change>) {
        for change in changes {
            // Nobody listening is fine: the change is in the database either way.
            let _ = self.sender.send(change);
        }
    }
}
