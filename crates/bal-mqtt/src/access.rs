//! The broker's access rules, the same ones the REST API applies:
//! a producer publishes only on `platone/<self>` and below; a consumer subscribes to a
//! producer's topics only under an accepted, unexpired grant; admins may read any one
//! producer; nobody subscribes to a filter that reaches across producers.

use bal_core::{FilterScope, ReadScope, Role, Topic, Username};
use bal_scd::{GrantStore, StoreResult, User, read_scope};
use chrono::Utc;

/// Why a publish was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublishRefusal {
    /// Not a `platone/<producer>/...` topic.
    InvalidTopic,
    /// Someone else's topic, or the user is not a producer.
    NotAuthorized,
}

/// The topic a user may publish on, or why not.
pub fn check_publish(user: &User, topic: &str) -> Result<Topic, PublishRefusal> {
    let topic = Topic::parse(topic).map_err(|_| PublishRefusal::InvalidTopic)?;
    if user.role == Role::Producer && topic.producer() == user.username {
        Ok(topic)
    } else {
        Err(PublishRefusal::NotAuthorized)
    }
}

/// Whether a topic or filter is in the set point tree (`setpoints/...`).
pub fn is_setpoint_topic(topic: &str) -> bool {
    topic.split('/').next() == Some(bal_core::setpoint::TOPIC_PREFIX)
}

/// Whether `user` may subscribe to the set point `filter`: only a producer, only within
/// `setpoints/<itself>/`, with wildcards only below that level.
pub fn may_subscribe_setpoints(user: &User, filter: &str) -> bool {
    let levels: Vec<&str> = filter.split('/').collect();
    let well_formed = levels.iter().enumerate().all(|(i, l)| match *l {
        "#" => i == levels.len() - 1,
        "+" => true,
        l => !l.is_empty() && !l.contains(['+', '#']),
    });
    user.role == Role::Producer
        && well_formed
        && levels.len() >= 3
        && levels[0] == bal_core::setpoint::TOPIC_PREFIX
        && levels[1] == user.username.as_str()
}

/// Whether `user` may receive a message on the set point `topic`: only the producer it names.
pub fn may_receive_setpoint(user: &User, topic: &str) -> bool {
    let mut levels = topic.split('/');
    levels.next() == Some(bal_core::setpoint::TOPIC_PREFIX)
        && user.role == Role::Producer
        && levels.next() == Some(user.username.as_str())
}

/// True when `user` may subscribe with `filter` now.
pub async fn may_subscribe(
    grants: &dyn GrantStore,
    user: &User,
    filter: &str,
) -> StoreResult<bool> {
    if is_setpoint_topic(filter) {
        return Ok(may_subscribe_setpoints(user, filter));
    }
    match FilterScope::of(filter) {
        Ok(FilterScope::Producer(p)) => {
            let scope = read_scope(grants, user, Some(&p), Utc::now()).await?;
            Ok(subscribe_allowed(&scope, filter))
        }
        Ok(FilterScope::Wide) | Err(_) => Ok(false),
    }
}

/// The subscribe rule, given what the subscriber may read: a filter that stays within one
/// producer's topics, of a producer in `scope`.
pub fn subscribe_allowed(scope: &ReadScope, filter: &str) -> bool {
    matches!(FilterScope::of(filter), Ok(FilterScope::Producer(p)) if scope.allows(&p))
}

/// True when `user` may read `producer`'s readings now: `bal-core`'s read rule (`ReadScope`),
/// which asks the database only for a consumer's grants.
pub async fn may_read(
    grants: &dyn GrantStore,
    user: &User,
    producer: &Username,
) -> StoreResult<bool> {
    Ok(read_scope(grants, user, Some(producer), Utc::now())
        .await?
        .allows(producer))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::user;

    #[test]
    fn a_producer_publishes_only_below_its_own_topic() {
        let p = user("producer1", Role::Producer);
        assert!(check_publish(&p, "platone/producer1").is_ok());
        assert!(check_publish(&p, "platone/producer1/pmu/7").is_ok());
        for t in [
            "platone/producer2",
            "platone/producer10",
            "platone/producer1x/a",
        ] {
            assert_eq!(
                check_publish(&p, t),
                Err(PublishRefusal::NotAuthorized),
                "{t}"
            );
        }
        for t in ["platone/producer1/#", "other/x", "platone/producer1//a", ""] {
            assert_eq!(
                check_publish(&p, t),
                Err(PublishRefusal::InvalidTopic),
                "{t}"
            );
        }
    }

    #[test]
    fn only_the_producer_subscribes_to_and_receives_its_set_points() {
        let p = user("producer1", Role::Producer);
        for ok in [
            "setpoints/producer1/inv-1",
            "setpoints/producer1/+",
            "setpoints/producer1/#",
            "setpoints/producer1/inv-1/ack",
        ] {
            assert!(may_subscribe_setpoints(&p, ok), "{ok}");
        }
        for bad in [
            "setpoints/producer2/inv-1",
            "setpoints/+/inv-1",
            "setpoints/#",
            "setpoints/producer1",
            "setpoints/producer1/#/x",
            "setpoints/producer1/a+",
            "setpoints/producer1//x",
        ] {
            assert!(!may_subscribe_setpoints(&p, bad), "{bad}");
        }
        for role in [Role::Admin, Role::Consumer] {
            let u = user("producer1", role);
            assert!(!may_subscribe_setpoints(&u, "setpoints/producer1/#"));
            assert!(!may_receive_setpoint(&u, "setpoints/producer1/inv-1"));
        }
        assert!(may_receive_setpoint(&p, "setpoints/producer1/inv-1"));
        assert!(!may_receive_setpoint(&p, "setpoints/producer10/inv-1"));
        assert!(is_setpoint_topic("setpoints/x/y") && !is_setpoint_topic("platone/setpoints"));
    }

    #[test]
    fn consumers_and_admins_never_publish() {
        for role in [Role::Consumer, Role::Admin] {
            let u = user("someone", role);
            assert_eq!(
                check_publish(&u, "platone/someone"),
                Err(PublishRefusal::NotAuthorized)
            );
        }
    }
}
