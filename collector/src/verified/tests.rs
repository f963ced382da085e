//! The verified results through the real store: events committed as ingest
//! commits them, bookings imported, corrections recorded, then read back.

use std::sync::Arc;

use jiff::Timestamp;
use jiff::civil::date;
use labhours_shared::state::State;
use labhours_shared::wire::{
    Envelope, Event, EventKind, Heartbeat, SCHEMA_VERSION, TransitionSource,
};
use proptest::prelude::*;
use rusqlite::Connection;

use super::*;
use crate::bookings::store::ImportOptions;
use crate::bookings::{Booking, BookingStatus, ParseContext, Parsed, UsageType};
use crate::config::CollectorConfig;
use crate::registry::Registry;
use crate::store::{Batch, Durability, Received, Store};

const CONFIG: &str = r#"
[site]
time_zone = "Asia/Shanghai"

[[instruments]]
id = "nmr-600"
name = "NMR 600 MHz"
unit = "Chemistry/NMR Centre"

[[instruments]]
id = "ms-1"
name = "QTOF"
unit = "Chemistry/Mass Spec"
"#;

fn at(s: &str) -> Timestamp {
    s.parse().expect("timestamp")
}

/// A collector database with a registry, fed like ingest feeds it.
struct Site {
    _dir: tempfile::TempDir,
    store: Store,
    reports: StoreReports,
    registry: Arc<Registry>,
    seq: u64,
}

impl Site {
    fn new(config: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path(), Durability::Normal).expect("open");
        let config = CollectorConfig::parse(config).expect("config");
        let registry = Arc::new(Registry::from_config(&config).expect("registry"));
        let parse = ParseContext::from_config(&config).expect("parse context");
        let reports = StoreReports::new(dir.path(), registry.clone(), parse);
        Self {
            _dir: dir,
            store,
            reports,
            registry,
            seq: 0,
        }
    }

    fn send(&mut self, instrument: &str, kinds: Vec<(Timestamp, EventKind)>) {
        let events = kinds
            .into_iter()
            .map(|(at, kind)| {
                self.seq += 1;
                Event {
                    seq: self.seq,
                    at,
                    kind,
                }
            })
            .collect();
        let batch = Batch {
            envelopes: vec![Received {
                received_at: at("2026-11-22T00:00:00Z"),
                topic: format!("labhours/v1/agent-{instrument}/events"),
                message: Envelope {
                    v: SCHEMA_VERSION,
                    agent_id: format!("agent-{instrument}"),
                    instrument_id: instrument.into(),
                    sent_at: at("2026-11-22T00:00:00Z"),
                    acked_through: 0,
                    events,
                }
                .into(),
            }],
            ..Batch::default()
        };
        self.store.commit(&batch).expect("commit");
    }

    /// Heartbeats every minute over `[from, to]`.
    fn alive(&mut self, instrument: &str, from: &str, to: &str) {
        let (from, to) = (at(from), at(to));
        let mut t = from;
        let mut kinds = Vec::new();
        while t <= to {
            kinds.push((t, heartbeat(t)));
            t += jiff::SignedDuration::from_secs(60);
        }
        self.send(instrument, kinds);
    }

    fn transitions(&mut self, instrument: &str, steps: &[(&str, State)]) {
        let kinds = steps.iter().map(|(t, s)| (at(t), transition(*s))).collect();
        self.send(instrument, kinds);
    }

    fn book(&mut self, bookings: &[Booking]) {
        let parsed = Parsed {
            bookings: bookings
                .iter()
                .cloned()
                .enumerate()
                .map(|(i, b)| (i as u64 + 2, b))
                .collect(),
            ..Parsed::default()
        };
        self.store
            .import_bookings(
                parsed,
                "test.csv",
                ImportOptions::default(),
                at("2026-11-22T00:00:00Z"),
            )
            .expect("import");
    }

    /// Hours per instrument for the local day 2026-11-20.
    fn day_rows(&self) -> Vec<HoursRow> {
        totals(self.hours(
            day(2026, 11, 20),
            day(2026, 11, 21),
            None,
            GroupBy::Instrument,
        ))
    }

    fn catch_up(&self) {
        self.reports
            .catch_up(at("2026-11-22T00:00:00Z"))
            .expect("catch up");
    }

    fn conn(&self) -> &Connection {
        self.store.connection()
    }

    fn hours(
        &self,
        from: Edge,
        to: Edge,
        period: Option<crate::reconcile::PeriodUnit>,
        group_by: GroupBy,
    ) -> HoursRows {
        self.reports
            .hours(&HoursQuery {
                range: Range { from, to },
                instrument: None,
                unit: None,
                period,
                group_by,
            })
            .expect("hours")
            .rows
    }
}

fn heartbeat(t: Timestamp) -> EventKind {
    EventKind::Heartbeat(Heartbeat {
        uptime_s: 1,
        backlog: 0,
        oldest_unacked_age_s: None,
        clock: t,
        version: "test".into(),
    })
}

fn transition(to: State) -> EventKind {
    EventKind::Transition {
        from: State::Unknown,
        to,
        source: TransitionSource::Power,
        reason: "test".into(),
    }
}

fn booking(id: &str, instrument: &str, usage: UsageType, start: &str, end: &str) -> Booking {
    Booking {
        booking_id: id.into(),
        instrument_id: instrument.into(),
        user: "wang".into(),
        group: "Li lab".into(),
        usage_type: usage,
        start: at(start),
        end: at(end),
        status: BookingStatus::Confirmed,
    }
}

fn day(y: i16, m: i8, d: i8) -> Edge {
    Edge::Date(date(y, m, d))
}

/// The rows of `id` among `rows`.
fn row_of<'a>(rows: &'a [HoursRow], id: &str) -> &'a HoursRow {
    rows.iter()
        .find(|r| r.instrument_id.as_deref() == Some(id))
        .unwrap_or_else(|| panic!("no row for {id}"))
}

fn totals(rows: HoursRows) -> Vec<HoursRow> {
    match rows {
        HoursRows::Totals(rows) => rows,
        HoursRows::UsageTypes(_) => panic!("expected totals"),
    }
}

/// 2026-11-20 in Shanghai is 2026-11-19T16:00Z ..= 2026-11-20T16:00Z.
/// Alive 08:00–18:00 local; standby from 08:00, running 09:00–11:00 and
/// 14:00–14:01 (a blip), standby after. Booking 09:00–10:00 research.
fn one_day(site: &mut Site) {
    site.alive("nmr-600", "2026-11-20T00:00:00Z", "2026-11-20T10:00:00Z");
    site.transitions(
        "nmr-600",
        &[
            ("2026-11-20T00:00:00Z", State::Standby),
            ("2026-11-20T01:00:00Z", State::Running),
            ("2026-11-20T03:00:00Z", State::Standby),
            ("2026-11-20T06:00:00Z", State::Running),
            ("2026-11-20T06:01:00Z", State::Standby),
        ],
    );
    site.book(&[booking(
        "b-1",
        "nmr-600",
        UsageType::Research,
        "2026-11-20T01:00:00Z",
        "2026-11-20T02:00:00Z",
    )]);
    site.catch_up();
}

#[test]
fn a_day_of_hand_computed_usage_is_reported_with_the_section_6_fields() {
    let mut site = Site::new(CONFIG);
    one_day(&mut site);
    let rows = site.day_rows();
    let nmr = row_of(&rows, "nmr-600");
    assert_eq!(nmr.period_start, "2026-11-20T00:00:00+08:00");
    assert_eq!(nmr.period_end, "2026-11-21T00:00:00+08:00");
    // 09:00–11:00 used; the 1-minute blip is dropped (< 120 s).
    assert_eq!(nmr.used_hours, 2.0);
    assert_eq!(nmr.booked_hours, 1.0);
    // The booking owns its slot, its late grace and the overrun to 11:00.
    assert_eq!(nmr.booked_used_hours, 2.0);
    assert_eq!(nmr.unbooked_hours, 0.0);
    assert_eq!(nmr.by_usage_type["research"], 2.0);
    // Alive 08:00–18:00: 14 h unknown, coverage 10/24.
    assert_eq!(nmr.unknown_hours, 14.0);
    assert_eq!(nmr.coverage, 0.4167);
    assert_eq!(nmr.utilization, Some(0.0833));
    assert_eq!(nmr.instruments, 1);
    assert_eq!(nmr.unit.as_deref(), Some("Chemistry/NMR Centre"));
    // The other instrument has no data: all unknown, no usage.
    let ms = row_of(&rows, "ms-1");
    assert_eq!(
        (ms.used_hours, ms.unknown_hours, ms.coverage),
        (0.0, 24.0, 0.0)
    );

    let outcomes = site
        .reports
        .outcomes(
            &Range {
                from: day(2026, 11, 20),
                to: day(2026, 11, 21),
            },
            None,
        )
        .expect("outcomes");
    assert_eq!(outcomes.len(), 1);
    let o = &outcomes[0];
    assert_eq!(
        (o.outcome.as_str(), o.flags.clone()),
        ("used", vec!["overrun".to_owned()])
    );
    assert_eq!(
        (o.booked_s, o.used_s, o.early_s, o.overrun_s),
        (3600.0, 7200.0, 0.0, 2700.0)
    );
    assert_eq!(o.first_use.as_deref(), Some("2026-11-20T09:00:00+08:00"));
    assert_eq!(o.last_use.as_deref(), Some("2026-11-20T11:00:00+08:00"));
}

#[test]
fn days_with_unsigned_events_are_marked_in_the_hours_answer() {
    let mut site = Site::new(CONFIG);
    one_day(&mut site);
    site.alive("ms-1", "2026-11-20T00:00:00Z", "2026-11-20T00:10:00Z");
    // ms-1's agent signs (as ingest marks events from enrolled keys);
    // nmr-600's is an older, unsigned agent.
    site.conn()
        .execute(
            "UPDATE events SET signed = 1 WHERE agent_id = 'agent-ms-1'",
            [],
        )
        .expect("mark");
    let rows = site.day_rows();
    let nmr = row_of(&rows, "nmr-600");
    assert!(!nmr.signed);
    assert!(nmr.unsigned_events > 600, "{}", nmr.unsigned_events);
    let ms = row_of(&rows, "ms-1");
    assert!(ms.signed);
    assert_eq!(ms.unsigned_events, 0);
    let units = totals(site.hours(day(2026, 11, 20), day(2026, 11, 21), None, GroupBy::Unit));
    assert!(units.iter().any(|r| !r.signed), "the unit holding nmr-600");
}

#[test]
fn an_agent_that_falls_silent_leaves_unknown_until_its_next_transition() {
    let mut site = Site::new(CONFIG);
    // Running from 08:00; the agent dies at 09:00 and comes back at 12:00,
    // finding the instrument running again from 12:00:30.
    site.alive("nmr-600", "2026-11-20T00:00:00Z", "2026-11-20T01:00:00Z");
    site.alive("nmr-600", "2026-11-20T04:00:00Z", "2026-11-20T05:00:00Z");
    site.transitions(
        "nmr-600",
        &[
            ("2026-11-20T00:00:00Z", State::Running),
            ("2026-11-20T04:00:30Z", State::Running),
        ],
    );
    site.catch_up();
    let rows = site.day_rows();
    let nmr = row_of(&rows, "nmr-600");
    // 08:00–09:00 and 12:00:30–13:00 are used: 2 h less 30 s.
    assert_eq!(nmr.used_hours, 1.99);
    // Unknown: 00:00–08:00, 09:00–12:00:30, 13:00–24:00.
    assert_eq!(nmr.unknown_hours, 22.01);
}

#[test]
fn months_and_years_sum_the_days_and_partial_days_are_reconciled_on_the_spot() {
    let mut site = Site::new(CONFIG);
    one_day(&mut site);
    let by_day = totals(site.hours(
        day(2026, 11, 1),
        day(2027, 1, 1),
        Some(crate::reconcile::PeriodUnit::Day),
        GroupBy::Instrument,
    ));
    let by_month = totals(site.hours(
        day(2026, 11, 1),
        day(2027, 1, 1),
        Some(crate::reconcile::PeriodUnit::Month),
        GroupBy::Instrument,
    ));
    let nmr = |rows: &[HoursRow]| -> f64 {
        rows.iter()
            .filter(|r| r.instrument_id.as_deref() == Some("nmr-600"))
            .map(|r| r.used_hours)
            .sum()
    };
    assert_eq!(nmr(&by_day), 2.0);
    assert_eq!(nmr(&by_month), 2.0);
    assert_eq!(by_month.len(), 4, "two instruments × two months");
    // 10:00–10:30 local, an instant range: half an hour of booked use.
    let part = totals(site.hours(
        Edge::Instant(at("2026-11-20T02:00:00Z")),
        Edge::Instant(at("2026-11-20T02:30:00Z")),
        None,
        GroupBy::Instrument,
    ));
    let nmr_part = row_of(&part, "nmr-600");
    assert_eq!(
        (
            nmr_part.used_hours,
            nmr_part.booked_used_hours,
            nmr_part.unknown_hours
        ),
        (0.5, 0.5, 0.0)
    );
}

#[test]
fn grouping_by_unit_and_usage_type_sums_the_instruments() {
    let mut site = Site::new(CONFIG);
    one_day(&mut site);
    let units = totals(site.hours(day(2026, 11, 20), day(2026, 11, 21), None, GroupBy::Unit));
    // Every level of the tree: the college and both of its centres.
    let names: Vec<_> = units
        .iter()
        .map(|r| r.unit.as_deref().unwrap_or(""))
        .collect();
    assert_eq!(
        names,
        ["Chemistry", "Chemistry/Mass Spec", "Chemistry/NMR Centre"]
    );
    assert_eq!((units[2].used_hours, units[2].instruments), (2.0, 1));
    assert_eq!((units[0].used_hours, units[0].instruments), (2.0, 2));
    let HoursRows::UsageTypes(types) = site.hours(
        day(2026, 11, 20),
        day(2026, 11, 21),
        None,
        GroupBy::UsageType,
    ) else {
        panic!("usage types");
    };
    let research = types.iter().find(|r| r.usage_type == "research").unwrap();
    assert_eq!((research.used_hours, research.instruments), (2.0, 2));
}

#[test]
fn a_unit_of_two_instruments_is_measured_against_both_of_their_days() {
    let one_unit = CONFIG.replace("Chemistry/Mass Spec", "Chemistry/NMR Centre");
    let mut site = Site::new(&one_unit);
    one_day(&mut site);
    let units = totals(site.hours(day(2026, 11, 20), day(2026, 11, 21), None, GroupBy::Unit));
    // The centre and the college above it hold the same two instruments.
    assert_eq!(units.len(), 2);
    assert_eq!(
        units[0],
        HoursRow {
            unit: Some("Chemistry".into()),
            ..units[1].clone()
        }
    );
    let u = &units[1];
    assert_eq!(u.unit.as_deref(), Some("Chemistry/NMR Centre"));
    assert_eq!(
        (u.instruments, u.used_hours, u.unknown_hours),
        (2, 2.0, 38.0)
    );
    // 2 h used of 2 × 24 h; 10 h of evidence of 48 h.
    // Ratios are reported to 4 decimals.
    assert_eq!(u.utilization, Some(0.0417));
    assert_eq!(u.coverage, 0.2083);
}

#[test]
fn a_correction_changes_the_corrected_figures_and_never_the_evidence() {
    let mut site = Site::new(CONFIG);
    // Unbooked running 13:00–15:00 local.
    site.alive("ms-1", "2026-11-20T04:00:00Z", "2026-11-20T08:00:00Z");
    site.transitions(
        "ms-1",
        &[
            ("2026-11-20T04:00:00Z", State::Standby),
            ("2026-11-20T05:00:00Z", State::Running),
            ("2026-11-20T07:00:00Z", State::Standby),
        ],
    );
    site.catch_up();
    let c = site
        .reports
        .add_correction(
            NewCorrection {
                instrument_id: "ms-1".into(),
                start: at("2026-11-20T05:00:00Z"),
                end: at("2026-11-20T06:00:00Z"),
                user: Some("zhao".into()),
                group: None,
                usage_type: Some(UsageType::Training),
                booking_id: None,
                from_booking_id: None,
                reason: "walk-up training session, paper logbook p. 12".into(),
            },
            "admin-office",
            at("2026-11-21T09:00:00Z"),
        )
        .expect("correction");
    assert_eq!(c.created_by, "admin-office");
    let rows = site.day_rows();
    let ms = row_of(&rows, "ms-1");
    assert_eq!(
        (
            ms.used_hours,
            ms.unbooked_hours,
            ms.by_usage_type["unassigned"]
        ),
        (2.0, 2.0, 2.0)
    );
    assert_eq!(ms.corrected.assigned_hours, 1.0);
    assert_eq!(ms.corrected.unbooked_hours, 1.0);
    assert_eq!(ms.corrected.by_usage_type["training"], 1.0);
    assert_eq!(ms.corrected.by_usage_type["unassigned"], 1.0);
    let listed = site
        .reports
        .corrections(
            &Range {
                from: day(2026, 11, 20),
                to: day(2026, 11, 21),
            },
            Some("ms-1"),
        )
        .expect("list");
    assert_eq!(listed, vec![c]);

    let bad = site.reports.add_correction(
        NewCorrection {
            instrument_id: "ms-1".into(),
            start: at("2026-11-20T06:00:00Z"),
            end: at("2026-11-20T05:00:00Z"),
            user: None,
            group: None,
            usage_type: None,
            booking_id: None,
            from_booking_id: None,
            reason: "x".into(),
        },
        "admin-office",
        at("2026-11-21T09:00:00Z"),
    );
    assert!(
        matches!(
            bad,
            Err(QueryError::BadParameter {
                parameter: "end",
                ..
            })
        ),
        "{bad:?}"
    );
}

/// A double booking on nmr-600 (2026-11-20, local): a research 09:00–11:00,
/// b teaching 10:00–12:00; running 09:00–11:30. §4 gives [09:00, 10:00) to
/// a and [10:00, 11:30) to b (own slot, started last).
fn double_booking(site: &mut Site) {
    site.alive("nmr-600", "2026-11-20T00:00:00Z", "2026-11-20T05:00:00Z");
    site.transitions(
        "nmr-600",
        &[
            ("2026-11-20T00:00:00Z", State::Standby),
            ("2026-11-20T01:00:00Z", State::Running),
            ("2026-11-20T03:30:00Z", State::Standby),
        ],
    );
    site.book(&[
        booking(
            "a",
            "nmr-600",
            UsageType::Research,
            "2026-11-20T01:00:00Z",
            "2026-11-20T03:00:00Z",
        ),
        booking(
            "b",
            "nmr-600",
            UsageType::Teaching,
            "2026-11-20T02:00:00Z",
            "2026-11-20T04:00:00Z",
        ),
        booking(
            "q",
            "ms-1",
            UsageType::Research,
            "2026-11-20T02:00:00Z",
            "2026-11-20T04:00:00Z",
        ),
    ]);
    site.catch_up();
}

fn a_move(start: &str, end: &str, from: &str, to: &str) -> NewCorrection {
    NewCorrection {
        instrument_id: "nmr-600".into(),
        start: at(start),
        end: at(end),
        booking_id: Some(to.into()),
        from_booking_id: Some(from.into()),
        reason: "a kept running; b started at 11:00 (logbook)".into(),
        ..NewCorrection::default()
    }
}

fn outcome<'a>(rows: &'a [OutcomeRow], id: &str) -> &'a OutcomeRow {
    rows.iter().find(|o| o.booking_id == id).expect("outcome")
}

#[test]
fn disputed_time_is_listed_and_a_move_changes_only_the_corrected_figures() {
    let mut site = Site::new(CONFIG);
    double_booking(&mut site);
    let range = Range {
        from: day(2026, 11, 20),
        to: day(2026, 11, 21),
    };
    let before = site.reports.outcomes(&range, None).expect("outcomes");
    let (a, b) = (outcome(&before, "a"), outcome(&before, "b"));
    assert_eq!((a.used_s, b.used_s), (3600.0, 5400.0));
    assert_eq!((a.corrected_used_s, b.corrected_used_s), (3600.0, 5400.0));
    assert_eq!(a.overlapping_bookings, vec!["b".to_owned()]);
    assert_eq!(b.overlapping_bookings, vec!["a".to_owned()]);
    assert_eq!(
        (a.usage_taken_by.clone(), a.took_usage_from.clone()),
        (vec!["b".to_owned()], vec![])
    );
    assert_eq!(
        (b.usage_taken_by.clone(), b.took_usage_from.clone()),
        (vec![], vec!["a".to_owned()])
    );
    // The other instrument's booking at the same time is no one's dispute.
    assert!(outcome(&before, "q").overlapping_bookings.is_empty());
    let evidence = results(site.conn());

    let c = site
        .reports
        .add_correction(
            a_move("2026-11-20T02:00:00Z", "2026-11-20T03:00:00Z", "b", "a"),
            "admin-office",
            at("2026-11-21T09:00:00Z"),
        )
        .expect("move");
    assert_eq!(c.correction.from_booking_id.as_deref(), Some("b"));
    let after = site.reports.outcomes(&range, None).expect("outcomes");
    let (a, b) = (outcome(&after, "a"), outcome(&after, "b"));
    // Uncorrected figures and outcomes stay; the corrected ones move an hour.
    assert_eq!((a.used_s, b.used_s), (3600.0, 5400.0));
    assert_eq!((a.corrected_used_s, b.corrected_used_s), (7200.0, 1800.0));
    assert_eq!((a.outcome.as_str(), b.outcome.as_str()), ("used", "used"));
    let nmr = row_of(&site.day_rows(), "nmr-600").clone();
    assert_eq!(
        (nmr.by_usage_type["research"], nmr.by_usage_type["teaching"]),
        (1.0, 1.5)
    );
    assert_eq!(
        (
            nmr.corrected.by_usage_type["research"],
            nmr.corrected.by_usage_type["teaching"]
        ),
        (2.0, 0.5)
    );
    assert_eq!(
        (
            nmr.used_hours,
            nmr.booked_used_hours,
            nmr.corrected.assigned_hours
        ),
        (2.5, 2.5, 0.0)
    );
    // A rebuild from scratch gives the same results.
    let incremental = results(site.conn());
    assert_ne!(incremental, evidence, "the corrected figures are stored");
    let mut conn = super::store_reports::open_writer(site.store.path().parent().unwrap()).unwrap();
    materialize::rebuild(&mut conn, &site.registry, 0).expect("rebuild");
    assert_eq!(results(&conn), incremental);
    let listed = site
        .reports
        .corrections(&range, Some("nmr-600"))
        .expect("list");
    assert_eq!(listed, vec![c]);
}

#[test]
fn a_move_is_refused_saying_precisely_what_is_wrong() {
    let mut site = Site::new(CONFIG);
    double_booking(&mut site);
    let mut cancelled = booking(
        "c",
        "nmr-600",
        UsageType::Research,
        "2026-11-20T05:00:00Z",
        "2026-11-20T06:00:00Z",
    );
    cancelled.status = BookingStatus::Cancelled;
    site.book(&[cancelled]);
    let now = at("2026-11-21T09:00:00Z");
    let refused = |c: NewCorrection| match site.reports.add_correction(c, "admin-office", now) {
        Err(QueryError::BadParameter { parameter, message }) => (parameter, message),
        other => panic!("expected a refusal, got {other:?}"),
    };
    // [09:00, 10:30) local: the first hour is a's, not b's.
    let (p, m) = refused(a_move(
        "2026-11-20T01:00:00Z",
        "2026-11-20T02:30:00Z",
        "b",
        "a",
    ));
    assert_eq!(p, "from_booking_id");
    assert!(
        m.starts_with(
            "from 2026-11-20T09:00:00+08:00 to 2026-11-20T10:00:00+08:00 the usage is attributed to booking \"a\""
        ),
        "{m}"
    );
    // Past the session's end there is nothing to move.
    let (p, m) = refused(a_move(
        "2026-11-20T03:00:00Z",
        "2026-11-20T04:00:00Z",
        "b",
        "a",
    ));
    assert_eq!(p, "from_booking_id");
    assert!(
        m.starts_with(
            "from 2026-11-20T11:30:00+08:00 to 2026-11-20T12:00:00+08:00 there is no usage"
        ),
        "{m}"
    );
    let (p, m) = refused(a_move(
        "2026-11-20T02:00:00Z",
        "2026-11-20T03:00:00Z",
        "b",
        "q",
    ));
    assert_eq!(
        (p, m.as_str()),
        (
            "booking_id",
            "booking \"q\" is on instrument \"ms-1\", not \"nmr-600\""
        )
    );
    let (p, m) = refused(a_move(
        "2026-11-20T02:00:00Z",
        "2026-11-20T03:00:00Z",
        "zz",
        "a",
    ));
    assert_eq!((p, m.as_str()), ("from_booking_id", "no booking \"zz\""));
    let (p, _) = refused(a_move(
        "2026-11-20T02:00:00Z",
        "2026-11-20T03:00:00Z",
        "b",
        "b",
    ));
    assert_eq!(p, "booking_id");
    let mut with_type = a_move("2026-11-20T02:00:00Z", "2026-11-20T03:00:00Z", "b", "a");
    with_type.usage_type = Some(UsageType::Training);
    assert_eq!(refused(with_type).0, "usage_type");
    let (p, m) = refused(a_move(
        "2026-11-20T02:00:00Z",
        "2026-11-20T03:00:00Z",
        "b",
        "c",
    ));
    assert_eq!(
        (p, m.as_str()),
        ("booking_id", "booking \"c\" is cancelled: it owns no usage")
    );
    let mut no_target = a_move("2026-11-20T02:00:00Z", "2026-11-20T03:00:00Z", "b", "a");
    no_target.booking_id = None;
    assert_eq!(refused(no_target).0, "booking_id");
    // Nothing was recorded.
    let range = Range {
        from: day(2026, 11, 20),
        to: day(2026, 11, 21),
    };
    assert!(
        site.reports
            .corrections(&range, None)
            .expect("list")
            .is_empty()
    );
}

/// Found by schemathesis: a correction from year 470 made the next pass
/// write (and total) a day row for every day since 470, and the request
/// timed out. Days before the first evidence get no rows, as in a full pass.
#[test]
fn a_correction_dated_centuries_before_any_evidence_is_quick_and_adds_no_days() {
    let mut site = Site::new(CONFIG);
    one_day(&mut site);
    site.catch_up();
    let before = results(site.conn());
    let started = std::time::Instant::now();
    site.reports
        .add_correction(
            NewCorrection {
                instrument_id: "nmr-600".into(),
                start: at("0470-03-14T02:43:44Z"),
                end: at("1943-05-24T18:13:59.370Z"),
                user: None,
                group: None,
                usage_type: Some(UsageType::Teaching),
                booking_id: None,
                from_booking_id: None,
                reason: "fuzzed".into(),
            },
            "admin-office",
            at("2026-11-21T09:00:00Z"),
        )
        .expect("correction");
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    let first_day: i64 = site
        .conn()
        .query_row(
            "SELECT MIN(start_ms) FROM day_totals WHERE instrument_id = 'nmr-600'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(first_day > at("2000-01-01T00:00:00Z").as_millisecond());
    // Nothing it covers has usage: every result is as it was.
    assert_eq!(results(site.conn()), before);
}

#[test]
fn a_changed_policy_reconciles_the_instrument_again() {
    let mut site = Site::new(CONFIG);
    one_day(&mut site);
    let standby_counts = CONFIG.replace(
        "unit = \"Chemistry/NMR Centre\"",
        "unit = \"Chemistry/NMR Centre\"\n[instruments.rules]\nin_use_states = [\"running\", \"standby\"]",
    );
    let config = CollectorConfig::parse(&standby_counts).expect("config");
    let registry = Registry::from_config(&config).expect("registry");
    let mut conn = super::store_reports::open_writer(site.store.path().parent().unwrap()).unwrap();
    let pass = materialize::reconcile_changed_policies(&mut conn, &registry, 0).expect("policies");
    assert_eq!(pass.instruments, 1);
    let used: i64 = conn
        .query_row(
            "SELECT SUM(used_ms) FROM day_totals WHERE instrument_id = 'nmr-600'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    // 08:00–18:00 is standby or running: 10 h.
    assert_eq!(used, 10 * 3_600_000);
}

/// Every stored result of the verified tables, for comparing two databases.
fn results(conn: &Connection) -> Vec<String> {
    let mut out = Vec::new();
    for table in ["day_totals", "month_totals", "booking_outcomes"] {
        let mut stmt = conn
            .prepare(&format!("SELECT * FROM {table} ORDER BY 1, 2"))
            .unwrap();
        let n = stmt.column_count();
        let rows = stmt
            .query_map([], |r| {
                let mut cells = Vec::new();
                for i in 0..n {
                    cells.push(format!("{:?}", r.get::<_, rusqlite::types::Value>(i)?));
                }
                Ok(format!("{table}: {}", cells.join(" | ")))
            })
            .unwrap();
        out.extend(rows.map(Result::unwrap));
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, .. ProptestConfig::default() })]

    /// Incremental reconciliation after every delivery gives exactly what
    /// a full rebuild gives, whatever the order the data arrives in.
    #[test]
    fn incremental_reconciliation_equals_a_full_rebuild(
        steps in proptest::collection::vec((0i64..4 * 86_400, 0usize..3), 4..40),
        books in proptest::collection::vec((0i64..4 * 86_400, 600i64..14_400, any::<bool>()), 0..8),
        chunks in 1usize..6,
    ) {
        let mut site = Site::new(CONFIG);
        let base = at("2026-11-18T00:00:00Z").as_millisecond();
        let states = [State::Running, State::Standby, State::Off];
        let mut events: Vec<(Timestamp, EventKind)> = steps
            .iter()
            .map(|&(s, k)| (Timestamp::from_millisecond(base + s * 1000).unwrap(), transition(states[k])))
            .collect();
        let mut hb = base;
        while hb < base + 4 * 86_400_000 {
            // A silence of a few hours on the second day.
            if !(base + 30 * 3_600_000..base + 34 * 3_600_000).contains(&hb) {
                events.push((Timestamp::from_millisecond(hb).unwrap(), heartbeat(Timestamp::from_millisecond(hb).unwrap())));
            }
            hb += 60_000;
        }
        let bookings: Vec<Booking> = books
            .iter()
            .enumerate()
            .map(|(i, &(s, len, cancelled))| {
                let start = Timestamp::from_millisecond(base + s * 1000).unwrap();
                let mut b = booking(&format!("b{i}"), "nmr-600", UsageType::Research, &start.to_string(), &(start + jiff::SignedDuration::from_secs(len)).to_string());
                if cancelled { b.status = BookingStatus::Cancelled; }
                b
            })
            .collect();
        // Deliver in `chunks` pieces, latest first (a backlog arriving late).
        let size = events.len().div_ceil(chunks);
        let pieces: Vec<Vec<_>> = events.chunks(size).map(<[_]>::to_vec).collect();
        for (i, piece) in pieces.into_iter().rev().enumerate() {
            site.send("nmr-600", piece);
            if i == 0 { site.book(&bookings); }
            site.catch_up();
        }
        let incremental = results(site.conn());
        let mut conn = super::store_reports::open_writer(site.store.path().parent().unwrap()).unwrap();
        materialize::rebuild(&mut conn, &site.registry, 0).unwrap();
        let rebuilt = results(&conn);
        prop_assert_eq!(incremental, rebuilt);
    }
}

const GOLDEN: &str = r#"
[site]
time_zone = "UTC"

[[instruments]]
id = "nmr-600"
name = "NMR 600 MHz"
"#;

/// The golden day (docs/reconciliation.md, "Golden scenario"): every
/// outcome and every flag, computed by hand. 2026-11-20, UTC.
fn golden_day() -> Site {
    let mut site = Site::new(GOLDEN);
    let t = |hm: &str| format!("2026-11-20T{hm}:00Z");
    site.alive("nmr-600", &t("00:00"), &t("19:30"));
    site.alive("nmr-600", &t("22:00"), "2026-11-21T00:00:00Z");
    let steps: Vec<(String, State)> = [
        ("00:00", State::Off),
        ("08:20", State::Running),
        ("09:00", State::Standby),
        ("12:00", State::Running),
        ("12:30", State::Standby),
        ("13:50", State::Running),
        ("14:40", State::Standby),
        ("16:00", State::Running),
        ("17:30", State::Standby),
        ("18:00", State::Fault),
        ("18:30", State::Off),
        ("22:00", State::Off),
        ("23:00", State::Running),
        ("23:01", State::Off),
    ]
    .iter()
    .map(|(hm, s)| (t(hm), *s))
    .collect();
    let steps: Vec<(&str, State)> = steps.iter().map(|(a, s)| (a.as_str(), *s)).collect();
    site.transitions("nmr-600", &steps);
    let b = |id: &str, usage: UsageType, from: &str, to: &str| {
        booking(id, "nmr-600", usage, &t(from), &t(to))
    };
    let mut cancelled = b("C-cancelled", UsageType::Research, "12:00", "13:00");
    cancelled.status = BookingStatus::Cancelled;
    site.book(&[
        b("A-late-start", UsageType::Research, "08:00", "09:00"),
        b("B-no-show", UsageType::Teaching, "10:00", "11:00"),
        cancelled,
        b("D-early-finish", UsageType::External, "14:00", "15:00"),
        b("E-overrun", UsageType::Training, "16:00", "17:00"),
        b("F-fault", UsageType::Research, "18:00", "19:00"),
        b("G-no-data", UsageType::Maintenance, "20:00", "21:00"),
    ]);
    site.catch_up();
    site
}

#[test]
fn golden_day_outcomes_and_flags() {
    let site = golden_day();
    let outcomes = site
        .reports
        .outcomes(
            &Range {
                from: day(2026, 11, 20),
                to: day(2026, 11, 21),
            },
            Some("nmr-600"),
        )
        .expect("outcomes");
    type Outcome<'a> = (&'a str, &'a str, Vec<String>, f64, f64, f64, f64);
    let got: Vec<Outcome<'_>> = outcomes
        .iter()
        .map(|o| {
            (
                o.booking_id.as_str(),
                o.outcome.as_str(),
                o.flags.clone(),
                o.booked_s,
                o.used_s,
                o.early_s,
                o.overrun_s,
            )
        })
        .collect();
    let f = |names: &[&str]| names.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    assert_eq!(
        got,
        vec![
            (
                "A-late-start",
                "used",
                f(&["late_start"]),
                3600.0,
                2400.0,
                0.0,
                0.0
            ),
            ("B-no-show", "no_show", f(&[]), 3600.0, 0.0, 0.0, 0.0),
            ("C-cancelled", "cancelled", f(&[]), 3600.0, 0.0, 0.0, 0.0),
            (
                "D-early-finish",
                "used",
                f(&["early_finish"]),
                3600.0,
                3000.0,
                600.0,
                0.0
            ),
            (
                "E-overrun",
                "used",
                f(&["overrun"]),
                3600.0,
                5400.0,
                0.0,
                900.0
            ),
            ("F-fault", "instrument_fault", f(&[]), 3600.0, 0.0, 0.0, 0.0),
            ("G-no-data", "no_data", f(&[]), 3600.0, 0.0, 0.0, 0.0),
        ]
    );
    let by_id = |id: &str| outcomes.iter().find(|o| o.booking_id == id).unwrap();
    assert_eq!(
        by_id("A-late-start").first_use.as_deref(),
        Some("2026-11-20T08:20:00+00:00")
    );
    assert_eq!(
        by_id("E-overrun").last_use.as_deref(),
        Some("2026-11-20T17:30:00+00:00")
    );
    assert_eq!(by_id("F-fault").fault_s, 1800.0);
    assert_eq!(by_id("G-no-data").unknown_s, 3600.0);
    assert_eq!(
        by_id("D-early-finish").sessions,
        vec!["nmr-600@1795182600000".to_owned()]
    );
}

#[test]
fn golden_day_hours() {
    let site = golden_day();
    let rows = site.day_rows();
    assert_eq!(rows.len(), 1);
    let r = &rows[0];
    // Sessions 08:20–09:00, 12:00–12:30, 13:50–14:40, 16:00–17:30 (the
    // 23:00 blip is dropped): 210 min.
    assert_eq!(r.used_hours, 3.5);
    assert_eq!(
        r.booked_hours, 6.0,
        "six confirmed hours; the cancelled one is left out"
    );
    assert_eq!(r.booked_used_hours, 3.0);
    assert_eq!(r.unbooked_hours, 0.5, "the run in the cancelled slot");
    assert_eq!(r.by_usage_type["research"], 0.67);
    assert_eq!(r.by_usage_type["external"], 0.83);
    assert_eq!(r.by_usage_type["training"], 1.5);
    assert_eq!(r.by_usage_type["unassigned"], 0.5);
    assert_eq!(r.by_usage_type["teaching"], 0.0);
    assert_eq!(r.external_hours, 0.83);
    assert_eq!(r.share_rate, Some(0.2381), "50 of 210 min, to 4 decimals");
    assert_eq!(r.no_show_count, 1);
    assert_eq!(r.fault_hours, 0.5);
    assert_eq!(r.unknown_hours, 2.5, "the agent was silent 19:30–22:00");
    assert_eq!(r.coverage, 0.8958);
    assert_eq!(r.utilization, Some(0.1458));
    assert_eq!(r.open_hours, None);
    assert_eq!(r.corrected.assigned_hours, 0.0);

    let sessions = site
        .reports
        .sessions(
            &Range {
                from: day(2026, 11, 20),
                to: day(2026, 11, 21),
            },
            Some("nmr-600"),
        )
        .expect("sessions");
    let kept: Vec<(f64, bool)> = sessions.iter().map(|s| (s.duration_s, s.dropped)).collect();
    assert_eq!(
        kept,
        vec![
            (2400.0, false),
            (1800.0, false),
            (3000.0, false),
            (5400.0, false),
            (60.0, true)
        ]
    );
    assert_eq!(sessions[1].segments[0].booking_id, None);
}

#[test]
fn a_query_that_would_build_an_unbounded_answer_is_refused_naming_period() {
    let site = Site::new(CONFIG);
    let huge = site.reports.hours(&HoursQuery {
        range: Range {
            from: day(1, 1, 1),
            to: day(9999, 12, 31),
        },
        instrument: None,
        unit: None,
        period: Some(crate::reconcile::PeriodUnit::Day),
        group_by: GroupBy::Instrument,
    });
    assert!(
        matches!(
            huge,
            Err(QueryError::BadParameter {
                parameter: "period",
                ..
            })
        ),
        "{huge:?}"
    );
}

#[test]
fn the_instrument_list_shows_the_thresholds_agents_apply_and_where_they_differ() {
    use labhours_shared::state::StateRules;
    use labhours_shared::wire::{AgentStatus, Presence};
    let config =
        format!("{CONFIG}\n[instruments.thresholds]\non_above_w = 5.0\nrunning_above_w = 800.0\n");
    let mut site = Site::new(&config);
    let status = |agent: &str, instrument: &str, running: f64, presence: Presence| Received {
        received_at: at("2026-11-22T00:00:00Z"),
        topic: format!("labhours/v1/{agent}/status"),
        message: AgentStatus {
            v: SCHEMA_VERSION,
            agent_id: agent.into(),
            instrument_id: instrument.into(),
            status: presence,
            at: Some(at("2026-11-22T00:00:00Z")),
            version: "test".into(),
            state_rules: (presence == Presence::Online)
                .then(|| StateRules::with_thresholds(5.0, running).effective(1000)),
        },
    };
    // ms-1 (the last [[instruments]], which the thresholds table belongs
    // to) applies 500 W where the registry says 800 W; nmr-600 has no
    // registered thresholds, so nothing can differ.
    site.store
        .commit(&Batch {
            statuses: vec![
                status("agent-ms", "ms-1", 500.0, Presence::Online),
                status("agent-nmr", "nmr-600", 500.0, Presence::Online),
            ],
            ..Batch::default()
        })
        .expect("online");
    // The offline will carries no rules: the reported ones stay.
    site.store
        .commit(&Batch {
            statuses: vec![status("agent-ms", "ms-1", 0.0, Presence::Offline)],
            ..Batch::default()
        })
        .expect("offline");
    let list = site
        .reports
        .instruments(at("2026-11-22T00:01:00Z"))
        .expect("list");
    let agent = |id: &str| {
        list.iter()
            .flat_map(|i| &i.agents)
            .find(|a| a.agent_id == id)
            .expect("agent listed")
            .clone()
    };
    let ms = agent("agent-ms");
    assert_eq!(
        ms.applied_thresholds.as_ref().map(|t| t.running_above_w),
        Some(500.0)
    );
    let fields: Vec<&str> = ms
        .threshold_mismatch
        .iter()
        .map(|d| d.field.as_str())
        .collect();
    assert_eq!(fields, ["running_above_w", "running_exit_below_w"]);
    let nmr = agent("agent-nmr");
    assert!(nmr.applied_thresholds.is_some());
    assert!(nmr.registry_thresholds.is_none());
    assert!(nmr.threshold_mismatch.is_empty());
}

/// Outcomes overlapping 2026-11-20 (Shanghai), every instrument.
fn outcomes_of_the_day(site: &Site) -> Vec<OutcomeRow> {
    site.reports
        .outcomes(
            &Range {
                from: day(2026, 11, 20),
                to: day(2026, 11, 21),
            },
            None,
        )
        .expect("outcomes")
}

#[test]
fn a_booking_of_an_instrument_not_monitored_is_not_monitored_and_counts_nowhere() {
    let mut site = Site::new(CONFIG);
    one_day(&mut site);
    let mut cancelled = booking(
        "x-2",
        "xrd-9",
        UsageType::Research,
        "2026-11-20T03:00:00Z",
        "2026-11-20T04:00:00Z",
    );
    cancelled.status = BookingStatus::Cancelled;
    site.book(&[
        booking(
            "x-1",
            "xrd-9",
            UsageType::Research,
            "2026-11-20T01:00:00Z",
            "2026-11-20T02:00:00Z",
        ),
        cancelled,
    ]);
    site.catch_up();
    let outcomes = outcomes_of_the_day(&site);
    let of = |id: &str| {
        outcomes
            .iter()
            .find(|o| o.booking_id == id)
            .map(|o| o.outcome.as_str())
    };
    assert_eq!(of("x-1"), Some("not_monitored"));
    assert_eq!(of("x-2"), Some("cancelled"));
    assert_eq!(of("b-1"), Some("used"));
    // It measured nothing: no hours row (no day of unknown in the totals).
    let rows = site.day_rows();
    let ids: Vec<_> = rows.iter().map(|r| r.instrument_id.as_deref()).collect();
    assert_eq!(ids, [Some("ms-1"), Some("nmr-600")]);
    assert!(rows.iter().all(|r| r.no_show_count == 0));
    let instruments = site
        .reports
        .instruments(at("2026-11-22T00:00:00Z"))
        .unwrap();
    assert!(instruments.iter().all(|i| i.instrument_id != "xrd-9"));
    // Once configured, it is monitored: its policy changed, so its bookings
    // are reconciled again (no evidence yet: no_data).
    let config = format!("{CONFIG}\n[[instruments]]\nid = \"xrd-9\"\nname = \"XRD\"\n");
    let registry = Registry::from_config(&CollectorConfig::parse(&config).unwrap()).unwrap();
    let mut conn = super::store_reports::open_writer(site.store.path().parent().unwrap()).unwrap();
    let pass = materialize::reconcile_changed_policies(&mut conn, &registry, 0).expect("policies");
    assert_eq!(pass.instruments, 1);
    let outcome: String = conn
        .query_row(
            "SELECT outcome FROM booking_outcomes WHERE booking_id = 'x-1'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(outcome, "no_data");
}

#[test]
fn outcomes_are_selected_by_overlap_with_the_range() {
    let mut site = Site::new(CONFIG);
    one_day(&mut site);
    // 2026-11-19 23:00 to 2026-11-20 01:00 local: starts the day before.
    // 2026-11-20 23:00 local to the next day; and one wholly the day before.
    site.book(&[
        booking(
            "before",
            "nmr-600",
            UsageType::Research,
            "2026-11-19T15:00:00Z",
            "2026-11-19T17:00:00Z",
        ),
        booking(
            "after",
            "nmr-600",
            UsageType::Research,
            "2026-11-20T15:00:00Z",
            "2026-11-20T17:00:00Z",
        ),
        booking(
            "gone",
            "nmr-600",
            UsageType::Research,
            "2026-11-19T10:00:00Z",
            "2026-11-19T16:00:00Z",
        ),
        booking(
            "next",
            "nmr-600",
            UsageType::Research,
            "2026-11-20T16:00:00Z",
            "2026-11-20T18:00:00Z",
        ),
        // Four days over the whole range: the longest booking bounds how
        // far back the starts are read.
        booking(
            "long",
            "nmr-600",
            UsageType::Research,
            "2026-11-17T01:00:00Z",
            "2026-11-21T01:00:00Z",
        ),
    ]);
    site.catch_up();
    let ids =
        |rows: Vec<OutcomeRow>| -> Vec<String> { rows.into_iter().map(|o| o.booking_id).collect() };
    let range = Range {
        from: day(2026, 11, 20),
        to: day(2026, 11, 21),
    };
    let expected = ["long", "before", "b-1", "after"];
    assert_eq!(ids(outcomes_of_the_day(&site)), expected);
    assert_eq!(
        ids(site.reports.outcomes(&range, Some("nmr-600")).unwrap()),
        expected
    );
    let slots: Vec<String> = site
        .reports
        .booking_slots(&range)
        .unwrap()
        .into_iter()
        .map(|s| s.booking_id)
        .collect();
    assert_eq!(slots, expected);
}

#[test]
fn an_unconfigured_instrument_is_monitored_from_its_first_evidence_on() {
    let mut site = Site::new(CONFIG);
    site.book(&[
        booking(
            "early",
            "xrd-9",
            UsageType::Research,
            "2026-11-20T01:00:00Z",
            "2026-11-20T02:00:00Z",
        ),
        booking(
            "late",
            "xrd-9",
            UsageType::Research,
            "2026-11-20T05:00:00Z",
            "2026-11-20T06:00:00Z",
        ),
    ]);
    site.catch_up();
    let of = |site: &Site, id: &str| {
        outcomes_of_the_day(site)
            .into_iter()
            .find(|o| o.booking_id == id)
            .map(|o| o.outcome)
    };
    assert_eq!(of(&site, "late").as_deref(), Some("not_monitored"));
    // An agent starts reporting for it at 04:00 and the instrument runs
    // through the later slot: that booking is measured, the earlier stays
    // not monitored (nobody watched it then), never a no-show.
    site.alive("xrd-9", "2026-11-20T04:00:00Z", "2026-11-20T08:00:00Z");
    site.transitions(
        "xrd-9",
        &[
            ("2026-11-20T04:00:00Z", State::Standby),
            ("2026-11-20T05:00:00Z", State::Running),
            ("2026-11-20T06:00:00Z", State::Standby),
        ],
    );
    site.catch_up();
    assert_eq!(of(&site, "early").as_deref(), Some("not_monitored"));
    assert_eq!(of(&site, "late").as_deref(), Some("used"));
    // A rebuild agrees with the incremental pass.
    let before = results(site.conn());
    let mut conn = super::store_reports::open_writer(site.store.path().parent().unwrap()).unwrap();
    materialize::rebuild(&mut conn, &site.registry, 0).expect("rebuild");
    assert_eq!(results(site.conn()), before);
}
