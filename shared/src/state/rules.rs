//! The per-instrument thresholds and timings of the state rules, as written in
//! config files, and their resolved form used by the engine.

use serde::{Deserialize, Serialize};

use crate::config::ConfigError;

/// State rules as configured (`[state]` in the agent config). Defaults are
/// those of reconciliation.md §1; the thresholds depend on the instrument and
/// have none.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateRules {
    /// Below this the instrument is `off`.
    pub on_above_w: f64,
    /// At or above this the instrument enters `running`.
    pub running_above_w: f64,
    /// While `running`, power at or above this stays `running`.
    /// Default: 90 % of `running_above_w`.
    #[serde(default)]
    pub running_exit_below_w: Option<f64>,
    /// A new classification must hold this long to become the state.
    #[serde(default = "defaults::min_dwell_s")]
    pub min_dwell_s: u64,
    /// A status line decides the state for this long after it arrived.
    #[serde(default = "defaults::status_stale_after_s")]
    pub status_stale_after_s: u64,
    /// A longer gap between power samples counts as `unknown` after one poll
    /// interval. Default: 3 × the poll interval.
    #[serde(default)]
    pub max_sample_gap_s: Option<f64>,
    /// Length of the power summaries (aligned to UTC multiples of it).
    #[serde(default = "defaults::summary_interval_s")]
    pub summary_interval_s: u64,
}

mod defaults {
    pub fn min_dwell_s() -> u64 {
        30
    }
    pub fn status_stale_after_s() -> u64 {
        300
    }
    pub fn summary_interval_s() -> u64 {
        60
    }
}

/// Share of `running_above_w` used when `running_exit_below_w` is not set.
pub const DEFAULT_EXIT_RATIO: f64 = 0.9;
/// `max_sample_gap_s` defaults to this many poll intervals.
pub const DEFAULT_GAP_POLLS: i64 = 3;

impl StateRules {
    /// Rules with the given thresholds and every other field at its default.
    pub fn with_thresholds(on_above_w: f64, running_above_w: f64) -> Self {
        Self {
            on_above_w,
            running_above_w,
            running_exit_below_w: None,
            min_dwell_s: defaults::min_dwell_s(),
            status_stale_after_s: defaults::status_stale_after_s(),
            max_sample_gap_s: None,
            summary_interval_s: defaults::summary_interval_s(),
        }
    }

    /// Checks the rules; `poll_interval_ms` is the power source's poll interval.
    pub fn validate(&self, poll_interval_ms: u64) -> Vec<ConfigError> {
        let mut errors = Vec::new();
        let mut bad = |field: &str, problem: String, fix: &str| {
            errors.push(ConfigError::new(field, problem, fix));
        };
        if !(self.on_above_w.is_finite() && self.on_above_w >= 0.0) {
            bad(
                "on_above_w",
                format!("{} is not a power of 0 W or more", self.on_above_w),
                "set the standby power threshold in watts, e.g. on_above_w = 5.0",
            );
        }
        if !(self.running_above_w.is_finite() && self.running_above_w > self.on_above_w) {
            bad(
                "running_above_w",
                format!(
                    "{} W must be above on_above_w ({} W)",
                    self.running_above_w, self.on_above_w
                ),
                "set the power the instrument draws when working, above the standby threshold",
            );
        }
        let exit = self.exit_w();
        if !(exit.is_finite() && exit > self.on_above_w && exit <= self.running_above_w) {
            bad(
                "running_exit_below_w",
                format!(
                    "{exit} W must lie above on_above_w ({} W) and at or below running_above_w ({} W)",
                    self.on_above_w, self.running_above_w
                ),
                "remove it to use 90 % of running_above_w, or pick a value between the two",
            );
        }
        if self.status_stale_after_s == 0 {
            bad(
                "status_stale_after_s",
                "0 s would make every status line stale at once".into(),
                "use the default 300 or the longest silence of the instrument's status line",
            );
        }
        if self.summary_interval_s == 0 || 86_400 % self.summary_interval_s != 0 {
            bad(
                "summary_interval_s",
                format!("{} s does not divide a day evenly", self.summary_interval_s),
                "use a divisor of 86400 such as 60, 300 or 900",
            );
        }
        if let Some(gap) = self.max_sample_gap_s
            && !(gap.is_finite() && gap * 1000.0 >= poll_interval_ms as f64)
        {
            bad(
                "max_sample_gap_s",
                format!("{gap} s is shorter than the poll interval ({poll_interval_ms} ms)"),
                "remove it to use 3 poll intervals, or set at least one poll interval",
            );
        }
        errors
    }

    /// The same rules with every default a field can leave open filled in
    /// (the exit threshold, the sample gap for `poll_interval_ms`): what an
    /// agent reports it applies.
    pub fn effective(&self, poll_interval_ms: u64) -> Self {
        let settings = EngineSettings::new(self, poll_interval_ms);
        Self {
            running_exit_below_w: Some(settings.running_exit_below_w),
            max_sample_gap_s: Some(settings.max_sample_gap_ms as f64 / 1000.0),
            ..self.clone()
        }
    }

    /// Where `running` is left: `running_exit_below_w`, or 90 % of `running_above_w`.
    pub fn exit_w(&self) -> f64 {
        self.running_exit_below_w
            .unwrap_or(self.running_above_w * DEFAULT_EXIT_RATIO)
    }
}

/// The rules with every default resolved, in the engine's units (ms).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EngineSettings {
    pub on_above_w: f64,
    pub running_above_w: f64,
    pub running_exit_below_w: f64,
    pub min_dwell_ms: i64,
    pub status_stale_after_ms: i64,
    pub poll_interval_ms: i64,
    pub max_sample_gap_ms: i64,
    pub summary_interval_ms: i64,
}

impl EngineSettings {
    /// Resolves `rules` for a power source polled every `poll_interval_ms`.
    /// Call [`StateRules::validate`] first: this does not re-check.
    pub fn new(rules: &StateRules, poll_interval_ms: u64) -> Self {
        let poll = poll_interval_ms.max(1) as i64;
        Self {
            on_above_w: rules.on_above_w,
            running_above_w: rules.running_above_w,
            running_exit_below_w: rules.exit_w(),
            min_dwell_ms: secs_to_ms(rules.min_dwell_s),
            status_stale_after_ms: secs_to_ms(rules.status_stale_after_s),
            poll_interval_ms: poll,
            max_sample_gap_ms: rules
                .max_sample_gap_s
                .map_or(DEFAULT_GAP_POLLS * poll, |s| (s * 1000.0).round() as i64),
            summary_interval_ms: secs_to_ms(rules.summary_interval_s.max(1)),
        }
    }
}

impl EngineSettings {
    /// The state `watts` stands for, with the running hysteresis: `running`
    /// is kept down to `running_exit_below_w` while the state is running,
    /// and entered only from `running_above_w` otherwise.
    pub fn classify_power(&self, watts: f64, running: bool) -> super::State {
        use super::State;
        let running_from = if running {
            self.running_exit_below_w
        } else {
            self.running_above_w
        };
        if watts >= running_from {
            State::Running
        } else if watts >= self.on_above_w {
            State::Standby
        } else {
            State::Off
        }
    }
}

fn secs_to_ms(s: u64) -> i64 {
    i64::try_from(s.saturating_mul(1000)).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_threshold_defaults_to_ninety_percent_of_the_running_threshold() {
        let s = EngineSettings::new(&StateRules::with_thresholds(5.0, 1000.0), 1000);
        assert_eq!(s.running_exit_below_w, 900.0);
        assert_eq!(s.min_dwell_ms, 30_000);
        assert_eq!(s.status_stale_after_ms, 300_000);
        assert_eq!(s.max_sample_gap_ms, 3_000);
        assert_eq!(s.summary_interval_ms, 60_000);
    }

    #[test]
    fn sensible_rules_validate() {
        assert!(
            StateRules::with_thresholds(5.0, 100.0)
                .validate(1000)
                .is_empty()
        );
    }

    #[test]
    fn each_bad_threshold_is_named_with_a_fix() {
        let mut rules = StateRules::with_thresholds(50.0, 40.0);
        rules.running_exit_below_w = Some(45.0);
        rules.summary_interval_s = 7;
        rules.max_sample_gap_s = Some(0.5);
        rules.status_stale_after_s = 0;
        let fields: Vec<_> = rules
            .validate(1000)
            .into_iter()
            .map(|e| {
                assert!(!e.fix.is_empty());
                e.field
            })
            .collect();
        assert_eq!(
            fields,
            [
                "running_above_w",
                "running_exit_below_w",
                "status_stale_after_s",
                "summary_interval_s",
                "max_sample_gap_s"
            ]
        );
    }
}
