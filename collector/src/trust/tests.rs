use jiff::Timestamp;
use labhours_shared::trust::{ChainHash, Signer, chain_hash};
use labhours_shared::wire::{
    ChainedEnvelope, Event, EventKind, Incoming, RawRecord, SeqRange, decode_envelope,
};

use super::*;
use crate::store::{Batch, Durability, Received, Store};

fn at() -> Timestamp {
    "2026-11-22T08:00:00Z".parse().expect("timestamp")
}

fn signer() -> Signer {
    Signer::from_pkcs8(&Signer::generate_pkcs8().expect("key")).expect("parses")
}

fn fault(seq: u64, text: &str) -> Event {
    Event {
        seq,
        at: at(),
        kind: EventKind::Fault {
            source: "meter:main".into(),
            message: text.into(),
        },
    }
}

/// An agent's history as its outbox chains it.
struct History {
    records: Vec<RawRecord>,
    head: ChainHash,
}

impl History {
    fn new() -> Self {
        Self {
            records: Vec::new(),
            head: [0; 32],
        }
    }

    fn push(&mut self, event: Event) -> RawRecord {
        let json = serde_json::to_string(&event).expect("json");
        let record = RawRecord {
            seq: event.seq,
            prev: self.head,
            json,
        };
        self.head = chain_hash(&self.head, record.json.as_bytes());
        self.records.push(record.clone());
        record
    }

    fn seqs(&mut self, seqs: std::ops::RangeInclusive<u64>) -> Vec<RawRecord> {
        seqs.map(|s| self.push(fault(s, &format!("event {s}"))))
            .collect()
    }
}

fn payload(agent: &str, acked: u64, records: &[RawRecord], key: Option<&Signer>) -> Vec<u8> {
    let message = ChainedEnvelope {
        agent_id: agent,
        instrument_id: "nmr-600",
        sent_at: at(),
        acked_through: acked,
        key_id: key.map(Signer::key_id),
        rotation: key.and_then(Signer::rotation),
    }
    .encode(records)
    .expect("encodes");
    match key {
        Some(k) => k.sign_payload(&message),
        None => message,
    }
}

fn received(agent: &str, payload: &[u8]) -> Received<Incoming> {
    Received {
        received_at: at(),
        topic: format!("labhours/v1/{agent}/events"),
        message: decode_envelope(payload).expect("decodes"),
    }
}

fn commit(store: &mut Store, envelopes: Vec<Received<Incoming>>) -> crate::store::CommitOutcome {
    store
        .commit(&Batch {
            envelopes,
            ..Batch::default()
        })
        .expect("commits")
}

fn count(store: &Store, sql: &str) -> i64 {
    store
        .connection()
        .query_row(sql, [], |r| r.get(0))
        .expect("query")
}

fn quarantined_kinds(store: &Store) -> Vec<String> {
    let mut stmt = store
        .connection()
        .prepare("SELECT kind FROM quarantine ORDER BY id")
        .expect("prepare");
    stmt.query_map([], |r| r.get(0))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows")
}

/// One envelope from `agent`, committed alone.
fn send(
    store: &mut Store,
    agent: &str,
    acked: u64,
    records: &[RawRecord],
    key: Option<&Signer>,
) -> crate::store::CommitOutcome {
    commit(
        store,
        vec![received(agent, &payload(agent, acked, records, key))],
    )
}

/// A store with a key enrolled for `agent`.
fn open_keyed(agent: &str) -> (tempfile::TempDir, Store, Signer) {
    let (dir, store) = open();
    let key = signer();
    enrol(store.connection(), agent, &key.public_key(), at()).expect("enrol");
    (dir, store, key)
}

fn open() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Store::open(dir.path(), Durability::Normal).expect("store");
    (dir, store)
}

#[test]
fn a_signed_agents_events_are_stored_with_their_chain_hashes_and_the_evidence() {
    let (_dir, mut store, key) = open_keyed("a1");
    let mut history = History::new();
    let first = history.seqs(1..=3);
    let out = send(&mut store, "a1", 0, &first, Some(&key));
    assert_eq!((out.stored, out.trust_refusals), (3, 0));
    assert_eq!(out.acks, vec![("a1".to_owned(), 3)]);
    let next = history.seqs(4..=5);
    let out = send(&mut store, "a1", 3, &next, Some(&key));
    assert_eq!(out.acks, vec![("a1".to_owned(), 5)]);
    let stored: Vec<u8> = store
        .connection()
        .query_row(
            "SELECT chain_hash FROM events WHERE agent_id = 'a1' AND seq = 5",
            [],
            |r| r.get(0),
        )
        .expect("row");
    assert_eq!(stored, history.head.to_vec(), "the agent's own head");
    assert_eq!(
        count(&store, "SELECT count(*) FROM events WHERE signed = 1"),
        5
    );
    assert_eq!(count(&store, "SELECT count(*) FROM signed_envelopes"), 2);
    assert_eq!(
        count(&store, "SELECT count(*) FROM chain_anchors"),
        0,
        "from seq 1 the chain is checked all the way"
    );
    let raw: String = store
        .connection()
        .query_row("SELECT payload FROM events WHERE seq = 4", [], |r| r.get(0))
        .expect("row");
    assert_eq!(raw, history.records[3].json, "stored verbatim");
}

#[test]
fn every_trust_failure_is_quarantined_with_its_reason_and_nothing_of_it_is_committed() {
    let (_dir, mut store) = open();
    let key = signer();
    let other = signer();
    let stranger = signer();
    enrol(store.connection(), "a1", &key.public_key(), at()).expect("enrol a1");
    enrol(store.connection(), "b2", &other.public_key(), at()).expect("enrol b2");
    let mut history = History::new();
    let first = history.seqs(1..=3);
    send(&mut store, "a1", 0, &first, Some(&key));
    let mut b2 = History::new();
    let mut b2_through = 0;

    let fourth = history.seqs(4..=4);
    let mut garbled = payload("a1", 3, &fourth, Some(&key));
    let at_text = garbled
        .windows(7)
        .position(|w| w == b"event 4")
        .expect("the event's text");
    garbled[at_text + 6] = b'5';
    let mut forked = fourth.clone();
    forked[0].json = forked[0].json.replace("event 4", "event X");
    let mut broken = fourth.clone();
    broken[0].prev = [7; 32];
    let mut other_second = History::new();
    other_second.seqs(1..=1);
    let fork_of_2 = other_second.push(fault(2, "another history"));
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("unknown_key", payload("a1", 3, &fourth, Some(&stranger))),
        // b2 publishes on a1's topic with its own (enrolled) key.
        ("wrong_agent", payload("a1", 3, &fourth, Some(&other))),
        ("bad_signature", garbled),
        ("unsigned", payload("a1", 3, &fourth, None)),
        ("broken_chain", payload("a1", 3, &broken, Some(&key))),
        ("fork", payload("a1", 1, &[fork_of_2], Some(&key))),
        // A modified event with a valid chain from its prev but the old
        // signature: the signature catches it first.
        ("bad_signature", {
            let good = payload("a1", 3, &forked, Some(&key));
            let mut bytes = payload("a1", 3, &fourth, Some(&key));
            let sig_at = bytes
                .iter()
                .rposition(|&b| b == b'\n')
                .expect("signature line");
            let good_sig_at = good.iter().rposition(|&b| b == b'\n').expect("line");
            bytes.truncate(sig_at);
            let mut forged = good[..good_sig_at].to_vec();
            forged.extend_from_slice(&payload("a1", 3, &fourth, Some(&key))[sig_at..]);
            forged
        }),
    ];
    for (i, (kind, bad)) in cases.into_iter().enumerate() {
        b2_through += 1;
        let legit = b2.seqs(b2_through..=b2_through);
        let out = commit(
            &mut store,
            vec![
                received("a1", &bad),
                received("b2", &payload("b2", b2_through - 1, &legit, Some(&other))),
            ],
        );
        assert_eq!(out.trust_refusals, 1, "case {i} ({kind})");
        assert_eq!(
            out.acks,
            vec![("b2".to_owned(), b2_through)],
            "case {i} ({kind}): no ack for the refused one, the other agent flows"
        );
        assert_eq!(
            quarantined_kinds(&store).last().map(String::as_str),
            Some(kind),
            "case {i}"
        );
        assert_eq!(
            count(&store, "SELECT count(*) FROM events WHERE agent_id = 'a1'"),
            3,
            "case {i} ({kind}): nothing of it committed"
        );
    }
    let reason: String = store
        .connection()
        .query_row(
            "SELECT reason FROM quarantine WHERE kind = 'wrong_agent'",
            [],
            |r| r.get(0),
        )
        .expect("row");
    assert!(reason.contains("belongs to agent b2"), "{reason}");

    // Revoked: refused from the revocation on; the legitimate next batch
    // under a new key flows.
    revoke(store.connection(), "a1", &key.key_id(), at()).expect("revoke");
    let out = send(&mut store, "a1", 3, &fourth, Some(&key));
    assert_eq!(out.trust_refusals, 1);
    assert_eq!(
        quarantined_kinds(&store).last().map(String::as_str),
        Some("revoked_key")
    );
    let renewed = signer();
    enrol(store.connection(), "a1", &renewed.public_key(), at()).expect("enrol again");
    let out = send(&mut store, "a1", 3, &fourth, Some(&renewed));
    assert_eq!(out.acks, vec![("a1".to_owned(), 4)]);
}

#[test]
fn unsigned_agents_are_accepted_only_without_a_key_and_while_the_policy_allows() {
    let (_dir, mut store) = open();
    let mut history = History::new();
    let first = history.seqs(1..=2);
    let out = send(&mut store, "u1", 0, &first, None);
    assert_eq!(out.acks, vec![("u1".to_owned(), 2)]);
    assert_eq!(
        count(&store, "SELECT count(*) FROM events WHERE signed = 0"),
        2
    );
    store.set_trust_policy(TrustPolicy {
        allow_unsigned: false,
    });
    let next = history.seqs(3..=3);
    let out = send(&mut store, "u1", 2, &next, None);
    assert_eq!(out.trust_refusals, 1);
    assert_eq!(quarantined_kinds(&store), vec!["unsigned"]);
}

#[test]
fn a_prev_without_a_stored_hash_is_an_anchor_checked_when_the_seq_before_arrives() {
    let (_dir, mut store, key) = open_keyed("a1");
    let mut history = History::new();
    let all = history.seqs(1..=30);
    // First contact after seqs 1..=9 were acked elsewhere: an anchor at 10.
    let out = send(&mut store, "a1", 9, &all[9..12], Some(&key));
    assert_eq!(out.acks, vec![("a1".to_owned(), 12)]);
    assert_eq!(
        count(&store, "SELECT count(*) FROM chain_anchors WHERE seq = 10"),
        1
    );
    // The live lane sends 20..=21 ahead (with the drain's 13..=14): anchored
    // at 20 until 19 arrives.
    let mut lanes = all[12..14].to_vec();
    lanes.extend_from_slice(&all[19..21]);
    send(&mut store, "a1", 9, &lanes, Some(&key));
    assert_eq!(
        count(&store, "SELECT count(*) FROM chain_anchors WHERE seq = 20"),
        1
    );
    // 15..=19 from another history does not meet the anchor at 20.
    let mut other = History::new();
    let mut forged: Vec<RawRecord> = Vec::new();
    for s in 1..=19 {
        let r = other.push(fault(s, if s < 15 { "" } else { "other" }));
        if s >= 15 {
            forged.push(r);
        }
    }
    forged[0].prev = all[13].prev; // continue from 14 as stored
    let forged = {
        let mut h = chain_hash(&all[13].prev, all[13].json.as_bytes());
        forged
            .into_iter()
            .map(|mut r| {
                r.prev = h;
                h = chain_hash(&h, r.json.as_bytes());
                r
            })
            .collect::<Vec<_>>()
    };
    let out = send(&mut store, "a1", 9, &forged, Some(&key));
    assert_eq!(out.trust_refusals, 1);
    assert_eq!(quarantined_kinds(&store), vec!["broken_chain"]);
    let out = send(&mut store, "a1", 9, &all[14..19], Some(&key));
    assert_eq!(out.acks, vec![("a1".to_owned(), 21)]);
    assert_eq!(
        count(&store, "SELECT count(*) FROM chain_anchors WHERE seq = 20"),
        0,
        "confirmed: no longer on trust"
    );
}

#[test]
fn after_a_declared_loss_the_agents_new_chain_is_accepted_as_an_anchor() {
    let (_dir, mut store, key) = open_keyed("a1");
    let mut history = History::new();
    let first = history.seqs(1..=3);
    send(&mut store, "a1", 0, &first, Some(&key));
    // The agent's outbox was lost after seq 3 was sent: it starts a new
    // chain from zero at 5 with a notice that 3..=4 may be lost.
    let mut fresh = History::new();
    fresh.head = [0; 32];
    let notice = fresh.push(Event {
        seq: 5,
        at: at(),
        kind: EventKind::Dropped {
            ranges: vec![SeqRange { first: 3, last: 4 }],
            count: 2,
            reason: "outbox database lost".into(),
        },
    });
    let out = send(&mut store, "a1", 2, &[notice], Some(&key));
    assert_eq!(out.trust_refusals, 0, "{:?}", quarantined_kinds(&store));
    assert_eq!(out.acks, vec![("a1".to_owned(), 5)]);
    assert_eq!(
        count(&store, "SELECT count(*) FROM chain_anchors WHERE seq = 5"),
        1
    );
}

#[test]
fn keys_are_enrolled_once_for_one_agent_and_revoked_by_their_owner() {
    let (_dir, store) = open();
    let key = signer();
    let conn = store.connection();
    let row = enrol(conn, "a1", &key.public_key(), at()).expect("enrol");
    assert_eq!(row.key_id, key.key_id().to_string());
    assert_eq!(
        enrol(conn, "a1", &key.public_key(), at()).expect("again"),
        row
    );
    let err = enrol(conn, "b2", &key.public_key(), at()).unwrap_err();
    assert!(
        err.to_string().contains("already enrolled for agent a1"),
        "{err}"
    );
    let err = revoke(conn, "b2", &key.key_id(), at()).unwrap_err();
    assert!(err.to_string().contains("has no key"), "{err}");
    let revoked = revoke(conn, "a1", &key.key_id(), at()).expect("revoke");
    assert_eq!(revoked.revoked_at, Some(at()));
    assert_eq!(keys(conn).expect("keys"), vec![revoked]);
}

#[test]
fn a_rotation_endorsed_by_the_enrolled_key_enrols_the_new_key_in_the_same_commit() {
    let (_dir, mut store, old) = open_keyed("a1");
    let mut history = History::new();
    send(&mut store, "a1", 0, &history.seqs(1..=3), Some(&old));
    let new = signer().rotated_from(&old, "a1");
    // Two envelopes in one commit: the second needs the key the first enrolled.
    let first = history.seqs(4..=5);
    let second = history.seqs(6..=7);
    let out = commit(
        &mut store,
        vec![
            received("a1", &payload("a1", 3, &first, Some(&new))),
            received("a1", &payload("a1", 3, &second, Some(&new))),
        ],
    );
    assert_eq!(out.trust_refusals, 0, "{:?}", quarantined_kinds(&store));
    assert_eq!(count(&store, "SELECT count(*) FROM events"), 7);
    let rows = keys(store.connection()).expect("keys");
    let rotated: Option<String> = store
        .connection()
        .query_row(
            "SELECT rotated_from FROM agent_keys WHERE key_id = ?1",
            [new.key_id().to_string()],
            |r| r.get(0),
        )
        .expect("enrolled");
    assert_eq!(rows.len(), 2);
    assert_eq!(rotated, Some(old.key_id().to_string()));
    // The old key still works until it is revoked (envelopes in flight).
    send(&mut store, "a1", 7, &history.seqs(8..=8), Some(&old));
    assert_eq!(count(&store, "SELECT count(*) FROM events"), 8);
}

#[test]
fn rotations_that_do_not_hold_are_refused_and_enrol_nothing() {
    let (_dir, mut store, old) = open_keyed("a1");
    let other = signer();
    enrol(store.connection(), "b1", &other.public_key(), at()).expect("enrol b1");
    let stranger = signer();
    let mut history = History::new();
    let records = history.seqs(1..=2);
    let cases: Vec<(Signer, &str)> = vec![
        // Endorsed by a key that is not enrolled.
        (signer().rotated_from(&stranger, "a1"), "unknown_key"),
        // Endorsed by another agent's key.
        (signer().rotated_from(&other, "a1"), "wrong_agent"),
        // a1's key endorsing a rotation it signed for another agent id.
        (signer().rotated_from(&old, "b1"), "bad_signature"),
    ];
    let mut expected = Vec::new();
    for (new, kind) in &cases {
        send(&mut store, "a1", 0, &records, Some(new));
        expected.push(kind.to_string());
    }
    assert_eq!(quarantined_kinds(&store), expected);
    assert_eq!(keys(store.connection()).expect("keys").len(), 2);
    assert_eq!(count(&store, "SELECT count(*) FROM events"), 0);

    // One successor per key: a second one is refused.
    let first = signer().rotated_from(&old, "a1");
    send(&mut store, "a1", 0, &records, Some(&first));
    assert_eq!(count(&store, "SELECT count(*) FROM events"), 2);
    let second = signer().rotated_from(&old, "a1");
    send(&mut store, "a1", 2, &history.seqs(3..=3), Some(&second));
    expected.push("unknown_key".into());
    assert_eq!(quarantined_kinds(&store), expected);

    // A revoked key endorses nothing.
    revoke(store.connection(), "a1", &old.key_id(), at()).expect("revoke");
    let (_dir2, mut fresh, old2) = open_keyed("c1");
    revoke(fresh.connection(), "c1", &old2.key_id(), at()).expect("revoke");
    let late = signer().rotated_from(&old2, "c1");
    send(
        &mut fresh,
        "c1",
        0,
        &History::new().seqs(1..=1),
        Some(&late),
    );
    assert_eq!(quarantined_kinds(&fresh), ["revoked_key"]);
    assert_eq!(count(&fresh, "SELECT count(*) FROM agent_keys"), 1);
}
