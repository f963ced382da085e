//! A bookings feed written by Python's `icalendar` package, imported.
//!
//! Ignored in `cargo test`; `tests/interop/run.sh icalendar` writes the feed
//! with `tests/interop/icalendar_feed.py`, sets `LABHOURS_ICAL_FEED` to its
//! path and runs this with `--ignored`.

use jiff::Timestamp;
use jiff::tz::TimeZone;
use labhours_collector::bookings::{self, BookingStatus, Format, ParseContext, UsageType};

fn ts(s: &str) -> Timestamp {
    s.parse().expect("timestamp")
}

#[test]
#[ignore = "needs Python's icalendar: run tests/interop/run.sh icalendar"]
fn a_feed_written_by_python_icalendar_imports_as_expected() {
    let path = std::env::var("LABHOURS_ICAL_FEED").expect("LABHOURS_ICAL_FEED is set");
    let text = std::fs::read_to_string(path).expect("feed readable");
    let mut ctx = ParseContext::new(TimeZone::get("Asia/Shanghai").expect("zone"));
    ctx.instruments = Some(["nmr-600".to_owned(), "xrd-1".to_owned()].into());
    let parsed = bookings::parse(Format::Ics, &text, &ctx);
    let all = parsed.into_result().expect("no errors");
    let get = |id: &str| {
        all.iter()
            .find(|b| b.booking_id == id)
            .unwrap_or_else(|| panic!("{id} missing from {all:#?}"))
    };

    let tz = get("tz-1@bookings.example");
    assert_eq!(
        (tz.start, tz.end),
        (ts("2026-11-23T08:00:00Z"), ts("2026-11-23T09:30:00Z"))
    );
    assert_eq!(tz.usage_type, UsageType::Research);
    assert_eq!(tz.user, "Li, Alice");
    assert_eq!(tz.group, "Chem; Li lab, Room 3");
    assert_eq!(tz.instrument_id, "nmr-600");

    let day = get("allday-1@bookings.example");
    assert_eq!(
        (day.start, day.end),
        (ts("2026-11-23T16:00:00Z"), ts("2026-11-25T16:00:00Z"))
    );
    assert_eq!(day.usage_type, UsageType::Maintenance);

    let mut course: Vec<&str> = all
        .iter()
        .filter(|b| b.booking_id.starts_with("course-1@"))
        .map(|b| b.booking_id.as_str())
        .collect();
    course.sort_unstable();
    assert_eq!(
        course,
        [
            "course-1@bookings.example/20261123T060000Z",
            "course-1@bookings.example/20261130T060000Z",
            "course-1@bookings.example/20261202T060000Z",
        ]
    );
    let first = get("course-1@bookings.example/20261123T060000Z");
    assert_eq!(first.usage_type, UsageType::Teaching);
    assert_eq!(
        (first.user.as_str(), first.group.as_str()),
        ("Bob", "phys.example.edu")
    );

    let cancelled = get("cancel-1@bookings.example");
    assert_eq!(cancelled.status, BookingStatus::Cancelled);
    assert_eq!(all.len(), 6);
}
