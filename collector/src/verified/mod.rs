//! Verified usage hours: reconciliation results kept up to date in the
//! store, and the queries the API and `report` answer from them
//! (docs/verified.md).
//!
//! - [`materialize`]: inputs loaded from the store, incremental passes
//!   ([`materialize::catch_up`]) and the full [`materialize::rebuild`];
//! - [`reconciler`]: the background task running a pass every second;
//! - [`hours`] and [`views`]: the queries; [`corrections`]: §7;
//! - [`StoreReports`]: all of it behind the [`Reports`] trait the API uses.

pub mod corrections;
pub mod dashboard;
pub mod health;
pub mod hours;
pub mod materialize;
pub mod query;
pub mod reconciler;
pub mod settled;
pub mod store_reports;
pub mod views;

use jiff::Timestamp;

pub use corrections::{Correction, CorrectionSchema, NewCorrection};
pub use dashboard::{DashSession, PowerPoint, PowerTrace};
pub use health::Health;
pub use query::*;
pub use store_reports::StoreReports;

use crate::bookings::store::{ImportOptions, ImportReport};
use crate::bookings::{Booking, Format as BookingsFormat};

/// Everything the HTTP API and the dashboard read and write, behind one
/// trait so the API can be tested with a fake; [`StoreReports`] is the
/// real one.
/// Methods block (SQLite): call them from `spawn_blocking`.
pub trait Reports: Send + Sync + 'static {
    /// The rows, and the instant the selected instruments' figures are final through.
    fn hours(&self, query: &HoursQuery) -> Result<HoursAnswer, QueryError>;
    /// Reconciliation progress and quarantine counts at `now`.
    fn health(&self, now: Timestamp) -> Result<Health, QueryError>;
    /// Quarantined payloads `filter` selects, newest first, received in
    /// `[from, to)` (dates in the site zone) when given.
    fn quarantine_list(
        &self,
        filter: &crate::quarantine::Filter,
        from: Option<Edge>,
        to: Option<Edge>,
    ) -> Result<Vec<crate::quarantine::Entry>, QueryError>;
    /// One quarantined payload with its bytes.
    fn quarantine_entry(&self, id: i64) -> Result<Option<crate::quarantine::Detail>, QueryError>;
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
    /// the body, reported as the "line" of a bad item). Bookings `scope`
    /// may not write are bad items.
    fn import_bookings(
        &self,
        bookings: Vec<(u64, Booking)>,
        options: ImportOptions,
        now: Timestamp,
        scope: &crate::units::Scope,
    ) -> Result<ImportReport, QueryError>;
    /// Parses a bookings file (CSV or iCalendar, as `bookings import` does:
    /// errors carry the file's line numbers) and imports it under `source`;
    /// bookings `scope` may not write are bad rows.
    fn import_bookings_file(
        &self,
        format: BookingsFormat,
        text: &str,
        source: &str,
        options: ImportOptions,
        now: Timestamp,
        scope: &crate::units::Scope,
    ) -> Result<ImportReport, QueryError>;
    /// Outcomes of the bookings starting in `range` that an admin should
    /// look at: no-show, instrument fault, overrun (the exceptions inbox).
    fn exception_outcomes(&self, range: &Range) -> Result<Vec<OutcomeRow>, QueryError>;
    /// Reconciled bookings starting in `range` that are not cancelled, as slots.
    fn booking_slots(&self, range: &Range) -> Result<Vec<BookingSlot>, QueryError>;
    /// An instrument's power summaries in `range`, its name and thresholds.
    fn power(&self, instrument: &str, range: &Range) -> Result<PowerTrace, QueryError>;
    /// Records a dashboard session under the SHA-256 of its secret.
    fn create_session(
        &self,
        id_sha256: &str,
        session: &DashSession,
        now: Timestamp,
    ) -> Result<(), QueryError>;
    /// The unexpired session whose secret hashes to `id_sha256`.
    fn find_session(
        &self,
        id_sha256: &str,
        now: Timestamp,
    ) -> Result<Option<DashSession>, QueryError>;
    /// Ends a session (logout).
    fn end_session(&self, id_sha256: &str) -> Result<(), QueryError>;
    /// The collector's signed checkpoints, oldest first (only the newest
    /// with `latest`).
    fn checkpoints(
        &self,
        latest: bool,
    ) -> Result<Vec<crate::evidence::checkpoint::Checkpoint>, QueryError>;
    /// A hub: applies a site's forwarded batch (`site` from its
    /// credential; docs/design/federation.md).
    fn federation_apply(
        &self,
        _site: &str,
        _key: Option<&crate::federation::history::SiteKey>,
        _batch: &crate::federation::Batch,
        _now: Timestamp,
    ) -> Result<crate::federation::Applied, QueryError> {
        Err(QueryError::BadParameter {
            parameter: "body",
            message: "this collector keeps no forwarded results".into(),
        })
    }
    /// A hub: per configured site (id, name), what it forwarded and how fresh.
    fn sites(
        &self,
        _configured: &[(String, String)],
    ) -> Result<Vec<crate::federation::SiteRow>, QueryError> {
        Ok(Vec::new())
    }
}
#[cfg(test)]
mod tests;

/// The [`StoreReports`] of the config's data dir (the database must be
/// open and migrated: `Store::open` does both).
pub fn store_reports(
    config: &crate::config::CollectorConfig,
) -> anyhow::Result<std::sync::Arc<StoreReports>> {
    let registry = crate::registry::Registry::from_config(config)
        .map_err(|errors| anyhow::anyhow!("invalid config: {errors}"))?;
    let parse = crate::bookings::ParseContext::from_config(config)?;
    materialize::ensure_indexes(&store_reports::open_writer(&config.data_dir)?)?;
    Ok(std::sync::Arc::new(StoreReports::new(
        &config.data_dir,
        std::sync::Arc::new(registry),
        parse,
    )))
}

/// `labhours-collector rebuild`: every instrument reconciled from the
/// beginning, beside a running collector or without one.
pub fn rebuild(config: &crate::config::CollectorConfig) -> anyhow::Result<materialize::Pass> {
    if !config.data_dir.join(crate::store::DB_FILE).exists() {
        anyhow::bail!("no database in {} (data_dir)", config.data_dir.display());
    }
    drop(crate::store::Store::open(
        &config.data_dir,
        crate::store::Durability::Full,
    )?);
    let registry = crate::registry::Registry::from_config(config)
        .map_err(|errors| anyhow::anyhow!("invalid config: {errors}"))?;
    let mut conn = store_reports::open_writer(&config.data_dir)?;
    Ok(materialize::rebuild(
        &mut conn,
        &registry,
        Timestamp::now().as_millisecond(),
    )?)
}

/// The [`Reports`] of `labhours-collector report`, beside a running
/// collector or without one: the database is opened (and migrated) and
/// whatever is still unreconciled is reconciled first, so the report is
/// up to date with what was stored.
pub fn open_reports(
    config: &crate::config::CollectorConfig,
) -> anyhow::Result<std::sync::Arc<dyn Reports>> {
    if !config.data_dir.join(crate::store::DB_FILE).exists() {
        anyhow::bail!(
            "no database in {} (data_dir): start the collector there first, or pass the config it runs with",
            config.data_dir.display()
        );
    }
    drop(crate::store::Store::open(
        &config.data_dir,
        crate::store::Durability::Full,
    )?);
    let reports = store_reports(config)?;
    reports.catch_up(Timestamp::now())?;
    Ok(reports)
}
