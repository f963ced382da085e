//! Ingest: MQTT publishes in, commits, acks out.
//!
//! ```text
//! MQTT client task ──Classified──► ingest thread (owns the Store) ──AckOut──► ack publisher
//!   (mqtt.rs: receive, classify)  bounded   batch → commit        (QoS 1, after commit)
//! ```
//!
//! Decoding ([`classify`]) runs in the client task, so it overlaps the
//! ingest thread's previous commit.
//!
//! The ingest thread takes the first message that arrives, then everything
//! else already waiting (up to [`IngestOptions::max_batch_messages`]), and
//! commits it all in one transaction (group commit: batches grow by
//! themselves under load, a lone envelope is committed at once). Only after
//! the commit returns does it hand one [`Ack`] per agent in the batch to the
//! publisher. A payload that cannot be accepted is written to the
//! `quarantine` table in the same transaction, with its reason, and counted;
//! it never stops ingest.
//!
//! Shutdown: when the MQTT task stops forwarding (drops its sender), the
//! thread drains what is queued, commits it, sends its acks and returns.

pub mod mqtt;

use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use jiff::Timestamp;
use labhours_shared::wire::{
    Ack, AgentStatus, Envelope, EventKind, Incoming, SCHEMA_VERSION, TopicKind, Topics,
    decode_envelope,
};
use tokio::sync::mpsc;

use crate::quarantine::{Kind, Quarantined};
use crate::store::{Batch, Durability, Received, Store};

/// One publish as the MQTT client received it.
#[derive(Debug, Clone)]
pub struct Inbound {
    pub topic: String,
    pub payload: Bytes,
    pub received_at: Timestamp,
}

/// One ack to publish (QoS 1, not retained).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AckOut {
    pub topic: String,
    pub payload: Vec<u8>,
}

/// Ingest limits and settings.
#[derive(Debug, Clone)]
pub struct IngestOptions {
    /// Larger payloads are quarantined (their first 64 KiB kept).
    pub max_payload_bytes: usize,
    /// At most this many messages per commit.
    pub max_batch_messages: usize,
    /// Stop adding envelopes to a commit once it holds this many events
    /// (bounds the time one commit takes, and so the ack latency).
    pub max_batch_events: usize,
    /// Capacity of the queue between the MQTT client and the ingest thread.
    pub queue_capacity: usize,
    pub durability: Durability,
}

/// 1 MiB: far above any real batch, small enough to keep memory bounded.
pub const DEFAULT_MAX_PAYLOAD_BYTES: usize = 1024 * 1024;

impl Default for IngestOptions {
    fn default() -> Self {
        Self {
            max_payload_bytes: DEFAULT_MAX_PAYLOAD_BYTES,
            max_batch_messages: 1024,
            max_batch_events: 20_000,
            queue_capacity: 1024,
            durability: Durability::Full,
        }
    }
}

/// Counters since start (read them with [`IngestStats::snapshot`]).
#[derive(Debug, Default)]
pub struct IngestStats {
    envelopes: AtomicU64,
    events_stored: AtomicU64,
    duplicates: AtomicU64,
    id_conflicts: AtomicU64,
    statuses: AtomicU64,
    quarantined: AtomicU64,
    commits: AtomicU64,
    commit_failures: AtomicU64,
    acks: AtomicU64,
    floor_raises: AtomicU64,
    implausible_floors: AtomicU64,
    trust_refusals: AtomicU64,
}

/// A copy of the counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IngestCounts {
    /// Envelopes accepted (committed).
    pub envelopes: u64,
    /// Event rows written.
    pub events_stored: u64,
    /// Events received again after they were stored.
    pub duplicates: u64,
    /// Events quarantined because their seq was stored with other content
    /// (two agents using one agent_id).
    pub id_conflicts: u64,
    pub statuses: u64,
    /// Payloads refused and kept in the quarantine table.
    pub quarantined: u64,
    pub commits: u64,
    /// Transactions that failed (nothing acked; agents resend).
    pub commit_failures: u64,
    /// Acks handed to the MQTT client (published QoS 1 after their commit).
    pub acks: u64,
    /// Floor raises: an agent's `acked_through` went past a hole (see `store::gaps`).
    pub floor_raises: u64,
    /// Envelopes quarantined for claiming a floor above anything received.
    pub implausible_floors: u64,
    /// Envelopes quarantined by the trust checks (signature, key, chain;
    /// docs/design/trust.md).
    pub trust_refusals: u64,
}

impl IngestStats {
    pub fn snapshot(&self) -> IngestCounts {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        IngestCounts {
            envelopes: get(&self.envelopes),
            events_stored: get(&self.events_stored),
            duplicates: get(&self.duplicates),
            id_conflicts: get(&self.id_conflicts),
            statuses: get(&self.statuses),
            quarantined: get(&self.quarantined),
            commits: get(&self.commits),
            commit_failures: get(&self.commit_failures),
            acks: get(&self.acks),
            floor_raises: get(&self.floor_raises),
            implausible_floors: get(&self.implausible_floors),
            trust_refusals: get(&self.trust_refusals),
        }
    }
}

fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

/// What a publish turned out to be.
#[derive(Debug)]
pub enum Classified {
    Envelope(Received<Incoming>),
    Status(Received<AgentStatus>),
    Quarantine(Quarantined),
    /// Nothing to do (an empty retained message clearing a status topic).
    Ignore,
}

/// Decodes and checks one publish. Pure: every refusal carries its reason.
pub fn classify(topics: &Topics, max_payload_bytes: usize, msg: &Inbound) -> Classified {
    let quarantine = |agent_id: Option<&str>, kind: Kind, reason: String| {
        Classified::Quarantine(Quarantined::new(
            msg.received_at,
            &msg.topic,
            agent_id,
            kind,
            reason,
            &msg.payload,
        ))
    };
    let Some((topic_agent, topic_kind)) = topics.parse(&msg.topic) else {
        return quarantine(
            None,
            Kind::BadTopic,
            format!(
                "topic {:?} is not <prefix>/<agent_id>/<events|status> with a valid agent id",
                msg.topic
            ),
        );
    };
    let refuse = |kind: Kind, reason: String| quarantine(Some(topic_agent), kind, reason);
    if msg.payload.len() > max_payload_bytes {
        return refuse(
            Kind::Oversized,
            format!(
                "oversized: {} bytes, the limit is {max_payload_bytes}",
                msg.payload.len()
            ),
        );
    }
    match topic_kind {
        TopicKind::Events => match decode_envelope(&msg.payload) {
            Err(err) => refuse(Kind::Undecodable, format!("undecodable envelope: {err}")),
            Ok(env) if env.agent_id != topic_agent => refuse(
                Kind::AgentMismatch,
                format!(
                    "agent_id {:?} in the envelope differs from {topic_agent:?} in the topic",
                    env.agent_id
                ),
            ),
            Ok(env) => match unstorable_seq(&env) {
                Some(reason) => refuse(Kind::UnstorableSeq, reason),
                None => match inconsistent_seqs(&env) {
                    Some(reason) => refuse(Kind::InconsistentSeqs, reason),
                    None => Classified::Envelope(received(msg, env)),
                },
            },
        },
        TopicKind::Status if msg.payload.is_empty() => Classified::Ignore,
        TopicKind::Status => match AgentStatus::decode(&msg.payload) {
            Err(err) => refuse(Kind::Undecodable, format!("undecodable status: {err}")),
            Ok(s) if s.agent_id != topic_agent => refuse(
                Kind::AgentMismatch,
                format!(
                    "agent_id {:?} in the status differs from {topic_agent:?} in the topic",
                    s.agent_id
                ),
            ),
            Ok(s) => Classified::Status(received(msg, s)),
        },
        TopicKind::Ack => Classified::Ignore,
    }
}

/// `message` as it came in `msg`.
fn received<T>(msg: &Inbound, message: T) -> Received<T> {
    Received {
        received_at: msg.received_at,
        topic: msg.topic.clone(),
        message,
    }
}

/// SQLite integers are signed: names the first seq that does not fit.
fn unstorable_seq(env: &Envelope) -> Option<String> {
    const MAX: u64 = i64::MAX as u64;
    let too_big = |field: String| {
        Some(format!(
            "{field} is above {MAX}, the largest seq the store can hold"
        ))
    };
    if env.acked_through > MAX {
        return too_big("acked_through".into());
    }
    for (i, event) in env.events.iter().enumerate() {
        if event.seq > MAX {
            return too_big(format!("events[{i}].seq"));
        }
        if let EventKind::Dropped { ranges, .. } = &event.kind
            && ranges.iter().any(|r| r.last > MAX)
        {
            return too_big(format!("events[{i}].ranges"));
        }
    }
    None
}

/// What no real agent sends, whoever published it: an envelope without
/// events, an event at or below the envelope's own `acked_through` (the
/// agent sends only what is not yet acknowledged), or a `dropped` notice
/// naming seqs at or above its own (a notice is written after what it
/// names). Accepting such claims would let anyone who can publish close
/// another agent's seqs or raise its floor, and stall its acks.
fn inconsistent_seqs(env: &Envelope) -> Option<String> {
    if env.events.is_empty() {
        return Some("an envelope with no events".into());
    }
    for (i, event) in env.events.iter().enumerate() {
        if event.seq <= env.acked_through {
            return Some(format!(
                "events[{i}].seq {} is not above the envelope's acked_through {}",
                event.seq, env.acked_through
            ));
        }
        if let EventKind::Dropped { ranges, .. } = &event.kind
            && let Some(r) = ranges
                .iter()
                .find(|r| r.first == 0 || r.first > r.last || r.last >= event.seq)
        {
            return Some(format!(
                "events[{i}] (seq {}) names dropped seqs {}..={} that are not all below its own seq",
                event.seq, r.first, r.last
            ));
        }
    }
    None
}

/// Adds one classified message to the batch; returns how many events it brought.
fn add_to_batch(batch: &mut Batch, msg: Classified) -> usize {
    match msg {
        Classified::Envelope(e) => {
            let events = e.message.events.len();
            batch.envelopes.push(e);
            events
        }
        Classified::Status(s) => {
            batch.statuses.push(s);
            0
        }
        Classified::Quarantine(q) => {
            tracing::warn!(topic = %q.topic, kind = %q.kind, reason = %q.reason, bytes = q.payload_len, "quarantined");
            batch.quarantined.push(q);
            0
        }
        Classified::Ignore => 0,
    }
}

/// Runs ingest on the calling (blocking) thread until `inbound` is closed
/// and drained. Returns the store so a caller may inspect it.
pub fn ingest_loop(
    mut store: Store,
    topics: &Topics,
    options: &IngestOptions,
    mut inbound: mpsc::Receiver<Classified>,
    acks: mpsc::UnboundedSender<AckOut>,
    stats: &IngestStats,
) -> Store {
    while let Some(first) = inbound.blocking_recv() {
        let mut batch = Batch::default();
        let mut events = add_to_batch(&mut batch, first);
        let mut taken = 1;
        while taken < options.max_batch_messages && events < options.max_batch_events {
            match inbound.try_recv() {
                Ok(msg) => {
                    events += add_to_batch(&mut batch, msg);
                    taken += 1;
                }
                Err(_) => break,
            }
        }
        if batch.is_empty() {
            continue;
        }
        match store.commit(&batch) {
            Ok(outcome) => {
                add(&stats.commits, 1);
                add(&stats.envelopes, batch.envelopes.len() as u64);
                add(&stats.statuses, batch.statuses.len() as u64);
                add(&stats.quarantined, batch.quarantined.len() as u64);
                add(&stats.events_stored, outcome.stored);
                add(&stats.duplicates, outcome.duplicates);
                add(&stats.id_conflicts, outcome.conflicts);
                add(&stats.floor_raises, outcome.floor_raises);
                add(&stats.implausible_floors, outcome.implausible_floors);
                add(&stats.quarantined, outcome.implausible_floors);
                add(&stats.trust_refusals, outcome.trust_refusals);
                add(&stats.quarantined, outcome.trust_refusals);
                for (agent_id, committed_through) in outcome.acks {
                    let topic = topics.topic(&agent_id, TopicKind::Ack);
                    let payload = Ack {
                        v: SCHEMA_VERSION,
                        agent_id,
                        committed_through,
                    }
                    .encode();
                    if acks.send(AckOut { topic, payload }).is_ok() {
                        add(&stats.acks, 1);
                    }
                }
            }
            Err(err) => {
                add(&stats.commit_failures, 1);
                tracing::error!(error = %err, messages = taken, "commit failed; nothing acked, agents will resend");
            }
        }
    }
    store
}

#[cfg(test)]
mod tests {
    use labhours_shared::wire::{Event, Presence};

    use super::*;

    fn inbound(topic: &str, payload: Vec<u8>) -> Inbound {
        Inbound {
            topic: topic.into(),
            payload: payload.into(),
            received_at: "2026-11-22T08:00:00Z".parse().expect("timestamp"),
        }
    }

    fn envelope(agent_id: &str, seq: u64) -> Envelope {
        Envelope {
            v: SCHEMA_VERSION,
            agent_id: agent_id.into(),
            instrument_id: "nmr-600".into(),
            sent_at: "2026-11-22T08:00:00Z".parse().expect("timestamp"),
            acked_through: 0,
            events: vec![Event {
                seq,
                at: "2026-11-22T08:00:00Z".parse().expect("timestamp"),
                kind: EventKind::Fault {
                    source: "status".into(),
                    message: "x".into(),
                },
            }],
        }
    }

    fn reason(c: Classified) -> String {
        match c {
            Classified::Quarantine(q) => q.reason,
            other => panic!("expected quarantine, got {other:?}"),
        }
    }

    const LIMIT: usize = DEFAULT_MAX_PAYLOAD_BYTES;

    #[test]
    fn an_envelope_on_its_own_agents_topic_is_accepted() {
        let topics = Topics::default();
        let msg = inbound("labhours/v1/a1/events", envelope("a1", 1).encode());
        assert!(matches!(
            classify(&topics, LIMIT, &msg),
            Classified::Envelope(_)
        ));
    }

    #[test]
    fn a_payload_over_the_limit_is_quarantined_without_decoding() {
        let topics = Topics::default();
        let msg = inbound("labhours/v1/a1/events", vec![b'{'; 101]);
        let r = reason(classify(&topics, 100, &msg));
        assert_eq!(r, "oversized: 101 bytes, the limit is 100");
    }

    #[test]
    fn an_envelope_for_another_agent_than_the_topic_is_quarantined() {
        let topics = Topics::default();
        let msg = inbound("labhours/v1/a1/events", envelope("a2", 1).encode());
        let r = reason(classify(&topics, LIMIT, &msg));
        assert!(r.contains("\"a2\"") && r.contains("\"a1\""), "{r}");
    }

    #[test]
    fn a_seq_the_database_cannot_hold_is_quarantined() {
        let topics = Topics::default();
        let msg = inbound("labhours/v1/a1/events", envelope("a1", u64::MAX).encode());
        let r = reason(classify(&topics, LIMIT, &msg));
        assert!(r.starts_with("events[0].seq"), "{r}");
    }

    #[test]
    fn a_dropped_notice_naming_seqs_at_or_beyond_its_own_is_quarantined() {
        let topics = Topics::default();
        let mut env = envelope("a1", 5);
        env.events[0].kind = EventKind::Dropped {
            ranges: vec![labhours_shared::wire::SeqRange {
                first: 3,
                last: 1 << 62,
            }],
            count: 1,
            reason: "forged".into(),
        };
        let msg = inbound("labhours/v1/a1/events", env.encode());
        let r = reason(classify(&topics, LIMIT, &msg));
        assert!(r.contains("not all below its own seq"), "{r}");
        // The same notice naming what came before it is fine.
        if let EventKind::Dropped { ranges, .. } = &mut env.events[0].kind {
            ranges[0].last = 4;
        }
        let msg = inbound("labhours/v1/a1/events", env.encode());
        assert!(matches!(
            classify(&topics, LIMIT, &msg),
            Classified::Envelope(_)
        ));
    }

    #[test]
    fn an_acked_through_at_or_above_the_envelopes_events_is_quarantined() {
        let topics = Topics::default();
        let mut env = envelope("a1", 7);
        env.acked_through = 1_000_000;
        let msg = inbound("labhours/v1/a1/events", env.encode());
        let r = reason(classify(&topics, LIMIT, &msg));
        assert!(r.contains("acked_through 1000000"), "{r}");
        env.events.clear();
        let msg = inbound("labhours/v1/a1/events", env.encode());
        assert!(matches!(
            classify(&topics, LIMIT, &msg),
            Classified::Quarantine(_)
        ));
    }

    #[test]
    fn a_topic_whose_agent_level_is_not_an_id_is_quarantined() {
        let topics = Topics::default();
        let msg = inbound("labhours/v1/a b/events", envelope("a1", 1).encode());
        assert!(reason(classify(&topics, LIMIT, &msg)).starts_with("topic"));
    }

    #[test]
    fn the_loop_commits_what_is_queued_in_one_transaction_and_acks_each_agent_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path(), Durability::Full).expect("store");
        let topics = Topics::default();
        let (tx, rx) = mpsc::channel(16);
        let (ack_tx, mut ack_rx) = mpsc::unbounded_channel();
        let mut queue = vec![
            inbound("labhours/v1/a1/events", envelope("a1", 1).encode()),
            inbound("labhours/v1/a1/events", envelope("a1", 3).encode()),
            inbound("labhours/v1/a2/events", envelope("a2", 1).encode()),
            inbound("labhours/v1/a1/events", b"garbage".to_vec()),
            inbound("labhours/v1/a1/events", envelope("a1", 2).encode()),
        ];
        for msg in queue.drain(..) {
            tx.try_send(classify(&topics, LIMIT, &msg)).expect("queued");
        }
        drop(tx);
        let stats = IngestStats::default();
        let store = ingest_loop(
            store,
            &topics,
            &IngestOptions::default(),
            rx,
            ack_tx,
            &stats,
        );
        let mut acks = Vec::new();
        while let Ok(ack) = ack_rx.try_recv() {
            acks.push((
                ack.topic,
                Ack::decode(&ack.payload).expect("ack").committed_through,
            ));
        }
        assert_eq!(
            acks,
            vec![
                ("labhours/v1/a1/ack".to_owned(), 3),
                ("labhours/v1/a2/ack".to_owned(), 1)
            ]
        );
        assert_eq!(store.committed_through("a1"), Some(3));
        let counts = stats.snapshot();
        assert_eq!(
            (
                counts.commits,
                counts.envelopes,
                counts.quarantined,
                counts.acks
            ),
            (1, 4, 1, 2)
        );
    }

    #[test]
    fn an_empty_retained_status_is_ignored_and_a_real_one_is_accepted() {
        let topics = Topics::default();
        let empty = inbound("labhours/v1/a1/status", Vec::new());
        assert!(matches!(
            classify(&topics, LIMIT, &empty),
            Classified::Ignore
        ));
        let status = AgentStatus {
            v: SCHEMA_VERSION,
            agent_id: "a1".into(),
            instrument_id: "i1".into(),
            status: Presence::Online,
            at: None,
            version: "0.1.0".into(),
            state_rules: None,
        };
        let msg = inbound("labhours/v1/a1/status", status.encode());
        assert!(matches!(
            classify(&topics, LIMIT, &msg),
            Classified::Status(_)
        ));
        let wrong = inbound("labhours/v1/a2/status", status.encode());
        assert!(reason(classify(&topics, LIMIT, &wrong)).contains("differs"));
    }
}
