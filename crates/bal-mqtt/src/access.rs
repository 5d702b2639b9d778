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

/// True when `user` may subscribe with `filter` now.
pub async fn may_subscribe(
    grants: &dyn GrantStore,
    user: &User,
    filter: &str,
) -> StoreResult<bool> {
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
