//! The state engine: readings in, transitions and summaries out.
//!
//! Pure and deterministic: it never reads a clock. Every reading carries its
//! instant, and [`StateEngine::advance`] tells it that time has passed with no
//! reading (so a pending state can be confirmed, a status line can go stale,
//! and a silent meter can turn into `unknown`).
//!
//! How it works: at every instant the inputs give a *classification* (status
//! line while fresh, else power with hysteresis, else `unknown`). The
//! classification changes at readings and at two kinds of implied instants
//! (a status line going stale, a sample gap running out). A classification
//! other than the confirmed state becomes the state once it has held for the
//! dwell, and the transition is dated when it began. Readings that arrive
//! earlier than one already processed are taken as happening now.

use std::sync::Arc;

use jiff::Timestamp;

use super::State;
use super::rules::EngineSettings;
use super::summary::{Held, SummaryAccumulator, ms_to_ts};
use crate::wire::{EventKind, Summary, TransitionSource};

/// One input to the engine.
#[derive(Debug, Clone, PartialEq)]
pub enum Reading {
    /// A power read; `watts: None` is a failed read (never read as 0 W).
    Power {
        at: Timestamp,
        watts: Option<f64>,
        volts: Option<f64>,
        amps: Option<f64>,
    },
    /// A status line that matched a rule, with the state the rule names and
    /// the sample or method id the rule captured, if any.
    Status {
        at: Timestamp,
        state: State,
        sample: Option<Arc<str>>,
    },
}

impl Reading {
    /// A power read with watts only.
    pub fn power(at: Timestamp, watts: Option<f64>) -> Self {
        Reading::Power {
            at,
            watts,
            volts: None,
            amps: None,
        }
    }

    /// A status reading without a sample id.
    pub fn status(at: Timestamp, state: State) -> Self {
        Reading::Status {
            at,
            state,
            sample: None,
        }
    }

    pub fn at(&self) -> Timestamp {
        match self {
            Reading::Power { at, .. } | Reading::Status { at, .. } => *at,
        }
    }
}

/// A confirmed change of state; `at` is when the new classification began.
#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    pub at: Timestamp,
    pub from: State,
    pub to: State,
    pub source: TransitionSource,
    pub reason: String,
}

/// What the engine produces, in the order it learns it.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    Transition(Transition),
    /// Power statistics over `[start, summary.end)`.
    Summary {
        start: Timestamp,
        summary: Summary,
    },
}

impl Output {
    /// The event this output becomes on the wire, with its instant.
    pub fn into_event(self) -> (Timestamp, EventKind) {
        match self {
            Output::Transition(t) => (
                t.at,
                EventKind::Transition {
                    from: t.from,
                    to: t.to,
                    source: t.source,
                    reason: t.reason,
                },
            ),
            Output::Summary { start, summary } => (start, EventKind::Summary(summary)),
        }
    }
}

/// Why the classification is what it is (turned into a reason on confirmation).
#[derive(Debug, Clone, PartialEq)]
enum Cause {
    Start,
    Status(Option<Arc<str>>),
    Power(f64),
    FailedRead,
    SampleGap,
    NoReading,
    Stopped,
}

#[derive(Debug, Clone)]
struct Classification {
    state: State,
    since: i64,
    cause: Cause,
}

#[derive(Debug, Clone, Copy)]
struct LastSample {
    at: i64,
    /// `None` for a failed read.
    held: Option<Held>,
    /// The gap after it exceeded `max_sample_gap`: it no longer holds.
    expired: bool,
}

/// Turns readings into state transitions and interval summaries for one instrument.
#[derive(Debug, Clone)]
pub struct StateEngine {
    settings: EngineSettings,
    now: i64,
    confirmed: State,
    confirmed_since: i64,
    class: Classification,
    /// The last matching status line while it is fresh, with its sample id.
    status: Option<(i64, State, Option<Arc<str>>)>,
    sample: Option<LastSample>,
    summary: SummaryAccumulator,
}

impl StateEngine {
    /// An engine whose state is `unknown` from `started_at` until readings say otherwise.
    pub fn new(settings: EngineSettings, started_at: Timestamp) -> Self {
        let t = started_at.as_millisecond();
        Self {
            settings,
            now: t,
            confirmed: State::Unknown,
            confirmed_since: t,
            class: Classification {
                state: State::Unknown,
                since: t,
                cause: Cause::Start,
            },
            status: None,
            sample: None,
            summary: SummaryAccumulator::new(settings.summary_interval_ms),
        }
    }

    /// The confirmed state.
    pub fn state(&self) -> State {
        self.confirmed
    }

    /// When the confirmed state began.
    pub fn state_since(&self) -> Timestamp {
        ms_to_ts(self.confirmed_since)
    }

    /// Feeds one reading.
    pub fn push(&mut self, reading: Reading, out: &mut Vec<Output>) {
        let t = reading.at().as_millisecond().max(self.now);
        self.pass_implied_instants(t, out);
        self.confirm_if_held(t, out);
        match reading {
            Reading::Power {
                watts, volts, amps, ..
            } => {
                // NaN or infinite watts are as useless as a failed read.
                let held = watts.filter(|w| w.is_finite()).map(|watts| Held {
                    watts,
                    volts: volts.filter(|v| v.is_finite()),
                    amps: amps.filter(|a| a.is_finite()),
                });
                let mut emit = summary_sink(out);
                if let Some(prev) = self.sample.filter(|s| !s.expired)
                    && let Some(prev_held) = prev.held
                {
                    self.summary.add_held(prev_held, prev.at, t, &mut emit);
                }
                self.summary.count_read(t, held.is_some(), &mut emit);
                self.sample = Some(LastSample {
                    at: t,
                    held,
                    expired: false,
                });
            }
            Reading::Status { state, sample, .. } => self.status = Some((t, state, sample)),
        }
        self.reclassify(t);
        self.confirm_if_held(t, out);
        self.now = t;
    }

    /// Feeds readings in order; the same as pushing them one by one.
    pub fn push_all(&mut self, readings: impl IntoIterator<Item = Reading>, out: &mut Vec<Output>) {
        for reading in readings {
            self.push(reading, out);
        }
    }

    /// Tells the engine that `now` has come with no new reading.
    pub fn advance(&mut self, now: Timestamp, out: &mut Vec<Output>) {
        let t = now.as_millisecond().max(self.now);
        self.pass_implied_instants(t, out);
        self.confirm_if_held(t, out);
        // Intervals up to `t` are complete unless a held reading's end is still open.
        let horizon = match self.sample {
            Some(s) if !s.expired && s.held.is_some() => s.at,
            _ => t,
        };
        self.summary.roll_to(horizon, &mut summary_sink(out));
        self.now = t;
    }

    /// Ends the data at `at`: the last reading holds until then (one poll
    /// interval at most), the open interval is summarised, and the state
    /// becomes `unknown` at `at`, since nothing is known after it.
    pub fn finish(&mut self, at: Timestamp, out: &mut Vec<Output>) {
        self.advance(at, out);
        let t = self.now;
        if let Some(s) = self.sample.filter(|s| !s.expired) {
            if let Some(held) = s.held {
                let end = t.min(s.at + self.settings.poll_interval_ms);
                self.summary
                    .add_held(held, s.at, end, &mut summary_sink(out));
            }
            self.sample = Some(LastSample { expired: true, ..s });
        }
        self.summary.flush(&mut summary_sink(out));
        self.status = None;
        self.class = Classification {
            state: State::Unknown,
            since: t,
            cause: Cause::Stopped,
        };
        self.confirm(out);
    }

    /// Processes the instants between readings at which the classification
    /// changes by itself, in time order, up to and including `t`.
    fn pass_implied_instants(&mut self, t: i64, out: &mut Vec<Output>) {
        loop {
            let stale_at = self
                .status
                .as_ref()
                .map(|(at, _, _)| at + self.settings.status_stale_after_ms)
                .filter(|&p| p <= t);
            // A gap is only known to be too long once it exceeds the maximum;
            // the reading then holds for one poll interval.
            let expires_at = self
                .sample
                .filter(|s| !s.expired && t - s.at > self.settings.max_sample_gap_ms)
                .map(|s| s.at + self.settings.poll_interval_ms);
            let (p, is_stale) = match (stale_at, expires_at) {
                (None, None) => return,
                (Some(s), Some(e)) if e < s => (e, false),
                (Some(s), _) => (s, true),
                (None, Some(e)) => (e, false),
            };
            self.confirm_if_held(p, out);
            if is_stale {
                self.status = None;
            } else if let Some(s) = self.sample.as_mut() {
                s.expired = true;
                if let Some(held) = s.held {
                    let from = s.at;
                    self.summary.add_held(held, from, p, &mut summary_sink(out));
                }
            }
            // An expiry is learned late (once the gap exceeds the maximum):
            // if the classification changed since `p` (a status line went
            // stale meanwhile), the expiry takes effect from that change.
            let p = p.max(self.class.since);
            self.reclassify(p);
            self.confirm_if_held(p, out);
        }
    }

    fn reclassify(&mut self, t: i64) {
        let (state, cause) = self.classify();
        if state != self.class.state {
            self.class = Classification {
                state,
                since: t,
                cause,
            };
        }
    }

    fn classify(&self) -> (State, Cause) {
        if let Some((_, state, sample)) = &self.status {
            return (*state, Cause::Status(sample.clone()));
        }
        match self.sample {
            None => (State::Unknown, Cause::NoReading),
            // A failed read stays the reason even once its gap runs out.
            Some(LastSample { held: None, .. }) => (State::Unknown, Cause::FailedRead),
            Some(s) if s.expired => (State::Unknown, Cause::SampleGap),
            Some(LastSample {
                held: Some(held), ..
            }) => (self.classify_power(held.watts), Cause::Power(held.watts)),
        }
    }

    /// Thresholds with hysteresis judged against the confirmed state.
    fn classify_power(&self, watts: f64) -> State {
        self.settings
            .classify_power(watts, self.confirmed == State::Running)
    }

    fn confirm_if_held(&mut self, t: i64, out: &mut Vec<Output>) {
        if self.class.state != self.confirmed && t - self.class.since >= self.settings.min_dwell_ms
        {
            self.confirm(out);
        }
    }

    fn confirm(&mut self, out: &mut Vec<Output>) {
        let (to, since) = (self.class.state, self.class.since);
        if to == self.confirmed {
            return;
        }
        let (source, reason) = self.explain(to, &self.class.cause);
        out.push(Output::Transition(Transition {
            at: ms_to_ts(since),
            from: self.confirmed,
            to,
            source,
            reason,
        }));
        self.confirmed = to;
        self.confirmed_since = since;
    }

    fn explain(&self, to: State, cause: &Cause) -> (TransitionSource, String) {
        let s = &self.settings;
        match cause {
            Cause::Status(None) => (
                TransitionSource::Status,
                format!("status line reports {to}"),
            ),
            Cause::Status(Some(sample)) => (
                TransitionSource::Status,
                format!("status line reports {to} (sample {sample})"),
            ),
            &Cause::Power(w) => {
                let why = match to {
                    State::Running => format!("≥ running_above_w {} W", s.running_above_w),
                    State::Off => format!("< on_above_w {} W", s.on_above_w),
                    _ if self.confirmed == State::Running => {
                        format!("< running_exit_below_w {} W", s.running_exit_below_w)
                    }
                    _ if self.confirmed == State::Off => format!("≥ on_above_w {} W", s.on_above_w),
                    _ => format!(
                        "between on_above_w {} W and running_above_w {} W",
                        s.on_above_w, s.running_above_w
                    ),
                };
                (TransitionSource::Power, format!("power {w:.1} W {why}"))
            }
            Cause::FailedRead => (TransitionSource::NoData, "power reads failed".into()),
            Cause::SampleGap => (
                TransitionSource::NoData,
                format!(
                    "no power sample for more than {} s",
                    s.max_sample_gap_ms as f64 / 1000.0
                ),
            ),
            Cause::NoReading | Cause::Start => (TransitionSource::NoData, "no reading yet".into()),
            Cause::Stopped => (TransitionSource::NoData, "data ends (agent stopped)".into()),
        }
    }
}

/// A sink that turns summaries into outputs.
fn summary_sink(out: &mut Vec<Output>) -> impl FnMut(Timestamp, Summary) + '_ {
    |start, summary| out.push(Output::Summary { start, summary })
}
