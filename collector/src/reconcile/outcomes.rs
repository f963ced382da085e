//! §5 booking outcomes and the per-booking report.

use labhours_shared::state::State;
use serde::{Deserialize, Serialize};

use super::fast::{FastMap, Groups};
use super::{
    Booking, BookingStatus, Interval, MS_PER_S, Ms, ResultFileRef, Segment, Session, Timeline,
    TimelineIndex, secs,
};
use crate::config::ReconciliationRules;

/// §5 outcome: the first rule that applies, in this order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Cancelled,
    /// A confirmed booking of an instrument the collector does not monitor
    /// (not configured); never a no-show.
    NotMonitored,
    NoData,
    InstrumentFault,
    NoShow,
    Used,
}

/// Flags, only ever set on `Outcome::Used`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Flags {
    pub late_start: bool,
    pub early_finish: bool,
    pub overrun: bool,
}

/// Per-booking report. Seconds are `f64` so that millisecond inputs are not
/// truncated; whole-second inputs give whole numbers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BookingReport {
    pub booking_id: String,
    pub booked_s: f64,
    /// All usage attributed (graces and overrun included).
    pub used_s: f64,
    /// The part of `used_s` before `start`.
    pub early_s: f64,
    /// The part of `used_s` from `end + late_grace` on.
    pub overrun_s: f64,
    /// First attributed instant.
    pub first_use: Option<Ms>,
    /// End (exclusive) of the last attributed usage.
    pub last_use: Option<Ms>,
    pub outcome: Outcome,
    pub flags: Flags,
    /// Sessions that gave usage to this booking.
    pub sessions: Vec<String>,
    /// Result files completed in usage attributed to this booking.
    pub result_files: Vec<String>,
    /// `unknown` time inside `[start, end)`, in seconds.
    pub unknown_s: f64,
    /// `fault` time inside `[start, end)`, in seconds.
    pub fault_s: f64,
}

/// Milliseconds as seconds.
pub(crate) fn to_s(ms: Ms) -> f64 {
    ms as f64 / MS_PER_S as f64
}

/// One report per booking, by (start, booking_id). Near-linear: the
/// timeline is indexed once, segments are grouped by owner once and each
/// result file's owner is found once.
pub fn booking_reports(
    bookings: &[Booking],
    segments: &[Segment],
    sessions: &[Session],
    timeline: &Timeline,
    files: &[ResultFileRef],
    rules: &ReconciliationRules,
) -> Vec<BookingReport> {
    let index = timeline.index();
    let own = Groups::new(
        segments
            .iter()
            .filter_map(|g| g.booking_id.as_deref().map(|id| (id, g))),
        segments.len(),
    );
    let files_by_owner = files_by_owner(sessions, segments, files);
    let mut sorted: Vec<&Booking> = bookings.iter().collect();
    sorted.sort_by(|a, b| (a.start, &a.booking_id).cmp(&(b.start, &b.booking_id)));
    sorted
        .into_iter()
        .map(|b| {
            let id = b.booking_id.as_str();
            booking_report(b, own.get(id), &index, files_by_owner.get(id), rules)
        })
        .collect()
}

/// `own`: the segments the booking owns, in order; `files`: the result
/// files completed in them.
fn booking_report(
    b: &Booking,
    own: &[&Segment],
    timeline: &TimelineIndex,
    files: &[&str],
    rules: &ReconciliationRules,
) -> BookingReport {
    let slot = b.slot();
    let booked = slot.len();
    let unknown = timeline.time_in(State::Unknown, slot);
    let fault = timeline.time_in(State::Fault, slot);
    let mut report = BookingReport {
        booking_id: b.booking_id.clone(),
        booked_s: to_s(booked),
        used_s: 0.0,
        early_s: 0.0,
        overrun_s: 0.0,
        first_use: None,
        last_use: None,
        outcome: Outcome::Cancelled,
        flags: Flags::default(),
        sessions: Vec::new(),
        result_files: Vec::new(),
        unknown_s: to_s(unknown),
        fault_s: to_s(fault),
    };
    if b.status == BookingStatus::Cancelled {
        return report;
    }
    let used: Ms = own.iter().map(|s| s.interval.len()).sum();
    let before_start = Interval::new(Ms::MIN, b.start);
    let after_grace = Interval::new(b.end + secs(rules.late_grace_s), Ms::MAX);
    let early: Ms = own.iter().map(|s| s.interval.overlap(&before_start)).sum();
    let overrun: Ms = own.iter().map(|s| s.interval.overlap(&after_grace)).sum();
    let first_use = own.iter().map(|s| s.interval.start).min();
    let last_use = own.iter().map(|s| s.interval.end).max();
    report.used_s = to_s(used);
    report.early_s = to_s(early);
    report.overrun_s = to_s(overrun);
    report.first_use = first_use;
    report.last_use = last_use;
    report.outcome = outcome(booked, unknown, fault, used, rules);
    if report.outcome == Outcome::Used {
        report.flags = flags(b, first_use, last_use, overrun, rules);
    }
    for seg in own {
        if report.sessions.last() != Some(&seg.session_id)
            && !report.sessions.contains(&seg.session_id)
        {
            report.sessions.push(seg.session_id.clone());
        }
    }
    report.result_files = files.iter().map(|&f| f.to_owned()).collect();
    report
}

/// Bookings of an instrument the collector does not monitor: every
/// confirmed one that ended before the instrument's first evidence
/// (`evidence_from`; `None`: it has none) is `NotMonitored` (figures kept,
/// no flags). Once an agent reports for the instrument it is measured from
/// then on, configured or not.
pub fn not_monitored(
    reports: &mut [BookingReport],
    bookings: &[super::Booking],
    evidence_from: Option<Ms>,
) {
    let ends: std::collections::HashMap<&str, Ms> = bookings
        .iter()
        .map(|b| (b.booking_id.as_str(), b.end))
        .collect();
    let unwatched = |r: &BookingReport| {
        evidence_from.is_none_or(|from| ends.get(r.booking_id.as_str()).is_some_and(|&e| e <= from))
    };
    for r in reports
        .iter_mut()
        .filter(|r| r.outcome != Outcome::Cancelled && unwatched(r))
    {
        r.outcome = Outcome::NotMonitored;
        r.flags = Flags::default();
    }
}

/// The §5 table for a confirmed booking, first rule that applies.
pub(crate) fn outcome(
    booked: Ms,
    unknown: Ms,
    fault: Ms,
    used: Ms,
    rules: &ReconciliationRules,
) -> Outcome {
    let below = used < secs(rules.no_show_below_s);
    if is_no_data(booked, unknown) {
        Outcome::NoData
    } else if fault > 0 && below {
        Outcome::InstrumentFault
    } else if below {
        Outcome::NoShow
    } else {
        Outcome::Used
    }
}

/// `unknown` covers at least half of `[start, end)` (an empty slot is not
/// `no_data`).
pub(crate) fn is_no_data(booked: Ms, unknown: Ms) -> bool {
    booked > 0 && unknown.saturating_mul(2) >= booked
}

/// Flags of a `used` booking, all strict.
pub(crate) fn flags(
    b: &Booking,
    first_use: Option<Ms>,
    last_use: Option<Ms>,
    overrun: Ms,
    rules: &ReconciliationRules,
) -> Flags {
    Flags {
        late_start: first_use.is_some_and(|f| f > b.start + secs(rules.late_start_after_s)),
        early_finish: last_use.is_some_and(|l| l < b.end - secs(rules.early_finish_before_s)),
        overrun: overrun > 0,
    }
}

/// Result files by the booking that owns them: for each session (in order),
/// each of its files whose completion instant lies in a segment of that
/// session goes to the segment's owner (a file completed at the session's
/// end goes to the owner of the session's last segment). A booking owning
/// such a segment got usage from the session, so this is, per booking, its
/// sessions' files in usage attributed to it.
fn files_by_owner<'a>(
    sessions: &'a [Session],
    segments: &'a [Segment],
    files: &[ResultFileRef],
) -> Groups<'a, &'a str> {
    let mut by_id: FastMap<&str, &ResultFileRef> =
        FastMap::with_capacity_and_hasher(files.len(), Default::default());
    for f in files {
        by_id.entry(f.id.as_str()).or_insert(f);
    }
    let by_session = Groups::new(
        segments.iter().map(|g| (g.session_id.as_str(), g)),
        segments.len(),
    );
    let mut owned: Vec<(&str, &str)> = Vec::new();
    for s in sessions.iter().filter(|s| !s.result_files.is_empty()) {
        let segs = by_session.get(&s.id);
        // Segments of a session are normally sorted and disjoint: then a
        // binary search finds the one containing an instant.
        let ordered = segs.iter().all(|g| !g.interval.is_empty())
            && segs
                .windows(2)
                .all(|w| w[0].interval.end <= w[1].interval.start);
        for fid in &s.result_files {
            let Some(f) = by_id.get(fid.as_str()) else {
                continue;
            };
            let containing = if ordered {
                let i = segs.partition_point(|g| g.interval.end <= f.mtime);
                segs.get(i).filter(|g| g.interval.contains(f.mtime))
            } else {
                segs.iter().find(|g| g.interval.contains(f.mtime))
            };
            let owner = containing.or_else(|| segs.last().filter(|g| g.interval.end == f.mtime));
            if let Some(id) = owner.and_then(|g| g.booking_id.as_deref()) {
                owned.push((id, fid.as_str()));
            }
        }
    }
    let n = owned.len();
    Groups::new(owned.into_iter(), n)
}
