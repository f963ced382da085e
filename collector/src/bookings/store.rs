//! Upserting bookings into the collector's database (migration 0002).
//!
//! [`import`] compares each booking with the stored row of the same
//! `booking_id` and, in one transaction, inserts the new ones and updates
//! the changed ones; unchanged rows are not written (their `imported_at`
//! stays). No other row is touched: a booking missing from the file stays.

use std::collections::{HashMap, HashSet};

use jiff::Timestamp;
use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};

use crate::store::derived::mark_dirty;

use super::{Booking, BookingStatus, Parsed, Progress, RowError, UsageType};

/// How to apply a parsed file.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ImportOptions {
    /// Compute the report, write nothing.
    pub dry_run: bool,
    /// Apply the good bookings even when some rows are bad.
    pub skip_invalid: bool,
}

/// A booking whose stored row differs, and in which fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Updated {
    pub booking_id: String,
    pub fields: Vec<&'static str>,
}

/// An instrument the collector does not monitor, and how many of the
/// file's good bookings name it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct NotMonitored {
    pub instrument_id: String,
    pub bookings: u64,
}

/// What an import changed (or, when not `applied`, would change).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ImportReport {
    pub inserted: Vec<String>,
    pub updated: Vec<Updated>,
    pub unchanged: Vec<String>,
    /// Instruments not monitored (accepted; outcome `not_monitored`), by id.
    pub not_monitored: Vec<NotMonitored>,
    /// Every bad row or event, in file order.
    pub errors: Vec<RowError>,
    /// What was imported by a guess, with its line (docs/bookings.md).
    pub warnings: Vec<RowError>,
    /// Whether the changes were written (false for a dry run, and for a
    /// file with errors without `skip_invalid`).
    pub applied: bool,
}

impl ImportReport {
    /// `12 inserted, 3 updated, 40 unchanged` (`would be` for what was not applied).
    pub fn summary(&self) -> String {
        format!(
            "{} inserted, {} updated, {} unchanged",
            self.inserted.len(),
            self.updated.len(),
            self.unchanged.len()
        )
    }

    /// `3 booking(s) of instruments not monitored (…): nmr-700 (1), xrd-9 (2)`, if any.
    pub fn not_monitored_summary(&self) -> Option<String> {
        let total: u64 = self.not_monitored.iter().map(|n| n.bookings).sum();
        (total > 0).then(|| {
            let ids: Vec<String> = self
                .not_monitored
                .iter()
                .map(|n| format!("{} ({})", n.instrument_id, n.bookings))
                .collect();
            format!(
                "{total} booking(s) of instruments not monitored (kept, outcome not_monitored; \
                 check for typos): {}",
                ids.join(", ")
            )
        })
    }
}

/// Reads one stored booking (a cached statement: [`import`] calls it per row).
pub fn get(conn: &Connection, booking_id: &str) -> rusqlite::Result<Option<Booking>> {
    conn.prepare_cached(
        "SELECT booking_id, instrument_id, user, group_name, usage_type, start_ms, end_ms, status
         FROM bookings WHERE booking_id = ?1",
    )?
    .query_row([booking_id], row_to_booking)
    .optional()
}

/// Every stored booking, by start then id.
pub fn all(conn: &Connection) -> rusqlite::Result<Vec<Booking>> {
    let mut stmt = conn.prepare(
        "SELECT booking_id, instrument_id, user, group_name, usage_type, start_ms, end_ms, status
         FROM bookings ORDER BY start_ms, booking_id",
    )?;
    stmt.query_map([], row_to_booking)?.collect()
}

fn row_to_booking(row: &rusqlite::Row<'_>) -> rusqlite::Result<Booking> {
    let bad = |i: usize, what: String| {
        rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, what.into())
    };
    let usage: String = row.get(4)?;
    let status: String = row.get(7)?;
    let ts = |i: usize| -> rusqlite::Result<Timestamp> {
        let ms: i64 = row.get(i)?;
        Timestamp::from_millisecond(ms).map_err(|e| bad(i, e.to_string()))
    };
    Ok(Booking {
        booking_id: row.get(0)?,
        instrument_id: row.get(1)?,
        user: row.get(2)?,
        group: row.get(3)?,
        usage_type: UsageType::parse(&usage).ok_or_else(|| bad(4, usage.clone()))?,
        start: ts(5)?,
        end: ts(6)?,
        status: BookingStatus::parse(&status).ok_or_else(|| bad(7, status.clone()))?,
    })
}

fn changed_fields(old: &Booking, new: &Booking) -> Vec<&'static str> {
    let mut fields = Vec::new();
    if old.instrument_id != new.instrument_id {
        fields.push("instrument_id");
    }
    if old.user != new.user {
        fields.push("user");
    }
    if old.group != new.group {
        fields.push("group");
    }
    if old.usage_type != new.usage_type {
        fields.push("usage_type");
    }
    if old.start != new.start {
        fields.push("start");
    }
    if old.end != new.end {
        fields.push("end");
    }
    if old.status != new.status {
        fields.push("status");
    }
    fields
}

/// Upserts `parsed`'s bookings by booking_id in one transaction, `source`
/// (the file name) and `now` recorded on every written row. With errors in
/// `parsed` and no `skip_invalid`, or with `dry_run`, nothing is written but
/// the report still says what would change.
pub fn import(
    conn: &mut Connection,
    parsed: Parsed,
    source: &str,
    options: ImportOptions,
    now: Timestamp,
) -> rusqlite::Result<ImportReport> {
    import_counted(conn, parsed, source, options, now, &Progress::default())
}

/// [`import`], counting the bookings compared in `progress`.
pub fn import_counted(
    conn: &mut Connection,
    parsed: Parsed,
    source: &str,
    options: ImportOptions,
    now: Timestamp,
    progress: &Progress,
) -> rusqlite::Result<ImportReport> {
    let write = !options.dry_run && (parsed.errors.is_empty() || options.skip_invalid);
    let mut report = ImportReport {
        errors: parsed.errors,
        warnings: parsed.warnings,
        not_monitored: parsed
            .not_monitored
            .into_iter()
            .map(|(instrument_id, bookings)| NotMonitored {
                instrument_id,
                bookings,
            })
            .collect(),
        applied: write,
        ..ImportReport::default()
    };
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let mut seen: HashSet<&str> = HashSet::with_capacity(parsed.bookings.len());
    // Earliest changed start per instrument: one dirty mark each, at the end.
    let mut dirty: HashMap<String, i64> = HashMap::new();
    for (_, booking) in &parsed.bookings {
        progress.stored_one();
        if !seen.insert(&booking.booking_id) {
            continue; // parsers report duplicates; never apply one twice
        }
        let old = get(&tx, &booking.booking_id)?;
        match &old {
            Some(old) => {
                let fields = changed_fields(old, booking);
                if fields.is_empty() {
                    report.unchanged.push(booking.booking_id.clone());
                    continue;
                }
                report.updated.push(Updated {
                    booking_id: booking.booking_id.clone(),
                    fields,
                });
            }
            None => report.inserted.push(booking.booking_id.clone()),
        }
        if write {
            // Both the old and the new place of the booking are reconciled again.
            for b in old.iter().chain([booking]) {
                let start = b.start.as_millisecond();
                match dirty.get_mut(&b.instrument_id) {
                    Some(from) => *from = (*from).min(start),
                    None => {
                        dirty.insert(b.instrument_id.clone(), start);
                    }
                }
            }
            tx.prepare_cached(
                "INSERT INTO bookings (booking_id, instrument_id, user, group_name, usage_type,
                                       start_ms, end_ms, status, imported_at_ms, source)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
                 ON CONFLICT (booking_id) DO UPDATE SET
                    instrument_id = excluded.instrument_id, user = excluded.user,
                    group_name = excluded.group_name, usage_type = excluded.usage_type,
                    start_ms = excluded.start_ms, end_ms = excluded.end_ms,
                    status = excluded.status, imported_at_ms = excluded.imported_at_ms,
                    source = excluded.source",
            )?
            .execute(params![
                booking.booking_id,
                booking.instrument_id,
                booking.user,
                booking.group,
                booking.usage_type.as_str(),
                booking.start.as_millisecond(),
                booking.end.as_millisecond(),
                booking.status.as_str(),
                now.as_millisecond(),
                source,
            ])?;
        }
    }
    for (instrument_id, from) in dirty {
        mark_dirty(&tx, &instrument_id, from)?;
    }
    if write {
        tx.commit()?;
    } else {
        tx.rollback()?;
    }
    Ok(report)
}
