//! Time per state over many intervals: the timeline's pieces per state with
//! running sums, built once, so each [`TimelineIndex::time_in`] is a binary
//! search.

use labhours_shared::state::State;

use super::{Interval, Ms, Timeline};

/// Number of states (`State::ALL`).
const STATES: usize = State::ALL.len();

/// The pieces of one state, sorted, with the time in them before each.
#[derive(Debug, Clone, Default)]
struct StatePieces {
    pieces: Vec<Interval>,
    /// `before[i]`: total length of `pieces[..i]`.
    before: Vec<Ms>,
    /// Total length of `pieces`.
    total: Ms,
}

impl StatePieces {
    /// Time in these pieces before `x`.
    fn before(&self, x: Ms) -> Ms {
        let k = self.pieces.partition_point(|p| p.end <= x);
        let partial = self
            .pieces
            .get(k)
            .filter(|p| p.start < x)
            .map_or(0, |p| x - p.start);
        self.before.get(k).copied().unwrap_or(self.total) + partial
    }
}

/// A [`Timeline`]'s pieces per state with running sums. Answers
/// [`Timeline::time_in`] for many intervals in O(log n) each.
#[derive(Debug, Clone)]
pub struct TimelineIndex {
    by_state: [StatePieces; STATES],
    /// `[first transition, end of the last piece)`: what the pieces cover,
    /// without holes when the transitions are sorted.
    covered: Interval,
    /// The pieces as [`Timeline::pieces`] gives them when the transitions
    /// are not sorted (against the documented invariant): then `time_in`
    /// scans them, with the plain definition.
    unsorted: Option<Vec<(Interval, State)>>,
}

impl TimelineIndex {
    pub fn new(timeline: &Timeline) -> Self {
        let sorted = timeline.transitions.windows(2).all(|w| w[0].0 <= w[1].0);
        if !sorted {
            return Self {
                by_state: Default::default(),
                covered: Interval::new(0, 0),
                unsorted: Some(timeline.pieces()),
            };
        }
        let mut by_state: [StatePieces; STATES] = Default::default();
        let mut counts = [0; STATES];
        for &(_, state) in &timeline.transitions {
            counts[state.index()] += 1;
        }
        for (sp, n) in by_state.iter_mut().zip(counts) {
            sp.pieces.reserve_exact(n);
            sp.before.reserve_exact(n);
        }
        let mut covered: Option<Interval> = None;
        for (piece, state) in timeline.pieces_iter() {
            let c = covered.get_or_insert(piece);
            c.end = piece.end;
            let sp = &mut by_state[state.index()];
            sp.before.push(sp.total);
            sp.pieces.push(piece);
            sp.total += piece.len();
        }
        Self {
            by_state,
            covered: covered.unwrap_or(Interval::new(0, 0)),
            unsorted: None,
        }
    }

    /// The same as [`Timeline::time_in`]: time in `state` within `within`;
    /// for `State::Unknown` every part of `within` the timeline does not
    /// cover counts too.
    pub fn time_in(&self, state: State, within: Interval) -> Ms {
        if within.is_empty() {
            return 0;
        }
        if let Some(pieces) = &self.unsorted {
            return scan(pieces, state, within);
        }
        let before = |x| self.before(state, x);
        let t = before(within.end) - before(within.start);
        if state == State::Unknown {
            // Pieces are contiguous over `covered`: what is known there is
            // what is covered minus the `unknown` pieces.
            within.len() - (within.overlap(&self.covered) - t)
        } else {
            t
        }
    }

    fn before(&self, state: State, x: Ms) -> Ms {
        self.by_state[state.index()].before(x)
    }
}

/// The plain definition, for unsorted transitions.
fn scan(pieces: &[(Interval, State)], state: State, within: Interval) -> Ms {
    if state == State::Unknown {
        let known: Ms = pieces
            .iter()
            .filter(|(_, s)| *s != State::Unknown)
            .map(|(p, _)| p.overlap(&within))
            .sum();
        within.len() - known
    } else {
        pieces
            .iter()
            .filter(|(_, s)| *s == state)
            .map(|(p, _)| p.overlap(&within))
            .sum()
    }
}
