//! The delivery protocol as a state machine: which events go out next, what
//! is in flight, and what an ack or a timeout changes. No I/O, no clock:
//! every instant is passed in, and the outbox is read through [`EventSource`].
//!
//! # Model
//!
//! - `acked`: the collector's cumulative ack ("nothing missing at or below").
//! - `drain`: every outbox event at or below it was sent since the last
//!   rewind (or is acked). The drain moves up from `acked`, oldest first.
//! - `ahead`: ranges of *live* events sent before the drain reached them
//!   (see below); every range lies above `drain`.
//! - `head`: the newest seq in the outbox, as last told.
//!
//! A **rewind** (after every reconnect, and after `ack_timeout` without
//! progress) forgets everything in flight: the drain restarts at `acked`, so
//! every unacknowledged event is sent again.
//!
//! # Live events and the backlog
//!
//! When more than one batch is waiting above the drain (a backlog, e.g. after
//! a week offline), each batch carries, besides the oldest events of the
//! backlog, up to `live_per_batch` of the **newest** events not sent yet (the
//! live lane). The collector commits them at once, so dashboards see what the
//! instrument does now; its ack stays cumulative, so they are acknowledged
//! (and leave the outbox) only once the drain has caught up with them. The
//! drain skips events already sent ahead. Live events are bounded by
//! `max_ahead` unacknowledged seqs; when the drain window is full, the live
//! lane may still send a batch of its own once the newest event has waited
//! `linger`.
//!
//! # Batches and window
//!
//! A batch holds at most `max_batch_events` events and about
//! `max_batch_bytes` of records (a quarter of which the live lane may use).
//! A batch that would not be full waits until its oldest fresh event has
//! waited `linger`; a full one, a backlog or a resend goes at once. At most
//! `window` batches of the drain are unacknowledged at a time.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use labhours_shared::wire::{Event, RawRecord, SeqRange};

/// Limits of the delivery protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackerSettings {
    /// Events in one envelope at most.
    pub max_batch_events: usize,
    /// Bytes of event records in one envelope, about (at least one event always goes).
    pub max_batch_bytes: usize,
    /// How long a batch that is not full waits for more events.
    pub linger: Duration,
    /// Drain batches unacknowledged at a time.
    pub window: usize,
    /// Everything above the ack is sent again after this long without progress.
    pub ack_timeout: Duration,
    /// Newest events a batch carries ahead of the backlog.
    pub live_per_batch: usize,
    /// Seqs sent ahead of the drain and not yet acknowledged, at most.
    pub max_ahead: u64,
}

impl Default for TrackerSettings {
    fn default() -> Self {
        Self {
            max_batch_events: 500,
            max_batch_bytes: 256 * 1024,
            linger: Duration::from_millis(200),
            window: 8,
            ack_timeout: Duration::from_secs(30),
            live_per_batch: 50,
            max_ahead: 1000,
        }
    }
}

/// Something with a place in the agent's sequence.
pub trait Sequenced {
    fn seq(&self) -> u64;
}

impl Sequenced for Event {
    fn seq(&self) -> u64 {
        self.seq
    }
}

impl Sequenced for RawRecord {
    fn seq(&self) -> u64 {
        self.seq
    }
}

/// Read access to the unacknowledged events, in seq order (the outbox's
/// [`pending_raw`](crate::outbox::Outbox::pending_raw)).
pub trait EventSource {
    type Error;
    type Item: Sequenced;
    /// Up to `max_events` events with `seq > after`, in seq order, within
    /// about `max_bytes` (at least one event when any is there).
    fn pending(
        &self,
        after: u64,
        max_events: usize,
        max_bytes: usize,
    ) -> Result<Vec<Self::Item>, Self::Error>;
}

/// What an ack from the collector did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckOutcome {
    /// The ack moved from `from` to `to`: delete through `to` from the outbox.
    Advanced { from: u64, to: u64 },
    /// At or below the current ack (a late or repeated ack): nothing changes.
    Stale { current: u64 },
    /// Above anything ever sent: it cannot be for this agent's events; ignored.
    Beyond { sent_through: u64 },
}

/// Why everything unacknowledged is being sent again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rewind {
    /// A new connection (the broker may have lost what was in flight).
    Reconnect,
    /// No ack progress for `ack_timeout`.
    AckTimeout,
    /// The publisher could not hand a batch to the MQTT client.
    PublishFailed,
}

#[derive(Debug, Clone, Copy)]
struct InFlight {
    /// The highest seq of this batch's drain part.
    drain_last: u64,
    /// When the batch was published.
    sent_at: Instant,
}

/// The delivery state machine (see the module documentation).
#[derive(Debug)]
pub struct Tracker {
    settings: TrackerSettings,
    acked: u64,
    /// Highest seq ever sent by this tracker (acks above it are not for us).
    max_sent: u64,
    drain: u64,
    ahead: Vec<SeqRange>,
    in_flight: VecDeque<InFlight>,
    head: u64,
    /// When the oldest event above everything sent was first seen.
    fresh_since: Option<Instant>,
    /// Send at once what is unsent (after a rewind), until caught up.
    resend_due: bool,
    connected: bool,
    /// Start of the current wait for ack progress, while anything is in flight.
    waiting_since: Option<Instant>,
    rewinds: u64,
    last_rewind: Option<(Rewind, Instant)>,
}

impl Tracker {
    /// A tracker for an outbox acknowledged through `acked` whose newest seq is `head`.
    /// It sends nothing until [`Tracker::connected`].
    pub fn new(settings: TrackerSettings, acked: u64, head: u64) -> Self {
        Self {
            settings,
            acked,
            max_sent: acked,
            drain: acked,
            ahead: Vec::new(),
            in_flight: VecDeque::new(),
            head: head.max(acked),
            fresh_since: None,
            resend_due: true,
            connected: false,
            waiting_since: None,
            rewinds: 0,
            last_rewind: None,
        }
    }

    pub fn settings(&self) -> &TrackerSettings {
        &self.settings
    }

    /// The collector's cumulative ack as last applied.
    pub fn acked_through(&self) -> u64 {
        self.acked
    }

    /// The highest seq ever sent (the `sent_through` high mark).
    pub fn sent_through(&self) -> u64 {
        self.max_sent
    }

    /// Drain batches sent and not yet acknowledged.
    pub fn batches_in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// Seqs sent ahead of the drain (live events) and not yet acknowledged.
    pub fn ahead_count(&self) -> u64 {
        self.ahead.iter().map(|r| r.last - r.first + 1).sum()
    }

    /// How often everything unacknowledged was sent again (for any reason).
    pub fn rewinds(&self) -> u64 {
        self.rewinds
    }

    /// Why and when everything unacknowledged was last sent again.
    pub fn last_rewind(&self) -> Option<(Rewind, Instant)> {
        self.last_rewind
    }

    /// When the oldest unacknowledged drain batch was published.
    pub fn oldest_in_flight_sent_at(&self) -> Option<Instant> {
        self.in_flight.front().map(|b| b.sent_at)
    }

    pub fn is_connected(&self) -> bool {
        self.connected
    }

    /// The outbox's newest seq is now `head` (events were appended).
    pub fn note_head(&mut self, head: u64, now: Instant) {
        if head > self.head {
            if self.fresh_since.is_none() && head > self.top_sent() {
                self.fresh_since = Some(now);
            }
            self.head = head;
        }
    }

    /// A connection (ConnAck) is up: everything unacknowledged is sent again.
    pub fn connected(&mut self, now: Instant) {
        self.connected = true;
        self.rewind(Rewind::Reconnect, now);
    }

    /// The connection is gone: nothing is sent until the next [`Tracker::connected`].
    pub fn disconnected(&mut self) {
        self.connected = false;
    }

    /// Forgets what is in flight so that everything above the ack is sent again.
    pub fn rewind(&mut self, why: Rewind, now: Instant) {
        self.drain = self.acked;
        self.ahead.clear();
        self.in_flight.clear();
        self.waiting_since = None;
        self.resend_due = true;
        self.rewinds += 1;
        self.last_rewind = Some((why, now));
    }

    /// Applies the collector's ack for `through`.
    pub fn on_ack(&mut self, through: u64, now: Instant) -> AckOutcome {
        if through <= self.acked {
            return AckOutcome::Stale {
                current: self.acked,
            };
        }
        if through > self.max_sent {
            return AckOutcome::Beyond {
                sent_through: self.max_sent,
            };
        }
        let from = self.acked;
        self.acked = through;
        self.drain = self.drain.max(through);
        self.trim_ahead();
        while self
            .in_flight
            .front()
            .is_some_and(|b| b.drain_last <= through)
        {
            self.in_flight.pop_front();
        }
        self.waiting_since = self.outstanding().then_some(now);
        AckOutcome::Advanced { from, to: through }
    }

    /// If the ack made no progress for `ack_timeout` while events were in
    /// flight, rewinds and returns true.
    pub fn check_ack_timeout(&mut self, now: Instant) -> bool {
        let expired = self
            .waiting_since
            .is_some_and(|since| now.saturating_duration_since(since) >= self.settings.ack_timeout);
        if expired {
            self.rewind(Rewind::AckTimeout, now);
        }
        expired
    }

    /// The next batch to publish, if one is due now; records it as sent.
    /// Call repeatedly until it returns `None`.
    pub fn next_batch<S: EventSource>(
        &mut self,
        now: Instant,
        source: &S,
    ) -> Result<Option<Vec<S::Item>>, S::Error> {
        if !self.connected {
            return Ok(None);
        }
        self.check_ack_timeout(now);
        let s = &self.settings;
        let top = self.top_sent();
        let fresh = self.head > top;
        if !fresh && self.ahead.is_empty() {
            self.caught_up();
            return Ok(None);
        }
        let deep = self.head.saturating_sub(self.drain) > s.max_batch_events as u64;
        let lingered = self
            .fresh_since
            .is_none_or(|t| now.saturating_duration_since(t) >= s.linger);
        let drain_due = self.resend_due || deep || lingered || !self.ahead.is_empty();
        let drain_room = self.in_flight.len() < s.window;
        let send_drain = drain_due && drain_room;
        // The live lane rides along with a drain batch through a backlog, or
        // goes alone once its newest events have waited `linger`.
        let ahead_room = s.max_ahead.saturating_sub(self.ahead_count());
        let send_live =
            deep && fresh && ahead_room > 0 && s.live_per_batch > 0 && (send_drain || lingered);
        if !send_drain && !send_live {
            return Ok(None);
        }

        let mut events = Vec::new();
        let mut drain_bytes = s.max_batch_bytes;
        if send_live {
            let after = top.max(self.head.saturating_sub(s.live_per_batch as u64));
            let take = (s.live_per_batch.min(s.max_batch_events) as u64).min(ahead_room) as usize;
            let live_bytes = (s.max_batch_bytes / 4).max(1);
            let live = source.pending(after, take, live_bytes)?;
            if let (Some(first), Some(last)) = (live.first(), live.last()) {
                self.ahead.push(SeqRange {
                    first: first.seq(),
                    last: last.seq(),
                });
                drain_bytes = drain_bytes.saturating_sub(live_bytes).max(1);
            }
            events.extend(live);
        }
        if send_drain {
            let budget = s.max_batch_events.saturating_sub(events.len());
            let mut sent_any = false;
            // Skipping events already sent ahead may take more than one read.
            while budget > 0 && !sent_any {
                let fetched = source.pending(self.drain, budget, drain_bytes)?;
                if fetched.is_empty() {
                    // Nothing above the drain is left in the outbox.
                    self.drain = self.drain.max(self.head);
                    self.trim_ahead();
                    break;
                }
                for event in fetched {
                    self.drain = event.seq();
                    if !self.is_ahead(event.seq()) {
                        sent_any = true;
                        events.push(event);
                    }
                }
                self.trim_ahead();
            }
            if sent_any {
                self.in_flight.push_back(InFlight {
                    drain_last: self.drain,
                    sent_at: now,
                });
            }
        }
        if events.is_empty() {
            if self.top_sent() >= self.head && self.ahead.is_empty() {
                self.caught_up();
            }
            return Ok(None);
        }
        events.sort_by_key(|e| e.seq());
        let newest = events.last().map_or(0, |e| e.seq());
        self.max_sent = self.max_sent.max(newest);
        self.head = self.head.max(newest);
        if self.waiting_since.is_none() {
            self.waiting_since = Some(now);
        }
        if self.top_sent() >= self.head {
            self.fresh_since = None;
            if self.ahead.is_empty() {
                self.resend_due = false;
            }
        }
        Ok(Some(events))
    }

    /// When to call [`Tracker::next_batch`] again if nothing else happens:
    /// the end of a linger or of the ack timeout (`None`: wait for an event).
    pub fn next_deadline(&self, now: Instant) -> Option<Instant> {
        if !self.connected {
            return None;
        }
        let ack = self.waiting_since.map(|t| t + self.settings.ack_timeout);
        let linger = self
            .fresh_since
            .filter(|_| self.head > self.top_sent())
            .map(|t| t + self.settings.linger)
            .filter(|&t| t > now);
        match (ack, linger) {
            (Some(a), Some(l)) => Some(a.min(l)),
            (a, l) => a.or(l),
        }
    }

    /// The highest seq sent since the last rewind (drain or live lane).
    fn top_sent(&self) -> u64 {
        self.ahead
            .last()
            .map_or(self.drain, |r| r.last.max(self.drain))
    }

    fn outstanding(&self) -> bool {
        self.drain > self.acked || !self.ahead.is_empty()
    }

    fn is_ahead(&self, seq: u64) -> bool {
        self.ahead.iter().any(|r| r.first <= seq && seq <= r.last)
    }

    /// Drops the parts of `ahead` the drain or the ack has reached.
    fn trim_ahead(&mut self) {
        let floor = self.drain.max(self.acked);
        self.ahead.retain_mut(|r| {
            if r.last <= floor {
                return false;
            }
            r.first = r.first.max(floor + 1);
            true
        });
    }

    fn caught_up(&mut self) {
        self.fresh_since = None;
        self.resend_due = false;
    }
}

#[cfg(test)]
mod tests;
