//! §6 verified hours per instrument and period.

use std::collections::BTreeMap;
use std::ops::Range;

use jiff::tz::TimeZone;
use jiff::{Timestamp, ToSpan, Zoned};
use labhours_shared::state::State;
use serde::{Deserialize, Serialize};

use super::corrections::{Assignment, Move, assigned_pieces};
use super::fast::FastMap;
use super::{
    Booking, Interval, Ms, Outcome, Reconciliation, ResultFileRef, Timeline, UNASSIGNED, UsageType,
};

/// Calendar unit of a report period, in the site's zone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PeriodUnit {
    Day,
    Month,
    Year,
}

/// One report period: `[start, end)` as local times with their offsets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Period {
    pub start: Zoned,
    pub end: Zoned,
}

impl Period {
    pub fn interval(&self) -> Interval {
        Interval::new(
            self.start.timestamp().as_millisecond(),
            self.end.timestamp().as_millisecond(),
        )
    }
}

/// Splits `[from, to)` into local days, months or years of `tz` (DST-correct:
/// a local day is 23, 24 or 25 hours). The first and last periods are cut at
/// `from` and `to`. Empty when `to <= from`.
pub fn split_periods(
    from: Timestamp,
    to: Timestamp,
    tz: &TimeZone,
    unit: PeriodUnit,
) -> Result<Vec<Period>, jiff::Error> {
    let mut out = Vec::new();
    let end = to.to_zoned(tz.clone());
    let mut cur = from.to_zoned(tz.clone());
    while cur.timestamp() < to {
        let day = cur.start_of_day()?;
        let begin = match unit {
            PeriodUnit::Day => day,
            PeriodUnit::Month => day.first_of_month()?.start_of_day()?,
            PeriodUnit::Year => day.first_of_year()?.start_of_day()?,
        };
        let next = match unit {
            PeriodUnit::Day => begin.checked_add(1.day())?,
            PeriodUnit::Month => begin.checked_add(1.month())?,
            PeriodUnit::Year => begin.checked_add(1.year())?,
        }
        .start_of_day()?;
        let stop = if next.timestamp() < to {
            next.clone()
        } else {
            end.clone()
        };
        out.push(Period {
            start: cur.clone(),
            end: stop,
        });
        cur = next;
    }
    Ok(out)
}

/// What the period sums need besides the reconciliation.
#[derive(Debug, Clone, Copy)]
pub struct PeriodInputs<'a> {
    pub instrument_id: &'a str,
    pub period: Interval,
    pub reconciliation: &'a Reconciliation,
    pub bookings: &'a [Booking],
    pub timeline: &'a Timeline,
    pub result_files: &'a [ResultFileRef],
    /// Published open time in the period, when known.
    pub open_ms: Option<Ms>,
    /// Energy in the period, summed by the caller.
    pub energy_kwh: Option<f64>,
}

/// Period sums in milliseconds (exact); [`PeriodTotals::to_row`] reports them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PeriodTotals {
    pub instrument_id: String,
    pub period: Interval,
    pub used_ms: Ms,
    pub booked_ms: Ms,
    pub booked_used_ms: Ms,
    pub unbooked_ms: Ms,
    /// Usage per usage type, `unassigned` for unbooked; every key present.
    pub by_usage_type_ms: BTreeMap<String, Ms>,
    pub external_ms: Ms,
    pub open_ms: Option<Ms>,
    pub no_show_count: u64,
    pub fault_ms: Ms,
    pub unknown_ms: Ms,
    pub result_files: u64,
    pub energy_kwh: Option<f64>,
    /// Unbooked usage some correction assigned (§7).
    #[serde(default)]
    pub assigned_ms: Ms,
    /// `by_usage_type_ms` after corrections: assigned usage moved from
    /// `unassigned` to its usage type when it has one, and usage moved
    /// between bookings from the first one's type to the second's; every
    /// key present.
    #[serde(default)]
    pub corrected_by_usage_type_ms: BTreeMap<String, Ms>,
}

/// A reported hours row: hours rounded to two decimals from the exact sums.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HoursRow {
    pub instrument_id: String,
    /// Local time with offset, e.g. `2026-03-29T00:00:00+01:00`.
    pub period_start: String,
    pub period_end: String,
    pub used_hours: f64,
    pub booked_hours: f64,
    pub booked_used_hours: f64,
    pub unbooked_hours: f64,
    pub by_usage_type: BTreeMap<String, f64>,
    pub external_hours: f64,
    /// external / used; null when there is no usage.
    pub share_rate: Option<f64>,
    pub open_hours: Option<f64>,
    /// used / open hours, or used / period length when open hours are
    /// unknown; null when open hours are known to be zero.
    pub utilization: Option<f64>,
    pub no_show_count: u64,
    pub fault_hours: f64,
    pub unknown_hours: f64,
    /// 1 − unknown / period.
    pub coverage: f64,
    pub result_files: u64,
    pub energy_kwh: Option<f64>,
}

/// What the sums over many periods need besides the periods.
#[derive(Debug, Clone, Copy)]
pub struct TotalsInputs<'a> {
    pub instrument_id: &'a str,
    pub reconciliation: &'a Reconciliation,
    pub bookings: &'a [Booking],
    pub timeline: &'a Timeline,
    pub result_files: &'a [ResultFileRef],
    /// Admin corrections (§7), in the order they were made (later wins where they overlap).
    pub corrections: &'a [Assignment],
    /// Usage moved from one booking to another by move corrections (the
    /// pieces [`super::apply_moves`] gives): its usage type follows the
    /// booking in the corrected figures.
    pub moved: &'a [Move],
    /// Energy in Wh per bucket, sorted by bucket start; a bucket counts in the period containing its start. `energy_kwh` is None for a period with no bucket.
    pub energy: &'a [(Ms, f64)],
}

/// Sums one period; sessions and bookings crossing its edges are cut there.
/// [`totals_for_periods`] with this one period, no corrections, and
/// `open_ms` and `energy_kwh` passed through.
pub fn period_totals(inputs: &PeriodInputs<'_>) -> PeriodTotals {
    let totals = totals_for_periods(
        &TotalsInputs {
            instrument_id: inputs.instrument_id,
            reconciliation: inputs.reconciliation,
            bookings: inputs.bookings,
            timeline: inputs.timeline,
            result_files: inputs.result_files,
            corrections: &[],
            moved: &[],
            energy: &[],
        },
        &[inputs.period],
    );
    let mut t = totals
        .into_iter()
        .next()
        .expect("one period in, one totals out");
    t.open_ms = inputs.open_ms;
    t.energy_kwh = inputs.energy_kwh;
    t
}

/// Keys of the usage-type sums: `UsageType::ALL`, then `unassigned`.
const KEYS: usize = UsageType::ALL.len() + 1;
const UNASSIGNED_KEY: usize = UsageType::ALL.len();

fn key(t: UsageType) -> usize {
    UsageType::ALL
        .iter()
        .position(|&x| x == t)
        .unwrap_or(UNASSIGNED_KEY)
}

fn key_map(sums: &[Ms; KEYS]) -> BTreeMap<String, Ms> {
    UsageType::ALL
        .iter()
        .map(|t| t.as_str())
        .chain([UNASSIGNED])
        .zip(sums)
        .map(|(k, &v)| (k.to_owned(), v))
        .collect()
}

/// One period's sums while sweeping.
#[derive(Default)]
struct Acc {
    used: Ms,
    booked: Ms,
    booked_used: Ms,
    unbooked: Ms,
    by_type: [Ms; KEYS],
    assigned: Ms,
    /// Usage moved by corrections: − from `unassigned` (or the source
    /// booking's type), + to its type.
    moved: [Ms; KEYS],
    no_shows: u64,
    result_files: u64,
    energy_wh: Option<f64>,
}

/// Finds periods (sorted and disjoint) for a stream of instants: from the
/// last answer, galloping forward, so a sorted stream costs O(1) each and
/// any other order O(log n) each.
struct Periods<'p> {
    periods: &'p [Interval],
    at: usize,
}

impl<'p> Periods<'p> {
    fn new(periods: &'p [Interval]) -> Self {
        Self { periods, at: 0 }
    }

    /// The first period not ended at `t` (its end is after `t`).
    fn seek(&mut self, t: Ms) -> usize {
        let p = self.periods;
        let ended = |q: &Interval| q.end <= t;
        if self.at > 0 && !ended(&p[self.at - 1]) {
            self.at = p.partition_point(ended);
            return self.at;
        }
        let (mut lo, mut hi, mut step) = (self.at, self.at, 1);
        while hi < p.len() && ended(&p[hi]) {
            lo = hi + 1;
            hi += step;
            step *= 2;
        }
        let hi = hi.min(p.len());
        self.at = lo + p[lo..hi].partition_point(ended);
        self.at
    }

    /// Indices of the periods `iv` may overlap.
    fn overlapping(&mut self, iv: Interval) -> Range<usize> {
        let from = self.seek(iv.start);
        let to = from
            + self.periods[from..]
                .iter()
                .take_while(|p| p.start < iv.end)
                .count();
        from..to
    }

    /// Index of the period containing `t`, if any.
    fn containing(&mut self, t: Ms) -> Option<usize> {
        let i = self.seek(t);
        self.periods.get(i).filter(|p| p.contains(t)).map(|_| i)
    }
}

/// Sums many periods in one sweep, with the rules of [`period_totals`] and
/// the corrected figures (§7): one [`PeriodTotals`] per period, same order.
/// `periods` sorted and disjoint (need not be contiguous); `open_ms` is
/// always `None` (the caller fills it). O((n + periods) log n).
pub fn totals_for_periods(inputs: &TotalsInputs<'_>, periods: &[Interval]) -> Vec<PeriodTotals> {
    debug_assert!(
        periods
            .windows(2)
            .all(|w| w[0].start <= w[1].start && w[0].end <= w[1].start),
        "periods must be sorted and disjoint"
    );
    let mut acc: Vec<Acc> = periods.iter().map(|_| Acc::default()).collect();
    let type_of: FastMap<&str, UsageType> = inputs
        .bookings
        .iter()
        .map(|b| (b.booking_id.as_str(), b.usage_type))
        .collect();

    // Usage, by owner and usage type.
    let mut finder = Periods::new(periods);
    for seg in &inputs.reconciliation.segments {
        let k = match seg.booking_id.as_deref() {
            Some(id) => type_of.get(id).map_or(UNASSIGNED_KEY, |&t| key(t)),
            None => UNASSIGNED_KEY,
        };
        for i in finder.overlapping(seg.interval) {
            let ms = seg.interval.overlap(&periods[i]);
            let a = &mut acc[i];
            a.used += ms;
            if seg.booking_id.is_some() {
                a.booked_used += ms;
            } else {
                a.unbooked += ms;
            }
            a.by_type[k] += ms;
        }
    }

    // Corrections: unbooked usage inside an assigning correction.
    let assigned = assigned_pieces(inputs.corrections);
    if !assigned.is_empty() {
        for seg in inputs
            .reconciliation
            .segments
            .iter()
            .filter(|g| g.booking_id.is_none())
        {
            let from = assigned.partition_point(|(p, _)| p.end <= seg.interval.start);
            for (piece, ty) in assigned[from..]
                .iter()
                .take_while(|(p, _)| p.start < seg.interval.end)
            {
                let Some(part) = piece.intersect(&seg.interval) else {
                    continue;
                };
                for i in finder.overlapping(part) {
                    let ms = part.overlap(&periods[i]);
                    let a = &mut acc[i];
                    a.assigned += ms;
                    if let Some(t) = ty {
                        a.moved[UNASSIGNED_KEY] -= ms;
                        a.moved[key(*t)] += ms;
                    }
                }
            }
        }
    }

    // Move corrections: usage taken from one booking's type to another's.
    for m in inputs.moved {
        let (from, to) = (
            type_of
                .get(m.from.as_str())
                .map_or(UNASSIGNED_KEY, |&t| key(t)),
            type_of
                .get(m.to.as_str())
                .map_or(UNASSIGNED_KEY, |&t| key(t)),
        );
        for i in finder.overlapping(m.interval) {
            let ms = m.interval.overlap(&periods[i]);
            acc[i].moved[from] -= ms;
            acc[i].moved[to] += ms;
        }
    }

    // Booked time: confirmed slots, overlapping ones each counted.
    for b in inputs.bookings.iter().filter(|b| b.is_confirmed()) {
        let slot = b.slot();
        for i in finder.overlapping(slot) {
            acc[i].booked += slot.overlap(&periods[i]);
        }
    }

    // No-shows, in the period containing the booking's start (any booking
    // with the report's id).
    let no_show_ids: FastMap<&str, ()> = inputs
        .reconciliation
        .reports
        .iter()
        .filter(|r| r.outcome == Outcome::NoShow)
        .map(|r| (r.booking_id.as_str(), ()))
        .collect();
    let mut starts: Vec<(&str, Ms)> = inputs
        .bookings
        .iter()
        .filter(|b| no_show_ids.contains_key(b.booking_id.as_str()))
        .map(|b| (b.booking_id.as_str(), b.start))
        .collect();
    starts.sort_unstable();
    let mut hit: Vec<usize> = Vec::new();
    for r in &inputs.reconciliation.reports {
        if r.outcome != Outcome::NoShow {
            continue;
        }
        let id = r.booking_id.as_str();
        let from = starts.partition_point(|&(b, _)| b < id);
        hit.clear();
        hit.extend(
            starts[from..]
                .iter()
                .take_while(|&&(b, _)| b == id)
                .filter_map(|&(_, t)| finder.containing(t)),
        );
        hit.sort_unstable();
        hit.dedup();
        for &i in &hit {
            acc[i].no_shows += 1;
        }
    }

    for f in inputs.result_files {
        if let Some(i) = finder.containing(f.mtime) {
            acc[i].result_files += 1;
        }
    }
    for &(at, wh) in inputs.energy {
        if let Some(i) = finder.containing(at) {
            let e = &mut acc[i].energy_wh;
            *e = Some(e.map_or(wh, |sum| sum + wh));
        }
    }

    let timeline = inputs.timeline.index();
    periods
        .iter()
        .zip(acc)
        .map(|(&p, a)| {
            let mut corrected = a.by_type;
            for (c, m) in corrected.iter_mut().zip(a.moved) {
                *c += m;
            }
            PeriodTotals {
                instrument_id: inputs.instrument_id.to_owned(),
                period: p,
                used_ms: a.used,
                booked_ms: a.booked,
                booked_used_ms: a.booked_used,
                unbooked_ms: a.unbooked,
                external_ms: a.by_type[key(UsageType::External)],
                by_usage_type_ms: key_map(&a.by_type),
                open_ms: None,
                no_show_count: a.no_shows,
                fault_ms: timeline.time_in(State::Fault, p),
                unknown_ms: timeline.time_in(State::Unknown, p),
                result_files: a.result_files,
                energy_kwh: a.energy_wh.map(|wh| wh / 1000.0),
                assigned_ms: a.assigned,
                corrected_by_usage_type_ms: key_map(&corrected),
            }
        })
        .collect()
}

/// Milliseconds as hours rounded to two decimals.
pub fn hours(ms: Ms) -> f64 {
    (ms as f64 / 36_000.0).round() / 100.0
}

/// A ratio as reported (share rate, utilization, coverage): `part / whole`
/// rounded to 4 decimals (0.01 %), so a day whose first sample came 57 ms
/// after midnight has coverage 1, not 0.9999993. `whole` must not be 0.
/// Sums and further ratios are computed from the unrounded milliseconds.
pub fn ratio(part: f64, whole: f64) -> f64 {
    (part / whole * 10_000.0).round() / 10_000.0
}

/// Energy as reported: kWh rounded to the watt-hour (3 decimals), so sums
/// of many summaries do not print binary noise.
pub fn round_kwh(kwh: f64) -> f64 {
    (kwh * 1000.0).round() / 1000.0
}

impl PeriodTotals {
    /// Adds `other` (another instrument, or the next day of a month): every
    /// ms field and count, the usage-type maps key by key; `open_ms` only
    /// when both are known (unknown open hours make the sum unknown);
    /// `energy_kwh` when either is known. `period` becomes the hull of both;
    /// `instrument_id` stays this one's.
    pub fn add(&mut self, other: &PeriodTotals) {
        self.period = Interval::new(
            self.period.start.min(other.period.start),
            self.period.end.max(other.period.end),
        );
        self.used_ms += other.used_ms;
        self.booked_ms += other.booked_ms;
        self.booked_used_ms += other.booked_used_ms;
        self.unbooked_ms += other.unbooked_ms;
        for (k, v) in &other.by_usage_type_ms {
            *self.by_usage_type_ms.entry(k.clone()).or_default() += v;
        }
        self.external_ms += other.external_ms;
        self.open_ms = match (self.open_ms, other.open_ms) {
            (Some(a), Some(b)) => Some(a + b),
            _ => None,
        };
        self.no_show_count += other.no_show_count;
        self.fault_ms += other.fault_ms;
        self.unknown_ms += other.unknown_ms;
        self.result_files += other.result_files;
        self.energy_kwh = match (self.energy_kwh, other.energy_kwh) {
            (Some(a), Some(b)) => Some(a + b),
            (a, b) => a.or(b),
        };
        self.assigned_ms += other.assigned_ms;
        for (k, v) in &other.corrected_by_usage_type_ms {
            *self
                .corrected_by_usage_type_ms
                .entry(k.clone())
                .or_default() += v;
        }
    }

    /// The reported row; `tz` gives the local offsets of the period edges.
    pub fn to_row(&self, tz: &TimeZone) -> HoursRow {
        self.to_row_over(tz, 1)
    }

    /// The row of totals summed over `instruments` instruments: without open
    /// hours, utilization and coverage are taken against `instruments ×`
    /// the period length.
    pub fn to_row_over(&self, tz: &TimeZone, instruments: u32) -> HoursRow {
        let local = |ms: Ms| {
            Timestamp::from_millisecond(ms)
                .map(|t| {
                    t.to_zoned(tz.clone())
                        .strftime("%Y-%m-%dT%H:%M:%S%:z")
                        .to_string()
                })
                .unwrap_or_default()
        };
        let len = self.period.len() * Ms::from(instruments.max(1));
        let utilization = match self.open_ms {
            Some(open) if open > 0 => Some(ratio(self.used_ms as f64, open as f64)),
            Some(_) => None,
            None if len > 0 => Some(ratio(self.used_ms as f64, len as f64)),
            None => None,
        };
        HoursRow {
            instrument_id: self.instrument_id.clone(),
            period_start: local(self.period.start),
            period_end: local(self.period.end),
            used_hours: hours(self.used_ms),
            booked_hours: hours(self.booked_ms),
            booked_used_hours: hours(self.booked_used_ms),
            unbooked_hours: hours(self.unbooked_ms),
            by_usage_type: self
                .by_usage_type_ms
                .iter()
                .map(|(k, &v)| (k.clone(), hours(v)))
                .collect(),
            external_hours: hours(self.external_ms),
            share_rate: (self.used_ms > 0)
                .then(|| ratio(self.external_ms as f64, self.used_ms as f64)),
            open_hours: self.open_ms.map(hours),
            utilization,
            no_show_count: self.no_show_count,
            fault_hours: hours(self.fault_ms),
            unknown_hours: hours(self.unknown_ms),
            coverage: if len > 0 {
                ratio((len - self.unknown_ms) as f64, len as f64)
            } else {
                0.0
            },
            result_files: self.result_files,
            energy_kwh: self.energy_kwh.map(round_kwh),
        }
    }
}
