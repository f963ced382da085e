//! §7 corrections: an admin assigns unbooked usage in `[start, end)` of an
//! instrument to a user, group, usage type or existing booking, or attaches
//! a note. Evidence is never edited; every correction is kept with who,
//! when and why, and reports show corrected figures beside uncorrected ones.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::bookings::UsageType;

/// What an admin submits (`POST /api/v1/corrections`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewCorrection {
    /// A configured (or seen) instrument.
    #[schema(pattern = r"\S")]
    pub instrument_id: String,
    #[schema(value_type = String, format = DateTime)]
    pub start: Timestamp,
    #[schema(value_type = String, format = DateTime)]
    pub end: Timestamp,
    /// Who used the instrument, when known.
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub group: Option<String>,
    /// The usage type the unbooked usage counts as.
    #[serde(default)]
    pub usage_type: Option<UsageType>,
    /// An existing booking the usage belongs to (its usage type applies
    /// unless `usage_type` is given).
    #[serde(default)]
    pub booking_id: Option<String>,
    /// Why: required and not blank, shown in the audit trail.
    #[schema(pattern = r"\S")]
    pub reason: String,
}

/// A recorded correction. Its OpenAPI schema is [`CorrectionSchema`]'s.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Correction {
    pub id: i64,
    #[serde(flatten)]
    pub correction: NewCorrection,
    /// The token name of the admin who made it.
    pub created_by: String,
    pub created_at: Timestamp,
}

/// The OpenAPI schema of a [`Correction`], field by field: derived from the
/// struct, the flattened [`NewCorrection`] would be an `allOf` with a schema
/// that forbids other properties, which no correction could match. A test
/// checks that it lists exactly the fields a correction is written with.
#[derive(Debug, ToSchema)]
#[schema(as = Correction)]
#[allow(dead_code)]
pub struct CorrectionSchema {
    id: i64,
    instrument_id: String,
    #[schema(value_type = String, format = DateTime)]
    start: Timestamp,
    #[schema(value_type = String, format = DateTime)]
    end: Timestamp,
    /// Who used the instrument, when known.
    user: Option<String>,
    group: Option<String>,
    /// The usage type the unbooked usage counts as.
    usage_type: Option<UsageType>,
    /// An existing booking the usage belongs to.
    booking_id: Option<String>,
    /// Why, as the admin said.
    reason: String,
    /// The token name of the admin who made it.
    created_by: String,
    #[schema(value_type = String, format = DateTime)]
    created_at: Timestamp,
}

use rusqlite::{Connection, params};

use super::query::QueryError;
use crate::reconcile::Ms;
use crate::store::derived::mark_dirty;

fn bad(parameter: &'static str, message: impl Into<String>) -> QueryError {
    QueryError::BadParameter {
        parameter,
        message: message.into(),
    }
}

/// Checks and records a correction, and marks its instrument for
/// re-reconciliation from its start. `known` says whether an instrument id
/// exists (configured or seen).
pub fn add(
    conn: &Connection,
    c: NewCorrection,
    created_by: &str,
    now: Timestamp,
    known: impl Fn(&str) -> bool,
) -> Result<Correction, QueryError> {
    if !known(&c.instrument_id) {
        return Err(bad(
            "instrument_id",
            format!("no instrument {:?}", c.instrument_id),
        ));
    }
    if c.end <= c.start {
        return Err(bad("end", "must be after start"));
    }
    if c.reason.trim().is_empty() {
        return Err(bad(
            "reason",
            "say why: the reason is kept in the audit trail",
        ));
    }
    if let Some(booking) = &c.booking_id {
        let on: Option<String> = conn
            .query_row(
                "SELECT instrument_id FROM bookings WHERE booking_id = ?1",
                [booking],
                |r| r.get(0),
            )
            .ok();
        match on {
            None => return Err(bad("booking_id", format!("no booking {booking:?}"))),
            Some(i) if i != c.instrument_id => {
                return Err(bad(
                    "booking_id",
                    format!("booking {booking:?} is on instrument {i:?}"),
                ));
            }
            Some(_) => {}
        }
    }
    let (start, end): (Ms, Ms) = (c.start.as_millisecond(), c.end.as_millisecond());
    conn.execute(
        "INSERT INTO corrections (instrument_id, start_ms, end_ms, user, group_name, usage_type,
             booking_id, reason, created_by, created_at_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        params![
            c.instrument_id,
            start,
            end,
            c.user,
            c.group,
            c.usage_type.map(|t| t.as_str()),
            c.booking_id,
            c.reason,
            created_by,
            now.as_millisecond(),
        ],
    )?;
    mark_dirty(conn, &c.instrument_id, start)?;
    let id = conn.last_insert_rowid();
    Ok(Correction {
        id,
        correction: NewCorrection {
            start: Timestamp::from_millisecond(start).unwrap_or(c.start),
            end: Timestamp::from_millisecond(end).unwrap_or(c.end),
            ..c
        },
        created_by: created_by.to_owned(),
        created_at: now,
    })
}

/// Corrections overlapping `[from, to)`, oldest first.
pub fn list(
    conn: &Connection,
    from: Ms,
    to: Ms,
    instrument: Option<&str>,
) -> Result<Vec<Correction>, QueryError> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, instrument_id, start_ms, end_ms, user, group_name, usage_type, booking_id,
                reason, created_by, created_at_ms
         FROM corrections
         WHERE end_ms > ?1 AND start_ms < ?2 AND (?3 IS NULL OR instrument_id = ?3)
         ORDER BY id",
    )?;
    let time = |ms: Ms| Timestamp::from_millisecond(ms).unwrap_or(Timestamp::UNIX_EPOCH);
    let rows = stmt.query_map(params![from, to, instrument], |r| {
        Ok(Correction {
            id: r.get(0)?,
            correction: NewCorrection {
                instrument_id: r.get(1)?,
                start: time(r.get(2)?),
                end: time(r.get(3)?),
                user: r.get(4)?,
                group: r.get(5)?,
                usage_type: r
                    .get::<_, Option<String>>(6)?
                    .as_deref()
                    .and_then(UsageType::parse),
                booking_id: r.get(7)?,
                reason: r.get(8)?,
            },
            created_by: r.get(9)?,
            created_at: time(r.get(10)?),
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}
