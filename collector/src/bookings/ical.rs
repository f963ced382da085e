//! iCalendar (RFC 5545) bookings, as booking systems and calendar clients
//! export them: one booking per VEVENT, recurring events expanded. See
//! `docs/bookings.md`.
//!
//! Recurrence: one RRULE (DAILY, WEEKLY, MONTHLY, YEARLY with INTERVAL,
//! COUNT / UNTIL or open-ended up to the configured horizon, BYDAY with
//! ordinals, BYMONTHDAY, BYMONTH, BYSETPOS, WKST: `recur`), RDATE, EXDATE,
//! RECURRENCE-ID overrides (RANGE=THISANDFUTURE too). TZIDs: `zones`.
//! Anything else is an error naming the event, never silently skipped;
//! what is read by a guess is imported with a warning naming the line.

mod recur;
mod zones;

use std::collections::HashMap;

use jiff::civil::{Date, DateTime, Time};
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Span, Timestamp, ToSpan};

use self::recur::Rule;
use self::zones::{Observance, Zones};
use super::{Booking, BookingStatus, ParseContext, Parsed, Progress, UsageType, to_millis};

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

/// Unfolds bytes: each continuation is joined to its line, and its line
/// break moved after the joined line (as an empty line, which [`unfold`]
/// skips), so a character split by a fold is whole again and every later
/// line keeps its number.
pub fn unfold_bytes(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len() + 2);
    let mut breaks = 0usize;
    for (i, line) in bytes.split(|b| *b == b'\n').enumerate() {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        match line.split_first() {
            Some((b' ' | b'\t', rest)) if i > 0 => {
                out.extend_from_slice(rest);
                breaks += 1;
            }
            _ => {
                if i > 0 {
                    out.extend(std::iter::repeat_n(b'\n', breaks + 1));
                }
                breaks = 0;
                out.extend_from_slice(line);
            }
        }
    }
    out.extend(std::iter::repeat_n(b'\n', breaks));
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

/// A component (VEVENT, VTIMEZONE, STANDARD...): its BEGIN line, its
/// properties and the components inside it that matter (a VTIMEZONE's).
#[derive(Debug)]
struct Component {
    name: String,
    line: u64,
    props: Vec<Property>,
    children: Vec<Component>,
}

impl Component {
    fn get(&self, name: &str) -> Option<&Property> {
        self.props.iter().find(|p| p.name == name)
    }
    fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Property> + 'a {
        self.props.iter().filter(move |p| p.name == name)
    }
    fn uid(&self) -> &str {
        self.get("UID").map_or("", |p| p.value.trim())
    }
}

/// A file's VEVENTs, and its VTIMEZONEs by TZID.
struct Calendar {
    events: Vec<Component>,
    zones: Zones,
}

/// Splits the file into components; VEVENTs and VTIMEZONEs are kept, other
/// components (VTODO, VALARM inside events...) are skipped.
fn calendar(text: &str, parsed: &mut Parsed) -> Calendar {
    let mut out = Calendar {
        events: Vec::new(),
        zones: Zones::default(),
    };
    let mut stack: Vec<Component> = Vec::new();
    for (line, raw) in unfold(text) {
        let Some(prop) = content_line(&raw) else {
            match stack.iter().rfind(|c| c.name == "VEVENT") {
                Some(ev) => parsed.error(
                    ev.line,
                    format!("event: line {line} is not a content line: {raw:?}"),
                ),
                None => parsed.error(line, format!("not a content line: {raw:?}")),
            }
            continue;
        };
        match prop.name.as_str() {
            "BEGIN" => stack.push(Component {
                name: prop.value.trim().to_ascii_uppercase(),
                line,
                props: Vec::new(),
                children: Vec::new(),
            }),
            "END" => {
                if let Some(done) = stack.pop() {
                    close(done, stack.last_mut(), &mut out);
                }
            }
            _ => {
                if let Some(c) = stack.last_mut() {
                    c.props.push(prop);
                }
            }
        }
    }
    for open in stack.iter().filter(|c| c.name == "VEVENT") {
        parsed.error(open.line, "VEVENT has no END:VEVENT");
    }
    out
}

/// Files a finished component: events and time zones are kept, the parts
/// of a time zone go to it, the rest is dropped.
fn close(done: Component, parent: Option<&mut Component>, out: &mut Calendar) {
    let parent_name = parent.as_ref().map(|p| p.name.as_str());
    match (done.name.as_str(), parent_name) {
        ("VEVENT", None | Some("VCALENDAR")) => out.events.push(done),
        ("VTIMEZONE", _) => {
            let tzid = done.get("TZID").map(|p| p.value.trim().to_owned());
            let observances = done.children.iter().filter_map(observance).collect();
            out.zones.defs.extend(tzid.map(|t| (t, observances)));
        }
        ("STANDARD" | "DAYLIGHT", Some("VTIMEZONE")) => {
            if let Some(p) = parent {
                p.children.push(done);
            }
        }
        _ => {}
    }
}

fn observance(c: &Component) -> Option<Observance> {
    let value = |name: &str| c.get(name).map(|p| p.value.trim());
    Some(Observance {
        daylight: c.name == "DAYLIGHT",
        start: DateTime::strptime("%Y%m%dT%H%M%S", value("DTSTART")?).ok()?,
        to: zones::parse_offset(value("TZOFFSETTO")?).ok()?,
        rule: value("RRULE").map(str::to_owned),
    })
}

/// How a DATE-TIME is anchored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Anchor {
    Utc,
    Tzid,
    /// No `Z`, no TZID: the site's zone (RFC 5545's "floating").
    Floating,
}

/// A DATE or DATE-TIME value with where it lives.
#[derive(Debug, Clone)]
enum When {
    /// All-day (VALUE=DATE), in the site zone.
    Date(Date),
    At(DateTime, TimeZone, Anchor),
}

/// A local time as an instant by RFC 5545 §3.3.5: a time that happens
/// twice is the earlier instant; one in a gap takes the offset before the
/// gap (so 02:30 on a spring-forward night is 03:30 after it).
fn instant(dt: DateTime, zone: &TimeZone) -> Result<Timestamp, String> {
    zone.to_ambiguous_timestamp(dt)
        .compatible()
        .map_err(|e| e.to_string())
}

impl When {
    fn instant(&self, site: &TimeZone) -> Result<Timestamp, String> {
        match self {
            When::Date(d) => instant(d.to_datetime(Time::midnight()), site),
            When::At(dt, tz, _) => instant(*dt, tz),
        }
    }

    fn date(&self) -> Date {
        match self {
            When::Date(d) => *d,
            When::At(dt, ..) => dt.date(),
        }
    }

    fn zone<'a>(&'a self, site: &'a TimeZone) -> &'a TimeZone {
        match self {
            When::Date(_) => site,
            When::At(_, tz, _) => tz,
        }
    }

    /// The same kind of value and wall-clock time on `date`.
    fn on(&self, date: Date) -> When {
        match self {
            When::Date(_) => When::Date(date),
            When::At(dt, tz, a) => When::At(date.to_datetime(dt.time()), tz.clone(), *a),
        }
    }

    /// This value's kind and zone at the instant `at` (a shifted occurrence).
    fn at(&self, at: Timestamp, site: &TimeZone) -> When {
        let local = at.to_zoned(self.zone(site).clone()).datetime();
        match self {
            When::Date(_) => When::Date(local.date()),
            When::At(_, tz, a) => When::At(local, tz.clone(), *a),
        }
    }
}

fn parse_date(value: &str) -> Result<Date, String> {
    Date::strptime("%Y%m%d", value).map_err(|_| format!("{value:?} is not a DATE (YYYYMMDD)"))
}

fn zone_name(tz: &TimeZone) -> &str {
    tz.iana_name().unwrap_or("the VTIMEZONE's rules")
}

/// A floating value in a series whose DTSTART has a TZID is read in
/// DTSTART's zone, the only sensible reading, with a warning.
fn in_start_zone(w: When, start: &When, what: &str, warnings: &mut Vec<String>) -> When {
    match (w, start) {
        (When::At(dt, _, Anchor::Floating), When::At(_, tz, Anchor::Tzid)) => {
            warnings.push(format!(
                "{what} {dt} has no zone while DTSTART has a TZID: read in DTSTART's zone ({})",
                zone_name(tz)
            ));
            When::At(dt, tz.clone(), Anchor::Tzid)
        }
        (w, _) => w,
    }
}

/// Reads values of one file: its TZIDs resolved once each.
struct Reader<'a> {
    ctx: &'a ParseContext,
    zones: Zones,
}

impl Reader<'_> {
    fn value(&mut self, value: &str, tzid: Option<&str>, is_date: bool) -> Result<When, String> {
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
        Ok(match (utc, tzid) {
            (true, _) => When::At(dt, TimeZone::UTC, Anchor::Utc),
            (false, Some(id)) => When::At(dt, self.zones.get(id.trim())?, Anchor::Tzid),
            (false, None) => When::At(dt, self.ctx.zone.clone(), Anchor::Floating),
        })
    }

    fn when(&mut self, p: &Property) -> Result<When, String> {
        self.list(p)?
            .into_iter()
            .next()
            .ok_or_else(|| format!("{} is empty", p.name))
    }

    /// A property's values (EXDATE and RDATE take comma lists).
    fn list(&mut self, p: &Property) -> Result<Vec<When>, String> {
        let is_date = p
            .param("VALUE")
            .is_some_and(|v| v.eq_ignore_ascii_case("DATE"));
        if p.param("VALUE")
            .is_some_and(|v| v.eq_ignore_ascii_case("PERIOD"))
        {
            return Err(format!("{} VALUE=PERIOD is not supported", p.name));
        }
        p.value
            .split(',')
            .filter(|v| !v.trim().is_empty())
            .map(|v| self.value(v, p.param("TZID"), is_date))
            .collect::<Result<_, _>>()
            .map_err(|e| format!("{} {e}", p.name))
    }
}

/// What every booking of an event shares.
#[derive(Debug, Clone)]
struct Fields {
    instrument: String,
    user: String,
    group: String,
    usage_type: UsageType,
    status: BookingStatus,
}

/// How long each occurrence lasts.
#[derive(Debug, Clone)]
enum Length {
    /// All-day: to local midnight this many days on.
    Days(i64),
    /// DTEND: the same exact length for every occurrence.
    Exact(SignedDuration),
    /// DURATION: days and weeks are nominal (the same local time days
    /// later, in the event's zone), hours and less exact (§3.3.6).
    Nominal(Span),
}

impl Length {
    fn end(&self, start: &When, at: Timestamp, site: &TimeZone) -> Result<Timestamp, String> {
        let nominal = |span: Span| {
            at.to_zoned(start.zone(site).clone())
                .checked_add(span)
                .map(|z| z.timestamp())
                .map_err(|e| format!("DURATION: {e}"))
        };
        match (self, start) {
            (Length::Days(n), When::Date(d)) => {
                let end = d.checked_add(n.days()).map_err(|e| e.to_string())?;
                When::Date(end).instant(site)
            }
            (Length::Days(n), When::At(..)) => nominal(n.days()),
            (Length::Exact(d), _) => at.checked_add(*d).map_err(|e| e.to_string()),
            (Length::Nominal(span), _) => nominal(*span),
        }
    }
}

/// One VEVENT, read: what its bookings share and where they fall.
#[derive(Debug)]
struct Series {
    uid: String,
    fields: Fields,
    start: When,
    length: Length,
    rule: Option<Rule>,
    until: Option<When>,
    exdates: Vec<When>,
    rdates: Vec<When>,
    /// RECURRENCE-ID: the occurrence it names, and whether later ones
    /// change too (RANGE=THISANDFUTURE).
    recurrence: Option<(Timestamp, bool)>,
    /// Read by a guess: imported, and said in the import summary.
    warnings: Vec<String>,
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

fn usage_type(event: &Component, problems: &mut Vec<String>) -> Option<UsageType> {
    let categories: Vec<String> = event
        .all("CATEGORIES")
        .flat_map(|p| text_list(&p.value))
        .map(|c| c.trim().to_owned())
        .filter(|c| !c.is_empty())
        .collect();
    let found = categories.iter().find_map(|c| UsageType::parse(c));
    if found.is_none() {
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
    found
}

fn fields(event: &Component, ctx: &ParseContext, problems: &mut Vec<String>) -> Option<Fields> {
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
    let status = match event.get("STATUS").map(|p| p.value.trim()) {
        Some(s) if s.eq_ignore_ascii_case("CANCELLED") => BookingStatus::Cancelled,
        _ => BookingStatus::Confirmed,
    };
    Some(Fields {
        usage_type: usage_type(event, problems)?,
        instrument,
        user,
        group,
        status,
    })
}

/// DTEND or DURATION (or an all-day event's one day).
fn length(event: &Component, start: &When, r: &mut Reader) -> Result<Length, String> {
    let site = &r.ctx.zone;
    if let Some(p) = event.get("DTEND") {
        return match (r.when(p)?, start) {
            (When::Date(e), When::Date(s)) => Ok(Length::Days((e - *s).get_days() as i64)),
            (end, _) => Ok(Length::Exact(
                end.instant(site)?.duration_since(start.instant(site)?),
            )),
        };
    }
    if let Some(p) = event.get("DURATION") {
        let text = p.value.trim();
        let span: Span = text
            .parse()
            .map_err(|_| format!("DURATION {text:?} is not a duration"))?;
        let whole_days = span.get_hours() == 0
            && span.get_minutes() == 0
            && span.get_seconds() == 0
            && span.get_milliseconds() == 0;
        return Ok(match start {
            When::Date(_) if whole_days => {
                Length::Days(i64::from(span.get_days()) + 7 * i64::from(span.get_weeks()))
            }
            _ => Length::Nominal(span),
        });
    }
    match start {
        When::Date(_) => Ok(Length::Days(1)),
        When::At(..) => Err("has neither DTEND nor DURATION".into()),
    }
}

/// The first occurrence's end is after its start, within MAX_BOOKING_DAYS.
fn check_length(start: &When, length: &Length, site: &TimeZone) -> Result<(), String> {
    let s = start.instant(site)?;
    let e = length.end(start, s, site)?;
    if e <= s {
        return Err("end is not after start".into());
    }
    super::too_long(s, e).map_or(Ok(()), Err)
}

/// Pushes the error of `result` to `problems`, keeping the value.
fn noted<T>(result: Result<T, String>, problems: &mut Vec<String>) -> Option<T> {
    result.map_err(|e| problems.push(e)).ok()
}

fn read(event: &Component, r: &mut Reader) -> Result<Series, String> {
    let ctx = r.ctx;
    let mut problems = Vec::new();
    let mut warnings = Vec::new();
    let uid = event.uid().to_owned();
    if uid.is_empty() {
        problems.push("has no UID (the booking_id)".to_owned());
    }
    if event.all("RRULE").count() > 1 {
        problems.push("more than one RRULE is not supported".to_owned());
    }
    let fields = fields(event, ctx, &mut problems);
    let start = match event.get("DTSTART") {
        Some(p) => noted(r.when(p), &mut problems),
        None => {
            problems.push("has no DTSTART".into());
            None
        }
    };
    let length = start.as_ref().and_then(|s| {
        let length = noted(length(event, s, r), &mut problems)?;
        noted(check_length(s, &length, &ctx.zone), &mut problems).map(|_| length)
    });
    let rule = event
        .get("RRULE")
        .and_then(|p| noted(recur::parse(&p.value), &mut problems));
    let mut list = |name: &str, r: &mut Reader, problems: &mut Vec<String>| -> Vec<When> {
        let values = event.all(name).filter_map(|p| noted(r.list(p), problems));
        let values: Vec<When> = values.flatten().collect();
        match &start {
            Some(s) => values
                .into_iter()
                .map(|w| in_start_zone(w, s, name, &mut warnings))
                .collect(),
            None => values,
        }
    };
    let exdates = list("EXDATE", r, &mut problems);
    let rdates = list("RDATE", r, &mut problems);
    let until = match (rule.as_ref().and_then(|r| r.until.clone()), &start) {
        (Some(u), Some(s)) => noted(r.value(&u, None, false), &mut problems)
            .map(|w| in_start_zone(w, s, "RRULE UNTIL", &mut warnings)),
        _ => None,
    };
    let recurrence = match event.get("RECURRENCE-ID") {
        Some(p) => {
            let future = p
                .param("RANGE")
                .is_some_and(|v| v.eq_ignore_ascii_case("THISANDFUTURE"));
            let at = r.when(p).and_then(|w| w.instant(&ctx.zone));
            noted(at, &mut problems).map(|at| (at, future))
        }
        None => None,
    };
    if !problems.is_empty() {
        return Err(problems.join("; "));
    }
    let (Some(fields), Some(start), Some(length)) = (fields, start, length) else {
        return Err("incomplete event".into());
    };
    Ok(Series {
        uid,
        fields,
        start,
        length,
        rule,
        until,
        exdates,
        rdates,
        recurrence,
        warnings,
    })
}

#[derive(Debug, Clone, Copy)]
enum UntilBound {
    Date(Date),
    Instant(Timestamp),
}

/// The rule's occurrences (instant, local start), COUNT and UNTIL applied,
/// an open-ended rule cut at the horizon. DTSTART is the first occurrence
/// even when the rule does not give it (§3.3.10), with a warning.
fn rule_occurrences(
    s: &mut Series,
    rule: &Rule,
    ctx: &ParseContext,
) -> Result<Vec<(Timestamp, When)>, String> {
    let site = &ctx.zone;
    let until = match &s.until {
        Some(When::Date(d)) => Some(UntilBound::Date(*d)),
        Some(w) => Some(UntilBound::Instant(w.instant(site)?)),
        None => None,
    };
    let horizon = (rule.count.is_none() && until.is_none()).then(|| ctx.horizon_end());
    let first = s.start.date();
    let mut dates = recur::dates(rule, first).peekable();
    let mut out = Vec::new();
    if dates.peek() != Some(&first) {
        s.warnings.push(format!(
            "DTSTART {first} ({}) is not a day of its RRULE: kept as the first occurrence \
             (the series starts off-rule)",
            first.strftime("%A")
        ));
        out.push((s.start.instant(site)?, s.start.clone()));
    }
    for (n, date) in dates.enumerate() {
        if rule.count.is_some_and(|c| n >= c) || n >= MAX_OCCURRENCES * 10 {
            break;
        }
        let occurrence = s.start.on(date);
        let at = occurrence.instant(site)?;
        let past = match until {
            Some(UntilBound::Date(d)) => date > d,
            Some(UntilBound::Instant(u)) => at > u,
            None => horizon.is_some_and(|h| at > h),
        };
        if past {
            break;
        }
        out.push((at, occurrence));
    }
    Ok(out)
}

/// Every occurrence (instant, local start): the rule's or DTSTART, plus
/// RDATEs, less EXDATEs, in order.
fn occurrences(s: &mut Series, ctx: &ParseContext) -> Result<Vec<(Timestamp, When)>, String> {
    let site = &ctx.zone;
    let mut out = match s.rule.take() {
        Some(rule) => {
            let out = rule_occurrences(s, &rule, ctx);
            s.rule = Some(rule);
            out?
        }
        None => vec![(s.start.instant(site)?, s.start.clone())],
    };
    for r in &s.rdates {
        out.push((r.instant(site)?, r.clone()));
    }
    out.sort_by_key(|(at, _)| *at);
    out.dedup_by_key(|(at, _)| *at);
    let excluded: Vec<Result<Timestamp, Date>> = s
        .exdates
        .iter()
        .map(|x| match x {
            When::Date(d) => Err(*d),
            When::At(..) => x.instant(site).map(Ok).unwrap_or(Err(Date::MIN)),
        })
        .collect();
    out.retain(|(at, w)| {
        !excluded.iter().any(|x| match x {
            Ok(t) => t == at,
            Err(d) => *d == w.date(),
        })
    });
    if out.len() > MAX_OCCURRENCES {
        return Err(format!(
            "RRULE gives more than {MAX_OCCURRENCES} occurrences"
        ));
    }
    Ok(out)
}

/// The compact UTC form used in occurrence ids: `20261123T010000Z`.
pub fn compact_utc(ts: Timestamp) -> String {
    ts.strftime("%Y%m%dT%H%M%SZ").to_string()
}

fn booking(id: String, f: &Fields, start: Timestamp, end: Timestamp) -> Booking {
    Booking {
        booking_id: id,
        instrument_id: f.instrument.clone(),
        user: f.user.clone(),
        group: f.group.clone(),
        usage_type: f.usage_type,
        start: to_millis(start),
        end: to_millis(end),
        status: f.status,
    }
}

/// A series' bookings: (occurrence instant, booking); a single event's id
/// is its UID, an occurrence's `UID/<start in UTC>`.
fn bookings(s: &mut Series, ctx: &ParseContext) -> Result<Vec<(Timestamp, Booking)>, String> {
    let recurring = s.rule.is_some() || !s.rdates.is_empty();
    occurrences(s, ctx)?
        .into_iter()
        .map(|(at, w)| {
            let id = match recurring {
                true => format!("{}/{}", s.uid, compact_utc(at)),
                false => s.uid.clone(),
            };
            let end = s.length.end(&w, at, &ctx.zone)?;
            Ok((at, booking(id, &s.fields, at, end)))
        })
        .collect()
}

fn event_error(event: &Component, message: &str) -> String {
    match event.uid() {
        "" => format!("event: {message}"),
        uid => format!("event UID {uid:?}: {message}"),
    }
}

/// The bookings so far, by id, and each series' occurrences by UID.
#[derive(Default)]
struct Book {
    by_id: HashMap<String, usize>,
    series: HashMap<String, Vec<(Timestamp, usize)>>,
}

impl Book {
    /// Adds `b` (from `line`), or replaces the booking of the same id.
    fn put(&mut self, parsed: &mut Parsed, line: u64, b: Booking) -> usize {
        match self.by_id.get(&b.booking_id) {
            Some(&i) => {
                parsed.bookings[i] = (line, b);
                i
            }
            None => {
                let i = parsed.bookings.len();
                self.by_id.insert(b.booking_id.clone(), i);
                parsed.bookings.push((line, b));
                i
            }
        }
    }
}

/// A RECURRENCE-ID override: replaces the occurrence it names; with
/// RANGE=THISANDFUTURE, later occurrences take its fields, length and
/// shift (§3.8.4.4) and keep their ids.
fn apply_override(
    s: &Series,
    line: u64,
    ctx: &ParseContext,
    book: &mut Book,
    parsed: &mut Parsed,
) -> Result<(), String> {
    let Some((rid, future)) = s.recurrence else {
        return Ok(());
    };
    let site = &ctx.zone;
    let at = s.start.instant(site)?;
    let id = format!("{}/{}", s.uid, compact_utc(rid));
    let end = s.length.end(&s.start, at, site)?;
    book.put(parsed, line, booking(id, &s.fields, at, end));
    if !future {
        return Ok(());
    }
    let shift = at.duration_since(rid);
    let later = book.series.get(&s.uid).into_iter().flatten();
    for &(original, i) in later.filter(|(r, _)| *r > rid) {
        let start = original.checked_add(shift).map_err(|e| e.to_string())?;
        let end = s.length.end(&s.start.at(start, site), start, site)?;
        let id = parsed.bookings[i].1.booking_id.clone();
        parsed.bookings[i] = (line, booking(id, &s.fields, start, end));
    }
    Ok(())
}

/// Parses iCalendar text (without BOM).
pub fn parse(text: &str, ctx: &ParseContext, progress: &Progress) -> Parsed {
    let mut parsed = Parsed::default();
    let Calendar { events, zones } = calendar(text, &mut parsed);
    let mut reader = Reader { ctx, zones };
    let mut book = Book::default();
    let mut uid_line: HashMap<String, u64> = HashMap::new();
    // Each series is dropped once read: a large feed's text is not held
    // twice over (as properties and as bookings).
    let (overrides, series): (Vec<Component>, Vec<Component>) = events
        .into_iter()
        .partition(|e| e.get("RECURRENCE-ID").is_some());
    for event in series {
        progress.parsed_one();
        let uid = event.uid();
        if let Some(first) = uid_line.get(uid).filter(|_| !uid.is_empty()) {
            let message = format!("the same UID is also the event on line {first}");
            parsed.error(event.line, event_error(&event, &message));
            continue;
        }
        uid_line.insert(uid.to_owned(), event.line);
        let read = read(&event, &mut reader).and_then(|mut s| Ok((bookings(&mut s, ctx)?, s)));
        match read {
            Ok((bookings, s)) => {
                warn(&mut parsed, &event, &s);
                let placed: Vec<(Timestamp, usize)> = bookings
                    .into_iter()
                    .map(|(at, b)| (at, book.put(&mut parsed, event.line, b)))
                    .collect();
                book.series.insert(s.uid, placed);
            }
            Err(e) => parsed.error(event.line, event_error(&event, &e)),
        }
    }
    let mut series: Vec<(Component, Result<Series, String>)> = overrides
        .into_iter()
        .map(|event| {
            let s = read(&event, &mut reader);
            (event, s)
        })
        .collect();
    // Ranges first, earliest first, so that a later range and a single
    // override both win over an earlier range.
    series.sort_by_key(|(_, s)| match s.as_ref().map(|s| s.recurrence) {
        Ok(Some((rid, true))) => (0, Some(rid)),
        _ => (1, None),
    });
    for (event, s) in series {
        progress.parsed_one();
        let done = s.and_then(|s| {
            apply_override(&s, event.line, ctx, &mut book, &mut parsed)?;
            Ok(s)
        });
        match done {
            Ok(s) => warn(&mut parsed, &event, &s),
            Err(e) => parsed.error(event.line, event_error(&event, &e)),
        }
    }
    parsed
}

fn warn(parsed: &mut Parsed, event: &Component, s: &Series) {
    for w in &s.warnings {
        parsed.warn(event.line, event_error(event, w));
    }
}
