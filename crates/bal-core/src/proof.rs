//! The `bal-proof/1` bundle: everything needed to check one certified item without the BAL —
//! the leaf values, the Merkle proof, the root and where it was anchored — and the offline half
//! of checking it. The anchor itself is checked against a chain by `bal-ledger`.

use alloy_primitives::{Address, B256, keccak256};
use serde::{Deserialize, Serialize};

use crate::merkle::{self, LeafValues};

/// The format tag of this version of the bundle.
pub const FORMAT: &str = "bal-proof/1";

/// A proof bundle, as `GET /api/measurements/{id}/proof` returns it and `bal verify` reads it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProofBundle {
    pub format: String,
    #[serde(deserialize_with = "json_integer::deserialize")]
    pub chain_id: u64,
    pub contract: Address,
    pub transaction: B256,
    #[serde(deserialize_with = "json_integer::deserialize")]
    pub block_number: u64,
    pub root: B256,
    /// `[producerWallet, topic, id, receivedAtMs, payloadHash]`, all strings, in the layout of
    /// `@openzeppelin/merkle-tree`'s `values`.
    pub leaf_values: LeafStrings,
    pub leaf: B256,
    pub proof: Vec<B256>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload_base64: Option<String>,
}

/// A chain id or block number read from JSON as JSON Schema counts integers: `17187` and
/// `17187.0` alike, from 0 to 2^63 - 1 (the bound of the `int64` the document states, and of
/// the columns the BAL keeps them in).
mod json_integer {
    use serde::de::{self, Deserializer, Visitor};

    const MAX: u64 = i64::MAX as u64;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        d.deserialize_any(Integer)
    }

    struct Integer;

    impl Visitor<'_> for Integer {
        type Value = u64;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "an integer from 0 to {MAX}")
        }

        fn visit_u64<E: de::Error>(self, v: u64) -> Result<u64, E> {
            if v <= MAX {
                Ok(v)
            } else {
                Err(E::invalid_value(de::Unexpected::Unsigned(v), &self))
            }
        }

        fn visit_i64<E: de::Error>(self, v: i64) -> Result<u64, E> {
            u64::try_from(v).map_err(|_| E::invalid_value(de::Unexpected::Signed(v), &self))
        }

        fn visit_f64<E: de::Error>(self, v: f64) -> Result<u64, E> {
            // 2^63 is the first float above the range (i64::MAX is not a float).
            if v.fract() == 0.0 && (0.0..9_223_372_036_854_775_808.0).contains(&v) {
                Ok(v as u64)
            } else {
                Err(E::invalid_value(de::Unexpected::Float(v), &self))
            }
        }
    }
}

/// Leaf values as JSON strings: hex for the address and hash, decimal for the integers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeafStrings(pub [String; 5]);

impl From<&LeafValues> for LeafStrings {
    fn from(v: &LeafValues) -> Self {
        Self([
            v.producer_wallet.to_checksum(None),
            v.topic.clone(),
            v.id.to_string(),
            v.received_at_ms.to_string(),
            v.payload_hash.to_string(),
        ])
    }
}

impl TryFrom<&LeafStrings> for LeafValues {
    type Error = String;
    fn try_from(s: &LeafStrings) -> Result<Self, String> {
        let [wallet, topic, id, at, hash] = &s.0;
        Ok(LeafValues {
            producer_wallet: wallet
                .parse()
                .map_err(|_| format!("leaf_values[0] is not an address: {wallet:?}"))?,
            topic: topic.clone(),
            id: id
                .parse()
                .map_err(|_| format!("leaf_values[2] is not a uint64: {id:?}"))?,
            received_at_ms: at
                .parse()
                .map_err(|_| format!("leaf_values[3] is not a uint64: {at:?}"))?,
            payload_hash: hash
                .parse()
                .map_err(|_| format!("leaf_values[4] is not a bytes32: {hash:?}"))?,
        })
    }
}

/// One check of a verification and how it went.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Check {
    /// `format`, `payload_hash`, `signature` (a set point's issuer), `leaf`, `proof` or
    /// `anchor`.
    pub name: String,
    pub outcome: Outcome,
    pub detail: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Passed,
    Failed,
    /// Not checked: no payload was given, or no chain was asked.
    Skipped,
}

/// The result of checking a bundle: valid when no check failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verdict {
    pub valid: bool,
    /// The first failed check's detail; `None` when valid.
    pub reason: Option<String>,
    pub checks: Vec<Check>,
}

impl Verdict {
    fn from_checks(checks: Vec<Check>) -> Self {
        let reason = checks
            .iter()
            .find(|c| c.outcome == Outcome::Failed)
            .map(|c| format!("{}: {}", c.name, c.detail));
        Self {
            valid: reason.is_none(),
            reason,
            checks,
        }
    }

    /// Adds a check made elsewhere (the anchor on chain) and recomputes the verdict.
    pub fn with(mut self, check: Check) -> Self {
        self.checks.push(check);
        Self::from_checks(self.checks)
    }
}

impl Check {
    pub fn new(name: &str, outcome: Outcome, detail: impl Into<String>) -> Self {
        Self {
            name: name.to_owned(),
            outcome,
            detail: detail.into(),
        }
    }
}

impl ProofBundle {
    /// The leaf values, parsed.
    pub fn values(&self) -> Result<LeafValues, String> {
        LeafValues::try_from(&self.leaf_values)
    }

    /// The payload carried in the bundle, if any.
    pub fn embedded_payload(&self) -> Result<Option<Vec<u8>>, String> {
        use base64::Engine as _;
        self.payload_base64
            .as_deref()
            .map(|b| {
                base64::engine::general_purpose::STANDARD
                    .decode(b)
                    .map_err(|_| "payload_base64 is not base64".to_owned())
            })
            .transpose()
    }

    /// Every check that needs no chain: the format, the payload's hash (with `payload`, else the
    /// bundle's own `payload_base64`, else skipped), the leaf and the proof up to the root.
    pub fn verify_offline(&self, payload: Option<&[u8]>) -> Verdict {
        let mut checks = Vec::new();
        if self.format != FORMAT {
            checks.push(Check::new(
                "format",
                Outcome::Failed,
                format!("format is {:?}, expected {FORMAT:?}", self.format),
            ));
            return Verdict::from_checks(checks);
        }
        checks.push(Check::new("format", Outcome::Passed, FORMAT));
        let values = match self.values() {
            Ok(v) => v,
            Err(e) => {
                checks.push(Check::new("leaf", Outcome::Failed, e));
                return Verdict::from_checks(checks);
            }
        };
        let embedded = self.embedded_payload();
        let payload: Result<Option<Vec<u8>>, String> = match payload {
            Some(p) => Ok(Some(p.to_vec())),
            None => embedded,
        };
        checks.push(match &payload {
            Err(e) => Check::new("payload_hash", Outcome::Failed, e),
            Ok(None) => Check::new("payload_hash", Outcome::Skipped, "no payload given"),
            Ok(Some(p)) => {
                let hash = keccak256(p);
                if hash == values.payload_hash {
                    Check::new(
                        "payload_hash",
                        Outcome::Passed,
                        format!("keccak256 of the {} payload bytes is {hash}", p.len()),
                    )
                } else {
                    Check::new(
                        "payload_hash",
                        Outcome::Failed,
                        format!(
                            "keccak256 of the payload is {hash}, the certified hash is {}",
                            values.payload_hash
                        ),
                    )
                }
            }
        });
        if let Ok(Some(p)) = &payload
            && keccak256(p) == values.payload_hash
            && let Some(signed) = crate::setpoint::signer_of_entry(p)
        {
            checks.push(match signed {
                // Any signature recovers some wallet: whether it is the issuer's is for the
                // reader to compare (the bundle carries the producer's wallet, not the issuer's).
                Ok((signer, issuer)) => Check::new(
                    "signature",
                    Outcome::Skipped,
                    format!(
                        "the set point was signed by wallet {signer}: compare it with {issuer}'s"
                    ),
                ),
                Err(e) => Check::new("signature", Outcome::Failed, e),
            });
        }
        let leaf = values.leaf();
        checks.push(if leaf == self.leaf {
            Check::new(
                "leaf",
                Outcome::Passed,
                format!("leaf_values hash to {leaf}"),
            )
        } else {
            Check::new(
                "leaf",
                Outcome::Failed,
                format!("leaf_values hash to {leaf}, the bundle says {}", self.leaf),
            )
        });
        checks.push(if merkle::verify(&self.root, &self.leaf, &self.proof) {
            Check::new(
                "proof",
                Outcome::Passed,
                format!("{} siblings lead to root {}", self.proof.len(), self.root),
            )
        } else {
            Check::new(
                "proof",
                Outcome::Failed,
                format!("the proof does not lead to root {}", self.root),
            )
        });
        Verdict::from_checks(checks)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::merkle::MerkleTree;

    fn bundle() -> (ProofBundle, Vec<u8>) {
        let payload = br#"{"p":1.5}"#.to_vec();
        let values: Vec<LeafValues> = (1..=5)
            .map(|id| LeafValues {
                producer_wallet: Address::repeat_byte(7),
                topic: "platone/p1".into(),
                id,
                received_at_ms: 1_700_000_000_000 + id,
                payload_hash: keccak256(&payload),
            })
            .collect();
        let leaves: Vec<B256> = values.iter().map(LeafValues::leaf).collect();
        let tree = MerkleTree::new(&leaves).unwrap();
        let b = ProofBundle {
            format: FORMAT.into(),
            chain_id: 1,
            contract: Address::repeat_byte(1),
            transaction: B256::repeat_byte(2),
            block_number: 3,
            root: tree.root(),
            leaf_values: (&values[2]).into(),
            leaf: leaves[2],
            proof: tree.proof(2).unwrap(),
            payload_base64: None,
        };
        (b, payload)
    }

    #[test]
    fn a_true_bundle_passes_and_round_trips_through_json() {
        let (b, payload) = bundle();
        let v = b.verify_offline(Some(&payload));
        assert!(v.valid, "{v:?}");
        assert!(v.checks.iter().all(|c| c.outcome == Outcome::Passed));
        let json = serde_json::to_string(&b).unwrap();
        // Integers as JSON Schema counts them, within int64: what the document states.
        let with = |field: &str, raw: &str| {
            let mut v: serde_json::Value = serde_json::from_str(&json).unwrap();
            v[field] = serde_json::from_str(raw).unwrap();
            serde_json::from_value::<ProofBundle>(v)
        };
        assert_eq!(with("chain_id", "17187.0").unwrap().chain_id, 17187);
        assert_eq!(
            with("block_number", "9223372036854775807")
                .unwrap()
                .block_number,
            i64::MAX as u64
        );
        for bad in ["9223372036854775808", "-1", "1.5", "1e30", "\"1\""] {
            assert!(with("chain_id", bad).is_err(), "{bad}");
            assert!(with("block_number", bad).is_err(), "{bad}");
        }
        assert!(json.contains(r#""leaf_values":["0x0707"#), "{json}");
        assert!(json.contains(r#""3","1700000000003""#), "{json}");
        let back: ProofBundle = serde_json::from_str(&json).unwrap();
        assert_eq!(back, b);
        // Without a payload the hash is skipped, not failed.
        let v = b.verify_offline(None);
        assert!(v.valid);
        assert_eq!(v.checks[1].outcome, Outcome::Skipped);
    }

    #[test]
    fn each_forgery_fails_with_its_reason() {
        let (b, payload) = bundle();
        let v = b.verify_offline(Some(b"other"));
        assert!(!v.valid);
        assert!(v.reason.unwrap().starts_with("payload_hash"));

        let mut f = b.clone();
        f.leaf_values.0[3] = "1700000000004".into();
        assert!(
            f.verify_offline(Some(&payload))
                .reason
                .unwrap()
                .starts_with("leaf:")
        );

        let mut f = b.clone();
        f.proof[0].0[5] ^= 1;
        assert!(
            f.verify_offline(Some(&payload))
                .reason
                .unwrap()
                .starts_with("proof:")
        );

        let mut f = b.clone();
        f.root.0[0] ^= 1;
        assert!(!f.verify_offline(Some(&payload)).valid);

        let mut f = b.clone();
        f.format = "bal-proof/9".into();
        assert!(
            f.verify_offline(Some(&payload))
                .reason
                .unwrap()
                .starts_with("format")
        );

        let mut f = b;
        f.leaf_values.0[2] = "-1".into();
        assert!(!f.verify_offline(Some(&payload)).valid);
    }
}
