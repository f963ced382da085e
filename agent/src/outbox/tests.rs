use std::collections::{BTreeMap, BTreeSet};

use jiff::Timestamp;
use labhours_shared::state::State;
use labhours_shared::trust::{ChainHash, chain_hash};
use labhours_shared::wire::{EventKind, ResultFile, SeqRange, Summary, TransitionSource};
use proptest::prelude::*;

use super::*;

fn at(s: i64) -> Timestamp {
    Timestamp::from_second(1_795_000_020 + s).expect("in range")
}

fn settings(max_bytes: u64) -> OutboxSettings {
    OutboxSettings {
        max_bytes,
        summary_flush_ms: 1000,
        cache_bytes: 1024 * 1024,
        min_free_bytes: 0,
    }
}

fn open(dir: &Path, max_bytes: u64) -> Outbox {
    Outbox::open(dir, settings(max_bytes), at(0))
        .expect("opens")
        .0
}

fn summary(w: f64) -> EventKind {
    EventKind::Summary(Summary {
        end: at(60),
        samples: 60,
        failed_reads: 0,
        min_w: Some(w),
        avg_w: Some(w),
        max_w: Some(w),
        energy_wh: w / 60.0,
        covered_s: 60.0,
        avg_v: None,
        avg_a: None,
    })
}

fn transition(reason: &str) -> EventKind {
    EventKind::Transition {
        from: State::Standby,
        to: State::Running,
        source: TransitionSource::Power,
        reason: reason.into(),
    }
}

fn pending_seqs(outbox: &Outbox) -> Vec<u64> {
    outbox
        .pending(0, usize::MAX, usize::MAX)
        .expect("readable")
        .iter()
        .map(|e| e.seq)
        .collect()
}

fn dropped_ranges(outbox: &Outbox) -> Vec<SeqRange> {
    outbox
        .pending(0, usize::MAX, usize::MAX)
        .expect("readable")
        .into_iter()
        .flat_map(|e| match e.kind {
            EventKind::Dropped { ranges, .. } => ranges,
            _ => Vec::new(),
        })
        .collect()
}

#[test]
fn events_get_consecutive_seqs_from_one_and_come_back_in_order() {
    let dir = tempfile::tempdir().expect("temp dir");
    let outbox = open(dir.path(), 1 << 20);
    assert_eq!(
        outbox
            .append(at(1), vec![summary(1.0), transition("a")])
            .expect("append"),
        [1, 2]
    );
    assert_eq!(
        outbox.append(at(2), vec![transition("b")]).expect("append"),
        [3]
    );
    let events = outbox.pending(0, 10, usize::MAX).expect("pending");
    assert_eq!(events.iter().map(|e| e.seq).collect::<Vec<_>>(), [1, 2, 3]);
    assert_eq!(events[2].kind, transition("b"));
    assert_eq!(events[2].at, at(2));
    assert_eq!(outbox.backlog(), 3);
}

#[test]
fn numbering_continues_after_a_restart() {
    let dir = tempfile::tempdir().expect("temp dir");
    {
        let outbox = open(dir.path(), 1 << 20);
        outbox
            .append(at(1), vec![transition("a"), transition("b")])
            .expect("append");
        outbox.ack_through(2).expect("ack");
    }
    let outbox = open(dir.path(), 1 << 20);
    assert_eq!(
        outbox.append(at(2), vec![transition("c")]).expect("append"),
        [3]
    );
    assert_eq!(outbox.acked_through(), 2);
}

#[test]
fn an_ack_removes_exactly_the_events_up_to_its_seq() {
    let dir = tempfile::tempdir().expect("temp dir");
    let outbox = open(dir.path(), 1 << 20);
    outbox
        .append(at(1), (0..5).map(|i| summary(f64::from(i))).collect())
        .expect("append");
    assert_eq!(outbox.ack_through(3).expect("ack"), 3);
    assert_eq!(pending_seqs(&outbox), [4, 5]);
    assert_eq!(
        outbox.ack_through(2).expect("older ack"),
        0,
        "an older ack changes nothing"
    );
    assert_eq!(pending_seqs(&outbox), [4, 5]);
    assert_eq!(outbox.backlog(), 2);
    drop(outbox);
    assert_eq!(
        pending_seqs(&open(dir.path(), 1 << 20)),
        [4, 5],
        "acked events stay gone"
    );
}

#[test]
fn pending_is_bounded_by_count_and_bytes_but_always_makes_progress() {
    let dir = tempfile::tempdir().expect("temp dir");
    let outbox = open(dir.path(), 1 << 20);
    outbox
        .append(at(1), (0..10).map(|i| summary(f64::from(i))).collect())
        .expect("append");
    assert_eq!(outbox.pending(3, 4, usize::MAX).expect("pending").len(), 4);
    assert_eq!(outbox.pending(3, 4, usize::MAX).expect("pending")[0].seq, 4);
    assert_eq!(outbox.pending(0, 100, 1).expect("pending").len(), 1);
    assert!(
        outbox
            .pending(10, 100, usize::MAX)
            .expect("pending")
            .is_empty()
    );
}

#[test]
fn the_oldest_pending_instant_is_known() {
    let dir = tempfile::tempdir().expect("temp dir");
    let outbox = open(dir.path(), 1 << 20);
    assert_eq!(outbox.oldest_pending_at().expect("read"), None);
    outbox.append(at(5), vec![transition("a")]).expect("append");
    outbox.append(at(9), vec![transition("b")]).expect("append");
    assert_eq!(outbox.oldest_pending_at().expect("read"), Some(at(5)));
}

#[test]
fn when_full_summaries_are_dropped_first_oldest_first_and_named() {
    let dir = tempfile::tempdir().expect("temp dir");
    let record = encode_record(
        &Event {
            seq: 1,
            at: at(1),
            kind: summary(1.0),
        },
        &[0; 32],
    )
    .len() as u64
        + 8;
    // Room for about 10 events.
    let outbox = open(dir.path(), record * 10);
    outbox
        .append(at(1), vec![transition("keep me")])
        .expect("append");
    for i in 0..20 {
        outbox
            .append(at(2), vec![summary(f64::from(i))])
            .expect("append");
    }
    let seqs = pending_seqs(&outbox);
    assert_eq!(seqs[0], 1, "the transition survives");
    let ranges = dropped_ranges(&outbox);
    assert!(!ranges.is_empty());
    assert_eq!(ranges[0].first, 2, "the oldest summary went first");
    let named: BTreeSet<u64> = ranges.iter().flat_map(|r| r.first..=r.last).collect();
    let present: BTreeSet<u64> = seqs.iter().copied().collect();
    let all: BTreeSet<u64> = (1..outbox.next_seq()).collect();
    assert_eq!(
        &named | &present,
        all,
        "every seq is pending or named as dropped"
    );
    assert!(outbox.backlog_bytes() <= record * 10 + 200);
}

#[test]
fn when_only_important_events_remain_the_oldest_are_dropped_and_gaps_stay_named() {
    let dir = tempfile::tempdir().expect("temp dir");
    // The cap frees down to 90 % and then writes its notice: 10 % must
    // hold one notice (records carry their 32-byte chain hash).
    let outbox = open(dir.path(), 3000);
    for i in 0..40 {
        outbox
            .append(at(i), vec![transition(&format!("t{i}"))])
            .expect("append");
    }
    assert!(
        outbox.backlog_bytes() <= 3000,
        "{} bytes, {} events",
        outbox.backlog_bytes(),
        outbox.backlog()
    );
    let named: BTreeSet<u64> = dropped_ranges(&outbox)
        .iter()
        .flat_map(|r| r.first..=r.last)
        .collect();
    assert!(named.contains(&1), "the oldest went first");
    let present: BTreeSet<u64> = pending_seqs(&outbox).into_iter().collect();
    let all: BTreeSet<u64> = (1..outbox.next_seq()).collect();
    assert_eq!(
        &named | &present,
        all,
        "even dropped notices pass their ranges on"
    );
    let kept = outbox.pending(0, usize::MAX, usize::MAX).expect("pending");
    assert!(
        kept.iter().any(|e| e.kind == transition("t39")),
        "the newest is kept"
    );
}

#[test]
fn a_result_file_and_its_fingerprint_are_stored_together() {
    let dir = tempfile::tempdir().expect("temp dir");
    let fp = Fingerprint {
        size_bytes: 3,
        mtime_ms: 1_795_000_020_000,
    };
    let file = ResultFile {
        path: "run-1/fid".into(),
        size_bytes: 3,
        sha256: "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad".into(),
        mtime: at(0),
        sample_id: None,
    };
    {
        let outbox = open(dir.path(), 1 << 20);
        assert_eq!(outbox.file_reported("0:run-1/fid").expect("read"), None);
        outbox
            .append_result_file(at(1), "0:run-1/fid", fp, file.clone())
            .expect("append");
    }
    let outbox = open(dir.path(), 1 << 20);
    assert_eq!(outbox.file_reported("0:run-1/fid").expect("read"), Some(fp));
    assert_eq!(
        outbox.pending(0, 1, usize::MAX).expect("pending")[0].kind,
        EventKind::ResultFile(file)
    );
}

#[test]
fn a_corrupt_database_is_moved_aside_and_numbering_continues() {
    // Damage every file sled keeps, or only its data (not its config).
    for damage_config in [true, false] {
        let dir = tempfile::tempdir().expect("temp dir");
        {
            let outbox = open(dir.path(), 1 << 20);
            outbox
                .append(at(1), vec![transition("a"), transition("b")])
                .expect("append");
            outbox.ack_through(1).expect("ack");
        }
        for file in walk(&dir.path().join("outbox")) {
            if damage_config || !file.ends_with("conf") {
                std::fs::write(&file, vec![0xA5u8; 4096]).expect("scribble");
            }
        }
        let (outbox, recovery) =
            Outbox::open(dir.path(), settings(1 << 20), at(9)).expect("opens anyway");
        let recovery = recovery.expect("recovered");
        let events = outbox.pending(0, usize::MAX, usize::MAX).expect("pending");
        // sled notices damaged config; damaged data it may read as an empty
        // log. Either way the gap is named and no seq is reused.
        if damage_config {
            assert!(recovery.moved_to.as_ref().is_some_and(|p| p.exists()));
            assert!(
                matches!(&events[0].kind, EventKind::Fault { source, .. } if source == "outbox")
            );
        }
        let notice = events
            .iter()
            .find(|e| matches!(e.kind, EventKind::Dropped { .. }))
            .expect("a dropped notice");
        let EventKind::Dropped { ranges, .. } = &notice.kind else {
            unreachable!()
        };
        // The ack floor in the seq file is saved with each reservation: here, before the ack.
        assert_eq!(ranges[0].first, 1);
        assert!(events[0].seq > 2, "no seq is reused");
        assert_eq!(
            ranges[0].last + 1,
            events[0].seq,
            "the notice closes the gap exactly"
        );
    }
}

#[test]
fn a_deleted_database_keeps_numbering_from_the_seq_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    {
        let outbox = open(dir.path(), 1 << 20);
        outbox.append(at(1), vec![transition("a")]).expect("append");
    }
    std::fs::remove_dir_all(dir.path().join("outbox")).expect("delete");
    let (outbox, recovery) = Outbox::open(dir.path(), settings(1 << 20), at(9)).expect("opens");
    assert_eq!(recovery.expect("noticed").moved_to, None);
    let events = outbox.pending(0, usize::MAX, usize::MAX).expect("pending");
    assert!(matches!(&events[0].kind, EventKind::Dropped { ranges, .. } if ranges[0].first == 1));
    assert!(events[0].seq > 1);
}

#[test]
fn an_outbox_in_use_elsewhere_is_named_not_moved_aside() {
    let dir = tempfile::tempdir().expect("temp dir");
    let _first = open(dir.path(), 1 << 20);
    let err = Outbox::open(dir.path(), settings(1 << 20), at(0)).unwrap_err();
    assert!(
        err.to_string().contains("is in use by another process"),
        "{err}"
    );
    assert!(!dir.path().read_dir().expect("dir").any(|e| {
        e.expect("entry")
            .file_name()
            .to_string_lossy()
            .starts_with("outbox.corrupt")
    }));
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).expect("readable") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}

// Model test: random appends, acks and restarts against a simple model.

#[derive(Debug, Clone)]
enum Op {
    Append(Vec<bool>),
    Ack(u8),
    Restart,
}

fn ops() -> impl Strategy<Value = Vec<Op>> {
    let op = prop_oneof![
        6 => prop::collection::vec(any::<bool>(), 1..6).prop_map(Op::Append),
        2 => any::<u8>().prop_map(Op::Ack),
        1 => Just(Op::Restart),
    ];
    prop::collection::vec(op, 1..40)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// The model: the set of seqs handed out, which ones are pending, and the
    /// acknowledged floor. Drops are read from the outbox's own notices and
    /// checked for the priority rule.
    #[test]
    fn the_outbox_behaves_like_its_model(ops in ops(), max_bytes in 1500u64..6000) {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut outbox = open(dir.path(), max_bytes);
        let mut pending: BTreeMap<u64, Priority> = BTreeMap::new();
        let mut issued: BTreeSet<u64> = BTreeSet::new();
        let mut acked = 0u64;
        let mut seen_notices: BTreeSet<u64> = BTreeSet::new();
        let mut named_before: BTreeSet<u64> = BTreeSet::new();
        let mut hashes: BTreeMap<u64, ChainHash> = BTreeMap::new();

        for op in ops {
            // Drops never touch the batch being appended.
            let mut batch_first = u64::MAX;
            match op {
                Op::Append(kinds) => {
                    let events: Vec<EventKind> = kinds
                        .iter()
                        .map(|&high| if high { transition("x") } else { summary(1.0) })
                        .collect();
                    let seqs = outbox.append(at(1), events).expect("append");
                    batch_first = seqs[0];
                    for (seq, high) in seqs.iter().zip(&kinds) {
                        prop_assert!(issued.insert(*seq), "seq {} issued twice", seq);
                        prop_assert!(*seq > acked);
                        pending.insert(*seq, if *high { Priority::High } else { Priority::Low });
                    }
                }
                Op::Ack(k) => {
                    let through = acked + u64::from(k % 8);
                    let through = through.min(outbox.next_seq() - 1);
                    outbox.ack_through(through).expect("ack");
                    acked = acked.max(through);
                    pending.retain(|&seq, _| seq > acked);
                }
                Op::Restart => {
                    drop(outbox);
                    outbox = open(dir.path(), max_bytes);
                }
            }
            // Learn about drops from new notices, and check them.
            let actual = outbox.pending(0, usize::MAX, usize::MAX).expect("pending");
            for event in &actual {
                if let EventKind::Dropped { ranges, count, .. } = &event.kind {
                    if !seen_notices.insert(event.seq) {
                        continue;
                    }
                    issued.insert(event.seq);
                    pending.insert(event.seq, Priority::High);
                    let named: Vec<u64> = ranges.iter().flat_map(|r| r.first..=r.last).collect();
                    prop_assert_eq!(named.len() as u64, *count);
                    let dropped_high = named.iter().any(|s| pending.get(s) == Some(&Priority::High));
                    for seq in &named {
                        // Either pending until now, or carried over from a dropped notice.
                        prop_assert!(
                            pending.remove(seq).is_some() || named_before.contains(seq),
                            "dropped seq {} was neither pending nor named before", seq
                        );
                    }
                    named_before.extend(named);
                    if dropped_high {
                        prop_assert!(
                            !pending.iter().any(|(s, p)| *p == Priority::Low && *s < batch_first),
                            "a transition was dropped while an older summary was kept"
                        );
                    }
                }
            }
            // The chain: every record carries the hash of the seq before it
            // (seen when that seq was appended, whatever was deleted since),
            // a record's hash never changes, and the head is the newest hash.
            for record in outbox.pending_raw(0, usize::MAX, usize::MAX).expect("raw") {
                let expected_prev = if record.seq == 1 {
                    [0; 32]
                } else {
                    *hashes.get(&(record.seq - 1)).expect("the seq before was seen")
                };
                prop_assert_eq!(record.prev, expected_prev, "prev of seq {}", record.seq);
                let h = chain_hash(&record.prev, record.json.as_bytes());
                prop_assert_eq!(*hashes.entry(record.seq).or_insert(h), h);
            }
            prop_assert_eq!(
                Some(&outbox.chain_head()),
                hashes.get(&(outbox.next_seq() - 1)).or(Some(&[0; 32]).filter(|_| outbox.next_seq() == 1))
            );
            let actual_seqs: Vec<u64> = actual.iter().map(|e| e.seq).collect();
            let model_seqs: Vec<u64> = pending.keys().copied().collect();
            prop_assert_eq!(&actual_seqs, &model_seqs);
            prop_assert_eq!(outbox.backlog(), model_seqs.len() as u64);
            prop_assert!(actual_seqs.iter().all(|&s| s > acked));
            // Nothing vanishes: every seq handed out is acked, pending, or
            // named by a notice that is still pending.
            let still_named: BTreeSet<u64> = actual
                .iter()
                .flat_map(|e| match &e.kind {
                    EventKind::Dropped { ranges, .. } => ranges.clone(),
                    _ => Vec::new(),
                })
                .flat_map(|r| r.first..=r.last)
                .collect();
            for seq in &issued {
                prop_assert!(
                    *seq <= acked || pending.contains_key(seq) || still_named.contains(seq),
                    "seq {} vanished", seq
                );
            }
        }
    }
}

#[test]
fn with_less_free_space_than_the_reserve_appends_are_refused_and_nothing_is_written() {
    let dir = tempfile::tempdir().expect("temp dir");
    let free = free_bytes(dir.path()).expect("free space");
    let mut s = settings(1 << 30);
    s.min_free_bytes = free.saturating_mul(2).max(1);
    let (outbox, _) = Outbox::open(dir.path(), s, at(0)).expect("opens on a full disk");
    let err = outbox.append(at(1), vec![transition("x")]).unwrap_err();
    assert!(matches!(err, OutboxError::DiskFull { .. }), "{err}");
    assert!(err.nothing_written());
    assert!(err.to_string().contains("is full"), "{err}");
    assert_eq!((outbox.next_seq(), outbox.backlog()), (1, 0));
    let health = outbox.health();
    assert_eq!(health.refused_total, 1);
    assert_eq!(health.refusing_since, Some(at(1)));
    assert!(health.reason.expect("a reason").contains("disk full"));
    // Nothing of it reached the disk either.
    drop(outbox);
    assert!(pending_seqs(&open(dir.path(), 1 << 30)).is_empty());
}

#[test]
fn a_pipeline_holds_what_a_full_disk_refused_and_appends_it_once_there_is_room() {
    use crate::pipeline::Pipeline;
    use labhours_shared::state::{EngineSettings, Reading, StateRules};

    let dir = tempfile::tempdir().expect("temp dir");
    let free = free_bytes(dir.path()).expect("free space");
    let mut s = settings(1 << 30);
    s.min_free_bytes = free.saturating_mul(2).max(1);
    let (outbox, _) = Outbox::open(dir.path(), s, at(0)).expect("opens");
    let engine = EngineSettings::new(&StateRules::with_thresholds(10.0, 100.0), 1000);
    let mut pipeline = Pipeline::new(engine, outbox.clone(), at(0));
    for i in 0..200 {
        let _ = pipeline.push(Reading::power(at(i), Some(5000.0)));
    }
    let held = pipeline.held();
    assert!(held > 0, "the engine produced events the disk refused");
    assert_eq!(outbox.next_seq(), 1);
    // Space comes back.
    outbox.set_min_free_bytes(0);
    pipeline
        .push(Reading::power(at(200), Some(5000.0)))
        .expect("room again");
    assert_eq!(pipeline.held(), 0);
    let events = outbox.pending(0, usize::MAX, usize::MAX).expect("readable");
    assert!(events.len() > held, "the notice, then what was held");
    match &events[0].kind {
        EventKind::Fault { source, message } => {
            assert_eq!(source, "outbox");
            assert!(message.contains("disk full"), "{message}");
        }
        other => panic!("the outage notice comes first, got {other:?}"),
    }
    let times: Vec<Timestamp> = events[1..].iter().map(|e| e.at).collect();
    assert!(
        times.is_sorted(),
        "held events keep their order and instants"
    );
}

#[test]
fn long_fault_messages_are_cut_so_every_event_stays_small() {
    let dir = tempfile::tempdir().expect("temp dir");
    let outbox = open(dir.path(), 1 << 30);
    let long = "é".repeat(100_000);
    outbox
        .append(
            at(1),
            vec![EventKind::Fault {
                source: "meter".into(),
                message: long,
            }],
        )
        .expect("append");
    let events = outbox.pending(0, usize::MAX, usize::MAX).expect("readable");
    let EventKind::Fault { message, .. } = &events[0].kind else {
        panic!("a fault");
    };
    assert!(
        message.len() <= MAX_TEXT_BYTES + 4 && message.ends_with(" …"),
        "{}",
        message.len()
    );
}

#[test]
fn an_outbox_written_before_the_chain_is_upgraded_at_open_and_the_chain_continues() {
    let dir = tempfile::tempdir().expect("temp dir");
    {
        let outbox = open(dir.path(), 1 << 20);
        outbox
            .append(at(1), vec![transition("a"), summary(1.0), transition("b")])
            .expect("append");
        outbox.ack_through(1).expect("ack");
    }
    // Rewrite seqs 2 and 3 in the format before the chain (priority byte,
    // then the JSON) and forget the head, as an older agent left them.
    {
        let db = sled::open(dir.path().join("outbox")).expect("sled");
        let events = db.open_tree("events").expect("tree");
        for seq in [2u64, 3] {
            let value = events.get(seq.to_be_bytes()).expect("get").expect("stored");
            let mut old = vec![value[0] & !CHAINED];
            old.extend_from_slice(&value[CHAINED_HEADER..]);
            events.insert(seq.to_be_bytes(), old).expect("insert");
        }
        db.open_tree("meta")
            .expect("meta")
            .remove(CHAIN_HEAD)
            .expect("remove");
        db.flush().expect("flush");
    }
    let outbox = open(dir.path(), 1 << 20);
    let before = outbox.pending_raw(0, usize::MAX, usize::MAX).expect("raw");
    assert_eq!(before.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![2, 3]);
    assert_eq!(
        before[0].prev, [0; 32],
        "chained from zero: seq 1 was never hashed"
    );
    let h2 = chain_hash(&before[0].prev, before[0].json.as_bytes());
    assert_eq!(before[1].prev, h2);
    let h3 = chain_hash(&h2, before[1].json.as_bytes());
    assert_eq!(outbox.chain_head(), h3);
    outbox.append(at(2), vec![transition("c")]).expect("append");
    drop(outbox);
    let outbox = open(dir.path(), 1 << 20);
    let after = outbox.pending_raw(0, usize::MAX, usize::MAX).expect("raw");
    assert_eq!(
        &after[..2],
        &before[..],
        "upgraded once, the same after a restart"
    );
    assert_eq!(after[2].seq, 4);
    assert_eq!(
        after[2].prev, h3,
        "the chain continues from the upgraded records"
    );
}

#[test]
fn acks_and_the_cap_keep_the_hash_before_every_survivor() {
    let dir = tempfile::tempdir().expect("temp dir");
    let outbox = open(dir.path(), 1 << 20);
    let mut hashes = vec![[0u8; 32]];
    for i in 0..6 {
        outbox
            .append(
                at(1),
                vec![if i % 2 == 0 {
                    summary(1.0)
                } else {
                    transition("t")
                }],
            )
            .expect("append");
    }
    for r in outbox.pending_raw(0, usize::MAX, usize::MAX).expect("raw") {
        hashes.push(chain_hash(&r.prev, r.json.as_bytes()));
    }
    outbox.ack_through(3).expect("ack");
    let left = outbox.pending_raw(0, usize::MAX, usize::MAX).expect("raw");
    assert_eq!(left[0].seq, 4);
    assert_eq!(
        left[0].prev, hashes[3],
        "the acked seq 3's hash is known to seq 4"
    );
}
