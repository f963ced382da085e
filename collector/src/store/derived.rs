//! Tables derived from events in the same transaction that stores them
//! (migration 0003): the state timeline (`transitions`), `result_files`,
//! `energy_hours` (with `energy_coverage`), `alive_spans`, and the `dirty` marks that tell the
//! reconciler which instruments changed from when. Reconciliation reads
//! these small tables instead of parsing every event's JSON again.
//!
//! Only newly stored events are derived, so resends change nothing.
//! [`rebuild`] derives everything again from `events`.

use std::collections::HashMap;

use labhours_shared::wire::{Event, EventKind};
use rusqlite::{Connection, params};

/// Signs of life less than this far apart join one alive span. An
/// instrument's `silence_after_s` (at least this long) decides which of
/// the remaining gaps are `unknown`.
pub const SPAN_JOIN_MS: i64 = 120_000;

const HOUR_MS: i64 = 3_600_000;

/// Collects what one commit derives; [`Deriver::finish`] writes spans and marks.
#[derive(Debug, Default)]
pub struct Deriver {
    /// Signs of life per instrument.
    alive: HashMap<String, Vec<i64>>,
}

impl Deriver {
    /// Derives rows from an event stored for the first time.
    pub fn event(
        &mut self,
        conn: &Connection,
        instrument_id: &str,
        agent_id: &str,
        event: &Event,
    ) -> rusqlite::Result<()> {
        let at = event.at.as_millisecond();
        let seq = i64::try_from(event.seq).unwrap_or(i64::MAX);
        let alive = self.alive.entry(instrument_id.to_owned()).or_default();
        alive.push(at);
        match &event.kind {
            EventKind::Transition { to, .. } => {
                conn.prepare_cached(
                    "INSERT OR IGNORE INTO transitions (instrument_id, at_ms, agent_id, seq, state)
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                )?
                .execute(params![
                    instrument_id,
                    at,
                    agent_id,
                    seq,
                    to.as_str()
                ])?;
            }
            EventKind::ResultFile(f) => {
                conn.prepare_cached(
                    "INSERT OR IGNORE INTO result_files
                     (instrument_id, mtime_ms, agent_id, seq, path, size_bytes, sha256, sample_id)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                )?
                .execute(params![
                    instrument_id,
                    f.mtime.as_millisecond(),
                    agent_id,
                    seq,
                    f.path,
                    i64::try_from(f.size_bytes).unwrap_or(i64::MAX),
                    f.sha256,
                    f.sample_id,
                ])?;
                // A file reported late (an agent that was down, a backfill)
                // is evidence of a run before the event's own instant.
                mark_dirty(conn, instrument_id, f.mtime.as_millisecond().min(at))?;
            }
            EventKind::Summary(s) => {
                let end = s.end.as_millisecond();
                alive.push(end);
                // Only the part of the interval whose energy is not counted
                // yet: a replayed or repeated log under new seqs adds nothing.
                let fresh = if end > at {
                    ENERGY_COVERAGE.uncovered_share(conn, instrument_id, at, end)?
                } else {
                    1.0
                };
                if s.energy_wh > 0.0 && s.energy_wh.is_finite() && fresh > 0.0 {
                    conn.prepare_cached(
                        "INSERT INTO energy_hours (instrument_id, hour_ms, wh) VALUES (?1, ?2, ?3)
                         ON CONFLICT (instrument_id, hour_ms) DO UPDATE SET wh = wh + excluded.wh",
                    )?
                    .execute(params![
                        instrument_id,
                        at.div_euclid(HOUR_MS) * HOUR_MS,
                        s.energy_wh * fresh
                    ])?;
                }
                if end > at {
                    ENERGY_COVERAGE.merge(conn, instrument_id, at, end)?;
                }
            }
            EventKind::Fault { .. } | EventKind::Heartbeat(_) | EventKind::Dropped { .. } => {}
        }
        Ok(())
    }

    /// Merges the signs of life into `alive_spans` and marks each touched
    /// instrument dirty from its earliest new instant.
    pub fn finish(self, conn: &Connection) -> rusqlite::Result<()> {
        for (instrument_id, mut instants) in self.alive {
            instants.sort_unstable();
            mark_dirty(conn, &instrument_id, instants[0])?;
            for (start, end) in join(&instants) {
                ALIVE_SPANS.merge(conn, &instrument_id, start, end)?;
            }
        }
        Ok(())
    }
}

/// Sorted instants as spans joined while less than [`SPAN_JOIN_MS`] apart.
fn join(sorted: &[i64]) -> Vec<(i64, i64)> {
    let mut spans: Vec<(i64, i64)> = Vec::new();
    for &t in sorted {
        match spans.last_mut() {
            Some((_, end)) if t - *end < SPAN_JOIN_MS => *end = (*end).max(t),
            _ => spans.push((t, t)),
        }
    }
    spans
}

/// A table of disjoint spans per instrument, sorted by start, that absorbs
/// every stored span a new one comes closer than `join_ms` to.
struct SpanTable {
    /// Spans starting before `?2`, latest first.
    select: &'static str,
    delete: &'static str,
    insert: &'static str,
    /// Sets the end (`?3`) of the span starting at `?2`.
    extend: &'static str,
    join_ms: i64,
}

/// The statements of a span table named `$table` (columns
/// `instrument_id, start_ms, end_ms`), built at compile time.
macro_rules! span_table {
    ($table:literal, $join_ms:expr) => {
        SpanTable {
            select: concat!(
                "SELECT start_ms, end_ms FROM ",
                $table,
                " WHERE instrument_id = ?1 AND start_ms < ?2 ORDER BY start_ms DESC"
            ),
            delete: concat!(
                "DELETE FROM ",
                $table,
                " WHERE instrument_id = ?1 AND start_ms = ?2"
            ),
            insert: concat!(
                "INSERT INTO ",
                $table,
                " (instrument_id, start_ms, end_ms) VALUES (?1, ?2, ?3)"
            ),
            extend: concat!(
                "UPDATE ",
                $table,
                " SET end_ms = ?3 WHERE instrument_id = ?1 AND start_ms = ?2"
            ),
            join_ms: $join_ms,
        }
    };
}

/// Signs of life (instants, joined while less than [`SPAN_JOIN_MS`] apart).
const ALIVE_SPANS: SpanTable = span_table!("alive_spans", SPAN_JOIN_MS);

/// Time whose energy is counted (`[start, end)`, merged where they touch).
const ENERGY_COVERAGE: SpanTable = span_table!("energy_coverage", 1);

impl SpanTable {
    /// Calls `each` with the stored spans that come closer than `join_ms`
    /// to `[start, end]`, latest first. Spans are disjoint and sorted, so
    /// their ends are too: the walk back stops at the first that ends too early.
    fn near(
        &self,
        conn: &Connection,
        instrument_id: &str,
        start: i64,
        end: i64,
        mut each: impl FnMut(i64, i64),
    ) -> rusqlite::Result<()> {
        let mut stmt = conn.prepare_cached(self.select)?;
        let mut rows = stmt.query(params![instrument_id, end + self.join_ms])?;
        while let Some(row) = rows.next()? {
            let (s, e): (i64, i64) = (row.get(0)?, row.get(1)?);
            if e <= start - self.join_ms {
                break;
            }
            each(s, e);
        }
        Ok(())
    }

    /// Inserts `[start, end]`, absorbing every stored span it joins.
    fn merge(
        &self,
        conn: &Connection,
        instrument_id: &str,
        start: i64,
        end: i64,
    ) -> rusqlite::Result<()> {
        let (mut lo, mut hi) = (start, end);
        let mut absorbed = Vec::new();
        self.near(conn, instrument_id, start, end, |s, e| {
            lo = lo.min(s);
            hi = hi.max(e);
            absorbed.push(s);
        })?;
        // The usual case, live data: the new span continues the latest one.
        if absorbed == [lo] {
            conn.prepare_cached(self.extend)?
                .execute(params![instrument_id, lo, hi])?;
            return Ok(());
        }
        let mut delete = conn.prepare_cached(self.delete)?;
        for s in absorbed {
            delete.execute(params![instrument_id, s])?;
        }
        conn.prepare_cached(self.insert)?
            .execute(params![instrument_id, lo, hi])?;
        Ok(())
    }

    /// The share (0 to 1) of `[start, end)` (`end > start`) no stored span covers.
    fn uncovered_share(
        &self,
        conn: &Connection,
        instrument_id: &str,
        start: i64,
        end: i64,
    ) -> rusqlite::Result<f64> {
        let mut covered = 0;
        self.near(conn, instrument_id, start, end, |s, e| {
            covered += (e.min(end) - s.max(start)).max(0);
        })?;
        Ok((end - start - covered) as f64 / (end - start) as f64)
    }
}

/// Marks `instrument_id`'s results stale from `from_ms` on (the earliest mark wins).
pub fn mark_dirty(conn: &Connection, instrument_id: &str, from_ms: i64) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO dirty (instrument_id, from_ms) VALUES (?1, ?2)
         ON CONFLICT (instrument_id) DO UPDATE SET from_ms = min(from_ms, excluded.from_ms),
             version = version + 1",
    )?
    .execute(params![instrument_id, from_ms])?;
    Ok(())
}

/// Derives every table again from `events` (in one transaction) and marks
/// every instrument dirty from its first event. Returns the events read.
pub fn rebuild(conn: &mut Connection) -> rusqlite::Result<u64> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    tx.execute_batch(
        "DELETE FROM transitions; DELETE FROM result_files; DELETE FROM energy_hours;
         DELETE FROM energy_coverage; DELETE FROM alive_spans;",
    )?;
    let mut count = 0;
    {
        let mut stmt = tx.prepare(
            "SELECT instrument_id, agent_id, payload FROM events
             ORDER BY instrument_id, at_ms, received_at_ms, agent_id, seq",
        )?;
        let mut rows = stmt.query([])?;
        let mut deriver = Deriver::default();
        let mut current: Option<String> = None;
        while let Some(row) = rows.next()? {
            let (instrument_id, agent_id, payload): (String, String, String) =
                (row.get(0)?, row.get(1)?, row.get(2)?);
            // Flush per instrument so memory stays bounded by one instrument.
            if current.as_deref() != Some(&instrument_id) {
                std::mem::take(&mut deriver).finish(&tx)?;
                current = Some(instrument_id.clone());
            }
            let event: Event = serde_json::from_str(&payload).map_err(|e| {
                rusqlite::Error::FromSqlConversionFailure(
                    2,
                    rusqlite::types::Type::Text,
                    Box::new(e),
                )
            })?;
            deriver.event(&tx, &instrument_id, &agent_id, &event)?;
            count += 1;
        }
        deriver.finish(&tx)?;
    }
    tx.commit()?;
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instants_less_than_the_join_apart_make_one_span() {
        assert_eq!(
            join(&[0, 60_000, 179_999, 300_000, 300_000]),
            vec![(0, 179_999), (300_000, 300_000)]
        );
    }
}
