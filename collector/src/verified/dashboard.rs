//! What the dashboard reads and writes besides what the API serves: an
//! instrument's power trace and thresholds, quarantined payloads, browser
//! sessions, and bookings files uploaded from the browser
//! (`docs/dashboard.md`). Reached through [`super::Reports`].

use jiff::Timestamp;
use jiff::tz::TimeZone;
use rusqlite::{Connection, OptionalExtension, params};

use super::hours::{resolve_range, select};
use super::query::{QueryError, Range};
use crate::config::{Thresholds, TokenRole};
use crate::reconcile::Ms;
use crate::registry::Registry;

/// One power summary (the agent's `summary` event) of an instrument.
#[derive(Debug, Clone, PartialEq)]
pub struct PowerPoint {
    pub start_ms: Ms,
    pub end_ms: Ms,
    pub avg_w: Option<f64>,
    pub max_w: Option<f64>,
}

/// An instrument's power summaries in a range, with what the page needs to
/// draw them: its name, zone and thresholds.
#[derive(Debug, Clone)]
pub struct PowerTrace {
    pub instrument_id: String,
    pub name: String,
    pub unit: Option<String>,
    pub zone: TimeZone,
    /// The range asked for, resolved in the instrument's zone.
    pub from_ms: Ms,
    pub to_ms: Ms,
    pub thresholds: Option<Thresholds>,
    pub points: Vec<PowerPoint>,
}

/// A browser session as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DashSession {
    /// The API token exchanged for it (its name).
    pub token_name: String,
    /// Its SHA-256 (hex): the session ends when the token's secret changes.
    pub token_sha256: String,
    pub role: TokenRole,
    pub expires_at_ms: Ms,
}

/// At most this many summaries are read for one trace (a week of 1-minute
/// summaries is about 10,000).
pub const MAX_POWER_POINTS: usize = 50_000;

pub fn power(
    conn: &Connection,
    registry: &Registry,
    instrument: &str,
    range: &Range,
) -> Result<PowerTrace, QueryError> {
    let inst = select(conn, registry, Some(instrument), None)?.remove(0);
    let within = resolve_range(range, &inst.zone)?;
    let mut stmt = conn.prepare_cached(
        "SELECT at_ms, payload FROM events
         WHERE instrument_id = ?1 AND at_ms >= ?2 AND at_ms < ?3 AND type = 'summary'
         ORDER BY at_ms LIMIT ?4",
    )?;
    let points = stmt
        .query_map(
            params![inst.id, within.start, within.end, MAX_POWER_POINTS as i64],
            |r| Ok((r.get::<_, Ms>(0)?, r.get::<_, String>(1)?)),
        )?
        .filter_map(|row| {
            let (at, payload) = match row {
                Ok(v) => v,
                Err(e) => return Some(Err(e)),
            };
            let value: serde_json::Value = serde_json::from_str(&payload).ok()?;
            let end_ms = value
                .get("end")
                .and_then(|e| e.as_str())
                .and_then(|e| e.parse::<Timestamp>().ok())
                .map_or(at, |t| t.as_millisecond());
            let num = |k: &str| value.get(k).and_then(serde_json::Value::as_f64);
            Some(Ok(PowerPoint {
                start_ms: at,
                end_ms,
                avg_w: num("avg_w"),
                max_w: num("max_w"),
            }))
        })
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(PowerTrace {
        instrument_id: inst.id.clone(),
        name: inst.name.clone(),
        unit: inst.unit.clone(),
        zone: inst.zone.clone(),
        from_ms: within.start,
        to_ms: within.end,
        thresholds: inst.thresholds.clone(),
        points,
    })
}

/// Records a session (and forgets expired ones).
pub fn create_session(
    conn: &Connection,
    id_sha256: &str,
    session: &DashSession,
    now: Timestamp,
) -> Result<(), QueryError> {
    let now = now.as_millisecond();
    conn.execute(
        "DELETE FROM dashboard_sessions WHERE expires_at_ms <= ?1",
        [now],
    )?;
    conn.execute(
        "INSERT INTO dashboard_sessions
             (id_sha256, token_name, token_sha256, role, created_at_ms, expires_at_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![
            id_sha256,
            session.token_name,
            session.token_sha256,
            session.role.as_str(),
            now,
            session.expires_at_ms
        ],
    )?;
    Ok(())
}

/// The session whose secret hashes to `id_sha256`, unless it expired.
pub fn find_session(
    conn: &Connection,
    id_sha256: &str,
    now: Timestamp,
) -> Result<Option<DashSession>, QueryError> {
    let found = conn
        .prepare_cached(
            "SELECT token_name, token_sha256, role, expires_at_ms FROM dashboard_sessions
             WHERE id_sha256 = ?1 AND expires_at_ms > ?2",
        )?
        .query_row(params![id_sha256, now.as_millisecond()], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, Ms>(3)?,
            ))
        })
        .optional()?;
    Ok(found.map(
        |(token_name, token_sha256, role, expires_at_ms)| DashSession {
            token_name,
            token_sha256,
            role: if role == "admin" {
                TokenRole::Admin
            } else {
                TokenRole::Evaluator
            },
            expires_at_ms,
        },
    ))
}

/// Ends a session (logout); ending an unknown one is not an error.
pub fn end_session(conn: &Connection, id_sha256: &str) -> Result<(), QueryError> {
    conn.execute(
        "DELETE FROM dashboard_sessions WHERE id_sha256 = ?1",
        [id_sha256],
    )?;
    Ok(())
}
