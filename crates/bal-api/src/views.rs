//! The JSON shapes the API returns. Field names are snake_case, as in D2.12's data models;
//! none of them can carry a password hash or a key.

use bal_core::{Fields, Measurement, Subscription};
use bal_scd::{AuditEntry, User};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

/// A user as clients see it.
#[derive(Debug, Serialize, ToSchema)]
pub struct UserView {
    #[schema(example = "producer1")]
    pub username: String,
    /// `admin`, `producer` or `consumer`.
    #[schema(example = "producer")]
    pub role: String,
    /// A producer's topic; absent for other roles.
    #[schema(example = "platone/producer1")]
    pub topic: Option<String>,
    /// The user's wallet address (EIP-55).
    #[schema(example = "0x4FD173C02de9004A7aFB2b46f70bBA83c86f6B12")]
    pub wallet: String,
    pub created_at: DateTime<Utc>,
}

impl From<&User> for UserView {
    fn from(u: &User) -> Self {
        Self {
            username: u.username.to_string(),
            role: u.role.to_string(),
            topic: u.topic.as_ref().map(ToString::to_string),
            wallet: u.wallet.to_string(),
            created_at: u.created_at,
        }
    }
}

/// A subscription (grant) as clients see it. `status` is as of the moment of the answer: an
/// accepted grant whose `expires_at` has passed shows as `expired`.
#[derive(Debug, Serialize, ToSchema)]
pub struct SubscriptionView {
    pub id: String,
    pub consumer: String,
    pub producer: String,
    #[schema(example = "platone/producer1")]
    pub topic: String,
    /// `requested`, `accepted`, `refused`, `revoked`, `cancelled` or `expired`.
    #[schema(example = "accepted")]
    pub status: String,
    pub creation_date: DateTime<Utc>,
    pub modification_date: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    /// Who made the last decision; `@system` for the BAL itself.
    pub decided_by: Option<String>,
    /// `read` (the producer's readings) or `control` (set points to its devices).
    #[schema(example = "read")]
    pub access: String,
}

impl SubscriptionView {
    pub fn at(s: &Subscription, now: DateTime<Utc>) -> Self {
        Self {
            id: s.id.to_string(),
            consumer: s.consumer.to_string(),
            producer: s.producer.to_string(),
            topic: s.topic.to_string(),
            status: s.status_at(now).to_string(),
            creation_date: s.creation_date,
            modification_date: s.modification_date,
            expires_at: s.expires_at,
            decided_by: s.decided_by.as_ref().map(ToString::to_string),
            access: s.access.to_string(),
        }
    }
}

/// A producer as consumers see it (figure 4 of D2.12).
#[derive(Debug, Serialize, ToSchema)]
pub struct ProducerView {
    pub username: String,
    pub topic: String,
    pub wallet: String,
    /// For a consumer: the status of its latest subscription to this producer, if any.
    pub subscription_status: Option<String>,
    /// For a consumer: the id of that subscription.
    pub subscription_id: Option<String>,
}

/// One audit log entry.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditView {
    pub id: i64,
    pub at: DateTime<Utc>,
    pub actor: String,
    #[schema(example = "subscription.accept")]
    pub action: String,
    #[schema(example = "user:producer1")]
    pub object: String,
    #[schema(value_type = Object)]
    pub detail: serde_json::Value,
}

impl From<&AuditEntry> for AuditView {
    fn from(e: &AuditEntry) -> Self {
        Self {
            id: e.id,
            at: e.at,
            actor: e.actor.to_string(),
            action: e.action.to_string(),
            object: e.object.clone(),
            detail: e.detail.clone(),
        }
    }
}

/// One reading. The payload is given exactly (`payload_base64`), and also as JSON when it is
/// JSON, or as text when it is UTF-8 text.
#[derive(Debug, Serialize, ToSchema)]
pub struct MeasurementView {
    pub id: i64,
    pub producer: String,
    #[schema(example = "platone/producer1/pmu-1")]
    pub topic: String,
    pub received_at: DateTime<Utc>,
    /// `keccak256(payload)`, 0x-prefixed: the value that is certified.
    pub payload_hash: String,
    pub payload_base64: String,
    /// The payload when it is JSON: any JSON value.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<serde_json::Value>)]
    pub payload_json: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload_text: Option<String>,
    /// Numeric fields read from the payload, for charts and queries.
    #[schema(value_type = Option<Object>)]
    pub fields: Option<Fields>,
    /// Where this reading is certified (single-reading answers only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub certification: Option<CertificationView>,
}

/// A reading's certification: its batch, its leaf, and the anchor once the batch is on chain.
#[derive(Debug, Serialize, ToSchema)]
pub struct CertificationView {
    /// `pending` (not in an anchored batch yet) or `anchored`.
    #[schema(example = "anchored")]
    pub status: &'static str,
    pub batch: Option<i64>,
    pub leaf_index: Option<usize>,
    pub root: Option<String>,
    pub transaction: Option<String>,
    pub block_number: Option<u64>,
}

impl From<&Measurement> for MeasurementView {
    fn from(m: &Measurement) -> Self {
        let json = serde_json::from_slice::<serde_json::Value>(&m.payload).ok();
        let text = match json {
            Some(_) => None,
            None => std::str::from_utf8(&m.payload).ok().map(str::to_owned),
        };
        Self {
            id: m.id,
            producer: m.producer.to_string(),
            topic: m.topic.to_string(),
            received_at: m.received_at,
            payload_hash: m.payload_hash.to_string(),
            payload_base64: BASE64.encode(&m.payload),
            payload_json: json,
            payload_text: text,
            fields: m.fields.clone(),
            certification: None,
        }
    }
}
