//! Gap tracking: which of an agent's seqs are closed, and how far without a hole.
//!
//! Pure logic, no I/O. A seq is *closed* once its event is stored or a stored
//! `dropped` event names it. [`SeqTracker::committed_through`] is the highest
//! `N` such that every seq in `floor + 1 ..= N` is closed, where the floor
//! starts at the first envelope's `acked_through` (a collector that has never
//! seen an agent does not wait for seqs the agent deleted long ago) and is
//! raised when an agent reports an `acked_through` beyond it (see
//! [`SeqTracker::raise_floor`]).
//!
//! Closed seqs above the committed prefix are kept as disjoint, non-adjacent
//! inclusive ranges, so memory grows with the number of holes, not with the
//! number of events.

use std::collections::BTreeMap;

/// Closed seqs of one agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeqTracker {
    /// Every seq up to and including this one is closed (or below the floor).
    committed_through: u64,
    /// Closed ranges above `committed_through + 1`: first → last, disjoint,
    /// never adjacent to each other nor to the committed prefix.
    ahead: BTreeMap<u64, u64>,
}

impl SeqTracker {
    /// An agent seen for the first time, whose envelope says every seq up to
    /// `acked_through` was already committed somewhere and deleted.
    pub fn first_contact(acked_through: u64) -> Self {
        Self {
            committed_through: acked_through,
            ahead: BTreeMap::new(),
        }
    }

    /// The tracker as stored: the committed prefix and the closed ranges above it.
    pub fn restore(committed_through: u64, closed: impl IntoIterator<Item = (u64, u64)>) -> Self {
        let mut tracker = Self::first_contact(committed_through);
        for (first, last) in closed {
            tracker.close(first, last);
        }
        tracker
    }

    /// Every seq up to here is stored or closed by a `dropped` event.
    pub fn committed_through(&self) -> u64 {
        self.committed_through
    }

    /// The highest closed seq (stored, or named by a stored `dropped` notice).
    pub fn highest_closed(&self) -> u64 {
        self.ahead
            .values()
            .next_back()
            .copied()
            .unwrap_or(0)
            .max(self.committed_through)
    }

    /// Closed ranges above the committed prefix (the holes lie between them).
    pub fn ahead(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.ahead.iter().map(|(&first, &last)| (first, last))
    }

    /// Marks one seq closed (its event is stored).
    pub fn close_seq(&mut self, seq: u64) {
        self.close(seq, seq);
    }

    /// Marks `first..=last` closed. Closing a seq twice, or one at or below
    /// the committed prefix, changes nothing. An empty range (first > last)
    /// is ignored.
    pub fn close(&mut self, first: u64, last: u64) {
        if first > last || last <= self.committed_through {
            return;
        }
        let mut first = first.max(self.committed_through + 1);
        let mut last = last;
        // Absorb every range that overlaps or touches [first, last].
        let touching: Vec<(u64, u64)> = self
            .ahead
            .range(..=last.saturating_add(1))
            .rev()
            .take_while(|&(_, &l)| l.saturating_add(1) >= first)
            .map(|(&f, &l)| (f, l))
            .collect();
        for (f, l) in touching {
            self.ahead.remove(&f);
            first = first.min(f);
            last = last.max(l);
        }
        if first == self.committed_through + 1 {
            self.committed_through = last;
        } else {
            self.ahead.insert(first, last);
        }
    }

    /// The agent says every seq up to `acked_through` was committed by a
    /// collector and deleted from its outbox: seqs below it will never come
    /// (e.g. this collector's database was reset, or another collector
    /// acknowledged them). Raises the floor there; returns the hole that was
    /// given up on, `Some((first, last))`, when the floor actually moved past
    /// seqs this collector never closed.
    pub fn raise_floor(&mut self, acked_through: u64) -> Option<(u64, u64)> {
        if acked_through <= self.committed_through {
            return None;
        }
        let skipped_first = self.committed_through + 1;
        // Closed ranges now at or below the new floor no longer matter; one
        // that straddles it is the start of the new prefix.
        let mut new_through = acked_through;
        let below: Vec<(u64, u64)> = self
            .ahead
            .range(..=acked_through.saturating_add(1))
            .map(|(&f, &l)| (f, l))
            .collect();
        for (f, l) in below {
            self.ahead.remove(&f);
            new_through = new_through.max(l);
        }
        self.committed_through = new_through;
        // The next range may now touch the prefix.
        while let Some((&f, &l)) = self.ahead.iter().next() {
            if Some(f) != self.committed_through.checked_add(1) {
                break;
            }
            self.ahead.remove(&f);
            self.committed_through = l;
        }
        Some((skipped_first, acked_through))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn closed(tracker: &SeqTracker) -> Vec<(u64, u64)> {
        tracker.ahead().collect()
    }

    #[test]
    fn in_order_seqs_advance_committed_through_one_by_one() {
        let mut t = SeqTracker::first_contact(0);
        for seq in 1..=5 {
            t.close_seq(seq);
            assert_eq!(t.committed_through(), seq);
        }
        assert!(closed(&t).is_empty());
    }

    #[test]
    fn out_of_order_seqs_wait_for_the_gap_to_close() {
        let mut t = SeqTracker::first_contact(0);
        for seq in 5..=8 {
            t.close_seq(seq);
        }
        assert_eq!(t.committed_through(), 0);
        assert_eq!(closed(&t), vec![(5, 8)]);
        for seq in [2, 4, 1] {
            t.close_seq(seq);
        }
        assert_eq!(t.committed_through(), 2);
        assert_eq!(closed(&t), vec![(4, 8)]);
        t.close_seq(3);
        assert_eq!(t.committed_through(), 8);
        assert!(closed(&t).is_empty());
    }

    #[test]
    fn duplicates_change_nothing() {
        let mut t = SeqTracker::first_contact(0);
        t.close_seq(1);
        t.close_seq(3);
        let before = t.clone();
        t.close_seq(1);
        t.close_seq(3);
        t.close(3, 3);
        assert_eq!(t, before);
        assert_eq!(t.committed_through(), 1);
    }

    #[test]
    fn a_dropped_range_closes_the_gap_it_names() {
        let mut t = SeqTracker::first_contact(0);
        t.close_seq(1);
        t.close_seq(6);
        t.close_seq(7);
        t.close(2, 5);
        assert_eq!(t.committed_through(), 7);
        assert!(closed(&t).is_empty());
    }

    #[test]
    fn a_dropped_range_between_two_closed_ranges_merges_them() {
        let mut t = SeqTracker::first_contact(0);
        t.close(3, 4);
        t.close(9, 10);
        t.close(5, 8);
        assert_eq!(closed(&t), vec![(3, 10)]);
        t.close(1, 2);
        assert_eq!(t.committed_through(), 10);
    }

    #[test]
    fn a_dropped_notice_that_names_seqs_already_stored_is_harmless() {
        let mut t = SeqTracker::first_contact(0);
        for seq in 1..=4 {
            t.close_seq(seq);
        }
        t.close_seq(8);
        t.close(3, 6);
        assert_eq!(t.committed_through(), 6);
        assert_eq!(closed(&t), vec![(8, 8)]);
        t.close(2, 9);
        assert_eq!(t.committed_through(), 9);
        assert!(closed(&t).is_empty());
    }

    #[test]
    fn first_contact_starts_counting_after_acked_through() {
        let mut t = SeqTracker::first_contact(41);
        assert_eq!(t.committed_through(), 41);
        t.close_seq(43);
        assert_eq!(t.committed_through(), 41);
        t.close_seq(42);
        assert_eq!(t.committed_through(), 43);
        // Seqs the agent deleted long ago change nothing if they come anyway.
        t.close_seq(7);
        assert_eq!(t.committed_through(), 43);
    }

    #[test]
    fn raising_the_floor_skips_the_hole_and_absorbs_what_follows() {
        let mut t = SeqTracker::first_contact(0);
        t.close_seq(1);
        t.close(5, 6);
        t.close(8, 9);
        t.close(12, 12);
        assert_eq!(t.raise_floor(7), Some((2, 7)));
        assert_eq!(t.committed_through(), 9);
        assert_eq!(closed(&t), vec![(12, 12)]);
    }

    #[test]
    fn raising_the_floor_below_committed_through_changes_nothing() {
        let mut t = SeqTracker::first_contact(0);
        t.close(1, 5);
        t.close_seq(9);
        let before = t.clone();
        assert_eq!(t.raise_floor(3), None);
        assert_eq!(t.raise_floor(5), None);
        assert_eq!(t, before);
    }

    #[test]
    fn a_range_that_straddles_the_raised_floor_extends_it() {
        let mut t = SeqTracker::first_contact(0);
        t.close(4, 10);
        assert_eq!(t.raise_floor(6), Some((1, 6)));
        assert_eq!(t.committed_through(), 10);
    }

    #[test]
    fn restore_rebuilds_the_same_tracker() {
        let mut t = SeqTracker::first_contact(3);
        t.close(6, 7);
        t.close_seq(10);
        let restored = SeqTracker::restore(t.committed_through(), t.ahead());
        assert_eq!(restored, t);
    }

    #[test]
    fn seqs_near_the_top_of_the_range_do_not_overflow() {
        let mut t = SeqTracker::first_contact(u64::MAX - 2);
        t.close_seq(u64::MAX);
        t.close_seq(u64::MAX - 1);
        assert_eq!(t.committed_through(), u64::MAX);
        t.close_seq(u64::MAX);
        assert_eq!(t.raise_floor(u64::MAX), None);
    }

    /// A reference model: the set of closed seqs, scanned from the floor.
    #[test]
    fn random_closings_match_a_simple_set_model() {
        // A small deterministic generator keeps this test free of extra crates.
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = move |bound: u64| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state % bound
        };
        for _ in 0..200 {
            let floor = next(5);
            let mut t = SeqTracker::first_contact(floor);
            let mut model = std::collections::BTreeSet::new();
            for _ in 0..40 {
                let first = 1 + next(60);
                let last = if next(4) == 0 { first + next(6) } else { first };
                t.close(first, last);
                model.extend(first..=last);
                let mut expect = floor;
                while model.contains(&(expect + 1)) {
                    expect += 1;
                }
                assert_eq!(t.committed_through(), expect);
                let ahead: std::collections::BTreeSet<u64> =
                    t.ahead().flat_map(|(f, l)| f..=l).collect();
                let model_ahead: std::collections::BTreeSet<u64> =
                    model.iter().copied().filter(|&s| s > expect).collect();
                assert_eq!(ahead, model_ahead);
            }
        }
    }
}
