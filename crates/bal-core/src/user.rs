//! Users, usernames and roles.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};

use crate::serde_via_str;
use crate::{Topic, WalletAddress};

/// A user as everyone but the login check sees it: no password hash, no key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub username: Username,
    pub role: Role,
    /// A producer's root topic; `None` for other roles.
    pub topic: Option<Topic>,
    pub wallet: WalletAddress,
    pub created_at: DateTime<Utc>,
}

/// A BAL login name: 3 to 32 characters of `a-z 0-9 _ -`, starting with a letter.
///
/// The same name is the producer's topic segment and its MQTT client identity, so it must be
/// safe in a topic (no `/ + #`) and unambiguous (lowercase only).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Username(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UsernameError {
    #[error("username must be 3 to 32 characters long")]
    Length,
    #[error("username must start with a lowercase letter")]
    FirstChar,
    #[error("username may contain only a-z, 0-9, '_' and '-'")]
    Charset,
}

impl Username {
    pub const MIN_LEN: usize = 3;
    pub const MAX_LEN: usize = 32;

    pub fn parse(raw: &str) -> Result<Self, UsernameError> {
        if !(Self::MIN_LEN..=Self::MAX_LEN).contains(&raw.len()) {
            return Err(UsernameError::Length);
        }
        if !raw.as_bytes()[0].is_ascii_lowercase() {
            return Err(UsernameError::FirstChar);
        }
        let ok = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-';
        if !raw.bytes().all(ok) {
            return Err(UsernameError::Charset);
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for Username {
    type Err = UsernameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Display for Username {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Username {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Username({})", self.0)
    }
}

impl AsRef<str> for Username {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

serde_via_str!(Username);

/// What a user may do. Checked by type in the API, never by comparing strings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    Admin,
    Producer,
    Consumer,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("role must be one of admin, producer, consumer")]
pub struct RoleError;

impl Role {
    pub const ALL: [Role; 3] = [Role::Admin, Role::Producer, Role::Consumer];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Producer => "producer",
            Role::Consumer => "consumer",
        }
    }
}

impl FromStr for Role {
    type Err = RoleError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or(RoleError)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

serde_via_str!(Role);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_usernames_are_accepted() {
        for name in [
            "abc",
            "producer1",
            "a-b_c",
            "z0123456789012345678901234567890",
        ] {
            assert_eq!(Username::parse(name).unwrap().as_str(), name);
        }
    }

    #[test]
    fn invalid_usernames_are_rejected_with_the_reason() {
        assert_eq!(Username::parse("ab"), Err(UsernameError::Length));
        assert_eq!(Username::parse(&"a".repeat(33)), Err(UsernameError::Length));
        assert_eq!(Username::parse("1abc"), Err(UsernameError::FirstChar));
        assert_eq!(Username::parse("_abc"), Err(UsernameError::FirstChar));
        assert_eq!(Username::parse("Alice"), Err(UsernameError::FirstChar));
        assert_eq!(Username::parse("alIce"), Err(UsernameError::Charset));
        assert_eq!(Username::parse("al/ce"), Err(UsernameError::Charset));
        assert_eq!(Username::parse("al+ce"), Err(UsernameError::Charset));
        assert_eq!(Username::parse("al ce"), Err(UsernameError::Charset));
        assert_eq!(Username::parse("alicé"), Err(UsernameError::Charset));
    }

    #[test]
    fn usernames_deserialize_only_when_valid() {
        let ok: Username = serde_json::from_str("\"alice\"").unwrap();
        assert_eq!(ok.as_str(), "alice");
        let err = serde_json::from_str::<Username>("\"A\"").unwrap_err();
        assert!(err.to_string().contains("3 to 32"), "{err}");
    }

    #[test]
    fn roles_round_trip_through_their_names() {
        for role in Role::ALL {
            assert_eq!(role.as_str().parse::<Role>(), Ok(role));
        }
        assert_eq!("root".parse::<Role>(), Err(RoleError));
        assert_eq!("Admin".parse::<Role>(), Err(RoleError));
    }
}
