//! Who may read whose data: the BAL's one read rule.
//!
//! Every way to read a producer's readings asks it: REST listing and single readings, the live
//! stream, the explorer (getByTransaction) and proofs, the embedded broker at SUBSCRIBE and on
//! every delivery, and the Mosquitto ACL plan. An admin (the DSO) reads everything; a producer
//! its own data; a consumer the data of each producer whose grant it holds, accepted and not
//! expired; nobody else anything.
//!
//! Beside it, the control rule ([`ControlScope`]): who may issue set points to whose devices. An
//! admin (the DSO) commands every producer; a consumer the producers whose control grant it
//! holds, accepted and not expired. A data grant gives no control and a control grant no data.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};

use crate::{GrantAccess, Role, Subscription, User, Username};

/// The producers named by `user`'s own grants of `access` that are in force at `now`.
fn granted<'a>(
    user: &User,
    grants: impl IntoIterator<Item = &'a Subscription>,
    access: GrantAccess,
    now: DateTime<Utc>,
) -> BTreeSet<Username> {
    grants
        .into_iter()
        .filter(|g| g.consumer == user.username && g.access == access && g.grants_access_at(now))
        .map(|g| g.producer.clone())
        .collect()
}

/// What a user may read now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadScope {
    /// Every producer's data (admins).
    All,
    /// These producers' data only (possibly none).
    Producers(BTreeSet<Username>),
}

impl ReadScope {
    /// `user`'s scope at `now`, given the grants it holds. Only a consumer's own grants count:
    /// others in `grants` (any consumer's, any status) are ignored, so callers may pass a
    /// superset.
    pub fn of<'a>(
        user: &User,
        grants: impl IntoIterator<Item = &'a Subscription>,
        now: DateTime<Utc>,
    ) -> Self {
        match user.role {
            Role::Admin => ReadScope::All,
            Role::Producer => ReadScope::Producers(BTreeSet::from([user.username.clone()])),
            Role::Consumer => ReadScope::Producers(granted(user, grants, GrantAccess::Read, now)),
        }
    }

    /// Whether a user of `role` reads under grants: only then does its scope need them.
    pub fn depends_on_grants(role: Role) -> bool {
        role == Role::Consumer
    }

    /// May this scope read `producer`'s data?
    pub fn allows(&self, producer: &Username) -> bool {
        match self {
            ReadScope::All => true,
            ReadScope::Producers(p) => p.contains(producer),
        }
    }

    /// The producers readable, or `None` for all.
    pub fn producers(&self) -> Option<&BTreeSet<Username>> {
        match self {
            ReadScope::All => None,
            ReadScope::Producers(p) => Some(p),
        }
    }
}

/// Whose devices a user may send set points to now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ControlScope {
    /// Every producer's (admins: the DSO).
    All,
    /// These producers' only (possibly none). A producer commands nobody, not even itself: its
    /// devices are its own to set, outside the BAL.
    Producers(BTreeSet<Username>),
}

impl ControlScope {
    /// `user`'s control scope at `now`, given grants (a superset is fine, as for
    /// [`ReadScope::of`]).
    pub fn of<'a>(
        user: &User,
        grants: impl IntoIterator<Item = &'a Subscription>,
        now: DateTime<Utc>,
    ) -> Self {
        match user.role {
            Role::Admin => ControlScope::All,
            Role::Producer => ControlScope::Producers(BTreeSet::new()),
            Role::Consumer => {
                ControlScope::Producers(granted(user, grants, GrantAccess::Control, now))
            }
        }
    }

    /// May this scope send set points to `producer`'s devices?
    pub fn allows(&self, producer: &Username) -> bool {
        match self {
            ControlScope::All => true,
            ControlScope::Producers(p) => p.contains(producer),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Actor, GrantAction, SubscriptionStatus, Topic, WalletAddress};
    use chrono::Duration;

    fn user(name: &str, role: Role) -> User {
        let username = Username::parse(name).unwrap();
        User {
            topic: (role == Role::Producer).then(|| Topic::for_producer(&username)),
            username,
            role,
            wallet: "0x0000000000000000000000000000000000000001"
                .parse::<WalletAddress>()
                .unwrap(),
            created_at: DateTime::from_timestamp(0, 0).unwrap(),
        }
    }

    /// A grant from `consumer` on `producer`, moved to `status`, expiring at `expires`.
    fn grant(
        consumer: &str,
        producer: &str,
        status: SubscriptionStatus,
        expires: Option<DateTime<Utc>>,
    ) -> Subscription {
        let now = DateTime::from_timestamp(1_000, 0).unwrap();
        let c = Username::parse(consumer).unwrap();
        let p = Username::parse(producer).unwrap();
        let s = Subscription::request(c, &Topic::for_producer(&p), now);
        let owner = Actor::User(p);
        match status {
            SubscriptionStatus::Requested => s,
            SubscriptionStatus::Accepted => s
                .apply(
                    &GrantAction::Accept {
                        expires_at: expires,
                    },
                    &owner,
                    now,
                )
                .unwrap(),
            SubscriptionStatus::Refused => s.apply(&GrantAction::Refuse, &owner, now).unwrap(),
            other => panic!("not used here: {other:?}"),
        }
    }

    #[test]
    fn each_role_reads_what_the_rule_says_and_nothing_else() {
        let now = DateTime::from_timestamp(2_000, 0).unwrap();
        let later = Some(now + Duration::hours(1));
        let earlier = Some(now - Duration::seconds(1));
        let grants = [
            grant("consumer1", "producer1", SubscriptionStatus::Accepted, None),
            grant(
                "consumer1",
                "producer2",
                SubscriptionStatus::Requested,
                None,
            ),
            grant("consumer1", "producer3", SubscriptionStatus::Refused, None),
            grant(
                "consumer1",
                "producer4",
                SubscriptionStatus::Accepted,
                earlier,
            ),
            grant(
                "consumer1",
                "producer5",
                SubscriptionStatus::Accepted,
                later,
            ),
            grant("consumer2", "producer2", SubscriptionStatus::Accepted, None),
        ];
        let p = |n: &str| Username::parse(n).unwrap();
        // (user, role, producer asked about, allowed)
        let table = [
            ("admin", Role::Admin, "producer1", true),
            ("admin", Role::Admin, "producer9", true),
            ("producer1", Role::Producer, "producer1", true),
            ("producer1", Role::Producer, "producer2", false),
            ("consumer1", Role::Consumer, "producer1", true),
            ("consumer1", Role::Consumer, "producer2", false), // requested only
            ("consumer1", Role::Consumer, "producer3", false), // refused
            ("consumer1", Role::Consumer, "producer4", false), // expired
            ("consumer1", Role::Consumer, "producer5", true),  // not expired yet
            ("consumer1", Role::Consumer, "consumer2", false),
            ("consumer2", Role::Consumer, "producer2", true),
            ("consumer2", Role::Consumer, "producer1", false), // consumer1's grant
            ("consumer3", Role::Consumer, "producer1", false), // no grant at all
        ];
        for (name, role, producer, allowed) in table {
            let scope = ReadScope::of(&user(name, role), &grants, now);
            assert_eq!(
                scope.allows(&p(producer)),
                allowed,
                "{name} ({role:?}) reading {producer}: {scope:?}"
            );
        }
        assert_eq!(
            ReadScope::of(&user("admin", Role::Admin), &[], now).producers(),
            None
        );
        let c1 = ReadScope::of(&user("consumer1", Role::Consumer), &grants, now);
        assert_eq!(
            c1.producers()
                .unwrap()
                .iter()
                .map(Username::as_str)
                .collect::<Vec<_>>(),
            ["producer1", "producer5"]
        );
        assert!(ReadScope::depends_on_grants(Role::Consumer));
        assert!(!ReadScope::depends_on_grants(Role::Admin));
        assert!(!ReadScope::depends_on_grants(Role::Producer));
    }

    #[test]
    fn a_data_grant_gives_no_control_and_a_control_grant_no_data() {
        let now = DateTime::from_timestamp(2_000, 0).unwrap();
        let mut control = grant("consumer1", "producer1", SubscriptionStatus::Accepted, None);
        control.access = GrantAccess::Control;
        let mut lapsed = grant(
            "consumer1",
            "producer3",
            SubscriptionStatus::Accepted,
            Some(now - Duration::seconds(1)),
        );
        lapsed.access = GrantAccess::Control;
        let read = grant("consumer1", "producer2", SubscriptionStatus::Accepted, None);
        let grants = [control, lapsed, read];
        let p = |n: &str| Username::parse(n).unwrap();
        let consumer = user("consumer1", Role::Consumer);
        let reads = ReadScope::of(&consumer, &grants, now);
        let controls = ControlScope::of(&consumer, &grants, now);
        assert!(!reads.allows(&p("producer1")));
        assert!(reads.allows(&p("producer2")));
        assert!(controls.allows(&p("producer1")));
        assert!(!controls.allows(&p("producer2")));
        assert!(!controls.allows(&p("producer3")), "expired control grant");
        // Another consumer's control grant gives this one nothing.
        let other = ControlScope::of(&user("consumer2", Role::Consumer), &grants, now);
        assert!(!other.allows(&p("producer1")));
        assert!(ControlScope::of(&user("admin", Role::Admin), &[], now).allows(&p("producer9")));
        let producer = ControlScope::of(&user("producer1", Role::Producer), &grants, now);
        assert!(
            !producer.allows(&p("producer1")),
            "producers command nobody"
        );
    }
}
