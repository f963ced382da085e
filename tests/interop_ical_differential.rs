//! labhours' iCalendar import against an independent implementation:
//! random feeds (zones with DST, Windows names, a VTIMEZONE-only name,
//! floating and all-day times; DAILY to YEARLY rules with BY* parts,
//! COUNT / UNTIL / open-ended; EXDATE, RDATE, RECURRENCE-ID overrides;
//! DTEND and DURATION) expanded by Python's `icalendar` +
//! `recurring-ical-events`, then imported here and compared occurrence by
//! occurrence.
//!
//! The one documented difference (docs/bookings.md): DTEND is an exact
//! length, the same for every occurrence, where the peer adds DTEND -
//! DTSTART as wall-clock time; for those occurrences the generator gives
//! the exact length and the end is checked against it.
//!
//! Ignored in `cargo test`; `tests/interop/run.sh icalendar` writes the
//! feeds with `tests/interop/ical_differential.py`, sets
//! `LABHOURS_ICAL_DIFFERENTIAL` to their folder and runs this with `--ignored`.

use std::path::Path;

use jiff::Timestamp;
use jiff::tz::TimeZone;
use labhours_collector::bookings::{self, Format, ParseContext, Parsed};
use serde_json::Value;

/// One occurrence as the peer gives it.
#[derive(Debug)]
struct Expected {
    start: Timestamp,
    end: Timestamp,
    /// The exact DTEND - DTSTART (seconds) when DTEND sets the length.
    exact: Option<i64>,
}

fn ts(v: &Value) -> Timestamp {
    v.as_str().expect("a string").parse().expect("a timestamp")
}

fn expected(feed: &Value) -> Vec<Expected> {
    feed["occurrences"]
        .as_array()
        .expect("occurrences")
        .iter()
        .map(|o| Expected {
            start: ts(&o["start"]),
            end: ts(&o["end"]),
            exact: o["exact"].as_i64(),
        })
        .collect()
}

fn fits(e: &Expected, (start, end): (Timestamp, Timestamp)) -> bool {
    let end_agrees = match e.exact {
        Some(secs) => end.duration_since(start).as_secs() == secs,
        None => end == e.end,
    };
    start == e.start && end_agrees
}

/// Ours and the peer's occurrences in `window`, matched one to one.
fn compare(
    parsed: &Parsed,
    peer: &[Expected],
    window: (Timestamp, Timestamp),
) -> Result<(), String> {
    if !parsed.errors.is_empty() {
        return Err(format!("import errors: {:?}", parsed.errors));
    }
    let mut ours: Vec<Option<(Timestamp, Timestamp)>> = parsed
        .bookings
        .iter()
        .map(|(_, b)| (b.start, b.end))
        .filter(|(s, _)| window.0 <= *s && *s < window.1)
        .map(Some)
        .collect();
    let mut missing = Vec::new();
    for e in peer {
        match ours.iter_mut().find(|o| o.is_some_and(|o| fits(e, o))) {
            Some(found) => *found = None,
            None => missing.push(e),
        }
    }
    let extra: Vec<_> = ours.into_iter().flatten().collect();
    if missing.is_empty() && extra.is_empty() {
        Ok(())
    } else {
        Err(format!("peer only: {missing:?}; labhours only: {extra:?}"))
    }
}

#[test]
#[ignore = "needs Python's icalendar and recurring-ical-events: run tests/interop/run.sh icalendar"]
fn generated_feeds_expand_as_python_recurring_ical_events_expands_them() {
    let dir =
        std::env::var("LABHOURS_ICAL_DIFFERENTIAL").expect("LABHOURS_ICAL_DIFFERENTIAL is set");
    let dir = Path::new(&dir);
    let spec: Value =
        serde_json::from_slice(&std::fs::read(dir.join("expected.json")).expect("expected.json"))
            .expect("JSON");
    let site = TimeZone::get(spec["site"].as_str().expect("site")).expect("zone");
    let mut ctx = ParseContext::new(site).at(ts(&spec["now"]));
    ctx.ical_horizon_days = spec["horizon_days"].as_u64().expect("horizon") as u32;
    let window = (ts(&spec["window"][0]), ts(&spec["window"][1]));
    let feeds = spec["feeds"].as_array().expect("feeds");
    let mut disagreements = Vec::new();
    let mut occurrences = 0;
    for feed in feeds {
        let name = feed["name"].as_str().expect("name");
        let bytes = std::fs::read(dir.join(name)).expect("feed");
        let text = bookings::decode(name, bytes, Format::Ics).expect("UTF-8");
        let parsed = bookings::parse(Format::Ics, &text, &ctx);
        let peer = expected(feed);
        occurrences += peer.len();
        if let Err(e) = compare(&parsed, &peer, window) {
            disagreements.push(format!("{name}: {e}"));
        }
    }
    let agree = feeds.len() - disagreements.len();
    println!(
        "iCalendar differential (seed {}): {agree}/{} feeds, {occurrences} occurrences, agree with recurring-ical-events",
        spec["seed"],
        feeds.len()
    );
    assert!(feeds.len() >= 100, "too few feeds to mean anything");
    assert!(
        disagreements.is_empty(),
        "{} disagreements, the first: {:#?}",
        disagreements.len(),
        &disagreements[..disagreements.len().min(5)]
    );
}
