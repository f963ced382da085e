//! The wire contract between agents and collectors (see `docs/protocol.md`).
//!
//! Every MQTT message is one JSON document. Agents publish an [`Envelope`]
//! (a batch of [`Event`]s) and a retained [`AgentStatus`]; collectors answer
//! with an [`Ack`] once the events are committed. All instants are UTC and
//! encoded as RFC 3339 strings.
//!
//! Versioning: `v` is checked on every decode. Within one version fields may
//! be added (decoders ignore fields they do not know); removing or changing
//! the meaning of a field bumps the version.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::state::{State, StateRules};

/// The schema version of acks and statuses, and of unchained envelopes
/// (still accepted from older agents).
pub const SCHEMA_VERSION: u32 = 1;

/// The envelope version this build's agents send: events carried verbatim,
/// chained and optionally signed ([`ChainedEnvelope`], docs/protocol.md).
pub const ENVELOPE_VERSION: u32 = 2;

/// Default topic prefix; every topic is `<prefix>/<agent_id>/<kind>`.
pub const DEFAULT_TOPIC_PREFIX: &str = "labhours/v1";

/// A batch of events from one agent about one instrument.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    /// Schema version, always [`SCHEMA_VERSION`] when encoded by this build.
    pub v: u32,
    pub agent_id: String,
    pub instrument_id: String,
    /// The agent's clock when it published the batch (for clock-skew checks).
    pub sent_at: Timestamp,
    /// Every event with `seq <= acked_through` was committed by a collector
    /// and deleted from the agent's outbox. A collector that has never seen
    /// this agent starts counting from here instead of from seq 1.
    pub acked_through: u64,
    pub events: Vec<Event>,
}

/// One event with its place in the agent's sequence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Per-agent sequence number, starting at 1, never reused (it survives
    /// restarts and outbox resets).
    pub seq: u64,
    /// When the event happened (for a transition: when the new state began).
    pub at: Timestamp,
    #[serde(flatten)]
    pub kind: EventKind,
}

/// What happened. Encoded flat beside `seq` and `at`, tagged by `"type"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EventKind {
    /// The instrument's state changed; `at` is when the new state began.
    Transition {
        from: State,
        to: State,
        source: TransitionSource,
        reason: String,
    },
    /// Power statistics over `[at, end)`.
    Summary(Summary),
    /// A completed result file the instrument wrote.
    ResultFile(ResultFile),
    /// Something on the agent's side went wrong (a meter read, a port, a folder).
    Fault { source: String, message: String },
    /// Periodic sign of life with the agent's own health.
    Heartbeat(Heartbeat),
    /// The outbox had to drop events; the ranges name every dropped seq.
    Dropped {
        ranges: Vec<SeqRange>,
        count: u64,
        reason: String,
    },
}

/// What decided a transition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TransitionSource {
    /// Power readings (thresholds and hysteresis).
    Power,
    /// The instrument's own status line.
    Status,
    /// No trustworthy reading: failed reads or a gap in the samples.
    NoData,
}

/// Power statistics for one interval. Watts are `None` when no read succeeded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// End of the interval (exclusive); the event's `at` is its start.
    pub end: Timestamp,
    /// Successful reads taken in the interval.
    pub samples: u32,
    /// Failed reads in the interval.
    pub failed_reads: u32,
    pub min_w: Option<f64>,
    /// Time-weighted mean over `covered_s`.
    pub avg_w: Option<f64>,
    pub max_w: Option<f64>,
    /// Energy over the covered part of the interval.
    pub energy_wh: f64,
    /// Seconds of the interval backed by a successful reading.
    pub covered_s: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub avg_v: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub avg_a: Option<f64>,
}

/// A result file, reported once it is complete.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResultFile {
    /// Path relative to the watched folder, with `/` separators.
    pub path: String,
    pub size_bytes: u64,
    /// Lower-case hex SHA-256 of the content.
    pub sha256: String,
    pub mtime: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sample_id: Option<String>,
}

/// The agent's health, sent periodically.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    pub uptime_s: u64,
    /// Events in the outbox not yet acknowledged.
    pub backlog: u64,
    /// Age of the oldest unacknowledged event, if any.
    pub oldest_unacked_age_s: Option<u64>,
    /// The agent's clock when the heartbeat was made.
    pub clock: Timestamp,
    /// Agent software version.
    pub version: String,
}

/// An inclusive range of sequence numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SeqRange {
    pub first: u64,
    pub last: u64,
}

/// The collector's answer: every event of `agent_id` up to and including
/// `committed_through` is committed (or closed by a `dropped` event).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {
    pub v: u32,
    pub agent_id: String,
    pub committed_through: u64,
}

/// Retained presence message; the agent's last will is the `Offline` form.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentStatus {
    pub v: u32,
    pub agent_id: String,
    pub instrument_id: String,
    pub status: Presence,
    /// Set on `online`; absent in the last will, whose content is fixed at connect.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<Timestamp>,
    pub version: String,
    /// The state rules the agent applies (its `[state]`, defaults resolved),
    /// on `online`, so the collector can check them against its registry.
    /// Absent from older agents and from a meterless agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_rules: Option<StateRules>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Presence {
    Online,
    Offline,
}

/// Why a payload was rejected.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("payload is not valid JSON for this message (line {line}, column {column}): {message}")]
    Malformed {
        line: usize,
        column: usize,
        message: String,
    },
    #[error("payload has no schema version field `v`")]
    MissingVersion,
    #[error("schema version {found} is not supported (this build speaks version {supported})")]
    UnsupportedVersion { found: u32, supported: u32 },
    #[error("field `{field}` is invalid: {reason}")]
    Invalid { field: String, reason: String },
}

/// Messages that carry a schema version and can check their own content.
trait Versioned: for<'de> Deserialize<'de> {
    fn version(&self) -> u32;
    fn check(&self) -> Result<(), DecodeError>;
}

fn decode<T: Versioned>(bytes: &[u8]) -> Result<T, DecodeError> {
    match serde_json::from_slice::<T>(bytes) {
        Ok(msg) => {
            check_version(Some(msg.version()))?;
            msg.check()?;
            Ok(msg)
        }
        Err(err) => {
            // A payload from another schema version usually fails to parse as
            // this one: say "wrong version" rather than "bad JSON" when we can.
            #[derive(Deserialize)]
            struct Probe {
                v: Option<u32>,
            }
            if let Ok(probe) = serde_json::from_slice::<Probe>(bytes) {
                check_version(probe.v)?;
            }
            Err(DecodeError::Malformed {
                line: err.line(),
                column: err.column(),
                message: err.to_string(),
            })
        }
    }
}

fn check_version(v: Option<u32>) -> Result<(), DecodeError> {
    match v {
        None => Err(DecodeError::MissingVersion),
        Some(SCHEMA_VERSION) => Ok(()),
        Some(found) => Err(DecodeError::UnsupportedVersion {
            found,
            supported: SCHEMA_VERSION,
        }),
    }
}

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> DecodeError {
    DecodeError::Invalid {
        field: field.into(),
        reason: reason.into(),
    }
}

impl Versioned for Envelope {
    fn version(&self) -> u32 {
        self.v
    }
    fn check(&self) -> Result<(), DecodeError> {
        check_id("agent_id", &self.agent_id)?;
        check_id("instrument_id", &self.instrument_id)?;
        if self.events.is_empty() {
            return Err(invalid("events", "a batch must hold at least one event"));
        }
        for (i, event) in self.events.iter().enumerate() {
            if event.seq == 0 {
                return Err(invalid(format!("events[{i}].seq"), "seq starts at 1"));
            }
            if let EventKind::Dropped { ranges, .. } = &event.kind
                && let Some(bad) = ranges.iter().find(|r| r.first == 0 || r.first > r.last)
            {
                return Err(invalid(
                    format!("events[{i}].ranges"),
                    format!("range {}..={} is empty or starts at 0", bad.first, bad.last),
                ));
            }
        }
        Ok(())
    }
}

impl Versioned for Ack {
    fn version(&self) -> u32 {
        self.v
    }
    fn check(&self) -> Result<(), DecodeError> {
        check_id("agent_id", &self.agent_id)
    }
}

impl Versioned for AgentStatus {
    fn version(&self) -> u32 {
        self.v
    }
    fn check(&self) -> Result<(), DecodeError> {
        check_id("agent_id", &self.agent_id)?;
        check_id("instrument_id", &self.instrument_id)
    }
}

macro_rules! json_codec {
    ($($ty:ty),*) => {$(
        impl $ty {
            /// Encodes as JSON.
            pub fn encode(&self) -> Vec<u8> {
                // Serializing these plain structs cannot fail.
                serde_json::to_vec(self).expect("wire types always serialize")
            }
            /// Decodes and checks version and content.
            pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
                decode(bytes)
            }
        }
    )*};
}
json_codec!(Envelope, Ack, AgentStatus);

/// Checks an agent or instrument id: 1–64 characters from `A-Z a-z 0-9 . _ -`,
/// so that it is always one safe MQTT topic level and a safe file name.
pub fn check_id(field: &str, id: &str) -> Result<(), DecodeError> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    if id.is_empty() || id.len() > 64 || !id.chars().all(ok_char) {
        return Err(invalid(
            field,
            format!("{id:?} must be 1-64 characters from A-Z a-z 0-9 . _ -"),
        ));
    }
    Ok(())
}

/// Topic names under one prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topics {
    prefix: String,
}

/// The kinds of topic an agent has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopicKind {
    /// Agent → collector: [`Envelope`] batches (QoS 1).
    Events,
    /// Collector → agent: [`Ack`] (QoS 1).
    Ack,
    /// Agent presence: retained [`AgentStatus`] and last will.
    Status,
}

impl TopicKind {
    fn as_str(self) -> &'static str {
        match self {
            TopicKind::Events => "events",
            TopicKind::Ack => "ack",
            TopicKind::Status => "status",
        }
    }
}

impl Topics {
    pub fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.trim_end_matches('/').to_owned(),
        }
    }

    /// `<prefix>/<agent_id>/<kind>`.
    pub fn topic(&self, agent_id: &str, kind: TopicKind) -> String {
        format!("{}/{agent_id}/{}", self.prefix, kind.as_str())
    }

    /// Subscription filter for one kind from every agent: `<prefix>/+/<kind>`.
    pub fn all_agents(&self, kind: TopicKind) -> String {
        format!("{}/+/{}", self.prefix, kind.as_str())
    }

    /// Splits a topic under this prefix into agent id and kind.
    pub fn parse<'t>(&self, topic: &'t str) -> Option<(&'t str, TopicKind)> {
        let rest = topic
            .strip_prefix(self.prefix.as_str())?
            .strip_prefix('/')?;
        let (agent_id, kind) = rest.split_once('/')?;
        let kind = match kind {
            "events" => TopicKind::Events,
            "ack" => TopicKind::Ack,
            "status" => TopicKind::Status,
            _ => return None,
        };
        check_id("agent_id", agent_id).ok()?;
        Some((agent_id, kind))
    }
}

impl Default for Topics {
    fn default() -> Self {
        Self::new(DEFAULT_TOPIC_PREFIX)
    }
}

mod chained;
pub use chained::{
    Chain, ChainBreak, ChainRun, ChainedEnvelope, Incoming, RawRecord, Signed, decode_envelope,
};

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().expect("valid timestamp")
    }

    fn envelope(events: Vec<Event>) -> Envelope {
        Envelope {
            v: SCHEMA_VERSION,
            agent_id: "nmr-600-pc".into(),
            instrument_id: "nmr-600".into(),
            sent_at: ts("2026-11-22T08:00:05Z"),
            acked_through: 0,
            events,
        }
    }

    fn every_kind() -> Vec<Event> {
        let at = ts("2026-11-22T08:00:00Z");
        let kinds = vec![
            EventKind::Transition {
                from: State::Standby,
                to: State::Running,
                source: TransitionSource::Power,
                reason: "1520 W >= running_above_w 1500 W".into(),
            },
            EventKind::Summary(Summary {
                end: ts("2026-11-22T08:01:00Z"),
                samples: 60,
                failed_reads: 0,
                min_w: Some(1490.0),
                avg_w: Some(1512.5),
                max_w: Some(1530.0),
                energy_wh: 25.2,
                covered_s: 60.0,
                avg_v: Some(229.8),
                avg_a: None,
            }),
            EventKind::ResultFile(ResultFile {
                path: "2026/run-17/fid".into(),
                size_bytes: 1_048_576,
                sha256: "ab".repeat(32),
                mtime: at,
                sample_id: Some("S-17".into()),
            }),
            EventKind::Fault {
                source: "meter:main".into(),
                message: "timeout after 500 ms".into(),
            },
            EventKind::Heartbeat(Heartbeat {
                uptime_s: 3600,
                backlog: 12,
                oldest_unacked_age_s: Some(4),
                clock: at,
                version: "0.1.0".into(),
            }),
            EventKind::Dropped {
                ranges: vec![SeqRange { first: 3, last: 4 }],
                count: 2,
                reason: "outbox full".into(),
            },
        ];
        kinds
            .into_iter()
            .enumerate()
            .map(|(i, kind)| Event {
                seq: i as u64 + 1,
                at,
                kind,
            })
            .collect()
    }

    #[test]
    fn every_event_kind_survives_an_encode_decode_round_trip() {
        let original = envelope(every_kind());
        let decoded = Envelope::decode(&original.encode()).expect("decodes");
        assert_eq!(decoded, original);
    }

    #[test]
    fn events_are_encoded_flat_with_a_type_tag() {
        let json: serde_json::Value =
            serde_json::from_slice(&envelope(every_kind()).encode()).expect("json");
        let first = &json["events"][0];
        assert_eq!(first["type"], "transition");
        assert_eq!(first["seq"], 1);
        assert_eq!(first["to"], "running");
        assert_eq!(first["at"], "2026-11-22T08:00:00Z");
        assert_eq!(json["events"][2]["type"], "result_file");
    }

    #[test]
    fn an_unknown_version_is_rejected_by_number() {
        let mut json: serde_json::Value =
            serde_json::from_slice(&envelope(every_kind()).encode()).expect("json");
        json["v"] = 2.into();
        let err = Envelope::decode(json.to_string().as_bytes()).unwrap_err();
        assert_eq!(
            err,
            DecodeError::UnsupportedVersion {
                found: 2,
                supported: 1
            }
        );
    }

    #[test]
    fn a_future_version_with_another_shape_is_still_reported_as_a_version_error() {
        let err = Envelope::decode(br#"{"v":7,"batch":"elsewhere"}"#).unwrap_err();
        assert!(matches!(
            err,
            DecodeError::UnsupportedVersion { found: 7, .. }
        ));
    }

    #[test]
    fn a_payload_without_version_says_so() {
        let err = Ack::decode(br#"{"agent_id":"a","committed_through":3}"#).unwrap_err();
        assert_eq!(err, DecodeError::MissingVersion);
    }

    #[test]
    fn garbage_is_malformed_with_a_position() {
        let err = Envelope::decode(b"{\"v\":1, \"agent_id\": tru").unwrap_err();
        let DecodeError::Malformed { line, column, .. } = err else {
            panic!("expected Malformed, got {err:?}");
        };
        assert_eq!((line, column), (1, 23));
    }

    #[test]
    fn an_unknown_event_type_is_malformed_and_names_it() {
        let mut json: serde_json::Value =
            serde_json::from_slice(&envelope(every_kind()).encode()).expect("json");
        json["events"][0]["type"] = "teleport".into();
        let err = Envelope::decode(json.to_string().as_bytes()).unwrap_err();
        assert!(err.to_string().contains("teleport"), "{err}");
    }

    #[test]
    fn seq_zero_is_invalid_and_names_the_event() {
        let mut env = envelope(every_kind());
        env.events[1].seq = 0;
        let err = Envelope::decode(&env.encode()).unwrap_err();
        assert_eq!(
            err,
            DecodeError::Invalid {
                field: "events[1].seq".into(),
                reason: "seq starts at 1".into()
            }
        );
    }

    #[test]
    fn an_empty_batch_is_invalid() {
        let err = Envelope::decode(&envelope(vec![]).encode()).unwrap_err();
        assert!(matches!(err, DecodeError::Invalid { ref field, .. } if field == "events"));
    }

    #[test]
    fn an_inverted_dropped_range_is_invalid() {
        let mut env = envelope(every_kind());
        env.events[5].kind = EventKind::Dropped {
            ranges: vec![SeqRange { first: 9, last: 3 }],
            count: 0,
            reason: "x".into(),
        };
        let err = Envelope::decode(&env.encode()).unwrap_err();
        assert!(
            matches!(err, DecodeError::Invalid { ref field, .. } if field == "events[5].ranges")
        );
    }

    #[test]
    fn an_agent_id_that_would_break_the_topic_is_invalid() {
        let mut env = envelope(every_kind());
        env.agent_id = "lab/+".into();
        let err = Envelope::decode(&env.encode()).unwrap_err();
        assert!(matches!(err, DecodeError::Invalid { ref field, .. } if field == "agent_id"));
    }

    #[test]
    fn fields_added_by_a_newer_build_of_the_same_version_are_ignored() {
        let mut json: serde_json::Value =
            serde_json::from_slice(&envelope(every_kind()).encode()).expect("json");
        json["compression"] = "none".into();
        json["events"][0]["confidence"] = 0.9.into();
        assert!(Envelope::decode(json.to_string().as_bytes()).is_ok());
    }

    #[test]
    fn ack_and_status_round_trip() {
        let ack = Ack {
            v: SCHEMA_VERSION,
            agent_id: "a1".into(),
            committed_through: 42,
        };
        assert_eq!(Ack::decode(&ack.encode()), Ok(ack));
        let will = AgentStatus {
            v: SCHEMA_VERSION,
            agent_id: "a1".into(),
            instrument_id: "i1".into(),
            status: Presence::Offline,
            at: None,
            version: "0.1.0".into(),
            state_rules: None,
        };
        assert_eq!(AgentStatus::decode(&will.encode()), Ok(will.clone()));
        assert!(
            !String::from_utf8(will.encode())
                .unwrap()
                .contains("state_rules"),
            "absent, as older collectors expect"
        );
        let online = AgentStatus {
            status: Presence::Online,
            at: Some("2026-11-22T08:00:00Z".parse().unwrap()),
            state_rules: Some(StateRules::with_thresholds(5.0, 800.0)),
            ..will
        };
        assert_eq!(AgentStatus::decode(&online.encode()), Ok(online));
    }

    #[test]
    fn topics_are_built_and_parsed_under_the_prefix() {
        let topics = Topics::new("site/labhours/v1/");
        let t = topics.topic("nmr-pc", TopicKind::Events);
        assert_eq!(t, "site/labhours/v1/nmr-pc/events");
        assert_eq!(topics.parse(&t), Some(("nmr-pc", TopicKind::Events)));
        assert_eq!(topics.all_agents(TopicKind::Ack), "site/labhours/v1/+/ack");
        assert_eq!(topics.parse("site/labhours/v1/nmr-pc/other"), None);
        assert_eq!(topics.parse("elsewhere/nmr-pc/events"), None);
        assert_eq!(topics.parse("site/labhours/v1/a/b/events"), None);
    }
}
