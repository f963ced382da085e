//! Published open hours (开放机时), compiled from [`OpenHoursConfig`].
//!
//! The model: a weekly schedule in 30-minute steps, plus dated `extra_open`
//! periods, minus dated `closed` periods — **closed wins** when both cover an
//! instant. Every time is local in the instrument's zone: an instant is open
//! when its local wall-clock time is. So on a spring-forward day a slot in the
//! skipped hour is cut (01:30–03:30 in Europe/Berlin on 2026-03-29 is 1 h),
//! and on a fall-back day a slot over the repeated hour counts it twice.
//!
//! How [`OpenHours::open_ms`] stays fast: the period is cut at the zone's
//! transitions (usually none, at most a few per year); on each piece the
//! local time is the instant plus one fixed offset, so the open time is
//! measured on the local time line. There the weekly schedule is periodic and
//! a prefix sum over the 336 half-hours of a week measures any range in O(1);
//! the dated periods are sorted, merged and found by binary search. A year
//! costs about as much as a day.

use jiff::Timestamp;
use jiff::civil::{Date, DateTime, Time};
use jiff::tz::TimeZone;
use labhours_shared::config::ConfigError;

use crate::config::{DatedPeriod, OpenHoursConfig};
use crate::reconcile::{Interval, Ms};

const HALF_HOUR_MS: Ms = 30 * 60 * 1000;
const DAY_MS: Ms = 24 * 60 * 60 * 1000;
const WEEK_MS: Ms = 7 * DAY_MS;
const SLOTS_PER_DAY: usize = 48;
const SLOTS_PER_WEEK: usize = 7 * SLOTS_PER_DAY;
/// Local time of Monday 1969-12-29 00:00, the origin of the weekly slots
/// (1970-01-01 was a Thursday).
const WEEK_ORIGIN: Ms = -3 * DAY_MS;

/// Compiled open hours; times are *local* milliseconds (the wall-clock time
/// read as if it were UTC), so one compiled value serves any zone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenHours {
    /// `prefix[k]`: open half-hours among the week's slots `0..k`
    /// (slot 0 = Monday 00:00–00:30).
    prefix: [u16; SLOTS_PER_WEEK + 1],
    /// `extra_open`, sorted and merged.
    extra: Vec<Interval>,
    /// `closed`, sorted and merged.
    closed: Vec<Interval>,
    /// What it was compiled from (for display).
    source: OpenHoursConfig,
}

impl OpenHours {
    /// Parses and checks `config`. Errors name the field relative to the
    /// open-hours table (`weekly.mon[1]`, `closed[0].to`) with the fix.
    pub fn compile(config: &OpenHoursConfig) -> Result<Self, Vec<ConfigError>> {
        let mut errors = Vec::new();
        let mut open = [false; SLOTS_PER_WEEK];
        for (day, (key, ranges)) in config.weekly.days().into_iter().enumerate() {
            for (i, range) in ranges.iter().enumerate() {
                match parse_range(range) {
                    Ok((from, to)) => {
                        let base = day * SLOTS_PER_DAY;
                        open[base + from..base + to].fill(true);
                    }
                    Err((problem, fix)) => {
                        errors.push(ConfigError::new(format!("weekly.{key}[{i}]"), problem, fix));
                    }
                }
            }
        }
        let mut prefix = [0u16; SLOTS_PER_WEEK + 1];
        for (k, &is_open) in open.iter().enumerate() {
            prefix[k + 1] = prefix[k] + u16::from(is_open);
        }
        let extra = compile_periods("extra_open", &config.extra_open, &mut errors);
        let closed = compile_periods("closed", &config.closed, &mut errors);
        if errors.is_empty() {
            Ok(Self {
                prefix,
                extra,
                closed,
                source: config.clone(),
            })
        } else {
            Err(errors)
        }
    }

    /// The configuration these open hours were compiled from.
    pub fn config(&self) -> &OpenHoursConfig {
        &self.source
    }

    /// Open time, in milliseconds, within `period` for an instrument in `zone`.
    pub fn open_ms(&self, zone: &TimeZone, period: Interval) -> Ms {
        let lo = Timestamp::MIN.as_millisecond();
        let hi = Timestamp::MAX.as_millisecond();
        let end = period.end.clamp(lo, hi);
        let mut start = period.start.clamp(lo, hi);
        if end <= start {
            return 0;
        }
        let mut offset = offset_ms(zone, start);
        let mut total = 0;
        for transition in zone.following(timestamp(start)) {
            let at = transition.timestamp().as_millisecond();
            if at >= end {
                break;
            }
            total += self.local_open(start + offset, at.max(start) + offset);
            start = at.max(start);
            offset = Ms::from(transition.offset().seconds()) * 1000;
        }
        total + self.local_open(start + offset, end + offset)
    }

    /// Open time in the local range `[from, to)`: (weekly ∪ extra) ∖ closed.
    fn local_open(&self, from: Ms, to: Ms) -> Ms {
        if to <= from {
            return 0;
        }
        let mut total = 0;
        let mut cursor = from;
        let first = self.closed.partition_point(|c| c.end <= from);
        for closed in &self.closed[first..] {
            if closed.start >= to {
                break;
            }
            total += self.weekly_or_extra(cursor, closed.start.min(to));
            cursor = cursor.max(closed.end);
        }
        total + self.weekly_or_extra(cursor, to)
    }

    /// Open time in the local range `[from, to)`: weekly ∪ extra.
    fn weekly_or_extra(&self, from: Ms, to: Ms) -> Ms {
        if to <= from {
            return 0;
        }
        let mut total = self.weekly(from, to);
        let first = self.extra.partition_point(|e| e.end <= from);
        for extra in &self.extra[first..] {
            if extra.start >= to {
                break;
            }
            let (a, b) = (extra.start.max(from), extra.end.min(to));
            total += (b - a) - self.weekly(a, b);
        }
        total
    }

    /// Weekly open time in the local range `[from, to)`.
    fn weekly(&self, from: Ms, to: Ms) -> Ms {
        self.weekly_before(to) - self.weekly_before(from)
    }

    /// Weekly open time from the week origin to the local time `t`.
    fn weekly_before(&self, t: Ms) -> Ms {
        let since = t - WEEK_ORIGIN;
        let weeks = since.div_euclid(WEEK_MS);
        let in_week = since.rem_euclid(WEEK_MS);
        // in_week < WEEK_MS, so the slot is below SLOTS_PER_WEEK.
        let slot = (in_week / HALF_HOUR_MS) as usize;
        let slot_open = self.prefix[slot + 1] > self.prefix[slot];
        let week_ms = Ms::from(self.prefix[SLOTS_PER_WEEK]) * HALF_HOUR_MS;
        weeks * week_ms
            + Ms::from(self.prefix[slot]) * HALF_HOUR_MS
            + if slot_open { in_week % HALF_HOUR_MS } else { 0 }
    }
}

fn timestamp(ms: Ms) -> Timestamp {
    // Callers clamp to Timestamp's range first.
    Timestamp::from_millisecond(ms).unwrap_or(Timestamp::MAX)
}

fn offset_ms(zone: &TimeZone, at: Ms) -> Ms {
    Ms::from(zone.to_offset(timestamp(at)).seconds()) * 1000
}

type Problem = (String, &'static str);

const STEP_FIX: &str = "use whole or half hours (HH:00 or HH:30); \"24:00\" may end a weekly range";

/// `"HH:MM-HH:MM"` as half-hour slots `[from, to)` of a day.
fn parse_range(range: &str) -> Result<(usize, usize), Problem> {
    let Some((from, to)) = range.split_once('-') else {
        return Err((
            format!("{range:?} is not a range HH:MM-HH:MM"),
            "write it as \"08:30-12:00\"",
        ));
    };
    let from = parse_slot(from.trim(), range)?;
    let to = parse_slot(to.trim(), range)?;
    if from >= SLOTS_PER_DAY || to <= from {
        return Err((
            format!("{range:?} does not end after it starts"),
            "write the start first, e.g. \"13:30-17:30\"; split a range past midnight into \"22:00-24:00\" and \"00:00-02:00\" of the next day",
        ));
    }
    Ok((from, to))
}

/// `"HH:MM"` on a 30-minute step as the number of half hours since 00:00
/// (`"24:00"` is 48).
fn parse_slot(time: &str, range: &str) -> Result<usize, Problem> {
    let bad_format = || {
        (
            format!("{range:?} is not a range HH:MM-HH:MM"),
            "write it as \"08:30-12:00\"",
        )
    };
    let (h, m) = time.split_once(':').ok_or_else(bad_format)?;
    let two_digits = |s: &str| s.len() == 2 && s.bytes().all(|b| b.is_ascii_digit());
    if !two_digits(h) || !two_digits(m) {
        return Err(bad_format());
    }
    let (h, m): (usize, usize) = (
        h.parse().map_err(|_| bad_format())?,
        m.parse().map_err(|_| bad_format())?,
    );
    if h > 24 || m >= 60 || (h == 24 && m != 0) {
        return Err((format!("{range:?}: {time} is not a time of day"), STEP_FIX));
    }
    if m % 30 != 0 {
        return Err((
            format!("{range:?}: {time} is not on a 30-minute step"),
            STEP_FIX,
        ));
    }
    Ok(h * 2 + m / 30)
}

/// Dated periods as sorted, merged local ranges.
fn compile_periods(
    key: &str,
    periods: &[DatedPeriod],
    errors: &mut Vec<ConfigError>,
) -> Vec<Interval> {
    let mut out = Vec::with_capacity(periods.len());
    for (i, period) in periods.iter().enumerate() {
        let at = format!("{key}[{i}]");
        let from = parse_local(&period.from)
            .map_err(|(p, f)| errors.push(ConfigError::new(format!("{at}.from"), p, f)));
        let to = parse_local(&period.to)
            .map_err(|(p, f)| errors.push(ConfigError::new(format!("{at}.to"), p, f)));
        if let (Ok(from), Ok(to)) = (from, to) {
            if to <= from {
                errors.push(ConfigError::new(
                    format!("{at}.to"),
                    format!("{:?} is not after from ({:?})", period.to, period.from),
                    "a date as `to` is exclusive: for 1–7 October write from = \"2026-10-01\", to = \"2026-10-08\"",
                ));
            } else {
                out.push(Interval::new(from, to));
            }
        }
    }
    out.sort_unstable();
    let mut merged: Vec<Interval> = Vec::with_capacity(out.len());
    for period in out {
        match merged.last_mut() {
            Some(last) if period.start <= last.end => last.end = last.end.max(period.end),
            _ => merged.push(period),
        }
    }
    merged
}

/// `"YYYY-MM-DD"` (00:00 of that day) or `"YYYY-MM-DDTHH:MM"` (30-minute
/// step) as local milliseconds.
fn parse_local(text: &str) -> Result<Ms, Problem> {
    let fix = "write a local date \"2026-10-01\" or date and time \"2026-07-04T09:00\"";
    let bad_format = || {
        (
            format!("{text:?} is not a date YYYY-MM-DD or a local time YYYY-MM-DDTHH:MM"),
            fix,
        )
    };
    let (date, time) = match text.split_once('T') {
        Some((date, time)) => (date, Some(time)),
        None => (text, None),
    };
    let b = date.as_bytes();
    let shape = b.len() == 10
        && b.iter().enumerate().all(|(i, c)| {
            if i == 4 || i == 7 {
                *c == b'-'
            } else {
                c.is_ascii_digit()
            }
        });
    if !shape {
        return Err(bad_format());
    }
    let date: Date = date
        .parse()
        .map_err(|_| (format!("{text:?} is not a calendar date"), fix))?;
    let slot = match time {
        None => 0,
        Some(time) => match parse_slot(time, text) {
            Ok(slot) if slot < SLOTS_PER_DAY => slot,
            Ok(_) => {
                return Err((
                    format!("{text:?}: 24:00 is not a time of day here"),
                    "write 00:00 of the next day",
                ));
            }
            Err((problem, f)) if f == STEP_FIX => {
                return Err((problem, "use whole or half hours (HH:00 or HH:30)"));
            }
            Err(_) => return Err(bad_format()),
        },
    };
    let midnight = DateTime::from_parts(date, Time::midnight());
    let ms = midnight
        .to_zoned(TimeZone::UTC)
        .map_err(|_| (format!("{text:?} is out of range"), fix))?
        .timestamp()
        .as_millisecond();
    Ok(ms + slot as Ms * HALF_HOUR_MS)
}
