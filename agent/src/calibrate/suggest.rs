//! From levels to `[state]` thresholds: which level is which state, and
//! where between them each threshold goes.
//!
//! The engine's keys decide the shape: `on_above_w` (no hysteresis key of
//! its own: `min_dwell_s` smooths off/standby), `running_above_w` to enter
//! `running` and `running_exit_below_w` to leave it. A level that is only
//! ever entered from a higher one (a GC-MS oven holding its temperature
//! after the ramp, a centrifuge at speed after accelerating) is a *hold*:
//! the two running thresholds are put on either side of it, so it keeps
//! `running` and never flaps.

use serde::Serialize;

use super::levels::{Level, log_w, watts_of};

/// The lowest level is `off` when it is below this: a switched-off
/// instrument draws a few watts at most (a power supply, the meter's offset).
pub const OFF_BELOW_W: f64 = 10.0;
/// What a switched-off instrument typically draws, for placing `on_above_w`
/// when the recording never saw it off.
const TYPICAL_OFF_W: f64 = 5.0;

/// The state a level stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Off,
    Standby,
    Running,
    /// Running, held inside the band between the two running thresholds.
    RunningHold,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Off => "off",
            Role::Standby => "standby",
            Role::Running => "running",
            Role::RunningHold => "running (hold)",
        }
    }
}

/// Thresholds in watts, one role per level, and what the reader should know.
#[derive(Debug, Clone, PartialEq)]
pub struct Suggestion {
    pub roles: Vec<Role>,
    pub on_above_w: f64,
    pub running_above_w: f64,
    pub running_exit_below_w: f64,
    pub notes: Vec<String>,
}

/// Why no thresholds follow from the levels.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Unsuited {
    #[error(
        "the power sat at one level the whole time (about {watts:.1} W, 99 % of the time within {lo:.1}–{hi:.1} W): \
         thresholds cannot be inferred from a recording in which the instrument never changed state. \
         Record again while it is switched off, idles and works (e.g. start a measurement during the recording)"
    )]
    OneLevel { watts: f64, lo: f64, hi: f64 },
    #[error(
        "the recording holds the instrument off (about {off_w:.1} W) and one powered level (about {on_w:.1} W): \
         standby cannot be told from running with one powered level. \
         Record again with a stretch where it idles and one where it works"
    )]
    OnePoweredLevel { off_w: f64, on_w: f64 },
}

/// The thresholds for `levels` (lowest first).
pub fn suggest(levels: &[Level]) -> Result<Suggestion, Unsuited> {
    let has_off = levels.first().is_some_and(|l| l.mean_w < OFF_BELOW_W);
    let powered = &levels[usize::from(has_off)..];
    match (has_off, powered.len()) {
        (_, 0) | (false, 1) => {
            let l = &levels[0];
            return Err(Unsuited::OneLevel {
                watts: l.mean_w,
                lo: watts_of(l.p005),
                hi: watts_of(l.p995),
            });
        }
        (true, 1) => {
            return Err(Unsuited::OnePoweredLevel {
                off_w: levels[0].mean_w,
                on_w: powered[0].mean_w,
            });
        }
        _ => {}
    }
    let mut notes = Vec::new();
    let standby = &powered[0];
    // The first level above standby that is entered from below starts a run;
    // those under it are holds. The top level can only be entered from below.
    let entry = (1..powered.len())
        .find(|&i| !is_hold(&powered[i]))
        .unwrap_or(powered.len() - 1);
    let mut roles = Vec::with_capacity(levels.len());
    if has_off {
        roles.push(Role::Off);
    }
    roles.push(Role::Standby);
    for i in 1..powered.len() {
        roles.push(if i < entry {
            Role::RunningHold
        } else {
            Role::Running
        });
    }

    let on = if has_off {
        between(&levels[0], standby, 0.5, &mut notes)
    } else {
        notes.push(format!(
            "the instrument was never off in this recording: on_above_w is put between a typical \
             switched-off draw ({TYPICAL_OFF_W} W) and the standby level"
        ));
        let lo = log_w(TYPICAL_OFF_W).min(standby.p005);
        Placed::clean(lo, standby.p005, 0.5)
    };
    let (exit, enter) = if entry == 1 {
        // One gap holds both: at its thirds, each with room to round in its half.
        let (lo, hi) = gap(standby, &powered[1], &mut notes);
        let mid = (lo + hi) / 2.0;
        (
            Placed {
                at: lo + (hi - lo) / 3.0,
                lo,
                hi: mid,
            },
            Placed {
                at: lo + (hi - lo) * 2.0 / 3.0,
                lo: mid,
                hi,
            },
        )
    } else {
        for (level, role) in levels.iter().zip(&roles) {
            if *role == Role::RunningHold {
                notes.push(format!(
                    "the level at {:.0} W is only entered from a higher one: it is a hold within a run \
                     (an oven holding its temperature, a rotor at speed), so it lies between \
                     running_exit_below_w and running_above_w and stays running without flapping",
                    level.mean_w
                ));
            }
        }
        (
            between(standby, &powered[1], 0.5, &mut notes),
            between(&powered[entry - 1], &powered[entry], 0.5, &mut notes),
        )
    };
    let on_above_w = on.nice();
    let running_exit_below_w = exit.nice().max(on_above_w + 0.1);
    let running_above_w = enter.nice().max(running_exit_below_w);
    notes.push(
        "[state] has no hysteresis key for on_above_w: min_dwell_s is what keeps a reading \
         that flickers around it from flapping between off and standby"
            .into(),
    );
    Ok(Suggestion {
        roles,
        on_above_w,
        running_above_w,
        running_exit_below_w,
        notes,
    })
}

/// Entered (substantially) from above, hardly ever from below.
fn is_hold(level: &Level) -> bool {
    level.entered_from_above > 0 && level.entered_from_below * 10 <= level.entered_from_above
}

/// A threshold in log-power at `at`, free to move within `(lo, hi)` when rounded.
#[derive(Debug, Clone, Copy)]
struct Placed {
    at: f64,
    lo: f64,
    hi: f64,
}

impl Placed {
    fn clean(lo: f64, hi: f64, fraction: f64) -> Self {
        Self {
            at: lo + (hi - lo) * fraction,
            lo,
            hi,
        }
    }

    /// The roundest number of watts (fewest significant digits) within the room.
    fn nice(self) -> f64 {
        let (lo, hi, at) = (watts_of(self.lo), watts_of(self.hi), watts_of(self.at));
        (2..=6)
            .map(|digits| round_significant(at, digits))
            .find(|w| *w > lo && *w < hi)
            .unwrap_or_else(|| round_significant(at, 3))
    }
}

/// A threshold between two neighbouring levels, `fraction` of the way up
/// their [`gap`].
fn between(lower: &Level, upper: &Level, fraction: f64, notes: &mut Vec<String>) -> Placed {
    let (lo, hi) = gap(lower, upper, notes);
    Placed::clean(lo, hi, fraction)
}

/// From the lower level's top (99.5th percentile) to the upper one's bottom
/// (0.5th). Overlapping levels get the Otsu cut, and a note.
fn gap(lower: &Level, upper: &Level, notes: &mut Vec<String>) -> (f64, f64) {
    if lower.p995 < upper.p005 {
        return (lower.p995, upper.p005);
    }
    notes.push(format!(
        "the levels at {:.0} W and {:.0} W overlap: the threshold between them is where the \
         histogram separates them best; readings in the overlap may flap until min_dwell_s absorbs them",
        lower.mean_w, upper.mean_w
    ));
    (lower.upper_cut, lower.upper_cut)
}

/// `x` to `digits` significant digits, without binary noise (870, not 870.0000001).
pub fn round_significant(x: f64, digits: i32) -> f64 {
    if x <= 0.0 || !x.is_finite() {
        return 0.0;
    }
    let decimals = (digits - 1 - x.log10().floor() as i32).max(0) as usize;
    let magnitude = 10f64.powi(x.log10().floor() as i32 - digits + 1);
    let rounded = (x / magnitude).round() * magnitude;
    format!("{rounded:.decimals$}").parse().unwrap_or(rounded)
}
