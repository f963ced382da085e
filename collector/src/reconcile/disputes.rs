//! Disputed time made visible: §4 gives every instant to one booking, and
//! evidence cannot tell two users apart, so each booking's report names the
//! other bookings its time could be argued with (the rules stay as they
//! are; a move correction, [`super::corrections::Move`], fixes a case).
//!
//! - `overlapping_bookings`: the other confirmed bookings whose own slot
//!   `[start, end)` overlaps this booking's slot (double bookings);
//! - `usage_taken_by`: bookings that got the rest of a session this booking
//!   had been given (an overrun into the next booking's window, or a second
//!   booking's slot beginning while the first user still ran);
//! - `took_usage_from`: the converse, bookings whose session this booking
//!   carried on.

use std::collections::{BTreeSet, HashMap};

use super::fast::FastMap;
use super::{Booking, Segment};

/// A booking's neighbours in dispute, each list sorted and without repeats.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Disputes {
    pub overlapping_bookings: Vec<String>,
    pub usage_taken_by: Vec<String>,
    pub took_usage_from: Vec<String>,
}

/// The [`Disputes`] of every booking that has any, by booking id.
/// `bookings` are one instrument's; `segments` sorted by start, as
/// attribution gives them. O(n log n + pairs).
pub fn disputes(bookings: &[Booking], segments: &[Segment]) -> HashMap<String, Disputes> {
    let mut sets: FastMap<&str, [BTreeSet<&str>; 3]> = FastMap::default();
    for (a, b) in overlapping_pairs(bookings) {
        sets.entry(a).or_default()[0].insert(b);
        sets.entry(b).or_default()[0].insert(a);
    }
    // Consecutive owned pieces of one session with different owners: the
    // session passed from the first to the second.
    for w in segments.windows(2) {
        let (Some(first), Some(next)) = (&w[0].booking_id, &w[1].booking_id) else {
            continue;
        };
        if w[0].session_id == w[1].session_id && first != next {
            sets.entry(first).or_default()[1].insert(next);
            sets.entry(next).or_default()[2].insert(first);
        }
    }
    let list = |s: &BTreeSet<&str>| s.iter().map(|&id| id.to_owned()).collect();
    sets.into_iter()
        .map(|(id, [overlapping, taken_by, took_from])| {
            let d = Disputes {
                overlapping_bookings: list(&overlapping),
                usage_taken_by: list(&taken_by),
                took_usage_from: list(&took_from),
            };
            (id.to_owned(), d)
        })
        .collect()
}

/// Pairs of distinct confirmed bookings whose slots overlap (half-open: a
/// booking ending when the next begins does not overlap it). A sweep by
/// start keeps the slots not yet ended.
fn overlapping_pairs(bookings: &[Booking]) -> Vec<(&str, &str)> {
    let mut sorted: Vec<&Booking> = bookings
        .iter()
        .filter(|b| b.is_confirmed() && !b.slot().is_empty())
        .collect();
    sorted.sort_by(|a, b| (a.start, &a.booking_id).cmp(&(b.start, &b.booking_id)));
    let mut open: Vec<&Booking> = Vec::new();
    let mut out = Vec::new();
    for b in sorted {
        open.retain(|o| o.end > b.start);
        out.extend(
            open.iter()
                .filter(|o| o.booking_id != b.booking_id)
                .map(|o| (o.booking_id.as_str(), b.booking_id.as_str())),
        );
        open.push(b);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bookings::{BookingStatus, UsageType};
    use crate::reconcile::Interval;

    fn booking(id: &str, start: i64, end: i64) -> Booking {
        Booking {
            booking_id: id.into(),
            instrument_id: "i".into(),
            user: "u".into(),
            group: "g".into(),
            usage_type: UsageType::Research,
            start,
            end,
            status: BookingStatus::Confirmed,
        }
    }

    fn seg(session: &str, start: i64, end: i64, owner: Option<&str>) -> Segment {
        Segment {
            session_id: session.into(),
            interval: Interval::new(start, end),
            booking_id: owner.map(str::to_owned),
        }
    }

    fn ids(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn overlapping_slots_are_listed_both_ways_and_touching_ones_are_not() {
        let mut cancelled = booking("x", 0, 100);
        cancelled.status = BookingStatus::Cancelled;
        let bookings = [
            booking("a", 0, 100),
            booking("b", 50, 150),
            booking("c", 100, 200), // touches a, overlaps b
            booking("d", 10, 20),   // inside a
            cancelled,
        ];
        let d = disputes(&bookings, &[]);
        assert_eq!(d["a"].overlapping_bookings, ids(&["b", "d"]));
        assert_eq!(d["b"].overlapping_bookings, ids(&["a", "c"]));
        assert_eq!(d["c"].overlapping_bookings, ids(&["b"]));
        assert_eq!(d["d"].overlapping_bookings, ids(&["a"]));
        assert!(!d.contains_key("x"), "cancelled bookings dispute nothing");
    }

    #[test]
    fn a_session_passing_from_one_booking_to_another_is_listed_with_its_direction() {
        let segments = [
            seg("s1", 0, 10, None),
            seg("s1", 10, 50, Some("a")),
            seg("s1", 50, 90, Some("b")),
            // A new session: a and b never passed usage here.
            seg("s2", 100, 120, Some("b")),
            seg("s3", 120, 130, Some("a")),
            seg("s4", 200, 210, Some("c")),
            seg("s4", 210, 220, Some("a")),
            seg("s4", 220, 230, Some("c")),
        ];
        let d = disputes(&[], &segments);
        assert_eq!(d["a"].usage_taken_by, ids(&["b", "c"]));
        assert_eq!(d["a"].took_usage_from, ids(&["c"]));
        assert_eq!(d["b"].took_usage_from, ids(&["a"]));
        assert!(d["b"].usage_taken_by.is_empty());
        assert_eq!(d["c"].usage_taken_by, ids(&["a"]));
        assert_eq!(d["c"].took_usage_from, ids(&["a"]));
        assert!(d["a"].overlapping_bookings.is_empty());
    }

    #[test]
    fn bookings_without_disputes_have_no_entry() {
        let bookings = [booking("a", 0, 10), booking("b", 10, 20)];
        let segments = [seg("s1", 0, 10, Some("a")), seg("s2", 12, 20, Some("b"))];
        assert!(disputes(&bookings, &segments).is_empty());
    }
}
