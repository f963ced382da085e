//! Sums over many periods (`totals_for_periods`), corrections (§7) and
//! `PeriodTotals::add`. Times in seconds from an arbitrary origin unless
//! they are dates.

use super::*;

fn inputs<'a>(
    rec: &'a Reconciliation,
    bookings: &'a [Booking],
    tl: &'a Timeline,
    files: &'a [ResultFileRef],
    corrections: &'a [Assignment],
    energy: &'a [(Ms, f64)],
) -> TotalsInputs<'a> {
    TotalsInputs {
        instrument_id: "nmr-1",
        reconciliation: rec,
        bookings,
        timeline: tl,
        result_files: files,
        corrections,
        moved: &[],
        energy,
    }
}

fn iv(from: i64, to: i64) -> Interval {
    Interval::new(s(from), s(to))
}

fn assign(from: i64, to: i64, usage_type: Option<UsageType>) -> Assignment {
    Assignment {
        interval: iv(from, to),
        usage_type,
        assigns: true,
    }
}

fn note(from: i64, to: i64) -> Assignment {
    Assignment {
        interval: iv(from, to),
        usage_type: None,
        assigns: false,
    }
}

/// One period `[0, 10 h)`, with corrections.
fn corrected(
    rec: &Reconciliation,
    bookings: &[Booking],
    corrections: &[Assignment],
) -> PeriodTotals {
    let tl = Timeline::default();
    totals_for_periods(
        &inputs(rec, bookings, &tl, &[], corrections, &[]),
        &[iv(0, 10 * HOUR)],
    )
    .remove(0)
}

fn shanghai() -> TimeZone {
    TimeZone::get("Asia/Shanghai").expect("zone")
}

// ---- many periods --------------------------------------------------------

#[test]
fn a_session_crossing_midnight_is_split_between_the_two_local_days() {
    // Shanghai is UTC+8: local midnight of 2026-05-02 is 2026-05-01T16:00Z.
    // A session 22:00–02:00 local, booked 21:00–01:00 local (external).
    let tz = shanghai();
    let midnight = ts("2026-05-01T16:00:00Z").as_second();
    let tl = running(
        &[(midnight - 2 * HOUR, midnight + 2 * HOUR)],
        midnight + 10 * HOUR,
    );
    let mut b = booking("a", midnight - 3 * HOUR, midnight + HOUR);
    b.usage_type = UsageType::External;
    let bookings = [b];
    let rec = run_with(&tl, &[], &bookings);
    let days: Vec<Interval> = split_periods(
        ts("2026-04-30T16:00:00Z"),
        ts("2026-05-02T16:00:00Z"),
        &tz,
        PeriodUnit::Day,
    )
    .expect("split")
    .iter()
    .map(Period::interval)
    .collect();
    assert_eq!(days.len(), 2);
    let t = totals_for_periods(&inputs(&rec, &bookings, &tl, &[], &[], &[]), &days);
    // a's window runs to 01:15 and its overrun to the session's end: the
    // whole session is a's.
    assert_eq!(t[0].used_ms, s(2 * HOUR));
    assert_eq!(t[1].used_ms, s(2 * HOUR));
    assert_eq!(t[0].external_ms, s(2 * HOUR));
    assert_eq!(t[1].external_ms, s(2 * HOUR));
    assert_eq!(t[0].booked_ms, s(3 * HOUR));
    assert_eq!(t[1].booked_ms, s(HOUR));
    assert_eq!(t[0].period, days[0]);
    assert_eq!(t[1].to_row(&tz).period_start, "2026-05-02T00:00:00+08:00");
    assert_eq!(t[0].open_ms, None);
}

#[test]
fn energy_buckets_count_in_the_period_containing_their_start() {
    let tl = running(&[], 10 * HOUR);
    let rec = run_with(&tl, &[], &[]);
    // Periods [0, 2 h), [2 h, 4 h), [5 h, 6 h); buckets hourly, the one at
    // 4 h lies in the gap, none starts in [5 h, 6 h).
    let periods = [
        iv(0, 2 * HOUR),
        iv(2 * HOUR, 4 * HOUR),
        iv(5 * HOUR, 6 * HOUR),
    ];
    let energy = [
        (s(0), 250.0),
        (s(HOUR), 500.0),
        (s(2 * HOUR), 1250.0),
        (s(3 * HOUR), 750.0),
        (s(4 * HOUR), 9000.0),
    ];
    let t = totals_for_periods(&inputs(&rec, &[], &tl, &[], &[], &energy), &periods);
    assert_eq!(t[0].energy_kwh, Some(0.75));
    assert_eq!(t[1].energy_kwh, Some(2.0));
    assert_eq!(t[2].energy_kwh, None);
    // A zero bucket is a known zero, not an unknown.
    let t = totals_for_periods(
        &inputs(&rec, &[], &tl, &[], &[], &[(s(HOUR), 0.0)]),
        &periods[..1],
    );
    assert_eq!(t[0].energy_kwh, Some(0.0));
}

#[test]
fn periods_with_gaps_count_only_what_lies_inside_them() {
    // Data [0, 10 h): a session [1 h, 9 h) with a fault [9 h, 9.5 h) after
    // it; periods [0, 2 h), [5 h, 6 h), [8 h, 12 h).
    let tl = timeline(
        &[
            (0, Off),
            (HOUR, Running),
            (9 * HOUR, Fault),
            (9 * HOUR + 1800, Off),
        ],
        10 * HOUR,
    );
    // Booking a [3 h, 4 h) lies in the first gap, cancelled c in the last
    // period; files in and between periods.
    let mut c = booking("c", 8 * HOUR, 9 * HOUR);
    c.status = BookingStatus::Cancelled;
    let bookings = [booking("a", 3 * HOUR, 4 * HOUR), c];
    let files = [file("f1", HOUR), file("f2", 3 * HOUR), file("f3", 8 * HOUR)];
    let rec = run_with(&tl, &files, &bookings);
    let periods = [
        iv(0, 2 * HOUR),
        iv(5 * HOUR, 6 * HOUR),
        iv(8 * HOUR, 12 * HOUR),
    ];
    let t = totals_for_periods(&inputs(&rec, &bookings, &tl, &files, &[], &[]), &periods);
    let used: Vec<Ms> = t.iter().map(|x| x.used_ms).collect();
    assert_eq!(used, vec![s(HOUR), s(HOUR), s(HOUR)]);
    // Usage before a's window opens (2.75 h) is unbooked; a owns the rest
    // of the session, to 9 h, as overrun (cancelled c owns nothing).
    let booked_used: Vec<Ms> = t.iter().map(|x| x.booked_used_ms).collect();
    assert_eq!(booked_used, vec![0, s(HOUR), s(HOUR)]);
    let booked: Vec<Ms> = t.iter().map(|x| x.booked_ms).collect();
    assert_eq!(booked, vec![0, 0, 0]);
    let files_in: Vec<u64> = t.iter().map(|x| x.result_files).collect();
    assert_eq!(files_in, vec![1, 0, 1]);
    assert_eq!(t[2].fault_ms, s(1800));
    assert_eq!(t[2].unknown_ms, s(2 * HOUR));
    assert_eq!(t[0].unknown_ms, 0);
}

#[test]
fn no_shows_count_once_in_the_period_of_their_start() {
    let tl = running(&[], 10 * HOUR);
    let bookings = [
        booking("a", HOUR, 2 * HOUR),
        booking("b", 3 * HOUR, 6 * HOUR),
    ];
    let rec = run_with(&tl, &[], &bookings);
    assert_eq!(report(&rec, "b").outcome, Outcome::NoShow);
    let periods = [
        iv(0, 3 * HOUR),
        iv(3 * HOUR, 4 * HOUR),
        iv(4 * HOUR, 8 * HOUR),
    ];
    let t = totals_for_periods(&inputs(&rec, &bookings, &tl, &[], &[], &[]), &periods);
    let counts: Vec<u64> = t.iter().map(|x| x.no_show_count).collect();
    assert_eq!(counts, vec![1, 1, 0]);
    let booked: Vec<Ms> = t.iter().map(|x| x.booked_ms).collect();
    assert_eq!(booked, vec![s(HOUR), s(HOUR), s(2 * HOUR)]);
}

// ---- corrections -------------------------------------------------------

#[test]
fn assigning_half_of_an_unbooked_session_to_training_moves_exactly_that() {
    // Unbooked session [1 h, 3 h); a correction [2 h, 5 h) to training.
    let rec = run_with(&running(&[(HOUR, 3 * HOUR)], 10 * HOUR), &[], &[]);
    let t = corrected(
        &rec,
        &[],
        &[assign(2 * HOUR, 5 * HOUR, Some(UsageType::Training))],
    );
    assert_eq!(t.unbooked_ms, s(2 * HOUR));
    assert_eq!(t.assigned_ms, s(HOUR));
    assert_eq!(t.corrected_by_usage_type_ms["training"], s(HOUR));
    assert_eq!(t.corrected_by_usage_type_ms[UNASSIGNED], s(HOUR));
    // The uncorrected figures are untouched.
    assert_eq!(t.by_usage_type_ms["training"], 0);
    assert_eq!(t.by_usage_type_ms[UNASSIGNED], s(2 * HOUR));
    assert_eq!(t.corrected_by_usage_type_ms.len(), t.by_usage_type_ms.len());
}

#[test]
fn where_corrections_overlap_the_later_one_wins() {
    // Unbooked session [0, 4 h); training [0, 2 h) then maintenance
    // [1 h, 3 h).
    let rec = run_with(&running(&[(0, 4 * HOUR)], 10 * HOUR), &[], &[]);
    let training = assign(0, 2 * HOUR, Some(UsageType::Training));
    let maintenance = assign(HOUR, 3 * HOUR, Some(UsageType::Maintenance));
    let t = corrected(&rec, &[], &[training, maintenance]);
    assert_eq!(t.assigned_ms, s(3 * HOUR));
    assert_eq!(t.corrected_by_usage_type_ms["training"], s(HOUR));
    assert_eq!(t.corrected_by_usage_type_ms["maintenance"], s(2 * HOUR));
    assert_eq!(t.corrected_by_usage_type_ms[UNASSIGNED], s(HOUR));
    let t = corrected(&rec, &[], &[maintenance, training]);
    assert_eq!(t.corrected_by_usage_type_ms["training"], s(2 * HOUR));
    assert_eq!(t.corrected_by_usage_type_ms["maintenance"], s(HOUR));
    // A later correction without a usage type (a user only) still assigns,
    // but what it covers stays unassigned.
    let t = corrected(&rec, &[], &[training, assign(HOUR, 3 * HOUR, None)]);
    assert_eq!(t.assigned_ms, s(3 * HOUR));
    assert_eq!(t.corrected_by_usage_type_ms["training"], s(HOUR));
    assert_eq!(t.corrected_by_usage_type_ms[UNASSIGNED], s(3 * HOUR));
}

#[test]
fn a_correction_over_booked_usage_changes_nothing() {
    // Session [1 h, 3 h) inside booking a's slot [0, 4 h) (research).
    let bookings = [booking("a", 0, 4 * HOUR)];
    let rec = run_with(&running(&[(HOUR, 3 * HOUR)], 10 * HOUR), &[], &bookings);
    let plain = corrected(&rec, &bookings, &[]);
    let t = corrected(
        &rec,
        &bookings,
        &[assign(0, 10 * HOUR, Some(UsageType::External))],
    );
    assert_eq!(t.assigned_ms, 0);
    assert_eq!(t.corrected_by_usage_type_ms, plain.by_usage_type_ms);
    assert_eq!(t.corrected_by_usage_type_ms["research"], s(2 * HOUR));
    assert_eq!(t, plain);
}

#[test]
fn moved_usage_takes_its_usage_type_from_the_booking_it_moves_to() {
    // Double booking: a (research) [0, 4 h), b (teaching) [1 h, 4 h); the
    // session [0, 3 h) goes to a until b's slot begins, then to b (§4 rule 2).
    let mut b = booking("b", HOUR, 4 * HOUR);
    b.usage_type = UsageType::Teaching;
    let bookings = [booking("a", 0, 4 * HOUR), b];
    let rec = run_with(&running(&[(0, 3 * HOUR)], 10 * HOUR), &[], &bookings);
    let plain = corrected(&rec, &bookings, &[]);
    assert_eq!(plain.by_usage_type_ms["teaching"], s(2 * HOUR));
    // The manager says a kept running: [1 h, 2 h) moves from b back to a.
    let moved = apply_moves(
        &rec.segments,
        &[Move {
            interval: iv(HOUR, 2 * HOUR),
            from: "b".into(),
            to: "a".into(),
        }],
    );
    let tl = Timeline::default();
    let mut i = inputs(&rec, &bookings, &tl, &[], &[], &[]);
    i.moved = &moved;
    let t = totals_for_periods(&i, &[iv(0, 10 * HOUR)]).remove(0);
    assert_eq!(t.corrected_by_usage_type_ms["research"], s(2 * HOUR));
    assert_eq!(t.corrected_by_usage_type_ms["teaching"], s(HOUR));
    // Booked usage stays booked: nothing is assigned, nothing uncorrected moves.
    assert_eq!(t.assigned_ms, 0);
    assert_eq!(t.by_usage_type_ms, plain.by_usage_type_ms);
    assert_eq!(
        (t.used_ms, t.booked_used_ms),
        (plain.used_ms, plain.booked_used_ms)
    );
}

#[test]
fn a_note_only_correction_changes_nothing() {
    let rec = run_with(&running(&[(HOUR, 3 * HOUR)], 10 * HOUR), &[], &[]);
    let plain = corrected(&rec, &[], &[]);
    assert_eq!(corrected(&rec, &[], &[note(0, 10 * HOUR)]), plain);
    // Not even over an earlier assigning correction.
    let training = assign(HOUR, 2 * HOUR, Some(UsageType::Training));
    let t = corrected(&rec, &[], &[training, note(0, 10 * HOUR)]);
    assert_eq!(t, corrected(&rec, &[], &[training]));
    assert_eq!(t.corrected_by_usage_type_ms["training"], s(HOUR));
}

#[test]
fn corrections_are_cut_at_period_edges_like_usage() {
    // Unbooked session [1 h, 3 h), all assigned to teaching; periods
    // [0, 2 h) and [2 h, 4 h).
    let tl = running(&[(HOUR, 3 * HOUR)], 10 * HOUR);
    let rec = run_with(&tl, &[], &[]);
    let c = [assign(0, 10 * HOUR, Some(UsageType::Teaching))];
    let t = totals_for_periods(
        &inputs(&rec, &[], &tl, &[], &c, &[]),
        &[iv(0, 2 * HOUR), iv(2 * HOUR, 4 * HOUR)],
    );
    for x in &t {
        assert_eq!(x.assigned_ms, s(HOUR));
        assert_eq!(x.corrected_by_usage_type_ms["teaching"], s(HOUR));
        assert_eq!(x.corrected_by_usage_type_ms[UNASSIGNED], 0);
    }
}

// ---- PeriodTotals::add -------------------------------------------------

#[test]
fn adding_totals_sums_every_figure_and_unknown_open_hours_make_the_sum_unknown() {
    let tl = running(&[(HOUR, 3 * HOUR)], 10 * HOUR);
    let bookings = [booking("a", 0, 2 * HOUR)];
    let rec = run_with(&tl, &[file("f", 2 * HOUR)], &bookings);
    let c = [assign(0, 10 * HOUR, Some(UsageType::Training))];
    let energy = [(s(0), 1000.0)];
    let t = totals_for_periods(
        &inputs(&rec, &bookings, &tl, &[file("f", 2 * HOUR)], &c, &energy),
        &[iv(0, 2 * HOUR), iv(4 * HOUR, 12 * HOUR)],
    );
    let mut sum = t[0].clone();
    sum.add(&t[1]);
    assert_eq!(sum.period, iv(0, 12 * HOUR));
    assert_eq!(sum.used_ms, t[0].used_ms + t[1].used_ms);
    assert_eq!(sum.unknown_ms, s(2 * HOUR));
    assert_eq!(sum.booked_ms, s(2 * HOUR));
    assert_eq!(sum.result_files, 0);
    assert_eq!(sum.energy_kwh, Some(1.0));
    assert_eq!(sum.open_ms, None);
    let (mut a, mut b) = (t[0].clone(), t[1].clone());
    a.open_ms = Some(s(HOUR));
    b.open_ms = Some(s(2 * HOUR));
    b.energy_kwh = Some(0.5);
    a.add(&b);
    assert_eq!(a.open_ms, Some(s(3 * HOUR)));
    assert_eq!(a.energy_kwh, Some(1.5));
    let mut c = t[1].clone();
    c.open_ms = Some(s(HOUR));
    c.add(&t[0]);
    assert_eq!(c.open_ms, None);
    assert_eq!(c.energy_kwh, Some(1.0));
    assert_eq!(c.period, iv(0, 12 * HOUR));
}

// ---- properties --------------------------------------------------------

/// Sorted disjoint periods from (gap, length) pairs in seconds, starting
/// before the generated data so that some lie wholly outside it.
fn arb_periods() -> impl Strategy<Value = Vec<Interval>> {
    prop::collection::vec((0i64..3000, 0i64..8000), 0..8).prop_map(|v| {
        let mut t = -2000;
        v.into_iter()
            .map(|(gap, len)| {
                let p = iv(t + gap, t + gap + len);
                t = p.end / MS_PER_S;
                p
            })
            .collect()
    })
}

fn arb_corrections() -> impl Strategy<Value = Vec<Assignment>> {
    prop::collection::vec((0i64..20_000, -500i64..6000, 0usize..6, 0u8..4), 0..6).prop_map(|v| {
        v.into_iter()
            .map(|(start, len, ty, kind)| Assignment {
                interval: iv(start, start + len),
                usage_type: UsageType::ALL.get(ty).copied(),
                assigns: kind != 0,
            })
            .collect()
    })
}

proptest! {
    #[test]
    fn summing_many_periods_at_once_equals_period_totals_per_period(
        tl in arb_timeline(), bookings in arb_bookings(), periods in arb_periods(),
        mtimes in prop::collection::vec(0i64..20_000, 0..6)
    ) {
        let files: Vec<ResultFileRef> =
            mtimes.iter().enumerate().map(|(i, &m)| file(&format!("f{i}"), m)).collect();
        let rec = run_with(&tl, &files, &bookings);
        let many = totals_for_periods(&inputs(&rec, &bookings, &tl, &files, &[], &[]), &periods);
        prop_assert_eq!(many.len(), periods.len());
        for (p, t) in periods.iter().zip(&many) {
            let one = period_totals(&PeriodInputs {
                instrument_id: "nmr-1",
                period: *p,
                reconciliation: &rec,
                bookings: &bookings,
                timeline: &tl,
                result_files: &files,
                open_ms: None,
                energy_kwh: None,
            });
            prop_assert_eq!(&one, t);
        }
    }

    #[test]
    fn corrected_figures_add_up_to_used_in_any_period(
        tl in arb_timeline(), bookings in arb_bookings(), periods in arb_periods(),
        corrections in arb_corrections()
    ) {
        let rec = run_with(&tl, &[], &bookings);
        let plain = totals_for_periods(&inputs(&rec, &bookings, &tl, &[], &[], &[]), &periods);
        let t = totals_for_periods(&inputs(&rec, &bookings, &tl, &[], &corrections, &[]), &periods);
        for (c, u) in t.iter().zip(&plain) {
            prop_assert!(0 <= c.assigned_ms && c.assigned_ms <= c.unbooked_ms);
            prop_assert_eq!(
                c.booked_used_ms + c.assigned_ms + (c.unbooked_ms - c.assigned_ms),
                c.used_ms
            );
            prop_assert_eq!(c.corrected_by_usage_type_ms.values().sum::<Ms>(), c.used_ms);
            prop_assert!(c.corrected_by_usage_type_ms[UNASSIGNED] >= c.unbooked_ms - c.assigned_ms);
            // Corrections change no uncorrected figure.
            let mut without = c.clone();
            without.assigned_ms = 0;
            without.corrected_by_usage_type_ms = c.by_usage_type_ms.clone();
            prop_assert_eq!(&without, u);
        }
    }

    #[test]
    fn adding_day_totals_gives_the_totals_of_the_whole_range(
        tl in arb_timeline(), bookings in arb_bookings(), corrections in arb_corrections(),
        cuts in prop::collection::vec(1i64..5000, 1..6)
    ) {
        let rec = run_with(&tl, &[], &bookings);
        let mut edges = vec![0i64];
        for c in cuts {
            let last = *edges.last().expect("edge");
            edges.push(last + c);
        }
        let parts: Vec<Interval> = edges.windows(2).map(|w| iv(w[0], w[1])).collect();
        let whole = iv(0, *edges.last().expect("edge"));
        let i = inputs(&rec, &bookings, &tl, &[], &corrections, &[]);
        let days = totals_for_periods(&i, &parts);
        let mut sum = days[0].clone();
        for d in &days[1..] {
            sum.add(d);
        }
        let all = totals_for_periods(&i, &[whole]).remove(0);
        prop_assert_eq!(sum, all);
    }
}

#[test]
fn a_session_id_is_the_instrument_and_its_start_in_ms() {
    for start in [0, 7, -7, 1_767_196_800_000, Ms::MIN, Ms::MAX] {
        assert_eq!(
            sessions::session_id("nmr-1", start),
            format!("nmr-1@{start}")
        );
    }
}

#[test]
fn reported_ratios_have_four_decimals_and_energy_three() {
    use crate::reconcile::hours::{ratio, round_kwh};
    // A complete day whose first sample came 57 ms after midnight.
    assert_eq!(ratio((86_400_000 - 57) as f64, 86_400_000.0), 1.0);
    assert_eq!(ratio(1.0, 3.0), 0.3333);
    assert_eq!(ratio(2.0, 3.0), 0.6667);
    assert_eq!(round_kwh(160.200_000_000_02), 160.2);
    assert_eq!(round_kwh(0.000_4), 0.0);
}
