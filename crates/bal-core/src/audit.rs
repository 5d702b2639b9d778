//! Who changed what: the vocabulary of the append-only audit log.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, SecondsFormat, Utc};

use alloy_primitives::B256;

use crate::serde_via_str;
use crate::setpoint::{DeviceName, SetpointState};
use crate::subscription::{GrantAccess, GrantAction, SubscriptionStatus};
use crate::topic::Topic;
use crate::user::{Role, Username};
use crate::wallet::WalletAddress;

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
    /// A set point reached this state (`setpoint.<state>`): certified like grant decisions.
    Setpoint(SetpointState),
}

impl AuditAction {
    pub const ALL: [AuditAction; 19] = [
        AuditAction::UserCreated,
        AuditAction::UserDeleted,
        AuditAction::PasswordChanged,
        AuditAction::SubscriptionRequested,
        AuditAction::SubscriptionAccepted,
        AuditAction::SubscriptionRefused,
        AuditAction::SubscriptionRevoked,
        AuditAction::SubscriptionCancelled,
        AuditAction::SubscriptionExpired,
        AuditAction::Setpoint(SetpointState::Queued),
        AuditAction::Setpoint(SetpointState::Sent),
        AuditAction::Setpoint(SetpointState::Delivered),
        AuditAction::Setpoint(SetpointState::Received),
        AuditAction::Setpoint(SetpointState::Applied),
        AuditAction::Setpoint(SetpointState::Rejected),
        AuditAction::Setpoint(SetpointState::Expired),
        AuditAction::Setpoint(SetpointState::Cancelled),
        AuditAction::Setpoint(SetpointState::Superseded),
        AuditAction::Setpoint(SetpointState::Failed),
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
            AuditAction::Setpoint(state) => match state {
                SetpointState::Queued => "setpoint.queued",
                SetpointState::Sent => "setpoint.sent",
                SetpointState::Delivered => "setpoint.delivered",
                SetpointState::Received => "setpoint.received",
                SetpointState::Applied => "setpoint.applied",
                SetpointState::Rejected => "setpoint.rejected",
                SetpointState::Expired => "setpoint.expired",
                SetpointState::Cancelled => "setpoint.cancelled",
                SetpointState::Superseded => "setpoint.superseded",
                SetpointState::Failed => "setpoint.failed",
            },
        }
    }

    /// Whether entries of this action are certified (their bytes go into a Merkle leaf): grant
    /// decisions and set point transitions.
    pub fn is_certified(self) -> bool {
        self.as_str().starts_with("subscription.") || self.as_str().starts_with("setpoint.")
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

/// What an audit entry says about its change: the typed form of the `detail` column.
///
/// Audit entries of grant decisions are certified (their bytes go into a Merkle leaf), so the
/// stored text must be the same whatever the backend and whatever `serde_json` features other
/// crates switch on (`preserve_order` changes the key order of a `serde_json::Value`).
/// [`AuditDetail::canonical_json`] writes it by hand, in one fixed key order: the order the
/// first release wrote through `serde_json` with `preserve_order` on, so that entries written
/// before and after read the same. The stored text is never re-encoded: proofs rebuild the
/// payload from the text exactly as it was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuditDetail {
    UserCreated {
        role: Role,
        topic: Option<Topic>,
        wallet: WalletAddress,
    },
    PasswordChanged,
    UserDeleted {
        role: Role,
        ended_subscriptions: usize,
    },
    SubscriptionRequested {
        consumer: Username,
        topic: Topic,
        access: GrantAccess,
    },
    /// A subscription's status changed (a decision, an expiry, or a deleted user's grants).
    Transition {
        from: SubscriptionStatus,
        to: SubscriptionStatus,
        consumer: Username,
        topic: Topic,
        expires_at: Option<DateTime<Utc>>,
        reason: Option<String>,
        access: GrantAccess,
    },
    /// A set point reached `to` (from `from`; none when it was issued): who issued it, to
    /// which device, the hash of its values, its validity, the device's sequence number, the
    /// device's reason (rejections) and, when issued, the issuer's signature.
    Setpoint {
        from: Option<SetpointState>,
        to: SetpointState,
        issuer: Actor,
        producer: Username,
        device: DeviceName,
        values_hash: B256,
        valid_until: DateTime<Utc>,
        seq: i64,
        reason: Option<String>,
        signature: Option<String>,
    },
}

impl AuditDetail {
    /// The JSON text stored and certified for this detail.
    pub fn canonical_json(&self) -> String {
        let mut out = CanonicalObject::default();
        match self {
            AuditDetail::UserCreated {
                role,
                topic,
                wallet,
            } => {
                out.string("role", role.as_str());
                out.optional_string("topic", topic.as_ref().map(Topic::as_str), true);
                out.string("wallet", &wallet.to_string());
            }
            AuditDetail::PasswordChanged => {}
            AuditDetail::UserDeleted {
                role,
                ended_subscriptions,
            } => {
                out.string("role", role.as_str());
                out.number("ended_subscriptions", *ended_subscriptions as u64);
            }
            AuditDetail::SubscriptionRequested {
                consumer,
                topic,
                access,
            } => {
                out.string("consumer", consumer.as_str());
                out.string("topic", topic.as_str());
                access_key(&mut out, *access);
            }
            AuditDetail::Transition {
                from,
                to,
                consumer,
                topic,
                expires_at,
                reason,
                access,
            } => {
                out.string("from", from.as_str());
                out.string("to", to.as_str());
                out.string("consumer", consumer.as_str());
                out.string("topic", topic.as_str());
                let expires = expires_at.map(|t| t.to_rfc3339_opts(SecondsFormat::AutoSi, true));
                out.optional_string("expires_at", expires.as_deref(), false);
                out.optional_string("reason", reason.as_deref(), false);
                access_key(&mut out, *access);
            }
            AuditDetail::Setpoint {
                from,
                to,
                issuer,
                producer,
                device,
                values_hash,
                valid_until,
                seq,
                reason,
                signature,
            } => {
                out.optional_string("from", from.map(SetpointState::as_str), false);
                out.string("to", to.as_str());
                out.string("issuer", &issuer.to_string());
                out.string("producer", producer.as_str());
                out.string("device", device.as_str());
                out.string("values_hash", &values_hash.to_string());
                let until = valid_until.to_rfc3339_opts(SecondsFormat::Millis, true);
                out.string("valid_until", &until);
                out.number("seq", u64::try_from(*seq).unwrap_or_default());
                out.optional_string("reason", reason.as_deref(), false);
                out.optional_string("signature", signature.as_deref(), false);
            }
        }
        out.finish()
    }
}

/// A grant's access, written only for control grants: data grants' entries keep the bytes the
/// releases before control grants wrote.
fn access_key(out: &mut CanonicalObject, access: GrantAccess) {
    if access != GrantAccess::Read {
        out.string("access", access.as_str());
    }
}

/// A JSON object written key by key in the order given.
#[derive(Default)]
struct CanonicalObject {
    text: String,
}

impl CanonicalObject {
    fn key(&mut self, key: &str) {
        self.text.push(if self.text.is_empty() { '{' } else { ',' });
        push_json_string(&mut self.text, key);
        self.text.push(':');
    }

    fn string(&mut self, key: &str, value: &str) {
        self.key(key);
        push_json_string(&mut self.text, value);
    }

    /// `null` for `None` when `keep_null`, otherwise the key is left out.
    fn optional_string(&mut self, key: &str, value: Option<&str>, keep_null: bool) {
        match value {
            Some(v) => self.string(key, v),
            None if keep_null => {
                self.key(key);
                self.text.push_str("null");
            }
            None => {}
        }
    }

    fn number(&mut self, key: &str, value: u64) {
        self.key(key);
        self.text.push_str(&value.to_string());
    }

    fn finish(mut self) -> String {
        if self.text.is_empty() {
            self.text.push('{');
        }
        self.text.push('}');
        self.text
    }
}

/// Appends `s` as a JSON string, escaped as `serde_json` escapes (RFC 8259: quote, backslash
/// and control characters; everything else as UTF-8).
fn push_json_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_details_are_the_bytes_the_first_release_wrote() {
        // Copied from a database made by release 0.1.0 (crates/bal/tests/fixtures).
        let wallet = WalletAddress::parse("0x522592E711F18D78F95F6355EA34BAF4f2Bd115B").unwrap();
        let topic = Topic::parse("platone/producer1").unwrap();
        let consumer = Username::parse("consumer1").unwrap();
        let created = AuditDetail::UserCreated {
            role: Role::Producer,
            topic: Some(topic.clone()),
            wallet,
        };
        assert_eq!(
            created.canonical_json(),
            r#"{"role":"producer","topic":"platone/producer1","wallet":"0x522592E711F18D78F95F6355EA34BAF4f2Bd115B"}"#
        );
        let admin = AuditDetail::UserCreated {
            role: Role::Admin,
            topic: None,
            wallet,
        };
        assert!(admin.canonical_json().contains(r#""topic":null,"#));
        let accepted = AuditDetail::Transition {
            from: SubscriptionStatus::Requested,
            to: SubscriptionStatus::Accepted,
            consumer: consumer.clone(),
            topic: topic.clone(),
            expires_at: None,
            reason: None,
            access: GrantAccess::Read,
        };
        assert_eq!(
            accepted.canonical_json(),
            r#"{"from":"requested","to":"accepted","consumer":"consumer1","topic":"platone/producer1"}"#
        );
        let requested = AuditDetail::SubscriptionRequested {
            consumer: consumer.clone(),
            topic: topic.clone(),
            access: GrantAccess::Read,
        };
        assert_eq!(
            requested.canonical_json(),
            r#"{"consumer":"consumer1","topic":"platone/producer1"}"#
        );
        let control = AuditDetail::SubscriptionRequested {
            consumer,
            topic,
            access: GrantAccess::Control,
        };
        assert_eq!(
            control.canonical_json(),
            r#"{"consumer":"consumer1","topic":"platone/producer1","access":"control"}"#
        );
        assert_eq!(AuditDetail::PasswordChanged.canonical_json(), "{}");
    }

    #[test]
    fn canonical_details_match_serde_json_for_optional_fields_and_escapes() {
        let at = DateTime::from_timestamp_millis(1_764_000_000_123).unwrap();
        let detail = AuditDetail::Transition {
            from: SubscriptionStatus::Accepted,
            to: SubscriptionStatus::Revoked,
            consumer: Username::parse("consumer1").unwrap(),
            topic: Topic::parse("platone/producer1").unwrap(),
            expires_at: Some(at),
            reason: Some("user \"deleted\"\n\u{1}".into()),
            access: GrantAccess::Read,
        };
        let text = detail.canonical_json();
        // Valid JSON whose values are what serde_json would write for each field.
        let parsed: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(parsed["expires_at"], serde_json::json!(at));
        assert_eq!(
            parsed["reason"],
            serde_json::json!("user \"deleted\"\n\u{1}")
        );
        assert!(text.starts_with(r#"{"from":"accepted","to":"revoked","consumer""#));
        assert!(
            text.contains(r#","expires_at":"2025-11-24T16:00:00.123Z","reason":"#),
            "{text}"
        );
        let deleted = AuditDetail::UserDeleted {
            role: Role::Consumer,
            ended_subscriptions: 2,
        };
        assert_eq!(
            deleted.canonical_json(),
            r#"{"role":"consumer","ended_subscriptions":2}"#
        );
    }

    #[test]
    fn set_point_details_name_the_issuer_the_device_and_the_values_hash() {
        let detail = AuditDetail::Setpoint {
            from: Some(SetpointState::Received),
            to: SetpointState::Rejected,
            issuer: Actor::User(Username::parse("dso").unwrap()),
            producer: Username::parse("prod1").unwrap(),
            device: DeviceName::parse("inv-1").unwrap(),
            values_hash: B256::repeat_byte(0xab),
            valid_until: DateTime::from_timestamp_millis(1_764_000_000_123).unwrap(),
            seq: 7,
            reason: Some("out of range".into()),
            signature: None,
        };
        let text = detail.canonical_json();
        assert_eq!(
            text,
            format!(
                r#"{{"from":"received","to":"rejected","issuer":"dso","producer":"prod1","device":"inv-1","values_hash":"0x{}","valid_until":"2025-11-24T16:00:00.123Z","seq":7,"reason":"out of range"}}"#,
                "ab".repeat(32)
            )
        );
        let parsed: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(parsed["seq"], 7);
    }

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
