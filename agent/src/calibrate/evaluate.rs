//! What a `[state]` would have made of a recording: the agent's own state
//! engine run over it, so the evidence is what the agent will really do
//! (dwell, hysteresis against the confirmed state, failed reads included).

use jiff::Timestamp;
use labhours_shared::state::{EngineSettings, Output, Reading, State, StateEngine, StateRules};
use serde::Serialize;

use super::Sample;

/// The states over a recording.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Outcome {
    /// Changes of state, not counting the start and the end of the recording.
    pub transitions: usize,
    /// Share of the recorded time in each state, in the order of
    /// `State::ALL` (in JSON: by state name).
    #[serde(serialize_with = "by_state")]
    pub shares: [f64; 5],
    /// Brief changes of the raw classification that the dwell absorbed, and
    /// the longest of them in ms.
    pub absorbed: usize,
    pub longest_absorbed_ms: i64,
    /// `(from, state)` in ms, in time order; the last holds until `end_ms`.
    #[serde(skip)]
    pub timeline: Vec<(i64, State)>,
    #[serde(skip)]
    pub end_ms: i64,
}

impl Outcome {
    pub fn share(&self, state: State) -> f64 {
        self.shares[state.index()]
    }

    /// The state at `t_ms` (`unknown` before the first).
    pub fn state_at(&self, t_ms: i64) -> State {
        let i = self.timeline.partition_point(|(at, _)| *at <= t_ms);
        i.checked_sub(1)
            .map_or(State::Unknown, |i| self.timeline[i].1)
    }
}

/// Runs the engine with `rules` over `samples` (in time order).
pub fn evaluate(samples: &[Sample], rules: &StateRules, poll_ms: u64) -> Outcome {
    let (Some(first), Some(last)) = (samples.first(), samples.last()) else {
        return Outcome {
            transitions: 0,
            shares: [0.0; 5],
            absorbed: 0,
            longest_absorbed_ms: 0,
            timeline: Vec::new(),
            end_ms: 0,
        };
    };
    let settings = EngineSettings::new(rules, poll_ms);
    let ts = |ms: i64| Timestamp::from_millisecond(ms).unwrap_or(Timestamp::UNIX_EPOCH);
    let (start, end) = (first.at_ms, last.at_ms + settings.poll_interval_ms);
    let mut engine = StateEngine::new(settings, ts(start));
    let mut out = Vec::new();
    let mut timeline = Vec::new();
    for s in samples {
        engine.push(Reading::power(ts(s.at_ms), s.watts), &mut out);
        collect(&mut out, &mut timeline);
    }
    engine.finish(ts(end), &mut out);
    collect(&mut out, &mut timeline);

    let mut time = [0i64; 5];
    let mut transitions = 0;
    for (i, &(at, state)) in timeline.iter().enumerate() {
        let until = timeline.get(i + 1).map_or(end, |n| n.0).min(end);
        time[state.index()] += (until - at).max(0);
        let edge = (i == 0 && at == start) || (state == State::Unknown && at >= end);
        if i > 0 && !edge {
            transitions += 1;
        }
    }
    let span = (end - start).max(1) as f64;
    let (absorbed, longest_absorbed_ms) = brief_changes(samples, &settings);
    Outcome {
        transitions,
        shares: time.map(|t| t as f64 / span),
        absorbed,
        longest_absorbed_ms,
        timeline,
        end_ms: end,
    }
}

fn by_state<S: serde::Serializer>(shares: &[f64; 5], s: S) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeMap as _;
    let mut map = s.serialize_map(Some(shares.len()))?;
    for state in State::ALL {
        map.serialize_entry(state.as_str(), &shares[state.index()])?;
    }
    map.end()
}

fn collect(out: &mut Vec<Output>, timeline: &mut Vec<(i64, State)>) {
    for o in out.drain(..) {
        if let Output::Transition(t) = o {
            timeline.push((t.at.as_millisecond(), t.to));
        }
    }
}

/// Stretches of the classification (thresholds and hysteresis, no dwell)
/// shorter than the dwell: how many, and the longest.
fn brief_changes(samples: &[Sample], s: &EngineSettings) -> (usize, i64) {
    let (mut count, mut longest) = (0, 0);
    let mut current: Option<(State, i64)> = None;
    for sample in samples {
        let Some(w) = sample.watts else { continue };
        let state = s.classify_power(w, current.is_some_and(|(c, _)| c == State::Running));
        match current {
            Some((c, since)) if c != state => {
                let held = sample.at_ms - since;
                if held < s.min_dwell_ms {
                    count += 1;
                    longest = longest.max(held);
                }
                current = Some((state, sample.at_ms));
            }
            None => current = Some((state, sample.at_ms)),
            _ => {}
        }
    }
    (count, longest)
}
