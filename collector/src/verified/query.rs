//! What the API and `report` ask of the verified results: hours, booking
//! outcomes, sessions, an instrument's timeline, the instrument list.
//!
//! Every function reads the store (the materialised day and month totals,
//! booking outcomes, events) and the [`Registry`]; none writes.

use std::collections::BTreeMap;

use jiff::Timestamp;
use jiff::civil::Date;
use labhours_shared::state::State;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::reconcile::PeriodUnit;
use crate::registry::thresholds_check::{AppliedThresholds, ThresholdDifference};

/// One edge of a requested range: a local date (midnight in each
/// instrument's zone) or an exact instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Edge {
    Date(Date),
    Instant(Timestamp),
}

/// `[from, to)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    pub from: Edge,
    pub to: Edge,
}

/// How hours rows are grouped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum GroupBy {
    #[default]
    Instrument,
    Unit,
    UsageType,
}

/// `GET /api/v1/hours` and `report`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HoursQuery {
    pub range: Range,
    /// Only this instrument.
    pub instrument: Option<String>,
    /// Only instruments in this unit or below it.
    pub unit: Option<String>,
    /// Split the range into local days, months or years; `None`: one period.
    pub period: Option<PeriodUnit>,
    pub group_by: GroupBy,
}

/// Figures an admin's corrections change (§7), reported beside the
/// uncorrected ones.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CorrectedHours {
    /// Unbooked usage an admin assigned (to a user, group, usage type or booking).
    pub assigned_hours: f64,
    /// Unbooked usage no correction assigned: `unbooked_hours − assigned_hours`.
    pub unbooked_hours: f64,
    /// `by_usage_type` with assigned usage moved out of `unassigned`.
    pub by_usage_type: BTreeMap<String, f64>,
    pub external_hours: f64,
    pub share_rate: Option<f64>,
}

/// One hours row (§6 names) for an instrument or a unit and one period.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct HoursRow {
    /// Set when grouped by instrument.
    pub instrument_id: Option<String>,
    /// The instrument's name (grouped by instrument).
    pub name: Option<String>,
    /// The instrument's unit, or the unit grouped by (`""`: instruments with none).
    pub unit: Option<String>,
    /// Instruments summed in this row.
    pub instruments: u32,
    pub period_start: String,
    pub period_end: String,
    pub used_hours: f64,
    pub booked_hours: f64,
    pub booked_used_hours: f64,
    pub unbooked_hours: f64,
    pub by_usage_type: BTreeMap<String, f64>,
    pub external_hours: f64,
    pub share_rate: Option<f64>,
    pub open_hours: Option<f64>,
    pub utilization: Option<f64>,
    pub no_show_count: u64,
    pub fault_hours: f64,
    pub unknown_hours: f64,
    pub coverage: f64,
    pub result_files: u64,
    pub energy_kwh: Option<f64>,
    pub corrected: CorrectedHours,
    /// The figures may still change: the period ends after the instant its
    /// instruments are settled through (docs/verified.md).
    pub provisional: bool,
    /// Every event in the period came in an envelope signed by an enrolled
    /// key (docs/design/trust.md); `false` when any came unsigned.
    #[serde(default = "signed_by_default")]
    pub signed: bool,
    /// Events in the period that came unsigned (older or unsigned agents,
    /// accepted while `[trust] allow_unsigned`).
    #[serde(default)]
    pub unsigned_events: u64,
}

fn signed_by_default() -> bool {
    true
}

/// Usage of one type in one period over the selected instruments.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct UsageTypeRow {
    pub period_start: String,
    pub period_end: String,
    /// A usage type, or `unassigned`.
    pub usage_type: String,
    pub instruments: u32,
    pub used_hours: f64,
    pub corrected_used_hours: f64,
    /// Some instrument's figures for the period may still change.
    pub provisional: bool,
}

/// The answer to an [`HoursQuery`].
#[derive(Debug, Clone, PartialEq)]
pub enum HoursRows {
    /// `group_by` instrument or unit.
    Totals(Vec<HoursRow>),
    /// `group_by` usage_type.
    UsageTypes(Vec<UsageTypeRow>),
}

/// The answer to an [`HoursQuery`] with how far it is final.
#[derive(Debug, Clone, PartialEq)]
pub struct HoursAnswer {
    pub rows: HoursRows,
    /// The selected instruments' figures are final before this instant
    /// (`None`: one of them has settled nothing; docs/verified.md).
    pub settled_through: Option<Timestamp>,
}

/// One booking's §5 report, as the API serves it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct OutcomeRow {
    pub booking_id: String,
    pub instrument_id: String,
    pub user: String,
    pub group: String,
    pub usage_type: String,
    /// RFC 3339, in the instrument's zone.
    pub start: String,
    pub end: String,
    /// used, no_show, instrument_fault, no_data, cancelled or not_monitored.
    pub outcome: String,
    /// Set flags by name: `late_start`, `early_finish`, `overrun`.
    pub flags: Vec<String>,
    pub booked_s: f64,
    pub used_s: f64,
    pub early_s: f64,
    pub overrun_s: f64,
    pub first_use: Option<String>,
    pub last_use: Option<String>,
    pub unknown_s: f64,
    pub fault_s: f64,
    /// Evidence: session ids and result-file ids.
    pub sessions: Vec<String>,
    pub result_files: Vec<String>,
    /// Disputed time (docs/verified.md): the other confirmed bookings on the
    /// instrument whose own slot overlaps this booking's slot.
    pub overlapping_bookings: Vec<String>,
    /// Bookings that got the rest of a session this booking had been
    /// attributed (an overrun into the next booking's window, a double
    /// booking's later start).
    pub usage_taken_by: Vec<String>,
    /// Bookings whose session this booking was attributed the rest of.
    pub took_usage_from: Vec<String>,
    /// `used_s` after move corrections (usage moved to or from this
    /// booking); `used_s` itself never changes.
    pub corrected_used_s: f64,
}

/// A piece of a session owned by one booking or by none.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SegmentRow {
    pub start: String,
    pub end: String,
    /// `null`: unbooked.
    pub booking_id: Option<String>,
}

/// A booking's slot: where double bookings are looked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BookingSlot {
    pub instrument_id: String,
    pub booking_id: String,
    pub start_ms: i64,
    pub end_ms: i64,
}

/// A usage session (§2).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SessionRow {
    pub session_id: String,
    pub instrument_id: String,
    pub start: String,
    pub end: String,
    pub duration_s: f64,
    /// Shorter than `min_session_s`: shown, not counted.
    pub dropped: bool,
    pub result_files: Vec<String>,
    pub segments: Vec<SegmentRow>,
}

/// A stretch of one state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct StatePiece {
    pub start: String,
    pub end: String,
    #[schema(value_type = StateName)]
    pub state: State,
}

/// A booking as shown on a timeline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct BookingView {
    pub booking_id: String,
    pub user: String,
    pub group: String,
    pub usage_type: String,
    pub start: String,
    pub end: String,
    pub status: String,
}

/// A result file as evidence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ResultFileView {
    /// `{agent_id}:{seq}` of the event that reported it.
    pub id: String,
    pub path: String,
    pub mtime: String,
    pub size_bytes: u64,
    pub sha256: String,
    pub sample_id: Option<String>,
}

/// `GET /api/v1/instruments/{id}/timeline`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TimelineView {
    pub instrument_id: String,
    pub from: String,
    pub to: String,
    pub states: Vec<StatePiece>,
    pub sessions: Vec<SessionRow>,
    pub bookings: Vec<BookingView>,
    pub result_files: Vec<ResultFileView>,
}

/// An agent reporting for an instrument.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AgentView {
    pub agent_id: String,
    pub online: bool,
    pub last_seen: Option<String>,
    pub backlog: Option<u64>,
    pub clock_skew_ms: Option<i64>,
    pub version: Option<String>,
    /// The thresholds the agent said it applies (newest online status);
    /// `null` for an agent that did not say (older, or without a meter).
    pub applied_thresholds: Option<AppliedThresholds>,
    /// What the registry expects (its `thresholds` for the instrument, defaults resolved).
    pub registry_thresholds: Option<AppliedThresholds>,
    /// Where those differ from the registry's `thresholds` for the
    /// instrument (empty when they agree or the registry has none).
    pub threshold_mismatch: Vec<ThresholdDifference>,
    /// The id of the agent's enrolled, unrevoked signing key: its envelopes
    /// must be signed with it. `null`: the agent is unsigned (accepted only
    /// while `[trust] allow_unsigned`; docs/design/trust.md).
    #[serde(default)]
    pub signing_key: Option<String>,
}

/// `GET /api/v1/instruments`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct InstrumentRow {
    pub instrument_id: String,
    pub name: String,
    pub unit: Option<String>,
    pub time_zone: String,
    /// Listed in the config (otherwise site defaults apply).
    pub configured: bool,
    /// The latest state, `unknown` when nothing is known.
    #[schema(value_type = StateName)]
    pub state: State,
    /// Since when, when known.
    pub since: Option<String>,
    pub agent_online: bool,
    pub agents: Vec<AgentView>,
}

/// An instrument state as the API names it (the schema of
/// `labhours_shared::state::State`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum StateName {
    Off,
    Standby,
    Running,
    Fault,
    Unknown,
}

impl Default for InstrumentRow {
    fn default() -> Self {
        Self {
            instrument_id: String::new(),
            name: String::new(),
            unit: None,
            time_zone: String::new(),
            configured: false,
            state: State::Unknown,
            since: None,
            agent_online: false,
            agents: Vec::new(),
        }
    }
}

/// Why a query could not be answered.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// A parameter is wrong; the API answers 400 naming it.
    #[error("{parameter}: {message}")]
    BadParameter {
        parameter: &'static str,
        message: String,
    },
    /// The API answers 404.
    #[error("no instrument {0:?}")]
    UnknownInstrument(String),
    /// The API answers 404 (also for a unit outside the caller's).
    #[error("no unit {0:?}")]
    UnknownUnit(String),
    #[error("database: {0}")]
    Db(#[from] rusqlite::Error),
}
