//! [`ScopedReports`]: the [`Reports`] a caller scoped to a unit reads and
//! writes through. Every method keeps to the scope, so no route or page
//! has its own filter to forget: an instrument outside it is answered as
//! unknown (404, so its existence is not told), lists leave it out, writes
//! naming it are refused.

use std::collections::BTreeSet;
use std::sync::Arc;

use jiff::Timestamp;

use super::{Organisation, Scope};
use crate::bookings::store::{ImportOptions, ImportReport};
use crate::bookings::{Booking, Format as BookingsFormat};
use crate::quarantine::{Detail, Entry, Filter};
use crate::verified::{
    BookingSlot, Correction, DashSession, Edge, Health, HoursAnswer, HoursQuery, HoursRows,
    InstrumentRow, NewCorrection, OutcomeRow, PowerTrace, QueryError, Range, Reports, SessionRow,
    TimelineView,
};

/// `inner` seen from `scope`.
pub struct ScopedReports {
    inner: Arc<dyn Reports>,
    org: Arc<Organisation>,
    scope: Scope,
}

impl std::fmt::Debug for ScopedReports {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScopedReports")
            .field("scope", &self.scope)
            .finish_non_exhaustive()
    }
}

impl ScopedReports {
    /// `inner` itself for [`Scope::All`], else `inner` held to the scope.
    pub fn wrap(inner: Arc<dyn Reports>, org: Arc<Organisation>, scope: Scope) -> Arc<dyn Reports> {
        match scope {
            Scope::All => inner,
            scope => Arc::new(Self { inner, org, scope }),
        }
    }

    /// `Ok` for an instrument in the scope; otherwise "no instrument".
    fn check(&self, instrument: &str) -> Result<(), QueryError> {
        if self.scope.allows(instrument) {
            Ok(())
        } else {
            Err(QueryError::UnknownInstrument(instrument.to_owned()))
        }
    }

    fn check_opt(&self, instrument: Option<&str>) -> Result<(), QueryError> {
        instrument.map_or(Ok(()), |i| self.check(i))
    }

    /// The agents reporting for instruments in the scope.
    fn agents(&self) -> Result<BTreeSet<String>, QueryError> {
        Ok(self
            .instruments(Timestamp::now())?
            .into_iter()
            .flat_map(|i| i.agents.into_iter().map(|a| a.agent_id))
            .collect())
    }
}

impl Reports for ScopedReports {
    fn hours(&self, query: &HoursQuery) -> Result<HoursAnswer, QueryError> {
        self.check_opt(query.instrument.as_deref())?;
        let mut query = query.clone();
        match &query.unit {
            // Only units in the scope exist for this caller.
            Some(asked) => match self.org.canonical(asked) {
                Some(id) if self.scope.allows_unit(&id) => query.unit = Some(id),
                _ => return Err(QueryError::UnknownUnit(asked.clone())),
            },
            None => query.unit = self.scope.unit().map(str::to_owned),
        }
        let mut answer = self.inner.hours(&query)?;
        // The unit filter above already keeps to the scope; this keeps a
        // row that would slip through (a bug) from leaking.
        if let HoursRows::Totals(rows) = &mut answer.rows {
            rows.retain(|r| {
                r.instrument_id
                    .as_deref()
                    .is_none_or(|i| self.scope.allows(i))
                    && r.unit.as_deref().is_none_or(|u| self.scope.allows_unit(u))
            });
        }
        Ok(answer)
    }

    /// Counts only: no instrument or agent is named.
    fn health(&self, now: Timestamp) -> Result<Health, QueryError> {
        self.inner.health(now)
    }

    /// Only payloads of agents reporting for instruments in the scope
    /// (payloads without an agent are hidden).
    fn quarantine_list(
        &self,
        filter: &Filter,
        from: Option<Edge>,
        to: Option<Edge>,
    ) -> Result<Vec<Entry>, QueryError> {
        let agents = self.agents()?;
        if let Some(a) = &filter.agent_id
            && !agents.contains(a)
        {
            return Ok(Vec::new());
        }
        // Filtered after the limit would come back short: ask for the most.
        let wide = Filter {
            limit: 10_000.max(filter.limit),
            ..filter.clone()
        };
        let mut rows = self.inner.quarantine_list(&wide, from, to)?;
        rows.retain(|e| e.agent_id.as_ref().is_some_and(|a| agents.contains(a)));
        rows.truncate(filter.limit);
        Ok(rows)
    }

    fn quarantine_entry(&self, id: i64) -> Result<Option<Detail>, QueryError> {
        let agents = self.agents()?;
        Ok(self.inner.quarantine_entry(id)?.filter(|d| {
            d.entry
                .agent_id
                .as_ref()
                .is_some_and(|a| agents.contains(a))
        }))
    }

    fn outcomes(
        &self,
        range: &Range,
        instrument: Option<&str>,
    ) -> Result<Vec<OutcomeRow>, QueryError> {
        self.check_opt(instrument)?;
        let mut rows = self.inner.outcomes(range, instrument)?;
        rows.retain(|r| self.scope.allows(&r.instrument_id));
        Ok(rows)
    }

    fn sessions(
        &self,
        range: &Range,
        instrument: Option<&str>,
    ) -> Result<Vec<SessionRow>, QueryError> {
        self.check_opt(instrument)?;
        let mut rows = self.inner.sessions(range, instrument)?;
        rows.retain(|r| self.scope.allows(&r.instrument_id));
        Ok(rows)
    }

    fn timeline(&self, instrument: &str, range: &Range) -> Result<TimelineView, QueryError> {
        self.check(instrument)?;
        self.inner.timeline(instrument, range)
    }

    fn instruments(&self, now: Timestamp) -> Result<Vec<InstrumentRow>, QueryError> {
        let mut rows = self.inner.instruments(now)?;
        rows.retain(|r| self.scope.allows(&r.instrument_id));
        Ok(rows)
    }

    fn add_correction(
        &self,
        correction: NewCorrection,
        created_by: &str,
        now: Timestamp,
    ) -> Result<Correction, QueryError> {
        self.check(&correction.instrument_id)?;
        self.inner.add_correction(correction, created_by, now)
    }

    fn corrections(
        &self,
        range: &Range,
        instrument: Option<&str>,
    ) -> Result<Vec<Correction>, QueryError> {
        self.check_opt(instrument)?;
        let mut rows = self.inner.corrections(range, instrument)?;
        rows.retain(|c| self.scope.allows(&c.correction.instrument_id));
        Ok(rows)
    }

    /// The store refuses what the scope may not write (it also knows which
    /// stored booking an id belongs to); the caller's `scope` is ignored.
    fn import_bookings(
        &self,
        bookings: Vec<(u64, Booking)>,
        options: ImportOptions,
        now: Timestamp,
        _scope: &Scope,
    ) -> Result<ImportReport, QueryError> {
        self.inner
            .import_bookings(bookings, options, now, &self.scope)
    }

    fn import_bookings_file(
        &self,
        format: BookingsFormat,
        text: &str,
        source: &str,
        options: ImportOptions,
        now: Timestamp,
        _scope: &Scope,
    ) -> Result<ImportReport, QueryError> {
        self.inner
            .import_bookings_file(format, text, source, options, now, &self.scope)
    }

    fn exception_outcomes(&self, range: &Range) -> Result<Vec<OutcomeRow>, QueryError> {
        let mut rows = self.inner.exception_outcomes(range)?;
        rows.retain(|r| self.scope.allows(&r.instrument_id));
        Ok(rows)
    }

    fn booking_slots(&self, range: &Range) -> Result<Vec<BookingSlot>, QueryError> {
        let mut rows = self.inner.booking_slots(range)?;
        rows.retain(|r| self.scope.allows(&r.instrument_id));
        Ok(rows)
    }

    fn power(&self, instrument: &str, range: &Range) -> Result<PowerTrace, QueryError> {
        self.check(instrument)?;
        self.inner.power(instrument, range)
    }

    fn create_session(
        &self,
        id_sha256: &str,
        session: &DashSession,
        now: Timestamp,
    ) -> Result<(), QueryError> {
        self.inner.create_session(id_sha256, session, now)
    }

    fn find_session(
        &self,
        id_sha256: &str,
        now: Timestamp,
    ) -> Result<Option<DashSession>, QueryError> {
        self.inner.find_session(id_sha256, now)
    }

    fn end_session(&self, id_sha256: &str) -> Result<(), QueryError> {
        self.inner.end_session(id_sha256)
    }

    /// None: a checkpoint is signed over every agent of the collector,
    /// so it names agents outside the scope (docs/evidence.md).
    fn checkpoints(
        &self,
        _latest: bool,
    ) -> Result<Vec<crate::evidence::checkpoint::Checkpoint>, QueryError> {
        Ok(Vec::new())
    }

    /// Writes come with a site credential, never through a scoped token.
    fn federation_apply(
        &self,
        site: &str,
        _key: Option<&crate::federation::history::SiteKey>,
        _batch: &crate::federation::Batch,
        _now: Timestamp,
    ) -> Result<crate::federation::Applied, QueryError> {
        Err(QueryError::UnknownUnit(site.to_owned()))
    }

    /// Only the sites in the scope.
    fn sites(
        &self,
        configured: &[(String, String)],
    ) -> Result<Vec<crate::federation::SiteRow>, QueryError> {
        let mut rows = self.inner.sites(configured)?;
        rows.retain(|r| self.scope.allows_unit(&r.site_id));
        Ok(rows)
    }
}
