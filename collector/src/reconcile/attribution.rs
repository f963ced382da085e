//! §4 attribution: every instant of kept usage goes to at most one booking.
//!
//! A sweep over boundary points: between two consecutive points the owner is
//! constant, so it is decided once per piece, at the piece's start.

use std::cmp::Reverse;
use std::ops::Range;

use super::{Booking, Interval, Ms, Segment, Session, secs};
use crate::config::ReconciliationRules;

/// Kept sessions split into owned pieces. Cancelled bookings own nothing.
pub fn attribute(
    sessions: &[Session],
    bookings: &[Booking],
    rules: &ReconciliationRules,
) -> Vec<Segment> {
    let mut confirmed: Vec<&Booking> = bookings.iter().filter(|b| b.is_confirmed()).collect();
    // Order-independent: all tie-breaks below are by value, this only fixes
    // iteration order.
    confirmed.sort_by(|a, b| (a.start, &a.booking_id).cmp(&(b.start, &b.booking_id)));
    let kept: Vec<&Session> = sessions.iter().filter(|s| !s.dropped).collect();
    let (flat, spans) = relevant_bookings(&kept, &confirmed, rules);
    // About one segment per session and two per booking.
    let mut out = Vec::with_capacity(kept.len() + 2 * confirmed.len());
    let mut scratch = Scratch::default();
    for (session, span) in kept.into_iter().zip(spans) {
        attribute_session(session, &flat[span], rules, &mut scratch, &mut out);
    }
    out
}

/// For each session, the bookings whose window meets it, in the order of
/// `bookings` (sorted by start), as a span of one flat list. One sweep over
/// the sessions by start: a booking joins once its window has begun before
/// a session's end and leaves for good once its window has ended by a
/// session's start.
fn relevant_bookings<'a>(
    kept: &[&Session],
    bookings: &[&'a Booking],
    rules: &ReconciliationRules,
) -> (Vec<&'a Booking>, Vec<Range<usize>>) {
    let mut order: Vec<usize> = (0..kept.len()).collect();
    order.sort_by_key(|&i| kept[i].interval.start);
    let mut flat = Vec::new();
    let mut spans = vec![0..0; kept.len()];
    let mut next = 0;
    let mut active: Vec<&Booking> = Vec::new();
    for i in order {
        let s = kept[i].interval;
        while let Some(b) = bookings.get(next).filter(|b| b.window(rules).start < s.end) {
            active.push(b);
            next += 1;
        }
        active.retain(|b| b.window(rules).end > s.start);
        let from = flat.len();
        flat.extend(
            active
                .iter()
                .copied()
                .filter(|b| b.window(rules).intersect(&s).is_some()),
        );
        spans[i] = from..flat.len();
    }
    (flat, spans)
}

/// Buffers reused from one session to the next.
#[derive(Default)]
struct Scratch<'a> {
    points: Vec<Ms>,
    active: Vec<&'a Booking>,
    cands: Vec<&'a Booking>,
}

/// `relevant`: the confirmed bookings whose window meets the session, sorted
/// by (start, booking_id).
fn attribute_session<'a>(
    session: &Session,
    relevant: &[&'a Booking],
    rules: &ReconciliationRules,
    scratch: &mut Scratch<'a>,
    out: &mut Vec<Segment>,
) {
    let s = session.interval;
    let Scratch {
        points,
        active,
        cands,
    } = scratch;
    boundary_points(s, relevant, rules, points);
    // Owner of the session's last covered instant, for the overrun rule.
    let mut last_covered: Option<&Booking> = None;
    let first = out.len();
    // Bookings whose window has begun and not ended at the piece's start
    // (points increase), a subsequence of `relevant`: rule 1 picks from
    // them exactly what it would pick from all of `relevant`.
    let mut next = 0;
    active.clear();
    for pair in points.windows(2) {
        let piece = Interval::new(pair[0], pair[1]);
        let t = piece.start;
        while let Some(b) = relevant.get(next).filter(|b| b.window(rules).start <= t) {
            active.push(b);
            next += 1;
        }
        active.retain(|b| b.window(rules).end > t);
        owner_rules::candidates_into(t, active, rules, cands);
        let owner = if cands.is_empty() {
            owner_rules::overrun_owner(last_covered)
        } else {
            let o = owner_rules::own_slot(t, cands).or_else(|| owner_rules::nearest_slot(t, cands));
            last_covered = o;
            o
        };
        // Segments before `first` belong to another session: never extended.
        let ours = out.len() > first;
        match out.last_mut() {
            Some(last)
                if ours
                    && last.booking_id.as_deref() == owner.map(|b| b.booking_id.as_str())
                    && last.interval.end == piece.start =>
            {
                last.interval.end = piece.end;
            }
            _ => out.push(Segment {
                session_id: session.id.clone(),
                interval: piece,
                booking_id: owner.map(|b| b.booking_id.clone()),
            }),
        }
    }
}

/// Every instant at which the owner can change, within the session: the
/// session's ends, each booking's window and slot edges, and the points where
/// the nearest of two slots (one ended, one not begun) changes.
///
/// `bookings` are sorted by start. The nearest of slots A (ended) and B (not
/// begun) only matters where both windows hold: at the midpoint m,
/// `m < A.end + late_grace` and `B.start − early_grace ≤ m`, so
/// `B.start < A.end + late_grace + early_grace`; pairs further apart add no
/// point (near-linear instead of all pairs).
fn boundary_points(
    s: Interval,
    bookings: &[&Booking],
    rules: &ReconciliationRules,
    pts: &mut Vec<Ms>,
) {
    let reach = secs(rules.late_grace_s).saturating_add(secs(rules.early_grace_s));
    pts.clear();
    pts.extend([s.start, s.end]);
    for b in bookings {
        let w = b.window(rules);
        pts.extend([w.start, b.start, b.end, w.end]);
        let from = bookings.partition_point(|o| o.start < b.end);
        let to = bookings.partition_point(|o| o.start < b.end.saturating_add(reach));
        for other in bookings.get(from..to).unwrap_or_default() {
            // Earliest t with t − b.end ≥ other.start − t (ties go to the
            // later start, i.e. `other`).
            pts.push((b.end + other.start + 1).div_euclid(2));
        }
    }
    pts.retain(|&p| s.start <= p && p <= s.end);
    pts.sort_unstable();
    pts.dedup();
}

/// The §4 rules, one function each, at one instant `t`.
pub mod owner_rules {
    use super::*;

    /// Rule 1: confirmed bookings whose window `[start − early_grace,
    /// end + late_grace)` contains `t` (the caller passes confirmed ones).
    pub fn candidates<'a>(
        t: Ms,
        bookings: &[&'a Booking],
        rules: &ReconciliationRules,
    ) -> Vec<&'a Booking> {
        let mut out = Vec::new();
        candidates_into(t, bookings, rules, &mut out);
        out
    }

    /// [`candidates`] into a reused buffer.
    pub(crate) fn candidates_into<'a>(
        t: Ms,
        bookings: &[&'a Booking],
        rules: &ReconciliationRules,
        out: &mut Vec<&'a Booking>,
    ) {
        out.clear();
        out.extend(
            bookings
                .iter()
                .copied()
                .filter(|b| b.is_confirmed() && b.window(rules).contains(t)),
        );
    }

    /// Rule 2: a candidate whose own `[start, end)` contains `t`; among
    /// several, the one that started last (then the smallest booking_id).
    pub fn own_slot<'a>(t: Ms, cands: &[&'a Booking]) -> Option<&'a Booking> {
        cands
            .iter()
            .copied()
            .filter(|b| b.slot().contains(t))
            .max_by_key(|b| (b.start, Reverse(&b.booking_id)))
    }

    /// Distance from `t` to the half-open slot `[start, end)`.
    pub fn distance(t: Ms, b: &Booking) -> Ms {
        if t < b.start {
            b.start - t
        } else if t >= b.end {
            t - b.end
        } else {
            0
        }
    }

    /// Rule 3: the candidate whose `[start, end)` is nearest to `t`; ties go
    /// to the one that started last, then to the smallest booking_id.
    pub fn nearest_slot<'a>(t: Ms, cands: &[&'a Booking]) -> Option<&'a Booking> {
        cands
            .iter()
            .copied()
            .min_by_key(|b| (distance(t, b), Reverse(b.start), &b.booking_id))
    }

    /// Rule 4 (overrun): usage no window covers goes to the owner of the
    /// session's last covered instant; before any covered instant it is
    /// unbooked (rule 5). The caller resets it per session, and a new
    /// window beginning makes the instant covered again.
    pub fn overrun_owner(last_covered: Option<&Booking>) -> Option<&Booking> {
        last_covered
    }
}
