//! Final or provisional: how far every instrument's figures can still
//! change (docs/verified.md, "Final and provisional figures").
//!
//! An instrument's figures are **settled through** instant `T` when
//! - its agents have delivered everything they recorded before `T`: their
//!   newest heartbeat (taken at `H`) reported an empty outbox, so `T = H`,
//!   or a backlog whose oldest event is `age` old, so `T = H − age`; an agent
//!   that never sent a heartbeat has settled nothing;
//! - and the reconciler has caught up: no dirty mark from before `T`.
//!
//! Evidence can still arrive after `T` (an agent that was offline drains
//! its outbox), so a period ending after `T` is provisional.

use std::collections::HashMap;

use rusqlite::{Connection, params};

use crate::reconcile::Ms;

const DAY_MS: Ms = 86_400_000;

/// Per instrument (the instruments some agent reported for): the instant
/// its figures are settled through, `None` if nothing is.
pub fn per_instrument(conn: &Connection) -> rusqlite::Result<HashMap<String, Option<Ms>>> {
    let mut out: HashMap<String, Option<Ms>> = HashMap::new();
    let mut agents = conn.prepare_cached(
        "SELECT instrument_id,
                CASE WHEN heartbeat_at_ms IS NULL THEN NULL
                     WHEN COALESCE(backlog, 0) = 0 THEN heartbeat_at_ms
                     ELSE heartbeat_at_ms - COALESCE(oldest_unacked_age_s, 0) * 1000 END
         FROM agents WHERE instrument_id IS NOT NULL",
    )?;
    let rows = agents.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get(1)?)))?;
    for row in rows {
        let (id, through): (String, Option<Ms>) = row?;
        // Every agent of the instrument must have delivered.
        out.entry(id)
            .and_modify(|t| *t = t.zip(through).map(|(a, b)| a.min(b)))
            .or_insert(through);
    }
    for (id, from) in dirty(conn)? {
        if let Some(t) = out.get_mut(&id) {
            *t = t.map(|t| t.min(from));
        }
    }
    // A hub's forwarded instruments: as their site said (and the site
    // counts its own agents and reconciler the same way).
    for (id, through) in crate::federation::forwarded_settled(conn)? {
        out.insert(id, through);
    }
    Ok(out)
}

/// The dirty marks: instrument → recompute from.
fn dirty(conn: &Connection) -> rusqlite::Result<Vec<(String, Ms)>> {
    conn.prepare_cached("SELECT instrument_id, from_ms FROM dirty")?
        .query_map(params![], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect()
}

/// What the reconciler has still to do.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pending {
    /// Instruments with a dirty mark.
    pub instruments: u64,
    /// Local-day-sized stretches (24 h) from each mark to `now`, summed.
    pub instrument_days: u64,
    /// The earliest mark.
    pub since: Option<Ms>,
}

/// The reconciler's backlog at `now`.
pub fn pending(conn: &Connection, now: Ms) -> rusqlite::Result<Pending> {
    let mut p = Pending::default();
    for (_, from) in dirty(conn)? {
        p.instruments += 1;
        p.instrument_days += ((now - from).max(1) + DAY_MS - 1).div_euclid(DAY_MS) as u64;
        p.since = Some(p.since.map_or(from, |s: Ms| s.min(from)));
    }
    Ok(p)
}

/// The earliest settled instant over `ids`, ignoring instruments no agent
/// ever reported for (they have no evidence to wait for); `None` when one
/// of them has settled nothing, or none has an agent.
pub fn overall<'a>(
    settled: &HashMap<String, Option<Ms>>,
    ids: impl IntoIterator<Item = &'a str>,
) -> Option<Ms> {
    let mut min: Option<Ms> = None;
    for id in ids {
        match settled.get(id) {
            None => {}
            Some(None) => return None,
            Some(Some(t)) => min = Some(min.map_or(*t, |m| m.min(*t))),
        }
    }
    min
}

/// Whether a period ending at `end` may still change for instrument `id`.
pub fn provisional(settled: &HashMap<String, Option<Ms>>, id: &str, end: Ms) -> bool {
    settled.get(id).copied().flatten().is_none_or(|t| end > t)
}

#[cfg(test)]
mod tests {
    use jiff::Timestamp;
    use labhours_shared::wire::{Envelope, Event, EventKind, Heartbeat, SCHEMA_VERSION};

    use super::*;
    use crate::store::{Batch, Durability, Received, Store, derived::mark_dirty};

    fn at(s: &str) -> Timestamp {
        s.parse().expect("timestamp")
    }

    fn heartbeat(
        agent: &str,
        instrument: &str,
        seq: u64,
        when: &str,
        backlog: u64,
        age: u64,
    ) -> Batch {
        Batch {
            envelopes: vec![Received {
                received_at: at(when),
                topic: format!("labhours/v1/{agent}/events"),
                message: Envelope {
                    v: SCHEMA_VERSION,
                    agent_id: agent.into(),
                    instrument_id: instrument.into(),
                    sent_at: at(when),
                    acked_through: seq - 1,
                    events: vec![Event {
                        seq,
                        at: at(when),
                        kind: EventKind::Heartbeat(Heartbeat {
                            uptime_s: 60,
                            backlog,
                            oldest_unacked_age_s: (backlog > 0).then_some(age),
                            clock: at(when),
                            version: "test".into(),
                        }),
                    }],
                }
                .into(),
            }],
            ..Batch::default()
        }
    }

    fn ms(s: &str) -> Ms {
        at(s).as_millisecond()
    }

    #[test]
    fn an_instrument_is_settled_through_its_last_empty_heartbeat_or_its_oldest_backlog() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut store = Store::open(dir.path(), Durability::Normal).expect("open");
        store
            .commit(&heartbeat("a-nmr", "nmr", 1, "2026-11-22T10:00:00Z", 0, 0))
            .expect("nmr");
        // 42 events waiting, the oldest for an hour.
        store
            .commit(&heartbeat(
                "a-ms",
                "ms",
                1,
                "2026-11-22T10:00:00Z",
                42,
                3600,
            ))
            .expect("ms");
        // The reconciler runs after commits; clear what the heartbeats marked.
        store
            .connection()
            .execute("DELETE FROM dirty", [])
            .expect("clear");
        let settled = per_instrument(store.connection()).expect("settled");
        assert_eq!(settled["nmr"], Some(ms("2026-11-22T10:00:00Z")));
        assert_eq!(settled["ms"], Some(ms("2026-11-22T09:00:00Z")));
        assert_eq!(
            overall(&settled, ["nmr", "ms", "never-reported"]),
            Some(ms("2026-11-22T09:00:00Z")),
            "an instrument without agents has nothing to wait for"
        );
        assert!(!provisional(&settled, "nmr", ms("2026-11-22T10:00:00Z")));
        assert!(provisional(&settled, "nmr", ms("2026-11-22T10:00:01Z")));
        assert!(provisional(&settled, "never-reported", 0));

        // A change to reconcile from 08:00 (a booking, a late file) pulls it back.
        mark_dirty(store.connection(), "nmr", ms("2026-11-22T08:00:00Z")).expect("mark");
        let settled = per_instrument(store.connection()).expect("settled");
        assert_eq!(settled["nmr"], Some(ms("2026-11-22T08:00:00Z")));
        let p = pending(store.connection(), ms("2026-11-23T09:00:00Z")).expect("pending");
        assert_eq!(
            p,
            Pending {
                instruments: 1,
                instrument_days: 2,
                since: Some(ms("2026-11-22T08:00:00Z")),
            }
        );
    }

    #[test]
    fn an_agent_without_a_heartbeat_has_settled_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path(), Durability::Normal).expect("open");
        store
            .connection()
            .execute(
                "INSERT INTO agents (agent_id, instrument_id, first_seen_ms, last_seen_ms)
                 VALUES ('a', 'nmr', 0, 0)",
                [],
            )
            .expect("agent");
        let settled = per_instrument(store.connection()).expect("settled");
        assert_eq!(settled["nmr"], None);
        assert_eq!(overall(&settled, ["nmr"]), None);
    }
}
