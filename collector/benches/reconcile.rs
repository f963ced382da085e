//! The pure compute of one instrument-year: `reconcile()` (sessions,
//! attribution, booking reports) plus `totals_for_periods` over its 365
//! local days in Asia/Shanghai. Target: ≤ 3 ms on one core
//! (docs/performance.md).
//!
//! Run: `cargo bench -p labhours-collector --bench reconcile`.
//!
//! The year is synthetic and deterministic (a fixed xorshift seed): each
//! local day is standby from 00:00 to 06:00, then 19 more transitions
//! alternating running / standby with varied lengths (20 a day, about 7,300
//! a year); 3 confirmed bookings a day that overlap the usage in various
//! ways (every 10th day one of them lies in the night's standby: a
//! no-show; every 7th day one is cancelled and one more is booked); a
//! result file at the end of every third run; hourly energy buckets; three
//! corrections a month.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use jiff::Timestamp;
use jiff::tz::TimeZone;
use labhours_collector::config::{ReconciliationRules, UsageSource};
use labhours_collector::reconcile::{
    Assignment, Booking, BookingStatus, InstrumentInputs, Interval, Move, Ms, PeriodUnit,
    ResultFileRef, Timeline, TotalsInputs, UsageType, apply_moves, disputes, reconcile,
    split_periods, totals_for_periods,
};
use labhours_shared::state::State;

const MIN: Ms = 60_000;
const HOUR: Ms = 60 * MIN;
const DAY: Ms = 24 * HOUR;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// Uniform in `[lo, hi)`.
    fn range(&mut self, lo: Ms, hi: Ms) -> Ms {
        lo + (self.next() % (hi - lo) as u64) as Ms
    }
}

struct Year {
    timeline: Timeline,
    bookings: Vec<Booking>,
    files: Vec<ResultFileRef>,
    energy: Vec<(Ms, f64)>,
    corrections: Vec<Assignment>,
    days: Vec<Interval>,
}

fn year() -> Year {
    let tz = TimeZone::get("Asia/Shanghai").expect("zone");
    let from: Timestamp = "2025-12-31T16:00:00Z".parse().expect("ts");
    let to: Timestamp = "2026-12-31T16:00:00Z".parse().expect("ts");
    let days: Vec<Interval> = split_periods(from, to, &tz, PeriodUnit::Day)
        .expect("days")
        .iter()
        .map(|p| p.interval())
        .collect();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut transitions = Vec::new();
    let mut bookings = Vec::new();
    let mut files = Vec::new();
    let booking = |id: String, start: Ms, end: Ms, ty: UsageType, status| Booking {
        booking_id: id,
        instrument_id: "nmr-1".into(),
        user: "alice".into(),
        group: "lab-a".into(),
        usage_type: ty,
        start,
        end,
        status,
    };
    for (d, day) in days.iter().enumerate() {
        // 19 cut points between 06:00 and 24:00, at least a minute apart.
        transitions.push((day.start, State::Standby));
        let mut cuts: Vec<Ms> = (0..19)
            .map(|_| day.start + 6 * HOUR + rng.range(0, 18 * 60) * MIN)
            .collect();
        cuts.sort_unstable();
        cuts.dedup();
        for (i, &at) in cuts.iter().enumerate() {
            let state = if i % 2 == 0 {
                State::Running
            } else {
                State::Standby
            };
            transitions.push((at, state));
            if state == State::Standby && i % 6 == 1 {
                files.push(ResultFileRef {
                    id: format!("f{}", files.len()),
                    path: format!("runs/{d}/{i}.fid"),
                    mtime: at,
                });
            }
        }
        let ty = UsageType::ALL[d % UsageType::ALL.len()];
        let slots = [
            (8 * HOUR, 3 * HOUR),
            (12 * HOUR, 4 * HOUR),
            (17 * HOUR, 3 * HOUR),
        ];
        for (k, &(at, len)) in slots.iter().enumerate() {
            let start = day.start + at + rng.range(-60, 90) * MIN;
            let end = start + len + rng.range(-60, 60) * MIN;
            let (start, end) = if d % 10 == 0 && k == 0 {
                (day.start + 2 * HOUR, day.start + 3 * HOUR)
            } else {
                (start, end)
            };
            let status = if d % 7 == 0 && k == 2 {
                BookingStatus::Cancelled
            } else {
                BookingStatus::Confirmed
            };
            bookings.push(booking(format!("b{d}-{k}"), start, end, ty, status));
        }
        if d % 7 == 0 {
            let start = day.start + 19 * HOUR;
            bookings.push(booking(
                format!("b{d}-3"),
                start,
                start + 2 * HOUR,
                UsageType::External,
                BookingStatus::Confirmed,
            ));
        }
    }
    let end = days.last().expect("day").end;
    let energy = (0..(end - days[0].start) / HOUR)
        .map(|h| (days[0].start + h * HOUR, 150.0 + (h % 24) as f64 * 20.0))
        .collect();
    let corrections = (0..36)
        .map(|i| Assignment {
            interval: Interval::new(days[i * 10].start, days[i * 10].start + DAY / 2),
            usage_type: (i % 3 != 0).then_some(UsageType::Training),
            assigns: i % 5 != 0,
        })
        .collect();
    Year {
        timeline: Timeline {
            transitions,
            data_end: end,
        },
        bookings,
        files,
        energy,
        corrections,
        days,
    }
}

fn instrument_year(c: &mut Criterion) {
    let y = year();
    let rules = ReconciliationRules::default();
    let inputs = InstrumentInputs {
        instrument_id: "nmr-1",
        usage_source: UsageSource::State,
        file_run_s: None,
        timeline: &y.timeline,
        result_files: &y.files,
        rules: &rules,
    };
    let run = || {
        let rec = reconcile(&inputs, &y.bookings);
        let totals = totals_for_periods(
            &TotalsInputs {
                instrument_id: "nmr-1",
                reconciliation: &rec,
                bookings: &y.bookings,
                timeline: &y.timeline,
                result_files: &y.files,
                corrections: &y.corrections,
                moved: &[],
                energy: &y.energy,
            },
            &y.days,
        );
        (rec, totals)
    };
    let (rec, totals) = run();
    let no_shows: u64 = totals.iter().map(|t| t.no_show_count).sum();
    eprintln!(
        "instrument-year: {} transitions, {} bookings, {} files, {} sessions, {} segments, {} days, {} no-shows",
        y.timeline.transitions.len(),
        y.bookings.len(),
        y.files.len(),
        rec.sessions.len(),
        rec.segments.len(),
        totals.len(),
        no_shows,
    );
    // The machine is shared: besides criterion's wall-clock figures, the
    // time this thread was on a CPU (Linux schedstat), which others' load
    // does not inflate.
    if let Some(cpu) = cpu_ns() {
        let n: u32 = 300;
        let (c0, w0) = (cpu, std::time::Instant::now());
        for _ in 0..n {
            black_box(run());
        }
        let wall = w0.elapsed() / n;
        if let Some(c1) = cpu_ns() {
            let on_cpu = Duration::from_nanos((c1 - c0) / u64::from(n));
            eprintln!(
                "reconcile_and_365_days: {on_cpu:?} on CPU, {wall:?} wall, per iteration ({n} iterations)"
            );
        }
    }
    let mut g = c.benchmark_group("instrument_year");
    g.bench_function("reconcile_and_365_days", |b| b.iter(|| black_box(run())));
    g.bench_function("reconcile", |b| {
        b.iter(|| black_box(reconcile(&inputs, &y.bookings)))
    });
    g.bench_function("totals_365_days", |b| {
        b.iter(|| {
            black_box(totals_for_periods(
                &TotalsInputs {
                    instrument_id: "nmr-1",
                    reconciliation: &rec,
                    bookings: &y.bookings,
                    timeline: &y.timeline,
                    result_files: &y.files,
                    corrections: &y.corrections,
                    moved: &[],
                    energy: &y.energy,
                },
                &y.days,
            ))
        })
    });
    // Disputed time: the per-booking lists, and 38 move corrections (half
    // of every 100th owned segment, to the booking after its owner).
    let ids: Vec<&str> = y.bookings.iter().map(|b| b.booking_id.as_str()).collect();
    let moves: Vec<Move> = rec
        .segments
        .iter()
        .step_by(100)
        .filter_map(|g| {
            let from = g.booking_id.clone()?;
            let i = ids.iter().position(|&id| id == from)?;
            let to = ids.get(i + 1)?.to_string();
            let half = g.interval.start + g.interval.len() / 2;
            Some(Move {
                interval: Interval::new(g.interval.start, half),
                from,
                to,
            })
        })
        .collect();
    eprintln!("disputes: {} moves", moves.len());
    g.bench_function("disputes_and_moves", |b| {
        b.iter(|| {
            black_box((
                disputes(&y.bookings, &rec.segments),
                apply_moves(&rec.segments, &moves),
            ))
        })
    });
    g.finish();
}

/// This thread's time on a CPU so far, in ns (`/proc/thread-self/schedstat`).
fn cpu_ns() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    text.split_whitespace().next()?.parse().ok()
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_secs(1));
    targets = instrument_year
}
criterion_main!(benches);
