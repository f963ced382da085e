//! Daily profiles of the simulated instruments: what each one is booked for
//! and what it really does on a given local day. Pure functions of the seed,
//! the instrument's [`Profile`] and the date, so the history, the live
//! simulators and the imported bookings all agree, and a rerun regenerates
//! exactly the same days.
//!
//! Times inside a day are seconds from local midnight ([`Secs`]); turning
//! them into instants is the caller's business (it knows the time zone).

use jiff::civil::{Date, Weekday};

/// Seconds from local midnight.
pub type Secs = u32;

const MIN: Secs = 60;
const HOUR: Secs = 3600;
const DAY: Secs = 24 * HOUR;

/// `HH:MM` as [`Secs`].
pub const fn hm(h: u32, m: u32) -> Secs {
    h * HOUR + m * MIN
}

/// A half-open `[start, end)` within one day.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub start: Secs,
    pub end: Secs,
}

impl Span {
    pub const fn new(start: Secs, end: Secs) -> Self {
        Self { start, end }
    }

    pub fn contains(&self, t: Secs) -> bool {
        self.start <= t && t < self.end
    }

    pub fn len(&self) -> Secs {
        self.end.saturating_sub(self.start)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn overlaps(&self, other: &Span) -> bool {
        self.start < other.end && other.start < self.end
    }
}

/// How an instrument tells what it does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// Its power draw: standby vs running.
    Power,
    /// Its serial status line (power never changes: an NMR magnet).
    StatusLine,
    /// The result files it writes (power says nothing: a mass spectrometer's vacuum).
    Files,
}

/// Power levels of the simulated meter, W.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Watts {
    pub off: f64,
    pub standby: f64,
    pub running: f64,
}

/// The shape of an instrument's days.
#[derive(Debug, Clone)]
pub struct Profile {
    pub signal: Signal,
    pub watts: Watts,
    /// Bookable slots on weekdays (Monday to Friday).
    pub weekday_slots: &'static [Span],
    /// Evening slots, booked on some weekdays.
    pub evening_slots: &'static [Span],
    /// Saturday slots.
    pub saturday_slots: &'static [Span],
    /// Chance that a weekday slot is booked.
    pub booked_share: f64,
    /// Chance that an evening slot is booked.
    pub evening_share: f64,
    /// Chance of an unbooked walk-up on a weekday.
    pub walk_up_share: f64,
    /// Switched off outside use (a light microscope, an FT-IR); otherwise
    /// always powered (standby).
    pub off_at_night: bool,
    /// Its status line can report faults.
    pub can_fault: bool,
    /// Its meter can drop out (a `no_data` booking).
    pub can_drop_out: bool,
}

/// What the user behind a booking really did (or the booking system said).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Intent {
    /// Came roughly on time, left roughly on time.
    Normal,
    /// Never came.
    NoShow,
    /// Came 25–45 minutes late.
    LateStart,
    /// Left 30–50 minutes early.
    EarlyFinish,
    /// Ran on 45–60 minutes past the end, into the next booking's slot if there is one.
    Overrun,
    /// Cancelled in the booking system.
    Cancelled,
    /// The instrument reported a fault at the start; the user gave up.
    Fault,
    /// The meter dropped out for most of the slot.
    NoData,
}

impl Intent {
    pub fn as_str(self) -> &'static str {
        match self {
            Intent::Normal => "normal",
            Intent::NoShow => "no_show",
            Intent::LateStart => "late_start",
            Intent::EarlyFinish => "early_finish",
            Intent::Overrun => "overrun",
            Intent::Cancelled => "cancelled",
            Intent::Fault => "fault",
            Intent::NoData => "no_data",
        }
    }
}

/// The booking's kind of use, as the booking system records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Usage {
    Research,
    External,
    Teaching,
    Training,
}

impl Usage {
    pub fn as_str(self) -> &'static str {
        match self {
            Usage::Research => "research",
            Usage::External => "external",
            Usage::Teaching => "teaching",
            Usage::Training => "training",
        }
    }
}

/// A booking on one day, with what really happened.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedBooking {
    /// The booking's number within its day (0, 1, …).
    pub index: usize,
    pub slot: Span,
    pub intent: Intent,
    pub usage: Usage,
    /// Picks the user and group from the scenario's lists.
    pub person: u32,
}

/// What the instrument is doing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Doing {
    /// A run (a measurement, an acquisition, an imaging session), with its sample id.
    Run { sample: String },
    /// A fault reported on the status line.
    Fault { code: &'static str },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Activity {
    pub span: Span,
    pub doing: Doing,
    /// The booking it belongs to (`None`: an unbooked walk-up).
    pub booking: Option<usize>,
}

/// Everything one instrument does on one local day.
#[derive(Debug, Clone, PartialEq)]
pub struct DayPlan {
    pub date: Date,
    pub bookings: Vec<PlannedBooking>,
    /// In time order, never overlapping.
    pub activities: Vec<Activity>,
    /// Meter drop-outs: failed reads.
    pub outages: Vec<Span>,
    /// When switched on, for instruments that are off at night.
    pub powered: Option<Span>,
}

/// What the simulated instrument shows at one instant.
#[derive(Debug, Clone, PartialEq)]
pub struct Reading {
    /// `None`: the meter does not answer.
    pub watts: Option<f64>,
    /// The status line it would print now, if it has one.
    pub status: Option<String>,
}

/// A small deterministic generator (SplitMix64): the same seed, the same days.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// A generator for one instrument's day.
    pub fn for_day(seed: u64, instrument: u32, date: Date) -> Self {
        let day = i64::from(date.year()) * 400 + i64::from(date.day_of_year());
        Self(mix(seed ^ mix(u64::from(instrument) << 32 ^ day as u64)))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix(self.0)
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in `[lo, hi]`.
    pub fn between(&mut self, lo: u32, hi: u32) -> u32 {
        if hi <= lo {
            return lo;
        }
        lo + (self.next_u64() % u64::from(hi - lo + 1)) as u32
    }

    pub fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }
}

fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Forced intents for one day, slot by slot (the showcase day), and whether a
/// walk-up must happen.
#[derive(Debug, Clone, Default)]
pub struct Forced {
    /// `(slot index among the weekday slots, intent)`; those slots are booked.
    pub slots: Vec<(usize, Intent)>,
    pub walk_up: bool,
}

/// The plan of `date` for an instrument (`instrument` numbers it for the
/// generator). `forced` makes a showcase day: its slots are all booked and
/// the listed ones get the listed intents.
pub fn plan_day(
    profile: &Profile,
    seed: u64,
    instrument: u32,
    date: Date,
    forced: Option<&Forced>,
) -> DayPlan {
    let mut rng = Rng::for_day(seed, instrument, date);
    let weekday = date.weekday();
    let (slots, share): (Vec<Span>, f64) = match weekday {
        Weekday::Saturday => (profile.saturday_slots.to_vec(), 0.5),
        Weekday::Sunday => (Vec::new(), 0.0),
        _ => {
            let mut s = profile.weekday_slots.to_vec();
            if forced.is_none() && rng.chance(profile.evening_share) {
                s.extend_from_slice(profile.evening_slots);
            }
            (s, profile.booked_share)
        }
    };
    let mut bookings = Vec::new();
    for (i, slot) in slots.iter().enumerate() {
        let forced_intent = forced.and_then(|f| f.slots.iter().find(|(s, _)| *s == i));
        let booked = forced.is_some() || rng.chance(share);
        // Draw everything, booked or not, so one slot's fate does not shift the others'.
        let intent = random_intent(&mut rng, profile);
        let usage = random_usage(&mut rng);
        let person = rng.between(0, 1000);
        if !booked {
            continue;
        }
        bookings.push(PlannedBooking {
            index: bookings.len(),
            slot: *slot,
            intent: forced_intent.map_or(intent, |(_, i)| *i),
            usage,
            person,
        });
    }

    let mut activities = Vec::new();
    let mut outages = Vec::new();
    for (n, b) in bookings.iter().enumerate() {
        let next_start = bookings.get(n + 1).map(|x| x.slot.start);
        let sample = format!("S{:04}", rng.between(1, 9999));
        let run = |span: Span| Activity {
            span,
            doing: Doing::Run {
                sample: sample.clone(),
            },
            booking: Some(b.index),
        };
        let start = b.slot.start + rng.between(0, 8) * MIN;
        let end = (b.slot.end + rng.between(0, 4) * MIN).saturating_sub(5 * MIN);
        match b.intent {
            Intent::Normal => activities.push(run(Span::new(start, end))),
            Intent::NoShow | Intent::Cancelled => {}
            Intent::LateStart => {
                let late = b.slot.start + rng.between(25, 45) * MIN;
                activities.push(run(Span::new(late, end.max(late + 20 * MIN))));
            }
            Intent::EarlyFinish => {
                let early = b.slot.end.saturating_sub(rng.between(30, 50) * MIN);
                activities.push(run(Span::new(start, early.max(start + 10 * MIN))));
            }
            Intent::Overrun => {
                // Past the end and its late grace (15 min), into the next slot
                // when one follows closely.
                let mut over = b.slot.end + rng.between(45, 60) * MIN;
                if let Some(next) = next_start {
                    over = over.min(next + 10 * MIN).max(b.slot.end + 25 * MIN);
                }
                activities.push(run(Span::new(start, over.min(DAY - MIN))));
            }
            Intent::Fault => {
                let from = b.slot.start.saturating_sub(10 * MIN);
                let to = b.slot.start + rng.between(40, 70) * MIN;
                activities.push(Activity {
                    span: Span::new(from, to.min(b.slot.end)),
                    doing: Doing::Fault {
                        code: "E-17 probe tuning failed",
                    },
                    booking: Some(b.index),
                });
            }
            Intent::NoData => {
                activities.push(run(Span::new(start, end)));
                // Most of the slot unverifiable: the outcome is no_data.
                outages.push(Span::new(
                    b.slot.start.saturating_sub(10 * MIN),
                    b.slot.end.saturating_sub(b.slot.len() / 5),
                ));
            }
        }
    }
    activities.sort_by_key(|a| a.span.start);
    let mut activities = merge_overlaps(activities);

    let must_walk_up = forced.is_some_and(|f| f.walk_up);
    let weekday_like = !matches!(weekday, Weekday::Saturday | Weekday::Sunday);
    if must_walk_up || (weekday_like && rng.chance(profile.walk_up_share)) {
        let length = rng.between(25, 50) * MIN;
        if let Some(span) = free_span(&bookings, &activities, length, &mut rng) {
            activities.push(Activity {
                span,
                doing: Doing::Run {
                    sample: format!("S{:04}", rng.between(1, 9999)),
                },
                booking: None,
            });
            activities.sort_by_key(|a| a.span.start);
        }
    }

    let powered = profile.off_at_night.then(|| {
        let first = activities.first().map(|a| a.span.start);
        let last = activities.last().map(|a| a.span.end);
        match (first, last) {
            (Some(f), Some(l)) => Span::new(
                f.min(hm(8, 30)).saturating_sub(20 * MIN),
                (l + 15 * MIN).max(hm(17, 45)).min(DAY),
            ),
            _ if weekday_like => Span::new(hm(8, 20), hm(17, 45)),
            _ => Span::new(0, 0),
        }
    });
    DayPlan {
        date,
        bookings,
        activities,
        outages,
        powered,
    }
}

fn random_intent(rng: &mut Rng, profile: &Profile) -> Intent {
    let r = rng.unit();
    let table: [(f64, Intent); 7] = [
        (0.06, Intent::NoShow),
        (0.08, Intent::LateStart),
        (0.05, Intent::EarlyFinish),
        (0.05, Intent::Overrun),
        (0.03, Intent::Cancelled),
        (if profile.can_fault { 0.04 } else { 0.0 }, Intent::Fault),
        (
            if profile.can_drop_out { 0.02 } else { 0.0 },
            Intent::NoData,
        ),
    ];
    let mut acc = 0.0;
    for (p, intent) in table {
        acc += p;
        if r < acc {
            return intent;
        }
    }
    Intent::Normal
}

fn random_usage(rng: &mut Rng) -> Usage {
    match rng.between(0, 99) {
        0..=64 => Usage::Research,
        65..=84 => Usage::External,
        85..=94 => Usage::Teaching,
        _ => Usage::Training,
    }
}

/// Activities that overlap (an overrun into the next booking's run) become
/// one: the earlier one keeps the instrument busy until the later ends.
fn merge_overlaps(sorted: Vec<Activity>) -> Vec<Activity> {
    let mut out: Vec<Activity> = Vec::with_capacity(sorted.len());
    for mut a in sorted {
        if let Some(last) = out.last_mut()
            && a.span.start < last.span.end
        {
            if a.doing == last.doing || matches!(a.doing, Doing::Run { .. }) {
                // The later run starts where the earlier ends.
                a.span.start = last.span.end;
            } else {
                last.span.end = a.span.start;
            }
        }
        if !a.span.is_empty() {
            out.push(a);
        }
    }
    out
}

/// A span of `length` between 08:00 and 21:00 that no booking's window
/// (slot ± 20 min) and no activity touches.
fn free_span(
    bookings: &[PlannedBooking],
    activities: &[Activity],
    length: Secs,
    rng: &mut Rng,
) -> Option<Span> {
    let margin = 20 * MIN;
    let mut busy: Vec<Span> = bookings
        .iter()
        .map(|b| Span::new(b.slot.start.saturating_sub(margin), b.slot.end + margin))
        .chain(
            activities
                .iter()
                .map(|a| Span::new(a.span.start.saturating_sub(margin), a.span.end + margin)),
        )
        .collect();
    busy.sort_by_key(|s| s.start);
    let (open, close) = (hm(8, 0), hm(21, 0));
    let mut gaps = Vec::new();
    let mut cursor = open;
    for b in &busy {
        if b.start > cursor && b.start.min(close) >= cursor + length {
            gaps.push(Span::new(cursor, b.start.min(close)));
        }
        cursor = cursor.max(b.end);
    }
    if close >= cursor + length {
        gaps.push(Span::new(cursor, close));
    }
    if gaps.is_empty() {
        return None;
    }
    let gap = gaps[rng.between(0, gaps.len() as u32 - 1) as usize];
    let slack = gap.len() - length;
    let start = gap.start + rng.between(0, slack / MIN) * MIN;
    let span = Span::new(start, start + length);
    debug_assert!(!busy.iter().any(|b| b.overlaps(&span)));
    Some(span)
}

/// Status lines the simulated NMR prints, matched by its agent's rules.
pub mod status_text {
    pub fn running(sample: &str) -> String {
        format!("ACQUISITION RUNNING sample={sample}")
    }
    pub const IDLE: &str = "IDLE";
    pub fn fault(code: &str) -> String {
        format!("FAULT {code}")
    }
}

impl DayPlan {
    /// What the instrument is doing at `t`.
    pub fn doing_at(&self, t: Secs) -> Option<&Activity> {
        let i = self.activities.partition_point(|a| a.span.end <= t);
        self.activities.get(i).filter(|a| a.span.contains(t))
    }

    /// The simulated meter and status line at `t`; `noise` is any number
    /// (a hash of the instant) that varies the power by up to ±3 %.
    pub fn reading_at(&self, profile: &Profile, t: Secs, noise: u64) -> Reading {
        let doing = self.doing_at(t).map(|a| &a.doing);
        let status = (profile.signal == Signal::StatusLine).then(|| match doing {
            Some(Doing::Run { sample }) => status_text::running(sample),
            Some(Doing::Fault { code }) => status_text::fault(code),
            None => status_text::IDLE.to_owned(),
        });
        if self.outages.iter().any(|o| o.contains(t)) {
            return Reading {
                watts: None,
                status,
            };
        }
        let w = &profile.watts;
        let base = match doing {
            Some(Doing::Run { .. }) if profile.signal == Signal::Power => w.running,
            _ if self.powered.is_some_and(|p| !p.contains(t)) => w.off,
            _ => w.standby,
        };
        let jitter = 1.0 + ((noise % 601) as f64 - 300.0) / 10_000.0;
        Reading {
            watts: Some((base * jitter * 10.0).round() / 10.0),
            status,
        }
    }

    /// Result files a [`Signal::Files`] instrument completes: one every
    /// `run_s` of a run, and one at its end for a remainder of at least a
    /// third of `run_s` (or a run shorter than `run_s`), as
    /// `(completed at, sample id, number within the run)`.
    pub fn result_files(&self, run_s: Secs) -> Vec<(Secs, String, u32)> {
        let mut files = Vec::new();
        for a in &self.activities {
            let Doing::Run { sample } = &a.doing else {
                continue;
            };
            let n = a.span.len() / run_s;
            for k in 1..=n {
                files.push((a.span.start + k * run_s, sample.clone(), k));
            }
            // What is left of the run ends with a shorter file, unless it is only a few minutes.
            if n == 0 || a.span.len() % run_s >= run_s / 3 {
                files.push((a.span.end, sample.clone(), n + 1));
            }
        }
        files
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    static SLOTS: [Span; 4] = [
        Span::new(hm(8, 30), hm(10, 30)),
        Span::new(hm(11, 15), hm(12, 15)),
        Span::new(hm(14, 0), hm(16, 0)),
        Span::new(hm(16, 45), hm(18, 15)),
    ];
    static EVENING: [Span; 1] = [Span::new(hm(19, 0), hm(21, 0))];
    static SATURDAY: [Span; 1] = [Span::new(hm(9, 0), hm(12, 0))];

    fn profile(signal: Signal) -> Profile {
        Profile {
            signal,
            watts: Watts {
                off: 2.0,
                standby: 300.0,
                running: 1500.0,
            },
            weekday_slots: &SLOTS,
            evening_slots: &EVENING,
            saturday_slots: &SATURDAY,
            booked_share: 0.7,
            evening_share: 0.2,
            walk_up_share: 0.3,
            off_at_night: false,
            can_fault: true,
            can_drop_out: true,
        }
    }

    fn date(s: &str) -> Date {
        s.parse().expect("a date")
    }

    #[test]
    fn the_same_seed_gives_the_same_day_and_another_seed_another() {
        let p = profile(Signal::Power);
        let a = plan_day(&p, 7, 1, date("2026-11-23"), None);
        assert_eq!(a, plan_day(&p, 7, 1, date("2026-11-23"), None));
        let differs = (0..20).any(|s| {
            plan_day(&p, s, 1, date("2026-11-23"), None) != a
                || plan_day(&p, 7, 2, date("2026-11-23"), None) != a
        });
        assert!(differs);
    }

    #[test]
    fn activities_are_in_order_and_never_overlap() {
        let p = profile(Signal::StatusLine);
        for seed in 0..200 {
            let plan = plan_day(&p, seed, 3, date("2026-11-24"), None);
            for w in plan.activities.windows(2) {
                assert!(w[0].span.end <= w[1].span.start, "seed {seed}: {plan:#?}");
            }
            assert!(plan.activities.iter().all(|a| !a.span.is_empty()));
            assert!(plan.activities.iter().all(|a| a.span.end <= DAY));
        }
    }

    #[test]
    fn sundays_have_no_bookings_and_weekdays_mostly_do() {
        let p = profile(Signal::Power);
        let sunday = date("2026-11-22");
        assert_eq!(sunday.weekday(), Weekday::Sunday);
        let weekday_bookings: usize = (0..50)
            .map(|s| plan_day(&p, s, 1, date("2026-11-23"), None).bookings.len())
            .sum();
        assert!(weekday_bookings > 50 * 2, "{weekday_bookings}");
        for seed in 0..50 {
            assert!(plan_day(&p, seed, 1, sunday, None).bookings.is_empty());
        }
    }

    #[test]
    fn a_showcase_day_books_every_slot_with_the_forced_intents_and_a_walk_up() {
        let p = profile(Signal::StatusLine);
        let forced = Forced {
            slots: vec![
                (0, Intent::Overrun),
                (2, Intent::LateStart),
                (3, Intent::Fault),
            ],
            walk_up: true,
        };
        let plan = plan_day(&p, 1, 1, date("2026-11-24"), Some(&forced));
        assert_eq!(plan.bookings.len(), SLOTS.len());
        let intents: Vec<Intent> = plan.bookings.iter().map(|b| b.intent).collect();
        assert_eq!(intents[0], Intent::Overrun);
        assert_eq!(intents[2], Intent::LateStart);
        assert_eq!(intents[3], Intent::Fault);
        // The overrun runs past its slot's end + 15 min of late grace and into the next slot.
        let first = &plan.activities[0];
        assert!(first.span.end > SLOTS[0].end + 15 * MIN, "{plan:#?}");
        // The late start begins more than 15 minutes after its slot.
        let late = plan
            .activities
            .iter()
            .find(|a| a.booking == Some(2))
            .expect("the late run");
        assert!(late.span.start > SLOTS[2].start + 15 * MIN);
        // The fault covers the start of slot 3 and no run belongs to it.
        assert!(
            plan.activities
                .iter()
                .filter(|a| a.booking == Some(3))
                .all(|a| matches!(a.doing, Doing::Fault { .. }))
        );
        let walk_up = plan
            .activities
            .iter()
            .find(|a| a.booking.is_none())
            .expect("a walk-up");
        for b in &plan.bookings {
            let window = Span::new(b.slot.start - 15 * MIN, b.slot.end + 15 * MIN);
            assert!(!window.overlaps(&walk_up.span), "{plan:#?}");
        }
    }

    #[test]
    fn power_follows_activity_and_a_drop_out_is_a_failed_read_not_zero() {
        let p = profile(Signal::Power);
        let forced = Forced {
            slots: vec![(0, Intent::Normal), (2, Intent::NoData)],
            walk_up: false,
        };
        let plan = plan_day(&p, 5, 1, date("2026-11-24"), Some(&forced));
        let run = &plan.activities[0];
        let mid = (run.span.start + run.span.end) / 2;
        let w = plan.reading_at(&p, mid, 12345).watts.expect("a reading");
        assert!((1455.0..=1545.0).contains(&w), "{w}");
        let idle = plan.reading_at(&p, hm(3, 0), 0).watts.expect("a reading");
        assert!((290.0..=310.0).contains(&idle), "{idle}");
        let outage = plan.outages[0];
        assert_eq!(plan.reading_at(&p, outage.start + 60, 0).watts, None);
        assert!(outage.len() * 2 > SLOTS[2].len());
        assert_eq!(plan.reading_at(&p, mid, 0).status, None);
    }

    #[test]
    fn an_instrument_off_at_night_draws_off_power_then() {
        let mut p = profile(Signal::Power);
        p.off_at_night = true;
        let plan = plan_day(&p, 5, 1, date("2026-11-24"), None);
        assert_eq!(plan.reading_at(&p, hm(2, 0), 300).watts, Some(2.0));
        let on = plan.powered.expect("powered on weekdays");
        assert!(on.contains(hm(9, 0)));
    }

    #[test]
    fn the_status_line_says_running_idle_or_fault() {
        let p = profile(Signal::StatusLine);
        let forced = Forced {
            slots: vec![(0, Intent::Normal), (1, Intent::Fault)],
            walk_up: false,
        };
        let plan = plan_day(&p, 9, 4, date("2026-11-25"), Some(&forced));
        let run = &plan.activities[0];
        let Doing::Run { sample } = &run.doing else {
            panic!("a run first: {plan:#?}")
        };
        let at_run = plan.reading_at(&p, run.span.start, 0);
        assert_eq!(
            at_run.status,
            Some(format!("ACQUISITION RUNNING sample={sample}"))
        );
        // Power stays at standby while the NMR runs: only the status line tells.
        assert!(at_run.watts.is_some_and(|w| w < 400.0));
        let fault = plan
            .activities
            .iter()
            .find(|a| matches!(a.doing, Doing::Fault { .. }))
            .expect("a fault");
        assert_eq!(
            plan.reading_at(&p, fault.span.start, 0).status.as_deref(),
            Some("FAULT E-17 probe tuning failed")
        );
        assert_eq!(
            plan.reading_at(&p, hm(3, 0), 0).status.as_deref(),
            Some("IDLE")
        );
    }

    #[test]
    fn result_files_complete_every_run_length_and_at_the_end_of_short_runs() {
        let plan = DayPlan {
            date: date("2026-11-24"),
            bookings: Vec::new(),
            activities: vec![
                Activity {
                    span: Span::new(hm(9, 0), hm(10, 40)),
                    doing: Doing::Run {
                        sample: "S0001".into(),
                    },
                    booking: None,
                },
                Activity {
                    span: Span::new(hm(12, 0), hm(12, 20)),
                    doing: Doing::Run {
                        sample: "S0002".into(),
                    },
                    booking: None,
                },
            ],
            outages: Vec::new(),
            powered: None,
        };
        let files = plan.result_files(1800);
        let at: Vec<Secs> = files.iter().map(|f| f.0).collect();
        // 100 min: three full files and the last 10 min (a third of a run) in a fourth.
        assert_eq!(
            at,
            [hm(9, 30), hm(10, 0), hm(10, 30), hm(10, 40), hm(12, 20)]
        );
        assert_eq!(files[4].1, "S0002");
    }

    #[test]
    fn the_generator_is_uniform_enough_and_stays_in_range() {
        let mut rng = Rng::new(42);
        let mut buckets = [0u32; 10];
        for _ in 0..10_000 {
            let u = rng.unit();
            assert!((0.0..1.0).contains(&u));
            buckets[(u * 10.0) as usize] += 1;
        }
        assert!(
            buckets.iter().all(|&b| (850..1150).contains(&b)),
            "{buckets:?}"
        );
        for _ in 0..1000 {
            assert!((3..=7).contains(&rng.between(3, 7)));
        }
    }
}
