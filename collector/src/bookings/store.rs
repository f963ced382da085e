//! Upserting bookings into the collector's database (migration 0002).
//!
//! [`import`] compares each booking with the stored row of the same
//! `booking_id` and, in one transaction, inserts the new ones and updates
//! the changed ones; unchanged rows are not written (their `imported_at`
//! stays). No other row is touched: a booking missing from the file stays.

use std::collections::HashSet;

use jiff::Timestamp;
use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;

use crate::store::derived::mark_dirty;

use super::{Booking, BookingStatus, Parsed, RowError, UsageType};

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

/// What an import changed (or, when not `applied`, would change).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ImportReport {
    pub inserted: Vec<String>,
    pub updated: Vec<Updated>,
    pub unchanged: Vec<String>,
    /// Every bad row or event, in file order.
    pub errors: Vec<RowError>,
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
}

/// Reads one stored booking.
pub fn get(conn: &Connection, booking_id: &str) -> rusqlite::Result<Option<Booking>> {
    conn.query_row(
        "SELECT booking_id, instrument_id, user, group_name, usage_type, start_ms, end_ms, status
         FROM bookings WHERE booking_id = ?1",
        [booking_id],
        row_to_booking,
    )
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
    let write = !options.dry_run && (parsed.errors.is_empty() || options.skip_invalid);
    let mut report = ImportReport {
        errors: parsed.errors,
        applied: write,
        ..ImportReport::default()
    };
    let tx = conn.transaction()?;
    let mut seen = HashSet::new();
    for (_, booking) in &parsed.bookings {
        if !seen.insert(booking.booking_id.clone()) {
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
                mark_dirty(&tx, &b.instrument_id, b.start.as_millisecond())?;
            }
            tx.execute(
                "INSERT INTO bookings (booking_id, instrument_id, user, group_name, usage_type,
                                       start_ms, end_ms, status, imported_at_ms, source)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
                 ON CONFLICT (booking_id) DO UPDATE SET
                    instrument_id = excluded.instrument_id, user = excluded.user,
                    group_name = excluded.group_name, usage_type = excluded.usage_type,
                    start_ms = excluded.start_ms, end_ms = excluded.end_ms,
                    status = excluded.status, imported_at_ms = excluded.imported_at_ms,
                    source = excluded.source",
                params![
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
                ],
            )?;
        }
    }
    if write {
        tx.commit()?;
    } else {
        tx.rollback()?;
    }
    Ok(report)
}
