//! §7 corrections as reconciliation sees them: an admin assigns unbooked
//! usage in an interval, or moves usage §4 attributed to one booking to
//! another ([`Move`]). Evidence and uncorrected figures never change; the
//! corrected figures move assigned unbooked usage out of `unassigned`, and
//! moved usage from one booking (and its usage type) to the other
//! (`docs/reconciliation.md`, "Corrections").

use std::collections::BinaryHeap;

use super::{Interval, Ms, Segment, UsageType};

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

/// A move correction: usage attributed to booking `from` in `interval`
/// counts as booking `to`'s in the corrected figures. Also what
/// [`Attribution::apply`] reports: the pieces a move actually moved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Move {
    pub interval: Interval,
    pub from: String,
    pub to: String,
}

/// Where a move's interval is not attributed to its source booking: the
/// first such stretch, and what it is instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uncovered {
    pub interval: Interval,
    pub instead: Instead,
}

/// What holds a stretch a move cannot take.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Instead {
    /// No usage (no kept session) there.
    NoUsage,
    /// Usage no booking took: assign it instead of moving it.
    Unbooked,
    /// Usage attributed to this other booking.
    Booking(String),
}

/// The owner of every piece of usage, as corrected by the moves applied so
/// far: sorted, disjoint pieces.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Attribution {
    pieces: Vec<(Interval, Option<String>)>,
}

impl Attribution {
    /// The §4 attribution itself (`segments` sorted by start and disjoint,
    /// as [`super::attribute`] gives them).
    pub fn new(segments: &[Segment]) -> Self {
        Self {
            pieces: segments
                .iter()
                .filter(|g| !g.interval.is_empty())
                .map(|g| (g.interval, g.booking_id.clone()))
                .collect(),
        }
    }

    /// The pieces overlapping `iv`, as an index range.
    fn around(&self, iv: Interval) -> std::ops::Range<usize> {
        let lo = self.pieces.partition_point(|(p, _)| p.end <= iv.start);
        let hi = lo
            + self.pieces[lo..]
                .iter()
                .take_while(|(p, _)| p.start < iv.end)
                .count();
        lo..hi
    }

    /// Ok when every instant of `m.interval` is usage attributed to
    /// `m.from`; otherwise the first stretch that is not.
    pub fn check(&self, m: &Move) -> Result<(), Uncovered> {
        let mut at = m.interval.start;
        for (piece, owner) in &self.pieces[self.around(m.interval)] {
            if piece.start > at {
                return Err(Uncovered {
                    interval: Interval::new(at, piece.start.min(m.interval.end)),
                    instead: Instead::NoUsage,
                });
            }
            if owner.as_deref() != Some(m.from.as_str()) {
                return Err(Uncovered {
                    interval: Interval::new(at, piece.end.min(m.interval.end)),
                    instead: owner.clone().map_or(Instead::Unbooked, Instead::Booking),
                });
            }
            at = piece.end;
        }
        if at < m.interval.end {
            return Err(Uncovered {
                interval: Interval::new(at, m.interval.end),
                instead: Instead::NoUsage,
            });
        }
        Ok(())
    }

    /// Gives `m.to` whatever of `m.interval` is attributed to `m.from` now
    /// (evidence may have changed since the move was made: the part still
    /// attributed moves); returns the pieces moved.
    pub fn apply(&mut self, m: &Move) -> Vec<Move> {
        let range = self.around(m.interval);
        if m.from == m.to || range.is_empty() {
            return Vec::new();
        }
        let mut moved = Vec::new();
        let mut replaced = Vec::with_capacity(range.len() + 2);
        for (piece, owner) in &self.pieces[range.clone()] {
            let inside = piece.intersect(&m.interval);
            match inside {
                Some(part) if owner.as_deref() == Some(m.from.as_str()) => {
                    let before = Interval::new(piece.start, part.start);
                    let after = Interval::new(part.end, piece.end);
                    if !before.is_empty() {
                        replaced.push((before, owner.clone()));
                    }
                    replaced.push((part, Some(m.to.clone())));
                    if !after.is_empty() {
                        replaced.push((after, owner.clone()));
                    }
                    moved.push(Move {
                        interval: part,
                        from: m.from.clone(),
                        to: m.to.clone(),
                    });
                }
                _ => replaced.push((*piece, owner.clone())),
            }
        }
        self.pieces.splice(range, replaced);
        moved
    }
}

/// Applies `moves` in the order they were made (a later move acts on the
/// attribution the earlier ones left) and returns the pieces moved.
pub fn apply_moves(segments: &[Segment], moves: &[Move]) -> Vec<Move> {
    if moves.is_empty() {
        return Vec::new();
    }
    let mut attribution = Attribution::new(segments);
    moves.iter().flat_map(|m| attribution.apply(m)).collect()
}

/// Net milliseconds each booking gained (+) or lost (−) through `moved`.
pub fn moved_ms_by_booking(moved: &[Move]) -> std::collections::HashMap<&str, Ms> {
    let mut out = std::collections::HashMap::new();
    for m in moved {
        let ms = m.interval.len();
        *out.entry(m.from.as_str()).or_insert(0) -= ms;
        *out.entry(m.to.as_str()).or_insert(0) += ms;
    }
    out
}

#[cfg(test)]
mod move_tests {
    use super::*;

    fn seg(session: &str, start: Ms, end: Ms, owner: Option<&str>) -> Segment {
        Segment {
            session_id: session.into(),
            interval: Interval::new(start, end),
            booking_id: owner.map(str::to_owned),
        }
    }

    fn mv(start: Ms, end: Ms, from: &str, to: &str) -> Move {
        Move {
            interval: Interval::new(start, end),
            from: from.into(),
            to: to.into(),
        }
    }

    /// Session s1 [0, 100): unbooked [0, 10), a [10, 60), b [60, 100);
    /// session s2 [120, 150): a.
    fn segments() -> Vec<Segment> {
        vec![
            seg("s1", 0, 10, None),
            seg("s1", 10, 60, Some("a")),
            seg("s1", 60, 100, Some("b")),
            seg("s2", 120, 150, Some("a")),
        ]
    }

    #[test]
    fn a_move_takes_only_the_source_bookings_usage_in_its_interval() {
        // [50, 130) covers a's [50, 60), b's [60, 100), a gap and a's [120, 130).
        let moved = apply_moves(&segments(), &[mv(50, 130, "a", "c")]);
        assert_eq!(moved, vec![mv(50, 60, "a", "c"), mv(120, 130, "a", "c")]);
        let net = moved_ms_by_booking(&moved);
        assert_eq!((net["a"], net["c"], net.get("b")), (-20, 20, None));
    }

    #[test]
    fn later_moves_act_on_what_earlier_ones_left() {
        let moves = [
            mv(10, 60, "a", "b"),
            mv(20, 30, "b", "c"),
            mv(10, 60, "a", "c"),
        ];
        let moved = apply_moves(&segments(), &moves);
        // The third finds nothing of a left in [10, 60).
        assert_eq!(moved, vec![mv(10, 60, "a", "b"), mv(20, 30, "b", "c")]);
        let net = moved_ms_by_booking(&moved);
        assert_eq!((net["a"], net["b"], net["c"]), (-50, 40, 10));
        assert!(apply_moves(&segments(), &[mv(10, 60, "a", "a")]).is_empty());
        assert!(apply_moves(&segments(), &[]).is_empty());
    }

    #[test]
    fn checking_a_move_names_the_first_stretch_it_cannot_take() {
        let mut att = Attribution::new(&segments());
        assert_eq!(att.check(&mv(10, 60, "a", "b")), Ok(()));
        assert_eq!(att.check(&mv(20, 30, "a", "b")), Ok(()));
        let err = |start, end, instead| {
            Err(Uncovered {
                interval: Interval::new(start, end),
                instead,
            })
        };
        assert_eq!(
            att.check(&mv(50, 70, "a", "c")),
            err(60, 70, Instead::Booking("b".into()))
        );
        assert_eq!(
            att.check(&mv(5, 20, "a", "c")),
            err(5, 10, Instead::Unbooked)
        );
        assert_eq!(
            att.check(&mv(120, 160, "a", "c")),
            err(150, 160, Instead::NoUsage)
        );
        assert_eq!(
            att.check(&mv(110, 130, "a", "c")),
            err(110, 120, Instead::NoUsage)
        );
        assert_eq!(
            att.check(&mv(200, 300, "a", "c")),
            err(200, 300, Instead::NoUsage)
        );
        // After a move, the moved stretch is the new owner's to move on.
        att.apply(&mv(10, 60, "a", "b"));
        assert_eq!(att.check(&mv(10, 100, "b", "c")), Ok(()));
        assert_eq!(
            att.check(&mv(10, 20, "a", "c")),
            err(10, 20, Instead::Booking("b".into()))
        );
    }
}
