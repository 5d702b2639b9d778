//! The label values of the BAL's metrics: the public kinds callers count by, and the label
//! sets each family is keyed on (all low-cardinality, see the crate docs).

use prometheus_client::encoding::EncodeLabelSet;

/// Where a measurement came in.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum Source {
    Mqtt,
    Https,
}

/// What became of a measurement that was accepted for storing.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum Stored {
    /// Stored now.
    New,
    /// A redelivery of one stored before: not stored again.
    Duplicate,
}

/// Why a measurement was not stored.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum Refusal {
    /// Published or uploaded to another producer's topic, or by a user who is no producer.
    NotAuthorized,
    /// Not a `platone/<producer>` topic.
    InvalidTopic,
    /// Over `ingest.max_payload_bytes`, or an upload over its limits.
    TooLarge,
    /// An upload that could not be read.
    Malformed,
    /// Accepted, but the database did not store it (the publisher is told to send it again,
    /// or, at QoS 0, it is lost).
    NotStored,
}

/// Where a login was tried.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum Channel {
    Https,
    Mqtt,
}

impl Source {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Mqtt => "mqtt",
            Source::Https => "https",
        }
    }
}

impl Stored {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Stored::New => "stored",
            Stored::Duplicate => "duplicate",
        }
    }
}

impl Refusal {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::NotAuthorized => "not_authorized",
            Refusal::InvalidTopic => "invalid_topic",
            Refusal::TooLarge => "too_large",
            Refusal::Malformed => "malformed",
            Refusal::NotStored => "not_stored",
        }
    }
}

impl Channel {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Https => "https",
            Channel::Mqtt => "mqtt",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct StoredLabels {
    pub(crate) source: &'static str,
    pub(crate) result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RefusedLabels {
    pub(crate) source: &'static str,
    pub(crate) reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct HttpLabels {
    pub(crate) method: &'static str,
    /// The matched route pattern (`/api/users/{username}`), `unmatched` for a 404 outside.
    pub(crate) route: String,
    /// `2xx`, `4xx`, ...
    pub(crate) status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RouteLabels {
    pub(crate) method: &'static str,
    pub(crate) route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct DecisionLabels {
    pub(crate) decision: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ChannelLabels {
    pub(crate) channel: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct NameLabels {
    pub(crate) name: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct DependencyLabels {
    pub(crate) dependency: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct LeaseLabels {
    pub(crate) lease: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct StateLabels {
    pub(crate) state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct StageLabels {
    pub(crate) stage: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct BuildLabels {
    pub(crate) version: &'static str,
}
