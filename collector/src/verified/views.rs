//! Booking outcomes (stored), and sessions, timelines and the instrument
//! list (reconciled or read on the spot).

use jiff::Timestamp;
use jiff::tz::TimeZone;
use labhours_shared::state::{State, StateRules};
use rusqlite::{Connection, OptionalExtension, params};

use super::hours::{resolve_range, select};
use super::materialize::{load, restart_point};
use super::query::{
    AgentView, BookingView, InstrumentRow, OutcomeRow, QueryError, Range, ResultFileView,
    SegmentRow, SessionRow, StatePiece, TimelineView,
};
use crate::reconcile::{Interval, Ms, Reconciliation};
use crate::registry::thresholds_check::{AppliedThresholds, differences};
use crate::registry::{Instrument, Registry};

/// Sessions over more than this many days need an instrument.
pub const MAX_FLEET_SESSION_DAYS: i64 = 31;

/// RFC 3339 in `zone`.
pub fn local(ms: Ms, zone: &TimeZone) -> String {
    Timestamp::from_millisecond(ms)
        .map(|t| {
            t.to_zoned(zone.clone())
                .strftime("%Y-%m-%dT%H:%M:%S%.f%:z")
                .to_string()
        })
        .unwrap_or_default()
}

/// The range in the instrument's zone, or the site's for the whole fleet.
fn range_for(
    registry: &Registry,
    range: &Range,
    instrument: Option<&Instrument>,
) -> Result<Interval, QueryError> {
    resolve_range(range, instrument.map_or(registry.site_zone(), |i| &i.zone))
}

/// Outcomes of the bookings that overlap `range` (start before its end,
/// end after its start): a booking that began before the range but runs
/// into it is there too.
pub fn outcomes(
    conn: &Connection,
    registry: &Registry,
    range: &Range,
    instrument: Option<&str>,
) -> Result<Vec<OutcomeRow>, QueryError> {
    let one = instrument
        .map(|id| select(conn, registry, Some(id), None).map(|mut v| v.remove(0)))
        .transpose()?;
    let within = range_for(registry, range, one.as_ref())?;
    outcomes_where(conn, registry, within, instrument, false)
}

/// Only the outcomes an admin should look at (no-show, instrument fault,
/// overrun) of the bookings overlapping `range`, every instrument.
/// Read instrument by instrument: each is one stretch of the primary key,
/// where the by-start index would need a lookup per booking.
pub fn exception_outcomes(
    conn: &Connection,
    registry: &Registry,
    range: &Range,
) -> Result<Vec<OutcomeRow>, QueryError> {
    let mut out = Vec::new();
    for inst in select(conn, registry, None, None)? {
        let within = resolve_range(range, &inst.zone)?;
        out.extend(outcomes_where(
            conn,
            registry,
            within,
            Some(&inst.id),
            true,
        )?);
    }
    Ok(out)
}

/// The longest booking stored (0 without any): a booking overlapping a
/// range starts at most this long before it. One lookup in
/// `bookings_by_length`.
fn longest_booking(conn: &Connection) -> rusqlite::Result<Ms> {
    conn.prepare_cached("SELECT COALESCE(MAX(end_ms - start_ms), 0) FROM bookings")?
        .query_row([], |r| r.get(0))
}

/// The first start a booking overlapping `within` can have (exclusive).
fn earliest_start(conn: &Connection, within: Interval) -> rusqlite::Result<Ms> {
    Ok(within.start.saturating_sub(longest_booking(conn)?))
}

/// Every reconciled booking that is not cancelled and overlaps `range`,
/// as a slot (finding double bookings needs no more), instrument by
/// instrument from the outcomes' primary key (`booked_s` is the slot's
/// length, so `bookings` is not read).
pub fn booking_slots(
    conn: &Connection,
    registry: &Registry,
    range: &Range,
) -> Result<Vec<super::query::BookingSlot>, QueryError> {
    let mut out = Vec::new();
    let mut stmt = conn.prepare_cached(
        "SELECT booking_id, start_ms, booked_s FROM booking_outcomes
         WHERE instrument_id = ?1 AND start_ms > ?4 AND start_ms < ?3
           AND start_ms + booked_s * 1000 > ?2 AND outcome != 'cancelled'
         ORDER BY start_ms, booking_id",
    )?;
    for inst in select(conn, registry, None, None)? {
        let within = resolve_range(range, &inst.zone)?;
        let after = earliest_start(conn, within)?;
        let rows = stmt.query_map(params![inst.id, within.start, within.end, after], |r| {
            let start_ms: Ms = r.get(1)?;
            let booked_s: f64 = r.get(2)?;
            Ok(super::query::BookingSlot {
                instrument_id: inst.id.clone(),
                booking_id: r.get(0)?,
                start_ms,
                end_ms: start_ms + (booked_s * 1000.0).round() as Ms,
            })
        })?;
        for row in rows {
            out.push(row?);
        }
    }
    Ok(out)
}

/// Outcomes of bookings overlapping `within` (of one instrument or all),
/// all of them or only those worth a look. The keys read are the starts
/// from [`earliest_start`] to the range's end; the end is checked on the
/// booking.
fn outcomes_where(
    conn: &Connection,
    registry: &Registry,
    within: Interval,
    instrument: Option<&str>,
    exceptions_only: bool,
) -> Result<Vec<OutcomeRow>, QueryError> {
    // Two statements, so that one instrument's bookings come from the
    // primary key (instrument_id, start_ms, …) and the fleet's from the
    // by-start index (an `?3 IS NULL OR` would make SQLite scan the range
    // of every instrument).
    const COLUMNS: &str = "SELECT o.booking_id, o.instrument_id, b.user, b.group_name,
                b.usage_type, b.start_ms, b.end_ms, o.outcome, o.flags, o.booked_s, o.used_s,
                o.early_s, o.overrun_s, o.first_use_ms, o.last_use_ms, o.unknown_s, o.fault_s,
                o.sessions, o.result_files, o.overlapping_bookings, o.usage_taken_by,
                o.took_usage_from, COALESCE(o.corrected_used_s, o.used_s)
         FROM booking_outcomes o JOIN bookings b ON b.booking_id = o.booking_id";
    const OVERLAP: &str = "o.start_ms > ?4 AND o.start_ms < ?2 AND b.end_ms > ?1";
    let mut stmt = match instrument {
        Some(_) if exceptions_only => conn.prepare_cached(&format!(
            "{COLUMNS} WHERE o.instrument_id = ?3 AND {OVERLAP}
               AND (o.outcome IN ('no_show', 'instrument_fault') OR o.flags LIKE '%overrun%')
             ORDER BY o.start_ms, o.booking_id"
        ))?,
        Some(_) => conn.prepare_cached(&format!(
            "{COLUMNS} WHERE o.instrument_id = ?3 AND {OVERLAP}
             ORDER BY o.start_ms, o.booking_id"
        ))?,
        None => conn.prepare_cached(&format!(
            "{COLUMNS} WHERE {OVERLAP} AND ?3 IS NULL
             ORDER BY o.start_ms, o.booking_id"
        ))?,
    };
    let after = earliest_start(conn, within)?;
    let rows = stmt.query_map(params![within.start, within.end, instrument, after], |r| {
        let instrument_id: String = r.get(1)?;
        let zone = registry.instrument(&instrument_id).zone;
        let flags: String = r.get(8)?;
        let list = |s: String| serde_json::from_str::<Vec<String>>(&s).unwrap_or_default();
        Ok(OutcomeRow {
            booking_id: r.get(0)?,
            user: r.get(2)?,
            group: r.get(3)?,
            usage_type: r.get(4)?,
            start: local(r.get(5)?, &zone),
            end: local(r.get(6)?, &zone),
            outcome: r.get(7)?,
            flags: flags
                .split(',')
                .filter(|f| !f.is_empty())
                .map(str::to_owned)
                .collect(),
            booked_s: r.get(9)?,
            used_s: r.get(10)?,
            early_s: r.get(11)?,
            overrun_s: r.get(12)?,
            first_use: r.get::<_, Option<Ms>>(13)?.map(|t| local(t, &zone)),
            last_use: r.get::<_, Option<Ms>>(14)?.map(|t| local(t, &zone)),
            unknown_s: r.get(15)?,
            fault_s: r.get(16)?,
            sessions: list(r.get(17)?),
            result_files: list(r.get(18)?),
            overlapping_bookings: list(r.get(19)?),
            usage_taken_by: list(r.get(20)?),
            took_usage_from: list(r.get(21)?),
            corrected_used_s: r.get(22)?,
            instrument_id,
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Reconciles `inst` around `within` on the spot.
fn reconciled(
    conn: &Connection,
    inst: &Instrument,
    within: Interval,
) -> rusqlite::Result<(super::materialize::Loaded, Reconciliation)> {
    let restart = restart_point(conn, inst, within.start)?;
    let loaded = load(conn, inst, restart)?;
    let rec = loaded.reconcile(inst);
    Ok((loaded, rec))
}

fn session_rows(rec: &Reconciliation, inst: &Instrument, within: Interval) -> Vec<SessionRow> {
    rec.sessions
        .iter()
        .filter(|s| s.interval.overlap(&within) > 0)
        .map(|s| SessionRow {
            session_id: s.id.clone(),
            instrument_id: inst.id.clone(),
            start: local(s.interval.start, &inst.zone),
            end: local(s.interval.end, &inst.zone),
            duration_s: s.interval.len() as f64 / 1000.0,
            dropped: s.dropped,
            result_files: s.result_files.clone(),
            segments: rec
                .segments
                .iter()
                .filter(|g| g.session_id == s.id)
                .map(|g| SegmentRow {
                    start: local(g.interval.start, &inst.zone),
                    end: local(g.interval.end, &inst.zone),
                    booking_id: g.booking_id.clone(),
                })
                .collect(),
        })
        .collect()
}

/// Sessions overlapping `range`, reconciled on the spot.
pub fn sessions(
    conn: &Connection,
    registry: &Registry,
    range: &Range,
    instrument: Option<&str>,
) -> Result<Vec<SessionRow>, QueryError> {
    let instruments = select(conn, registry, instrument, None)?;
    let mut out = Vec::new();
    for inst in &instruments {
        let within = resolve_range(range, &inst.zone)?;
        if instrument.is_none() && within.len() > MAX_FLEET_SESSION_DAYS * 86_400_000 {
            return Err(QueryError::BadParameter {
                parameter: "to",
                message: format!(
                    "sessions of every instrument are served for at most \
                     {MAX_FLEET_SESSION_DAYS} days; give an instrument or a shorter range"
                ),
            });
        }
        let (_, rec) = reconciled(conn, inst, within)?;
        out.extend(session_rows(&rec, inst, within));
    }
    Ok(out)
}

/// States, sessions, bookings and result files of one instrument in `range`.
pub fn timeline(
    conn: &Connection,
    registry: &Registry,
    instrument: &str,
    range: &Range,
) -> Result<TimelineView, QueryError> {
    let inst = select(conn, registry, Some(instrument), None)?.remove(0);
    let within = resolve_range(range, &inst.zone)?;
    let (loaded, rec) = reconciled(conn, &inst, within)?;
    let zone = &inst.zone;
    let mut states: Vec<StatePiece> = Vec::new();
    let mut cursor = within.start;
    for (piece, state) in loaded.timeline.pieces() {
        let Some(part) = piece.intersect(&within) else {
            continue;
        };
        if part.start > cursor {
            states.push(StatePiece {
                start: local(cursor, zone),
                end: local(part.start, zone),
                state: State::Unknown,
            });
        }
        states.push(StatePiece {
            start: local(part.start, zone),
            end: local(part.end, zone),
            state,
        });
        cursor = part.end;
    }
    if cursor < within.end {
        states.push(StatePiece {
            start: local(cursor, zone),
            end: local(within.end, zone),
            state: State::Unknown,
        });
    }
    let mut bookings: Vec<&crate::reconcile::Booking> = loaded
        .bookings
        .iter()
        .filter(|b| b.slot().overlap(&within) > 0)
        .collect();
    bookings.sort_by(|a, b| (a.start, &a.booking_id).cmp(&(b.start, &b.booking_id)));
    let result_files = conn
        .prepare_cached(
            "SELECT agent_id, seq, path, mtime_ms, size_bytes, sha256, sample_id FROM result_files
             WHERE instrument_id = ?1 AND mtime_ms >= ?2 AND mtime_ms < ?3
             ORDER BY mtime_ms, agent_id, seq",
        )?
        .query_map(params![inst.id, within.start, within.end], |r| {
            Ok(ResultFileView {
                id: format!("{}:{}", r.get::<_, String>(0)?, r.get::<_, i64>(1)?),
                path: r.get(2)?,
                mtime: local(r.get(3)?, zone),
                size_bytes: r.get::<_, i64>(4)?.max(0) as u64,
                sha256: r.get(5)?,
                sample_id: r.get(6)?,
            })
        })?
        .collect::<rusqlite::Result<_>>()?;
    Ok(TimelineView {
        instrument_id: inst.id.clone(),
        from: local(within.start, zone),
        to: local(within.end, zone),
        states,
        sessions: session_rows(&rec, &inst, within),
        bookings: bookings
            .into_iter()
            .map(|b| BookingView {
                booking_id: b.booking_id.clone(),
                user: b.user.clone(),
                group: b.group.clone(),
                usage_type: b.usage_type.as_str().to_owned(),
                start: local(b.start, zone),
                end: local(b.end, zone),
                status: b.status.as_str().to_owned(),
            })
            .collect(),
        result_files,
    })
}

/// Every instrument with its latest state and its agents.
pub fn instruments(
    conn: &Connection,
    registry: &Registry,
    now: Timestamp,
) -> Result<Vec<InstrumentRow>, QueryError> {
    let now = now.as_millisecond();
    // Every agent in one read, by instrument (one query per instrument
    // would be thousands at fleet scale).
    let mut agents_of: std::collections::HashMap<String, Vec<AgentView>> =
        std::collections::HashMap::new();
    {
        let mut stmt = conn.prepare_cached(
            "SELECT instrument_id, agent_id, presence, last_seen_ms, backlog, clock_skew_ms, version,
                    state_rules,
                    (SELECT k.key_id FROM agent_keys k
                     WHERE k.agent_id = agents.agent_id AND k.revoked_at_ms IS NULL
                     ORDER BY k.enrolled_at_ms DESC LIMIT 1)
             FROM agents WHERE instrument_id IS NOT NULL ORDER BY instrument_id, agent_id",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((
                (
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, Option<String>>(2)?,
                    r.get::<_, Option<Ms>>(3)?,
                ),
                (
                    r.get::<_, Option<i64>>(4)?,
                    r.get::<_, Option<i64>>(5)?,
                    r.get::<_, Option<String>>(6)?,
                    r.get::<_, Option<String>>(7)?,
                ),
                r.get::<_, Option<String>>(8)?,
            ))
        })?;
        for row in rows {
            let (
                (instrument_id, agent_id, presence, last_seen),
                (backlog, skew, version, rules),
                signing_key,
            ) = row?;
            let inst = registry.instrument(&instrument_id);
            // Stored by this collector from a decoded status: unreadable only
            // if written by a future version, then treated as not reported.
            let applied: Option<AppliedThresholds> = rules
                .and_then(|json| serde_json::from_str::<StateRules>(&json).ok())
                .map(|rules| (&rules).into());
            let threshold_mismatch = match (&inst.thresholds, &applied) {
                (Some(expected), Some(applied)) => differences(expected, applied),
                _ => Vec::new(),
            };
            agents_of.entry(instrument_id).or_default().push(AgentView {
                agent_id,
                online: presence.as_deref() == Some("online"),
                last_seen: last_seen.map(|t| local(t, &inst.zone)),
                backlog: backlog.map(|b| b.max(0) as u64),
                clock_skew_ms: skew,
                version,
                applied_thresholds: applied,
                registry_thresholds: inst
                    .thresholds
                    .as_ref()
                    .map(|t| (&t.to_state_rules()).into()),
                threshold_mismatch,
                signing_key,
            });
        }
    }
    let mut out = Vec::new();
    for inst in super::hours::select_measured(conn, registry, None, None)? {
        let last: Option<(Ms, String)> = conn
            .prepare_cached(
                "SELECT at_ms, state FROM transitions WHERE instrument_id = ?1
                 ORDER BY at_ms DESC, agent_id DESC, seq DESC LIMIT 1",
            )?
            .query_row([&inst.id], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        let alive_until: Option<Ms> = conn
            .prepare_cached(
                "SELECT end_ms FROM alive_spans WHERE instrument_id = ?1
                 ORDER BY start_ms DESC LIMIT 1",
            )?
            .query_row([&inst.id], |r| r.get(0))
            .optional()?;
        let silence = crate::reconcile::secs(inst.rules.silence_after_s);
        let silent_since = alive_until.filter(|&t| now - t >= silence);
        let (state, since) = match (last, silent_since) {
            (_, Some(t)) => (State::Unknown, Some(t)),
            (Some((at, s)), None) => (super::materialize::parse_state(&s), Some(at)),
            (None, None) => (State::Unknown, None),
        };
        let agents = agents_of.remove(&inst.id).unwrap_or_default();
        out.push(InstrumentRow {
            agent_online: agents.iter().any(|a| a.online),
            since: since.map(|t| local(t, &inst.zone)),
            state,
            agents,
            instrument_id: inst.id.clone(),
            name: inst.name.clone(),
            unit: inst.unit.clone(),
            time_zone: inst.time_zone.clone(),
            configured: inst.configured,
        });
    }
    Ok(out)
}
