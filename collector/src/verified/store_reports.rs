//! The real [`Reports`]: the collector's SQLite database and the registry.
//!
//! Reads use a small pool of read-only connections (WAL lets them run
//! beside ingest). Writes (bookings, corrections) go through one writer
//! connection and are reconciled before the answer, so what an admin
//! changed is visible in the next read.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::Timestamp;
use rusqlite::{Connection, OpenFlags, OptionalExtension};

use super::dashboard::{self, DashSession, PowerTrace};
use super::materialize::{Pass, catch_up, reconcile_changed_policies};
use super::query::{
    BookingSlot, Edge, HoursAnswer, HoursQuery, InstrumentRow, OutcomeRow, QueryError, Range,
    SessionRow, TimelineView,
};
use super::{Correction, Health, NewCorrection, Reports, corrections, hours, views};
use crate::bookings::store::{ImportOptions, ImportReport};
use crate::bookings::{Booking, Format as BookingsFormat, ParseContext, check};
use crate::quarantine;
use crate::registry::Registry;
use crate::store::DB_FILE;
use crate::units::Scope;

/// How long a connection waits for another writer (ingest, reconciler).
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Idle read connections kept.
const POOL_SIZE: usize = 8;

/// [`Reports`] over the store at `data_dir`.
#[derive(Debug)]
pub struct StoreReports {
    path: PathBuf,
    registry: Arc<Registry>,
    parse: ParseContext,
    readers: Mutex<Vec<Connection>>,
    writer: Mutex<Option<Connection>>,
    /// Whether results made under another policy were redone (once per start).
    policies_checked: AtomicBool,
}

/// A read-write connection for the reconciler and the API's writes.
/// Results can be rebuilt, so a power cut may lose the last passes but
/// never corrupts (WAL, synchronous NORMAL); corrections are written with
/// their own FULL sync.
pub fn open_writer(data_dir: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open_with_flags(
        data_dir.join(DB_FILE),
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    // Rewriting a year of results touches many pages: keep them in memory
    // (64 MiB) instead of spilling them to the WAL mid-transaction.
    conn.pragma_update(None, "cache_size", -65_536)?;
    Ok(conn)
}

impl StoreReports {
    /// The database must exist and be migrated (`Store::open` does both).
    pub fn new(data_dir: &Path, registry: Arc<Registry>, parse: ParseContext) -> Self {
        Self {
            path: data_dir.to_owned(),
            registry,
            parse,
            readers: Mutex::new(Vec::new()),
            writer: Mutex::new(None),
            policies_checked: AtomicBool::new(false),
        }
    }

    /// The registry it answers with (shared with the InfluxDB sink).
    pub fn registry(&self) -> Arc<Registry> {
        self.registry.clone()
    }

    fn read<T>(
        &self,
        f: impl FnOnce(&Connection, &Registry) -> Result<T, QueryError>,
    ) -> Result<T, QueryError> {
        let pooled = self.readers.lock().expect("pool lock").pop();
        let conn = match pooled {
            Some(c) => c,
            None => {
                let c = Connection::open_with_flags(
                    self.path.join(DB_FILE),
                    OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
                )?;
                c.busy_timeout(BUSY_TIMEOUT)?;
                c
            }
        };
        let out = f(&conn, &self.registry);
        let mut pool = self.readers.lock().expect("pool lock");
        if pool.len() < POOL_SIZE {
            pool.push(conn);
        }
        out
    }

    fn write<T>(
        &self,
        f: impl FnOnce(&mut Connection, &Registry) -> Result<T, QueryError>,
    ) -> Result<T, QueryError> {
        let mut slot = self.writer.lock().expect("writer lock");
        if slot.is_none() {
            *slot = Some(open_writer(&self.path)?);
        }
        let conn = slot.as_mut().expect("opened above");
        f(conn, &self.registry)
    }

    /// Reconciles whatever is dirty (the background reconciler's step).
    pub fn catch_up(&self, now: Timestamp) -> Result<Pass, QueryError> {
        self.write(|conn, registry| {
            let now = now.as_millisecond();
            let mut pass = Pass::default();
            if !self.policies_checked.load(Ordering::Relaxed) {
                pass += reconcile_changed_policies(conn, registry, now)?;
                self.policies_checked.store(true, Ordering::Relaxed);
            }
            pass += catch_up(conn, registry, now)?;
            Ok(pass)
        })
    }
}

impl Reports for StoreReports {
    fn hours(&self, query: &HoursQuery) -> Result<HoursAnswer, QueryError> {
        self.read(|conn, registry| hours::query(conn, registry, query))
    }

    fn health(&self, now: Timestamp) -> Result<Health, QueryError> {
        self.read(|conn, _| Ok(super::health::health(conn, now)?))
    }

    fn quarantine_list(
        &self,
        filter: &quarantine::Filter,
        from: Option<Edge>,
        to: Option<Edge>,
    ) -> Result<Vec<quarantine::Entry>, QueryError> {
        self.read(|conn, registry| {
            let zone = registry.site_zone();
            let filter = quarantine::Filter {
                from_ms: from.map(|e| hours::resolve(e, zone, "from")).transpose()?,
                to_ms: to.map(|e| hours::resolve(e, zone, "to")).transpose()?,
                ..filter.clone()
            };
            Ok(quarantine::list(conn, &filter)?)
        })
    }

    fn checkpoints(
        &self,
        latest: bool,
    ) -> Result<Vec<crate::evidence::checkpoint::Checkpoint>, QueryError> {
        self.read(|conn, _| Ok(crate::evidence::checkpoint::list(conn, latest)?))
    }

    fn quarantine_entry(&self, id: i64) -> Result<Option<quarantine::Detail>, QueryError> {
        self.read(|conn, _| Ok(quarantine::get(conn, id)?))
    }

    fn outcomes(
        &self,
        range: &Range,
        instrument: Option<&str>,
    ) -> Result<Vec<OutcomeRow>, QueryError> {
        self.read(|conn, registry| views::outcomes(conn, registry, range, instrument))
    }

    fn sessions(
        &self,
        range: &Range,
        instrument: Option<&str>,
    ) -> Result<Vec<SessionRow>, QueryError> {
        self.read(|conn, registry| views::sessions(conn, registry, range, instrument))
    }

    fn timeline(&self, instrument: &str, range: &Range) -> Result<TimelineView, QueryError> {
        self.read(|conn, registry| views::timeline(conn, registry, instrument, range))
    }

    fn instruments(&self, now: Timestamp) -> Result<Vec<InstrumentRow>, QueryError> {
        self.read(|conn, registry| views::instruments(conn, registry, now))
    }

    fn add_correction(
        &self,
        correction: NewCorrection,
        created_by: &str,
        now: Timestamp,
    ) -> Result<Correction, QueryError> {
        self.write(|conn, registry| {
            let known = hours::select(conn, registry, None, None)?
                .into_iter()
                .map(|i| (i.id.clone(), i))
                .collect::<std::collections::HashMap<_, _>>();
            // Corrections cannot be rebuilt from anything: sync them fully.
            conn.pragma_update(None, "synchronous", "FULL")?;
            let added = (|| {
                let tx =
                    conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
                let c = corrections::add(&tx, correction, created_by, now, |id| {
                    known.get(id).cloned()
                })?;
                tx.commit()?;
                Ok::<_, QueryError>(c)
            })();
            conn.pragma_update(None, "synchronous", "NORMAL")?;
            let c = added?;
            catch_up(conn, registry, now.as_millisecond())?;
            Ok(c)
        })
    }

    fn corrections(
        &self,
        range: &Range,
        instrument: Option<&str>,
    ) -> Result<Vec<Correction>, QueryError> {
        self.read(|conn, registry| {
            let within = hours::resolve_range(range, registry.site_zone())?;
            corrections::list(conn, within.start, within.end, instrument)
        })
    }

    fn import_bookings(
        &self,
        bookings: Vec<(u64, Booking)>,
        options: ImportOptions,
        now: Timestamp,
        scope: &Scope,
    ) -> Result<ImportReport, QueryError> {
        let mut parsed = check(bookings, &self.parse);
        self.write(|conn, registry| {
            refuse_outside(conn, &mut parsed, scope)?;
            let report = crate::bookings::store::import(conn, parsed, "api", options, now)?;
            if report.applied {
                catch_up(conn, registry, now.as_millisecond())?;
            }
            Ok(report)
        })
    }

    fn import_bookings_file(
        &self,
        format: BookingsFormat,
        text: &str,
        source: &str,
        options: ImportOptions,
        now: Timestamp,
        scope: &Scope,
    ) -> Result<ImportReport, QueryError> {
        let mut parsed = crate::bookings::parse(format, text, &self.parse.clone().at(now));
        self.write(|conn, registry| {
            refuse_outside(conn, &mut parsed, scope)?;
            let report = crate::bookings::store::import(conn, parsed, source, options, now)?;
            if report.applied {
                catch_up(conn, registry, now.as_millisecond())?;
            }
            Ok(report)
        })
    }

    fn exception_outcomes(&self, range: &Range) -> Result<Vec<OutcomeRow>, QueryError> {
        self.read(|conn, registry| views::exception_outcomes(conn, registry, range))
    }

    fn booking_slots(&self, range: &Range) -> Result<Vec<BookingSlot>, QueryError> {
        self.read(|conn, registry| views::booking_slots(conn, registry, range))
    }

    fn power(&self, instrument: &str, range: &Range) -> Result<PowerTrace, QueryError> {
        self.read(|conn, registry| dashboard::power(conn, registry, instrument, range))
    }

    fn create_session(
        &self,
        id_sha256: &str,
        session: &DashSession,
        now: Timestamp,
    ) -> Result<(), QueryError> {
        self.write(|conn, _| dashboard::create_session(conn, id_sha256, session, now))
    }

    fn find_session(
        &self,
        id_sha256: &str,
        now: Timestamp,
    ) -> Result<Option<DashSession>, QueryError> {
        self.read(|conn, _| dashboard::find_session(conn, id_sha256, now))
    }

    fn end_session(&self, id_sha256: &str) -> Result<(), QueryError> {
        self.write(|conn, _| dashboard::end_session(conn, id_sha256))
    }

    fn federation_apply(
        &self,
        site: &str,
        key: Option<&crate::federation::history::SiteKey>,
        batch: &crate::federation::Batch,
        now: Timestamp,
    ) -> Result<crate::federation::Applied, QueryError> {
        use crate::federation::apply::{ApplyError, apply};
        self.write(|conn, _| {
            apply(conn, site, key, batch, now.as_millisecond()).map_err(|e| match e {
                ApplyError::Bad(message) => QueryError::BadParameter {
                    parameter: "body",
                    message,
                },
                ApplyError::Db(e) => QueryError::Db(e),
            })
        })
    }

    fn sites(
        &self,
        configured: &[(String, String)],
    ) -> Result<Vec<crate::federation::SiteRow>, QueryError> {
        self.read(|conn, _| Ok(crate::federation::apply::sites(conn, configured)?))
    }
}

/// Moves the bookings a caller scoped to a unit may not write to the
/// errors: those naming an instrument outside the unit, and those whose
/// `booking_id` is stored for such an instrument (an upsert would move it).
/// The message does not say whether the instrument exists.
fn refuse_outside(
    conn: &Connection,
    parsed: &mut crate::bookings::Parsed,
    scope: &Scope,
) -> Result<(), QueryError> {
    let Some(unit) = scope.unit() else {
        return Ok(());
    };
    let mut stored =
        conn.prepare_cached("SELECT instrument_id FROM bookings WHERE booking_id = ?1")?;
    let mut kept = Vec::with_capacity(parsed.bookings.len());
    for (line, booking) in std::mem::take(&mut parsed.bookings) {
        let stored_for: Option<String> = stored
            .query_row([&booking.booking_id], |r| r.get(0))
            .optional()?;
        let message = if !scope.allows(&booking.instrument_id) {
            Some(format!(
                "instrument_id {:?} is not in unit {unit:?}, the only one this token may write to",
                booking.instrument_id
            ))
        } else if stored_for.is_some_and(|i| !scope.allows(&i)) {
            Some(format!(
                "booking_id {:?} is taken by a booking outside unit {unit:?}; use another booking_id",
                booking.booking_id
            ))
        } else {
            None
        };
        match message {
            Some(message) => {
                parsed.not_monitored.remove(&booking.instrument_id);
                parsed
                    .errors
                    .push(crate::bookings::RowError { line, message });
            }
            None => kept.push((line, booking)),
        }
    }
    parsed.bookings = kept;
    parsed.errors.sort_by_key(|e| e.line);
    Ok(())
}
