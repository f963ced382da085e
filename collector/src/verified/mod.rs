//! Verified usage hours: reconciliation results kept up to date in the
//! store, and the queries the API and `report` answer from them.

pub mod corrections;
pub mod query;

use jiff::Timestamp;

pub use corrections::{Correction, NewCorrection};
pub use query::*;

use crate::bookings::Booking;
use crate::bookings::store::{ImportOptions, ImportReport};

/// Everything the HTTP API reads and writes, behind one trait so the API
/// can be tested with a fake; [`StoreReports`] is the real one.
/// Methods block (SQLite): call them from `spawn_blocking`.
pub trait Reports: Send + Sync + 'static {
    fn hours(&self, query: &HoursQuery) -> Result<HoursRows, QueryError>;
    /// Bookings whose start lies in `range`.
    fn outcomes(
        &self,
        range: &Range,
        instrument: Option<&str>,
    ) -> Result<Vec<OutcomeRow>, QueryError>;
    /// Sessions overlapping `range`.
    fn sessions(
        &self,
        range: &Range,
        instrument: Option<&str>,
    ) -> Result<Vec<SessionRow>, QueryError>;
    fn timeline(&self, instrument: &str, range: &Range) -> Result<TimelineView, QueryError>;
    fn instruments(&self, now: Timestamp) -> Result<Vec<InstrumentRow>, QueryError>;
    /// Validates and records a correction; `QueryError::BadParameter` names a bad field.
    fn add_correction(
        &self,
        correction: NewCorrection,
        created_by: &str,
        now: Timestamp,
    ) -> Result<Correction, QueryError>;
    /// Corrections overlapping `range`, oldest first.
    fn corrections(
        &self,
        range: &Range,
        instrument: Option<&str>,
    ) -> Result<Vec<Correction>, QueryError>;
    /// Checks and upserts bookings that came as JSON (index = position in
    /// the body, reported as the "line" of a bad item).
    fn import_bookings(
        &self,
        bookings: Vec<(u64, Booking)>,
        options: ImportOptions,
        now: Timestamp,
    ) -> Result<ImportReport, QueryError>;
}

/// The [`Reports`] the running collector serves (`app::start`), on the
/// config's data dir.
pub fn store_reports(
    config: &crate::config::CollectorConfig,
) -> anyhow::Result<std::sync::Arc<dyn Reports>> {
    let _ = config;
    unimplemented!("StoreReports lands on main")
}

/// The [`Reports`] of `labhours-collector report`: the config's data dir
/// opened read-only, beside a running collector or without one.
pub fn open_reports(
    config: &crate::config::CollectorConfig,
) -> anyhow::Result<std::sync::Arc<dyn Reports>> {
    let _ = config;
    unimplemented!("StoreReports lands on main")
}
