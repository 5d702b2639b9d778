//! Other processes' changes: `LISTEN bal_changes`, and each notification turned back into a
//! [`Change`] by reading the committed rows it names.
//!
//! A notification is `<origin>|<kind>|<data>`: the sending process's origin (its own are
//! skipped: they were published locally at commit), a kind, and names or ids. NOTIFY payloads
//! are limited to 8 000 bytes, so ids are sent as ranges and split over several notifications.
//! When the listening connection is lost, notifications sent meanwhile are gone: once it is
//! back, [`Change::Resync`] tells every follower to re-check everything.

use std::time::Duration;

use bal_core::{SubscriptionId, Username};
use sqlx::postgres::{PgListener, PgPool};

use super::CHANNEL;
use crate::{Change, ChangeFeed};

/// What one notification says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Notice {
    UserCreated(String),
    BrokerSecret(String),
    Subscription(String),
    UserDeleted(String),
    PasswordChanged(String),
    Setpoint(String),
    Measurements(Vec<i64>),
}

impl Notice {
    /// The notice for a change of users or grants (measurements are noticed by id).
    pub(crate) fn of(change: &Change) -> Option<Self> {
        Some(match change {
            Change::UserCreated(u) => Notice::UserCreated(u.to_string()),
            Change::BrokerSecret(u) => Notice::BrokerSecret(u.to_string()),
            Change::Subscription(s) => Notice::Subscription(s.id.to_string()),
            Change::UserDeleted(u) => Notice::UserDeleted(u.to_string()),
            Change::PasswordChanged(u) => Notice::PasswordChanged(u.to_string()),
            Change::Setpoint(s) => Notice::Setpoint(s.to_notice()),
            Change::Measurements(_) | Change::Resync => return None,
        })
    }
}

/// Below NOTIFY's limit of 8 000 bytes, with room for the origin and kind.
const MAX_PAYLOAD: usize = 7_000;

/// The payloads of `notices`, each under the size limit.
pub(crate) fn payloads(origin: &str, notices: &[Notice]) -> Vec<String> {
    let mut out = Vec::new();
    for n in notices {
        let (kind, data) = match n {
            Notice::UserCreated(u) => ("user", u.clone()),
            Notice::BrokerSecret(u) => ("secret", u.clone()),
            Notice::Subscription(id) => ("sub", id.clone()),
            Notice::UserDeleted(u) => ("deleted", u.clone()),
            Notice::PasswordChanged(u) => ("password", u.clone()),
            Notice::Setpoint(s) => ("sp", s.clone()),
            Notice::Measurements(ids) => {
                for chunk in id_ranges(ids, MAX_PAYLOAD) {
                    out.push(format!("{origin}|m|{chunk}"));
                }
                continue;
            }
        };
        out.push(format!("{origin}|{kind}|{data}"));
    }
    out
}

/// `ids` (ascending runs become `a-b`) as comma-separated lists of at most `max` bytes each.
fn id_ranges(ids: &[i64], max: usize) -> Vec<String> {
    let mut sorted = ids.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut chunks = vec![String::new()];
    let mut i = 0;
    while i < sorted.len() {
        let mut j = i;
        while j + 1 < sorted.len() && sorted[j + 1] == sorted[j] + 1 {
            j += 1;
        }
        let item = if i == j {
            sorted[i].to_string()
        } else {
            format!("{}-{}", sorted[i], sorted[j])
        };
        let current = chunks.last_mut().expect("one chunk");
        if !current.is_empty() && current.len() + 1 + item.len() > max {
            chunks.push(item);
        } else {
            if !current.is_empty() {
                current.push(',');
            }
            current.push_str(&item);
        }
        i = j + 1;
    }
    chunks.retain(|c| !c.is_empty());
    chunks
}

/// The ids a list made by [`id_ranges`] names; `None` when it is malformed.
fn parse_ranges(text: &str) -> Option<Vec<i64>> {
    let mut ids = Vec::new();
    for part in text.split(',') {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (i64, i64) = (a.parse().ok()?, b.parse().ok()?);
                if b < a || b - a > 1_000_000 {
                    return None;
                }
                ids.extend(a..=b);
            }
            None => ids.push(part.parse().ok()?),
        }
    }
    Some(ids)
}

/// Stops the listener task when dropped (with its store).
pub(crate) struct Handle(tokio::task::JoinHandle<()>);

impl Drop for Handle {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Listens before it returns, so that every change committed by another process after the
/// store is open reaches its feed (a listener still connecting in the background would miss
/// what was committed meanwhile, and nothing would say so).
pub(crate) async fn spawn(
    pool: PgPool,
    feed: ChangeFeed,
    origin: String,
) -> Result<Handle, sqlx::Error> {
    let listener = start(&pool).await?;
    Ok(Handle(tokio::spawn(listen(listener, pool, feed, origin))))
}

/// Sends other processes the ids of stored measurements, after their commit, coalescing what
/// the ingest writers committed meanwhile into one statement.
///
/// Not inside the ingest transaction: on PostgreSQL a committing transaction that has sent a
/// NOTIFY holds the notification queue's lock until its commit is on disk, so notifying
/// group commits would commit one at a time. The price: a process that dies between a commit
/// and this notice leaves other processes' live streams without those readings (the readings
/// are stored and certified; history shows them). Changes of users and grants are rare and
/// keep their NOTIFY inside their transaction.
pub(crate) fn spawn_notifier(
    pool: PgPool,
    origin: String,
    mut ids: tokio::sync::mpsc::UnboundedReceiver<Vec<i64>>,
) -> Handle {
    Handle(tokio::spawn(async move {
        while let Some(first) = ids.recv().await {
            let mut all = first;
            while let Ok(more) = ids.try_recv() {
                all.extend(more);
            }
            let payloads = payloads(&origin, &[Notice::Measurements(all)]);
            let sent = sqlx::query("SELECT pg_notify($1, p) FROM unnest($2::text[]) AS p")
                .bind(CHANNEL)
                .bind(payloads)
                .execute(&pool)
                .await;
            if let Err(e) = sent {
                tracing::warn!(error = %e, "could not tell other processes of new measurements");
            }
        }
    }))
}

async fn listen(mut listener: PgListener, pool: PgPool, feed: ChangeFeed, origin: String) {
    loop {
        match listener.try_recv().await {
            Ok(Some(n)) => {
                // Another replica's readings are read back only for someone who watches.
                let wanted = feed.wants_measurements() || !is_measurements(n.payload());
                if !wanted {
                    continue;
                }
                if let Some(change) = read(&pool, &origin, n.payload()).await {
                    feed.publish([change]);
                }
            }
            // The connection was lost: what was sent meanwhile is gone.
            Ok(None) | Err(_) => {
                tracing::warn!("lost the change listener's connection; reconnecting");
                loop {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    match listener.listen(CHANNEL).await {
                        Ok(()) => break,
                        Err(_) => tokio::time::sleep(Duration::from_millis(800)).await,
                    }
                }
                tracing::info!("change listener reconnected; re-checking everything");
                feed.publish([Change::Resync]);
            }
        }
    }
}

async fn start(pool: &PgPool) -> Result<PgListener, sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener.listen(CHANNEL).await?;
    Ok(listener)
}

/// Whether a notification names measurements (`<origin>|m|<ids>`).
fn is_measurements(payload: &str) -> bool {
    payload.split('|').nth(1) == Some("m")
}

/// The change a notification from another process names, read from the database. `None` for
/// this process's own notifications and for rows gone meanwhile; a malformed notification or a
/// failed read becomes [`Change::Resync`], so nothing is silently missed.
async fn read(pool: &PgPool, origin: &str, payload: &str) -> Option<Change> {
    let mut parts = payload.splitn(3, '|');
    let (from, kind, data) = (parts.next()?, parts.next()?, parts.next()?);
    if from == origin {
        return None;
    }
    let name = || Username::parse(data).ok();
    let change = match kind {
        "user" => name().map(Change::UserCreated),
        "secret" => name().map(Change::BrokerSecret),
        "deleted" => name().map(Change::UserDeleted),
        "password" => name().map(Change::PasswordChanged),
        "sp" => crate::feed::SetpointChange::from_notice(data).map(Change::Setpoint),
        "sub" => match data.parse::<SubscriptionId>() {
            Ok(id) => match crate::store::subscription_by_id(pool, id).await {
                Ok(found) => return found.map(Change::Subscription),
                Err(_) => Some(Change::Resync),
            },
            Err(_) => None,
        },
        "m" => match parse_ranges(data) {
            Some(ids) => match super::measurements::by_ids(pool, &ids).await {
                Ok(rows) if rows.is_empty() => return None,
                Ok(rows) => Some(Change::Measurements(rows.into())),
                Err(_) => Some(Change::Resync),
            },
            None => None,
        },
        _ => None,
    };
    Some(change.unwrap_or_else(|| {
        tracing::warn!(
            kind,
            "malformed change notification; re-checking everything"
        );
        Change::Resync
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_travel_as_ranges_and_split_under_the_limit() {
        let ids: Vec<i64> = (1..=5).chain([7]).chain(10..=12).collect();
        assert_eq!(id_ranges(&ids, 100), vec!["1-5,7,10-12".to_owned()]);
        assert_eq!(parse_ranges("1-5,7,10-12").unwrap(), ids);
        // Every other id: no runs, many chunks, each under the limit, nothing lost.
        let sparse: Vec<i64> = (0..20_000).map(|i| 1_000_000_000 + 2 * i).collect();
        let chunks = id_ranges(&sparse, MAX_PAYLOAD);
        assert!(chunks.len() > 1);
        assert!(chunks.iter().all(|c| c.len() <= MAX_PAYLOAD));
        let back: Vec<i64> = chunks
            .iter()
            .flat_map(|c| parse_ranges(c).unwrap())
            .collect();
        assert_eq!(back, sparse);
        let payloads = payloads("o", &[Notice::Measurements(sparse)]);
        assert!(payloads.iter().all(|p| p.len() < 8000));
    }

    #[test]
    fn set_point_changes_travel_whole_even_with_commas_in_the_device() {
        let change = crate::SetpointChange {
            id: 42,
            producer: Username::parse("prod1").unwrap(),
            device: "inv,1".parse().unwrap(),
            state: bal_core::setpoint::SetpointState::Applied,
        };
        let payloads = payloads(
            "o",
            &[Notice::of(&Change::Setpoint(change.clone())).unwrap()],
        );
        assert_eq!(payloads, ["o|sp|42,applied,prod1,inv,1"]);
        let data = payloads[0].splitn(3, '|').nth(2).unwrap();
        assert_eq!(crate::SetpointChange::from_notice(data), Some(change));
        assert_eq!(
            crate::SetpointChange::from_notice("x,applied,prod1,d"),
            None
        );
        assert_eq!(crate::SetpointChange::from_notice("1,bogus,prod1,d"), None);
    }

    #[test]
    fn malformed_ranges_are_refused() {
        for bad in ["", "x", "5-1", "1-99999999", "1,,2"] {
            assert_eq!(parse_ranges(bad), None, "{bad}");
        }
    }
}
