//! Recordings of simulated instruments with their true state, for testing
//! `calibrate` (compiled for tests and with the `sim` feature).
//!
//! Five profiles, each a day at 1 Hz from a seed: the power a meter would
//! read (with ±3 % noise) and the state the instrument was really in. Levels
//! and shapes follow what such instruments draw: the SEM's and the XRD's
//! levels are those of the demo (`collector/src/demo/scenario.rs`).

use labhours_shared::state::State;

/// One simulated reading: the power at `at_s` (seconds from the start) and
/// the state the instrument was really in until the next one.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TrueSample {
    pub at_s: i64,
    pub watts: f64,
    pub truth: State,
}

/// The simulated instruments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    /// Field-emission SEM: standby 420 W, imaging 1650 W, now and then switched off (4 W).
    Sem,
    /// GC-MS, always powered (vacuum): standby 320 W; a run heats the oven
    /// at 1600 W, then holds its temperature with the heater drawing
    /// 550–850 W, a level inside the band between standby and the ramp.
    GcMs,
    /// Refrigerated centrifuge: off at night, standby 45 W; a run
    /// accelerates at 1800 W, holds speed at 1100 W and brakes down to standby.
    Centrifuge,
    /// Flow cytometer: off at night, standby 150 W; acquiring 480 W with
    /// the fluidics pump pulsing ±10 %.
    Cytometer,
    /// X-ray diffractometer: off at night (3 W), standby 350 W; the tube
    /// ramps up to 2400 W over 90 s and down over 30 s.
    Xrd,
}

impl Profile {
    pub const ALL: [Profile; 5] = [
        Profile::Sem,
        Profile::GcMs,
        Profile::Centrifuge,
        Profile::Cytometer,
        Profile::Xrd,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Profile::Sem => "SEM",
            Profile::GcMs => "GC-MS",
            Profile::Centrifuge => "centrifuge",
            Profile::Cytometer => "cytometer",
            Profile::Xrd => "XRD",
        }
    }

    /// `seconds` of readings at 1 Hz.
    pub fn record(self, seed: u64, seconds: i64) -> Vec<TrueSample> {
        let mut rng = Rng(seed ^ (self as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let mut out = Vec::with_capacity(seconds as usize);
        while (out.len() as i64) < seconds {
            let t0 = out.len() as i64;
            for phase in self.next_phases(t0, &mut rng) {
                for i in 0..phase.len_s {
                    let at_s = out.len() as i64;
                    if at_s >= seconds {
                        break;
                    }
                    let base = phase.shape.watts(i, phase.len_s, &mut rng);
                    let jitter = 1.0 + (rng.unit() - 0.5) * 0.06;
                    out.push(TrueSample {
                        at_s,
                        watts: (base * jitter * 10.0).round() / 10.0,
                        truth: phase.truth,
                    });
                }
            }
        }
        out
    }

    /// The phases that follow `t` (seconds from the start): a stretch of
    /// idling, then a use (or a night off).
    fn next_phases(self, t: i64, rng: &mut Rng) -> Vec<Phase> {
        use Shape::*;
        use State::{Off, Running, Standby};
        let hour = (t / 3600) % 24;
        let night = !(7..20).contains(&hour);
        let mins = |rng: &mut Rng, lo: i64, hi: i64| 60 * rng.between(lo, hi);
        let phase = |len_s, truth, shape| Phase {
            len_s,
            truth,
            shape,
        };
        match self {
            Profile::Sem => {
                if night {
                    return vec![phase(3600, Standby, Level(420.0))];
                }
                let mut p = vec![phase(mins(rng, 10, 60), Standby, Level(420.0))];
                if rng.unit() < 0.15 {
                    p.push(phase(mins(rng, 20, 45), Off, Level(4.0)));
                } else {
                    p.push(phase(mins(rng, 30, 120), Running, Level(1650.0)));
                }
                p
            }
            Profile::GcMs => vec![
                phase(mins(rng, 5, 15), Standby, Level(320.0)),
                phase(mins(rng, 8, 15), Running, Level(1600.0)),
                phase(mins(rng, 10, 25), Running, Band(550.0, 850.0)),
            ],
            Profile::Centrifuge => {
                if night {
                    return vec![phase(3600, Off, Level(0.8))];
                }
                vec![
                    phase(mins(rng, 5, 40), Standby, Level(45.0)),
                    phase(rng.between(60, 120), Running, Level(1800.0)),
                    phase(mins(rng, 10, 40), Running, Level(1100.0)),
                    phase(60, Running, Ramp(1100.0, 45.0)),
                ]
            }
            Profile::Cytometer => {
                if night {
                    return vec![phase(3600, Off, Level(2.0))];
                }
                vec![
                    phase(mins(rng, 2, 20), Standby, Level(150.0)),
                    phase(mins(rng, 5, 20), Running, Pulsing(480.0)),
                ]
            }
            Profile::Xrd => {
                if night {
                    return vec![phase(3600, Off, Level(3.0))];
                }
                vec![
                    phase(mins(rng, 10, 60), Standby, Level(350.0)),
                    phase(90, Running, Ramp(350.0, 2400.0)),
                    phase(mins(rng, 20, 80), Running, Level(2400.0)),
                    phase(30, Running, Ramp(2400.0, 350.0)),
                ]
            }
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Phase {
    len_s: i64,
    truth: State,
    shape: Shape,
}

/// The power of a phase before the meter's noise.
#[derive(Debug, Clone, Copy)]
enum Shape {
    Level(f64),
    /// Anywhere in `[lo, hi]` (a heater holding a temperature).
    Band(f64, f64),
    /// Linear from one level to the other over the phase.
    Ramp(f64, f64),
    /// ±10 % with a 7 s period (a pump).
    Pulsing(f64),
}

impl Shape {
    fn watts(self, i: i64, len: i64, rng: &mut Rng) -> f64 {
        match self {
            Shape::Level(w) => w,
            Shape::Band(lo, hi) => lo + (hi - lo) * rng.unit(),
            Shape::Ramp(from, to) => from + (to - from) * (i as f64 / len.max(1) as f64),
            Shape::Pulsing(w) => w * (1.0 + 0.1 * (i as f64 * std::f64::consts::TAU / 7.0).sin()),
        }
    }
}

/// SplitMix64: the same seed, the same recording.
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn between(&mut self, lo: i64, hi: i64) -> i64 {
        lo + (self.next_u64() % (hi - lo + 1) as u64) as i64
    }
}
