//! Keeps the verified results in the store up to date: per instrument, the
//! day and month totals and the booking outcomes (migration 0003).
//!
//! Incremental: new events, bookings and corrections mark an instrument
//! dirty from an instant (`dirty` table). [`catch_up`] reconciles each dirty
//! instrument again from the start of that instant's local day, moved
//! earlier while a usage session or a confirmed booking's window crosses
//! the start (so the cut never splits what the rules look at as a whole),
//! to the end of its data. Earlier days and other instruments are not
//! touched. A change of an instrument's policy (zone, usage source, rules)
//! re-reconciles it entirely; [`rebuild`] does so for every instrument.

use jiff::Timestamp;
use jiff::tz::TimeZone;
use labhours_shared::state::State;
use std::collections::HashMap;

use rusqlite::{Connection, OpenFlags, OptionalExtension, TransactionBehavior, params};

use crate::bookings::{BookingStatus, UsageType};
use crate::config::UsageSource;
use crate::reconcile::{
    self, Assignment, Booking, BookingReport, Disputes, InstrumentInputs, Interval, Move, Ms,
    PeriodTotals, PeriodUnit, Reconciliation, ResultFileRef, Timeline, TotalsInputs, apply_moves,
    secs, split_periods, totals_for_periods,
};
use crate::registry::{Instrument, Registry};

const DAY_MS: Ms = 86_400_000;

/// Context loaded before a restart point to see sessions crossing it.
const CONTEXT_MS: Ms = 2 * DAY_MS;

/// Everything reconciliation needs about one instrument from `from` on.
#[derive(Debug, Clone, Default)]
pub struct Loaded {
    pub timeline: Timeline,
    pub files: Vec<ResultFileRef>,
    pub bookings: Vec<Booking>,
    pub corrections: Vec<Assignment>,
    /// Move corrections, in the order they were made.
    pub moves: Vec<Move>,
    /// Energy in Wh per UTC hour.
    pub energy: Vec<(Ms, f64)>,
    /// The earliest instant any input has (None: nothing at all).
    pub first: Option<Ms>,
    /// The latest instant any input reaches.
    pub last: Option<Ms>,
    /// The instrument's first sign of life ever (not only in this window):
    /// bookings that ended before it were not monitored.
    pub evidence_from: Option<Ms>,
}

impl Loaded {
    /// Sessions, attribution and booking reports.
    pub fn reconcile(&self, inst: &Instrument) -> Reconciliation {
        let mut rec = reconcile::reconcile(&self.inputs(inst), &self.bookings);
        if !inst.monitored {
            // Before the totals read them: never a no-show.
            reconcile::not_monitored(&mut rec.reports, &self.bookings, self.evidence_from);
        }
        rec
    }

    fn inputs<'a>(&'a self, inst: &'a Instrument) -> InstrumentInputs<'a> {
        InstrumentInputs {
            instrument_id: &inst.id,
            usage_source: inst.usage_source,
            file_run_s: inst.file_run_s,
            timeline: &self.timeline,
            result_files: &self.files,
            rules: &inst.rules,
        }
    }

    /// The pieces of usage the move corrections moved, in order.
    pub fn moved(&self, rec: &Reconciliation) -> Vec<Move> {
        apply_moves(&rec.segments, &self.moves)
    }

    /// Totals of each period (sorted, disjoint); `open_ms` left None.
    /// `moved`: [`Loaded::moved`] of `rec`.
    pub fn totals(
        &self,
        inst: &Instrument,
        rec: &Reconciliation,
        moved: &[Move],
        periods: &[Interval],
    ) -> Vec<PeriodTotals> {
        totals_for_periods(
            &TotalsInputs {
                instrument_id: &inst.id,
                reconciliation: rec,
                bookings: &self.bookings,
                timeline: &self.timeline,
                result_files: &self.files,
                corrections: &self.corrections,
                moved,
                energy: &self.energy,
            },
            periods,
        )
    }
}

/// A stored state name (anything unreadable is `unknown`).
pub fn parse_state(name: &str) -> State {
    State::ALL
        .into_iter()
        .find(|s| s.as_str() == name)
        .unwrap_or(State::Unknown)
}

/// Loads `inst`'s inputs from `from` on (`Ms::MIN`: everything). The state
/// in force at `from` comes from the last transition before it.
pub fn load(conn: &Connection, inst: &Instrument, from: Ms) -> rusqlite::Result<Loaded> {
    let id = inst.id.as_str();
    let before: Option<(Ms, String)> = conn
        .prepare_cached(
            "SELECT at_ms, state FROM transitions WHERE instrument_id = ?1 AND at_ms < ?2
             ORDER BY at_ms DESC, agent_id DESC, seq DESC LIMIT 1",
        )?
        .query_row(params![id, from], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    let start = before.as_ref().map_or(from, |(at, _)| *at);
    let mut transitions: Vec<(Ms, State)> =
        before.iter().map(|(at, s)| (*at, parse_state(s))).collect();
    {
        let mut stmt = conn.prepare_cached(
            "SELECT at_ms, state FROM transitions WHERE instrument_id = ?1 AND at_ms >= ?2
             ORDER BY at_ms, agent_id, seq",
        )?;
        let rows = stmt.query_map(params![id, from], |r| {
            Ok((r.get::<_, Ms>(0)?, parse_state(&r.get::<_, String>(1)?)))
        })?;
        for row in rows {
            transitions.push(row?);
        }
    }
    let spans: Vec<(Ms, Ms)> = conn
        .prepare_cached(
            "SELECT start_ms, end_ms FROM alive_spans WHERE instrument_id = ?1 AND end_ms >= ?2
             ORDER BY start_ms",
        )?
        .query_map(params![id, start], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    let timeline = timeline(&transitions, &spans, secs(inst.rules.silence_after_s));

    let run_ms = match inst.usage_source {
        UsageSource::Files => secs(inst.file_run_s.unwrap_or(0)),
        UsageSource::State => 0,
    };
    let files: Vec<ResultFileRef> = conn
        .prepare_cached(
            "SELECT agent_id, seq, path, mtime_ms FROM result_files
             WHERE instrument_id = ?1 AND mtime_ms >= ?2 ORDER BY mtime_ms, agent_id, seq",
        )?
        .query_map(params![id, from], |r| {
            Ok(ResultFileRef {
                id: format!("{}:{}", r.get::<_, String>(0)?, r.get::<_, i64>(1)?),
                path: r.get(2)?,
                mtime: r.get(3)?,
            })
        })?
        .collect::<rusqlite::Result<_>>()?;

    let late = secs(inst.rules.late_grace_s);
    let bookings: Vec<Booking> = conn
        .prepare_cached(
            "SELECT booking_id, user, group_name, usage_type, start_ms, end_ms, status
             FROM bookings WHERE instrument_id = ?1 AND end_ms > ?2",
        )?
        .query_map(params![id, from.saturating_sub(late)], |r| {
            Ok(Booking {
                booking_id: r.get(0)?,
                instrument_id: id.to_owned(),
                user: r.get(1)?,
                group: r.get(2)?,
                usage_type: UsageType::parse(&r.get::<_, String>(3)?)
                    .unwrap_or(UsageType::Research),
                start: r.get(4)?,
                end: r.get(5)?,
                status: BookingStatus::parse(&r.get::<_, String>(6)?)
                    .unwrap_or(BookingStatus::Confirmed),
            })
        })?
        .collect::<rusqlite::Result<_>>()?;

    let corrections: Vec<Assignment> = conn
        .prepare_cached(
            "SELECT c.start_ms, c.end_ms, c.user, c.group_name, c.usage_type, c.booking_id,
                    b.usage_type
             FROM corrections c LEFT JOIN bookings b ON b.booking_id = c.booking_id
             WHERE c.instrument_id = ?1 AND c.end_ms > ?2 AND c.from_booking_id IS NULL
             ORDER BY c.id",
        )?
        .query_map(params![id, from], |r| {
            let user: Option<String> = r.get(2)?;
            let group: Option<String> = r.get(3)?;
            let own_type: Option<String> = r.get(4)?;
            let booking: Option<String> = r.get(5)?;
            let booking_type: Option<String> = r.get(6)?;
            let usage_type = own_type
                .or(booking_type)
                .as_deref()
                .and_then(UsageType::parse);
            Ok(Assignment {
                interval: Interval::new(r.get(0)?, r.get(1)?),
                usage_type,
                assigns: user.is_some()
                    || group.is_some()
                    || usage_type.is_some()
                    || booking.is_some(),
            })
        })?
        .collect::<rusqlite::Result<_>>()?;

    let moves: Vec<Move> = conn
        .prepare_cached(
            "SELECT start_ms, end_ms, from_booking_id, booking_id FROM corrections
             WHERE instrument_id = ?1 AND end_ms > ?2 AND from_booking_id IS NOT NULL
             ORDER BY id",
        )?
        .query_map(params![id, from], |r| {
            Ok(Move {
                interval: Interval::new(r.get(0)?, r.get(1)?),
                from: r.get(2)?,
                to: r.get::<_, Option<String>>(3)?.unwrap_or_default(),
            })
        })?
        .collect::<rusqlite::Result<_>>()?;

    let energy: Vec<(Ms, f64)> = conn
        .prepare_cached(
            "SELECT hour_ms, wh FROM energy_hours WHERE instrument_id = ?1 AND hour_ms >= ?2
             ORDER BY hour_ms",
        )?
        .query_map(params![id, from], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;

    let firsts = [
        timeline.transitions.first().map(|t| t.0),
        spans.first().map(|s| s.0),
        files.first().map(|f| f.mtime - run_ms),
        bookings.iter().map(|b| b.start).min(),
    ];
    let lasts = [
        (!spans.is_empty()).then_some(timeline.data_end),
        files.last().map(|f| f.mtime),
        bookings.iter().map(|b| b.end).max(),
    ];
    Ok(Loaded {
        timeline,
        files,
        bookings,
        corrections,
        moves,
        energy,
        first: firsts.into_iter().flatten().min(),
        evidence_from: conn
            .prepare_cached("SELECT MIN(start_ms) FROM alive_spans WHERE instrument_id = ?1")?
            .query_row([id], |r| r.get(0))?,
        last: lasts.into_iter().flatten().max(),
    })
}

/// The state timeline: the transitions, with `unknown` from the start of
/// every silence of at least `silence_ms` between alive spans until the next
/// transition (an agent always restarts in `unknown`); data ends with the
/// last alive span.
pub fn timeline(transitions: &[(Ms, State)], spans: &[(Ms, Ms)], silence_ms: Ms) -> Timeline {
    let gaps = spans
        .windows(2)
        .filter(|w| w[1].0 - w[0].1 >= silence_ms)
        .map(|w| w[0].1);
    let mut out: Vec<(Ms, State)> = transitions.to_vec();
    out.extend(gaps.map(|at| (at, State::Unknown)));
    // Stable: at one instant a transition sorts before the silence marked
    // there, so the silence (the last word) wins.
    out.sort_by_key(|&(at, _)| at);
    Timeline {
        transitions: out,
        data_end: spans.last().map_or(Ms::MIN, |s| s.1),
    }
}

/// The local midnight at or before `at`.
pub fn local_day_start(zone: &TimeZone, at: Ms) -> Ms {
    Timestamp::from_millisecond(at)
        .ok()
        .and_then(|t| t.to_zoned(zone.clone()).start_of_day().ok())
        .map_or(at, |z| z.timestamp().as_millisecond())
}

/// Where to start reconciling `inst` again when its inputs changed from
/// `from` on: the local midnight at or before it, moved back while a
/// confirmed booking's window or a usage session (with its merge gap)
/// crosses it.
pub fn restart_point(conn: &Connection, inst: &Instrument, from: Ms) -> rusqlite::Result<Ms> {
    let early = secs(inst.rules.early_grace_s);
    let late = secs(inst.rules.late_grace_s);
    let merge = secs(inst.rules.merge_gap_s);
    let mut at = local_day_start(&inst.zone, from);
    loop {
        let window: Option<Ms> = conn
            .prepare_cached(
                "SELECT MIN(start_ms) FROM bookings
                 WHERE instrument_id = ?1 AND status = 'confirmed'
                   AND end_ms > ?4 - ?3 AND start_ms < ?4 + ?2",
            )?
            .query_row(params![inst.id, early, late, at], |r| r.get(0))?;
        if let Some(start) = window {
            at = local_day_start(&inst.zone, start - early).min(at - 1);
            continue;
        }
        // A move ties its interval to the outcome of the booking it moves
        // usage to: neither is reconciled without the other.
        let tied: Option<Ms> = conn
            .prepare_cached(
                "SELECT MIN(MIN(c.start_ms, b.start_ms)) FROM corrections c
                 JOIN bookings b ON b.booking_id = c.booking_id
                 WHERE c.instrument_id = ?1 AND c.from_booking_id IS NOT NULL
                   AND MIN(c.start_ms, b.start_ms) < ?2 AND MAX(c.end_ms, b.start_ms + 1) > ?2",
            )?
            .query_row(params![inst.id, at], |r| r.get(0))?;
        if let Some(start) = tied {
            at = local_day_start(&inst.zone, start).min(at - 1);
            continue;
        }
        let context = load(conn, inst, at.saturating_sub(CONTEXT_MS))?;
        let crossing = reconcile::sessions(&context.inputs(inst))
            .into_iter()
            .filter(|s| s.interval.start < at && s.interval.end > at - merge)
            .map(|s| s.interval.start)
            .min();
        match crossing {
            Some(start) => at = local_day_start(&inst.zone, start).min(at - 1),
            None => return Ok(at),
        }
    }
}

/// Local days of `zone` covering `[from, to)`, as intervals with their
/// `YYYY-MM` month.
pub fn local_days(zone: &TimeZone, from: Ms, to: Ms) -> Vec<(Interval, String)> {
    let (Ok(f), Ok(t)) = (
        Timestamp::from_millisecond(from),
        Timestamp::from_millisecond(to),
    ) else {
        return Vec::new();
    };
    split_periods(f, t, zone, PeriodUnit::Day)
        .unwrap_or_default()
        .into_iter()
        .map(|p| (p.interval(), p.start.strftime("%Y-%m").to_string()))
        .collect()
}

/// What one pass changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pass {
    pub instruments: u64,
    pub days: u64,
    pub bookings: u64,
}

impl std::ops::AddAssign for Pass {
    fn add_assign(&mut self, o: Self) {
        self.instruments += o.instruments;
        self.days += o.days;
        self.bookings += o.bookings;
    }
}

const TOTAL_COLUMNS: &str = "used_ms, booked_ms, booked_used_ms, unbooked_ms,
    teaching_ms, research_ms, external_ms, training_ms, maintenance_ms, unassigned_ms,
    assigned_ms, c_teaching_ms, c_research_ms, c_external_ms, c_training_ms,
    c_maintenance_ms, c_unassigned_ms, no_show_count, fault_ms, unknown_ms,
    result_files, energy_wh";

/// The usage-type keys in column order (`unassigned` last).
pub const TYPE_KEYS: [&str; 6] = [
    "teaching",
    "research",
    "external",
    "training",
    "maintenance",
    reconcile::UNASSIGNED,
];

/// One instrument's reconciled results, ready to be written.
#[derive(Debug, Clone)]
pub struct Computed {
    pub instrument_id: String,
    pub policy_hash: String,
    /// Results from here on are replaced (`Ms::MIN + 1`: all of them).
    pub cut: Ms,
    /// Local `YYYY-MM` from which months are summed again (`""`: all).
    pub month_from: String,
    pub days: Vec<(Interval, String)>,
    pub totals: Vec<PeriodTotals>,
    /// Reports of the bookings starting at or after the cut.
    pub outcomes: Vec<StoredOutcome>,
}

/// A booking's report as stored: with its start, its disputes and its
/// used time after move corrections.
#[derive(Debug, Clone)]
pub struct StoredOutcome {
    pub start: Ms,
    pub report: BookingReport,
    pub disputes: Disputes,
    pub corrected_used_s: f64,
}

/// Reconciles `inst` from `from` (None: from the beginning).
pub fn compute(
    conn: &Connection,
    inst: &Instrument,
    from: Option<Ms>,
) -> rusqlite::Result<Computed> {
    let restart = match from {
        Some(from) => restart_point(conn, inst, from)?,
        None => Ms::MIN,
    };
    let loaded = load(conn, inst, restart)?;
    let rec = loaded.reconcile(inst);
    // Days before the first evidence total nothing and get no rows, as in a
    // full pass: a change dated long before it (a correction from year 470)
    // must not write a row for every day since then.
    let evidence_day = loaded
        .first
        .map_or(Ms::MAX, |f| local_day_start(&inst.zone, f));
    let first_day = match from {
        Some(_) => restart.max(evidence_day),
        None => evidence_day,
    };
    let days = match loaded.last {
        Some(last) if last > first_day => local_days(&inst.zone, first_day, last),
        _ => Vec::new(),
    };
    let periods: Vec<Interval> = days.iter().map(|(p, _)| *p).collect();
    let moved = loaded.moved(&rec);
    let totals = loaded.totals(inst, &rec, &moved, &periods);
    let cut = first_day.min(restart.max(Ms::MIN + 1));
    let month_from = match from {
        Some(_) => local_days(&inst.zone, cut, cut + 1)
            .first()
            .map_or_else(String::new, |(_, m)| m.clone()),
        None => String::new(),
    };
    let starts: HashMap<&str, Ms> = loaded
        .bookings
        .iter()
        .map(|b| (b.booking_id.as_str(), b.start))
        .collect();
    let mut disputes = reconcile::disputes(&loaded.bookings, &rec.segments);
    let net = reconcile::corrections::moved_ms_by_booking(&moved);
    let outcomes = rec
        .reports
        .iter()
        .filter_map(|r| {
            let id = r.booking_id.as_str();
            let start = *starts.get(id)?;
            (start >= restart).then(|| StoredOutcome {
                start,
                corrected_used_s: r.used_s + net.get(id).copied().unwrap_or(0) as f64 / 1000.0,
                disputes: disputes.remove(id).unwrap_or_default(),
                report: r.clone(),
            })
        })
        .collect();
    Ok(Computed {
        instrument_id: inst.id.clone(),
        policy_hash: inst.policy_hash(),
        cut,
        month_from,
        days,
        totals,
        outcomes,
    })
}

/// Replaces the instrument's stored results from `c.cut` on with `c`,
/// inside the caller's transaction.
pub fn write(conn: &Connection, c: &Computed, now: Ms) -> rusqlite::Result<Pass> {
    let id = c.instrument_id.as_str();
    conn.prepare_cached("DELETE FROM day_totals WHERE instrument_id = ?1 AND start_ms >= ?2")?
        .execute(params![id, c.cut])?;
    {
        let mut insert = conn.prepare_cached(&format!(
            "INSERT INTO day_totals (instrument_id, start_ms, end_ms, month, {TOTAL_COLUMNS})
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16,
                     ?17, ?18, ?19, ?20, ?21, ?22, ?23, ?24, ?25, ?26)"
        ))?;
        for ((period, month), t) in c.days.iter().zip(&c.totals) {
            let by = |k: &str| t.by_usage_type_ms.get(k).copied().unwrap_or(0);
            let cby = |k: &str| t.corrected_by_usage_type_ms.get(k).copied().unwrap_or(0);
            insert.execute(params![
                id,
                period.start,
                period.end,
                month,
                t.used_ms,
                t.booked_ms,
                t.booked_used_ms,
                t.unbooked_ms,
                by(TYPE_KEYS[0]),
                by(TYPE_KEYS[1]),
                by(TYPE_KEYS[2]),
                by(TYPE_KEYS[3]),
                by(TYPE_KEYS[4]),
                by(TYPE_KEYS[5]),
                t.assigned_ms,
                cby(TYPE_KEYS[0]),
                cby(TYPE_KEYS[1]),
                cby(TYPE_KEYS[2]),
                cby(TYPE_KEYS[3]),
                cby(TYPE_KEYS[4]),
                cby(TYPE_KEYS[5]),
                t.no_show_count as i64,
                t.fault_ms,
                t.unknown_ms,
                t.result_files as i64,
                t.energy_kwh.map(|k| k * 1000.0),
            ])?;
        }
    }
    // Months from the first rewritten day's month on, summed again.
    conn.prepare_cached("DELETE FROM month_totals WHERE instrument_id = ?1 AND month >= ?2")?
        .execute(params![id, c.month_from])?;
    let sums = TOTAL_COLUMNS
        .split(',')
        .map(|c| format!("SUM({})", c.trim()))
        .collect::<Vec<_>>()
        .join(", ");
    conn.prepare_cached(&format!(
        "INSERT INTO month_totals (instrument_id, month, start_ms, end_ms, covered_ms, {TOTAL_COLUMNS})
         SELECT instrument_id, month, MIN(start_ms), MAX(end_ms), SUM(end_ms - start_ms), {sums}
         FROM day_totals WHERE instrument_id = ?1 AND month >= ?2
         GROUP BY instrument_id, month"
    ))?
    .execute(params![id, c.month_from])?;

    conn.prepare_cached(
        "DELETE FROM booking_outcomes WHERE instrument_id = ?1 AND start_ms >= ?2",
    )?
    .execute(params![id, c.cut])?;
    {
        let mut insert = conn.prepare_cached(
            "INSERT INTO booking_outcomes (booking_id, instrument_id, start_ms, outcome,
                 flags, booked_s, used_s, early_s, overrun_s, first_use_ms, last_use_ms,
                 unknown_s, fault_s, sessions, result_files, overlapping_bookings,
                 usage_taken_by, took_usage_from, corrected_used_s)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16,
                     ?17, ?18, ?19)",
        )?;
        let json = |v: &Vec<String>| serde_json::to_string(v).unwrap_or_default();
        for o in &c.outcomes {
            let (r, d) = (&o.report, &o.disputes);
            insert.execute(params![
                r.booking_id,
                id,
                o.start,
                outcome_name(r.outcome),
                flag_names(&r.flags).join(","),
                r.booked_s,
                r.used_s,
                r.early_s,
                r.overrun_s,
                r.first_use,
                r.last_use,
                r.unknown_s,
                r.fault_s,
                json(&r.sessions),
                json(&r.result_files),
                json(&d.overlapping_bookings),
                json(&d.usage_taken_by),
                json(&d.took_usage_from),
                o.corrected_used_s,
            ])?;
        }
    }
    conn.prepare_cached(
        "INSERT INTO reconciled (instrument_id, policy_hash, updated_at_ms) VALUES (?1, ?2, ?3)
         ON CONFLICT (instrument_id) DO UPDATE SET policy_hash = excluded.policy_hash,
             updated_at_ms = excluded.updated_at_ms",
    )?
    .execute(params![id, c.policy_hash, now])?;
    Ok(Pass {
        instruments: 1,
        days: c.days.len() as u64,
        bookings: c.outcomes.len() as u64,
    })
}

/// Reconciles `inst` from `from` (None: from the beginning) and rewrites its
/// results from there on, inside the caller's transaction.
pub fn reconcile_instrument(
    conn: &Connection,
    inst: &Instrument,
    from: Option<Ms>,
    now: Ms,
) -> rusqlite::Result<Pass> {
    write(conn, &compute(conn, inst, from)?, now)
}

pub fn outcome_name(o: reconcile::Outcome) -> &'static str {
    match o {
        reconcile::Outcome::Cancelled => "cancelled",
        reconcile::Outcome::NotMonitored => "not_monitored",
        reconcile::Outcome::NoData => "no_data",
        reconcile::Outcome::InstrumentFault => "instrument_fault",
        reconcile::Outcome::NoShow => "no_show",
        reconcile::Outcome::Used => "used",
    }
}

pub fn flag_names(f: &reconcile::Flags) -> Vec<&'static str> {
    [
        (f.late_start, "late_start"),
        (f.early_finish, "early_finish"),
        (f.overrun, "overrun"),
    ]
    .into_iter()
    .filter(|(set, _)| *set)
    .map(|(_, name)| name)
    .collect()
}

/// Every instrument with any data: from events, bookings, results. Each
/// table is walked from one distinct `instrument_id` to the next through
/// its index (a loose index scan), not row by row; for `rebuild`.
pub fn all_instruments(conn: &Connection) -> rusqlite::Result<Vec<String>> {
    let tables = ["transitions", "alive_spans", "bookings", "result_files"];
    let walks = tables.map(|t| {
        format!(
            "{t}_ids(id) AS (
                 SELECT MIN(instrument_id) FROM {t}
                 UNION ALL
                 SELECT (SELECT MIN(instrument_id) FROM {t} WHERE instrument_id > {t}_ids.id)
                 FROM {t}_ids WHERE {t}_ids.id IS NOT NULL)"
        )
    });
    let selects = tables.map(|t| format!("SELECT id FROM {t}_ids WHERE id IS NOT NULL"));
    // A hub's forwarded instruments are the sites' results, not
    // reconciled here (docs/design/federation.md).
    let sql = format!(
        "WITH RECURSIVE {} SELECT id FROM ({} UNION SELECT instrument_id FROM reconciled
         UNION SELECT instrument_id FROM dirty)
         WHERE id NOT IN (SELECT instrument_id FROM fed_instruments)",
        walks.join(", "),
        selects.join(" UNION ")
    );
    conn.prepare(&sql)?.query_map([], |r| r.get(0))?.collect()
}

/// Every instrument the store knows of, cheaply: whatever stores data for
/// an instrument marks it dirty, and reconciling it records it.
pub fn known_instruments(conn: &Connection) -> rusqlite::Result<Vec<String>> {
    conn.prepare_cached(
        "SELECT instrument_id FROM reconciled UNION SELECT instrument_id FROM dirty",
    )?
    .query_map([], |r| r.get(0))?
    .collect()
}

/// Reconciles entirely every instrument whose policy changed since its
/// results were computed (the registry is fixed while the collector runs,
/// so this is needed once per start).
pub fn reconcile_changed_policies(
    conn: &mut Connection,
    registry: &Registry,
    now: Ms,
) -> rusqlite::Result<Pass> {
    let stale: Vec<String> = {
        let mut stmt = conn.prepare("SELECT instrument_id, policy_hash FROM reconciled")?;
        let stored: Vec<(String, String)> = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<rusqlite::Result<_>>()?;
        stored
            .into_iter()
            .filter(|(id, hash)| registry.instrument(id).policy_hash() != *hash)
            .map(|(id, _)| id)
            .collect()
    };
    let mut pass = Pass::default();
    for id in stale {
        pass += in_transaction(conn, |tx| {
            tx.execute("DELETE FROM dirty WHERE instrument_id = ?1", [&id])?;
            reconcile_instrument(tx, &registry.instrument(&id), None, now)
        })?;
    }
    Ok(pass)
}

/// Reconciles every dirty instrument from its mark. One write transaction
/// per instrument, so ingest waits at most one instrument's work.
pub fn catch_up(conn: &mut Connection, registry: &Registry, now: Ms) -> rusqlite::Result<Pass> {
    let mut pass = Pass::default();
    loop {
        let next: Option<String> = conn
            .query_row("SELECT instrument_id FROM dirty LIMIT 1", [], |r| r.get(0))
            .optional()?;
        let Some(id) = next else { break };
        pass += in_transaction(conn, |tx| {
            let from: Option<Ms> = tx
                .query_row(
                    "DELETE FROM dirty WHERE instrument_id = ?1 RETURNING from_ms",
                    [&id],
                    |r| r.get(0),
                )
                .optional()?;
            let forwarded: bool = tx.query_row(
                "SELECT EXISTS (SELECT 1 FROM fed_instruments WHERE instrument_id = ?1)",
                [&id],
                |r| r.get(0),
            )?;
            if forwarded {
                // A hub's forwarded instrument: its site reconciles it.
                return Ok(Pass::default());
            }
            let inst = registry.instrument(&id);
            let known: bool = tx.query_row(
                "SELECT EXISTS (SELECT 1 FROM reconciled WHERE instrument_id = ?1)",
                [&id],
                |r| r.get(0),
            )?;
            // An instrument seen for the first time is reconciled entirely.
            let from = if known { from } else { None };
            reconcile_instrument(tx, &inst, from, now)
        })?;
    }
    Ok(pass)
}

/// Instruments written per transaction by [`rebuild`].
pub const REBUILD_BATCH: usize = 256;

/// Reconciles every instrument from the beginning. One thread per core
/// reads and computes, each on its own connection (a snapshot per
/// instrument), while this one writes, [`REBUILD_BATCH`] instruments per
/// transaction. A dirty mark is cleared only
/// if no commit touched it since the snapshot; later marks are left for
/// the next pass.
pub fn rebuild(conn: &mut Connection, registry: &Registry, now: Ms) -> rusqlite::Result<Pass> {
    let ids = all_instruments(conn)?;
    // Rows are written per instrument, so the by-start indexes would take
    // scattered inserts: drop them and build them once at the end (queries
    // meanwhile are slower, not wrong; `ensure_indexes` repairs a crash).
    conn.execute_batch(
        "DROP INDEX IF EXISTS day_totals_by_start; DROP INDEX IF EXISTS booking_outcomes_by_start;",
    )?;
    let pass = rebuild_unindexed(conn, registry, now, &ids);
    ensure_indexes(conn)?;
    pass
}

/// Creates the results' by-start indexes if a rebuild was cut short.
pub fn ensure_indexes(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute_batch(
        "CREATE INDEX IF NOT EXISTS day_totals_by_start ON day_totals (start_ms);
         CREATE INDEX IF NOT EXISTS booking_outcomes_by_start ON booking_outcomes (start_ms);",
    )
}

fn rebuild_unindexed(
    conn: &mut Connection,
    registry: &Registry,
    now: Ms,
    ids: &[String],
) -> rusqlite::Result<Pass> {
    let path = conn
        .path()
        .map(std::path::PathBuf::from)
        .unwrap_or_default();
    let next = std::sync::atomic::AtomicUsize::new(0);
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    let (tx, rx) = std::sync::mpsc::sync_channel::<rusqlite::Result<(Computed, Option<i64>)>>(16);
    std::thread::scope(|scope| {
        for _ in 0..workers {
            let tx = tx.clone();
            let (next, path) = (&next, &path);
            scope.spawn(move || {
                let reader = match Connection::open_with_flags(
                    path,
                    OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
                ) {
                    Ok(c) => c,
                    Err(e) => {
                        let _ = tx.send(Err(e));
                        return;
                    }
                };
                while let Some(id) =
                    ids.get(next.fetch_add(1, std::sync::atomic::Ordering::Relaxed))
                {
                    let computed = (|| {
                        reader.execute_batch("BEGIN")?;
                        let version: Option<i64> = reader
                            .query_row(
                                "SELECT version FROM dirty WHERE instrument_id = ?1",
                                [id],
                                |r| r.get(0),
                            )
                            .optional()?;
                        let c = compute(&reader, &registry.instrument(id), None);
                        reader.execute_batch("COMMIT")?;
                        Ok((c?, version))
                    })();
                    let failed = computed.is_err();
                    if tx.send(computed).is_err() || failed {
                        return;
                    }
                }
            });
        }
        drop(tx);
        let mut pass = Pass::default();
        let mut batch = Vec::with_capacity(REBUILD_BATCH);
        let mut flush = |batch: &mut Vec<(Computed, Option<i64>)>| -> rusqlite::Result<()> {
            let done = in_transaction(conn, |t| {
                let mut pass = Pass::default();
                for (c, version) in batch.iter() {
                    if let Some(v) = version {
                        t.execute(
                            "DELETE FROM dirty WHERE instrument_id = ?1 AND version = ?2",
                            params![c.instrument_id, v],
                        )?;
                    }
                    pass += write(t, c, now)?;
                }
                Ok(pass)
            })?;
            pass += done;
            batch.clear();
            Ok(())
        };
        for item in rx {
            batch.push(item?);
            if batch.len() == REBUILD_BATCH {
                flush(&mut batch)?;
            }
        }
        flush(&mut batch)?;
        Ok(pass)
    })
}

fn in_transaction<T>(
    conn: &mut Connection,
    work: impl FnOnce(&Connection) -> rusqlite::Result<T>,
) -> rusqlite::Result<T> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let out = work(&tx)?;
    tx.commit()?;
    Ok(out)
}
