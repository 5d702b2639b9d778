//! Subscriptions (grants): a consumer's request to read a producer's topic, and its life.
//!
//! ```text
//! requested ──accept──► accepted ──revoke (producer)──► revoked
//!     │ └──refuse──► refused   ├──cancel (consumer)──► cancelled
//!     └──cancel (consumer)──► cancelled   └──expire (expires_at passed)──► expired
//! ```
//! `refused`, `revoked`, `cancelled` and `expired` are final; a new request may follow them.
//! At most one live (`requested` or `accepted`) subscription exists per consumer and topic:
//! the store enforces that, since only it sees all of them.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::audit::Actor;
use crate::serde_via_str;
use crate::topic::Topic;
use crate::user::Username;

/// A subscription's id: a UUIDv7, so ids sort by creation time.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SubscriptionId(Uuid);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("subscription id must be a UUID")]
pub struct SubscriptionIdError;

impl SubscriptionId {
    pub fn new() -> Self {
        Self(Uuid::now_v7())
    }

    pub fn parse(raw: &str) -> Result<Self, SubscriptionIdError> {
        Uuid::try_parse(raw)
            .map(Self)
            .map_err(|_| SubscriptionIdError)
    }
}

impl Default for SubscriptionId {
    fn default() -> Self {
        Self::new()
    }
}

impl FromStr for SubscriptionId {
    type Err = SubscriptionIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Display for SubscriptionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

impl fmt::Debug for SubscriptionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SubscriptionId({self})")
    }
}

serde_via_str!(SubscriptionId);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SubscriptionStatus {
    Requested,
    Accepted,
    Refused,
    Revoked,
    Cancelled,
    Expired,
}

impl SubscriptionStatus {
    pub const ALL: [SubscriptionStatus; 6] = [
        SubscriptionStatus::Requested,
        SubscriptionStatus::Accepted,
        SubscriptionStatus::Refused,
        SubscriptionStatus::Revoked,
        SubscriptionStatus::Cancelled,
        SubscriptionStatus::Expired,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SubscriptionStatus::Requested => "requested",
            SubscriptionStatus::Accepted => "accepted",
            SubscriptionStatus::Refused => "refused",
            SubscriptionStatus::Revoked => "revoked",
            SubscriptionStatus::Cancelled => "cancelled",
            SubscriptionStatus::Expired => "expired",
        }
    }

    /// Live subscriptions block a second request for the same consumer and topic.
    pub fn is_live(self) -> bool {
        matches!(
            self,
            SubscriptionStatus::Requested | SubscriptionStatus::Accepted
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown subscription status")]
pub struct UnknownStatus;

impl FromStr for SubscriptionStatus {
    type Err = UnknownStatus;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or(UnknownStatus)
    }
}

impl fmt::Display for SubscriptionStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

serde_via_str!(SubscriptionStatus);

/// What a grant gives: `read` (the producer's readings, the seed's subscriptions) or `control`
/// (issuing set points to the producer's devices). Neither implies the other: a control grant
/// reads nothing, a data grant commands nothing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum GrantAccess {
    #[default]
    Read,
    Control,
}

impl GrantAccess {
    pub const ALL: [GrantAccess; 2] = [GrantAccess::Read, GrantAccess::Control];

    pub fn as_str(self) -> &'static str {
        match self {
            GrantAccess::Read => "read",
            GrantAccess::Control => "control",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("access must be read or control")]
pub struct UnknownAccess;

impl FromStr for GrantAccess {
    type Err = UnknownAccess;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|a| a.as_str() == s)
            .ok_or(UnknownAccess)
    }
}

impl fmt::Display for GrantAccess {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

serde_via_str!(GrantAccess);

/// A decision on a subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GrantAction {
    /// By the producer; `expires_at` bounds the grant in time.
    Accept { expires_at: Option<DateTime<Utc>> },
    /// By the producer, on a request.
    Refuse,
    /// By the producer, on an accepted grant.
    Revoke,
    /// By the consumer, on its own request or grant.
    Cancel,
    /// By the BAL, once an accepted grant's `expires_at` has passed.
    Expire,
}

impl GrantAction {
    pub fn verb(&self) -> &'static str {
        match self {
            GrantAction::Accept { .. } => "accept",
            GrantAction::Refuse => "refuse",
            GrantAction::Revoke => "revoke",
            GrantAction::Cancel => "cancel",
            GrantAction::Expire => "expire",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GrantError {
    #[error("only the producer of {topic} may {verb} this subscription")]
    NotProducer { topic: Topic, verb: &'static str },
    #[error("only the consumer who requested this subscription may cancel it")]
    NotConsumer,
    #[error("only the BAL itself expires subscriptions")]
    NotSystem,
    #[error("cannot {verb} a subscription that is {from}")]
    IllegalTransition {
        from: SubscriptionStatus,
        verb: &'static str,
    },
    #[error("expires_at must be in the future")]
    ExpiryInPast,
    #[error("this subscription has no expiry, or it has not passed yet")]
    NotDue,
}

/// A consumer's subscription to a producer's root topic.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Subscription {
    pub id: SubscriptionId,
    pub consumer: Username,
    pub producer: Username,
    pub topic: Topic,
    pub status: SubscriptionStatus,
    pub creation_date: DateTime<Utc>,
    pub modification_date: DateTime<Utc>,
    /// When an accepted grant lapses; `None` is open-ended.
    pub expires_at: Option<DateTime<Utc>>,
    /// Who made the last decision (producer, consumer or the BAL).
    pub decided_by: Option<Actor>,
    /// What the grant gives (rows written before control grants existed are `read`).
    #[serde(default)]
    pub access: GrantAccess,
}

impl Subscription {
    /// A new request by `consumer` for the producer root topic of `topic`.
    pub fn request(consumer: Username, topic: &Topic, now: DateTime<Utc>) -> Self {
        let now = crate::millis(now);
        let topic = topic.root();
        Self {
            id: SubscriptionId::new(),
            consumer,
            producer: topic.producer(),
            topic,
            status: SubscriptionStatus::Requested,
            creation_date: now,
            modification_date: now,
            expires_at: None,
            decided_by: None,
            access: GrantAccess::Read,
        }
    }

    /// A new request by `consumer` for `access` to the producer of `topic`.
    pub fn request_access(
        consumer: Username,
        topic: &Topic,
        access: GrantAccess,
        now: DateTime<Utc>,
    ) -> Self {
        Self {
            access,
            ..Self::request(consumer, topic, now)
        }
    }

    /// The status as of `now`: an accepted grant whose expiry has passed is already expired,
    /// even before the BAL has written that down, so no reader ever honours a lapsed grant.
    pub fn status_at(&self, now: DateTime<Utc>) -> SubscriptionStatus {
        match (self.status, self.expires_at) {
            (SubscriptionStatus::Accepted, Some(t)) if t <= now => SubscriptionStatus::Expired,
            (s, _) => s,
        }
    }

    /// True when the grant is in force at `now` (accepted and not expired), whatever its
    /// access: callers check [`Subscription::access`] for what it gives.
    pub fn grants_access_at(&self, now: DateTime<Utc>) -> bool {
        self.status_at(now) == SubscriptionStatus::Accepted
    }

    /// Applies `action` by `actor` at `now`: the new subscription, or why it is not allowed.
    pub fn apply(
        &self,
        action: &GrantAction,
        actor: &Actor,
        now: DateTime<Utc>,
    ) -> Result<Subscription, GrantError> {
        use SubscriptionStatus as S;
        let now = crate::millis(now);
        let verb = action.verb();
        let is_producer = actor.username() == Some(&self.producer);
        let is_consumer = actor.username() == Some(&self.consumer);
        match action {
            GrantAction::Accept { .. } | GrantAction::Refuse | GrantAction::Revoke
                if !is_producer =>
            {
                return Err(GrantError::NotProducer {
                    topic: self.topic.clone(),
                    verb,
                });
            }
            GrantAction::Cancel if !is_consumer => return Err(GrantError::NotConsumer),
            GrantAction::Expire if *actor != Actor::System => return Err(GrantError::NotSystem),
            _ => {}
        }

        // An expire is due exactly when `status_at` already reports it, so it is checked
        // against the stored status; everything else against the status as of `now`.
        let from = match action {
            GrantAction::Expire => self.status,
            _ => self.status_at(now),
        };
        let illegal = GrantError::IllegalTransition { from, verb };
        let mut next = self.clone();
        next.status = match (from, action) {
            (S::Requested, GrantAction::Accept { expires_at }) => {
                if matches!(expires_at, Some(t) if *t <= now) {
                    return Err(GrantError::ExpiryInPast);
                }
                next.expires_at = expires_at.map(crate::millis);
                S::Accepted
            }
            (S::Requested, GrantAction::Refuse) => S::Refused,
            (S::Requested | S::Accepted, GrantAction::Cancel) => S::Cancelled,
            (S::Accepted, GrantAction::Revoke) => S::Revoked,
            (S::Accepted, GrantAction::Expire) => {
                if self.status_at(now) != S::Expired {
                    return Err(GrantError::NotDue);
                }
                S::Expired
            }
            _ => return Err(illegal),
        };
        next.modification_date = now;
        next.decided_by = Some(actor.clone());
        Ok(next)
    }

    /// Ends a live subscription because `deleted` (its producer or consumer) is being removed
    /// by `actor`: revoked when the producer goes, cancelled when the consumer goes. `None`
    /// when there is nothing to end.
    pub fn end_for_deleted_user(
        &self,
        deleted: &Username,
        actor: &Actor,
        now: DateTime<Utc>,
    ) -> Option<Subscription> {
        if !self.status_at(now).is_live() {
            return None;
        }
        let status = if *deleted == self.producer {
            SubscriptionStatus::Revoked
        } else if *deleted == self.consumer {
            SubscriptionStatus::Cancelled
        } else {
            return None;
        };
        Some(Subscription {
            status,
            modification_date: crate::millis(now),
            decided_by: Some(actor.clone()),
            ..self.clone()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;

    fn user(n: &str) -> Username {
        Username::parse(n).unwrap()
    }
    fn producer() -> Actor {
        Actor::User(user("prod"))
    }
    fn consumer() -> Actor {
        Actor::User(user("cons"))
    }
    fn t0() -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000, 0).unwrap()
    }
    fn requested() -> Subscription {
        Subscription::request(
            user("cons"),
            &Topic::parse("platone/prod/dev1").unwrap(),
            t0(),
        )
    }
    fn with_status(status: SubscriptionStatus) -> Subscription {
        Subscription {
            status,
            ..requested()
        }
    }
    fn accept(expires_at: Option<DateTime<Utc>>) -> GrantAction {
        GrantAction::Accept { expires_at }
    }

    #[test]
    fn a_request_is_made_on_the_producers_root_topic() {
        let s = requested();
        assert_eq!(s.topic.as_str(), "platone/prod");
        assert_eq!(s.producer, user("prod"));
        assert_eq!(s.status, SubscriptionStatus::Requested);
        assert_eq!(s.decided_by, None);
    }

    #[test]
    fn the_producer_accepts_refuses_and_revokes() {
        let later = t0() + Duration::seconds(5);
        let accepted = requested()
            .apply(&accept(None), &producer(), later)
            .unwrap();
        assert_eq!(accepted.status, SubscriptionStatus::Accepted);
        assert_eq!(accepted.modification_date, later);
        assert_eq!(accepted.creation_date, t0());
        assert_eq!(accepted.decided_by, Some(producer()));
        assert!(accepted.grants_access_at(later));

        let refused = requested()
            .apply(&GrantAction::Refuse, &producer(), later)
            .unwrap();
        assert_eq!(refused.status, SubscriptionStatus::Refused);

        let revoked = accepted
            .apply(&GrantAction::Revoke, &producer(), later)
            .unwrap();
        assert_eq!(revoked.status, SubscriptionStatus::Revoked);
        assert!(!revoked.grants_access_at(later));
    }

    #[test]
    fn the_consumer_cancels_a_request_or_a_grant() {
        for from in [SubscriptionStatus::Requested, SubscriptionStatus::Accepted] {
            let s = with_status(from)
                .apply(&GrantAction::Cancel, &consumer(), t0())
                .unwrap();
            assert_eq!(s.status, SubscriptionStatus::Cancelled);
            assert_eq!(s.decided_by, Some(consumer()));
        }
    }

    #[test]
    fn an_accepted_grant_expires_when_its_time_passes() {
        let until = t0() + Duration::seconds(60);
        let s = requested()
            .apply(&accept(Some(until)), &producer(), t0())
            .unwrap();
        assert_eq!(s.expires_at, Some(until));
        assert!(s.grants_access_at(until - Duration::milliseconds(1)));
        assert_eq!(s.status_at(until), SubscriptionStatus::Expired);
        assert!(!s.grants_access_at(until));

        assert_eq!(
            s.apply(
                &GrantAction::Expire,
                &Actor::System,
                until - Duration::seconds(1)
            ),
            Err(GrantError::NotDue)
        );
        let expired = s
            .apply(&GrantAction::Expire, &Actor::System, until)
            .unwrap();
        assert_eq!(expired.status, SubscriptionStatus::Expired);
        assert_eq!(expired.decided_by, Some(Actor::System));

        // A lapsed grant can no longer be revoked or cancelled: it is already over.
        let after = until + Duration::seconds(1);
        for (action, actor) in [
            (GrantAction::Revoke, producer()),
            (GrantAction::Cancel, consumer()),
        ] {
            assert_eq!(
                s.apply(&action, &actor, after),
                Err(GrantError::IllegalTransition {
                    from: SubscriptionStatus::Expired,
                    verb: action.verb()
                })
            );
        }
    }

    #[test]
    fn an_open_ended_grant_never_expires() {
        let s = with_status(SubscriptionStatus::Accepted);
        let far = t0() + Duration::days(36_500);
        assert!(s.grants_access_at(far));
        assert_eq!(
            s.apply(&GrantAction::Expire, &Actor::System, far),
            Err(GrantError::NotDue)
        );
    }

    #[test]
    fn times_are_kept_to_the_millisecond_as_stored() {
        let now = t0() + Duration::nanoseconds(1_234_567);
        let s = Subscription::request(user("cons"), &Topic::parse("platone/prod").unwrap(), now);
        assert_eq!(s.creation_date, t0() + Duration::milliseconds(1));
        let until = now + Duration::seconds(60);
        let a = s.apply(&accept(Some(until)), &producer(), now).unwrap();
        assert_eq!(
            a.expires_at.unwrap().timestamp_subsec_nanos() % 1_000_000,
            0
        );
        assert_eq!(a.modification_date.timestamp_subsec_nanos() % 1_000_000, 0);
    }

    #[test]
    fn an_expiry_in_the_past_is_refused() {
        let r = requested().apply(&accept(Some(t0())), &producer(), t0());
        assert_eq!(r, Err(GrantError::ExpiryInPast));
    }

    #[test]
    fn only_the_right_party_may_act() {
        let stranger = Actor::User(user("mallory"));
        let s = requested();
        for action in [accept(None), GrantAction::Refuse, GrantAction::Revoke] {
            for actor in [consumer(), stranger.clone(), Actor::System] {
                assert!(matches!(
                    s.apply(&action, &actor, t0()),
                    Err(GrantError::NotProducer { .. })
                ));
            }
        }
        for actor in [producer(), stranger.clone(), Actor::System] {
            assert_eq!(
                s.apply(&GrantAction::Cancel, &actor, t0()),
                Err(GrantError::NotConsumer)
            );
        }
        let accepted = with_status(SubscriptionStatus::Accepted);
        for actor in [producer(), consumer(), stranger] {
            assert_eq!(
                accepted.apply(&GrantAction::Expire, &actor, t0()),
                Err(GrantError::NotSystem)
            );
        }
    }

    #[test]
    fn every_illegal_transition_is_a_typed_error() {
        use SubscriptionStatus as S;
        let legal = |from: S, verb: &str| {
            matches!(
                (from, verb),
                (S::Requested, "accept" | "refuse" | "cancel")
                    | (S::Accepted, "revoke" | "cancel" | "expire")
            )
        };
        let actions = [
            (accept(None), producer()),
            (GrantAction::Refuse, producer()),
            (GrantAction::Revoke, producer()),
            (GrantAction::Cancel, consumer()),
            (GrantAction::Expire, Actor::System),
        ];
        let mut checked = 0;
        for from in S::ALL {
            // Give accepted grants a lapsed expiry so that `expire` is due, yet keep the
            // other actions judged on a still-running grant.
            for (action, actor) in &actions {
                let mut s = with_status(from);
                let now = if *action == GrantAction::Expire {
                    s.expires_at = Some(t0());
                    t0() + Duration::seconds(1)
                } else {
                    t0()
                };
                let result = s.apply(action, actor, now);
                if legal(from, action.verb()) {
                    assert!(
                        result.is_ok(),
                        "{from} --{}--> should be legal",
                        action.verb()
                    );
                } else {
                    assert_eq!(
                        result,
                        Err(GrantError::IllegalTransition {
                            from,
                            verb: action.verb()
                        }),
                        "{from} --{}--> should be illegal",
                        action.verb()
                    );
                }
                checked += 1;
            }
        }
        assert_eq!(checked, 30);
    }

    #[test]
    fn deleting_a_party_ends_its_live_subscriptions() {
        let admin = Actor::User(user("admin"));
        for from in [SubscriptionStatus::Requested, SubscriptionStatus::Accepted] {
            let s = with_status(from);
            let by_producer = s.end_for_deleted_user(&user("prod"), &admin, t0()).unwrap();
            assert_eq!(by_producer.status, SubscriptionStatus::Revoked);
            assert_eq!(by_producer.decided_by, Some(admin.clone()));
            let by_consumer = s.end_for_deleted_user(&user("cons"), &admin, t0()).unwrap();
            assert_eq!(by_consumer.status, SubscriptionStatus::Cancelled);
            assert_eq!(s.end_for_deleted_user(&user("other"), &admin, t0()), None);
        }
        let refused = with_status(SubscriptionStatus::Refused);
        assert_eq!(
            refused.end_for_deleted_user(&user("prod"), &admin, t0()),
            None
        );
    }

    #[test]
    fn statuses_and_ids_round_trip_through_text() {
        for s in SubscriptionStatus::ALL {
            assert_eq!(s.as_str().parse::<SubscriptionStatus>(), Ok(s));
        }
        assert!("pending".parse::<SubscriptionStatus>().is_err());
        let id = SubscriptionId::new();
        assert_eq!(id.to_string().parse::<SubscriptionId>(), Ok(id));
        assert!("not-a-uuid".parse::<SubscriptionId>().is_err());
    }
}
