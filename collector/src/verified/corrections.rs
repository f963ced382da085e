//! §7 corrections: an admin assigns unbooked usage in `[start, end)` of an
//! instrument to a user, group, usage type or existing booking, attaches a
//! note, or moves usage §4 attributed to one booking to another (disputed
//! time: `from_booking_id` → `booking_id`). Evidence is never edited; every
//! correction is kept with who, when and why, and reports show corrected
//! figures beside uncorrected ones.

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
    /// Makes this a move: the usage attributed to this booking in
    /// `[start, end)` counts as `booking_id`'s in the corrected figures.
    /// Both bookings on the instrument; the whole interval must be usage
    /// attributed to this one; `user`, `group` and `usage_type` not given.
    #[serde(default)]
    pub from_booking_id: Option<String>,
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
    /// Set on a move: the booking the usage was taken from.
    from_booking_id: Option<String>,
    /// Why, as the admin said.
    reason: String,
    /// The token name of the admin who made it.
    created_by: String,
    #[schema(value_type = String, format = DateTime)]
    created_at: Timestamp,
}

use rusqlite::{Connection, OptionalExtension, params};

use super::materialize::{load, restart_point};
use super::query::QueryError;
use super::views::local;
use crate::reconcile::{Attribution, Instead, Interval, Move, Ms};
use crate::registry::Instrument;
use crate::store::derived::mark_dirty;

fn bad(parameter: &'static str, message: impl Into<String>) -> QueryError {
    QueryError::BadParameter {
        parameter,
        message: message.into(),
    }
}

/// Booking `id`'s start and whether it is cancelled; it must be on
/// `instrument`, else the error names `parameter`.
fn booking_on(
    conn: &Connection,
    parameter: &'static str,
    id: &str,
    instrument: &str,
) -> Result<(Ms, bool), QueryError> {
    let found: Option<(String, Ms, String)> = conn
        .query_row(
            "SELECT instrument_id, start_ms, status FROM bookings WHERE booking_id = ?1",
            [id],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()?;
    match found {
        None => Err(bad(parameter, format!("no booking {id:?}"))),
        Some((i, _, _)) if i != instrument => Err(bad(
            parameter,
            format!("booking {id:?} is on instrument {i:?}, not {instrument:?}"),
        )),
        Some((_, start, status)) => Ok((start, status == "cancelled")),
    }
}

/// Checks that every instant of the move's interval is usage attributed
/// to its source booking, as the evidence stands and after the moves made
/// before it (reconciled on the spot); otherwise says which stretch is not
/// and what it is instead.
fn check_move(conn: &Connection, inst: &Instrument, m: &Move) -> Result<(), QueryError> {
    let loaded = load(conn, inst, restart_point(conn, inst, m.interval.start)?)?;
    let rec = loaded.reconcile(inst);
    let mut attribution = Attribution::new(&rec.segments);
    for earlier in &loaded.moves {
        attribution.apply(earlier);
    }
    attribution.check(m).map_err(|u| {
        let when = format!(
            "from {} to {}",
            local(u.interval.start, &inst.zone),
            local(u.interval.end, &inst.zone)
        );
        let what = match u.instead {
            Instead::NoUsage => "there is no usage (no kept session) to move".to_owned(),
            Instead::Unbooked => "the usage is unbooked (no booking took it): assign it \
                                  with booking_id alone, without from_booking_id"
                .to_owned(),
            Instead::Booking(b) => format!("the usage is attributed to booking {b:?}"),
        };
        bad(
            "from_booking_id",
            format!(
                "{when} {what}; a move takes only usage attributed to {:?} \
                 (see its booking outcome's first_use, last_use and the sessions' segments)",
                m.from
            ),
        )
    })
}

/// Checks and records a correction, and marks its instrument for
/// re-reconciliation from its start (a move: or the start of the booking it
/// moves usage to, if earlier). `instrument` finds an instrument that
/// exists (configured or seen).
pub fn add(
    conn: &Connection,
    c: NewCorrection,
    created_by: &str,
    now: Timestamp,
    instrument: impl Fn(&str) -> Option<Instrument>,
) -> Result<Correction, QueryError> {
    let Some(inst) = instrument(&c.instrument_id) else {
        return Err(bad(
            "instrument_id",
            format!("no instrument {:?}", c.instrument_id),
        ));
    };
    if c.end <= c.start {
        return Err(bad("end", "must be after start"));
    }
    if c.reason.trim().is_empty() {
        return Err(bad(
            "reason",
            "say why: the reason is kept in the audit trail",
        ));
    }
    let to = match &c.booking_id {
        Some(booking) => Some(booking_on(conn, "booking_id", booking, &c.instrument_id)?),
        None => None,
    };
    let (start, end): (Ms, Ms) = (c.start.as_millisecond(), c.end.as_millisecond());
    // Reconciled again from the earliest instant whose figures change: a
    // move also changes the outcome of the booking it moves usage to.
    let mut dirty_from = start;
    if let Some(from) = &c.from_booking_id {
        if from.trim().is_empty() {
            return Err(bad(
                "from_booking_id",
                "name the booking the usage is taken from (or leave from_booking_id out to assign unbooked usage)",
            ));
        }
        let Some((to_start, to_cancelled)) = to else {
            return Err(bad(
                "booking_id",
                "a move (from_booking_id) needs the booking the usage goes to",
            ));
        };
        for (given, name) in [
            (c.user.is_some(), "user"),
            (c.group.is_some(), "group"),
            (c.usage_type.is_some(), "usage_type"),
        ] {
            if given {
                return Err(bad(
                    name,
                    format!("a move gives the usage to booking_id; {name} cannot be set on it"),
                ));
            }
        }
        let (_, from_cancelled) = booking_on(conn, "from_booking_id", from, &c.instrument_id)?;
        for (cancelled, name, id) in [
            (from_cancelled, "from_booking_id", from),
            (
                to_cancelled,
                "booking_id",
                c.booking_id.as_ref().unwrap_or(from),
            ),
        ] {
            if cancelled {
                return Err(bad(
                    name,
                    format!("booking {id:?} is cancelled: it owns no usage"),
                ));
            }
        }
        if c.booking_id.as_deref() == Some(from.as_str()) {
            return Err(bad(
                "booking_id",
                "the booking the usage goes to must differ from from_booking_id",
            ));
        }
        let m = Move {
            interval: Interval::new(start, end),
            from: from.clone(),
            to: c.booking_id.clone().unwrap_or_default(),
        };
        check_move(conn, &inst, &m)?;
        dirty_from = dirty_from.min(to_start);
    }
    conn.execute(
        "INSERT INTO corrections (instrument_id, start_ms, end_ms, user, group_name, usage_type,
             booking_id, reason, created_by, created_at_ms, from_booking_id)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
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
            c.from_booking_id,
        ],
    )?;
    mark_dirty(conn, &c.instrument_id, dirty_from)?;
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
                reason, created_by, created_at_ms, from_booking_id
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
                from_booking_id: r.get(11)?,
                reason: r.get(8)?,
            },
            created_by: r.get(9)?,
            created_at: time(r.get(10)?),
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}
