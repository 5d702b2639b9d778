//! Set points: commands from the grid operator (an admin) or the holder of a control grant to one
//! device of a producer (the seed's FR-BAP-NC-01..03). What is decided here, without I/O: which
//! device names and values are acceptable, the states a set point goes through and which changes
//! are allowed, the topics it travels on, the payload a device receives and the answers it may
//! send back.
//!
//! A set point is stored before anything is sent (`queued`), then `sent` on
//! `setpoints/<producer>/<device>` (QoS 1), `delivered` when the device's PUBACK is seen (the
//! embedded broker shows it; Mosquitto does not), and `received`, `applied` or `rejected` as the
//! device answers on `setpoints/<producer>/<device>/ack`. It ends `expired` when no final answer
//! came by `valid_until`, `cancelled` by its issuer, `superseded` by a newer set point for the
//! same device that sets every key it sets, or `failed` when delivery was given up.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use alloy_primitives::{Address, B256, Signature, keccak256};
use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use crate::serde_via_str;
use crate::user::Username;

/// The first level of every set point topic.
pub const TOPIC_PREFIX: &str = "setpoints";

/// One device of a producer: a single MQTT topic level.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeviceName(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SetpointError {
    #[error("device must be 1 to {max} characters, without '/', '+', '#', control characters or a leading '$'", max = DeviceName::MAX_LEN)]
    Device,
    #[error("values must be a JSON object with at least one key")]
    NotAnObject,
    #[error("values must be at most {max} bytes of JSON", max = SetpointValues::MAX_BYTES)]
    TooLarge,
    #[error("valid_until must be in the future")]
    InThePast,
    #[error("valid_until must be at most 30 days ahead")]
    TooLong,
    #[error("unknown set point state: {0}")]
    State(String),
    #[error(
        "a device answer must be a JSON object with an integer id and a status of received, applied or rejected"
    )]
    Answer,
}

impl DeviceName {
    pub const MAX_LEN: usize = 64;

    pub fn parse(raw: &str) -> Result<Self, SetpointError> {
        let bad = |c: char| c == '/' || c == '+' || c == '#' || c.is_control();
        let chars = raw.chars().count();
        if chars == 0 || chars > Self::MAX_LEN || raw.starts_with('$') || raw.contains(bad) {
            return Err(SetpointError::Device);
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for DeviceName {
    type Err = SetpointError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Display for DeviceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for DeviceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DeviceName({:?})", self.0)
    }
}

serde_via_str!(DeviceName);

/// Where a set point is sent: `setpoints/<producer>/<device>`.
pub fn command_topic(producer: &Username, device: &DeviceName) -> String {
    format!("{TOPIC_PREFIX}/{producer}/{device}")
}

/// Where the device answers: `setpoints/<producer>/<device>/ack`.
pub fn ack_topic(producer: &Username, device: &DeviceName) -> String {
    format!("{TOPIC_PREFIX}/{producer}/{device}/ack")
}

/// The producer and device of an answer's topic; `None` for any other topic.
pub fn parse_ack_topic(topic: &str) -> Option<(Username, DeviceName)> {
    let mut levels = topic.split('/');
    let (prefix, producer, device, ack) = (
        levels.next()?,
        levels.next()?,
        levels.next()?,
        levels.next()?,
    );
    if prefix != TOPIC_PREFIX || ack != "ack" || levels.next().is_some() {
        return None;
    }
    Some((
        Username::parse(producer).ok()?,
        DeviceName::parse(device).ok()?,
    ))
}

/// What a set point asks the device to set: a JSON object, kept and hashed in one canonical
/// form (keys sorted at every depth, no spaces), so that the certified hash does not depend on
/// how a client ordered its keys.
#[derive(Clone, PartialEq, Eq)]
pub struct SetpointValues {
    canonical: String,
    keys: BTreeSet<String>,
}

impl SetpointValues {
    /// Large enough for any real command (a few dozen named values), small enough that a
    /// device's queue of them stays small.
    pub const MAX_BYTES: usize = 4096;

    /// `values` as given: an object with at least one key. (JSON text cannot hold NaN or an
    /// infinity; a number too large for a double is refused when the text is parsed.)
    pub fn new(values: &Value) -> Result<Self, SetpointError> {
        let Value::Object(map) = values else {
            return Err(SetpointError::NotAnObject);
        };
        if map.is_empty() {
            return Err(SetpointError::NotAnObject);
        }
        let canonical = canonical(values);
        if canonical.len() > Self::MAX_BYTES {
            return Err(SetpointError::TooLarge);
        }
        Ok(Self {
            canonical,
            keys: map.keys().cloned().collect(),
        })
    }

    /// The stored and certified text.
    pub fn canonical_json(&self) -> &str {
        &self.canonical
    }

    /// `keccak256` of [`Self::canonical_json`]: what a transition's leaf carries.
    pub fn hash(&self) -> B256 {
        keccak256(self.canonical.as_bytes())
    }

    /// The top-level keys this set point sets.
    pub fn keys(&self) -> &BTreeSet<String> {
        &self.keys
    }

    /// Whether this (newer) set point leaves nothing of `older` to apply: it sets every key
    /// `older` sets. One that sets only some of them leaves `older` standing.
    pub fn supersedes(&self, older: &SetpointValues) -> bool {
        older.keys.is_subset(&self.keys)
    }

    pub fn to_value(&self) -> Value {
        serde_json::from_str(&self.canonical).expect("canonical JSON parses")
    }
}

impl fmt::Debug for SetpointValues {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SetpointValues({})", self.canonical)
    }
}

/// JSON text with object keys sorted at every depth, whatever order `serde_json`'s map keeps.
fn canonical(value: &Value) -> String {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            let fields: Vec<String> = keys
                .into_iter()
                .map(|k| format!("{}:{}", Value::from(k.as_str()), canonical(&map[k])))
                .collect();
            format!("{{{}}}", fields.join(","))
        }
        Value::Array(items) => {
            let items: Vec<String> = items.iter().map(canonical).collect();
            format!("[{}]", items.join(","))
        }
        other => other.to_string(),
    }
}

/// The longest a set point may stay valid: a command, not a standing configuration.
pub const MAX_VALIDITY: chrono::Duration = chrono::Duration::days(30);

/// Checks the end of a set point's validity when it is issued: in the future, at most
/// [`MAX_VALIDITY`] ahead.
pub fn check_valid_until(
    valid_until: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<(), SetpointError> {
    if valid_until <= now {
        return Err(SetpointError::InThePast);
    }
    if valid_until > now + MAX_VALIDITY {
        return Err(SetpointError::TooLong);
    }
    Ok(())
}

/// Where a set point stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SetpointState {
    Queued,
    Sent,
    Delivered,
    Received,
    Applied,
    Rejected,
    Expired,
    Cancelled,
    Superseded,
    Failed,
}

impl SetpointState {
    pub const ALL: [SetpointState; 10] = [
        SetpointState::Queued,
        SetpointState::Sent,
        SetpointState::Delivered,
        SetpointState::Received,
        SetpointState::Applied,
        SetpointState::Rejected,
        SetpointState::Expired,
        SetpointState::Cancelled,
        SetpointState::Superseded,
        SetpointState::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SetpointState::Queued => "queued",
            SetpointState::Sent => "sent",
            SetpointState::Delivered => "delivered",
            SetpointState::Received => "received",
            SetpointState::Applied => "applied",
            SetpointState::Rejected => "rejected",
            SetpointState::Expired => "expired",
            SetpointState::Cancelled => "cancelled",
            SetpointState::Superseded => "superseded",
            SetpointState::Failed => "failed",
        }
    }

    /// A final state changes no more: answers and timers for it are ignored.
    pub fn is_final(self) -> bool {
        !matches!(
            self,
            SetpointState::Queued
                | SetpointState::Sent
                | SetpointState::Delivered
                | SetpointState::Received
        )
    }

    /// Whether a set point in this state may move to `next`. Steps may be skipped (Mosquitto
    /// shows no PUBACK, a device may answer `applied` without `received`), never taken back.
    pub fn can_become(self, next: SetpointState) -> bool {
        use SetpointState::*;
        if self.is_final() {
            return false;
        }
        match next {
            Queued => false,
            Sent => self == Queued,
            Delivered => self == Sent,
            Received => matches!(self, Sent | Delivered),
            Applied | Rejected => matches!(self, Sent | Delivered | Received),
            // Once the device has it (its PUBACK: delivered), the BAL cannot take it back: a
            // cancel would only hide what the device may still apply.
            Cancelled => matches!(self, Queued | Sent),
            Failed => matches!(self, Queued | Sent | Delivered),
            Expired | Superseded => true,
        }
    }
}

impl fmt::Display for SetpointState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for SetpointState {
    type Err = SetpointError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|state| state.as_str() == s)
            .ok_or_else(|| SetpointError::State(s.to_owned()))
    }
}

/// What a device receives: the id (also in MQTT 5's Correlation Data), the values, the end of
/// validity (also the message's expiry) and the device's sequence number, which only grows, so a
/// device can refuse a replay of anything it has seen.
pub fn delivery_payload(
    id: i64,
    values: &SetpointValues,
    valid_until: DateTime<Utc>,
    seq: i64,
) -> Vec<u8> {
    let valid_until = Value::from(valid_until.to_rfc3339_opts(chrono::SecondsFormat::Millis, true));
    format!(
        r#"{{"id":{id},"values":{},"valid_until":{valid_until},"seq":{seq}}}"#,
        values.canonical_json()
    )
    .into_bytes()
}

/// The text the issuer's wallet signs (an EIP-191 personal message, as `cast wallet sign` and
/// every Ethereum wallet sign text) when it issues a set point: who, to which device, the hash
/// of the values and until when. The `setpoint.queued` entry carries the signature, so anyone
/// holding its proof bundle can recover the signing wallet ([`signer_of_entry`]).
pub fn signed_message(
    issuer: &str,
    producer: &Username,
    device: &DeviceName,
    values_hash: &B256,
    valid_until: DateTime<Utc>,
) -> String {
    let until = valid_until.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    format!(
        "Platone BAL set point\nissuer: {issuer}\nproducer: {producer}\ndevice: {device}\n\
         values: {values_hash}\nvalid until: {until}"
    )
}

/// The wallet that signed an issued set point, from its certified audit entry (the payload of
/// a `setpoint.queued` proof bundle). `None` when the payload is no signed `setpoint.queued`
/// entry; an error when the signature does not parse or the entry is malformed.
pub fn signer_of_entry(payload: &[u8]) -> Option<Result<(Address, String), String>> {
    let entry: Value = serde_json::from_slice(payload).ok()?;
    if entry["action"] != "setpoint.queued" {
        return None;
    }
    let detail = &entry["detail"];
    let signature = detail["signature"].as_str()?;
    Some((|| {
        let text = |k: &str| {
            detail[k]
                .as_str()
                .ok_or_else(|| format!("the entry has no {k}"))
        };
        let producer = Username::parse(text("producer")?).map_err(|e| e.to_string())?;
        let device = DeviceName::parse(text("device")?).map_err(|e| e.to_string())?;
        let hash: B256 = text("values_hash")?
            .parse()
            .map_err(|_| "values_hash is not 32 bytes of hex".to_owned())?;
        let until = DateTime::parse_from_rfc3339(text("valid_until")?)
            .map_err(|e| e.to_string())?
            .with_timezone(&Utc);
        let issuer = text("issuer")?;
        let message = signed_message(issuer, &producer, &device, &hash, until);
        let signature: Signature = signature
            .parse()
            .map_err(|_| "the signature is not 65 bytes of hex".to_owned())?;
        let signer = signature
            .recover_address_from_msg(message.as_bytes())
            .map_err(|e| format!("no signer recovers from the signature: {e}"))?;
        Ok((signer, issuer.to_owned()))
    })())
}

/// A device's answer on its ack topic.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceAnswer {
    pub id: i64,
    /// `Received`, `Applied` or `Rejected`.
    pub state: SetpointState,
    /// Why it was rejected (or anything the device says), at most [`DeviceAnswer::MAX_REASON`]
    /// characters.
    pub reason: Option<String>,
    /// What the device reports it applied, if it says.
    pub values: Option<Map<String, Value>>,
}

impl DeviceAnswer {
    pub const MAX_REASON: usize = 256;

    /// Reads `{"id", "status", "reason"?, "values"?}`.
    pub fn parse(payload: &[u8]) -> Result<Self, SetpointError> {
        let value: Value = serde_json::from_slice(payload).map_err(|_| SetpointError::Answer)?;
        let object = value.as_object().ok_or(SetpointError::Answer)?;
        let id = object
            .get("id")
            .and_then(Value::as_i64)
            .filter(|id| *id > 0)
            .ok_or(SetpointError::Answer)?;
        let state = match object.get("status").and_then(Value::as_str) {
            Some("received") => SetpointState::Received,
            Some("applied") => SetpointState::Applied,
            Some("rejected") => SetpointState::Rejected,
            _ => return Err(SetpointError::Answer),
        };
        let reason = match object.get("reason") {
            None | Some(Value::Null) => None,
            // Control characters (NUL among them, which PostgreSQL text refuses) are dropped.
            Some(Value::String(r)) => Some(
                r.chars()
                    .filter(|c| !c.is_control())
                    .take(Self::MAX_REASON)
                    .collect(),
            ),
            Some(_) => return Err(SetpointError::Answer),
        };
        let values = match object.get("values") {
            None | Some(Value::Null) => None,
            Some(Value::Object(v)) => Some(v.clone()),
            Some(_) => return Err(SetpointError::Answer),
        };
        Ok(Self {
            id,
            state,
            reason,
            values,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn device_names_are_one_plain_topic_level() {
        for ok in ["inverter-1", "pmu.2", "a", &"x".repeat(64), "Zähler"] {
            assert!(DeviceName::parse(ok).is_ok(), "{ok}");
        }
        for bad in ["", "a/b", "+", "dev#", "$SYS", "tab\t", &"x".repeat(65)] {
            assert_eq!(
                DeviceName::parse(bad),
                Err(SetpointError::Device),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn topics_name_the_producer_and_the_device_and_only_acks_parse_back() {
        let p = Username::parse("prod1").unwrap();
        let d = DeviceName::parse("inv-1").unwrap();
        assert_eq!(command_topic(&p, &d), "setpoints/prod1/inv-1");
        assert_eq!(ack_topic(&p, &d), "setpoints/prod1/inv-1/ack");
        assert_eq!(parse_ack_topic("setpoints/prod1/inv-1/ack"), Some((p, d)));
        for other in [
            "setpoints/prod1/inv-1",
            "setpoints/prod1/inv-1/ack/more",
            "setpoints/prod1/+/ack",
            "platone/prod1/inv-1/ack",
            "setpoints/Not A User/inv-1/ack",
        ] {
            assert_eq!(parse_ack_topic(other), None, "{other}");
        }
    }

    #[test]
    fn values_are_canonical_whatever_the_key_order_and_bounded() {
        let a = SetpointValues::new(
            &json!({"q_kvar": -1.5, "p_kw": 3, "mode": {"b": 1, "a": [2, {"y": 0, "x": 1}]}}),
        )
        .unwrap();
        let b = SetpointValues::new(
            &json!({"mode": {"a": [2, {"x": 1, "y": 0}], "b": 1}, "p_kw": 3, "q_kvar": -1.5}),
        )
        .unwrap();
        assert_eq!(a.canonical_json(), b.canonical_json());
        assert_eq!(
            a.canonical_json(),
            r#"{"mode":{"a":[2,{"x":1,"y":0}],"b":1},"p_kw":3,"q_kvar":-1.5}"#
        );
        assert_eq!(a.hash(), b.hash());
        assert_eq!(
            a.to_value(),
            json!({"q_kvar": -1.5, "p_kw": 3, "mode": {"b": 1, "a": [2, {"y": 0, "x": 1}]}})
        );
        for bad in [json!([1]), json!(3), json!("x"), json!(null), json!({})] {
            assert_eq!(
                SetpointValues::new(&bad),
                Err(SetpointError::NotAnObject),
                "{bad}"
            );
        }
        let big = json!({ "k": "x".repeat(SetpointValues::MAX_BYTES) });
        assert_eq!(SetpointValues::new(&big), Err(SetpointError::TooLarge));
        // JSON text has no NaN or infinity, and a number beyond a double is refused when read.
        assert!(serde_json::from_str::<Value>(r#"{"p": 1e999}"#).is_err());
    }

    #[test]
    fn a_newer_set_point_supersedes_an_older_one_only_when_it_sets_every_key_of_it() {
        let v = |j: Value| SetpointValues::new(&j).unwrap();
        let older = v(json!({"p_kw": 1, "q_kvar": 0}));
        assert!(v(json!({"p_kw": 2, "q_kvar": 1})).supersedes(&older));
        assert!(v(json!({"p_kw": 2, "q_kvar": 1, "mode": "x"})).supersedes(&older));
        assert!(!v(json!({"p_kw": 2})).supersedes(&older));
    }

    #[test]
    fn valid_until_must_be_ahead() {
        let now = Utc::now();
        assert!(check_valid_until(now + chrono::Duration::seconds(1), now).is_ok());
        assert_eq!(check_valid_until(now, now), Err(SetpointError::InThePast));
        assert!(check_valid_until(now + MAX_VALIDITY, now).is_ok());
        let too_far = now + MAX_VALIDITY + chrono::Duration::seconds(1);
        assert_eq!(check_valid_until(too_far, now), Err(SetpointError::TooLong));
    }

    #[test]
    fn states_move_forward_only_and_final_states_do_not_move() {
        use SetpointState::*;
        // (from, to, allowed)
        let table = [
            (Queued, Sent, true),
            (Queued, Delivered, false),
            (Queued, Applied, false),
            (Queued, Cancelled, true),
            (Queued, Failed, true),
            (Queued, Expired, true),
            (Queued, Superseded, true),
            (Sent, Sent, false),
            (Sent, Delivered, true),
            (Sent, Received, true),
            (Sent, Applied, true),
            (Sent, Rejected, true),
            (Sent, Failed, true),
            (Delivered, Received, true),
            (Delivered, Sent, false),
            // A device that acknowledged but never answers is given up too.
            (Delivered, Failed, true),
            // Its PUBACK says the device has it: too late to cancel.
            (Delivered, Cancelled, false),
            (Received, Applied, true),
            (Received, Rejected, true),
            (Received, Received, false),
            (Received, Cancelled, false),
            (Received, Expired, true),
            (Received, Superseded, true),
        ];
        for (from, to, allowed) in table {
            assert_eq!(from.can_become(to), allowed, "{from} -> {to}");
        }
        for from in SetpointState::ALL.into_iter().filter(|s| s.is_final()) {
            for to in SetpointState::ALL {
                assert!(!from.can_become(to), "{from} is final, yet -> {to}");
            }
        }
        for state in SetpointState::ALL {
            assert_eq!(state.as_str().parse::<SetpointState>(), Ok(state));
            assert!(!state.can_become(Queued));
        }
        assert!("done".parse::<SetpointState>().is_err());
    }

    #[test]
    fn the_delivery_payload_carries_id_values_validity_and_sequence() {
        let values = SetpointValues::new(&json!({"p_kw": 2.5})).unwrap();
        let until = DateTime::parse_from_rfc3339("2026-12-04T12:00:00Z")
            .unwrap()
            .to_utc();
        let payload = delivery_payload(42, &values, until, 7);
        let read: Value = serde_json::from_slice(&payload).unwrap();
        assert_eq!(
            read,
            json!({"id": 42, "values": {"p_kw": 2.5}, "valid_until": "2026-12-04T12:00:00.000Z", "seq": 7})
        );
    }

    #[test]
    fn device_answers_are_read_strictly() {
        // A NUL (which PostgreSQL text refuses) or another control character is dropped.
        let odd =
            DeviceAnswer::parse(br#"{"id": 1, "status": "rejected", "reason": "a\u0000b\nc"}"#)
                .unwrap();
        assert_eq!(odd.reason.as_deref(), Some("abc"));
        let a = DeviceAnswer::parse(br#"{"id": 42, "status": "rejected", "reason": "over limit"}"#)
            .unwrap();
        assert_eq!(
            (a.id, a.state, a.reason.as_deref()),
            (42, SetpointState::Rejected, Some("over limit"))
        );
        let a = DeviceAnswer::parse(br#"{"id": 1, "status": "applied", "values": {"p_kw": 2}}"#)
            .unwrap();
        assert_eq!(a.state, SetpointState::Applied);
        assert_eq!(a.values.unwrap()["p_kw"], json!(2));
        let long = format!(
            r#"{{"id": 1, "status": "rejected", "reason": "{}"}}"#,
            "é".repeat(300)
        );
        assert_eq!(
            DeviceAnswer::parse(long.as_bytes())
                .unwrap()
                .reason
                .unwrap()
                .chars()
                .count(),
            256
        );
        for bad in [
            &b"not json"[..],
            br#"[1]"#,
            br#"{"status": "applied"}"#,
            br#"{"id": "42", "status": "applied"}"#,
            br#"{"id": 0, "status": "applied"}"#,
            br#"{"id": 1, "status": "sent"}"#,
            br#"{"id": 1, "status": "applied", "reason": 5}"#,
            br#"{"id": 1, "status": "applied", "values": [1]}"#,
        ] {
            assert_eq!(
                DeviceAnswer::parse(bad),
                Err(SetpointError::Answer),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn the_issuers_signature_is_recovered_from_the_certified_entry_and_tampering_shows() {
        use alloy_signer::SignerSync;
        // A fixed key signs, as the server does; its address is what must come back.
        let key =
            alloy_signer_local::PrivateKeySigner::from_bytes(&B256::with_last_byte(7)).unwrap();
        let address = key.address();
        let (p, d) = (
            Username::parse("prod1").unwrap(),
            DeviceName::parse("inv-1").unwrap(),
        );
        let hash = keccak256(b"{\"p\":1}");
        let until = DateTime::from_timestamp_millis(1_800_000_000_000).unwrap();
        let message = signed_message("dso", &p, &d, &hash, until);
        let signature = key.sign_message_sync(message.as_bytes()).unwrap();
        let entry = |device: &str| {
            format!(
                r#"{{"id":1,"at":2,"actor":"dso","action":"setpoint.queued","object":"setpoint:1","detail":{{"to":"queued","issuer":"dso","producer":"prod1","device":"{device}","values_hash":"{hash}","valid_until":"{}","seq":1,"signature":"0x{}"}}}}"#,
                until.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                alloy_primitives::hex::encode(signature.as_bytes())
            )
        };
        let (signer, issuer) = signer_of_entry(entry("inv-1").as_bytes()).unwrap().unwrap();
        assert_eq!((signer, issuer.as_str()), (address, "dso"));
        // Another device in the entry: the signature recovers someone else.
        let (other, _) = signer_of_entry(entry("inv-2").as_bytes()).unwrap().unwrap();
        assert_ne!(other, address);
        // Not a signed issue: nothing to check.
        assert!(signer_of_entry(br#"{"action":"setpoint.sent","detail":{}}"#).is_none());
        assert!(signer_of_entry(b"not json").is_none());
    }
}
