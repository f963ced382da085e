use labhours_shared::state::{State, StateRules};

use super::levels::{self, MIN_SEPARATION};
use super::suggest::round_significant;
use super::*;
use crate::instrument_sim::{Profile, TrueSample};

const DAY_S: i64 = 86_400;
/// 2026-11-22T00:00:00Z, so timestamps look real.
const T0_MS: i64 = 1_795_305_600_000;

fn samples_of(recording: &[TrueSample]) -> Vec<Sample> {
    recording
        .iter()
        .map(|s| Sample {
            at_ms: T0_MS + s.at_s * 1000,
            watts: Some(s.watts),
        })
        .collect()
}

/// `n` readings a second apart from `T0_MS`.
fn series(n: i64, watts: impl Fn(i64) -> Option<f64>) -> Vec<Sample> {
    (0..n)
        .map(|i| Sample {
            at_ms: T0_MS + i * 1000,
            watts: watts(i),
        })
        .collect()
}

/// Placeholder thresholds, as a config has them before calibration.
fn placeholder() -> StateRules {
    StateRules::with_thresholds(0.5, 10_000.0)
}

/// Share of the recorded time the engine, run with `rules`, spends in
/// another state than the simulator's truth.
fn wrong_share(recording: &[TrueSample], outcome: &Outcome) -> f64 {
    let wrong = recording
        .iter()
        .filter(|s| outcome.state_at(T0_MS + s.at_s * 1000) != s.truth)
        .count();
    wrong as f64 / recording.len() as f64
}

fn calibrated(profile: Profile, seed: u64) -> (Vec<TrueSample>, Calibration) {
    let recording = profile.record(seed, DAY_S);
    let c = calibrate(&samples_of(&recording), &placeholder(), 1000)
        .unwrap_or_else(|e| panic!("{}: {e}", profile.name()));
    (recording, c)
}

#[test]
fn every_simulated_instrument_is_classified_with_at_most_one_percent_of_its_time_wrong() {
    for profile in Profile::ALL {
        for seed in [1, 2, 3] {
            let (recording, c) = calibrated(profile, seed);
            let wrong = wrong_share(&recording, &c.suggested);
            eprintln!(
                "{:<10} seed {seed}: {} levels {:?}, on {} / exit {} / enter {}, {} transitions, {:.3} % wrong",
                profile.name(),
                c.levels.len(),
                c.levels
                    .iter()
                    .map(|l| (l.mean_w.round(), l.role))
                    .collect::<Vec<_>>(),
                c.state.on_above_w,
                c.state.exit_w(),
                c.state.running_above_w,
                c.suggested.transitions,
                wrong * 100.0
            );
            assert!(
                wrong <= 0.01,
                "{} seed {seed}: {:.3} % of the time in the wrong state",
                profile.name(),
                wrong * 100.0
            );
            // The placeholder thresholds are far off: the check can fail.
            assert!(wrong_share(&recording, &c.current) > 0.05);
        }
    }
}

#[test]
fn the_gc_ms_hold_lies_inside_the_running_band_and_does_not_flap() {
    let (recording, c) = calibrated(Profile::GcMs, 7);
    let roles: Vec<Role> = c.levels.iter().map(|l| l.role).collect();
    assert_eq!(
        roles,
        [Role::Standby, Role::RunningHold, Role::Running],
        "{c:#?}"
    );
    let hold = &c.levels[1];
    assert!(c.state.exit_w() < hold.low_w && hold.high_w < c.state.running_above_w);
    // One transition into running and one out per run: the hold adds none.
    let runs = recording
        .windows(2)
        .filter(|p| p[0].truth == State::Standby && p[1].truth == State::Running)
        .count();
    assert!(
        c.suggested.transitions <= 2 * runs + 1,
        "{} transitions for {runs} runs",
        c.suggested.transitions
    );
    assert!(c.notes.iter().any(|n| n.contains("hold within a run")));
}

#[test]
fn the_levels_are_reported_with_their_holds() {
    let (recording, c) = calibrated(Profile::Xrd, 1);
    let roles: Vec<Role> = c.levels.iter().map(|l| l.role).collect();
    assert_eq!(roles, [Role::Off, Role::Standby, Role::Running]);
    let running = &c.levels[2];
    assert!(
        (running.mean_w - 2400.0).abs() < 0.03 * 2400.0,
        "{running:?}"
    );
    let truth_running = recording
        .iter()
        .filter(|s| s.truth == State::Running)
        .count() as f64;
    // Ramps are part of a run but not of the level: the level holds a bit less.
    assert!(running.total_s <= truth_running && running.total_s > 0.95 * truth_running);
    assert!(running.longest_s >= 20.0 * 60.0);
    let shares: f64 = c.levels.iter().map(|l| l.share).sum();
    assert!((shares - 1.0).abs() < 1e-9);
    // The engine's time adds up over the recording.
    let total: f64 = c.suggested.shares.iter().sum();
    assert!((total - 1.0).abs() < 1e-9, "{total}");
}

#[test]
fn a_flat_recording_says_thresholds_cannot_be_inferred() {
    // A noisy single level: halves of it must not pass as two levels.
    let samples = series(600, |i| {
        Some(420.0 * (1.0 + 0.03 * ((i * 7919 % 601) as f64 / 300.0 - 1.0)))
    });
    let err = calibrate(&samples, &placeholder(), 1000).unwrap_err();
    let text = err.to_string();
    assert!(
        matches!(err, CalibrateError::Unsuited(Unsuited::OneLevel { .. })),
        "{text}"
    );
    assert!(
        text.contains("one level") && text.contains("cannot be inferred"),
        "{text}"
    );
}

#[test]
fn off_and_one_powered_level_cannot_tell_standby_from_running() {
    let samples = series(600, |i| Some(if i < 300 { 2.0 } else { 800.0 }));
    let err = calibrate(&samples, &placeholder(), 1000).unwrap_err();
    assert!(
        matches!(
            err,
            CalibrateError::Unsuited(Unsuited::OnePoweredLevel { .. })
        ),
        "{err}"
    );
}

#[test]
fn too_few_samples_are_refused_and_failed_reads_do_not_count() {
    let samples = series(40, |i| (i % 2 == 0).then_some(100.0));
    assert_eq!(
        calibrate(&samples, &placeholder(), 1000).unwrap_err(),
        CalibrateError::TooFewSamples {
            valid: 20,
            failed: 20
        }
    );
}

#[test]
fn failed_reads_are_left_out_never_read_as_zero_watts() {
    let mut samples = samples_of(&Profile::Sem.record(5, DAY_S));
    let clean = calibrate(&samples, &placeholder(), 1000).expect("calibrates");
    // Every 20th read fails: were they 0 W, a level near 0 W would appear.
    for s in samples.iter_mut().step_by(20) {
        s.watts = None;
    }
    let gappy = calibrate(&samples, &placeholder(), 1000).expect("calibrates");
    assert_eq!(gappy.failed_reads, samples.len().div_ceil(20));
    assert_eq!(gappy.levels.len(), clean.levels.len());
    assert!(
        gappy.levels.iter().all(|l| l.mean_w > 3.0),
        "{:?}",
        gappy.levels
    );
    assert_eq!(gappy.state, clean.state);
}

#[test]
fn three_clean_levels_give_thresholds_between_them_and_exact_evidence() {
    // 10 min off, 10 min standby, 10 min running, 10 min standby.
    let watts = |i: i64| match i / 600 {
        0 => 3.0,
        1 | 3 => 300.0,
        _ => 1500.0,
    };
    let samples = series(2400, |i| Some(watts(i)));
    let c = calibrate(&samples, &placeholder(), 1000).expect("calibrates");
    let s = &c.state;
    assert!(3.0 < s.on_above_w && s.on_above_w < 300.0, "{s:?}");
    assert!(300.0 < s.exit_w() && s.exit_w() < s.running_above_w && s.running_above_w < 1500.0);
    assert_eq!(c.suggested.transitions, 3);
    for (state, share) in [
        (State::Off, 0.25),
        (State::Standby, 0.5),
        (State::Running, 0.25),
    ] {
        assert!((c.suggested.share(state) - share).abs() < 1e-3, "{state}");
    }
    let longest: Vec<f64> = c.levels.iter().map(|l| l.longest_s).collect();
    assert_eq!(longest, [600.0, 600.0, 600.0]);
    let total: Vec<f64> = c.levels.iter().map(|l| l.total_s).collect();
    assert_eq!(total, [600.0, 1200.0, 600.0]);
    // The block keeps the config's other keys and parses back.
    let toml_text = report::state_toml(&c.state);
    let parsed: toml::Table = toml_text.parse().expect("valid TOML");
    let back: StateRules = parsed["state"].clone().try_into().expect("a [state]");
    assert_eq!(back, c.state);
    assert!(back.validate(1000).is_empty());
}

#[test]
fn halves_of_one_noisy_level_are_not_two_levels() {
    // A sine-shaped pump pulsation is the widest single level: ±20 %.
    let samples = series(3600, |i| Some(500.0 * (1.0 + 0.2 * (i as f64 * 0.9).sin())));
    let found = levels::find(&samples, 1000, 3000);
    assert_eq!(
        found.levels.len(),
        1,
        "separation {MIN_SEPARATION}: {found:?}"
    );
}

#[test]
fn thresholds_are_round_numbers() {
    assert_eq!(round_significant(873.456, 2), 870.0);
    assert_eq!(round_significant(0.3456, 2), 0.35);
    assert_eq!(round_significant(41.0, 3), 41.0);
    assert_eq!(round_significant(12_345.0, 3), 12_300.0);
}

#[test]
fn the_report_shows_the_block_the_levels_and_the_comparison() {
    let (_, c) = calibrated(Profile::Cytometer, 2);
    let text = report::text(&c, "test.csv");
    for expected in [
        "86400 samples over 24 h 00 min from test.csv",
        "[state]\non_above_w = ",
        "min_dwell_s = 30",
        "suggested",
        "current config",
        "off\n",
        "standby\n",
        "running\n",
    ] {
        assert!(text.contains(expected), "{expected:?} missing:\n{text}");
    }
    let json: serde_json::Value =
        serde_json::from_str(&report::json(&c, "test.csv")).expect("JSON");
    assert_eq!(json["state"]["on_above_w"], c.state.on_above_w);
    assert_eq!(json["levels"].as_array().map(Vec::len), Some(3));
    assert!(
        json["state_toml"]
            .as_str()
            .is_some_and(|t| t.starts_with("[state]"))
    );
}
