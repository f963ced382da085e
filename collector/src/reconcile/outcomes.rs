//! §5 booking outcomes and the per-booking report.

use labhours_shared::state::State;
use serde::{Deserialize, Serialize};

use super::{
    Booking, BookingStatus, Interval, MS_PER_S, Ms, ResultFileRef, Segment, Session, Timeline, secs,
};
use crate::config::ReconciliationRules;

/// §5 outcome: the first rule that applies, in this order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Cancelled,
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

/// One report per booking, by (start, booking_id).
pub fn booking_reports(
    bookings: &[Booking],
    segments: &[Segment],
    sessions: &[Session],
    timeline: &Timeline,
    files: &[ResultFileRef],
    rules: &ReconciliationRules,
) -> Vec<BookingReport> {
    let mut sorted: Vec<&Booking> = bookings.iter().collect();
    sorted.sort_by(|a, b| (a.start, &a.booking_id).cmp(&(b.start, &b.booking_id)));
    sorted
        .into_iter()
        .map(|b| booking_report(b, segments, sessions, timeline, files, rules))
        .collect()
}

fn booking_report(
    b: &Booking,
    segments: &[Segment],
    sessions: &[Session],
    timeline: &Timeline,
    files: &[ResultFileRef],
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
    let own: Vec<&Segment> = segments
        .iter()
        .filter(|s| s.booking_id.as_deref() == Some(b.booking_id.as_str()))
        .collect();
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
    for seg in &own {
        if !report.sessions.contains(&seg.session_id) {
            report.sessions.push(seg.session_id.clone());
        }
    }
    report.result_files = files_of(b, &report.sessions, sessions, segments, files);
    report
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

/// Result files of the booking's sessions whose completion instant lies in
/// usage attributed to it (a file completed at its session's end goes to
/// the owner of the session's last segment).
fn files_of(
    b: &Booking,
    session_ids: &[String],
    sessions: &[Session],
    segments: &[Segment],
    files: &[ResultFileRef],
) -> Vec<String> {
    let mut out = Vec::new();
    for s in sessions.iter().filter(|s| session_ids.contains(&s.id)) {
        let segs: Vec<&Segment> = segments.iter().filter(|g| g.session_id == s.id).collect();
        for fid in &s.result_files {
            let Some(f) = files.iter().find(|f| &f.id == fid) else {
                continue;
            };
            let owner = segs
                .iter()
                .find(|g| g.interval.contains(f.mtime))
                .or_else(|| segs.last().filter(|g| g.interval.end == f.mtime));
            if owner.is_some_and(|g| g.booking_id.as_deref() == Some(b.booking_id.as_str())) {
                out.push(fid.clone());
            }
        }
    }
    out
}
