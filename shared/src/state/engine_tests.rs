//! The rules of reconciliation.md §1 and §8, one test each, on a simulated
//! instrument: on above 10 W, running at 100 W (exit below 90 W), dwell 30 s,
//! status stale after 300 s, polled every second, gaps over 3 s unknown.

use jiff::Timestamp;
use proptest::prelude::*;

use super::{EngineSettings, Output, Reading, State, StateEngine, StateRules};
use crate::wire::TransitionSource;
use State::*;

const T0: i64 = 1_795_000_020_000; // a whole minute, in ms since the epoch

fn settings() -> EngineSettings {
    let rules = StateRules::with_thresholds(10.0, 100.0);
    EngineSettings::new(&rules, 1000)
}

fn at(s: f64) -> Timestamp {
    Timestamp::from_millisecond(T0 + (s * 1000.0) as i64).expect("in range")
}

fn secs(t: Timestamp) -> f64 {
    (t.as_millisecond() - T0) as f64 / 1000.0
}

/// Drives an engine with readings given in seconds after `T0`.
struct Sim {
    engine: StateEngine,
    out: Vec<Output>,
}

impl Sim {
    fn new() -> Self {
        Self::with(settings())
    }
    fn with(settings: EngineSettings) -> Self {
        Self {
            engine: StateEngine::new(settings, at(0.0)),
            out: Vec::new(),
        }
    }
    /// One power sample per second from `from` (inclusive) to `to` (exclusive).
    fn watts(&mut self, from: u32, to: u32, w: f64) -> &mut Self {
        for s in from..to {
            self.engine
                .push(Reading::power(at(s.into()), Some(w)), &mut self.out);
        }
        self
    }
    fn failed(&mut self, from: u32, to: u32) -> &mut Self {
        for s in from..to {
            self.engine
                .push(Reading::power(at(s.into()), None), &mut self.out);
        }
        self
    }
    fn status(&mut self, s: f64, state: State) -> &mut Self {
        self.engine
            .push(Reading::status(at(s), state), &mut self.out);
        self
    }
    fn advance(&mut self, s: f64) -> &mut Self {
        self.engine.advance(at(s), &mut self.out);
        self
    }
    /// Transitions so far as (seconds, from, to).
    fn transitions(&self) -> Vec<(f64, State, State)> {
        self.out
            .iter()
            .filter_map(|o| match o {
                Output::Transition(t) => Some((secs(t.at), t.from, t.to)),
                _ => None,
            })
            .collect()
    }
    fn last_transition(&self) -> &super::Transition {
        self.out
            .iter()
            .rev()
            .find_map(|o| match o {
                Output::Transition(t) => Some(t),
                _ => None,
            })
            .expect("a transition")
    }
    fn summaries(&self) -> Vec<(f64, crate::wire::Summary)> {
        self.out
            .iter()
            .filter_map(|o| match o {
                Output::Summary { start, summary } => Some((secs(*start), summary.clone())),
                _ => None,
            })
            .collect()
    }
}

// §1 states and thresholds

#[test]
fn the_engine_starts_unknown_and_says_nothing_before_the_dwell() {
    let mut sim = Sim::new();
    sim.watts(0, 29, 500.0);
    assert_eq!(sim.engine.state(), Unknown);
    assert!(sim.transitions().is_empty());
}

#[test]
fn power_below_on_above_w_is_off() {
    let mut sim = Sim::new();
    sim.watts(0, 31, 9.99);
    assert_eq!(sim.transitions(), [(0.0, Unknown, Off)]);
}

#[test]
fn power_at_on_above_w_is_standby() {
    let mut sim = Sim::new();
    sim.watts(0, 31, 10.0);
    assert_eq!(sim.transitions(), [(0.0, Unknown, Standby)]);
}

#[test]
fn power_at_running_above_w_is_running() {
    let mut sim = Sim::new();
    sim.watts(0, 31, 100.0);
    assert_eq!(sim.transitions(), [(0.0, Unknown, Running)]);
    let t = sim.last_transition();
    assert_eq!(t.source, TransitionSource::Power);
    assert_eq!(t.reason, "power 100.0 W ≥ running_above_w 100 W");
}

// Hysteresis

#[test]
fn while_running_power_at_the_exit_threshold_stays_running() {
    let mut sim = Sim::new();
    sim.watts(0, 40, 150.0).watts(40, 200, 90.0);
    assert_eq!(sim.transitions(), [(0.0, Unknown, Running)]);
}

#[test]
fn while_running_power_just_below_the_exit_threshold_leaves_running() {
    let mut sim = Sim::new();
    sim.watts(0, 40, 150.0).watts(40, 80, 89.9);
    assert_eq!(
        sim.transitions(),
        [(0.0, Unknown, Running), (40.0, Running, Standby)]
    );
    assert_eq!(
        sim.last_transition().reason,
        "power 89.9 W < running_exit_below_w 90 W"
    );
}

#[test]
fn from_standby_power_between_the_thresholds_stays_standby() {
    let mut sim = Sim::new();
    sim.watts(0, 40, 50.0).watts(40, 200, 95.0);
    assert_eq!(sim.transitions(), [(0.0, Unknown, Standby)]);
}

#[test]
fn hysteresis_is_judged_against_the_confirmed_state_not_a_pending_one() {
    // Running is pending (not yet confirmed) when power dips to 95 W: from a
    // confirmed standby, 95 W is standby, so the pending running is abandoned.
    let mut sim = Sim::new();
    sim.watts(0, 40, 50.0)
        .watts(40, 50, 150.0)
        .watts(50, 100, 95.0);
    assert_eq!(sim.transitions(), [(0.0, Unknown, Standby)]);
}

#[test]
fn an_explicit_exit_threshold_replaces_the_ninety_percent_default() {
    let mut rules = StateRules::with_thresholds(10.0, 100.0);
    rules.running_exit_below_w = Some(60.0);
    let mut sim = Sim::with(EngineSettings::new(&rules, 1000));
    sim.watts(0, 40, 150.0)
        .watts(40, 100, 61.0)
        .watts(100, 140, 59.0);
    assert_eq!(
        sim.transitions(),
        [(0.0, Unknown, Running), (100.0, Running, Standby)]
    );
}

// Dwell

#[test]
fn a_blip_shorter_than_the_dwell_changes_nothing() {
    let mut sim = Sim::new();
    sim.watts(0, 60, 50.0)
        .watts(60, 89, 150.0)
        .watts(89, 200, 50.0);
    assert_eq!(sim.transitions(), [(0.0, Unknown, Standby)]);
}

#[test]
fn a_classification_held_exactly_the_dwell_becomes_the_state() {
    let mut sim = Sim::new();
    sim.watts(0, 60, 50.0)
        .watts(60, 90, 150.0)
        .watts(90, 200, 50.0);
    assert_eq!(
        sim.transitions(),
        [
            (0.0, Unknown, Standby),
            (60.0, Standby, Running),
            (90.0, Running, Standby)
        ]
    );
}

#[test]
fn the_transition_is_dated_when_the_new_classification_began() {
    let mut sim = Sim::new();
    sim.watts(0, 60, 50.0).watts(60, 95, 150.0);
    let t = sim.last_transition();
    assert_eq!((secs(t.at), t.to), (60.0, Running));
}

#[test]
fn the_state_is_confirmed_by_time_passing_without_a_new_reading() {
    let mut sim = Sim::new();
    sim.status(0.0, Running);
    assert!(sim.transitions().is_empty());
    sim.advance(29.999);
    assert!(sim.transitions().is_empty());
    sim.advance(30.0);
    assert_eq!(sim.transitions(), [(0.0, Unknown, Running)]);
}

#[test]
fn a_dwell_of_zero_confirms_every_change_at_once() {
    let mut rules = StateRules::with_thresholds(10.0, 100.0);
    rules.min_dwell_s = 0;
    let mut sim = Sim::with(EngineSettings::new(&rules, 1000));
    sim.watts(0, 1, 50.0).watts(1, 2, 150.0).watts(2, 3, 5.0);
    assert_eq!(
        sim.transitions(),
        [
            (0.0, Unknown, Standby),
            (1.0, Standby, Running),
            (2.0, Running, Off)
        ]
    );
}

// Status line precedence

#[test]
fn a_fresh_status_line_wins_over_power() {
    let mut sim = Sim::new();
    sim.watts(0, 40, 5.0)
        .status(40.0, Running)
        .watts(41, 100, 5.0);
    assert_eq!(
        sim.transitions(),
        [(0.0, Unknown, Off), (40.0, Off, Running)]
    );
    let t = sim.last_transition();
    assert_eq!(t.source, TransitionSource::Status);
    assert_eq!(t.reason, "status line reports running");
}

#[test]
fn a_sample_id_captured_from_the_status_line_is_named_in_the_reason() {
    let mut sim = Sim::new();
    let sample = Some(std::sync::Arc::from("S-0042"));
    sim.engine.push(
        Reading::Status {
            at: at(0.0),
            state: Running,
            sample,
        },
        &mut sim.out,
    );
    sim.advance(30.0);
    assert_eq!(
        sim.last_transition().reason,
        "status line reports running (sample S-0042)"
    );
}

#[test]
fn a_status_fault_sets_the_fault_state() {
    let mut sim = Sim::new();
    sim.watts(0, 40, 150.0)
        .status(40.0, Fault)
        .watts(41, 100, 150.0);
    assert_eq!(
        sim.transitions(),
        [(0.0, Unknown, Running), (40.0, Running, Fault)]
    );
}

#[test]
fn power_takes_over_when_the_status_line_goes_stale() {
    let mut sim = Sim::new();
    // Status says running at 0; power says standby throughout.
    sim.status(0.0, Running).watts(1, 400, 50.0);
    assert_eq!(
        sim.transitions(),
        [(0.0, Unknown, Running), (300.0, Running, Standby)]
    );
}

#[test]
fn a_status_line_exactly_stale_after_seconds_old_is_stale() {
    let mut sim = Sim::new();
    sim.watts(0, 40, 50.0).status(40.0, Running);
    sim.watts(40, 340, 50.0); // samples up to 339
    sim.advance(339.999);
    assert_eq!(sim.engine.state(), Running);
    sim.watts(340, 400, 50.0);
    assert_eq!(sim.transitions().last(), Some(&(340.0, Running, Standby)));
}

#[test]
fn a_new_status_line_keeps_the_status_fresh() {
    let mut sim = Sim::new();
    sim.status(0.0, Running)
        .status(250.0, Running)
        .watts(1, 600, 50.0);
    assert_eq!(
        sim.transitions(),
        [(0.0, Unknown, Running), (550.0, Running, Standby)]
    );
}

#[test]
fn a_fresh_status_covers_failed_power_reads() {
    let mut sim = Sim::new();
    sim.status(0.0, Running).failed(1, 200);
    assert_eq!(sim.transitions(), [(0.0, Unknown, Running)]);
}

// Never invent zeros: failed reads and gaps are unknown

#[test]
fn failed_reads_longer_than_the_dwell_become_unknown_dated_at_the_first_failure() {
    let mut sim = Sim::new();
    sim.watts(0, 60, 150.0).failed(60, 100);
    assert_eq!(
        sim.transitions(),
        [(0.0, Unknown, Running), (60.0, Running, Unknown)]
    );
    assert_eq!(sim.last_transition().source, TransitionSource::NoData);
}

#[test]
fn a_single_failed_read_does_not_create_an_unknown_period() {
    let mut sim = Sim::new();
    sim.watts(0, 60, 150.0).failed(60, 61).watts(61, 200, 150.0);
    assert_eq!(sim.transitions(), [(0.0, Unknown, Running)]);
}

#[test]
fn a_failed_read_is_never_counted_as_zero_watts() {
    let mut sim = Sim::new();
    sim.watts(0, 30, 150.0).failed(30, 60).watts(60, 121, 150.0);
    sim.advance(121.0);
    for (_, s) in sim.summaries() {
        assert_eq!(s.min_w, Some(150.0), "{s:?}");
        assert_eq!(s.avg_w, Some(150.0), "{s:?}");
    }
    let (_, first) = &sim.summaries()[0];
    assert_eq!(
        (first.samples, first.failed_reads, first.covered_s),
        (30, 30, 30.0)
    );
}

#[test]
fn a_gap_longer_than_the_maximum_holds_one_poll_interval_then_is_unknown() {
    let mut sim = Sim::new();
    sim.watts(0, 60, 150.0).watts(160, 200, 150.0);
    assert_eq!(
        sim.transitions(),
        [
            (0.0, Unknown, Running),
            (60.0, Running, Unknown),
            (160.0, Unknown, Running)
        ]
    );
}

#[test]
fn a_gap_of_exactly_the_maximum_is_not_unknown() {
    let mut rules = StateRules::with_thresholds(10.0, 100.0);
    rules.min_dwell_s = 0;
    let mut sim = Sim::with(EngineSettings::new(&rules, 1000));
    sim.watts(0, 1, 150.0).watts(3, 4, 150.0).watts(7, 8, 150.0);
    // 0 → 3 is exactly 3 s: holds. 3 → 7 is 4 s: unknown from 4 to 7.
    assert_eq!(
        sim.transitions(),
        [
            (0.0, Unknown, Running),
            (4.0, Running, Unknown),
            (7.0, Unknown, Running)
        ]
    );
}

#[test]
fn a_silent_meter_becomes_unknown_as_time_passes() {
    let mut sim = Sim::new();
    sim.watts(0, 60, 150.0);
    sim.advance(62.0);
    assert_eq!(sim.engine.state(), Running, "gap not yet over the maximum");
    sim.advance(89.0);
    assert_eq!(
        sim.engine.state(),
        Running,
        "unknown since 60 s, held only 29 s"
    );
    sim.advance(90.0);
    assert_eq!(sim.transitions().last(), Some(&(60.0, Running, Unknown)));
}

#[test]
fn a_gap_shorter_than_the_dwell_does_not_create_an_unknown_period() {
    let mut sim = Sim::new();
    sim.watts(0, 60, 150.0).watts(80, 200, 150.0);
    assert_eq!(sim.transitions(), [(0.0, Unknown, Running)]);
}

#[test]
fn non_finite_watts_are_a_failed_read() {
    let mut sim = Sim::new();
    sim.watts(0, 60, 150.0).watts(60, 100, f64::NAN);
    assert_eq!(sim.transitions().last(), Some(&(60.0, Running, Unknown)));
}

// Ordering and the end of data

#[test]
fn a_reading_older_than_one_already_seen_is_taken_as_now() {
    let mut sim = Sim::new();
    sim.watts(0, 60, 150.0);
    sim.engine
        .push(Reading::status(at(10.0), Fault), &mut sim.out);
    sim.advance(90.0);
    assert_eq!(sim.transitions().last(), Some(&(59.0, Running, Fault)));
}

#[test]
fn finishing_makes_the_state_unknown_when_the_data_ends() {
    let mut sim = Sim::new();
    sim.watts(0, 90, 150.0);
    sim.engine.finish(at(90.0), &mut sim.out);
    assert_eq!(
        sim.transitions(),
        [(0.0, Unknown, Running), (90.0, Running, Unknown)]
    );
    let total: f64 = sim.summaries().iter().map(|(_, s)| s.covered_s).sum();
    assert_eq!(total, 90.0);
}

// Summaries

#[test]
fn summaries_are_time_weighted_and_aligned_to_the_interval() {
    let mut sim = Sim::new();
    // 0–30 s at 100 W, 30–60 s at 300 W, then one sample at 60 s closes the minute.
    sim.watts(0, 30, 100.0).watts(30, 61, 300.0);
    let summaries = sim.summaries();
    assert_eq!(summaries.len(), 1);
    let (start, s) = &summaries[0];
    assert_eq!(*start, 0.0);
    assert_eq!(secs(s.end), 60.0);
    assert_eq!((s.samples, s.failed_reads), (60, 0));
    assert_eq!((s.min_w, s.max_w), (Some(100.0), Some(300.0)));
    assert_eq!(s.avg_w, Some(200.0));
    assert!((s.energy_wh - 200.0 / 60.0).abs() < 1e-9, "{}", s.energy_wh);
    assert_eq!(s.covered_s, 60.0);
}

#[test]
fn a_reading_held_across_a_boundary_is_split_between_intervals() {
    let mut rules = StateRules::with_thresholds(10.0, 100.0);
    rules.max_sample_gap_s = Some(10.0);
    let mut sim = Sim::with(EngineSettings::new(&rules, 5000));
    sim.watts(55, 56, 360.0).watts(65, 66, 360.0);
    sim.advance(200.0);
    let s = sim.summaries();
    assert_eq!(s.len(), 2);
    assert_eq!((s[0].0, s[0].1.covered_s, s[0].1.samples), (0.0, 5.0, 1));
    assert!((s[0].1.energy_wh - 0.5).abs() < 1e-9);
    // 60–65 from the first sample, 65–70 (one poll interval) from the second.
    assert_eq!((s[1].0, s[1].1.covered_s, s[1].1.samples), (60.0, 10.0, 1));
}

#[test]
fn an_interval_with_no_reading_is_skipped() {
    let mut sim = Sim::new();
    sim.watts(0, 10, 50.0).watts(600, 700, 50.0);
    let starts: Vec<f64> = sim.summaries().iter().map(|(s, _)| *s).collect();
    assert_eq!(starts, [0.0, 600.0]);
}

#[test]
fn an_interval_of_only_failed_reads_reports_them_without_watts() {
    let mut sim = Sim::new();
    sim.failed(0, 61);
    let (_, s) = &sim.summaries()[0];
    assert_eq!((s.samples, s.failed_reads), (0, 60));
    assert_eq!(
        (s.min_w, s.avg_w, s.max_w, s.energy_wh),
        (None, None, None, 0.0)
    );
}

#[test]
fn volts_and_amps_are_averaged_when_the_meter_has_them() {
    let mut sim = Sim::new();
    for s in 0..61 {
        let (volts, amps) = if s < 30 {
            (Some(230.0), None)
        } else {
            (Some(220.0), Some(2.0))
        };
        sim.engine.push(
            Reading::Power {
                at: at(s.into()),
                watts: Some(440.0),
                volts,
                amps,
            },
            &mut sim.out,
        );
    }
    let (_, s) = &sim.summaries()[0];
    assert_eq!((s.avg_v, s.avg_a), (Some(225.0), Some(2.0)));
}

// Properties

#[derive(Debug, Clone)]
enum Step {
    Power(u32, Option<f64>),
    Status(u32, State),
}

fn steps() -> impl Strategy<Value = Vec<Step>> {
    let power = prop_oneof![
        4 => (0.0..200.0f64).prop_map(Some),
        1 => Just(None),
    ];
    let status = prop_oneof![Just(Running), Just(Standby), Just(Fault)];
    let step = prop_oneof![
        8 => (1..20_000u32, power).prop_map(|(d, w)| Step::Power(d, w)),
        1 => (1..400_000u32, status).prop_map(|(d, s)| Step::Status(d, s)),
    ];
    prop::collection::vec(step, 1..300)
}

fn readings(steps: &[Step]) -> Vec<Reading> {
    let mut t = 0i64;
    steps
        .iter()
        .map(|step| {
            let (Step::Power(d, _) | Step::Status(d, _)) = *step;
            t += i64::from(d);
            let at = Timestamp::from_millisecond(T0 + t).expect("in range");
            match *step {
                Step::Power(_, watts) => Reading::power(at, watts),
                Step::Status(_, state) => Reading::status(at, state),
            }
        })
        .collect()
}

fn transitions(out: &[Output]) -> Vec<super::Transition> {
    out.iter()
        .filter_map(|o| match o {
            Output::Transition(t) => Some(t.clone()),
            _ => None,
        })
        .collect()
}

proptest! {
    #[test]
    fn no_state_after_the_first_lasts_less_than_the_dwell(steps in steps()) {
        let mut engine = StateEngine::new(settings(), at(0.0));
        let mut out = Vec::new();
        engine.push_all(readings(&steps), &mut out);
        let ts = transitions(&out);
        for pair in ts.windows(2) {
            let held = pair[1].at.as_millisecond() - pair[0].at.as_millisecond();
            prop_assert!(held >= settings().min_dwell_ms, "{pair:?}");
        }
    }

    #[test]
    fn transitions_chain_and_move_forward(steps in steps()) {
        let mut engine = StateEngine::new(settings(), at(0.0));
        let mut out = Vec::new();
        engine.push_all(readings(&steps), &mut out);
        let mut state = Unknown;
        let mut last = at(0.0);
        for t in transitions(&out) {
            prop_assert_eq!(t.from, state);
            prop_assert_ne!(t.from, t.to);
            prop_assert!(t.at >= last);
            state = t.to;
            last = t.at;
        }
        prop_assert_eq!(engine.state(), state);
    }

    #[test]
    fn feeding_one_by_one_with_ticks_gives_the_same_output_as_one_batch(
        steps in steps(),
        tick_fractions in prop::collection::vec(0.0..1.0f64, 300),
    ) {
        let rs = readings(&steps);
        let end = rs.last().map(|r| r.at()).expect("non-empty");

        let mut batch = StateEngine::new(settings(), at(0.0));
        let mut batch_out = Vec::new();
        batch.push_all(rs.iter().cloned(), &mut batch_out);
        batch.finish(end, &mut batch_out);

        let mut live = StateEngine::new(settings(), at(0.0));
        let mut live_out = Vec::new();
        let mut prev = at(0.0).as_millisecond();
        for (r, f) in rs.iter().zip(&tick_fractions) {
            // A clock tick somewhere between the previous reading and this one.
            let next = r.at().as_millisecond();
            let tick = prev + ((next - prev) as f64 * f) as i64;
            live.advance(Timestamp::from_millisecond(tick).expect("in range"), &mut live_out);
            live.push(r.clone(), &mut live_out);
            prev = next;
        }
        live.finish(end, &mut live_out);

        prop_assert_eq!(transitions(&live_out), transitions(&batch_out));
        let summaries = |out: &[Output]| -> Vec<Output> {
            out.iter().filter(|o| matches!(o, Output::Summary { .. })).cloned().collect()
        };
        prop_assert_eq!(summaries(&live_out), summaries(&batch_out));
    }

    #[test]
    fn summaries_never_report_watts_no_successful_read_had(steps in steps()) {
        let rs = readings(&steps);
        let seen: Vec<f64> = rs.iter().filter_map(|r| match r {
            Reading::Power { watts: Some(w), .. } => Some(*w),
            _ => None,
        }).collect();
        let mut engine = StateEngine::new(settings(), at(0.0));
        let mut out = Vec::new();
        engine.push_all(rs.iter().cloned(), &mut out);
        engine.finish(rs.last().map(|r| r.at()).expect("non-empty"), &mut out);
        for o in &out {
            if let Output::Summary { start, summary } = o {
                for w in [summary.min_w, summary.max_w].into_iter().flatten() {
                    prop_assert!(seen.contains(&w), "{w} W was never read");
                }
                let span = (summary.end.as_millisecond() - start.as_millisecond()) as f64 / 1000.0;
                prop_assert!(summary.covered_s <= span + 1e-9);
            }
        }
    }
}

#[test]
fn a_states_index_is_its_place_in_all() {
    for (i, state) in State::ALL.into_iter().enumerate() {
        assert_eq!(state.index(), i, "{state:?}");
    }
}
