use jiff::Timestamp;
use rusqlite::Connection;

use super::*;
use crate::store::{Batch, DB_FILE, Durability, Store, migrations};

fn at(s: &str) -> Timestamp {
    s.parse().expect("timestamp")
}

fn row(at_s: &str, agent: Option<&str>, kind: Kind, payload: &[u8]) -> Quarantined {
    Quarantined::new(
        at(at_s),
        &format!("labhours/v1/{}/events", agent.unwrap_or("?")),
        agent,
        kind,
        format!("{kind} test"),
        payload,
    )
}

fn store_with(rows: Vec<Quarantined>) -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut store = Store::open(dir.path(), Durability::Normal).expect("open");
    store
        .commit(&Batch {
            quarantined: rows,
            ..Batch::default()
        })
        .expect("commit");
    (dir, store)
}

#[test]
fn rows_are_listed_newest_first_and_every_filter_narrows() {
    let (_dir, store) = store_with(vec![
        row("2026-11-22T08:00:00Z", Some("a1"), Kind::Undecodable, b"x"),
        row("2026-11-22T09:00:00Z", Some("a2"), Kind::SeqConflict, b"y"),
        row("2026-11-22T10:00:00Z", Some("a1"), Kind::SeqConflict, b"z"),
        row("2026-11-22T11:00:00Z", None, Kind::BadTopic, b"w"),
    ]);
    let conn = store.connection();
    let ids = |filter: Filter| -> Vec<String> {
        list(
            conn,
            &Filter {
                limit: 10,
                ..filter
            },
        )
        .expect("list")
        .into_iter()
        .map(|e| format!("{}:{}", e.agent_id.unwrap_or_default(), e.kind))
        .collect()
    };
    assert_eq!(
        ids(Filter::default()),
        [
            ":bad_topic",
            "a1:seq_conflict",
            "a2:seq_conflict",
            "a1:undecodable"
        ]
    );
    assert_eq!(
        ids(Filter {
            agent_id: Some("a1".into()),
            ..Filter::default()
        }),
        ["a1:seq_conflict", "a1:undecodable"]
    );
    assert_eq!(
        ids(Filter {
            kind: Some(Kind::SeqConflict),
            ..Filter::default()
        }),
        ["a1:seq_conflict", "a2:seq_conflict"]
    );
    assert_eq!(
        ids(Filter {
            from_ms: Some(at("2026-11-22T09:00:00Z").as_millisecond()),
            to_ms: Some(at("2026-11-22T11:00:00Z").as_millisecond()),
            ..Filter::default()
        }),
        ["a1:seq_conflict", "a2:seq_conflict"],
        "from is inclusive, to exclusive"
    );
    let limited = list(
        conn,
        &Filter {
            limit: 1,
            ..Filter::default()
        },
    )
    .expect("list");
    assert_eq!(limited.len(), 1);
    let counts = counts(conn).expect("counts");
    assert_eq!(
        counts.into_iter().collect::<Vec<_>>(),
        [
            (Kind::BadTopic, 1),
            (Kind::Undecodable, 1),
            (Kind::SeqConflict, 2)
        ]
    );
}

#[test]
fn a_row_shows_its_payload_as_text_or_hex_and_says_when_it_was_cut() {
    let big = vec![b'{'; KEEP_BYTES + 10];
    let (_dir, store) = store_with(vec![
        row(
            "2026-11-22T08:00:00Z",
            Some("a1"),
            Kind::Undecodable,
            b"{no",
        ),
        row(
            "2026-11-22T08:00:01Z",
            Some("a1"),
            Kind::Undecodable,
            &[0xff, 0x00],
        ),
        row("2026-11-22T08:00:02Z", Some("a1"), Kind::Oversized, &big),
    ]);
    let conn = store.connection();
    let text = get(conn, 1).expect("get").expect("row 1");
    assert_eq!(text.payload_text.as_deref(), Some("{no"));
    assert_eq!(text.payload_hex, "7b6e6f");
    assert!(!text.truncated);
    let binary = get(conn, 2).expect("get").expect("row 2");
    assert_eq!(binary.payload_text, None);
    assert_eq!(binary.payload_hex, "ff00");
    let cut = get(conn, 3).expect("get").expect("row 3");
    assert!(cut.truncated);
    assert_eq!(cut.entry.payload_len, KEEP_BYTES as u64 + 10);
    assert_eq!(cut.payload_hex.len(), KEEP_BYTES * 2);
    assert_eq!(get(conn, 99).expect("get"), None);
}

#[test]
fn purge_deletes_only_rows_received_before_the_cut() {
    let (_dir, store) = store_with(vec![
        row(
            "2026-11-01T00:00:00Z",
            Some("a1"),
            Kind::Undecodable,
            b"old",
        ),
        row(
            "2026-11-22T00:00:00Z",
            Some("a1"),
            Kind::Undecodable,
            b"new",
        ),
    ]);
    let conn = store.connection();
    assert_eq!(purge(conn, at("2026-11-22T00:00:00Z")).expect("purge"), 1);
    let left = list(
        conn,
        &Filter {
            limit: 10,
            ..Filter::default()
        },
    )
    .expect("list");
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].received_at, at("2026-11-22T00:00:00Z"));
}

#[test]
fn rows_from_before_the_columns_get_their_agent_and_kind_at_upgrade() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let conn = Connection::open(dir.path().join(DB_FILE)).expect("open");
        for (_, sql) in &migrations::MIGRATIONS[..4] {
            conn.execute_batch(sql).expect("old schema");
        }
        conn.pragma_update(None, "user_version", 4)
            .expect("version");
        let old = [
            ("labhours/v1/a1/events", "undecodable envelope: eof"),
            (
                "a2/events",
                "agent_id conflict: seq 4 of a2 is already stored with other content",
            ),
            (
                "a3/events",
                "acked_through 9 is above anything received from a3 (highest seq 2)",
            ),
            (
                "x/y",
                "topic \"x/y\" is not <prefix>/<agent_id>/<events|status>",
            ),
            ("labhours/v1/a4/events", "something new"),
        ];
        for (topic, reason) in old {
            conn.execute(
                "INSERT INTO quarantine (received_at_ms, topic, reason, payload, payload_len)
                 VALUES (0, ?1, ?2, x'00', 1)",
                [topic, reason],
            )
            .expect("old row");
        }
    }
    let store = Store::open(dir.path(), Durability::Normal).expect("upgrade");
    let mut rows: Vec<(Option<String>, Kind)> = list(
        store.connection(),
        &Filter {
            limit: 10,
            ..Filter::default()
        },
    )
    .expect("list")
    .into_iter()
    .map(|e| (e.agent_id, e.kind))
    .collect();
    rows.sort();
    assert_eq!(
        rows,
        [
            (None, Kind::BadTopic),
            (Some("a1".into()), Kind::Undecodable),
            (Some("a2".into()), Kind::SeqConflict),
            (Some("a3".into()), Kind::ImplausibleFloor),
            (Some("a4".into()), Kind::Other),
        ]
    );
}

#[test]
fn kinds_read_back_by_name() {
    for kind in Kind::ALL {
        assert_eq!(Kind::parse(kind.as_str()), Some(kind));
    }
    assert_eq!(Kind::parse("nope"), None);
    assert_eq!(
        topic_agent("labhours/v1/agents/nmr-agent/events").as_deref(),
        Some("nmr-agent")
    );
    assert_eq!(topic_agent("events"), None);
}
