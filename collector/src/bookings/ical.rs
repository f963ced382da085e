//! iCalendar (RFC 5545) bookings, as booking systems export them: one
//! booking per VEVENT, recurring events expanded. See `docs/bookings.md`.
//!
//! Supported recurrence: one RRULE with FREQ=DAILY or WEEKLY, INTERVAL,
//! COUNT or UNTIL (one of them is required), BYDAY (plain weekdays, no
//! ordinals) and WKST; EXDATE (any number, lists, TZID / UTC / DATE);
//! RECURRENCE-ID overrides replace the occurrence they name. Anything else
//! (RDATE, other FREQ or BY* parts, unbounded rules) is an error naming the
//! event, never silently skipped.

use std::collections::HashMap;

use jiff::civil::{Date, DateTime, Time, Weekday};
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Span, Timestamp, ToSpan};

use super::{
    Booking, BookingStatus, ParseContext, Parsed, Progress, UsageType, local_to_instant, to_millis,
};

/// At most this many occurrences per recurring event.
pub const MAX_OCCURRENCES: usize = 5000;

/// One content line after unfolding.
#[derive(Debug, Clone)]
struct Property {
    name: String,
    params: Vec<(String, String)>,
    value: String,
}

impl Property {
    fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A VEVENT: its BEGIN line and properties (nested components left out).
#[derive(Debug)]
struct Event {
    line: u64,
    props: Vec<Property>,
}

impl Event {
    fn get(&self, name: &str) -> Option<&Property> {
        self.props.iter().find(|p| p.name == name)
    }
    fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Property> + 'a {
        self.props.iter().filter(move |p| p.name == name)
    }
}

/// Unfolds lines (a line starting with a space or tab continues the one
/// before); each logical line keeps the number of its first physical line.
fn unfold(text: &str) -> Vec<(u64, String)> {
    let mut out: Vec<(u64, String)> = Vec::new();
    for (i, raw) in text.split('\n').enumerate() {
        let raw = raw.strip_suffix('\r').unwrap_or(raw);
        if let Some(rest) = raw.strip_prefix([' ', '\t'])
            && let Some(last) = out.last_mut()
        {
            last.1.push_str(rest);
            continue;
        }
        if !raw.is_empty() {
            out.push((i as u64 + 1, raw.to_owned()));
        }
    }
    out
}

/// `NAME;P=V;P="V:x":value` → property (names upper-cased).
fn content_line(line: &str) -> Option<Property> {
    let mut in_quotes = false;
    let mut colon = None;
    for (i, c) in line.char_indices() {
        match c {
            '"' => in_quotes = !in_quotes,
            ':' if !in_quotes => {
                colon = Some(i);
                break;
            }
            _ => {}
        }
    }
    let colon = colon?;
    let (head, value) = (&line[..colon], &line[colon + 1..]);
    let mut parts = Vec::new();
    let mut start = 0;
    in_quotes = false;
    for (i, c) in head.char_indices() {
        match c {
            '"' => in_quotes = !in_quotes,
            ';' if !in_quotes => {
                parts.push(&head[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&head[start..]);
    let name = parts[0].trim().to_ascii_uppercase();
    let params = parts[1..]
        .iter()
        .filter_map(|p| p.split_once('='))
        .map(|(n, v)| {
            (
                n.trim().to_ascii_uppercase(),
                v.trim().trim_matches('"').to_owned(),
            )
        })
        .collect();
    Some(Property {
        name,
        params,
        value: value.to_owned(),
    })
}

/// TEXT unescaping: `\\`, `\;`, `\,`, `\n` / `\N`.
pub fn unescape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some('n' | 'N') => out.push('\n'),
                Some(other) => out.push(other),
                None => out.push('\\'),
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Splits a TEXT list on unescaped commas, unescaping each item.
fn text_list(text: &str) -> Vec<String> {
    let mut items = Vec::new();
    let mut current = String::new();
    let mut escaped = false;
    for c in text.chars() {
        if escaped {
            current.push('\\');
            current.push(c);
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == ',' {
            items.push(unescape(&current));
            current.clear();
        } else {
            current.push(c);
        }
    }
    items.push(unescape(&current));
    items
}

/// A DATE or DATE-TIME value with where it lives.
#[derive(Debug, Clone)]
enum When {
    /// All-day (VALUE=DATE).
    Date(Date),
    /// A wall-clock time in a zone (UTC for `Z`, the TZID's, or the site's when floating).
    At(DateTime, TimeZone),
}

impl When {
    fn instant(&self, site: &TimeZone) -> Result<Timestamp, String> {
        match self {
            When::Date(d) => local_to_instant(d.to_datetime(Time::midnight()), site),
            When::At(dt, tz) => local_to_instant(*dt, tz),
        }
    }
}

fn parse_date(value: &str) -> Result<Date, String> {
    Date::strptime("%Y%m%d", value).map_err(|_| format!("{value:?} is not a DATE (YYYYMMDD)"))
}

fn parse_value(
    value: &str,
    tzid: Option<&str>,
    is_date: bool,
    site: &TimeZone,
) -> Result<When, String> {
    let value = value.trim();
    if is_date || (value.len() == 8 && !value.contains('T')) {
        return parse_date(value).map(When::Date);
    }
    let (body, utc) = match value.strip_suffix(['Z', 'z']) {
        Some(b) => (b, true),
        None => (value, false),
    };
    let dt = DateTime::strptime("%Y%m%dT%H%M%S", body)
        .map_err(|_| format!("{value:?} is not a DATE-TIME (YYYYMMDDTHHMMSS[Z])"))?;
    let tz = if utc {
        TimeZone::UTC
    } else if let Some(id) = tzid {
        TimeZone::get(id).map_err(|_| {
            format!("TZID {id:?} is not a time zone of the tz database (e.g. Asia/Shanghai)")
        })?
    } else {
        site.clone()
    };
    Ok(When::At(dt, tz))
}

fn prop_when(p: &Property, site: &TimeZone) -> Result<When, String> {
    let is_date = p
        .param("VALUE")
        .is_some_and(|v| v.eq_ignore_ascii_case("DATE"));
    parse_value(&p.value, p.param("TZID"), is_date, site).map_err(|e| format!("{} {e}", p.name))
}

/// Splits the file into VEVENTs; other components (VTIMEZONE, VALARM inside
/// events, VTODO...) are skipped.
fn events(text: &str, parsed: &mut Parsed) -> Vec<Event> {
    let mut events = Vec::new();
    let mut current: Option<Event> = None;
    let mut nested = 0usize;
    for (line, raw) in unfold(text) {
        let Some(prop) = content_line(&raw) else {
            match &current {
                Some(ev) => parsed.error(
                    ev.line,
                    format!("event: line {line} is not a content line: {raw:?}"),
                ),
                None => parsed.error(line, format!("not a content line: {raw:?}")),
            }
            continue;
        };
        let value = prop.value.trim().to_ascii_uppercase();
        match (prop.name.as_str(), current.as_mut()) {
            ("BEGIN", None) if value == "VEVENT" => {
                current = Some(Event {
                    line,
                    props: Vec::new(),
                })
            }
            ("BEGIN", Some(_)) => nested += 1,
            ("END", Some(_)) if nested > 0 => nested -= 1,
            ("END", Some(_)) if value == "VEVENT" => events.extend(current.take()),
            (_, Some(ev)) if nested == 0 => ev.props.push(prop),
            _ => {}
        }
    }
    if let Some(ev) = current {
        parsed.error(ev.line, "VEVENT has no END:VEVENT");
    }
    events
}

/// The parts of an RRULE this importer supports.
#[derive(Debug)]
struct Rule {
    daily: bool,
    interval: i64,
    count: Option<usize>,
    until: Option<When>,
    by_day: Vec<Weekday>,
    week_start: Weekday,
}

fn weekday(code: &str) -> Option<Weekday> {
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

fn parse_rule(value: &str, site: &TimeZone) -> Result<Rule, String> {
    let mut rule = Rule {
        daily: false,
        interval: 1,
        count: None,
        until: None,
        by_day: Vec::new(),
        week_start: Weekday::Monday,
    };
    let mut freq = None;
    for part in value.trim().split(';').filter(|p| !p.is_empty()) {
        let (k, v) = part
            .split_once('=')
            .ok_or_else(|| format!("RRULE part {part:?} is not NAME=VALUE"))?;
        let v = v.to_ascii_uppercase();
        match k.to_ascii_uppercase().as_str() {
            "FREQ" => freq = Some(v),
            "INTERVAL" => {
                rule.interval = v
                    .parse()
                    .ok()
                    .filter(|n| *n >= 1)
                    .ok_or_else(|| format!("RRULE INTERVAL {v:?} is not a positive number"))?
            }
            "COUNT" => {
                rule.count = Some(
                    v.parse()
                        .ok()
                        .filter(|n| *n >= 1)
                        .ok_or_else(|| format!("RRULE COUNT {v:?} is not a positive number"))?,
                )
            }
            "UNTIL" => rule.until = Some(parse_value(&v, None, false, site)?),
            "BYDAY" => {
                for code in v.split(',') {
                    rule.by_day.push(weekday(code.trim()).ok_or_else(|| {
                        format!(
                            "RRULE BYDAY {code:?} is not supported (only MO..SU without ordinals)"
                        )
                    })?);
                }
            }
            "WKST" => {
                rule.week_start =
                    weekday(&v).ok_or_else(|| format!("RRULE WKST {v:?} is not a weekday"))?
            }
            other => {
                return Err(format!(
                    "RRULE part {other} is not supported (supported: FREQ=DAILY|WEEKLY, INTERVAL, COUNT, UNTIL, BYDAY, WKST)"
                ));
            }
        }
    }
    match freq.as_deref() {
        Some("DAILY") => rule.daily = true,
        Some("WEEKLY") => {}
        Some(f) => {
            return Err(format!(
                "RRULE FREQ={f} is not supported (only DAILY and WEEKLY)"
            ));
        }
        None => return Err("RRULE has no FREQ".into()),
    }
    if rule.count.is_none() && rule.until.is_none() {
        return Err("RRULE without COUNT or UNTIL (an endless series) is not supported".into());
    }
    if rule.count.is_some() && rule.until.is_some() {
        return Err("RRULE has both COUNT and UNTIL".into());
    }
    Ok(rule)
}

/// The dates of a rule's occurrences, from `first` on (before COUNT/UNTIL and EXDATE).
fn rule_dates(rule: &Rule, first: Date) -> impl Iterator<Item = Date> + '_ {
    let by_day = if rule.by_day.is_empty() {
        vec![first.weekday()]
    } else {
        rule.by_day.clone()
    };
    let week0 = first
        .checked_sub((first.weekday().since(rule.week_start) as i64).days())
        .unwrap_or(first);
    let mut offsets: Vec<i64> = by_day
        .iter()
        .map(|d| d.since(rule.week_start) as i64)
        .collect();
    offsets.sort_unstable();
    offsets.dedup();
    let daily = rule.daily;
    let interval = rule.interval;
    let filter = rule.by_day.clone();
    (0i64..)
        .flat_map(move |k| -> Vec<Date> {
            if daily {
                first
                    .checked_add((k * interval).days())
                    .ok()
                    .into_iter()
                    .filter(|d| filter.is_empty() || filter.contains(&d.weekday()))
                    .collect()
            } else {
                let Ok(week) = week0.checked_add((k * interval * 7).days()) else {
                    return Vec::new();
                };
                offsets
                    .iter()
                    .filter_map(|o| week.checked_add(o.days()).ok())
                    .collect()
            }
        })
        .filter(move |d| *d >= first)
        .take_while(|d| d.year() < 9000)
}

/// The compact UTC form used in occurrence ids: `20261123T010000Z`.
pub fn compact_utc(ts: Timestamp) -> String {
    ts.strftime("%Y%m%dT%H%M%SZ").to_string()
}

/// Parses iCalendar text (without BOM).
pub fn parse(text: &str, ctx: &ParseContext, progress: &Progress) -> Parsed {
    let mut parsed = Parsed::default();
    let events = events(text, &mut parsed);
    // booking_id → index in parsed.bookings, and the UID's first line.
    let mut by_id: HashMap<String, usize> = HashMap::new();
    let mut uid_line: HashMap<String, u64> = HashMap::new();
    let mut overrides = Vec::new();
    for event in &events {
        progress.parsed_one();
        if event.get("RECURRENCE-ID").is_some() {
            overrides.push(event);
            continue;
        }
        let uid = event
            .get("UID")
            .map(|p| p.value.trim().to_owned())
            .unwrap_or_default();
        if !uid.is_empty() {
            if let Some(first) = uid_line.get(&uid) {
                parsed.error(
                    event.line,
                    format!("event UID {uid:?}: the same UID is also the event on line {first}"),
                );
                continue;
            }
            uid_line.insert(uid.clone(), event.line);
        }
        match expand(event, ctx) {
            Ok(bookings) => {
                for b in bookings {
                    by_id.insert(b.booking_id.clone(), parsed.bookings.len());
                    parsed.bookings.push((event.line, b));
                }
            }
            Err(e) => parsed.error(event.line, event_error(event, &e)),
        }
    }
    for event in overrides {
        progress.parsed_one();
        match expand(event, ctx) {
            Ok(bookings) => {
                for b in bookings {
                    match by_id.get(&b.booking_id) {
                        Some(&i) => parsed.bookings[i] = (event.line, b),
                        None => {
                            by_id.insert(b.booking_id.clone(), parsed.bookings.len());
                            parsed.bookings.push((event.line, b));
                        }
                    }
                }
            }
            Err(e) => parsed.error(event.line, event_error(event, &e)),
        }
    }
    parsed
}

fn event_error(event: &Event, message: &str) -> String {
    match event
        .get("UID")
        .map(|p| p.value.trim())
        .filter(|u| !u.is_empty())
    {
        Some(uid) => format!("event UID {uid:?}: {message}"),
        None => format!("event: {message}"),
    }
}

/// The user: ORGANIZER's (else the first ATTENDEE's) CN, else its address without `mailto:`.
fn person(p: &Property) -> String {
    if let Some(cn) = p.param("CN").filter(|cn| !cn.trim().is_empty()) {
        return cn.trim().to_owned();
    }
    mail(p).unwrap_or_else(|| p.value.trim().to_owned())
}

fn mail(p: &Property) -> Option<String> {
    let v = p.value.trim();
    (v.len() > 7 && v[..7].eq_ignore_ascii_case("mailto:")).then(|| v[7..].to_owned())
}

/// One event → its bookings (one, or one per occurrence).
fn expand(event: &Event, ctx: &ParseContext) -> Result<Vec<Booking>, String> {
    let mut problems = Vec::new();
    let uid = event
        .get("UID")
        .map(|p| p.value.trim().to_owned())
        .unwrap_or_default();
    if uid.is_empty() {
        problems.push("has no UID (the booking_id)".to_owned());
    }
    if event.get("RDATE").is_some() {
        problems.push("RDATE is not supported".to_owned());
    }
    if event.all("RRULE").count() > 1 {
        problems.push("more than one RRULE is not supported".to_owned());
    }
    let instrument = event
        .get(&ctx.ical_instrument_property)
        .or_else(|| event.get("LOCATION"))
        .map(|p| unescape(p.value.trim()))
        .unwrap_or_default();
    if let Some(p) = ctx.check_instrument(&instrument) {
        problems.push(format!(
            "{p} (from {} or LOCATION)",
            ctx.ical_instrument_property
        ));
    }
    let organizer = event.get("ORGANIZER");
    let user = organizer
        .or_else(|| event.get("ATTENDEE"))
        .map(person)
        .unwrap_or_default();
    let group = match event.get(&ctx.ical_group_property) {
        Some(p) => unescape(p.value.trim()),
        None => organizer
            .and_then(mail)
            .and_then(|m| m.rsplit_once('@').map(|(_, d)| d.to_owned()))
            .unwrap_or_default(),
    };
    let categories: Vec<String> = event
        .all("CATEGORIES")
        .flat_map(|p| text_list(&p.value))
        .map(|c| c.trim().to_owned())
        .filter(|c| !c.is_empty())
        .collect();
    let usage_type = categories.iter().find_map(|c| UsageType::parse(c));
    if usage_type.is_none() {
        problems.push(if categories.is_empty() {
            format!(
                "has no CATEGORIES naming the usage type (one of {})",
                UsageType::ACCEPTED
            )
        } else {
            format!(
                "CATEGORIES {:?} name no usage type (one of {})",
                categories.join(","),
                UsageType::ACCEPTED
            )
        });
    }
    let status = match event
        .get("STATUS")
        .map(|p| p.value.trim().to_ascii_uppercase())
    {
        Some(s) if s == "CANCELLED" => BookingStatus::Cancelled,
        _ => BookingStatus::Confirmed,
    };
    let start = match event.get("DTSTART") {
        Some(p) => prop_when(p, &ctx.zone).map_err(|e| problems.push(e)).ok(),
        None => {
            problems.push("has no DTSTART".into());
            None
        }
    };
    // The length: nominal days for all-day events, else an exact duration.
    enum Length {
        Days(i64),
        Exact(SignedDuration),
    }
    let mut length = None;
    if let Some(start) = &start {
        let start_at = start.instant(&ctx.zone);
        if let Some(p) = event.get("DTEND") {
            match (prop_when(p, &ctx.zone), start) {
                (Ok(When::Date(e)), When::Date(s)) => {
                    length = Some(Length::Days((e - *s).get_days() as i64))
                }
                (Ok(end), _) => match (start_at.clone(), end.instant(&ctx.zone)) {
                    (Ok(s), Ok(e)) => length = Some(Length::Exact(e.duration_since(s))),
                    (Err(e), _) | (_, Err(e)) => problems.push(e),
                },
                (Err(e), _) => problems.push(e),
            }
        } else if let Some(p) = event.get("DURATION") {
            match p.value.trim().parse::<Span>() {
                Ok(span) => match (start, start_at.clone()) {
                    (When::Date(_), _) if span.get_hours() == 0 && span.get_minutes() == 0 => {
                        length = Some(Length::Days(
                            span.get_days() as i64 + 7 * span.get_weeks() as i64,
                        ))
                    }
                    (_, Ok(s)) => match s.to_zoned(ctx.zone.clone()).checked_add(span) {
                        Ok(e) => length = Some(Length::Exact(e.timestamp().duration_since(s))),
                        Err(e) => problems.push(format!("DURATION: {e}")),
                    },
                    (_, Err(e)) => problems.push(e),
                },
                Err(_) => problems.push(format!("DURATION {:?} is not a duration", p.value.trim())),
            }
        } else if matches!(start, When::Date(_)) {
            length = Some(Length::Days(1));
        } else {
            problems.push("has neither DTEND nor DURATION".into());
        }
        if let Err(e) = start_at {
            problems.push(format!("DTSTART {e}"));
        }
        let positive = match &length {
            Some(Length::Days(d)) => *d > 0,
            Some(Length::Exact(d)) => d.is_positive(),
            None => true,
        };
        if !positive {
            problems.push("end is not after start".into());
        }
        let days = match &length {
            Some(Length::Days(d)) => *d,
            Some(Length::Exact(d)) => d.as_secs() / 86_400,
            None => 0,
        };
        if days > super::MAX_BOOKING_DAYS {
            problems.push(format!(
                "lasts {days} days, more than {}: check the dates, or split it",
                super::MAX_BOOKING_DAYS
            ));
        }
    }
    let rule = match event.get("RRULE") {
        Some(p) => parse_rule(&p.value, &ctx.zone)
            .map(Some)
            .unwrap_or_else(|e| {
                problems.push(e);
                None
            }),
        None => None,
    };
    let mut exdates: Vec<When> = Vec::new();
    for p in event.all("EXDATE") {
        let is_date = p
            .param("VALUE")
            .is_some_and(|v| v.eq_ignore_ascii_case("DATE"));
        for v in p.value.split(',') {
            match parse_value(v, p.param("TZID"), is_date, &ctx.zone) {
                Ok(w) => exdates.push(w),
                Err(e) => problems.push(format!("EXDATE {e}")),
            }
        }
    }
    let recurrence_id = match event.get("RECURRENCE-ID") {
        Some(p) => match prop_when(p, &ctx.zone).and_then(|w| w.instant(&ctx.zone)) {
            Ok(ts) => Some(ts),
            Err(e) => {
                problems.push(e);
                None
            }
        },
        None => None,
    };
    if !problems.is_empty() {
        return Err(problems.join("; "));
    }
    let (Some(start), Some(length), Some(usage_type)) = (start, length, usage_type) else {
        return Err("incomplete event".into());
    };
    let booking = |id: String, s: &When| -> Result<Booking, String> {
        let s_at = s.instant(&ctx.zone)?;
        let e_at = match (&length, s) {
            (Length::Days(n), When::Date(d)) => {
                let end = d.checked_add(n.days()).map_err(|e| e.to_string())?;
                When::Date(end).instant(&ctx.zone)?
            }
            (Length::Exact(dur), _) => s_at.checked_add(*dur).map_err(|e| e.to_string())?,
            (Length::Days(n), When::At(..)) => s_at
                .checked_add(SignedDuration::from_hours(24 * n))
                .map_err(|e| e.to_string())?,
        };
        Ok(Booking {
            booking_id: id,
            instrument_id: instrument.clone(),
            user: user.clone(),
            group: group.clone(),
            usage_type,
            start: to_millis(s_at),
            end: to_millis(e_at),
            status,
        })
    };
    if let Some(rid) = recurrence_id {
        return Ok(vec![booking(
            format!("{uid}/{}", compact_utc(rid)),
            &start,
        )?]);
    }
    let Some(rule) = rule else {
        return Ok(vec![booking(uid, &start)?]);
    };
    let first = match &start {
        When::Date(d) => *d,
        When::At(dt, _) => dt.date(),
    };
    let until = match &rule.until {
        Some(When::Date(d)) => Some(UntilBound::Date(*d)),
        Some(w) => Some(UntilBound::Instant(w.instant(&ctx.zone)?)),
        None => None,
    };
    let mut out = Vec::new();
    for (n, date) in rule_dates(&rule, first).enumerate() {
        if rule.count.is_some_and(|c| n >= c) || n >= MAX_OCCURRENCES * 10 {
            break;
        }
        let occurrence = match &start {
            When::Date(_) => When::Date(date),
            When::At(dt, tz) => When::At(date.to_datetime(dt.time()), tz.clone()),
        };
        let at = match &occurrence {
            When::At(dt, tz) => tz
                .to_ambiguous_timestamp(*dt)
                .compatible()
                .map_err(|e| e.to_string())?,
            When::Date(_) => occurrence.instant(&ctx.zone)?,
        };
        match until {
            Some(UntilBound::Date(d)) if date > d => break,
            Some(UntilBound::Instant(u)) if at > u => break,
            _ => {}
        }
        let excluded = exdates.iter().any(|x| match x {
            When::Date(d) => *d == date,
            When::At(..) => x.instant(&ctx.zone).is_ok_and(|t| t == at),
        });
        if excluded {
            continue;
        }
        if out.len() >= MAX_OCCURRENCES {
            return Err(format!(
                "RRULE gives more than {MAX_OCCURRENCES} occurrences"
            ));
        }
        let mut b = booking(format!("{uid}/{}", compact_utc(at)), &occurrence)?;
        b.start = to_millis(at);
        if let Length::Exact(dur) = length {
            b.end = to_millis(at.checked_add(dur).map_err(|e| e.to_string())?);
        }
        out.push(b);
    }
    Ok(out)
}

#[derive(Debug, Clone, Copy)]
enum UntilBound {
    Date(Date),
    Instant(Timestamp),
}
