//! RRULE (RFC 5545 §3.3.10) at the level of dates: which days a rule
//! lands on. The time of day is DTSTART's (no BYHOUR / BYMINUTE), so the
//! caller places each date in the event's zone.
//!
//! Each period (a day, week, month or year, `INTERVAL` apart) gives its
//! candidate dates from BYMONTH / BYMONTHDAY / BYDAY, then BYSETPOS picks
//! among them: the order of RFC 5545's table of BY* parts.

use jiff::ToSpan;
use jiff::civil::{Date, Weekday};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Freq {
    Daily,
    Weekly,
    Monthly,
    Yearly,
}

/// The parts of an RRULE this importer supports.
#[derive(Debug, Clone)]
pub struct Rule {
    pub freq: Freq,
    pub interval: i64,
    pub count: Option<usize>,
    /// UNTIL as written: the caller reads it in the series' zone.
    pub until: Option<String>,
    /// (ordinal, weekday); ordinal 0 = every such weekday.
    pub by_day: Vec<(i8, Weekday)>,
    pub by_month_day: Vec<i8>,
    pub by_month: Vec<i8>,
    pub by_set_pos: Vec<i16>,
    pub week_start: Weekday,
}

pub fn weekday(code: &str) -> Option<Weekday> {
    Some(match code {
        "MO" => Weekday::Monday,
        "TU" => Weekday::Tuesday,
        "WE" => Weekday::Wednesday,
        "TH" => Weekday::Thursday,
        "FR" => Weekday::Friday,
        "SA" => Weekday::Saturday,
        "SU" => Weekday::Sunday,
        _ => return None,
    })
}

/// A comma list of integers, each non-zero and within ±`max`.
fn numbers<T: TryFrom<i64>>(part: &str, v: &str, max: i64) -> Result<Vec<T>, String> {
    v.split(',')
        .map(|n| {
            n.trim()
                .parse::<i64>()
                .ok()
                .filter(|n| *n != 0 && n.abs() <= max)
                .and_then(|n| T::try_from(n).ok())
                .ok_or_else(|| format!("RRULE {part} {n:?} is not a number from 1 to {max}"))
        })
        .collect()
}

fn positive(part: &str, v: &str) -> Result<i64, String> {
    v.parse()
        .ok()
        .filter(|n| *n >= 1)
        .ok_or_else(|| format!("RRULE {part} {v:?} is not a positive number"))
}

/// `1MO`, `-1FR`, `TU` → (ordinal, weekday).
fn by_day_item(code: &str) -> Result<(i8, Weekday), String> {
    let code = code.trim();
    let split = code.len().saturating_sub(2);
    let (n, day) = code.split_at(split);
    let day = weekday(day).ok_or_else(|| format!("RRULE BYDAY {code:?} is not a weekday"))?;
    let n = match n.trim_start_matches('+') {
        "" => 0,
        n => n
            .parse::<i8>()
            .ok()
            .filter(|n| *n != 0 && n.abs() <= 53)
            .ok_or_else(|| format!("RRULE BYDAY {code:?} has a bad ordinal"))?,
    };
    Ok((n, day))
}

pub fn parse(value: &str) -> Result<Rule, String> {
    let mut rule = Rule {
        freq: Freq::Daily,
        interval: 1,
        count: None,
        until: None,
        by_day: Vec::new(),
        by_month_day: Vec::new(),
        by_month: Vec::new(),
        by_set_pos: Vec::new(),
        week_start: Weekday::Monday,
    };
    let mut freq = None;
    for part in value.trim().split(';').filter(|p| !p.is_empty()) {
        let (k, v) = part
            .split_once('=')
            .ok_or_else(|| format!("RRULE part {part:?} is not NAME=VALUE"))?;
        let v = v.trim().to_ascii_uppercase();
        match k.trim().to_ascii_uppercase().as_str() {
            "FREQ" => freq = Some(v),
            "INTERVAL" => rule.interval = positive("INTERVAL", &v)?,
            "COUNT" => rule.count = Some(positive("COUNT", &v)? as usize),
            "UNTIL" => rule.until = Some(v),
            "BYDAY" => rule.by_day = v.split(',').map(by_day_item).collect::<Result<_, _>>()?,
            "BYMONTHDAY" => rule.by_month_day = numbers("BYMONTHDAY", &v, 31)?,
            "BYMONTH" => {
                rule.by_month = numbers("BYMONTH", &v, 12)?;
                if rule.by_month.iter().any(|m| *m < 0) {
                    return Err(format!("RRULE BYMONTH {v:?} is not a month from 1 to 12"));
                }
            }
            "BYSETPOS" => rule.by_set_pos = numbers("BYSETPOS", &v, 366)?,
            "WKST" => {
                rule.week_start =
                    weekday(&v).ok_or_else(|| format!("RRULE WKST {v:?} is not a weekday"))?
            }
            other => {
                return Err(format!(
                    "RRULE part {other} is not supported (supported: FREQ, INTERVAL, COUNT, \
                     UNTIL, BYDAY, BYMONTHDAY, BYMONTH, BYSETPOS, WKST)"
                ));
            }
        }
    }
    rule.freq = match freq.as_deref() {
        Some("DAILY") => Freq::Daily,
        Some("WEEKLY") => Freq::Weekly,
        Some("MONTHLY") => Freq::Monthly,
        Some("YEARLY") => Freq::Yearly,
        Some(f) => {
            return Err(format!(
                "RRULE FREQ={f} is not supported (DAILY, WEEKLY, MONTHLY, YEARLY)"
            ));
        }
        None => return Err("RRULE has no FREQ".into()),
    };
    check(&rule)?;
    Ok(rule)
}

/// The combinations RFC 5545 forbids.
fn check(rule: &Rule) -> Result<(), String> {
    if rule.count.is_some() && rule.until.is_some() {
        return Err("RRULE has both COUNT and UNTIL".into());
    }
    let ordinals = rule.by_day.iter().any(|(n, _)| *n != 0);
    if ordinals && matches!(rule.freq, Freq::Daily | Freq::Weekly) {
        return Err("RRULE BYDAY ordinals (1MO, -1FR) need FREQ=MONTHLY or YEARLY".into());
    }
    if rule.freq == Freq::Weekly && !rule.by_month_day.is_empty() {
        return Err("RRULE BYMONTHDAY does not go with FREQ=WEEKLY".into());
    }
    Ok(())
}

/// Whether `date` is the `n`th (from the end when negative) `day` of the
/// days from `first` to `last`.
fn is_nth(date: Date, n: i8, day: Weekday, first: Date, last: Date) -> bool {
    if date.weekday() != day {
        return false;
    }
    if n > 0 {
        (date - first).get_days() / 7 + 1 == i32::from(n)
    } else {
        (last - date).get_days() / 7 + 1 == i32::from(-n)
    }
}

/// `date` passes BYDAY, ordinals counted within `first..=last`.
fn by_day_matches(rule: &Rule, date: Date, first: Date, last: Date) -> bool {
    rule.by_day.is_empty()
        || rule.by_day.iter().any(|&(n, day)| match n {
            0 => date.weekday() == day,
            n => is_nth(date, n, day, first, last),
        })
}

fn by_month_day_matches(rule: &Rule, date: Date) -> bool {
    let last = i16::from(date.days_in_month());
    rule.by_month_day.is_empty()
        || rule.by_month_day.iter().any(|&d| {
            let d = i16::from(d);
            let day = if d > 0 { d } else { last + 1 + d };
            day == i16::from(date.day())
        })
}

fn by_month_matches(rule: &Rule, date: Date) -> bool {
    rule.by_month.is_empty() || rule.by_month.contains(&date.month())
}

/// Every day from `first` to `last`.
fn days(first: Date, last: Date) -> impl Iterator<Item = Date> {
    first.series(1.day()).take_while(move |d| *d <= last)
}

/// The dates of the month starting at `month` (MONTHLY, or YEARLY with BYMONTH).
fn month_dates(rule: &Rule, month: Date, start: Date) -> Vec<Date> {
    if !by_month_matches(rule, month) {
        return Vec::new();
    }
    if rule.by_day.is_empty() && rule.by_month_day.is_empty() {
        // DTSTART's day of the month; a month without it has none.
        return month.with().day(start.day()).build().into_iter().collect();
    }
    let last = month.last_of_month();
    days(month, last)
        .filter(|d| by_month_day_matches(rule, *d) && by_day_matches(rule, *d, month, last))
        .collect()
}

/// The dates of the year starting at `year` (YEARLY).
fn year_dates(rule: &Rule, year: Date, start: Date) -> Vec<Date> {
    if !rule.by_month.is_empty() || !rule.by_month_day.is_empty() {
        let months: Vec<i8> = if rule.by_month.is_empty() {
            (1..=12).collect()
        } else {
            rule.by_month.clone()
        };
        let mut out: Vec<Date> = months
            .iter()
            .filter_map(|m| year.with().month(*m).build().ok())
            .flat_map(|m| month_dates(rule, m, start))
            .collect();
        out.sort_unstable();
        return out;
    }
    if rule.by_day.is_empty() {
        return year
            .with()
            .month(start.month())
            .day(start.day())
            .build()
            .into_iter()
            .collect();
    }
    let last = year.with().month(12).day(31).build().unwrap_or(year);
    days(year, last)
        .filter(|d| by_day_matches(rule, *d, year, last))
        .collect()
}

/// The dates of the week starting at `week` (WEEKLY): one step from the
/// week's start per weekday, not a walk over its seven days (feeds are
/// mostly weekly series, so this is the hot path).
fn week_dates(rule: &Rule, week: Date, start: Date) -> Vec<Date> {
    let offset = |day: Weekday| i64::from(day.since(rule.week_start));
    let mut dates: Vec<Date> = match rule.by_day.is_empty() {
        true => week
            .checked_add(offset(start.weekday()).days())
            .ok()
            .into_iter()
            .collect(),
        false => rule
            .by_day
            .iter()
            .filter_map(|(_, d)| week.checked_add(offset(*d).days()).ok())
            .collect(),
    };
    dates.retain(|d| by_month_matches(rule, *d));
    dates.sort_unstable();
    dates.dedup();
    dates
}

fn day_dates(rule: &Rule, day: Date) -> Vec<Date> {
    let keep = by_month_matches(rule, day)
        && by_month_day_matches(rule, day)
        && by_day_matches(rule, day, day, day);
    if keep { vec![day] } else { Vec::new() }
}

/// BYSETPOS: the positions (1-based, negative from the end) of a period's set.
fn set_pos(rule: &Rule, set: Vec<Date>) -> Vec<Date> {
    if rule.by_set_pos.is_empty() {
        return set;
    }
    let len = set.len() as i64;
    let mut out: Vec<Date> = rule
        .by_set_pos
        .iter()
        .filter_map(|&p| {
            let i = if p > 0 { p as i64 - 1 } else { len + p as i64 };
            usize::try_from(i).ok().and_then(|i| set.get(i).copied())
        })
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}

/// The first day of the `k`th period from the one holding `start`.
fn period_start(rule: &Rule, start: Date, k: i64) -> Option<Date> {
    let n = k * rule.interval;
    match rule.freq {
        Freq::Daily => start.checked_add(n.days()).ok(),
        Freq::Weekly => {
            let back = start.weekday().since(rule.week_start) as i64;
            start.checked_add((n * 7 - back).days()).ok()
        }
        Freq::Monthly => start.first_of_month().checked_add(n.months()).ok(),
        Freq::Yearly => start.first_of_year().checked_add(n.years()).ok(),
    }
}

fn period_dates(rule: &Rule, period: Date, start: Date) -> Vec<Date> {
    let set = match rule.freq {
        Freq::Daily => day_dates(rule, period),
        Freq::Weekly => week_dates(rule, period, start),
        Freq::Monthly => month_dates(rule, period, start),
        Freq::Yearly => year_dates(rule, period, start),
    };
    set_pos(rule, set)
}

/// A rule that matches nothing (BYMONTH=2;BYMONTHDAY=30) ends after this many empty periods.
const EMPTY_PERIODS: usize = 2000;

/// The rule's dates from `start` on, in order (before COUNT / UNTIL and
/// EXDATE); `start` itself only when the rule gives it.
pub fn dates(rule: &Rule, start: Date) -> impl Iterator<Item = Date> + '_ {
    let mut empty = 0usize;
    (0i64..)
        .map_while(move |k| period_start(rule, start, k).filter(|p| p.year() < 9000))
        .map(move |p| period_dates(rule, p, start))
        .take_while(move |set| {
            empty = if set.is_empty() { empty + 1 } else { 0 };
            empty < EMPTY_PERIODS
        })
        .flatten()
        .filter(move |d| *d >= start)
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::civil::date;

    fn first(rule: &str, start: Date, n: usize) -> Vec<String> {
        let rule = parse(rule).unwrap();
        dates(&rule, start).take(n).map(|d| d.to_string()).collect()
    }

    #[test]
    fn the_first_monday_of_each_month() {
        assert_eq!(
            first("FREQ=MONTHLY;BYDAY=1MO", date(2026, 1, 5), 3),
            ["2026-01-05", "2026-02-02", "2026-03-02"]
        );
    }

    #[test]
    fn the_last_friday_and_negative_month_days() {
        assert_eq!(
            first("FREQ=MONTHLY;BYDAY=-1FR", date(2026, 1, 1), 2),
            ["2026-01-30", "2026-02-27"]
        );
        assert_eq!(
            first("FREQ=MONTHLY;BYMONTHDAY=-1,15", date(2026, 2, 1), 3),
            ["2026-02-15", "2026-02-28", "2026-03-15"]
        );
    }

    #[test]
    fn bysetpos_picks_the_last_weekday_of_the_month() {
        assert_eq!(
            first(
                "FREQ=MONTHLY;BYDAY=MO,TU,WE,TH,FR;BYSETPOS=-1",
                date(2026, 5, 1),
                2
            ),
            ["2026-05-29", "2026-06-30"]
        );
    }

    #[test]
    fn a_month_without_dtstarts_day_is_skipped() {
        assert_eq!(
            first("FREQ=MONTHLY;INTERVAL=1", date(2026, 1, 31), 3),
            ["2026-01-31", "2026-03-31", "2026-05-31"]
        );
    }

    #[test]
    fn yearly_with_bymonth_and_ordinals_counts_in_the_month() {
        // The fourth Thursday of November; the second Sunday of March every other year.
        assert_eq!(
            first("FREQ=YEARLY;BYMONTH=11;BYDAY=4TH", date(2026, 1, 1), 2),
            ["2026-11-26", "2027-11-25"]
        );
        assert_eq!(
            first(
                "FREQ=YEARLY;INTERVAL=2;BYMONTH=3;BYDAY=2SU",
                date(2026, 1, 1),
                2
            ),
            ["2026-03-08", "2028-03-12"]
        );
    }

    #[test]
    fn yearly_byday_without_bymonth_counts_in_the_year() {
        assert_eq!(
            first("FREQ=YEARLY;BYDAY=1MO", date(2026, 1, 1), 2),
            ["2026-01-05", "2027-01-04"]
        );
    }

    #[test]
    fn a_rule_that_never_matches_ends() {
        assert!(first("FREQ=YEARLY;BYMONTH=2;BYMONTHDAY=30", date(2026, 1, 1), 1).is_empty());
    }

    #[test]
    fn ordinals_with_weekly_and_both_count_and_until_are_refused() {
        assert!(parse("FREQ=WEEKLY;BYDAY=1MO").is_err());
        assert!(parse("FREQ=DAILY;COUNT=2;UNTIL=20260101").is_err());
        assert!(parse("FREQ=MONTHLY;BYMONTHDAY=32").is_err());
        assert!(parse("FREQ=HOURLY").is_err());
    }
}
