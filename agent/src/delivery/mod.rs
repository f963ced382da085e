//! Delivery: the outbox's events to the collector over MQTT, so that every
//! event the agent accepted is in the collector's database exactly once.
//!
//! The outbox is the source of truth. Events leave it only when the
//! collector's [`Ack`](labhours_shared::wire::Ack) says they are committed
//! (`committed_through`), never on a broker PUBACK: a PUBACK only means the
//! broker has the message, and a broker restarted without persistence, or a
//! session that is gone (`session_present = false`), forgets it. Until the
//! ack, events are sent again after every reconnect and after the ack timeout
//! without progress; the collector is idempotent on `(agent_id, seq)`.
//!
//! - [`tracker`]: the protocol as a pure state machine (batches, window,
//!   resends, acks, live events ahead of a backlog).
//! - [`publisher`]: [`Delivery`], the tracker on a rumqttc connection, with
//!   presence, heartbeats and reconnect backoff.
//! - [`backoff`]: exponential reconnect delays with jitter.
//!
//! `docs/delivery.md` describes the behaviour for operators and collector authors.

pub mod backoff;
pub mod publisher;
pub mod tracker;

pub use publisher::{
    Delivery, DeliveryTuning, LinkStatus, Notifier, VERSION, install_crypto_provider,
    wait_until_drained,
};
pub use tracker::{AckOutcome, EventSource, Rewind, Sequenced, Tracker, TrackerSettings};

use labhours_shared::wire::RawRecord;

use crate::outbox::{Outbox, OutboxError};

impl EventSource for Outbox {
    type Error = OutboxError;
    type Item = RawRecord;

    /// Records as stored, so the envelope carries (and the collector
    /// hashes) exactly the bytes the outbox chained.
    fn pending(
        &self,
        after: u64,
        max_events: usize,
        max_bytes: usize,
    ) -> Result<Vec<RawRecord>, OutboxError> {
        Outbox::pending_raw(self, after, max_events, max_bytes)
    }
}
