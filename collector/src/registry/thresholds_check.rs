//! Do the agent and the registry agree on an instrument's thresholds?
//!
//! The agent is the one source of the thresholds that decide states: it
//! applies its `[state]` and reports the effective values in its online
//! status. The registry's `thresholds` are what the site expects; the
//! collector compares the two and raises every difference (API
//! `/instruments`, the dashboard's agents page and exceptions inbox), so a
//! wrong threshold on one PC cannot skew hours unseen (docs/instruments.md).

use labhours_shared::state::StateRules;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::config::Thresholds;

/// The threshold settings an agent said it applies (defaults resolved).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AppliedThresholds {
    pub on_above_w: f64,
    pub running_above_w: f64,
    pub running_exit_below_w: f64,
    pub min_dwell_s: u64,
    pub status_stale_after_s: u64,
}

impl From<&StateRules> for AppliedThresholds {
    fn from(rules: &StateRules) -> Self {
        Self {
            on_above_w: rules.on_above_w,
            running_above_w: rules.running_above_w,
            running_exit_below_w: rules.exit_w(),
            min_dwell_s: rules.min_dwell_s,
            status_stale_after_s: rules.status_stale_after_s,
        }
    }
}

/// One setting on which the agent and the registry differ.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ThresholdDifference {
    /// The `[state]` / `thresholds` key, e.g. `running_above_w`.
    pub field: String,
    /// What the collector's registry expects.
    pub registry: f64,
    /// What the agent applies.
    pub agent: f64,
}

/// Every setting on which `applied` differs from `expected` (defaults of
/// both resolved the same way); empty when they agree.
pub fn differences(expected: &Thresholds, applied: &AppliedThresholds) -> Vec<ThresholdDifference> {
    let expected = AppliedThresholds::from(&expected.to_state_rules());
    let pairs = [
        ("on_above_w", expected.on_above_w, applied.on_above_w),
        (
            "running_above_w",
            expected.running_above_w,
            applied.running_above_w,
        ),
        (
            "running_exit_below_w",
            expected.running_exit_below_w,
            applied.running_exit_below_w,
        ),
        (
            "min_dwell_s",
            expected.min_dwell_s as f64,
            applied.min_dwell_s as f64,
        ),
        (
            "status_stale_after_s",
            expected.status_stale_after_s as f64,
            applied.status_stale_after_s as f64,
        ),
    ];
    pairs
        .into_iter()
        // Watts as written in two TOML files: equal to a milliwatt.
        .filter(|(_, registry, agent)| (registry - agent).abs() > 1e-3)
        .map(|(field, registry, agent)| ThresholdDifference {
            field: field.to_owned(),
            registry,
            agent,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn thresholds(on: f64, running: f64) -> Thresholds {
        Thresholds {
            on_above_w: on,
            running_above_w: running,
            running_exit_below_w: None,
            min_dwell_s: None,
            status_stale_after_s: None,
        }
    }

    #[test]
    fn defaults_resolved_on_both_sides_agree() {
        let agent = StateRules::with_thresholds(5.0, 800.0).effective(1000);
        assert_eq!(differences(&thresholds(5.0, 800.0), &(&agent).into()), []);
    }

    #[test]
    fn every_differing_setting_is_named_with_both_values() {
        let mut agent = StateRules::with_thresholds(5.0, 500.0);
        agent.min_dwell_s = 10;
        let found = differences(&thresholds(5.0, 800.0), &(&agent.effective(1000)).into());
        let fields: Vec<(&str, f64, f64)> = found
            .iter()
            .map(|d| (d.field.as_str(), d.registry, d.agent))
            .collect();
        assert_eq!(
            fields,
            [
                ("running_above_w", 800.0, 500.0),
                ("running_exit_below_w", 720.0, 450.0),
                ("min_dwell_s", 30.0, 10.0),
            ]
        );
    }
}
