use jiff::Timestamp;
use labhours_shared::wire::{
    AgentStatus, Envelope, Event, EventKind, Heartbeat, Presence, SCHEMA_VERSION, SeqRange,
};

use super::*;

fn at(s: &str) -> Timestamp {
    s.parse().expect("timestamp")
}

fn fault(seq: u64) -> Event {
    Event {
        seq,
        at: at("2026-11-22T08:00:00Z"),
        kind: EventKind::Fault {
            source: "meter:main".into(),
            message: format!("event {seq}"),
        },
    }
}

fn envelope(agent: &str, acked_through: u64, events: Vec<Event>) -> Received<Incoming> {
    Received {
        received_at: at("2026-11-22T08:00:07Z"),
        topic: format!("labhours/v1/{agent}/events"),
        message: Envelope {
            v: SCHEMA_VERSION,
            agent_id: agent.into(),
            instrument_id: "nmr-600".into(),
            sent_at: at("2026-11-22T08:00:05Z"),
            acked_through,
            events,
        }
        .into(),
    }
}

fn batch(envelopes: Vec<Received<Incoming>>) -> Batch {
    Batch {
        envelopes,
        ..Batch::default()
    }
}

fn seqs(range: std::ops::RangeInclusive<u64>) -> Vec<Event> {
    range.map(fault).collect()
}

fn count(store: &Store, sql: &str) -> i64 {
    store.conn.query_row(sql, [], |r| r.get(0)).expect("query")
}

#[test]
fn a_new_database_gets_every_migration_and_reopening_applies_none() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path(), Durability::Full).expect("open");
    assert_eq!(
        migrations::version(&store.conn).expect("version"),
        migrations::latest()
    );
    let mode: String = store
        .conn
        .pragma_query_value(None, "journal_mode", |r| r.get(0))
        .expect("journal_mode");
    assert_eq!(mode, "wal");
    drop(store);
    let mut conn = Connection::open(dir.path().join(DB_FILE)).expect("open");
    assert_eq!(migrations::apply(&mut conn, dir.path()).expect("apply"), 0);
}

#[test]
fn a_database_from_a_newer_build_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let conn = Connection::open(dir.path().join(DB_FILE)).expect("open");
    conn.pragma_update(None, "user_version", 99)
        .expect("set version");
    drop(conn);
    let err = Store::open(dir.path(), Durability::Full).unwrap_err();
    assert!(
        matches!(err, StoreError::SchemaTooNew { found: 99, .. }),
        "{err}"
    );
}

#[test]
fn resent_events_are_stored_once_and_acked_again() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut store = Store::open(dir.path(), Durability::Full).expect("open");
    let first = store
        .commit(&batch(vec![envelope("a1", 0, seqs(1..=3))]))
        .expect("commit");
    assert_eq!((first.stored, first.duplicates), (3, 0));
    assert_eq!(first.acks, vec![("a1".to_owned(), 3)]);
    let again = store
        .commit(&batch(vec![
            envelope("a1", 0, seqs(1..=3)),
            envelope("a1", 0, seqs(2..=4)),
        ]))
        .expect("commit");
    assert_eq!((again.stored, again.duplicates), (1, 5));
    assert_eq!(again.acks, vec![("a1".to_owned(), 4)]);
    assert_eq!(count(&store, "SELECT count(*) FROM events"), 4);
}

#[test]
fn committed_through_and_its_holes_survive_a_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut store = Store::open(dir.path(), Durability::Full).expect("open");
    let out = store
        .commit(&batch(vec![
            envelope("a1", 0, seqs(1..=2)),
            envelope("a1", 0, seqs(5..=8)),
            envelope("b2", 40, seqs(41..=41)),
        ]))
        .expect("commit");
    assert_eq!(out.acks, vec![("a1".to_owned(), 2), ("b2".to_owned(), 41)]);
    drop(store);

    let mut store = Store::open(dir.path(), Durability::Full).expect("reopen");
    assert_eq!(store.committed_through("a1"), Some(2));
    assert_eq!(store.committed_through("b2"), Some(41));
    assert_eq!(store.committed_through("never"), None);
    let out = store
        .commit(&batch(vec![envelope("a1", 2, seqs(3..=4))]))
        .expect("commit");
    assert_eq!(out.acks, vec![("a1".to_owned(), 8)]);
    let ro = open_read_only(dir.path()).expect("read-only");
    assert_eq!(stored_committed_through(&ro, "a1").expect("query"), Some(8));
}

#[test]
fn a_dropped_event_closes_its_ranges_before_and_after_a_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut store = Store::open(dir.path(), Durability::Full).expect("open");
    let dropped = Event {
        seq: 9,
        at: at("2026-11-22T08:00:00Z"),
        kind: EventKind::Dropped {
            ranges: vec![SeqRange { first: 5, last: 6 }],
            count: 2,
            reason: "outbox full".into(),
        },
    };
    let mut events = seqs(1..=3);
    events.push(dropped);
    let out = store
        .commit(&batch(vec![envelope("a1", 0, events)]))
        .expect("commit");
    assert_eq!(out.acks, vec![("a1".to_owned(), 3)]);
    drop(store);
    let mut store = Store::open(dir.path(), Durability::Full).expect("reopen");
    let out = store
        .commit(&batch(vec![envelope(
            "a1",
            3,
            vec![fault(4), fault(7), fault(8)],
        )]))
        .expect("commit");
    assert_eq!(out.acks, vec![("a1".to_owned(), 9)]);
    assert_eq!(count(&store, "SELECT count(*) FROM dropped_ranges"), 1);
}

#[test]
fn an_acked_through_beyond_committed_through_raises_the_floor_and_is_recorded() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut store = Store::open(dir.path(), Durability::Full).expect("open");
    store
        .commit(&batch(vec![envelope("a1", 0, seqs(1..=2))]))
        .expect("commit");
    let out = store
        .commit(&batch(vec![envelope("a1", 10, seqs(11..=12))]))
        .expect("commit");
    assert_eq!(out.floor_raises, 1);
    assert_eq!(out.acks, vec![("a1".to_owned(), 12)]);
    let (first, last): (i64, i64) = store
        .conn
        .query_row(
            "SELECT skipped_first, skipped_last FROM floor_raises",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .expect("one raise");
    assert_eq!((first, last), (3, 10));
}

#[test]
fn heartbeats_and_status_fill_the_agent_registry() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut store = Store::open(dir.path(), Durability::Full).expect("open");
    let hb = Event {
        seq: 1,
        at: at("2026-11-22T08:00:00Z"),
        kind: EventKind::Heartbeat(Heartbeat {
            uptime_s: 60,
            backlog: 17,
            oldest_unacked_age_s: Some(9),
            clock: at("2026-11-22T08:00:00Z"),
            version: "0.1.0".into(),
        }),
    };
    let mut b = batch(vec![envelope("a1", 0, vec![hb])]);
    b.statuses.push(Received {
        received_at: at("2026-11-22T08:00:08Z"),
        topic: "labhours/v1/a1/status".into(),
        message: AgentStatus {
            v: SCHEMA_VERSION,
            agent_id: "a1".into(),
            instrument_id: "nmr-600".into(),
            status: Presence::Offline,
            at: None,
            version: "0.1.0".into(),
            state_rules: None,
        },
    });
    store.commit(&b).expect("commit");
    let row: (String, i64, i64, i64, i64) = store
        .conn
        .query_row(
            "SELECT presence, backlog, oldest_unacked_age_s, clock_skew_ms, committed_through
             FROM agents WHERE agent_id = 'a1'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
        )
        .expect("agent row");
    assert_eq!(row, ("offline".into(), 17, 9, 2000, 1));
}

#[test]
fn quarantine_keeps_the_first_64_kib_and_the_original_length() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut store = Store::open(dir.path(), Durability::Normal).expect("open");
    let payload = vec![b'x'; 200_000];
    let q = Quarantined::new(
        at("2026-11-22T08:00:00Z"),
        "t/a/events",
        Some("a"),
        crate::quarantine::Kind::Oversized,
        "too big".into(),
        &payload,
    );
    store
        .commit(&Batch {
            quarantined: vec![q],
            ..Batch::default()
        })
        .expect("commit");
    let (kept, len): (i64, i64) = store
        .conn
        .query_row(
            "SELECT length(payload), payload_len FROM quarantine",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .expect("row");
    assert_eq!((kept, len), (65_536, 200_000));
}

#[test]
fn a_result_file_reported_late_marks_its_instrument_dirty_from_its_mtime() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut store = Store::open(dir.path(), Durability::Full).expect("open");
    // Reported at 08:00 (the event's instant), completed two days before.
    let file = Event {
        seq: 1,
        at: at("2026-11-22T08:00:00Z"),
        kind: EventKind::ResultFile(labhours_shared::wire::ResultFile {
            path: "2026/11/20/S0042.raw".into(),
            size_bytes: 10,
            sha256: "0".repeat(64),
            mtime: at("2026-11-20T09:30:00Z"),
            sample_id: Some("S0042".into()),
        }),
    };
    store
        .commit(&batch(vec![envelope("a1", 0, vec![file])]))
        .expect("commit");
    assert_eq!(
        count(
            &store,
            "SELECT from_ms FROM dirty WHERE instrument_id = 'nmr-600'"
        ),
        at("2026-11-20T09:30:00Z").as_millisecond()
    );
}

#[test]
fn a_floor_above_anything_received_is_quarantined_unless_the_envelope_continues_from_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut store = Store::open(dir.path(), Durability::Full).expect("open");
    store
        .commit(&batch(vec![envelope("a1", 0, seqs(1..=3))]))
        .expect("commit");
    let out = store
        .commit(&batch(vec![envelope(
            "a1",
            1_000_000,
            seqs(1_000_005..=1_000_006),
        )]))
        .expect("commit");
    assert_eq!(out.implausible_floors, 1);
    assert!(
        out.acks.is_empty(),
        "nothing acknowledged that was not stored"
    );
    assert_eq!(
        store.committed_through("a1"),
        Some(3),
        "the floor did not move"
    );
    let (topic, agent, kind, reason): (String, String, String, String) = store
        .conn
        .query_row(
            "SELECT topic, agent_id, kind, reason FROM quarantine",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .expect("quarantined");
    assert_eq!(
        (topic.as_str(), agent.as_str(), kind.as_str()),
        ("labhours/v1/a1/events", "a1", "implausible_floor"),
        "the row names the real topic, its agent and the kind of refusal"
    );
    assert!(
        reason.contains("acked_through 1000000 is above anything received"),
        "{reason}"
    );
    // The shape of a real agent after this collector lost data (a restored
    // backup): its drain starts right above the floor it was acknowledged.
    let out = store
        .commit(&batch(vec![envelope("a1", 500, seqs(501..=502))]))
        .expect("commit");
    assert_eq!(out.acks, vec![("a1".to_owned(), 502)]);
    assert_eq!(out.floor_raises, 1);
}

fn summary(seq: u64, start: &str, minutes: i64, energy_wh: f64) -> Event {
    let start = at(start);
    Event {
        seq,
        at: start,
        kind: EventKind::Summary(labhours_shared::wire::Summary {
            end: start + jiff::SignedDuration::from_mins(minutes),
            samples: 60,
            failed_reads: 0,
            min_w: Some(100.0),
            avg_w: Some(100.0),
            max_w: Some(100.0),
            energy_wh,
            covered_s: (minutes * 60) as f64,
            avg_v: None,
            avg_a: None,
        }),
    }
}

fn energy_wh(store: &Store) -> f64 {
    store
        .conn
        .query_row("SELECT COALESCE(SUM(wh), 0) FROM energy_hours", [], |r| {
            r.get(0)
        })
        .expect("energy")
}

#[test]
fn energy_of_an_interval_counts_once_whichever_seqs_or_agents_carry_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut store = Store::open(dir.path(), Durability::Normal).expect("open");
    let day = |seq0: u64| {
        vec![
            summary(seq0, "2026-11-22T08:00:00Z", 1, 10.0),
            summary(seq0 + 1, "2026-11-22T08:01:00Z", 1, 10.0),
            summary(seq0 + 2, "2026-11-22T08:02:00Z", 1, 10.0),
        ]
    };
    store
        .commit(&batch(vec![envelope("a1", 0, day(1))]))
        .expect("first");
    assert_eq!(energy_wh(&store), 30.0);
    // The same log replayed under new seqs, and by a second agent.
    store
        .commit(&batch(vec![
            envelope("a1", 3, day(4)),
            envelope("a2", 0, day(1)),
        ]))
        .expect("replay");
    assert_eq!(energy_wh(&store), 30.0, "a replay adds nothing");
    assert_eq!(count(&store, "SELECT COUNT(*) FROM events"), 9);
    // Half of this one is new: half its energy counts.
    store
        .commit(&batch(vec![envelope(
            "a1",
            6,
            vec![summary(7, "2026-11-22T08:02:00Z", 2, 8.0)],
        )]))
        .expect("overlap");
    assert_eq!(energy_wh(&store), 34.0);
    assert_eq!(
        count(&store, "SELECT COUNT(*) FROM energy_coverage"),
        1,
        "touching intervals merge into one covered stretch"
    );
    // Deriving again from the events gives the same figure.
    derived::rebuild(&mut store.conn).expect("rebuild");
    assert_eq!(energy_wh(&store), 34.0);
}
