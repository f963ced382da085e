//! §6 verified hours per instrument and period.

use std::collections::BTreeMap;

use jiff::tz::TimeZone;
use jiff::{Timestamp, ToSpan, Zoned};
use labhours_shared::state::State;
use serde::{Deserialize, Serialize};

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

/// Sums one period; sessions and bookings crossing its edges are cut there.
pub fn period_totals(inputs: &PeriodInputs<'_>) -> PeriodTotals {
    let p = inputs.period;
    let type_of: BTreeMap<&str, UsageType> = inputs
        .bookings
        .iter()
        .map(|b| (b.booking_id.as_str(), b.usage_type))
        .collect();
    let mut by_type: BTreeMap<String, Ms> = UsageType::ALL
        .iter()
        .map(|t| (t.as_str().to_owned(), 0))
        .chain([(UNASSIGNED.to_owned(), 0)])
        .collect();
    let (mut used, mut booked_used, mut unbooked) = (0, 0, 0);
    for seg in &inputs.reconciliation.segments {
        let ms = seg.interval.overlap(&p);
        if ms == 0 {
            continue;
        }
        used += ms;
        let key = match seg.booking_id.as_deref() {
            Some(id) => {
                booked_used += ms;
                type_of.get(id).map_or(UNASSIGNED, |t| t.as_str())
            }
            None => {
                unbooked += ms;
                UNASSIGNED
            }
        };
        *by_type.entry(key.to_owned()).or_default() += ms;
    }
    let booked = inputs
        .bookings
        .iter()
        .filter(|b| b.is_confirmed())
        .map(|b| b.slot().overlap(&p))
        .sum();
    let no_show_count = inputs
        .reconciliation
        .reports
        .iter()
        .filter(|r| r.outcome == Outcome::NoShow)
        .filter(|r| {
            inputs
                .bookings
                .iter()
                .any(|b| b.booking_id == r.booking_id && p.contains(b.start))
        })
        .count() as u64;
    PeriodTotals {
        instrument_id: inputs.instrument_id.to_owned(),
        period: p,
        used_ms: used,
        booked_ms: booked,
        booked_used_ms: booked_used,
        unbooked_ms: unbooked,
        external_ms: by_type[UsageType::External.as_str()],
        by_usage_type_ms: by_type,
        open_ms: inputs.open_ms,
        no_show_count,
        fault_ms: inputs.timeline.time_in(State::Fault, p),
        unknown_ms: inputs.timeline.time_in(State::Unknown, p),
        result_files: inputs
            .result_files
            .iter()
            .filter(|f| p.contains(f.mtime))
            .count() as u64,
        energy_kwh: inputs.energy_kwh,
    }
}

/// Milliseconds as hours rounded to two decimals.
pub fn hours(ms: Ms) -> f64 {
    (ms as f64 / 36_000.0).round() / 100.0
}

impl PeriodTotals {
    /// The reported row; `tz` gives the local offsets of the period edges.
    pub fn to_row(&self, tz: &TimeZone) -> HoursRow {
        let local = |ms: Ms| {
            Timestamp::from_millisecond(ms)
                .map(|t| {
                    t.to_zoned(tz.clone())
                        .strftime("%Y-%m-%dT%H:%M:%S%:z")
                        .to_string()
                })
                .unwrap_or_default()
        };
        let len = self.period.len();
        let utilization = match self.open_ms {
            Some(open) if open > 0 => Some(self.used_ms as f64 / open as f64),
            Some(_) => None,
            None if len > 0 => Some(self.used_ms as f64 / len as f64),
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
            share_rate: (self.used_ms > 0).then(|| self.external_ms as f64 / self.used_ms as f64),
            open_hours: self.open_ms.map(hours),
            utilization,
            no_show_count: self.no_show_count,
            fault_hours: hours(self.fault_ms),
            unknown_hours: hours(self.unknown_ms),
            coverage: if len > 0 {
                1.0 - self.unknown_ms as f64 / len as f64
            } else {
                0.0
            },
            result_files: self.result_files,
            energy_kwh: self.energy_kwh,
        }
    }
}
