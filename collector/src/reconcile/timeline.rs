//! Time per state over many intervals: the timeline's pieces with running
//! sums, built once, so each [`TimelineIndex::time_in`] is a binary search.

use labhours_shared::state::State;

use super::{Interval, Ms, Timeline};

/// Number of states (`State::ALL`).
const STATES: usize = State::ALL.len();

fn slot(state: State) -> usize {
    match state {
        State::Off => 0,
        State::Standby => 1,
        State::Running => 2,
        State::Fault => 3,
        State::Unknown => 4,
    }
}

/// A [`Timeline`]'s pieces with the time in each state before each piece.
/// Answers [`Timeline::time_in`] for many intervals in O(log n) each.
#[derive(Debug, Clone)]
pub struct TimelineIndex {
    pieces: Vec<(Interval, State)>,
    /// `before[i][slot(s)]`: time in `s` in `pieces[..i]`.
    before: Vec<[Ms; STATES]>,
    /// Pieces sorted and disjoint (transitions sorted, as documented);
    /// otherwise `time_in` falls back to a scan, with the same result.
    sorted: bool,
}

impl TimelineIndex {
    pub fn new(timeline: &Timeline) -> Self {
        let pieces = timeline.pieces();
        let sorted = pieces.windows(2).all(|w| w[0].0.end <= w[1].0.start);
        let mut before = Vec::with_capacity(pieces.len() + 1);
        let mut acc = [0; STATES];
        before.push(acc);
        for (p, s) in &pieces {
            acc[slot(*s)] += p.len();
            before.push(acc);
        }
        Self {
            pieces,
            before,
            sorted,
        }
    }

    /// The same as [`Timeline::time_in`]: time in `state` within `within`;
    /// for `State::Unknown` every part of `within` the timeline does not
    /// cover counts too.
    pub fn time_in(&self, state: State, within: Interval) -> Ms {
        if within.is_empty() {
            return 0;
        }
        if !self.sorted {
            return self.scan(state, within);
        }
        if state == State::Unknown {
            let known = |x| self.known_before(x);
            within.len() - (known(within.end) - known(within.start))
        } else {
            let k = slot(state);
            self.before_by(within.end, |s| slot(s) == k, |a| a[k])
                - self.before_by(within.start, |s| slot(s) == k, |a| a[k])
        }
    }

    /// Time in a known state before `x`.
    fn known_before(&self, x: Ms) -> Ms {
        let u = slot(State::Unknown);
        self.before_by(x, |s| s != State::Unknown, |a| a.iter().sum::<Ms>() - a[u])
    }

    /// Time before `x` in the states `pick` selects (`sum` gives the same
    /// from a running-sum row).
    fn before_by(
        &self,
        x: Ms,
        pick: impl Fn(State) -> bool,
        sum: impl Fn(&[Ms; STATES]) -> Ms,
    ) -> Ms {
        let k = self.pieces.partition_point(|(p, _)| p.end <= x);
        let mut t = sum(&self.before[k]);
        if let Some(&(p, s)) = self.pieces.get(k)
            && p.start < x
            && pick(s)
        {
            t += x - p.start;
        }
        t
    }

    /// The plain definition, for unsorted transitions.
    fn scan(&self, state: State, within: Interval) -> Ms {
        if state == State::Unknown {
            let known: Ms = self
                .pieces
                .iter()
                .filter(|(_, s)| *s != State::Unknown)
                .map(|(p, _)| p.overlap(&within))
                .sum();
            within.len() - known
        } else {
            self.pieces
                .iter()
                .filter(|(_, s)| *s == state)
                .map(|(p, _)| p.overlap(&within))
                .sum()
        }
    }
}
