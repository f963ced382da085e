//! `GET /api/v1/hours`: verified hours from the materialised totals.
//!
//! A period is cut into whole local months (read from `month_totals`),
//! whole local days (`day_totals`, summed in SQL) and, when an edge is an
//! instant that is not a local midnight, partial days reconciled on the
//! spot. Days with no stored row count as `unknown`. Instruments sharing a
//! zone are read with one grouped query per piece.

use std::collections::{BTreeMap, HashMap};

use jiff::Timestamp;
use jiff::tz::TimeZone;
use rusqlite::{Connection, params};

use super::materialize::{TYPE_KEYS, load, local_day_start, restart_point};
use super::query::{
    CorrectedHours, Edge, GroupBy, HoursAnswer, HoursQuery, HoursRow, HoursRows, QueryError, Range,
    UsageTypeRow,
};
use super::settled;
use crate::reconcile::hours::{hours, ratio};
use crate::reconcile::{Interval, Ms, PeriodTotals, PeriodUnit, split_periods};
use crate::registry::{Instrument, Registry};

/// The instruments a query selects: configured or known to the store.
pub fn select(
    conn: &Connection,
    registry: &Registry,
    instrument: Option<&str>,
    unit: Option<&str>,
) -> Result<Vec<Instrument>, QueryError> {
    let mut ids: Vec<String> = registry.configured().map(|i| i.id.clone()).collect();
    ids.extend(super::materialize::known_instruments(conn)?);
    // A hub's forwarded instruments (docs/design/federation.md).
    let forwarded: HashMap<String, Instrument> =
        crate::federation::forwarded_instruments(conn, registry)?
            .into_iter()
            .map(|i| (i.id.clone(), i))
            .collect();
    ids.extend(forwarded.keys().cloned());
    ids.sort();
    ids.dedup();
    if let Some(one) = instrument {
        if !ids.iter().any(|i| i == one) {
            return Err(QueryError::UnknownInstrument(one.to_owned()));
        }
        ids.retain(|i| i == one);
    }
    let mut out: Vec<Instrument> = ids
        .iter()
        .map(|id| {
            forwarded
                .get(id)
                .cloned()
                .unwrap_or_else(|| registry.instrument(id))
        })
        .collect();
    if let Some(asked) = unit {
        let org = registry.organisation();
        let unit = org
            .canonical(asked)
            .ok_or_else(|| QueryError::UnknownUnit(asked.to_owned()))?;
        // A forwarded instrument's unit is a path under its site (the tree
        // below a site is the site's, not in this config).
        out.retain(|i| {
            org.contains(&unit, &i.id) || (forwarded.contains_key(&i.id) && i.in_unit(&unit))
        });
    }
    Ok(out)
}

/// [`select`] without the instruments that are not monitored and have sent
/// nothing (known only from their bookings, outcome `not_monitored`): they
/// measured nothing, so hours and instrument lists leave them out rather
/// than count a day of `unknown` for each.
pub fn select_measured(
    conn: &Connection,
    registry: &Registry,
    instrument: Option<&str>,
    unit: Option<&str>,
) -> Result<Vec<Instrument>, QueryError> {
    let mut evidence = conn.prepare_cached(
        "SELECT EXISTS (SELECT 1 FROM transitions WHERE instrument_id = ?1)
             OR EXISTS (SELECT 1 FROM alive_spans WHERE instrument_id = ?1)",
    )?;
    let mut out = Vec::new();
    for inst in select(conn, registry, instrument, unit)? {
        if inst.monitored || evidence.query_row([&inst.id], |r| r.get::<_, bool>(0))? {
            out.push(inst);
        }
    }
    Ok(out)
}

/// An edge as an instant in `zone`.
pub fn resolve(edge: Edge, zone: &TimeZone, parameter: &'static str) -> Result<Ms, QueryError> {
    match edge {
        Edge::Instant(t) => Ok(t.as_millisecond()),
        Edge::Date(d) => d
            .to_zoned(zone.clone())
            .map(|z| z.timestamp().as_millisecond())
            .map_err(|e| QueryError::BadParameter {
                parameter,
                message: format!("{d} has no local midnight in {zone:?}: {e}"),
            }),
    }
}

/// `[from, to)` of `range` in `zone`; `to` must be after `from`.
pub fn resolve_range(range: &Range, zone: &TimeZone) -> Result<Interval, QueryError> {
    let from = resolve(range.from, zone, "from")?;
    let to = resolve(range.to, zone, "to")?;
    if to <= from {
        return Err(QueryError::BadParameter {
            parameter: "to",
            message: "must be after from".into(),
        });
    }
    Ok(Interval::new(from, to))
}

fn ts(ms: Ms) -> Timestamp {
    Timestamp::from_millisecond(ms).unwrap_or(Timestamp::UNIX_EPOCH)
}

fn is_midnight(zone: &TimeZone, at: Ms) -> bool {
    ts(at)
        .to_zoned(zone.clone())
        .start_of_day()
        .is_ok_and(|d| d.timestamp().as_millisecond() == at)
}

/// How one period is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Piece {
    /// Whole local months: `month_totals` rows starting in it.
    Months(Interval),
    /// Whole local days: `day_totals` rows starting in it.
    Days(Interval),
    /// Part of a day: reconciled on the spot.
    Partial(Interval),
}

fn pieces(zone: &TimeZone, period: Interval) -> Vec<Piece> {
    let mut out = Vec::new();
    let mut a = period.start;
    let mut b = period.end;
    if !is_midnight(zone, a) {
        let next = ts(a)
            .to_zoned(zone.clone())
            .tomorrow()
            .and_then(|d| d.start_of_day())
            .map_or(b, |d| d.timestamp().as_millisecond());
        out.push(Piece::Partial(Interval::new(a, next.min(b))));
        a = next.min(b);
    }
    let mut tail = None;
    if a < b && !is_midnight(zone, b) {
        let last = local_day_start(zone, b).max(a);
        tail = Some(Piece::Partial(Interval::new(last, b)));
        b = last;
    }
    if a < b {
        let months = split_periods(ts(a), ts(b), zone, PeriodUnit::Month).unwrap_or_default();
        let mut whole: Option<Interval> = None;
        for m in months {
            let i = m.interval();
            let full = m.start.day() == 1
                && is_midnight(zone, i.start)
                && m.end.day() == 1
                && is_midnight(zone, i.end);
            if full {
                whole = Some(whole.map_or(i, |w| Interval::new(w.start, i.end)));
            } else {
                out.extend(whole.take().map(Piece::Months));
                out.push(Piece::Days(i));
            }
        }
        out.extend(whole.map(Piece::Months));
    }
    out.extend(tail);
    out
}

/// Sums of the stored columns for one instrument.
#[derive(Debug, Clone, Default)]
struct Sums {
    cols: [i64; 21],
    energy_wh: Option<f64>,
    covered_ms: Ms,
}

impl Sums {
    fn into_totals(self, instrument_id: &str, period: Interval) -> PeriodTotals {
        let c = self.cols;
        let map = |offset: usize| -> BTreeMap<String, Ms> {
            TYPE_KEYS
                .iter()
                .enumerate()
                .map(|(i, k)| ((*k).to_owned(), c[offset + i]))
                .collect()
        };
        PeriodTotals {
            instrument_id: instrument_id.to_owned(),
            period,
            used_ms: c[0],
            booked_ms: c[1],
            booked_used_ms: c[2],
            unbooked_ms: c[3],
            external_ms: c[6],
            by_usage_type_ms: map(4),
            assigned_ms: c[10],
            corrected_by_usage_type_ms: map(11),
            no_show_count: c[17].max(0) as u64,
            fault_ms: c[18],
            // Days without a row are unknown too.
            unknown_ms: c[19] + (period.len() - self.covered_ms).max(0),
            result_files: c[20].max(0) as u64,
            energy_kwh: self.energy_wh.map(|wh| wh / 1000.0),
            open_ms: None,
        }
    }
}

/// The summed columns, in [`Sums::cols`] order, then `energy_wh`.
const SUM_COLUMNS: &str = "used_ms, booked_ms, booked_used_ms, unbooked_ms,
    teaching_ms, research_ms, external_ms, training_ms, maintenance_ms,
    unassigned_ms, assigned_ms, c_teaching_ms, c_research_ms,
    c_external_ms, c_training_ms, c_maintenance_ms, c_unassigned_ms,
    no_show_count, fault_ms, unknown_ms, result_files, energy_wh";

/// Per instrument, the sums of the rows of `table` starting in `within`.
///
/// Summed here rather than by SQL's `SUM … GROUP BY`, which costs more
/// than reading the rows; and over every instrument, `month_totals` is
/// scanned in key order rather than searched through its `start_ms`
/// index, which costs a key lookup per row (a year of 10,000 instruments'
/// months: a 16 ms scan against 145 ms of lookups; docs/performance.md).
/// Days keep the index: a range of days is a small part of the table.
fn stored_sums(
    conn: &Connection,
    table: &str,
    within: Interval,
    only: Option<&str>,
    into: &mut HashMap<String, Sums>,
) -> rusqlite::Result<()> {
    let months = table == "month_totals";
    let covered = if months {
        "covered_ms"
    } else {
        "end_ms - start_ms"
    };
    let filter = match (only, months) {
        (Some(_), _) => "instrument_id = ?3 AND start_ms >= ?1 AND start_ms < ?2",
        (None, true) => "+start_ms >= ?1 AND +start_ms < ?2 AND ?3 IS NULL",
        (None, false) => "start_ms >= ?1 AND start_ms < ?2 AND ?3 IS NULL",
    };
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT instrument_id, {SUM_COLUMNS}, {covered} FROM {table} WHERE {filter}"
    ))?;
    let mut rows = stmt.query(params![within.start, within.end, only])?;
    while let Some(row) = rows.next()? {
        let id = row.get_ref(0)?.as_str()?;
        if !into.contains_key(id) {
            into.insert(id.to_owned(), Sums::default());
        }
        let sums = into.get_mut(id).expect("inserted above");
        for i in 0..21 {
            sums.cols[i] += row.get::<_, Option<i64>>(i + 1)?.unwrap_or(0);
        }
        if let Some(wh) = row.get::<_, Option<f64>>(22)? {
            *sums.energy_wh.get_or_insert(0.0) += wh;
        }
        sums.covered_ms += row.get::<_, Option<i64>>(23)?.unwrap_or(0);
    }
    Ok(())
}

/// Totals of one instrument over part of a day, reconciled on the spot.
pub fn live_totals(
    conn: &Connection,
    inst: &Instrument,
    period: Interval,
) -> rusqlite::Result<PeriodTotals> {
    let restart = restart_point(conn, inst, period.start)?;
    let loaded = load(conn, inst, restart)?;
    let rec = loaded.reconcile(inst);
    let moved = loaded.moved(&rec);
    let mut totals = loaded.totals(inst, &rec, &moved, &[period]);
    Ok(totals.pop().expect("one period in, one out"))
}

/// The most rows (instruments × periods) one hours query may produce, so
/// that no request can make the collector build an unbounded answer.
pub const MAX_ROWS: i64 = 400_000;

/// An upper bound of the periods `whole` splits into.
fn estimated_periods(whole: Interval, period: Option<PeriodUnit>) -> i64 {
    const DAY: Ms = 86_400_000;
    let shortest = match period {
        None => return 1,
        // A local day is at least 23 hours, a month 28 days, a year 365.
        Some(PeriodUnit::Day) => 23 * DAY / 24,
        Some(PeriodUnit::Month) => 28 * DAY,
        Some(PeriodUnit::Year) => 365 * DAY,
    };
    whole.len() / shortest + 2
}

/// Totals for each selected instrument and period, in the instrument's zone.
fn totals(
    conn: &Connection,
    instruments: &[Instrument],
    range: &Range,
    period: Option<PeriodUnit>,
) -> Result<Vec<(usize, Vec<PeriodTotals>)>, QueryError> {
    // Instruments by zone: one set of periods and queries per zone.
    let mut by_zone: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, inst) in instruments.iter().enumerate() {
        by_zone.entry(inst.time_zone.as_str()).or_default().push(i);
    }
    let mut out = Vec::new();
    let mut rows = 0;
    for members in by_zone.values() {
        let zone = &instruments[members[0]].zone;
        let whole = resolve_range(range, zone)?;
        rows += estimated_periods(whole, period) * members.len() as i64;
        if rows > MAX_ROWS {
            return Err(QueryError::BadParameter {
                parameter: "period",
                message: format!(
                    "the answer would have about {rows} rows, more than {MAX_ROWS}: \
                     ask for a longer period, a shorter range, or one unit or instrument at a time"
                ),
            });
        }
        let periods: Vec<Interval> = match period {
            None => vec![whole],
            Some(unit) => split_periods(ts(whole.start), ts(whole.end), zone, unit)
                .map_err(|e| QueryError::BadParameter {
                    parameter: "period",
                    message: e.to_string(),
                })?
                .iter()
                .map(|p| p.interval())
                .collect(),
        };
        let only = (members.len() == 1).then(|| instruments[members[0]].id.as_str());
        let mut per_instrument: Vec<Vec<PeriodTotals>> = vec![Vec::new(); members.len()];
        for p in &periods {
            let mut sums: HashMap<String, Sums> = HashMap::new();
            let mut partials = Vec::new();
            for piece in pieces(zone, *p) {
                match piece {
                    Piece::Months(i) => stored_sums(conn, "month_totals", i, only, &mut sums)?,
                    Piece::Days(i) => stored_sums(conn, "day_totals", i, only, &mut sums)?,
                    Piece::Partial(i) => partials.push(i),
                }
            }
            for (slot, &m) in members.iter().enumerate() {
                let inst = &instruments[m];
                let mut t = sums
                    .remove(&inst.id)
                    .unwrap_or_default()
                    .into_totals(&inst.id, *p);
                for part in &partials {
                    let live = live_totals(conn, inst, *part)?;
                    // The live part is fully accounted for, unknown included.
                    t.unknown_ms -= part.len();
                    t.add(&live);
                }
                t.period = *p;
                t.open_ms = inst.open_ms(*p);
                per_instrument[slot].push(t);
            }
        }
        out.extend(members.iter().copied().zip(per_instrument));
    }
    out.sort_by_key(|(i, _)| *i);
    Ok(out)
}

fn corrected(t: &PeriodTotals) -> CorrectedHours {
    let external = t
        .corrected_by_usage_type_ms
        .get("external")
        .copied()
        .unwrap_or(0);
    CorrectedHours {
        assigned_hours: hours(t.assigned_ms),
        unbooked_hours: hours(t.unbooked_ms - t.assigned_ms),
        by_usage_type: t
            .corrected_by_usage_type_ms
            .iter()
            .map(|(k, &v)| (k.clone(), hours(v)))
            .collect(),
        external_hours: hours(external),
        share_rate: (t.used_ms > 0).then(|| ratio(external as f64, t.used_ms as f64)),
    }
}

/// The API row of `t`, summed over `n` instruments.
fn row(t: &PeriodTotals, zone: &TimeZone, n: u32) -> HoursRow {
    let r = t.to_row_over(zone, n);
    HoursRow {
        instrument_id: None,
        name: None,
        unit: None,
        instruments: n,
        period_start: r.period_start,
        period_end: r.period_end,
        used_hours: r.used_hours,
        booked_hours: r.booked_hours,
        booked_used_hours: r.booked_used_hours,
        unbooked_hours: r.unbooked_hours,
        by_usage_type: r.by_usage_type,
        external_hours: r.external_hours,
        share_rate: r.share_rate,
        open_hours: r.open_hours,
        utilization: r.utilization,
        no_show_count: r.no_show_count,
        fault_hours: r.fault_hours,
        unknown_hours: r.unknown_hours,
        coverage: r.coverage,
        result_files: r.result_files,
        energy_kwh: r.energy_kwh,
        corrected: corrected(t),
        provisional: true,
        signed: true,
        unsigned_events: 0,
    }
}

/// Events of `instrument` in `period` that came unsigned (a partial index
/// holds only those: free for a signed fleet).
fn unsigned_events(conn: &Connection, instrument: &str, period: Interval) -> rusqlite::Result<u64> {
    conn.prepare_cached(
        "SELECT count(*) FROM events INDEXED BY events_unsigned
         WHERE signed = 0 AND instrument_id = ?1 AND at_ms >= ?2 AND at_ms < ?3",
    )?
    .query_row(params![instrument, period.start, period.end], |r| {
        r.get::<_, i64>(0)
    })
    .map(|n| n.max(0) as u64)
}

/// Answers an hours query.
pub fn query(
    conn: &Connection,
    registry: &Registry,
    q: &HoursQuery,
) -> Result<HoursAnswer, QueryError> {
    let instruments = select_measured(conn, registry, q.instrument.as_deref(), q.unit.as_deref())?;
    if instruments.is_empty() {
        // Still check the range so a bad one is reported.
        resolve_range(&q.range, registry.site_zone())?;
    }
    let settled = settled::per_instrument(conn)?;
    let rows = rows(conn, registry, q, &instruments, &settled)?;
    let through = settled::overall(&settled, instruments.iter().map(|i| i.id.as_str()));
    Ok(HoursAnswer {
        rows,
        settled_through: through.and_then(|ms| Timestamp::from_millisecond(ms).ok()),
    })
}

/// The rows of `q` over `instruments`, each flagged provisional from `settled`.
fn rows(
    conn: &Connection,
    registry: &Registry,
    q: &HoursQuery,
    instruments: &[Instrument],
    settled: &HashMap<String, Option<Ms>>,
) -> Result<HoursRows, QueryError> {
    let totals = totals(conn, instruments, &q.range, q.period)?;
    let unsigned = |i: usize, t: &PeriodTotals| unsigned_events(conn, &instruments[i].id, t.period);
    let site = registry.site_zone();
    let provisional = |i: usize, t: &PeriodTotals| {
        settled::provisional(settled, &instruments[i].id, t.period.end)
    };
    match q.group_by {
        GroupBy::Instrument => Ok(HoursRows::Totals(
            totals
                .iter()
                .flat_map(|(i, ts)| {
                    let inst = &instruments[*i];
                    ts.iter().map(move |t| {
                        let unsigned_events = unsigned(*i, t)?;
                        Ok(HoursRow {
                            instrument_id: Some(inst.id.clone()),
                            name: Some(inst.name.clone()),
                            unit: inst.unit.clone(),
                            provisional: provisional(*i, t),
                            signed: unsigned_events == 0,
                            unsigned_events,
                            ..row(t, &inst.zone, 1)
                        })
                    })
                })
                .collect::<rusqlite::Result<_>>()?,
        )),
        GroupBy::Unit => {
            // (unit, period index) → sum, instrument count, any provisional,
            // unsigned events. An instrument counts in its unit and in every
            // unit above it up to the one asked for (all of them without
            // `unit`), so each level of the tree has its total.
            let org = registry.organisation();
            let asked = q.unit.as_deref().and_then(|u| org.canonical(u));
            let mut groups: BTreeMap<(String, usize), (PeriodTotals, u32, bool, u64)> =
                BTreeMap::new();
            for (i, ts) in &totals {
                let units: Vec<String> = match &instruments[*i].unit {
                    Some(own) => org
                        .ancestors(own)
                        .into_iter()
                        .filter(|a| {
                            asked
                                .as_deref()
                                .is_none_or(|top| org.ancestors(a).contains(&top))
                        })
                        .map(str::to_owned)
                        .collect(),
                    None => vec![String::new()],
                };
                for (k, t) in ts.iter().enumerate() {
                    let p = provisional(*i, t);
                    let u = unsigned(*i, t)?;
                    for unit in &units {
                        groups
                            .entry((unit.clone(), k))
                            .and_modify(|(sum, n, any, unsigned)| {
                                sum.add(t);
                                *n += 1;
                                *any |= p;
                                *unsigned += u;
                            })
                            .or_insert_with(|| (t.clone(), 1, p, u));
                    }
                }
            }
            Ok(HoursRows::Totals(
                groups
                    .into_iter()
                    .map(
                        |((unit, _), (t, n, provisional, unsigned_events))| HoursRow {
                            unit: Some(unit),
                            provisional,
                            signed: unsigned_events == 0,
                            unsigned_events,
                            ..row(&t, site, n)
                        },
                    )
                    .collect(),
            ))
        }
        GroupBy::UsageType => {
            /// One usage type in one period, over the instruments.
            struct TypeSum {
                used: Ms,
                corrected: Ms,
                instruments: u32,
                period: Interval,
                provisional: bool,
            }
            let mut groups: BTreeMap<(usize, &str), TypeSum> = BTreeMap::new();
            for (i, ts) in &totals {
                for (k, t) in ts.iter().enumerate() {
                    let p = provisional(*i, t);
                    for key in TYPE_KEYS {
                        let e = groups.entry((k, key)).or_insert(TypeSum {
                            used: 0,
                            corrected: 0,
                            instruments: 0,
                            period: t.period,
                            provisional: false,
                        });
                        e.used += t.by_usage_type_ms.get(key).copied().unwrap_or(0);
                        e.corrected += t.corrected_by_usage_type_ms.get(key).copied().unwrap_or(0);
                        e.instruments += 1;
                        e.provisional |= p;
                    }
                }
            }
            let local = |ms: Ms| super::views::local(ms, site);
            Ok(HoursRows::UsageTypes(
                groups
                    .into_iter()
                    .map(|((_, key), sum)| UsageTypeRow {
                        period_start: local(sum.period.start),
                        period_end: local(sum.period.end),
                        usage_type: key.to_owned(),
                        instruments: sum.instruments,
                        used_hours: hours(sum.used),
                        corrected_used_hours: hours(sum.corrected),
                        provisional: sum.provisional,
                    })
                    .collect(),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(s: &str) -> Ms {
        s.parse::<Timestamp>().unwrap().as_millisecond()
    }

    #[test]
    fn a_calendar_year_is_read_as_whole_months() {
        let zone = TimeZone::get("Asia/Shanghai").unwrap();
        let p = Interval::new(ms("2025-12-31T16:00:00Z"), ms("2026-12-31T16:00:00Z"));
        assert_eq!(pieces(&zone, p), vec![Piece::Months(p)]);
    }

    #[test]
    fn ragged_edges_become_partial_days_and_day_ranges() {
        let zone = TimeZone::UTC;
        let p = Interval::new(ms("2026-01-30T12:00:00Z"), ms("2026-03-02T06:00:00Z"));
        assert_eq!(
            pieces(&zone, p),
            vec![
                Piece::Partial(Interval::new(
                    ms("2026-01-30T12:00:00Z"),
                    ms("2026-01-31T00:00:00Z")
                )),
                Piece::Days(Interval::new(
                    ms("2026-01-31T00:00:00Z"),
                    ms("2026-02-01T00:00:00Z")
                )),
                Piece::Months(Interval::new(
                    ms("2026-02-01T00:00:00Z"),
                    ms("2026-03-01T00:00:00Z")
                )),
                Piece::Days(Interval::new(
                    ms("2026-03-01T00:00:00Z"),
                    ms("2026-03-02T00:00:00Z")
                )),
                Piece::Partial(Interval::new(
                    ms("2026-03-02T00:00:00Z"),
                    ms("2026-03-02T06:00:00Z")
                )),
            ]
        );
    }

    #[test]
    fn period_estimates_never_fall_below_the_real_count() {
        let zone = TimeZone::get("Europe/Berlin").unwrap();
        let year = Interval::new(ms("2025-12-31T23:00:00Z"), ms("2026-12-31T23:00:00Z"));
        for unit in [PeriodUnit::Day, PeriodUnit::Month, PeriodUnit::Year] {
            let real = split_periods(ts(year.start), ts(year.end), &zone, unit)
                .unwrap()
                .len() as i64;
            let estimate = estimated_periods(year, Some(unit));
            assert!(
                estimate >= real && estimate <= real * 11 / 10 + 2,
                "{unit:?}: {estimate} vs {real}"
            );
        }
    }

    #[test]
    fn a_piece_inside_one_day_is_a_single_partial() {
        let zone = TimeZone::UTC;
        let p = Interval::new(ms("2026-01-30T12:00:00Z"), ms("2026-01-30T13:00:00Z"));
        assert_eq!(pieces(&zone, p), vec![Piece::Partial(p)]);
    }
}
