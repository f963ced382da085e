//! What is still to be sent, read from the collector's own store, and the
//! durable cursors that say what was (migration `influx_export`).
//!
//! - Events, per agent, in seq order, up to the agent's `committed_through`
//!   (so a hole that a resend fills later is never skipped): the cursor
//!   `influx_cursor.exported_through` moves only after the server took them.
//! - Verified days: every write of a `day_totals` row marks the day in
//!   `influx_days` (a trigger, created while the sink is on); a mark is
//!   cleared only if no newer write came in while it was being sent.

use std::collections::HashMap;

use labhours_shared::wire::{Event, EventKind};
use rusqlite::{Connection, params};

use super::line::{self, Point, Value};
use crate::registry::Registry;

/// Measurement names (docs/influxdb.md lists their tags and fields).
pub const POWER: &str = "labhours_power";
pub const STATE: &str = "labhours_state";
pub const RESULT_FILES: &str = "labhours_result_files";
pub const FAULTS: &str = "labhours_faults";
pub const DAILY: &str = "labhours_daily";

/// Every measurement with its fields (tags: `instrument`, `unit` and, for
/// events, `agent`; `state` on [`STATE`], `source` on [`FAULTS`]).
pub const SCHEMA: &[(&str, &[&str])] = &[
    (
        POWER,
        &[
            "energy_wh",
            "samples",
            "failed_reads",
            "covered_s",
            "min_w",
            "avg_w",
            "max_w",
        ],
    ),
    (STATE, &["code"]),
    (RESULT_FILES, &["files", "size_bytes"]),
    (FAULTS, &["count", "message"]),
    (
        DAILY,
        &[
            "used_hours",
            "booked_hours",
            "booked_used_hours",
            "unbooked_hours",
            "external_hours",
            "fault_hours",
            "unknown_hours",
            "coverage",
            "no_show_count",
            "result_files",
            "energy_kwh",
        ],
    ),
];

/// Creates the trigger that marks written days, and on the first start
/// (no trigger yet) marks every stored day, so a sink switched on late, or
/// again, sends all verified days once.
pub fn prepare(conn: &Connection) -> rusqlite::Result<()> {
    let exists: bool = conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'trigger' AND name = 'day_totals_to_influx')",
        [],
        |r| r.get(0),
    )?;
    if !exists {
        conn.execute_batch(
            "BEGIN;
             CREATE TRIGGER day_totals_to_influx AFTER INSERT ON day_totals BEGIN
                 INSERT INTO influx_days (instrument_id, start_ms) VALUES (NEW.instrument_id, NEW.start_ms)
                 ON CONFLICT (instrument_id, start_ms) DO UPDATE SET version = version + 1;
             END;
             INSERT INTO influx_days (instrument_id, start_ms)
                 SELECT instrument_id, start_ms FROM day_totals WHERE true
                 ON CONFLICT (instrument_id, start_ms) DO UPDATE SET version = version + 1;
             COMMIT;",
        )?;
    }
    Ok(())
}

/// Removes the trigger when the sink is off, so days are not marked for
/// nobody; [`prepare`] marks them all again when it is switched back on.
pub fn unprepare(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute_batch("DROP TRIGGER IF EXISTS day_totals_to_influx; DELETE FROM influx_days;")
}

/// One batch: its body and what to record once the server took it.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Batch {
    /// Line protocol, one point a line.
    pub body: String,
    pub points: usize,
    /// Events read (some, like heartbeats, give no point).
    pub events: usize,
    /// agent → the last seq read.
    pub cursors: Vec<(String, i64)>,
    /// (instrument, day start, version) of the days read.
    pub days: Vec<(String, i64, i64)>,
    /// The instant of the oldest event read (for the lag).
    pub oldest_ms: Option<i64>,
}

impl Batch {
    pub fn is_empty(&self) -> bool {
        self.events == 0 && self.days.is_empty()
    }
}

/// Reads up to `budget` events and days not yet sent, oldest first per
/// agent, and writes their points.
pub fn next_batch(
    conn: &Connection,
    registry: &Registry,
    budget: usize,
) -> rusqlite::Result<Batch> {
    let mut batch = Batch::default();
    let behind: Vec<(String, i64, i64)> = conn
        .prepare_cached(
            "SELECT a.agent_id, COALESCE(c.exported_through, 0), a.committed_through
             FROM agents a LEFT JOIN influx_cursor c ON c.agent_id = a.agent_id
             WHERE a.committed_through > COALESCE(c.exported_through, 0)
             ORDER BY a.agent_id",
        )?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<rusqlite::Result<_>>()?;
    // A share of the budget each, so one agent's long backlog does not hold
    // the others back.
    let share = (budget / behind.len().max(1)).max(100);
    let mut units: HashMap<String, Option<String>> = HashMap::new();
    let mut events = conn.prepare_cached(
        "SELECT seq, instrument_id, payload FROM events
         WHERE agent_id = ?1 AND seq > ?2 AND seq <= ?3 ORDER BY seq LIMIT ?4",
    )?;
    for (agent, from, through) in behind {
        if batch.events >= budget {
            break;
        }
        let take = share.min(budget - batch.events) as i64;
        let mut rows = events.query(params![agent, from, through, take])?;
        let mut last = None;
        let before = batch.events;
        while let Some(row) = rows.next()? {
            let (seq, instrument, payload): (i64, String, String) =
                (row.get(0)?, row.get(1)?, row.get(2)?);
            last = Some(seq);
            batch.events += 1;
            // Stored by ingest from a decoded envelope; unreadable only if
            // written by a newer version: skipped, the cursor moves on.
            let Ok(event) = serde_json::from_str::<Event>(&payload) else {
                tracing::warn!(
                    agent,
                    seq,
                    "influxdb: an event this version cannot read; skipped"
                );
                continue;
            };
            let unit = units
                .entry(instrument.clone())
                .or_insert_with(|| registry.instrument(&instrument).unit.clone());
            let at = event.at.as_millisecond();
            batch.oldest_ms = Some(batch.oldest_ms.map_or(at, |o: i64| o.min(at)));
            if event_point(
                &mut batch.body,
                &event,
                &instrument,
                unit.as_deref(),
                &agent,
            ) {
                batch.points += 1;
            }
        }
        drop(rows);
        // Fewer than asked: everything up to `through` was read (seqs closed
        // by a `dropped` notice have no row).
        let read = batch.events - before;
        let reached = if (read as i64) < take {
            Some(through)
        } else {
            last
        };
        if let Some(seq) = reached {
            batch.cursors.push((agent, seq));
        }
    }
    // Days once the events are caught up (they are derived from them).
    let days_budget = budget.saturating_sub(batch.events);
    if days_budget == 0 {
        return Ok(batch);
    }
    let mut days = conn.prepare_cached(
        "SELECT d.instrument_id, d.start_ms, d.version, t.end_ms, t.used_ms, t.booked_ms,
                t.booked_used_ms, t.unbooked_ms, t.external_ms, t.fault_ms, t.unknown_ms,
                t.no_show_count, t.result_files, t.energy_wh
         FROM influx_days d LEFT JOIN day_totals t
              ON t.instrument_id = d.instrument_id AND t.start_ms = d.start_ms
         ORDER BY d.start_ms, d.instrument_id LIMIT ?1",
    )?;
    let mut rows = days.query([days_budget as i64])?;
    while let Some(row) = rows.next()? {
        let (instrument, start, version): (String, i64, i64) =
            (row.get(0)?, row.get(1)?, row.get(2)?);
        batch.days.push((instrument.clone(), start, version));
        // The day's row is gone (a rebuild in progress): only the mark is cleared.
        let Some(end) = row.get::<_, Option<i64>>(3)? else {
            continue;
        };
        let ms = |i: usize| -> rusqlite::Result<i64> { row.get::<_, i64>(i) };
        let hours = |v: i64| v as f64 / 3_600_000.0;
        let len = (end - start).max(1);
        let unit = units
            .entry(instrument.clone())
            .or_insert_with(|| registry.instrument(&instrument).unit.clone());
        let energy: Option<f64> = row.get(13)?;
        let mut fields = vec![
            ("used_hours", Value::Float(hours(ms(4)?))),
            ("booked_hours", Value::Float(hours(ms(5)?))),
            ("booked_used_hours", Value::Float(hours(ms(6)?))),
            ("unbooked_hours", Value::Float(hours(ms(7)?))),
            ("external_hours", Value::Float(hours(ms(8)?))),
            ("fault_hours", Value::Float(hours(ms(9)?))),
            ("unknown_hours", Value::Float(hours(ms(10)?))),
            ("coverage", Value::Float(1.0 - ms(10)? as f64 / len as f64)),
            ("no_show_count", Value::Int(ms(11)?)),
            ("result_files", Value::Int(ms(12)?)),
        ];
        if let Some(wh) = energy {
            fields.push(("energy_kwh", Value::Float(wh / 1000.0)));
        }
        let point = Point {
            measurement: DAILY,
            tags: vec![
                ("instrument", &instrument),
                ("unit", unit.as_deref().unwrap_or("")),
            ],
            fields,
            time_ms: start,
        };
        if line::write(&mut batch.body, &point) {
            batch.points += 1;
        }
    }
    Ok(batch)
}

/// Writes an event's point, if its kind has one.
fn event_point(
    out: &mut String,
    event: &Event,
    instrument: &str,
    unit: Option<&str>,
    agent: &str,
) -> bool {
    let tags = |extra: Option<(&'static str, &'static str)>| {
        let mut tags = vec![
            ("instrument", instrument),
            ("unit", unit.unwrap_or("")),
            ("agent", agent),
        ];
        tags.extend(extra);
        tags
    };
    let at = event.at.as_millisecond();
    let point = match &event.kind {
        EventKind::Summary(s) => {
            let mut fields = vec![
                ("energy_wh", Value::Float(s.energy_wh)),
                ("samples", Value::Int(i64::from(s.samples))),
                ("failed_reads", Value::Int(i64::from(s.failed_reads))),
                ("covered_s", Value::Float(s.covered_s)),
            ];
            for (name, value) in [("min_w", s.min_w), ("avg_w", s.avg_w), ("max_w", s.max_w)] {
                fields.extend(value.map(|v| (name, Value::Float(v))));
            }
            Point {
                measurement: POWER,
                tags: tags(None),
                fields,
                time_ms: at,
            }
        }
        EventKind::Transition { to, .. } => Point {
            measurement: STATE,
            tags: tags(Some(("state", to.as_str()))),
            fields: vec![("code", Value::Int(to.index() as i64))],
            time_ms: at,
        },
        EventKind::ResultFile(f) => Point {
            measurement: RESULT_FILES,
            tags: tags(None),
            fields: vec![
                ("files", Value::Int(1)),
                (
                    "size_bytes",
                    Value::Int(i64::try_from(f.size_bytes).unwrap_or(i64::MAX)),
                ),
            ],
            time_ms: f.mtime.as_millisecond(),
        },
        EventKind::Fault { source, message } => {
            return line::write(
                out,
                &Point {
                    measurement: FAULTS,
                    tags: vec![
                        ("instrument", instrument),
                        ("unit", unit.unwrap_or("")),
                        ("agent", agent),
                        ("source", source),
                    ],
                    fields: vec![("count", Value::Int(1)), ("message", Value::Str(message))],
                    time_ms: at,
                },
            );
        }
        EventKind::Heartbeat(_) | EventKind::Dropped { .. } => return false,
    };
    line::write(out, &point)
}

/// Records what the server took (or what was set aside): cursors move, and
/// day marks not re-marked since they were read are cleared.
pub fn commit(conn: &mut Connection, batch: &Batch) -> rusqlite::Result<()> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    {
        let mut cursor = tx.prepare_cached(
            "INSERT INTO influx_cursor (agent_id, exported_through) VALUES (?1, ?2)
             ON CONFLICT (agent_id) DO UPDATE SET exported_through = excluded.exported_through",
        )?;
        for (agent, seq) in &batch.cursors {
            cursor.execute(params![agent, seq])?;
        }
        let mut day = tx.prepare_cached(
            "DELETE FROM influx_days WHERE instrument_id = ?1 AND start_ms = ?2 AND version = ?3",
        )?;
        for (instrument, start, version) in &batch.days {
            day.execute(params![instrument, start, version])?;
        }
    }
    tx.commit()
}

/// Keeps a batch the server refused as malformed (400/422), with its
/// message, for an operator; the first 64 KiB of the body.
pub fn set_aside(
    conn: &Connection,
    at_ms: i64,
    status: u16,
    message: &str,
    batch: &Batch,
) -> rusqlite::Result<()> {
    let body = batch.body.as_bytes();
    conn.execute(
        "INSERT INTO influx_rejected (at_ms, status, message, points, body, body_len)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![
            at_ms,
            status,
            message,
            batch.points as i64,
            &body[..body.len().min(crate::quarantine::KEEP_BYTES)],
            body.len() as i64,
        ],
    )?;
    Ok(())
}

/// Events committed but not yet sent, over every agent.
pub fn pending_events(conn: &Connection) -> rusqlite::Result<u64> {
    conn.query_row(
        "SELECT COALESCE(SUM(a.committed_through - COALESCE(c.exported_through, 0)), 0)
         FROM agents a LEFT JOIN influx_cursor c ON c.agent_id = a.agent_id
         WHERE a.committed_through > COALESCE(c.exported_through, 0)",
        [],
        |r| r.get::<_, i64>(0),
    )
    .map(|n| n.max(0) as u64)
}
