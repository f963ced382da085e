//! `labhours-agent calibrate`: `[state]` thresholds from the instrument itself.
//!
//! A stretch of power (read from the configured meters, or loaded from a
//! replay CSV) is split into the levels it sits at ([`levels`]), each level
//! is given a state and thresholds are put between them ([`suggest`]), and
//! the agent's own state engine is run over the recording with the
//! suggestion and with the config's current `[state]` ([`evaluate`]), so
//! the evidence is what the agent would really have done. [`report`] prints
//! it; nothing here writes the config.
//!
//! Everything but [`source`] is pure: samples in, a [`Calibration`] out.

pub mod command;
pub mod evaluate;
pub mod levels;
pub mod report;
pub mod source;
pub mod suggest;

#[cfg(test)]
mod tests;

use labhours_shared::state::{EngineSettings, StateRules};
use serde::Serialize;

pub use evaluate::Outcome;
pub use suggest::{Role, Unsuited};

/// Fewer usable samples than this say nothing about levels.
pub const MIN_SAMPLES: usize = 30;

/// One power reading: `watts: None` is a failed read, never 0 W.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    pub at_ms: i64,
    pub watts: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CalibrateError {
    #[error(
        "only {valid} usable samples ({failed} failed reads): calibration needs at least {MIN_SAMPLES}; record for longer"
    )]
    TooFewSamples { valid: usize, failed: usize },
    #[error("{0}")]
    Unsuited(#[from] Unsuited),
}

/// A level as reported: watts, how long it held, and the state it stands for.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LevelReport {
    pub mean_w: f64,
    /// 0.5th and 99.5th percentiles of the time at this level.
    pub low_w: f64,
    pub high_w: f64,
    pub total_s: f64,
    pub longest_s: f64,
    pub share: f64,
    pub role: Role,
}

/// The suggestion and its evidence.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Calibration {
    pub samples: usize,
    pub failed_reads: usize,
    pub span_s: f64,
    pub levels: Vec<LevelReport>,
    /// The config's `[state]` with the three thresholds replaced.
    pub state: StateRules,
    pub suggested: Outcome,
    pub current: Outcome,
    /// The config's `[state]` as it is.
    #[serde(skip)]
    pub current_rules: StateRules,
    pub notes: Vec<String>,
}

/// Levels, thresholds and evidence for `samples` (in time order), keeping
/// every `[state]` key but the thresholds from `current`.
pub fn calibrate(
    samples: &[Sample],
    current: &StateRules,
    poll_interval_ms: u64,
) -> Result<Calibration, CalibrateError> {
    let valid = samples.iter().filter(|s| s.watts.is_some()).count();
    let failed = samples.len() - valid;
    if valid < MIN_SAMPLES {
        return Err(CalibrateError::TooFewSamples { valid, failed });
    }
    let settings = EngineSettings::new(current, poll_interval_ms);
    let found = levels::find(
        samples,
        settings.poll_interval_ms,
        settings.max_sample_gap_ms,
    );
    let suggestion = suggest::suggest(&found.levels)?;
    let state = StateRules {
        on_above_w: suggestion.on_above_w,
        running_above_w: suggestion.running_above_w,
        running_exit_below_w: Some(suggestion.running_exit_below_w),
        ..current.clone()
    };
    let levels = found
        .levels
        .iter()
        .zip(&suggestion.roles)
        .map(|(l, role)| LevelReport {
            mean_w: l.mean_w,
            low_w: levels::watts_of(l.p005),
            high_w: levels::watts_of(l.p995),
            total_s: l.total_ms as f64 / 1000.0,
            longest_s: l.longest_ms as f64 / 1000.0,
            share: l.share,
            role: *role,
        })
        .collect();
    let span_ms = match (samples.first(), samples.last()) {
        (Some(a), Some(b)) => b.at_ms - a.at_ms + settings.poll_interval_ms,
        _ => 0,
    };
    Ok(Calibration {
        samples: samples.len(),
        failed_reads: failed,
        span_s: span_ms as f64 / 1000.0,
        levels,
        suggested: evaluate::evaluate(samples, &state, poll_interval_ms),
        current: evaluate::evaluate(samples, current, poll_interval_ms),
        state,
        current_rules: current.clone(),
        notes: suggestion.notes,
    })
}
