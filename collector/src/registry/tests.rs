//! Registry and open hours, with hand-computed expectations.

use jiff::civil::DateTime;
use jiff::tz::TimeZone;
use labhours_shared::state::State;

use super::*;
use crate::config::{CollectorConfig, DatedPeriod, OpenHoursConfig, WeeklyConfig};
use crate::reconcile::{PeriodUnit, split_periods};

const H: Ms = 3_600_000;

fn zone(name: &str) -> TimeZone {
    TimeZone::get(name).expect("zone")
}

/// Local `YYYY-MM-DDTHH:MM` in `zone` as UTC ms.
fn at(zone: &TimeZone, local: &str) -> Ms {
    let dt: DateTime = local.parse().expect("civil time");
    dt.to_zoned(zone.clone())
        .expect("in range")
        .timestamp()
        .as_millisecond()
}

fn period(zone: &TimeZone, from: &str, to: &str) -> Interval {
    Interval::new(at(zone, from), at(zone, to))
}

fn ranges(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

fn dated(from: &str, to: &str) -> DatedPeriod {
    DatedPeriod {
        from: from.into(),
        to: to.into(),
        note: None,
    }
}

/// Monday to Friday 08:00–17:00.
fn office_week() -> WeeklyConfig {
    let day = ranges(&["08:00-17:00"]);
    WeeklyConfig {
        mon: day.clone(),
        tue: day.clone(),
        wed: day.clone(),
        thu: day.clone(),
        fri: day,
        ..WeeklyConfig::default()
    }
}

fn compile(config: OpenHoursConfig) -> OpenHours {
    OpenHours::compile(&config).expect("valid open hours")
}

fn fields(text: &str) -> Vec<String> {
    CollectorConfig::parse(text)
        .expect_err("invalid")
        .0
        .into_iter()
        .map(|e| e.field)
        .collect()
}

#[test]
fn a_weekly_schedule_counts_its_slots_over_a_week() {
    let shanghai = zone("Asia/Shanghai");
    let open = compile(OpenHoursConfig {
        weekly: WeeklyConfig {
            mon: ranges(&["08:30-12:00", "13:30-17:30"]),
            tue: ranges(&["08:30-17:30"]),
            sat: vec![],
            ..WeeklyConfig::default()
        },
        ..OpenHoursConfig::default()
    });
    // 2026-03-02 is a Monday: 3.5 h + 4 h on Monday, 9 h on Tuesday.
    let week = period(&shanghai, "2026-03-02T00:00", "2026-03-09T00:00");
    assert_eq!(open.open_ms(&shanghai, week), 16 * H + H / 2);
    // The same week read in UTC is shifted by 8 h, so it holds the same slots.
    let monday = period(&shanghai, "2026-03-02T00:00", "2026-03-03T00:00");
    assert_eq!(open.open_ms(&shanghai, monday), 7 * H + H / 2);
    let sunday = period(&shanghai, "2026-03-08T00:00", "2026-03-09T00:00");
    assert_eq!(open.open_ms(&shanghai, sunday), 0);
}

#[test]
fn a_closed_holiday_week_removes_its_working_days() {
    let shanghai = zone("Asia/Shanghai");
    let open = compile(OpenHoursConfig {
        weekly: office_week(),
        closed: vec![dated("2026-10-01", "2026-10-08")],
        ..OpenHoursConfig::default()
    });
    // October 2026 has 22 weekdays; 1–7 October (Thu–Wed) closes 5 of them.
    let october = period(&shanghai, "2026-10-01T00:00", "2026-11-01T00:00");
    assert_eq!(open.open_ms(&shanghai, october), 17 * 9 * H);
    // `to` is exclusive: Thursday 8 October is open again.
    let oct8 = period(&shanghai, "2026-10-08T00:00", "2026-10-09T00:00");
    assert_eq!(open.open_ms(&shanghai, oct8), 9 * H);
}

#[test]
fn an_extra_open_saturday_morning_adds_to_the_week() {
    let shanghai = zone("Asia/Shanghai");
    let open = compile(OpenHoursConfig {
        weekly: office_week(),
        // 2026-07-04 is a Saturday; Friday 16:00–19:00 overlaps the schedule by 1 h.
        extra_open: vec![
            dated("2026-07-04T09:00", "2026-07-04T12:00"),
            dated("2026-07-03T16:00", "2026-07-03T19:00"),
        ],
        ..OpenHoursConfig::default()
    });
    let week = period(&shanghai, "2026-06-29T00:00", "2026-07-06T00:00");
    assert_eq!(open.open_ms(&shanghai, week), 5 * 9 * H + 3 * H + 2 * H);
}

#[test]
fn closed_beats_extra_open_where_both_apply() {
    let utc = TimeZone::UTC;
    let open = compile(OpenHoursConfig {
        weekly: office_week(),
        extra_open: vec![dated("2026-07-04T09:00", "2026-07-04T12:00")],
        closed: vec![
            dated("2026-07-04T10:00", "2026-07-04T11:00"),
            // Friday afternoon closed, overlapping the weekly slot.
            dated("2026-07-03T15:00", "2026-07-03T23:30"),
        ],
    });
    let saturday = period(&utc, "2026-07-04T00:00", "2026-07-05T00:00");
    assert_eq!(open.open_ms(&utc, saturday), 2 * H);
    let friday = period(&utc, "2026-07-03T00:00", "2026-07-04T00:00");
    assert_eq!(open.open_ms(&utc, friday), 7 * H);
}

#[test]
fn a_period_cut_mid_slot_counts_only_its_part() {
    let berlin = zone("Europe/Berlin");
    let open = compile(OpenHoursConfig {
        weekly: WeeklyConfig {
            mon: ranges(&["08:30-12:00"]),
            ..WeeklyConfig::default()
        },
        ..OpenHoursConfig::default()
    });
    let p = |from, to| open.open_ms(&berlin, period(&berlin, from, to));
    assert_eq!(p("2026-06-01T10:15", "2026-06-01T11:00"), 45 * 60_000);
    assert_eq!(p("2026-06-01T07:00", "2026-06-01T09:00"), 30 * 60_000);
    assert_eq!(p("2026-06-01T11:59", "2026-06-01T15:00"), 60_000);
    // Empty and reversed periods are never open.
    assert_eq!(p("2026-06-01T10:00", "2026-06-01T10:00"), 0);
    assert_eq!(p("2026-06-01T11:00", "2026-06-01T10:00"), 0);
}

#[test]
fn a_slot_over_the_skipped_hour_of_spring_forward_counts_one_hour() {
    let berlin = zone("Europe/Berlin");
    let sunday_slot = |slot: &str| {
        compile(OpenHoursConfig {
            weekly: WeeklyConfig {
                sun: ranges(&[slot]),
                ..WeeklyConfig::default()
            },
            ..OpenHoursConfig::default()
        })
    };
    // 2026-03-29: 02:00 CET jumps to 03:00 CEST; the local day is 23 h.
    let spring = period(&berlin, "2026-03-29T00:00", "2026-03-30T00:00");
    assert_eq!(spring.len(), 23 * H);
    assert_eq!(sunday_slot("01:30-03:30").open_ms(&berlin, spring), H);
    assert_eq!(sunday_slot("02:00-03:00").open_ms(&berlin, spring), 0);
    // 2026-10-25: 03:00 CEST falls back to 02:00 CET; 02:00–03:00 happens twice.
    let autumn = period(&berlin, "2026-10-25T00:00", "2026-10-26T00:00");
    assert_eq!(autumn.len(), 25 * H);
    assert_eq!(sunday_slot("01:30-03:30").open_ms(&berlin, autumn), 3 * H);
    assert_eq!(sunday_slot("02:00-02:30").open_ms(&berlin, autumn), H);
}

#[test]
fn a_year_of_office_hours_is_261_working_days_of_nine_hours() {
    let berlin = zone("Europe/Berlin");
    let open = compile(OpenHoursConfig {
        weekly: office_week(),
        ..OpenHoursConfig::default()
    });
    // 2026: 52 weeks and one day; 1 January is a Thursday, so 52 × 5 + 1 weekdays.
    let year = period(&berlin, "2026-01-01T00:00", "2027-01-01T00:00");
    assert_eq!(open.open_ms(&berlin, year), 261 * 9 * H);
    // Day by day (DST days included) gives the same total.
    let ts = |ms| jiff::Timestamp::from_millisecond(ms).expect("in range");
    let days =
        split_periods(ts(year.start), ts(year.end), &berlin, PeriodUnit::Day).expect("splits");
    assert_eq!(days.len(), 365);
    let by_day: Ms = days
        .iter()
        .map(|p| open.open_ms(&berlin, p.interval()))
        .sum();
    assert_eq!(by_day, 261 * 9 * H);
}

#[test]
fn open_hours_of_an_instrument_replace_the_sites_and_none_means_unknown() {
    let config = CollectorConfig::parse(
        r#"
[site]
time_zone = "Asia/Shanghai"
[open_hours]
weekly = { mon = ["08:00-12:00"] }

[[instruments]]
id = "nmr-600"
name = "NMR"
[instruments.open_hours]
weekly = { tue = ["08:00-10:00"] }

[[instruments]]
id = "xrd-1"
name = "XRD"
"#,
    )
    .expect("valid");
    let registry = Registry::from_config(&config).expect("compiles");
    let shanghai = zone("Asia/Shanghai");
    let week = period(&shanghai, "2026-03-02T00:00", "2026-03-09T00:00");
    assert_eq!(registry.instrument("nmr-600").open_ms(week), Some(2 * H));
    assert_eq!(registry.instrument("xrd-1").open_ms(week), Some(4 * H));
    assert_eq!(registry.instrument("walk-in").open_ms(week), Some(4 * H));

    let bare = Registry::from_config(&CollectorConfig::default()).expect("compiles");
    assert_eq!(bare.instrument("xrd-1").open_ms(week), None);
}

#[test]
fn an_unconfigured_instrument_gets_the_site_defaults() {
    let config = CollectorConfig::parse(
        "[site]\ntime_zone = \"Europe/Berlin\"\n[reconciliation]\nmerge_gap_s = 60\n\n[[instruments]]\nid = \"nmr-600\"\nname = \"NMR\"\nunit = \"Chemistry\"\ntime_zone = \"Asia/Shanghai\"\n",
    )
    .expect("valid");
    let registry = Registry::from_config(&config).expect("compiles");
    let walk_in = registry.instrument("sem-2");
    assert!(!walk_in.configured);
    assert_eq!(walk_in.name, "sem-2");
    assert_eq!(walk_in.unit, None);
    assert_eq!(walk_in.time_zone, "Europe/Berlin");
    assert_eq!(walk_in.rules.merge_gap_s, 60);
    assert_eq!(walk_in.usage_source, UsageSource::State);

    let nmr = registry.instrument("nmr-600");
    assert!(nmr.configured);
    assert_eq!(nmr.time_zone, "Asia/Shanghai");
    assert_eq!(
        registry
            .configured()
            .map(|i| i.id.as_str())
            .collect::<Vec<_>>(),
        ["nmr-600"]
    );
    assert_eq!(registry.site_zone().iana_name(), Some("Europe/Berlin"));
}

#[test]
fn instrument_rules_override_the_site_field_by_field() {
    let config = CollectorConfig::parse(
        r#"
[reconciliation]
min_session_s = 60
silence_after_s = 600

[[instruments]]
id = "nmr-600"
name = "NMR"
[instruments.rules]
in_use_states = ["running", "standby"]
late_grace_s = 1800
"#,
    )
    .expect("valid");
    let rules = Registry::from_config(&config)
        .expect("compiles")
        .instrument("nmr-600")
        .rules;
    assert_eq!(rules.in_use_states, [State::Running, State::Standby]);
    assert_eq!(rules.late_grace_s, 1800);
    assert_eq!(rules.min_session_s, 60);
    assert_eq!(rules.silence_after_s, 600);
    assert_eq!(rules.early_grace_s, 900);
    assert_eq!(rules.merge_gap_s, 300);
    assert_eq!(
        CollectorConfig::default().reconciliation.silence_after_s,
        180
    );
}

#[test]
fn a_bad_rule_is_named_where_it_is_set() {
    let inst = "[[instruments]]\nid = \"a\"\nname = \"A\"\n[[instruments]]\nid = \"b\"\nname = \"B\"\n[instruments.rules]\nin_use_states = [\"unknown\"]\nsilence_after_s = 0\n";
    assert_eq!(
        fields(inst),
        [
            "instruments[1].rules.in_use_states",
            "instruments[1].rules.silence_after_s"
        ]
    );
    // A bad site value is reported once, not again for every instrument.
    let site = format!("[reconciliation]\nin_use_states = []\n{inst}");
    assert_eq!(
        fields(&site),
        [
            "reconciliation.in_use_states",
            "instruments[1].rules.in_use_states",
            "instruments[1].rules.silence_after_s"
        ]
    );
    assert_eq!(
        fields("[instruments.rules]\nmerge_gap = 1\n").len(),
        1,
        "unknown keys are refused"
    );
}

#[test]
fn thresholds_are_checked_like_the_agent_checks_them() {
    let with = |t: &str| {
        format!("[[instruments]]\nid = \"a\"\nname = \"A\"\n[instruments.thresholds]\n{t}\n")
    };
    let ok = CollectorConfig::parse(&with(
        "on_above_w = 5.0\nrunning_above_w = 100.0\nrunning_exit_below_w = 100.0\nmin_dwell_s = 10",
    ))
    .expect("valid");
    assert_eq!(
        ok.instruments[0].thresholds.as_ref().map(|t| t.min_dwell_s),
        Some(Some(10))
    );
    assert_eq!(
        fields(&with("on_above_w = 100.0\nrunning_above_w = 50.0")),
        [
            "instruments[0].thresholds.running_above_w",
            "instruments[0].thresholds.running_exit_below_w"
        ]
    );
    assert_eq!(
        fields(&with(
            "on_above_w = 5.0\nrunning_above_w = 100.0\nrunning_exit_below_w = 120.0"
        )),
        ["instruments[0].thresholds.running_exit_below_w"]
    );
    assert_eq!(
        fields(&with("on_above_w = -1.0\nrunning_above_w = 100.0")),
        ["instruments[0].thresholds.on_above_w"]
    );
    assert_eq!(
        fields(&with("on_above_w = 5.0\nrunning_above_w = inf")),
        [
            "instruments[0].thresholds.running_above_w",
            "instruments[0].thresholds.running_exit_below_w"
        ]
    );
}

#[test]
fn off_step_times_and_reversed_ranges_are_named_with_a_fix() {
    let text = r#"
[open_hours]
weekly = { mon = ["08:30-12:00", "08:15-12:00"], wed = ["17:00-09:00", "8:00-12:00", "22:00-24:00", "24:00-24:00"] }
"#;
    let err = CollectorConfig::parse(text).expect_err("invalid");
    let got: Vec<_> = err.0.iter().map(|e| e.field.as_str()).collect();
    assert_eq!(
        got,
        [
            "open_hours.weekly.mon[1]",
            "open_hours.weekly.wed[0]",
            "open_hours.weekly.wed[1]",
            "open_hours.weekly.wed[3]"
        ]
    );
    assert!(err.0[0].problem.contains("30-minute step"), "{}", err.0[0]);
    assert!(err.0[0].fix.contains("HH:30"), "{}", err.0[0]);
    assert!(err.0[1].fix.contains("past midnight"), "{}", err.0[1]);
    assert!(err.0[2].fix.contains("08:30-12:00"), "{}", err.0[2]);
}

#[test]
fn bad_dates_in_periods_are_named_with_a_fix() {
    let text = r#"
[[instruments]]
id = "a"
name = "A"
[[instruments]]
id = "b"
name = "B"
[[instruments]]
id = "c"
name = "C"
[instruments.open_hours]
extra_open = [ { from = "2026-07-04 09:00", to = "2026-07-04T12:15" } ]
closed = [ { from = "2026-02-30", to = "2026-03-02" }, { from = "2026-10-08", to = "2026-10-01" } ]
"#;
    let err = CollectorConfig::parse(text).expect_err("invalid");
    let got: Vec<_> = err.0.iter().map(|e| e.field.as_str()).collect();
    assert_eq!(
        got,
        [
            "instruments[2].open_hours.extra_open[0].from",
            "instruments[2].open_hours.extra_open[0].to",
            "instruments[2].open_hours.closed[0].from",
            "instruments[2].open_hours.closed[1].to"
        ]
    );
    assert!(err.0[1].problem.contains("30-minute step"), "{}", err.0[1]);
    assert!(err.0[2].problem.contains("calendar date"), "{}", err.0[2]);
    assert!(err.0[3].fix.contains("exclusive"), "{}", err.0[3]);
    assert!(err.0.iter().all(|e| !e.fix.is_empty()));
}

#[test]
fn the_policy_hash_follows_the_rules_and_not_the_name() {
    let registry = Registry::from_config(&CollectorConfig::default()).expect("compiles");
    let base = registry.instrument("nmr-600");
    let hash = base.policy_hash();
    assert_eq!(hash.len(), 64);
    assert!(hash.bytes().all(|b| b.is_ascii_hexdigit()));
    // Stable across runs and builds: pinned (sha256 of
    // {"time_zone":"UTC","usage_source":"state","file_run_s":null,"rules":{…}},
    // checked with Python's hashlib). A new rule changes it, on purpose.
    assert_eq!(
        hash,
        "9deeaf22dde4f57772cf0901ceeead0257eb8557b4750b09aed06a172880788c"
    );

    let mut renamed = base.clone();
    renamed.name = "NMR".into();
    renamed.unit = Some("Chemistry".into());
    renamed.thresholds = None;
    renamed.open_hours = Some(compile(OpenHoursConfig {
        weekly: office_week(),
        ..OpenHoursConfig::default()
    }));
    assert_eq!(renamed.policy_hash(), hash);

    let mut stricter = base.clone();
    stricter.rules.min_session_s += 1;
    assert_ne!(stricter.policy_hash(), hash);
    let mut moved = base.clone();
    moved.time_zone = "Asia/Shanghai".into();
    assert_ne!(moved.policy_hash(), hash);
    let mut files = base;
    files.file_run_s = Some(1800);
    assert_ne!(files.policy_hash(), hash);
}

#[test]
fn the_example_config_builds_a_registry() {
    let text = include_str!("../../../config/collector.example.toml");
    let config = CollectorConfig::parse(text).unwrap_or_else(|e| panic!("{e}"));
    let registry = Registry::from_config(&config).expect("compiles");
    let nmr = registry.instrument("nmr-600");
    assert!(nmr.configured);
    assert!(registry.organisation().contains("Chemistry", "nmr-600"));
    assert_eq!(nmr.rules.late_grace_s, 1800);
    assert!(nmr.thresholds.is_some());
    let shanghai = zone("Asia/Shanghai");
    // Week of Monday 2026-03-02: the NMR's own hours (5 × 14 h + 8 h) and the site's.
    let week = period(&shanghai, "2026-03-02T00:00", "2026-03-09T00:00");
    assert_eq!(nmr.open_ms(week), Some(5 * 14 * H + 8 * H));
    assert_eq!(
        registry.instrument("qtof-1").open_ms(week),
        Some(7 * H + H / 2 + 4 * 9 * H)
    );
}
