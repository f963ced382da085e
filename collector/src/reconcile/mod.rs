//! Reconciliation of measured usage with bookings (reconciliation.md §2, §4,
//! §5, §6, §7 and §8; `docs/reconciliation.md` states the rules as
//! implemented).
//!
//! Pure code: no I/O, no clock. Every instant is an `i64` count of UTC
//! milliseconds ([`Ms`]); every interval is half-open `[start, end)`.
//!
//! The pipeline, one instrument at a time:
//! 1. [`sessions_from_states`] or [`sessions_from_files`] (or [`sessions`],
//!    which picks by [`UsageSource`]) turn the state timeline or the result
//!    files into [`Session`]s, merged then dropped;
//! 2. [`attribute`] splits the kept sessions into [`Segment`]s, each owned by
//!    at most one booking;
//! 3. [`booking_reports`] gives each booking its [`BookingReport`];
//! 4. [`totals_for_periods`] sums many periods in one sweep into
//!    [`PeriodTotals`], uncorrected and corrected by [`Assignment`]s (§7);
//!    [`period_totals`] is the same for one period; [`PeriodTotals::to_row`]
//!    rounds into an [`HoursRow`]; [`split_periods`] cuts `[from, to)` into
//!    local days, months or years.
//!
//! [`reconcile`] runs steps 1–3.

mod attribution;
pub mod corrections;
mod disputes;
mod fast;
pub mod hours;
mod outcomes;
mod sessions;
mod timeline;

#[cfg(test)]
mod tests;

pub use attribution::{attribute, owner_rules};
pub use corrections::{
    Assignment, Attribution, Instead, Move, Uncovered, apply_moves, assigned_pieces,
};
pub use disputes::{Disputes, disputes};
pub use hours::{
    HoursRow, Period, PeriodInputs, PeriodTotals, PeriodUnit, TotalsInputs, period_totals,
    split_periods, totals_for_periods,
};
pub use outcomes::{BookingReport, Flags, Outcome, booking_reports, not_monitored};
pub use sessions::{sessions, sessions_from_files, sessions_from_states};
pub use timeline::TimelineIndex;

use labhours_shared::state::State;
use serde::{Deserialize, Serialize};

use crate::config::{ReconciliationRules, UsageSource};

/// UTC milliseconds since the Unix epoch.
pub type Ms = i64;

/// Milliseconds in one second.
pub const MS_PER_S: Ms = 1000;

/// A half-open interval `[start, end)` of UTC milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Interval {
    pub start: Ms,
    pub end: Ms,
}

impl Interval {
    pub fn new(start: Ms, end: Ms) -> Self {
        Self { start, end }
    }

    /// Length in milliseconds (0 for an empty or reversed interval).
    pub fn len(&self) -> Ms {
        (self.end - self.start).max(0)
    }

    pub fn is_empty(&self) -> bool {
        self.end <= self.start
    }

    pub fn contains(&self, t: Ms) -> bool {
        self.start <= t && t < self.end
    }

    /// The common part, if any.
    pub fn intersect(&self, other: &Interval) -> Option<Interval> {
        let i = Interval::new(self.start.max(other.start), self.end.min(other.end));
        (!i.is_empty()).then_some(i)
    }

    /// Length of the common part.
    pub fn overlap(&self, other: &Interval) -> Ms {
        self.intersect(other).map_or(0, |i| i.len())
    }
}

/// The state timeline of one instrument: transitions sorted by time, each
/// state holding until the next transition; `data_end` is the end of known
/// data. Before the first transition and from `data_end` on, the state is
/// `unknown`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Timeline {
    pub transitions: Vec<(Ms, State)>,
    pub data_end: Ms,
}

impl Timeline {
    /// The timeline as consecutive `(interval, state)` pieces, from the first
    /// transition to `data_end` (transitions at or after `data_end` ignored).
    pub fn pieces(&self) -> Vec<(Interval, State)> {
        let mut out = Vec::with_capacity(self.transitions.len());
        out.extend(self.pieces_iter());
        out
    }

    /// [`Timeline::pieces`] without collecting them.
    pub(crate) fn pieces_iter(&self) -> impl Iterator<Item = (Interval, State)> + '_ {
        let ts = &self.transitions;
        ts.iter().enumerate().filter_map(move |(i, &(at, state))| {
            let next = ts
                .get(i + 1)
                .map_or(self.data_end, |&(n, _)| n.min(self.data_end));
            let piece = Interval::new(at, next);
            (!piece.is_empty()).then_some((piece, state))
        })
    }

    /// Time in `state` within `within`; for `State::Unknown` this includes
    /// every part of `within` the timeline does not cover. Builds the index
    /// each call: for many intervals, build [`Timeline::index`] once.
    pub fn time_in(&self, state: State, within: Interval) -> Ms {
        self.index().time_in(state, within)
    }

    /// The pieces with running sums per state, for many `time_in` queries.
    pub fn index(&self) -> TimelineIndex {
        TimelineIndex::new(self)
    }
}

/// A completed result file, as evidence (from a `result_file` event).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ResultFileRef {
    /// Stable id chosen by the caller (e.g. the event's row id or sha256).
    pub id: String,
    pub path: String,
    pub mtime: Ms,
}

/// A usage session (§2). Dropped sessions are kept for display only: they
/// are not usage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    /// `"{instrument_id}@{start}"`: stable as long as the session's start is.
    pub id: String,
    pub instrument_id: String,
    pub interval: Interval,
    /// Shorter than `min_session_s` after merging.
    pub dropped: bool,
    /// Ids of the result files written during the session.
    pub result_files: Vec<String>,
}

pub use crate::bookings::{BookingStatus, UsageType};

/// Key of unbooked usage in `by_usage_type`.
pub const UNASSIGNED: &str = "unassigned";

/// A booking (§3), times already converted to UTC milliseconds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Booking {
    pub booking_id: String,
    pub instrument_id: String,
    pub user: String,
    pub group: String,
    pub usage_type: UsageType,
    pub start: Ms,
    pub end: Ms,
    pub status: BookingStatus,
}

impl Booking {
    pub fn slot(&self) -> Interval {
        Interval::new(self.start, self.end)
    }

    /// `[start − early_grace, end + late_grace)`.
    pub fn window(&self, rules: &ReconciliationRules) -> Interval {
        Interval::new(
            self.start - secs(rules.early_grace_s),
            self.end + secs(rules.late_grace_s),
        )
    }

    pub fn is_confirmed(&self) -> bool {
        self.status == BookingStatus::Confirmed
    }
}

/// The stored booking, with its instants as milliseconds for the sweep.
impl From<&crate::bookings::Booking> for Booking {
    fn from(b: &crate::bookings::Booking) -> Self {
        Self {
            booking_id: b.booking_id.clone(),
            instrument_id: b.instrument_id.clone(),
            user: b.user.clone(),
            group: b.group.clone(),
            usage_type: b.usage_type,
            start: b.start.as_millisecond(),
            end: b.end.as_millisecond(),
            status: b.status,
        }
    }
}

/// A piece of a kept session owned by one booking, or by none (unbooked).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Segment {
    pub session_id: String,
    pub interval: Interval,
    /// `None` is unbooked usage.
    pub booking_id: Option<String>,
}

/// Everything steps 1–3 produce for one instrument.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reconciliation {
    /// Kept and dropped sessions, by start.
    pub sessions: Vec<Session>,
    /// Kept usage split by owner, by start; disjoint.
    pub segments: Vec<Segment>,
    /// One report per booking given, by (start, booking_id).
    pub reports: Vec<BookingReport>,
}

/// What [`reconcile`] needs about one instrument.
#[derive(Debug, Clone, Copy)]
pub struct InstrumentInputs<'a> {
    pub instrument_id: &'a str,
    pub usage_source: UsageSource,
    /// Required for `UsageSource::Files`.
    pub file_run_s: Option<u64>,
    pub timeline: &'a Timeline,
    pub result_files: &'a [ResultFileRef],
    pub rules: &'a ReconciliationRules,
}

/// Steps 1–3 for one instrument: sessions, attribution, booking reports.
/// `bookings` are this instrument's; their order does not matter.
pub fn reconcile(inputs: &InstrumentInputs<'_>, bookings: &[Booking]) -> Reconciliation {
    let sessions = sessions(inputs);
    let segments = attribute(&sessions, bookings, inputs.rules);
    let reports = booking_reports(
        bookings,
        &segments,
        &sessions,
        inputs.timeline,
        inputs.result_files,
        inputs.rules,
    );
    Reconciliation {
        sessions,
        segments,
        reports,
    }
}

/// Seconds of a setting as milliseconds (saturating).
pub(crate) fn secs(s: u64) -> Ms {
    i64::try_from(s)
        .unwrap_or(i64::MAX / MS_PER_S)
        .saturating_mul(MS_PER_S)
}
