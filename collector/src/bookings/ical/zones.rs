//! TZID → time zone, the way calendar clients read them: an IANA name
//! (jiff's tz database); else a Windows name (Outlook / Exchange exports),
//! mapped with CLDR's windowsZones table as the `windows-timezones` crate
//! ships it; else the file's own VTIMEZONE, whose current STANDARD and
//! DAYLIGHT rules become a POSIX TZ rule that jiff evaluates.

use std::collections::HashMap;

use jiff::civil::DateTime;
use jiff::tz::{Offset, TimeZone};

use super::recur::{self, Freq};

/// A STANDARD or DAYLIGHT block of a VTIMEZONE.
#[derive(Debug, Clone)]
pub struct Observance {
    pub daylight: bool,
    /// Local time (in the offset before it, TZOFFSETFROM) of the first
    /// change: POSIX rules count the change time the same way.
    pub start: DateTime,
    pub to: Offset,
    /// Its RRULE: a yearly rule, or none for a single change.
    pub rule: Option<String>,
}

/// The file's VTIMEZONEs by TZID, and what each TZID resolved to.
#[derive(Debug, Default)]
pub struct Zones {
    pub defs: HashMap<String, Vec<Observance>>,
    cache: HashMap<String, Result<TimeZone, String>>,
}

impl Zones {
    pub fn get(&mut self, tzid: &str) -> Result<TimeZone, String> {
        if let Some(found) = self.cache.get(tzid) {
            return found.clone();
        }
        let found = resolve(tzid, self.defs.get(tzid));
        self.cache.insert(tzid.to_owned(), found.clone());
        found
    }
}

fn resolve(tzid: &str, def: Option<&Vec<Observance>>) -> Result<TimeZone, String> {
    if let Ok(tz) = TimeZone::get(tzid) {
        return Ok(tz);
    }
    let windows = tzid.parse::<windows_timezones::WindowsTimezone>().ok();
    if let Some(tz) = windows.and_then(|w| TimeZone::get(w.tzdb_id()).ok()) {
        return Ok(tz);
    }
    match def {
        Some(obs) => from_vtimezone(obs).map_err(|e| format!("VTIMEZONE {tzid:?}: {e}")),
        None => Err(format!(
            "TZID {tzid:?} is neither a tz database zone (e.g. Asia/Shanghai) nor a Windows \
             zone name, and the file has no VTIMEZONE for it"
        )),
    }
}

/// The zone a VTIMEZONE describes, from its latest STANDARD and DAYLIGHT.
fn from_vtimezone(obs: &[Observance]) -> Result<TimeZone, String> {
    let latest = |daylight: bool| {
        obs.iter()
            .filter(|o| o.daylight == daylight)
            .max_by_key(|o| o.start)
    };
    let standard = latest(false).ok_or("has no STANDARD")?;
    let daylight = latest(true).filter(|d| d.rule.is_some() && standard.rule.is_some());
    let Some(daylight) = daylight else {
        // No yearly pair: the offset the latest change leads to.
        let last = obs.iter().max_by_key(|o| o.start).unwrap_or(standard);
        return Ok(TimeZone::fixed(last.to));
    };
    let posix = format!(
        "STD{}DST{},{},{}",
        posix_offset(standard.to),
        posix_offset(daylight.to),
        posix_change(daylight)?,
        posix_change(standard)?,
    );
    TimeZone::posix(&posix).map_err(|e| format!("rules {posix:?}: {e}"))
}

/// POSIX writes offsets west of UTC as positive.
fn posix_offset(offset: Offset) -> String {
    let s = -offset.seconds();
    let sign = if s < 0 { "-" } else { "" };
    let s = s.abs();
    format!("{sign}{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}

/// `Mm.w.d/hh:mm:ss`: the n-th (5 = last) weekday of a month, at a local time.
fn posix_change(o: &Observance) -> Result<String, String> {
    let text = o.rule.as_deref().unwrap_or_default();
    let unsupported = || format!("RRULE {text:?} is not a yearly n-th weekday of a month");
    let rule = recur::parse(text)?;
    let ([month], [(n, day)]) = (rule.by_month.as_slice(), rule.by_day.as_slice()) else {
        return Err(unsupported());
    };
    if rule.freq != Freq::Yearly || !rule.by_month_day.is_empty() || !(-1..=4).contains(n) {
        return Err(unsupported());
    }
    let week = if *n == -1 { 5 } else { *n };
    let t = o.start.time();
    Ok(format!(
        "M{month}.{week}.{}/{}:{:02}:{:02}",
        day.to_sunday_zero_offset(),
        t.hour(),
        t.minute(),
        t.second()
    ))
}

/// `+0800`, `-0500`, `+053000` → an offset.
pub fn parse_offset(text: &str) -> Result<Offset, String> {
    let bad = || format!("{text:?} is not a UTC offset (+hhmm)");
    let text = text.trim();
    let (sign, digits) = match text.split_at_checked(1) {
        Some(("+", d)) => (1, d),
        Some(("-", d)) => (-1, d),
        _ => return Err(bad()),
    };
    if !(digits.len() == 4 || digits.len() == 6) || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let part = |i: usize| {
        digits
            .get(i..i + 2)
            .map_or(0, |p| p.parse::<i32>().unwrap_or(0))
    };
    let seconds = sign * (part(0) * 3600 + part(2) * 60 + part(4));
    Offset::from_seconds(seconds).map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::Timestamp;
    use jiff::civil::date;

    fn obs(daylight: bool, start: &str, to: &str, rule: Option<&str>) -> Observance {
        Observance {
            daylight,
            start: start.parse().unwrap(),
            to: parse_offset(to).unwrap(),
            rule: rule.map(str::to_owned),
        }
    }

    fn offset_at(tz: &TimeZone, utc: &str) -> i32 {
        tz.to_offset(utc.parse::<Timestamp>().unwrap()).seconds() / 3600
    }

    #[test]
    fn windows_names_map_through_cldr() {
        let mut zones = Zones::default();
        let tz = zones.get("W. Europe Standard Time").unwrap();
        assert_eq!(tz.iana_name(), Some("Europe/Berlin"));
        let tz = zones.get("China Standard Time").unwrap();
        assert_eq!(tz.iana_name(), Some("Asia/Shanghai"));
    }

    #[test]
    fn an_unknown_name_without_a_vtimezone_is_an_error() {
        let mut zones = Zones::default();
        assert!(
            zones
                .get("Mars Standard Time")
                .unwrap_err()
                .contains("Mars")
        );
    }

    #[test]
    fn a_vtimezone_with_yearly_rules_changes_on_those_days() {
        let mut zones = Zones::default();
        zones.defs.insert(
            "Lab Time".into(),
            vec![
                obs(
                    false,
                    "1601-11-04T02:00:00",
                    "-0500",
                    Some("FREQ=YEARLY;BYDAY=1SU;BYMONTH=11"),
                ),
                obs(
                    true,
                    "1601-03-11T02:00:00",
                    "-0400",
                    Some("FREQ=YEARLY;BYDAY=2SU;BYMONTH=3"),
                ),
            ],
        );
        let tz = zones.get("Lab Time").unwrap();
        // 2026: 8 March and 1 November, at 02:00 local.
        assert_eq!(offset_at(&tz, "2026-03-08T06:59:59Z"), -5);
        assert_eq!(offset_at(&tz, "2026-03-08T07:00:00Z"), -4);
        assert_eq!(offset_at(&tz, "2026-11-01T05:59:59Z"), -4);
        assert_eq!(offset_at(&tz, "2026-11-01T06:00:00Z"), -5);
        let dt = date(2026, 7, 1).at(12, 0, 0, 0);
        assert_eq!(
            tz.to_offset(tz.to_timestamp(dt).unwrap()).seconds(),
            -4 * 3600
        );
    }

    #[test]
    fn a_vtimezone_with_only_standard_time_is_a_fixed_offset() {
        let mut zones = Zones::default();
        zones.defs.insert(
            "Custom".into(),
            vec![obs(false, "1601-01-01T00:00:00", "+0530", None)],
        );
        let tz = zones.get("Custom").unwrap();
        assert_eq!(
            tz.to_offset(Timestamp::UNIX_EPOCH).seconds(),
            5 * 3600 + 1800
        );
    }

    #[test]
    fn offsets_parse_with_and_without_seconds() {
        assert_eq!(parse_offset("-0430").unwrap().seconds(), -(4 * 3600 + 1800));
        assert_eq!(parse_offset("+010203").unwrap().seconds(), 3723);
        assert!(parse_offset("0800").is_err());
    }
}
