//! Hand-computed cases, one per rule, and property tests.
//! Times are written in seconds from an arbitrary origin; `s()` makes them ms.

use jiff::tz::TimeZone;
use labhours_shared::state::State::{self, Fault, Off, Running, Standby, Unknown};
use proptest::prelude::*;

use super::*;
use crate::config::{ReconciliationRules, UsageSource};

const HOUR: i64 = 3600;

fn s(n: i64) -> Ms {
    n * MS_PER_S
}

fn timeline(points: &[(i64, State)], end: i64) -> Timeline {
    Timeline {
        transitions: points.iter().map(|&(t, st)| (s(t), st)).collect(),
        data_end: s(end),
    }
}

fn booking(id: &str, start: i64, end: i64) -> Booking {
    Booking {
        booking_id: id.into(),
        instrument_id: "nmr-1".into(),
        user: "alice".into(),
        group: "lab-a".into(),
        usage_type: UsageType::Research,
        start: s(start),
        end: s(end),
        status: BookingStatus::Confirmed,
    }
}

fn file(id: &str, mtime: i64) -> ResultFileRef {
    ResultFileRef {
        id: id.into(),
        path: format!("runs/{id}"),
        mtime: s(mtime),
    }
}

fn rules() -> ReconciliationRules {
    ReconciliationRules::default()
}

fn run_with(tl: &Timeline, files: &[ResultFileRef], bookings: &[Booking]) -> Reconciliation {
    let rules = rules();
    reconcile(
        &InstrumentInputs {
            instrument_id: "nmr-1",
            usage_source: UsageSource::State,
            file_run_s: None,
            timeline: tl,
            result_files: files,
            rules: &rules,
        },
        bookings,
    )
}

/// Segments owned by `id` (None = unbooked), in seconds.
fn owned(rec: &Reconciliation, id: Option<&str>) -> Vec<(i64, i64)> {
    rec.segments
        .iter()
        .filter(|g| g.booking_id.as_deref() == id)
        .map(|g| (g.interval.start / MS_PER_S, g.interval.end / MS_PER_S))
        .collect()
}

fn report<'a>(rec: &'a Reconciliation, id: &str) -> &'a BookingReport {
    rec.reports
        .iter()
        .find(|r| r.booking_id == id)
        .expect("report")
}

fn kept(sessions: &[Session]) -> Vec<(i64, i64)> {
    sessions
        .iter()
        .filter(|x| !x.dropped)
        .map(|x| (x.interval.start / MS_PER_S, x.interval.end / MS_PER_S))
        .collect()
}

/// A timeline that is off except for the given running intervals (seconds).
fn running(runs: &[(i64, i64)], end: i64) -> Timeline {
    let mut pts = vec![(0, Off)];
    for &(a, b) in runs {
        pts.push((a, Running));
        pts.push((b, Off));
    }
    timeline(&pts, end)
}

// ---- §2 sessions -------------------------------------------------------

#[test]
fn a_session_is_a_maximal_interval_in_the_in_use_states() {
    let tl = timeline(
        &[(0, Off), (1000, Running), (2000, Fault), (2500, Standby)],
        10_000,
    );
    let only_running = sessions_from_states("nmr-1", &tl, &[], &rules());
    assert_eq!(kept(&only_running), vec![(1000, 2000)]);
    let mut with_fault = rules();
    with_fault.in_use_states = vec![Running, Fault];
    let both = sessions_from_states("nmr-1", &tl, &[], &with_fault);
    assert_eq!(kept(&both), vec![(1000, 2500)]);
    assert_eq!(both[0].id, format!("nmr-1@{}", s(1000)));
}

#[test]
fn a_gap_strictly_shorter_than_merge_gap_merges_and_counts_as_use() {
    let merged = sessions_from_states(
        "nmr-1",
        &running(&[(1000, 1200), (1499, 1700)], 5000),
        &[],
        &rules(),
    );
    assert_eq!(kept(&merged), vec![(1000, 1700)]);
    let exact_gap = sessions_from_states(
        "nmr-1",
        &running(&[(1000, 1200), (1500, 1700)], 5000),
        &[],
        &rules(),
    );
    assert_eq!(kept(&exact_gap), vec![(1000, 1200), (1500, 1700)]);
}

#[test]
fn merging_comes_before_dropping_and_dropped_sessions_stay_visible() {
    // Two 100 s blips 60 s apart merge into 260 s (kept); a lone 100 s blip
    // is dropped but listed.
    let out = sessions_from_states(
        "nmr-1",
        &running(&[(1000, 1100), (1160, 1260), (5000, 5100)], 9000),
        &[],
        &rules(),
    );
    assert_eq!(out.len(), 2);
    assert_eq!(kept(&out), vec![(1000, 1260)]);
    assert!(out[1].dropped);
    assert_eq!(out[1].interval, Interval::new(s(5000), s(5100)));
}

#[test]
fn a_session_of_exactly_min_session_is_kept_and_one_ms_less_is_dropped() {
    let exact = sessions_from_states("nmr-1", &running(&[(1000, 1120)], 5000), &[], &rules());
    assert!(!exact[0].dropped);
    let tl = Timeline {
        transitions: vec![(0, Off), (s(1000), Running), (s(1120) - 1, Off)],
        data_end: s(5000),
    };
    let short = sessions_from_states("nmr-1", &tl, &[], &rules());
    assert!(short[0].dropped);
}

#[test]
fn each_result_file_is_a_run_ending_at_its_mtime_and_runs_merge() {
    // file_run_s 600: runs [400,1000) and [900,1500) overlap; [1700,2300)
    // is 200 s later (< 300) and merges; [3000,3600) is 700 s later.
    let files = [
        file("a", 1000),
        file("b", 1500),
        file("c", 2300),
        file("d", 3600),
    ];
    let out = sessions_from_files("ms-1", &files, 600, &rules());
    assert_eq!(kept(&out), vec![(400, 2300), (3000, 3600)]);
    assert_eq!(out[0].result_files, vec!["a", "b", "c"]);
    assert_eq!(out[1].result_files, vec!["d"]);
}

#[test]
fn result_files_written_during_a_session_are_its_evidence() {
    let tl = running(&[(1000, 2000)], 5000);
    let files = [
        file("before", 999),
        file("in", 1500),
        file("at-end", 2000),
        file("after", 2001),
    ];
    let out = sessions_from_states("nmr-1", &tl, &files, &rules());
    assert_eq!(out[0].result_files, vec!["at-end", "in"]);
}

#[test]
fn time_before_the_first_transition_and_after_data_end_is_unknown() {
    let tl = timeline(&[(100, Running), (200, Unknown), (300, Off)], 400);
    let all = Interval::new(s(0), s(500));
    assert_eq!(tl.time_in(Unknown, all), s(100 + 100 + 100));
    assert_eq!(tl.time_in(Running, all), s(100));
}

// ---- §4 attribution ----------------------------------------------------

#[test]
fn usage_inside_a_slot_goes_to_that_booking() {
    let rec = run_with(
        &running(&[(2000, 3000)], 9000),
        &[],
        &[booking("a", 1000, 4000)],
    );
    assert_eq!(owned(&rec, Some("a")), vec![(2000, 3000)]);
    assert!(owned(&rec, None).is_empty());
}

#[test]
fn overlapping_slots_give_usage_to_the_booking_that_started_last() {
    let bookings = [booking("a", 0, 7200), booking("b", 3600, 5400)];
    let rec = run_with(&running(&[(3000, 6000)], 9000), &[], &bookings);
    assert_eq!(owned(&rec, Some("a")), vec![(3000, 3600), (5400, 6000)]);
    assert_eq!(owned(&rec, Some("b")), vec![(3600, 5400)]);
}

#[test]
fn usage_between_two_slots_goes_to_the_nearest_slot() {
    // a ends 3600, b starts 4200: both windows cover the gap; midpoint 3900.
    let bookings = [booking("a", 0, 3600), booking("b", 4200, 7200)];
    let rec = run_with(&running(&[(3000, 5000)], 9000), &[], &bookings);
    assert_eq!(owned(&rec, Some("a")), vec![(3000, 3900)]);
    assert_eq!(owned(&rec, Some("b")), vec![(3900, 5000)]);
}

#[test]
fn early_usage_within_the_early_grace_goes_to_the_booking() {
    let rec = run_with(
        &running(&[(3000, 5000)], 9000),
        &[],
        &[booking("a", 3600, 7200)],
    );
    assert_eq!(owned(&rec, Some("a")), vec![(3000, 5000)]);
    assert_eq!(report(&rec, "a").early_s, 600.0);
}

#[test]
fn uncovered_usage_before_the_first_covered_instant_of_a_session_is_unbooked() {
    // Window opens at 3600 − 900 = 2700.
    let rec = run_with(
        &running(&[(1800, 5000)], 9000),
        &[],
        &[booking("a", 3600, 7200)],
    );
    assert_eq!(owned(&rec, None), vec![(1800, 2700)]);
    assert_eq!(owned(&rec, Some("a")), vec![(2700, 5000)]);
}

#[test]
fn overrun_stays_with_the_owner_of_the_last_covered_instant_until_the_session_ends() {
    // Window closes at 3600 + 900 = 4500; the session runs to 8000.
    let rec = run_with(
        &running(&[(1000, 8000)], 9000),
        &[],
        &[booking("a", 0, 3600)],
    );
    assert_eq!(owned(&rec, Some("a")), vec![(1000, 8000)]);
    let r = report(&rec, "a");
    assert_eq!(r.used_s, 7000.0);
    assert_eq!(r.overrun_s, 3500.0);
    // A later session no window covers is unbooked.
    let rec = run_with(
        &running(&[(1000, 2000), (6000, 7000)], 9000),
        &[],
        &[booking("a", 0, 3600)],
    );
    assert_eq!(owned(&rec, None), vec![(6000, 7000)]);
}

#[test]
fn overrun_stops_where_another_bookings_window_begins() {
    // a's window closes at 4500; b's opens at 6300 − 900 = 5400 and closes
    // at 9000 + 900 = 9900; the session runs on to 10 000: b overruns.
    let bookings = [booking("a", 0, 3600), booking("b", 6300, 9000)];
    let rec = run_with(&running(&[(3000, 10_000)], 20_000), &[], &bookings);
    assert_eq!(owned(&rec, Some("a")), vec![(3000, 5400)]);
    assert_eq!(owned(&rec, Some("b")), vec![(5400, 10_000)]);
    assert_eq!(report(&rec, "b").overrun_s, 100.0);
    assert_eq!(report(&rec, "b").early_s, 900.0);
}

#[test]
fn cancelled_bookings_take_no_usage() {
    let mut b = booking("a", 1000, 4000);
    b.status = BookingStatus::Cancelled;
    let rec = run_with(&running(&[(2000, 3000)], 9000), &[], &[b]);
    assert_eq!(owned(&rec, None), vec![(2000, 3000)]);
}

#[test]
fn dropped_sessions_are_not_usage() {
    let rec = run_with(
        &running(&[(2000, 2060)], 9000),
        &[],
        &[booking("a", 1000, 4000)],
    );
    assert!(rec.segments.is_empty());
    assert_eq!(report(&rec, "a").outcome, Outcome::NoShow);
}

#[test]
fn bookings_starting_together_tie_to_the_smallest_booking_id() {
    let bookings = [booking("z", 1000, 4000), booking("m", 1000, 3000)];
    let rec = run_with(&running(&[(2000, 3500)], 9000), &[], &bookings);
    assert_eq!(owned(&rec, Some("m")), vec![(2000, 3000)]);
    assert_eq!(owned(&rec, Some("z")), vec![(3000, 3500)]);
}

#[test]
fn a_cancelled_bookings_window_does_not_end_an_overrun() {
    let mut c = booking("c", 6300, 9000);
    c.status = BookingStatus::Cancelled;
    let rec = run_with(
        &running(&[(3000, 10_000)], 20_000),
        &[],
        &[booking("a", 0, 3600), c],
    );
    assert_eq!(owned(&rec, Some("a")), vec![(3000, 10_000)]);
}

// ---- §5 outcomes -------------------------------------------------------

#[test]
fn a_cancelled_booking_reports_its_booked_time_and_nothing_else() {
    let mut b = booking("a", 1000, 4000);
    b.status = BookingStatus::Cancelled;
    let rec = run_with(&running(&[(2000, 3000)], 9000), &[], &[b]);
    let r = report(&rec, "a");
    assert_eq!(r.outcome, Outcome::Cancelled);
    assert_eq!((r.booked_s, r.used_s), (3000.0, 0.0));
    assert_eq!((r.first_use, r.last_use), (None, None));
    assert_eq!(r.flags, Flags::default());
}

#[test]
fn unknown_covering_at_least_half_the_slot_is_no_data() {
    // Slot [1000, 3000); unknown [2000, 3000) is exactly half.
    let tl = timeline(&[(0, Running), (2000, Unknown)], 9000);
    let rec = run_with(&tl, &[], &[booking("a", 1000, 3000)]);
    assert_eq!(report(&rec, "a").outcome, Outcome::NoData);
    let tl = timeline(&[(0, Running), (2001, Unknown)], 9000);
    let rec = run_with(&tl, &[], &[booking("a", 1000, 3000)]);
    assert_eq!(report(&rec, "a").outcome, Outcome::Used);
}

#[test]
fn a_fault_inside_the_slot_with_little_use_is_an_instrument_fault() {
    let tl = timeline(&[(0, Off), (1500, Fault), (1600, Off)], 9000);
    let rec = run_with(&tl, &[], &[booking("a", 1000, 4000)]);
    assert_eq!(report(&rec, "a").outcome, Outcome::InstrumentFault);
    // A fault in the grace but not in the slot is a no-show.
    let tl = timeline(&[(0, Off), (500, Fault), (600, Off)], 9000);
    let rec = run_with(&tl, &[], &[booking("a", 1000, 4000)]);
    assert_eq!(report(&rec, "a").outcome, Outcome::NoShow);
}

#[test]
fn a_fault_with_enough_use_is_still_used() {
    let tl = timeline(
        &[(0, Off), (1500, Fault), (1600, Running), (2000, Off)],
        9000,
    );
    let rec = run_with(&tl, &[], &[booking("a", 1000, 2400)]);
    assert_eq!(report(&rec, "a").outcome, Outcome::Used);
}

#[test]
fn use_strictly_below_no_show_below_is_a_no_show() {
    // 299 s used (a kept 299 s session) → no-show; 300 s → used.
    let rec = run_with(
        &running(&[(2000, 2299)], 9000),
        &[],
        &[booking("a", 1000, 4000)],
    );
    assert_eq!(report(&rec, "a").outcome, Outcome::NoShow);
    assert_eq!(report(&rec, "a").flags, Flags::default());
    let rec = run_with(
        &running(&[(2000, 2300)], 9000),
        &[],
        &[booking("a", 1000, 4000)],
    );
    assert_eq!(report(&rec, "a").outcome, Outcome::Used);
}

#[test]
fn late_start_is_flagged_only_strictly_after_start_plus_late_start_after() {
    let b = [booking("a", 1000, 9000)];
    let rec = run_with(&running(&[(1900, 9000)], 20_000), &[], &b);
    assert!(!report(&rec, "a").flags.late_start);
    let rec = run_with(&running(&[(1901, 9000)], 20_000), &[], &b);
    let r = report(&rec, "a");
    assert_eq!(r.outcome, Outcome::Used);
    assert!(r.flags.late_start);
    assert_eq!(r.first_use, Some(s(1901)));
}

#[test]
fn early_finish_is_flagged_only_strictly_before_end_minus_early_finish_before() {
    let b = [booking("a", 1000, 9000)];
    let rec = run_with(&running(&[(1000, 8100)], 20_000), &[], &b);
    assert!(!report(&rec, "a").flags.early_finish);
    let rec = run_with(&running(&[(1000, 8099)], 20_000), &[], &b);
    let r = report(&rec, "a");
    assert!(r.flags.early_finish);
    assert_eq!(r.last_use, Some(s(8099)));
}

#[test]
fn overrun_is_flagged_exactly_when_overrun_s_is_positive() {
    let b = [booking("a", 1000, 9000)];
    // Runs to end + late_grace exactly: no overrun.
    let rec = run_with(&running(&[(1000, 9900)], 20_000), &[], &b);
    let r = report(&rec, "a");
    assert_eq!((r.overrun_s, r.flags.overrun), (0.0, false));
    let rec = run_with(&running(&[(1000, 9901)], 20_000), &[], &b);
    let r = report(&rec, "a");
    assert_eq!((r.overrun_s, r.flags.overrun), (1.0, true));
    assert_eq!(r.used_s, 8901.0);
}

#[test]
fn a_booking_report_lists_its_sessions_and_result_files() {
    let bookings = [booking("a", 0, 3600), booking("b", 6300, 9000)];
    let files = [file("f1", 4000), file("f2", 7000), file("f3", 10_000)];
    let rec = run_with(&running(&[(3000, 10_000)], 20_000), &files, &bookings);
    let sid = format!("nmr-1@{}", s(3000));
    assert_eq!(report(&rec, "a").sessions, vec![sid.clone()]);
    assert_eq!(report(&rec, "a").result_files, vec!["f1"]);
    assert_eq!(report(&rec, "b").sessions, vec![sid]);
    assert_eq!(report(&rec, "b").result_files, vec!["f2", "f3"]);
}

// ---- §6 hours ----------------------------------------------------------

fn berlin() -> TimeZone {
    TimeZone::get("Europe/Berlin").expect("zone")
}

fn ts(text: &str) -> jiff::Timestamp {
    text.parse().expect("timestamp")
}

#[test]
fn the_berlin_spring_forward_day_has_23_hours_and_fall_back_25() {
    let tz = berlin();
    let days = split_periods(
        ts("2026-03-27T23:00:00Z"),
        ts("2026-03-29T22:00:00Z"),
        &tz,
        PeriodUnit::Day,
    )
    .expect("split");
    let lens: Vec<i64> = days.iter().map(|p| p.interval().len() / s(HOUR)).collect();
    assert_eq!(lens, vec![24, 23]);
    assert_eq!(
        days[1].start.strftime("%Y-%m-%dT%H:%M:%S%:z").to_string(),
        "2026-03-29T00:00:00+01:00"
    );
    assert_eq!(
        days[1].end.strftime("%Y-%m-%dT%H:%M:%S%:z").to_string(),
        "2026-03-30T00:00:00+02:00"
    );
    let days = split_periods(
        ts("2026-10-24T22:00:00Z"),
        ts("2026-10-25T23:00:00Z"),
        &tz,
        PeriodUnit::Day,
    )
    .expect("split");
    assert_eq!(days.len(), 1);
    assert_eq!(days[0].interval().len(), s(25 * HOUR));
}

#[test]
fn months_and_years_are_local_calendar_periods_cut_at_from_and_to() {
    let tz = berlin();
    let months = split_periods(
        ts("2026-02-15T12:00:00Z"),
        ts("2026-04-10T00:00:00Z"),
        &tz,
        PeriodUnit::Month,
    )
    .expect("split");
    assert_eq!(months.len(), 3);
    assert_eq!(months[0].start.timestamp(), ts("2026-02-15T12:00:00Z"));
    assert_eq!(months[1].start.timestamp(), ts("2026-02-28T23:00:00Z"));
    // March has 31 days minus the skipped hour.
    assert_eq!(months[1].interval().len(), s((31 * 24 - 1) * HOUR));
    assert_eq!(months[2].end.timestamp(), ts("2026-04-10T00:00:00Z"));
    let years = split_periods(
        ts("2025-12-31T23:00:00Z"),
        ts("2027-01-01T00:00:00Z"),
        &tz,
        PeriodUnit::Year,
    )
    .expect("split");
    assert_eq!(years.len(), 2);
    assert_eq!(years[0].interval().len(), s(365 * 24 * HOUR));
}

#[test]
fn period_totals_split_sessions_at_the_boundary_and_count_double_bookings_twice() {
    // Period [0, 10 h). Data from 1 h. Bookings: a research [1 h, 3 h),
    // b external [2 h, 4 h) (overlapping), c external [9 h, 11 h) no-show
    // straddling the end; d cancelled. Sessions: [2.5 h, 3.5 h) and an
    // unbooked one [6 h, 7 h); a fault [8 h, 8.5 h).
    let tl = timeline(
        &[
            (HOUR, Off),
            (2 * HOUR + 1800, Running),
            (3 * HOUR + 1800, Off),
            (6 * HOUR, Running),
            (7 * HOUR, Off),
            (8 * HOUR, Fault),
            (8 * HOUR + 1800, Off),
        ],
        12 * HOUR,
    );
    let mut b = booking("b", 2 * HOUR, 4 * HOUR);
    b.usage_type = UsageType::External;
    let mut c = booking("c", 9 * HOUR, 11 * HOUR);
    c.usage_type = UsageType::External;
    let mut d = booking("d", 5 * HOUR, 6 * HOUR);
    d.status = BookingStatus::Cancelled;
    let bookings = [booking("a", HOUR, 3 * HOUR), b, c, d];
    let files = [file("f1", 3 * HOUR), file("f2", 11 * HOUR)];
    let rec = run_with(&tl, &files, &bookings);
    // b started last, so it owns the whole first session.
    assert_eq!(
        owned(&rec, Some("b")),
        vec![(2 * HOUR + 1800, 3 * HOUR + 1800)]
    );
    // a got nothing: a no-show like c.
    assert_eq!(report(&rec, "a").outcome, Outcome::NoShow);
    assert_eq!(report(&rec, "c").outcome, Outcome::NoShow);
    let totals = period_totals(&PeriodInputs {
        instrument_id: "nmr-1",
        period: Interval::new(0, s(10 * HOUR)),
        reconciliation: &rec,
        bookings: &bookings,
        timeline: &tl,
        result_files: &files,
        open_ms: None,
        energy_kwh: Some(12.5),
    });
    assert_eq!(totals.used_ms, s(2 * HOUR));
    assert_eq!(totals.booked_ms, s(2 * HOUR + 2 * HOUR + HOUR));
    assert_eq!(totals.booked_used_ms, s(HOUR));
    assert_eq!(totals.unbooked_ms, s(HOUR));
    assert_eq!(totals.external_ms, s(HOUR));
    assert_eq!(totals.by_usage_type_ms[UNASSIGNED], s(HOUR));
    assert_eq!(totals.no_show_count, 2);
    assert_eq!(totals.fault_ms, s(1800));
    assert_eq!(totals.unknown_ms, s(HOUR));
    assert_eq!(totals.result_files, 1);
    let row = totals.to_row(&TimeZone::UTC);
    assert_eq!(row.period_start, "1970-01-01T00:00:00+00:00");
    assert_eq!(row.used_hours, 2.0);
    assert_eq!(row.booked_hours, 5.0);
    assert_eq!(row.share_rate, Some(0.5));
    assert_eq!(row.utilization, Some(0.2));
    assert_eq!(row.fault_hours, 0.5);
    assert_eq!(row.coverage, 0.9);
    assert_eq!(row.by_usage_type["research"], 0.0);
    assert_eq!(row.energy_kwh, Some(12.5));
    // The next period gets the rest of c and no no-show (c started before).
    let next = period_totals(&PeriodInputs {
        period: Interval::new(s(10 * HOUR), s(20 * HOUR)),
        ..PeriodInputs {
            instrument_id: "nmr-1",
            period: Interval::new(0, 0),
            reconciliation: &rec,
            bookings: &bookings,
            timeline: &tl,
            result_files: &files,
            open_ms: Some(s(5 * HOUR)),
            energy_kwh: None,
        }
    });
    assert_eq!(next.booked_ms, s(HOUR));
    assert_eq!(next.no_show_count, 0);
    assert_eq!(next.unknown_ms, s(8 * HOUR));
    assert_eq!(next.to_row(&TimeZone::UTC).utilization, Some(0.0));
}

#[test]
fn a_session_crossing_a_period_boundary_is_split_at_it() {
    let tl = running(&[(HOUR, 3 * HOUR)], 10 * HOUR);
    let rec = run_with(&tl, &[], &[]);
    let at = |from: i64, to: i64| {
        period_totals(&PeriodInputs {
            instrument_id: "nmr-1",
            period: Interval::new(s(from), s(to)),
            reconciliation: &rec,
            bookings: &[],
            timeline: &tl,
            result_files: &[],
            open_ms: None,
            energy_kwh: None,
        })
    };
    assert_eq!(at(0, 2 * HOUR).used_ms, s(HOUR));
    assert_eq!(at(2 * HOUR, 4 * HOUR).used_ms, s(HOUR));
}

#[test]
fn share_rate_is_null_without_usage_and_hours_round_to_two_decimals() {
    let tl = running(&[], 10 * HOUR);
    let rec = run_with(&tl, &[], &[]);
    let totals = period_totals(&PeriodInputs {
        instrument_id: "nmr-1",
        period: Interval::new(0, s(HOUR)),
        reconciliation: &rec,
        bookings: &[],
        timeline: &tl,
        result_files: &[],
        open_ms: None,
        energy_kwh: None,
    });
    assert_eq!(totals.to_row(&TimeZone::UTC).share_rate, None);
    assert_eq!(hours::hours(s(1000)), 0.28);
    assert_eq!(hours::hours(s(5 * 60 * 60 + 18)), 5.01);
}

// ---- properties --------------------------------------------------------

fn arb_timeline() -> impl Strategy<Value = Timeline> {
    prop::collection::vec(
        (
            1i64..1200,
            prop::sample::select(vec![Off, Standby, Running, Running, Fault, Unknown]),
        ),
        0..25,
    )
    .prop_map(|steps| {
        let mut t = 0;
        let mut transitions = Vec::new();
        for (dt, st) in steps {
            transitions.push((s(t), st));
            t += dt;
        }
        Timeline {
            transitions,
            data_end: s(t),
        }
    })
}

fn arb_bookings() -> impl Strategy<Value = Vec<Booking>> {
    prop::collection::vec((0i64..15_000, 0i64..4000, any::<bool>(), 0usize..5), 0..6).prop_map(
        |v| {
            v.into_iter()
                .enumerate()
                .map(|(i, (start, len, cancelled, ty))| {
                    let mut b = booking(&format!("b{i}"), start, start + len);
                    if cancelled {
                        b.status = BookingStatus::Cancelled;
                    }
                    b.usage_type = UsageType::ALL[ty];
                    b
                })
                .collect()
        },
    )
}

proptest! {
    #[test]
    fn every_instant_of_usage_is_attributed_at_most_once_and_exactly_the_kept_sessions(
        tl in arb_timeline(), bookings in arb_bookings()
    ) {
        let rec = run_with(&tl, &[], &bookings);
        let mut segs: Vec<Interval> = rec.segments.iter().map(|g| g.interval).collect();
        segs.sort();
        for w in segs.windows(2) {
            prop_assert!(w[0].end <= w[1].start);
        }
        let seg_total: Ms = segs.iter().map(|i| i.len()).sum();
        let kept_total: Ms = rec.sessions.iter().filter(|x| !x.dropped).map(|x| x.interval.len()).sum();
        prop_assert_eq!(seg_total, kept_total);
        for g in &rec.segments {
            let session = rec.sessions.iter().find(|x| x.id == g.session_id).expect("session");
            prop_assert!(session.interval.start <= g.interval.start && g.interval.end <= session.interval.end);
            if let Some(id) = &g.booking_id {
                prop_assert!(bookings.iter().any(|b| &b.booking_id == id && b.is_confirmed()));
            }
        }
        let attributed: f64 = rec.reports.iter().map(|r| r.used_s).sum();
        let booked_used: Ms = rec.segments.iter().filter(|g| g.booking_id.is_some()).map(|g| g.interval.len()).sum();
        prop_assert_eq!(attributed, to_s_exact(booked_used));
    }

    #[test]
    fn the_sweep_agrees_with_the_rules_evaluated_at_single_instants(
        tl in arb_timeline(), bookings in arb_bookings()
    ) {
        let rules = rules();
        let rec = run_with(&tl, &[], &bookings);
        let confirmed: Vec<&Booking> = bookings.iter().filter(|b| b.is_confirmed()).collect();
        for g in &rec.segments {
            for t in [g.interval.start, (g.interval.start + g.interval.end) / 2, g.interval.end - 1] {
                let cands = owner_rules::candidates(t, &confirmed, &rules);
                if cands.is_empty() {
                    continue;
                }
                let expected = owner_rules::own_slot(t, &cands)
                    .or_else(|| owner_rules::nearest_slot(t, &cands))
                    .map(|b| b.booking_id.clone());
                prop_assert_eq!(&g.booking_id, &expected, "at {}", t);
            }
        }
    }

    #[test]
    fn booked_used_plus_unbooked_is_used_in_any_period(
        tl in arb_timeline(), bookings in arb_bookings(), from in 0i64..20_000, len in 0i64..20_000
    ) {
        let rec = run_with(&tl, &[], &bookings);
        let t = period_totals(&PeriodInputs {
            instrument_id: "nmr-1",
            period: Interval::new(s(from), s(from + len)),
            reconciliation: &rec,
            bookings: &bookings,
            timeline: &tl,
            result_files: &[],
            open_ms: None,
            energy_kwh: None,
        });
        prop_assert_eq!(t.booked_used_ms + t.unbooked_ms, t.used_ms);
        prop_assert_eq!(t.by_usage_type_ms.values().sum::<Ms>(), t.used_ms);
        prop_assert!(t.unknown_ms >= 0 && t.unknown_ms <= s(len));
    }

    #[test]
    fn results_do_not_depend_on_the_order_bookings_are_given(
        tl in arb_timeline(), bookings in arb_bookings(), seed in any::<u64>()
    ) {
        let a = run_with(&tl, &[], &bookings);
        let mut shuffled = bookings.clone();
        shuffled.reverse();
        if !shuffled.is_empty() {
            let k = (seed as usize) % shuffled.len();
            shuffled.rotate_left(k);
        }
        prop_assert_eq!(a, run_with(&tl, &[], &shuffled));
    }

    #[test]
    fn re_running_changes_nothing(tl in arb_timeline(), bookings in arb_bookings()) {
        let a = run_with(&tl, &[], &bookings);
        let b = run_with(&tl, &[], &bookings);
        prop_assert_eq!(&a, &b);
        // Re-deriving the sessions from the kept sessions gives them back.
        let kept_tl = Timeline {
            transitions: {
                let mut v = vec![(Ms::MIN / 2, Off)];
                for x in a.sessions.iter().filter(|x| !x.dropped) {
                    v.push((x.interval.start, Running));
                    v.push((x.interval.end, Off));
                }
                v
            },
            data_end: tl.data_end,
        };
        let again = run_with(&kept_tl, &[], &bookings);
        prop_assert_eq!(again.segments, a.segments);
    }
}

fn to_s_exact(ms: Ms) -> f64 {
    ms as f64 / MS_PER_S as f64
}

mod totals;
