//! A test agent (a plain rumqttc client speaking the wire types) and DB checks.
//!
//! Shared by `collector/tests/ingest.rs` and the Mosquitto interop target in
//! `tests/` (included there by path).

#![allow(dead_code)]

use std::path::Path;
use std::time::Duration;

use jiff::Timestamp;
use labhours_shared::wire::{
    Ack, AgentStatus, Envelope, Event, EventKind, Presence, SCHEMA_VERSION, SeqRange, TopicKind,
    Topics,
};
use rumqttc::{AsyncClient, Event as MqttEvent, MqttOptions, Packet, QoS};
use rusqlite::{Connection, OpenFlags, OptionalExtension};
use tokio::sync::{mpsc, watch};

/// Every wait in these tests is bounded by this.
pub const WAIT: Duration = Duration::from_secs(20);

pub fn at(s: &str) -> Timestamp {
    s.parse().expect("timestamp")
}

pub fn fault(seq: u64) -> Event {
    Event {
        seq,
        at: at("2026-11-22T08:00:00Z"),
        kind: EventKind::Fault {
            source: "meter:main".into(),
            message: format!("event {seq}"),
        },
    }
}

pub fn dropped(seq: u64, first: u64, last: u64) -> Event {
    Event {
        seq,
        at: at("2026-11-22T08:00:00Z"),
        kind: EventKind::Dropped {
            ranges: vec![SeqRange { first, last }],
            count: last - first + 1,
            reason: "outbox full".into(),
        },
    }
}

pub fn envelope(agent_id: &str, acked_through: u64, events: Vec<Event>) -> Envelope {
    Envelope {
        v: SCHEMA_VERSION,
        agent_id: agent_id.into(),
        instrument_id: "nmr-600".into(),
        sent_at: Timestamp::now(),
        acked_through,
        events,
    }
}

pub fn faults(agent_id: &str, acked_through: u64, seqs: std::ops::RangeInclusive<u64>) -> Envelope {
    envelope(agent_id, acked_through, seqs.map(fault).collect())
}

pub fn status(agent_id: &str, presence: Presence) -> AgentStatus {
    AgentStatus {
        v: SCHEMA_VERSION,
        agent_id: agent_id.into(),
        instrument_id: "nmr-600".into(),
        status: presence,
        at: Some(Timestamp::now()),
        version: "0.1.0".into(),
        state_rules: None,
    }
}

/// A free loopback port (bound, read and released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// Plays one agent: publishes to its events topic, collects its acks.
#[derive(Debug)]
pub struct TestAgent {
    pub agent_id: String,
    pub topics: Topics,
    client: AsyncClient,
    acks: mpsc::UnboundedReceiver<Ack>,
    /// The highest committed_through seen so far.
    pub acked: u64,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TestAgent {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TestAgent {
    /// Connects (retrying until the broker is up) and subscribes to its ack topic.
    pub async fn connect(host: &str, port: u16, agent_id: &str) -> Self {
        Self::connect_under(
            labhours_shared::wire::DEFAULT_TOPIC_PREFIX,
            host,
            port,
            agent_id,
        )
        .await
    }

    /// The same under another topic prefix (tests sharing one broker keep apart).
    pub async fn connect_under(prefix: &str, host: &str, port: u16, agent_id: &str) -> Self {
        let topics = Topics::new(prefix);
        let mut options = MqttOptions::new(format!("test-{agent_id}"), host, port);
        options
            .set_keep_alive(Duration::from_secs(10))
            .set_max_packet_size(8 << 20, 8 << 20);
        let (client, mut eventloop) = AsyncClient::new(options, 64);
        let (ack_tx, acks) = mpsc::unbounded_channel();
        let (ready_tx, mut ready) = watch::channel(false);
        let ack_topic = topics.topic(agent_id, TopicKind::Ack);
        let subscriber = client.clone();
        let task = tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(MqttEvent::Incoming(Packet::ConnAck(_))) => {
                        let _ = subscriber.try_subscribe(&ack_topic, QoS::AtLeastOnce);
                    }
                    Ok(MqttEvent::Incoming(Packet::SubAck(_))) => {
                        ready_tx.send_replace(true);
                    }
                    Ok(MqttEvent::Incoming(Packet::Publish(p))) => {
                        let ack = Ack::decode(&p.payload).expect("the collector sends valid acks");
                        let _ = ack_tx.send(ack);
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
        });
        tokio::time::timeout(WAIT, ready.wait_for(|r| *r))
            .await
            .expect("the test agent connected and subscribed in time")
            .expect("agent task alive");
        Self {
            agent_id: agent_id.into(),
            topics,
            client,
            acks,
            acked: 0,
            task,
        }
    }

    pub fn events_topic(&self) -> String {
        self.topics.topic(&self.agent_id, TopicKind::Events)
    }

    pub async fn publish(&self, envelope: &Envelope) {
        self.publish_raw(&self.events_topic(), envelope.encode())
            .await;
    }

    pub async fn publish_raw(&self, topic: &str, payload: Vec<u8>) {
        self.client
            .publish(topic, QoS::AtLeastOnce, false, payload)
            .await
            .expect("publish queued");
    }

    pub async fn publish_status(&self, status: &AgentStatus) {
        self.client
            .publish(
                self.topics.topic(&self.agent_id, TopicKind::Status),
                QoS::AtLeastOnce,
                true,
                status.encode(),
            )
            .await
            .expect("publish queued");
    }

    /// The next ack, within [`WAIT`].
    pub async fn next_ack(&mut self) -> Ack {
        let ack = tokio::time::timeout(WAIT, self.acks.recv())
            .await
            .unwrap_or_else(|_| panic!("no ack for {} within {WAIT:?}", self.agent_id))
            .expect("agent task alive");
        assert_eq!(ack.agent_id, self.agent_id);
        self.acked = self.acked.max(ack.committed_through);
        ack
    }

    /// Waits for acks until one says `through`; every ack on the way must be
    /// at most `through` (acks never run ahead of what was sent).
    pub async fn ack_through(&mut self, through: u64) {
        loop {
            let ack = self.next_ack().await;
            assert!(
                ack.committed_through <= through,
                "ack {} ran past {through}",
                ack.committed_through
            );
            if ack.committed_through == through {
                return;
            }
        }
    }

    /// Publishes every `every` until an ack says at least `through` (an agent
    /// resending after a timeout, e.g. while the collector is starting).
    pub async fn publish_until_acked(&mut self, envelope: &Envelope, through: u64) {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            self.publish(envelope).await;
            let wait = tokio::time::timeout(Duration::from_millis(500), self.acks.recv()).await;
            if let Ok(Some(ack)) = wait {
                self.acked = self.acked.max(ack.committed_through);
            }
            while let Ok(ack) = self.acks.try_recv() {
                self.acked = self.acked.max(ack.committed_through);
            }
            if self.acked >= through {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{} not acked through {through} within {WAIT:?} (acked {})",
                self.agent_id,
                self.acked
            );
        }
    }

    /// No ack arrives within `quiet`.
    pub async fn no_ack_for(&mut self, quiet: Duration) {
        if let Ok(Some(ack)) = tokio::time::timeout(quiet, self.acks.recv()).await {
            panic!("unexpected ack {ack:?}");
        }
    }
}

/// The collector's database, opened read-only as an admin's tool would.
pub fn db(data_dir: &Path) -> Connection {
    Connection::open_with_flags(
        data_dir.join("labhours.sqlite3"),
        OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .expect("database opens read-only")
}

/// Every stored seq of the agent, ascending (a seq stored twice would show twice).
pub fn stored_seqs(db: &Connection, agent_id: &str) -> Vec<u64> {
    let mut stmt = db
        .prepare("SELECT seq FROM events WHERE agent_id = ?1 ORDER BY seq")
        .expect("prepare");
    stmt.query_map([agent_id], |r| r.get::<_, i64>(0))
        .expect("query")
        .map(|s| s.expect("row") as u64)
        .collect()
}

pub fn committed_through(db: &Connection, agent_id: &str) -> Option<u64> {
    db.query_row(
        "SELECT committed_through FROM agents WHERE agent_id = ?1",
        [agent_id],
        |r| r.get::<_, Option<i64>>(0),
    )
    .optional()
    .expect("query")
    .flatten()
    .map(|v| v as u64)
}

/// Every seq in `from..=through` is stored or inside a stored dropped range.
pub fn assert_backed(db: &Connection, agent_id: &str, from: u64, through: u64) {
    for seq in from..=through {
        let n: i64 = db
            .query_row(
                "SELECT (SELECT count(*) FROM events WHERE agent_id = ?1 AND seq = ?2)
                      + (SELECT count(*) FROM dropped_ranges
                         WHERE agent_id = ?1 AND first_seq <= ?2 AND last_seq >= ?2)",
                rusqlite::params![agent_id, seq as i64],
                |r| r.get(0),
            )
            .expect("query");
        assert!(
            n >= 1,
            "{agent_id} seq {seq} was acked but is not in the database"
        );
    }
}

/// Quarantine reasons in arrival order.
pub fn quarantine_reasons(db: &Connection) -> Vec<(String, String, i64, i64)> {
    let mut stmt = db
        .prepare("SELECT topic, reason, length(payload), payload_len FROM quarantine ORDER BY id")
        .expect("prepare");
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .expect("query")
        .map(|r| r.expect("row"))
        .collect()
}

/// Waits (bounded) until `check` holds, re-evaluating every 20 ms.
pub async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !check() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
