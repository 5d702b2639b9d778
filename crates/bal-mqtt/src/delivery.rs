//! The read check on every delivery. The subscribe check decides once, at SUBSCRIBE; a grant
//! can end afterwards, and the grant watcher then unsubscribes the consumer (within a second).
//! This check closes the gap in between, and covers messages already queued for an offline
//! session or taken over from another node: nothing reaches a consumer whose grant no longer
//! holds at the moment of delivery.
//!
//! It runs for every message to every subscriber, so answers are cached per (consumer,
//! producer) for [`FRESH_FOR`] at most, and dropped at once when the consumer's grants change
//! (the change feed, which on PostgreSQL carries every replica's changes).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bal_core::{Role, Topic, Username};
use bal_scd::{GrantStore, User};

use crate::access::may_read;

/// The longest a cached answer is used without asking the database again: the bound on a
/// revocation whose announcement was lost.
const FRESH_FOR: Duration = Duration::from_secs(1);

/// Cached "may this consumer read this producer now" answers.
#[derive(Default)]
pub(crate) struct ReadChecks {
    answers: Mutex<HashMap<(Username, Username), (bool, Instant)>>,
}

impl ReadChecks {
    /// Whether `user` may receive a message published on `topic` now, by the broker's read rule
    /// ([`may_read`]). Anything that is not a producer's topic, and any database error, is
    /// refused: default deny.
    pub(crate) async fn may_receive(
        &self,
        grants: &dyn GrantStore,
        user: &User,
        topic: &str,
    ) -> bool {
        let Ok(topic) = Topic::parse(topic) else {
            return false;
        };
        let producer = topic.producer();
        // Only a consumer's answer needs the database, so only it is cached.
        let key = (user.role == Role::Consumer).then(|| (user.username.clone(), producer.clone()));
        if let Some(key) = &key
            && let Some((allowed, at)) = self.lock().get(key)
            && at.elapsed() < FRESH_FOR
        {
            return *allowed;
        }
        let allowed = match may_read(grants, user, &producer).await {
            Ok(allowed) => allowed,
            Err(e) => {
                tracing::error!(error = %e.report(), "delivery read check failed");
                return false;
            }
        };
        if let Some(key) = key {
            self.lock().insert(key, (allowed, Instant::now()));
        }
        allowed
    }

    /// Forgets `consumer`'s answers (its grants changed), or every answer.
    pub(crate) fn forget(&self, consumer: Option<&str>) {
        let mut answers = self.lock();
        match consumer {
            Some(c) => answers.retain(|(who, _), _| who.as_str() != c),
            None => answers.clear(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(Username, Username), (bool, Instant)>> {
        self.answers.lock().unwrap_or_else(|e| e.into_inner())
    }
}
