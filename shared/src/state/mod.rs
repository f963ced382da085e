//! Instrument state: the five states, the rules that define them, and the
//! engine that turns readings into transitions and summaries.
//!
//! The rules are those of reconciliation.md §1 and §8, restated in
//! `docs/state-engine.md`.

mod engine;
mod rules;
mod summary;

pub use engine::{Output, Reading, StateEngine, Transition};
pub use rules::{EngineSettings, StateRules};

use serde::{Deserialize, Serialize};
use std::fmt;

/// The state of an instrument at one instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Power below `on_above_w`.
    Off,
    /// Powered but not working.
    Standby,
    /// Working.
    Running,
    /// The instrument itself reports a fault.
    Fault,
    /// No trustworthy reading.
    Unknown,
}

impl State {
    pub const ALL: [State; 5] = [
        State::Off,
        State::Standby,
        State::Running,
        State::Fault,
        State::Unknown,
    ];

    /// Its place in [`State::ALL`]: stable, so it can index arrays and be
    /// written as a number (the collector's `labhours_state` `code`).
    pub const fn index(self) -> usize {
        match self {
            State::Off => 0,
            State::Standby => 1,
            State::Running => 2,
            State::Fault => 3,
            State::Unknown => 4,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            State::Off => "off",
            State::Standby => "standby",
            State::Running => "running",
            State::Fault => "fault",
            State::Unknown => "unknown",
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod engine_tests;
