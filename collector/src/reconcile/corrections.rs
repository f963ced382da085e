//! §7 corrections as reconciliation sees them: an admin assigns unbooked
//! usage in an interval. Evidence and uncorrected figures never change; the
//! corrected figures move assigned unbooked usage out of `unassigned`
//! (`docs/reconciliation.md`, "Corrections").

use std::collections::BinaryHeap;

use super::{Interval, Ms, UsageType};

/// An admin's correction as reconciliation sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Assignment {
    pub interval: Interval,
    /// The usage type the usage now counts as (explicit, or the assigned
    /// booking's), None = stays `unassigned`.
    pub usage_type: Option<UsageType>,
    /// Whether it assigns usage at all (user, group, usage type or booking
    /// given); a note-only correction changes no figure.
    pub assigns: bool,
}

/// Where assigning corrections apply: sorted, disjoint pieces, each with the
/// usage type of the latest assigning correction (latest in the slice)
/// covering it. Note-only corrections and empty intervals take no part.
/// O(n log n).
pub fn assigned_pieces(corrections: &[Assignment]) -> Vec<(Interval, Option<UsageType>)> {
    let mut starts: Vec<(Ms, usize)> = corrections
        .iter()
        .enumerate()
        .filter(|(_, a)| a.assigns && !a.interval.is_empty())
        .map(|(i, a)| (a.interval.start, i))
        .collect();
    starts.sort_unstable();
    let mut points: Vec<Ms> = starts
        .iter()
        .flat_map(|&(_, i)| [corrections[i].interval.start, corrections[i].interval.end])
        .collect();
    points.sort_unstable();
    points.dedup();
    let mut out: Vec<(Interval, Option<UsageType>)> = Vec::new();
    // Begun corrections by position, latest on top; ended ones leave lazily.
    let mut active = BinaryHeap::new();
    let mut next = 0;
    for w in points.windows(2) {
        let piece = Interval::new(w[0], w[1]);
        while let Some(&(_, i)) = starts.get(next).filter(|(at, _)| *at <= piece.start) {
            active.push(i);
            next += 1;
        }
        while active
            .peek()
            .is_some_and(|&i| corrections[i].interval.end <= piece.start)
        {
            active.pop();
        }
        let Some(&top) = active.peek() else {
            continue;
        };
        let ty = corrections[top].usage_type;
        match out.last_mut() {
            Some((last, last_ty)) if *last_ty == ty && last.end == piece.start => {
                last.end = piece.end;
            }
            _ => out.push((piece, ty)),
        }
    }
    out
}
