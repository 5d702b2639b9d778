//! Who changed what: the vocabulary of the append-only audit log.

use std::fmt;
use std::str::FromStr;

use crate::serde_via_str;
use crate::subscription::GrantAction;
use crate::user::Username;

/// The author of a change: a logged-in user, or the BAL itself (expiry, first-start set-up).
#[derive(Clone, PartialEq, Eq, Hash)]
pub enum Actor {
    User(Username),
    System,
}

impl Actor {
    /// Written for [`Actor::System`]; `@` cannot start a username, so the two never collide.
    pub const SYSTEM: &'static str = "@system";

    pub fn username(&self) -> Option<&Username> {
        match self {
            Actor::User(u) => Some(u),
            Actor::System => None,
        }
    }
}

impl fmt::Display for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Actor::User(u) => f.write_str(u.as_str()),
            Actor::System => f.write_str(Self::SYSTEM),
        }
    }
}

impl fmt::Debug for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Actor({self})")
    }
}

impl FromStr for Actor {
    type Err = crate::user::UsernameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == Self::SYSTEM {
            Ok(Actor::System)
        } else {
            Username::parse(s).map(Actor::User)
        }
    }
}

serde_via_str!(Actor);

/// Every kind of change the audit log records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AuditAction {
    UserCreated,
    UserDeleted,
    PasswordChanged,
    SubscriptionRequested,
    SubscriptionAccepted,
    SubscriptionRefused,
    SubscriptionRevoked,
    SubscriptionCancelled,
    SubscriptionExpired,
}

impl AuditAction {
    pub const ALL: [AuditAction; 9] = [
        AuditAction::UserCreated,
        AuditAction::UserDeleted,
        AuditAction::PasswordChanged,
        AuditAction::SubscriptionRequested,
        AuditAction::SubscriptionAccepted,
        AuditAction::SubscriptionRefused,
        AuditAction::SubscriptionRevoked,
        AuditAction::SubscriptionCancelled,
        AuditAction::SubscriptionExpired,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AuditAction::UserCreated => "user.create",
            AuditAction::UserDeleted => "user.delete",
            AuditAction::PasswordChanged => "user.password",
            AuditAction::SubscriptionRequested => "subscription.request",
            AuditAction::SubscriptionAccepted => "subscription.accept",
            AuditAction::SubscriptionRefused => "subscription.refuse",
            AuditAction::SubscriptionRevoked => "subscription.revoke",
            AuditAction::SubscriptionCancelled => "subscription.cancel",
            AuditAction::SubscriptionExpired => "subscription.expire",
        }
    }
}

impl From<&GrantAction> for AuditAction {
    fn from(a: &GrantAction) -> Self {
        match a {
            GrantAction::Accept { .. } => AuditAction::SubscriptionAccepted,
            GrantAction::Refuse => AuditAction::SubscriptionRefused,
            GrantAction::Revoke => AuditAction::SubscriptionRevoked,
            GrantAction::Cancel => AuditAction::SubscriptionCancelled,
            GrantAction::Expire => AuditAction::SubscriptionExpired,
        }
    }
}

impl FromStr for AuditAction {
    type Err = UnknownAuditAction;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|a| a.as_str() == s)
            .ok_or(UnknownAuditAction)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown audit action")]
pub struct UnknownAuditAction;

impl fmt::Display for AuditAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

serde_via_str!(AuditAction);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_system_actor_never_collides_with_a_username() {
        assert!(Username::parse(Actor::SYSTEM).is_err());
        assert_eq!(Actor::SYSTEM.parse::<Actor>().unwrap(), Actor::System);
        let alice: Actor = "alice".parse().unwrap();
        assert_eq!(alice.username().unwrap().as_str(), "alice");
    }

    #[test]
    fn audit_actions_round_trip_through_their_names() {
        for a in AuditAction::ALL {
            assert_eq!(a.as_str().parse::<AuditAction>(), Ok(a));
        }
        assert!("user.explode".parse::<AuditAction>().is_err());
    }
}
