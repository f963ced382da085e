//! Readings → state engine → outbox. The same path serves live polling
//! (`run`) and recorded samples (`replay`).

use jiff::Timestamp;
use labhours_shared::state::{EngineSettings, Output, Reading, StateEngine};

use crate::delivery::Notifier;
use crate::outbox::{Outbox, OutboxError};

/// Replay appends engine outputs in chunks of this many events.
const REPLAY_CHUNK: usize = 4096;
/// Events kept in memory while the outbox refuses appends (a full disk):
/// days of a live agent's output. Beyond it the oldest are given up.
const HELD_MAX: usize = 50_000;

#[derive(Debug)]
pub struct Pipeline {
    engine: StateEngine,
    outbox: Outbox,
    out: Vec<Output>,
    /// Events the outbox refused without writing anything (disk full),
    /// offered again, first, with the next append.
    held: Vec<(Timestamp, labhours_shared::wire::EventKind)>,
    /// Held events given up because there were more than [`HELD_MAX`].
    given_up: u64,
    /// Wakes delivery when events were appended.
    notifier: Option<Notifier>,
}

impl Pipeline {
    pub fn new(settings: EngineSettings, outbox: Outbox, started_at: Timestamp) -> Self {
        Self {
            engine: StateEngine::new(settings, started_at),
            outbox,
            out: Vec::new(),
            held: Vec::new(),
            given_up: 0,
            notifier: None,
        }
    }

    /// Wakes `notifier` after every append.
    pub fn with_notifier(mut self, notifier: Notifier) -> Self {
        self.notifier = Some(notifier);
        self
    }

    /// Feeds one reading; what the engine concludes is in the outbox on return.
    pub fn push(&mut self, reading: Reading) -> Result<usize, OutboxError> {
        self.engine.push(reading, &mut self.out);
        self.append()
    }

    /// Time has passed with no reading.
    pub fn advance(&mut self, now: Timestamp) -> Result<usize, OutboxError> {
        self.engine.advance(now, &mut self.out);
        self.append()
    }

    /// Feeds many readings as fast as possible, appending in chunks (replay).
    pub fn push_many(
        &mut self,
        readings: impl IntoIterator<Item = Reading>,
    ) -> Result<usize, OutboxError> {
        let mut appended = 0;
        for reading in readings {
            self.engine.push(reading, &mut self.out);
            if self.out.len() >= REPLAY_CHUNK {
                appended += self.append()?;
            }
        }
        Ok(appended + self.append()?)
    }

    /// The data ends at `at` (see `StateEngine::finish`); everything is flushed.
    pub fn finish(&mut self, at: Timestamp) -> Result<usize, OutboxError> {
        self.engine.finish(at, &mut self.out);
        let n = self.append()?;
        self.outbox.flush()?;
        Ok(n)
    }

    pub fn engine(&self) -> &StateEngine {
        &self.engine
    }

    /// Events waiting in memory for the outbox to accept them again.
    pub fn held(&self) -> usize {
        self.held.len()
    }

    /// Appends what the engine produced, after anything held. When the
    /// outbox refuses without writing (disk full), the events are held and
    /// offered again next time, so a full disk loses no measurement while the
    /// agent runs.
    fn append(&mut self) -> Result<usize, OutboxError> {
        if self.out.is_empty() && self.held.is_empty() {
            return Ok(0);
        }
        let mut events = std::mem::take(&mut self.held);
        events.extend(self.out.drain(..).map(Output::into_event));
        match self.outbox.append_at(events.clone()) {
            Ok(seqs) => {
                if let Some(notifier) = &self.notifier {
                    notifier.notify();
                }
                Ok(seqs.len())
            }
            Err(e) if e.nothing_written() => {
                if events.len() > HELD_MAX {
                    let excess = events.len() - HELD_MAX;
                    events.drain(..excess);
                    self.given_up += excess as u64;
                    tracing::warn!(
                        given_up = self.given_up,
                        "the outbox has refused events for long: the oldest held ones are given up"
                    );
                }
                self.held = events;
                Err(e)
            }
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use labhours_shared::state::{State, StateRules};
    use labhours_shared::wire::EventKind;

    use super::*;
    use crate::outbox::OutboxSettings;

    fn at(s: i64) -> Timestamp {
        Timestamp::from_second(1_795_000_020 + s).expect("in range")
    }

    #[test]
    fn live_and_replayed_readings_reach_the_outbox_the_same_way() {
        let readings: Vec<Reading> = (0..200)
            .map(|s| Reading::power(at(s), Some(if s < 100 { 50.0 } else { 500.0 })))
            .collect();
        let settings = EngineSettings::new(&StateRules::with_thresholds(10.0, 100.0), 1000);
        let mut kinds = Vec::new();
        for live in [true, false] {
            let dir = tempfile::tempdir().expect("temp dir");
            let settings_out = OutboxSettings {
                max_bytes: 1 << 20,
                summary_flush_ms: 1000,
                cache_bytes: 1 << 20,
                min_free_bytes: 0,
            };
            let (outbox, _) = Outbox::open(dir.path(), settings_out, at(0)).expect("open");
            let mut p = Pipeline::new(settings, outbox.clone(), at(0));
            if live {
                for r in readings.clone() {
                    p.push(r).expect("push");
                }
            } else {
                p.push_many(readings.clone()).expect("push");
            }
            p.finish(at(200)).expect("finish");
            let events = outbox.pending(0, usize::MAX, usize::MAX).expect("pending");
            kinds.push(
                events
                    .into_iter()
                    .map(|e| (e.at, e.kind))
                    .collect::<Vec<_>>(),
            );
        }
        assert_eq!(kinds[0], kinds[1]);
        let transitions: Vec<(State, State)> = kinds[0]
            .iter()
            .filter_map(|(_, k)| match k {
                EventKind::Transition { from, to, .. } => Some((*from, *to)),
                _ => None,
            })
            .collect();
        assert_eq!(
            transitions,
            [
                (State::Unknown, State::Standby),
                (State::Standby, State::Running),
                (State::Running, State::Unknown)
            ]
        );
    }
}
