//! Measurements: payloads stored and certified exactly as received, plus the numeric fields
//! that can be read out of them for charts and queries.

use std::collections::BTreeMap;

use alloy_primitives::{B256, keccak256};
use chrono::{DateTime, Utc};

use crate::{Topic, Username};

/// A measurement as the SCD keeps it.
#[derive(Debug, Clone, PartialEq)]
pub struct Measurement {
    /// Assigned by the SCD, increasing with insertion order.
    pub id: i64,
    pub producer: Username,
    pub topic: Topic,
    /// When the BAL received and stored it, to the millisecond. Stamped by the SCD at commit,
    /// under its write lock, so reception order is commit order and paging never skips.
    pub received_at: DateTime<Utc>,
    /// The payload bytes exactly as they arrived.
    pub payload: Vec<u8>,
    /// `keccak256(payload)`, the value that is certified.
    pub payload_hash: B256,
    /// Numeric fields read from the payload, if any (see [`parse_fields`]).
    pub fields: Option<Fields>,
}

/// Numeric fields by name. JSON objects give their numeric leaves by dotted path; text lines
/// of numbers give `v0, v1, ...` (the PMU line of five values gets its own names).
pub type Fields = BTreeMap<String, f64>;

/// A measurement on its way into the SCD (which stamps its reception time).
#[derive(Debug, Clone, PartialEq)]
pub struct NewMeasurement {
    pub producer: Username,
    pub topic: Topic,
    pub payload: Vec<u8>,
    pub payload_hash: B256,
    pub fields: Option<Fields>,
    /// Where the message came from ([`mqtt_origin`]). Packet ids are reused, so an origin
    /// alone identifies nothing; together with `redelivered` and the payload hash it does.
    pub origin: Option<i64>,
    /// The sender marked this as a redelivery (MQTT DUP). If the producer's latest measurement
    /// with the same key also has the same payload hash, this is that message again and is not
    /// stored a second time.
    pub redelivered: bool,
}

impl NewMeasurement {
    /// A measurement of `payload` on `topic`.
    pub fn new(topic: Topic, payload: Vec<u8>) -> Self {
        Self {
            producer: topic.producer(),
            payload_hash: keccak256(&payload),
            fields: parse_fields(&payload),
            topic,
            payload,
            origin: None,
            redelivered: false,
        }
    }

    /// Marks where the message came from, and whether the sender says it is a redelivery.
    pub fn with_origin(mut self, origin: i64, redelivered: bool) -> Self {
        self.origin = Some(origin);
        self.redelivered = redelivered;
        self
    }
}

/// The origin of an MQTT message: the first 8 bytes of keccak256 over its session's client id
/// and its packet id. A redelivery carries the same client id and packet id.
pub fn mqtt_origin(client_id: &str, packet_id: u16) -> i64 {
    let mut input = Vec::with_capacity(client_id.len() + 3);
    input.extend_from_slice(client_id.as_bytes());
    input.push(0);
    input.extend_from_slice(&packet_id.to_be_bytes());
    let digest = keccak256(&input);
    i64::from_be_bytes(digest[..8].try_into().expect("8 bytes"))
}

/// The field names of the Platone PMU's tab-separated line:
/// `<amplitude>\t<phase_deg>\t<frequency>\t<pps_tag>\t<utc_us>`.
pub const PMU_FIELDS: [&str; 5] = ["amplitude", "phase_deg", "frequency", "pps_tag", "utc_us"];

/// At most this many fields are kept per measurement: enough for any sensor, bounded for abuse.
pub const MAX_FIELDS: usize = 256;

/// Reads numeric fields out of a payload: a JSON object's numbers (nested objects give dotted
/// paths, booleans count as 0/1), or a line of numbers separated by tabs, commas, semicolons or
/// spaces. Anything else has no fields, and is stored all the same.
pub fn parse_fields(payload: &[u8]) -> Option<Fields> {
    let text = std::str::from_utf8(payload).ok()?.trim();
    if text.starts_with('{') {
        return parse_json_object(text);
    }
    parse_text_line(text)
}

/// A JSON object's numeric leaves, read in one pass: no tree of values is built, only the
/// fields (the profile counted the tree, its allocations and its freeing, on every reading).
/// Invalid JSON anywhere, trailing text included, gives `None`.
fn parse_json_object(text: &str) -> Option<Fields> {
    use serde::de::DeserializeSeed;
    let mut fields = Fields::new();
    let mut path = String::new();
    let mut de = serde_json::Deserializer::from_str(text);
    Leaves {
        path: &mut path,
        out: &mut fields,
    }
    .deserialize(&mut de)
    .ok()?;
    de.end().ok()?;
    (!fields.is_empty()).then_some(fields)
}

/// Collects the numeric leaves under `path` (dotted from the root) into `out`, up to
/// [`MAX_FIELDS`]; strings, nulls and arrays are skipped.
struct Leaves<'a> {
    path: &'a mut String,
    out: &'a mut Fields,
}

impl Leaves<'_> {
    fn leaf(self, value: f64) {
        if value.is_finite() && self.out.len() < MAX_FIELDS {
            self.out.insert(self.path.clone(), value);
        }
    }
}

impl<'de> serde::de::DeserializeSeed<'de> for Leaves<'_> {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Leaves<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<(), E> {
        self.leaf(f64::from(u8::from(v)));
        Ok(())
    }

    fn visit_i64<E>(self, v: i64) -> Result<(), E> {
        self.leaf(v as f64);
        Ok(())
    }

    fn visit_u64<E>(self, v: u64) -> Result<(), E> {
        self.leaf(v as f64);
        Ok(())
    }

    fn visit_f64<E>(self, v: f64) -> Result<(), E> {
        self.leaf(v);
        Ok(())
    }

    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
        Ok(())
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        // Borrowed from the text unless the key holds escapes.
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            let len = self.path.len();
            if len > 0 {
                self.path.push('.');
            }
            self.path.push_str(&key);
            map.next_value_seed(Leaves {
                path: &mut *self.path,
                out: &mut *self.out,
            })?;
            self.path.truncate(len);
        }
        Ok(())
    }
}

fn parse_text_line(text: &str) -> Option<Fields> {
    if text.is_empty() || text.contains('\n') {
        return None;
    }
    let separators = ['\t', ',', ';', ' '];
    let values: Vec<f64> = text
        .split(separators)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<f64>().ok().filter(|f| f.is_finite()))
        .collect::<Option<_>>()?;
    if values.is_empty() || values.len() > MAX_FIELDS {
        return None;
    }
    let is_pmu = values.len() == PMU_FIELDS.len() && text.split('\t').count() == PMU_FIELDS.len();
    Some(
        values
            .into_iter()
            .enumerate()
            .map(|(i, v)| {
                let name = if is_pmu {
                    PMU_FIELDS[i].to_owned()
                } else {
                    format!("v{i}")
                };
                (name, v)
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the fields were before the one-pass reader: through `serde_json::Value`.
    fn through_a_value_tree(payload: &str) -> Option<Fields> {
        fn collect(value: &serde_json::Value, path: String, out: &mut Fields) {
            if out.len() >= MAX_FIELDS {
                return;
            }
            match value {
                serde_json::Value::Number(n) => {
                    if let Some(f) = n.as_f64().filter(|f| f.is_finite()) {
                        out.insert(path, f);
                    }
                }
                serde_json::Value::Bool(b) => {
                    out.insert(path, f64::from(u8::from(*b)));
                }
                serde_json::Value::Object(map) => {
                    for (k, v) in map {
                        let p = if path.is_empty() {
                            k.clone()
                        } else {
                            format!("{path}.{k}")
                        };
                        collect(v, p, out);
                    }
                }
                _ => {}
            }
        }
        let value: serde_json::Value = serde_json::from_str(payload.trim()).ok()?;
        let mut fields = Fields::new();
        collect(&value, String::new(), &mut fields);
        (!fields.is_empty()).then_some(fields)
    }

    fn json_value() -> impl proptest::strategy::Strategy<Value = serde_json::Value> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(serde_json::Value::from),
            any::<i64>().prop_map(serde_json::Value::from),
            any::<u64>().prop_map(serde_json::Value::from),
            any::<bool>().prop_map(serde_json::Value::from),
            "[a-z\\\"é]{0,6}".prop_map(serde_json::Value::from),
            Just(serde_json::Value::Null),
        ];
        leaf.prop_recursive(4, 40, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
                proptest::collection::btree_map("[a-z.\\\"é]{0,5}", inner, 0..6)
                    .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest::proptest! {
        #[test]
        fn one_pass_reads_what_the_value_tree_read(
            fields in proptest::collection::btree_map("[a-z.\\\"é]{0,5}", json_value(), 0..8),
            spaces in "[ \t\n]{0,2}",
        ) {
            let text = format!(
                "{spaces}{}{spaces}",
                serde_json::Value::Object(fields.into_iter().collect())
            );
            proptest::prop_assert_eq!(parse_fields(text.as_bytes()), through_a_value_tree(&text));
        }
    }

    #[test]
    fn json_objects_give_their_numeric_leaves() {
        let f = parse_fields(br#"{"p": 1.5, "q": -2, "meta": {"t": 20.5, "id": "x"}, "on": true}"#)
            .unwrap();
        assert_eq!(f["p"], 1.5);
        assert_eq!(f["q"], -2.0);
        assert_eq!(f["meta.t"], 20.5);
        assert_eq!(f["on"], 1.0);
        assert!(!f.contains_key("meta.id"));
    }

    #[test]
    fn the_pmu_line_gets_its_field_names() {
        let f = parse_fields(b"230.1\t-12.5\t50.01\t7\t1700000000123456").unwrap();
        assert_eq!(f["amplitude"], 230.1);
        assert_eq!(f["phase_deg"], -12.5);
        assert_eq!(f["frequency"], 50.01);
        assert_eq!(f["utc_us"], 1_700_000_000_123_456.0);
    }

    #[test]
    fn other_number_lines_get_positional_names() {
        let f = parse_fields(b"1.0,2.0;3").unwrap();
        assert_eq!(f.keys().collect::<Vec<_>>(), ["v0", "v1", "v2"]);
    }

    #[test]
    fn origins_differ_by_client_and_packet_id() {
        let a = mqtt_origin("dev-1", 7);
        assert_eq!(a, mqtt_origin("dev-1", 7));
        assert_ne!(a, mqtt_origin("dev-1", 8));
        assert_ne!(a, mqtt_origin("dev-2", 7));
        // The separator keeps ("ab", ..) and ("a", ..) apart whatever the packet id bytes.
        assert_ne!(mqtt_origin("a", 0x6200), mqtt_origin("ab", 0));
    }

    #[test]
    fn opaque_payloads_have_no_fields_but_still_a_hash() {
        for p in [
            &b"hello"[..],
            b"",
            b"\xff\xfe",
            b"[1,2]",
            b"{\"s\":\"x\"}",
            b"{broken",
            b"{\"a\":1} trailing",
            b"{\"a\":1e999}",
            b"NaN",
        ] {
            assert_eq!(parse_fields(p), None, "{p:?}");
        }
        let m = NewMeasurement::new(Topic::parse("platone/p1x").unwrap(), b"\xff".to_vec());
        assert_eq!(m.payload_hash, keccak256([0xff]));
        assert_eq!(m.producer.as_str(), "p1x");
    }
}
