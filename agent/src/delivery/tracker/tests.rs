use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::convert::Infallible;

use labhours_shared::wire::EventKind;
use proptest::prelude::*;

use super::*;

/// An in-memory outbox: the same read rules as the real one.
#[derive(Debug, Default)]
struct Mem {
    events: BTreeMap<u64, Event>,
    next: u64,
}

impl Mem {
    fn with(n: u64) -> Self {
        let mut mem = Mem {
            events: BTreeMap::new(),
            next: 1,
        };
        mem.append(n);
        mem
    }

    fn append(&mut self, n: u64) -> u64 {
        for _ in 0..n {
            let seq = self.next;
            self.events.insert(
                seq,
                Event {
                    seq,
                    at: "2026-11-22T08:00:00Z".parse().unwrap(),
                    kind: EventKind::Fault {
                        source: "test".into(),
                        message: format!("event {seq:>6}"),
                    },
                },
            );
            self.next += 1;
        }
        self.head()
    }

    fn head(&self) -> u64 {
        self.next - 1
    }

    fn ack(&mut self, through: u64) {
        self.events.retain(|&seq, _| seq > through);
    }
}

fn record_bytes(event: &Event) -> usize {
    1 + serde_json::to_vec(event).unwrap().len()
}

impl EventSource for Mem {
    type Item = Event;
    type Error = Infallible;
    fn pending(
        &self,
        after: u64,
        max_events: usize,
        max_bytes: usize,
    ) -> Result<Vec<Event>, Infallible> {
        let mut out = Vec::new();
        let mut bytes = 0;
        for event in self.events.range(after + 1..).map(|(_, e)| e) {
            let size = record_bytes(event);
            if out.len() >= max_events || (!out.is_empty() && bytes + size > max_bytes) {
                break;
            }
            bytes += size;
            out.push(event.clone());
        }
        Ok(out)
    }
}

fn settings() -> TrackerSettings {
    TrackerSettings {
        max_batch_events: 10,
        max_batch_bytes: 1 << 20,
        linger: Duration::from_millis(200),
        window: 8,
        ack_timeout: Duration::from_secs(30),
        live_per_batch: 0,
        max_ahead: 0,
    }
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn seqs(batch: &[Event]) -> Vec<u64> {
    batch.iter().map(|e| e.seq).collect()
}

fn range(first: u64, last: u64) -> Vec<u64> {
    (first..=last).collect()
}

/// Takes every batch due at `now`.
fn drain_all(tracker: &mut Tracker, now: Instant, mem: &Mem) -> Vec<Vec<u64>> {
    let mut out = Vec::new();
    while let Some(batch) = tracker.next_batch(now, mem).unwrap() {
        out.push(seqs(&batch));
    }
    out
}

/// A tracker connected at `t0` with nothing pending.
fn idle(settings: TrackerSettings, t0: Instant) -> (Tracker, Mem) {
    let mem = Mem::with(0);
    let mut tracker = Tracker::new(settings, 0, 0);
    tracker.connected(t0);
    assert!(tracker.next_batch(t0, &mem).unwrap().is_none());
    (tracker, mem)
}

#[test]
fn nothing_is_sent_before_the_first_connack() {
    let t0 = Instant::now();
    let mem = Mem::with(3);
    let mut tracker = Tracker::new(settings(), 0, 3);
    assert!(tracker.next_batch(t0, &mem).unwrap().is_none());
    assert_eq!(tracker.next_deadline(t0), None);
    tracker.connected(t0);
    assert_eq!(drain_all(&mut tracker, t0, &mem), vec![range(1, 3)]);
}

#[test]
fn a_partial_batch_waits_for_the_linger_then_goes_out() {
    let t0 = Instant::now();
    let (mut tracker, mut mem) = idle(settings(), t0);
    let t1 = t0 + ms(1000);
    tracker.note_head(mem.append(3), t1);
    assert!(tracker.next_batch(t1, &mem).unwrap().is_none());
    assert_eq!(tracker.next_deadline(t1), Some(t1 + ms(200)));
    // Events appended during the linger join the same batch.
    tracker.note_head(mem.append(2), t1 + ms(150));
    assert!(tracker.next_batch(t1 + ms(199), &mem).unwrap().is_none());
    assert_eq!(
        drain_all(&mut tracker, t1 + ms(200), &mem),
        vec![range(1, 5)]
    );
}

#[test]
fn full_batches_go_out_at_once_and_the_remainder_waits_for_the_linger() {
    let t0 = Instant::now();
    let (mut tracker, mut mem) = idle(settings(), t0);
    tracker.note_head(mem.append(25), t0);
    assert_eq!(
        drain_all(&mut tracker, t0, &mem),
        vec![range(1, 10), range(11, 20)]
    );
    assert_eq!(
        drain_all(&mut tracker, t0 + ms(200), &mem),
        vec![range(21, 25)]
    );
}

#[test]
fn batches_are_bounded_by_bytes() {
    let t0 = Instant::now();
    let probe = Mem::with(1);
    let one = record_bytes(&probe.events[&1]);
    let s = TrackerSettings {
        max_batch_events: 100,
        max_batch_bytes: 3 * one + one / 2,
        ..settings()
    };
    let mem = Mem::with(10);
    let mut tracker = Tracker::new(s, 0, 10);
    tracker.connected(t0);
    assert_eq!(
        drain_all(&mut tracker, t0, &mem),
        vec![range(1, 3), range(4, 6), range(7, 9), range(10, 10)]
    );
}

#[test]
fn an_event_larger_than_the_byte_bound_still_goes_out_alone() {
    let t0 = Instant::now();
    let s = TrackerSettings {
        max_batch_bytes: 1,
        ..settings()
    };
    let mem = Mem::with(2);
    let mut tracker = Tracker::new(s, 0, 2);
    tracker.connected(t0);
    assert_eq!(drain_all(&mut tracker, t0, &mem), vec![vec![1], vec![2]]);
}

#[test]
fn nothing_is_sent_while_disconnected() {
    let t0 = Instant::now();
    let (mut tracker, mut mem) = idle(settings(), t0);
    tracker.disconnected();
    tracker.note_head(mem.append(30), t0);
    assert!(tracker.next_batch(t0 + ms(1000), &mem).unwrap().is_none());
    assert_eq!(tracker.next_deadline(t0 + ms(1000)), None);
}

#[test]
fn at_most_window_batches_are_in_flight() {
    let t0 = Instant::now();
    let s = TrackerSettings {
        window: 2,
        ..settings()
    };
    let mem = Mem::with(50);
    let mut tracker = Tracker::new(s, 0, 50);
    tracker.connected(t0);
    assert_eq!(
        drain_all(&mut tracker, t0, &mem),
        vec![range(1, 10), range(11, 20)]
    );
    assert_eq!(tracker.batches_in_flight(), 2);
    // The window opens by one batch per batch acknowledged.
    tracker.on_ack(10, t0 + ms(5));
    assert_eq!(
        drain_all(&mut tracker, t0 + ms(5), &mem),
        vec![range(21, 30)]
    );
}

#[test]
fn a_cumulative_ack_retires_every_batch_at_or_below_it() {
    let t0 = Instant::now();
    let mut mem = Mem::with(30);
    let mut tracker = Tracker::new(settings(), 0, 30);
    tracker.connected(t0);
    assert_eq!(drain_all(&mut tracker, t0, &mem).len(), 3);
    assert_eq!(
        tracker.on_ack(20, t0),
        AckOutcome::Advanced { from: 0, to: 20 }
    );
    mem.ack(20);
    assert_eq!(tracker.acked_through(), 20);
    assert_eq!(tracker.batches_in_flight(), 1);
    // An ack inside a batch keeps that batch in flight.
    tracker.on_ack(25, t0);
    assert_eq!(tracker.batches_in_flight(), 1);
    tracker.on_ack(30, t0);
    assert_eq!(tracker.batches_in_flight(), 0);
}

#[test]
fn a_stale_ack_changes_nothing() {
    let t0 = Instant::now();
    let mem = Mem::with(20);
    let mut tracker = Tracker::new(settings(), 0, 20);
    tracker.connected(t0);
    drain_all(&mut tracker, t0, &mem);
    tracker.on_ack(15, t0);
    assert_eq!(tracker.on_ack(5, t0), AckOutcome::Stale { current: 15 });
    assert_eq!(tracker.on_ack(15, t0), AckOutcome::Stale { current: 15 });
    assert_eq!(tracker.acked_through(), 15);
    assert_eq!(tracker.batches_in_flight(), 1);
}

#[test]
fn an_ack_beyond_anything_sent_is_ignored() {
    let t0 = Instant::now();
    let mem = Mem::with(5);
    let mut tracker = Tracker::new(settings(), 0, 5);
    assert_eq!(
        tracker.on_ack(1, t0),
        AckOutcome::Beyond { sent_through: 0 }
    );
    tracker.connected(t0);
    drain_all(&mut tracker, t0, &mem);
    assert_eq!(tracker.sent_through(), 5);
    assert_eq!(
        tracker.on_ack(6, t0),
        AckOutcome::Beyond { sent_through: 5 }
    );
    assert_eq!(tracker.acked_through(), 0);
    assert_eq!(tracker.batches_in_flight(), 1);
}

#[test]
fn everything_above_the_ack_is_resent_after_the_ack_timeout() {
    let t0 = Instant::now();
    let mut mem = Mem::with(5);
    let mut tracker = Tracker::new(settings(), 0, 5);
    tracker.connected(t0);
    assert_eq!(drain_all(&mut tracker, t0, &mem), vec![range(1, 5)]);
    assert_eq!(
        tracker.next_deadline(t0),
        Some(t0 + Duration::from_secs(30))
    );
    let before = tracker.rewinds();
    assert!(drain_all(&mut tracker, t0 + ms(29_999), &mem).is_empty());
    tracker.on_ack(2, t0 + ms(29_999));
    mem.ack(2);
    // Progress restarts the timer.
    let t1 = t0 + ms(29_999);
    assert!(drain_all(&mut tracker, t1 + ms(29_999), &mem).is_empty());
    assert_eq!(tracker.oldest_in_flight_sent_at(), Some(t0));
    assert_eq!(
        drain_all(&mut tracker, t1 + ms(30_000), &mem),
        vec![range(3, 5)]
    );
    assert_eq!(tracker.rewinds(), before + 1);
    assert_eq!(
        tracker.last_rewind(),
        Some((Rewind::AckTimeout, t1 + ms(30_000)))
    );
    assert_eq!(tracker.oldest_in_flight_sent_at(), Some(t1 + ms(30_000)));
}

#[test]
fn the_ack_timer_does_not_run_when_nothing_is_in_flight() {
    let t0 = Instant::now();
    let mut mem = Mem::with(5);
    let mut tracker = Tracker::new(settings(), 0, 5);
    tracker.connected(t0);
    drain_all(&mut tracker, t0, &mem);
    tracker.on_ack(5, t0 + ms(10));
    mem.ack(5);
    let rewinds = tracker.rewinds();
    assert_eq!(tracker.next_deadline(t0 + ms(10)), None);
    assert!(!tracker.check_ack_timeout(t0 + Duration::from_secs(3600)));
    assert_eq!(tracker.rewinds(), rewinds);
}

#[test]
fn everything_above_the_ack_is_resent_after_a_reconnect() {
    let t0 = Instant::now();
    let mut mem = Mem::with(20);
    let mut tracker = Tracker::new(settings(), 0, 20);
    tracker.connected(t0);
    assert_eq!(drain_all(&mut tracker, t0, &mem).len(), 2);
    tracker.on_ack(5, t0);
    mem.ack(5);
    tracker.disconnected();
    assert!(drain_all(&mut tracker, t0 + ms(1), &mem).is_empty());
    let t1 = t0 + ms(2);
    tracker.connected(t1);
    // At once, without waiting for the linger.
    assert_eq!(
        drain_all(&mut tracker, t1, &mem),
        vec![range(6, 15), range(16, 20)]
    );
}

#[test]
fn a_late_ack_after_a_reconnect_skips_what_the_collector_already_has() {
    let t0 = Instant::now();
    let mut mem = Mem::with(10);
    let mut tracker = Tracker::new(settings(), 0, 10);
    tracker.connected(t0);
    drain_all(&mut tracker, t0, &mem);
    tracker.connected(t0 + ms(1));
    assert_eq!(
        tracker.on_ack(10, t0 + ms(1)),
        AckOutcome::Advanced { from: 0, to: 10 }
    );
    mem.ack(10);
    assert!(drain_all(&mut tracker, t0 + ms(1), &mem).is_empty());
    assert_eq!(tracker.next_deadline(t0 + ms(1)), None);
}

fn live_settings() -> TrackerSettings {
    TrackerSettings {
        max_batch_events: 100,
        window: 2,
        live_per_batch: 10,
        max_ahead: 30,
        ..settings()
    }
}

#[test]
fn live_events_are_not_starved_by_a_backlog() {
    let t0 = Instant::now();
    let mut mem = Mem::with(10_000);
    let mut tracker = Tracker::new(live_settings(), 0, 10_000);
    tracker.connected(t0);
    let batches = drain_all(&mut tracker, t0, &mem);
    // Each batch drains the oldest events and carries the newest ones ahead.
    assert_eq!(batches.len(), 2);
    assert_eq!(batches[0], [range(1, 90), range(9991, 10_000)].concat());
    assert_eq!(batches[1][..90], range(91, 180)[..]);
    assert!(batches[1][90..].iter().all(|&s| s < 9991));
    // The window is full, yet a new event goes out after the linger.
    let t1 = t0 + ms(1000);
    tracker.note_head(mem.append(1), t1);
    assert!(drain_all(&mut tracker, t1, &mem).is_empty());
    assert_eq!(tracker.next_deadline(t1), Some(t1 + ms(200)));
    assert_eq!(
        drain_all(&mut tracker, t1 + ms(200), &mem),
        vec![vec![10_001]]
    );
    // The cumulative ack covers only the drained part.
    tracker.on_ack(90, t1 + ms(300));
    mem.ack(90);
    assert_eq!(tracker.acked_through(), 90);
    assert_eq!(tracker.batches_in_flight(), 1);
}

#[test]
fn events_sent_ahead_are_not_sent_again_by_the_drain() {
    let t0 = Instant::now();
    let s = TrackerSettings {
        max_batch_events: 10,
        window: 100,
        live_per_batch: 3,
        max_ahead: 100,
        ..settings()
    };
    let mut mem = Mem::with(45);
    let mut tracker = Tracker::new(s, 0, 45);
    tracker.connected(t0);
    let mut sent: Vec<u64> = Vec::new();
    let mut now = t0;
    for round in 0..20 {
        now += ms(50);
        if round % 3 == 0 {
            tracker.note_head(mem.append(4), now);
        }
        for batch in drain_all(&mut tracker, now, &mem) {
            sent.extend(batch);
        }
    }
    sent.extend(drain_all(&mut tracker, now + ms(1000), &mem).concat());
    let unique: BTreeSet<u64> = sent.iter().copied().collect();
    assert_eq!(unique.len(), sent.len(), "a seq went out twice: {sent:?}");
    assert_eq!(unique, (1..=mem.head()).collect());
    tracker.on_ack(mem.head(), now + ms(1000));
    assert_eq!(tracker.ahead_count(), 0);
    assert_eq!(tracker.batches_in_flight(), 0);
}

#[test]
fn the_live_lane_is_bounded_by_max_ahead() {
    let t0 = Instant::now();
    let mut mem = Mem::with(10_000);
    let mut tracker = Tracker::new(live_settings(), 0, 10_000);
    tracker.connected(t0);
    drain_all(&mut tracker, t0, &mem);
    assert_eq!(tracker.ahead_count(), 10);
    let mut now = t0;
    for _ in 0..10 {
        now += ms(300);
        tracker.note_head(mem.append(10), now);
        drain_all(&mut tracker, now, &mem);
    }
    assert_eq!(tracker.ahead_count(), 30);
    assert!(tracker.sent_through() < mem.head());
}

#[test]
fn a_timeout_resends_live_events_through_the_drain() {
    let t0 = Instant::now();
    let s = TrackerSettings {
        window: 100,
        ..live_settings()
    };
    let mem = Mem::with(300);
    let mut tracker = Tracker::new(s, 0, 300);
    tracker.connected(t0);
    let first: Vec<u64> = drain_all(&mut tracker, t0, &mem).concat();
    assert_eq!(first.len(), 300);
    let t1 = t0 + Duration::from_secs(30);
    let again: Vec<u64> = drain_all(&mut tracker, t1, &mem).concat();
    let unique: BTreeSet<u64> = again.iter().copied().collect();
    assert_eq!(unique.len(), 300);
    assert_eq!(tracker.rewinds(), 2);
}

#[test]
fn the_deadline_is_the_earlier_of_linger_and_ack_timeout() {
    let t0 = Instant::now();
    let (mut tracker, mut mem) = idle(settings(), t0);
    tracker.note_head(mem.append(1), t0);
    assert_eq!(tracker.next_deadline(t0), Some(t0 + ms(200)));
    drain_all(&mut tracker, t0 + ms(200), &mem);
    let t1 = t0 + ms(500);
    tracker.note_head(mem.append(1), t1);
    // In flight since t0 + 200 ms; the new event lingers until t1 + 200 ms.
    assert_eq!(tracker.next_deadline(t1), Some(t1 + ms(200)));
    let t2 = t1 + ms(200);
    drain_all(&mut tracker, t2, &mem);
    assert_eq!(
        tracker.next_deadline(t2),
        Some(t0 + ms(200) + Duration::from_secs(30))
    );
}

/// One step of a delivery history (see [`run_history`]).
#[derive(Debug, Clone)]
enum Step {
    Append(u8),
    Advance(u16),
    DeliverBatch,
    LoseBatch,
    DeliverAck,
    LoseAck,
    Reconnect,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => (1u8..40).prop_map(Step::Append),
        3 => (1u16..5000).prop_map(Step::Advance),
        4 => Just(Step::DeliverBatch),
        1 => Just(Step::LoseBatch),
        3 => Just(Step::DeliverAck),
        1 => Just(Step::LoseAck),
        1 => Just(Step::Reconnect),
    ]
}

#[derive(Debug, Default)]
struct Collector {
    committed: BTreeSet<u64>,
    through: u64,
}

impl Collector {
    fn receive(&mut self, acked_through: u64, batch: &[Event]) -> u64 {
        self.through = self.through.max(acked_through);
        self.committed.extend(batch.iter().map(|e| e.seq));
        while self.committed.contains(&(self.through + 1)) {
            self.through += 1;
        }
        self.through
    }
}

fn deliver(collector: &mut Collector, acks: &mut VecDeque<u64>, (acked, batch): (u64, Vec<Event>)) {
    acks.push_back(collector.receive(acked, &batch));
}

fn apply_ack(tracker: &mut Tracker, mem: &mut Mem, n: u64, now: Instant) {
    if let AckOutcome::Advanced { to, .. } = tracker.on_ack(n, now) {
        mem.ack(to);
    }
}

fn pump(tracker: &mut Tracker, mem: &Mem, now: Instant, net: &mut VecDeque<(u64, Vec<Event>)>) {
    while let Some(batch) = tracker.next_batch(now, mem).unwrap() {
        net.push_back((tracker.acked_through(), batch));
    }
}

/// A network that may lose or hold messages, a collector that commits
/// idempotently and acks cumulatively, and a tracker: after any history of
/// loss, reordering and reconnects, once the network heals every event is
/// acknowledged and the collector holds each seq once.
fn run_history(steps: Vec<Step>, live: usize) -> Result<(), TestCaseError> {
    let s = TrackerSettings {
        max_batch_events: 7,
        window: 3,
        live_per_batch: live,
        max_ahead: 9,
        ack_timeout: Duration::from_secs(2),
        ..settings()
    };
    let mut now = Instant::now();
    let mut mem = Mem::with(0);
    let mut tracker = Tracker::new(s, 0, 0);
    tracker.connected(now);
    let mut collector = Collector::default();
    let mut net: VecDeque<(u64, Vec<Event>)> = VecDeque::new();
    let mut acks: VecDeque<u64> = VecDeque::new();
    for step in steps {
        match step {
            Step::Append(n) => {
                let head = mem.append(u64::from(n));
                tracker.note_head(head, now);
            }
            Step::Advance(n) => now += ms(u64::from(n)),
            Step::DeliverBatch => {
                if let Some(sent) = net.pop_front() {
                    deliver(&mut collector, &mut acks, sent);
                }
            }
            Step::LoseBatch => {
                net.pop_front();
            }
            Step::DeliverAck => {
                if let Some(n) = acks.pop_front() {
                    apply_ack(&mut tracker, &mut mem, n, now);
                }
            }
            Step::LoseAck => {
                acks.pop_front();
            }
            Step::Reconnect => {
                tracker.disconnected();
                net.clear();
                tracker.connected(now);
            }
        }
        pump(&mut tracker, &mem, now, &mut net);
        prop_assert!(tracker.acked_through() <= collector.through);
        prop_assert!(tracker.batches_in_flight() <= 3);
        prop_assert!(tracker.ahead_count() <= 9);
    }
    // Heal: everything is delivered from now on.
    for _ in 0..2000 {
        if mem.events.is_empty() {
            break;
        }
        now += ms(500);
        pump(&mut tracker, &mem, now, &mut net);
        while let Some(sent) = net.pop_front() {
            deliver(&mut collector, &mut acks, sent);
        }
        while let Some(n) = acks.pop_front() {
            apply_ack(&mut tracker, &mut mem, n, now);
        }
    }
    prop_assert!(
        mem.events.is_empty(),
        "left in the outbox: {:?}",
        mem.events.keys().collect::<Vec<_>>()
    );
    prop_assert_eq!(tracker.acked_through(), mem.head());
    prop_assert_eq!(
        collector.committed,
        (1..=mem.head()).collect::<BTreeSet<_>>()
    );
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn every_event_is_acknowledged_after_any_history_of_loss_and_reconnects(
        steps in proptest::collection::vec(step(), 1..120),
        live in 0usize..5,
    ) {
        run_history(steps, live)?;
    }
}
