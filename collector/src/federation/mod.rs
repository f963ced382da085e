//! Upward federation, site → hub (docs/design/federation.md).
//!
//! A site with `[upstream]` keeps a change log of its verified results
//! ([`outbox`]: triggers fill `fed_outbox`, one row per natural key with the
//! version of its newest change) and a [`forwarder`] posts them in batches
//! to the hub's `POST /api/v1/federation/batch`, deleting what the hub
//! acknowledged (2xx) — an outage of any length loses nothing and a
//! restart resumes. The hub ([`apply`]) upserts every row under the site's
//! namespace (`site-a/nmr-600`) when its version is newer than the one it
//! holds, so resends and reorders change nothing; its `/api/v1/hours` then
//! answers from the forwarded rows with the same query code.

pub mod apply;
pub mod forwarder;
pub mod history;
pub mod outbox;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::config::OpenHoursConfig;

/// The tables a site forwards, with how their natural key maps onto
/// (`instrument_id`, `key_int`, `key_text`) of the outbox.
pub const TABLES: &[Table] = &[
    Table {
        name: "day_totals",
        instrument: "instrument_id",
        key_int: Some("start_ms"),
        key_text: None,
    },
    Table {
        name: "month_totals",
        instrument: "instrument_id",
        key_int: None,
        key_text: Some("month"),
    },
    Table {
        name: "booking_outcomes",
        instrument: "instrument_id",
        key_int: Some("start_ms"),
        key_text: Some("booking_id"),
    },
    // Keyed by booking id alone: a booking may move to another instrument.
    Table {
        name: "bookings",
        instrument: "''",
        key_int: None,
        key_text: Some("booking_id"),
    },
    Table {
        name: "corrections",
        instrument: "instrument_id",
        key_int: Some("id"),
        key_text: None,
    },
];

/// One forwarded table and its key columns (SQL expressions).
#[derive(Debug, Clone, Copy)]
pub struct Table {
    pub name: &'static str,
    pub instrument: &'static str,
    pub key_int: Option<&'static str>,
    pub key_text: Option<&'static str>,
}

/// The forwarded table named `name`.
pub fn table(name: &str) -> Option<&'static Table> {
    TABLES.iter().find(|t| t.name == name)
}

/// The body of `POST /api/v1/federation/batch`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Batch {
    /// The sending site's id as it believes it to be; the hub takes the id
    /// from the credential and refuses a batch naming another (a
    /// misconfigured site), never uses this one.
    pub site: String,
    /// Per table: the names of the values in its rows' `row` arrays (the
    /// site's columns, in its order; the hub takes the ones it has).
    #[serde(default)]
    pub columns: BTreeMap<String, Vec<String>>,
    /// Changed rows, oldest change first.
    #[serde(default)]
    pub rows: Vec<RowChange>,
    /// The site's whole registry, sent when it changed since the hub last
    /// acknowledged it (`null`: unchanged).
    #[serde(default)]
    pub registry: Option<Vec<RegistryEntry>>,
    /// Per instrument (site ids): the instant its figures are final
    /// through (`null`: nothing settled); instruments no agent reported
    /// for are absent.
    #[serde(default)]
    pub settled: BTreeMap<String, Option<i64>>,
    /// The site's own `settled_through` over all its instruments (UTC ms).
    #[serde(default)]
    pub settled_through_ms: Option<i64>,
    /// Signed checkpoints (C2SP signed notes) the site made since the last
    /// acknowledged batch, oldest first, verbatim; the hub checks and keeps
    /// them ([`history`]).
    #[serde(default)]
    pub checkpoints: Vec<String>,
}

/// One changed row: its table, natural key and change version, and the
/// row as the site stores it (`null`: deleted).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RowChange {
    /// `day_totals`, `month_totals`, `booking_outcomes`, `bookings` or `corrections`.
    pub tbl: String,
    pub instrument_id: String,
    pub key_int: i64,
    pub key_text: String,
    /// The site's change counter: a newer change of the same key wins.
    pub version: i64,
    /// The row's values in the order of `columns[tbl]`; `null` when the
    /// row was deleted. (Arrays, not objects: a year of a site is
    /// ~19 000 rows, and the names once per table halve the bytes.)
    #[schema(value_type = Option<Vec<Object>>)]
    pub row: Option<Vec<serde_json::Value>>,
}

/// An instrument as the site's registry has it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegistryEntry {
    pub id: String,
    pub name: String,
    pub unit: Option<String>,
    /// IANA zone its days are cut in.
    pub time_zone: String,
    /// Its published open hours (the config's form), `null`: unknown.
    #[schema(value_type = Option<Object>)]
    pub open_hours: Option<OpenHoursConfig>,
}

/// The hub's answer to a batch.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Applied {
    /// Rows written or deleted.
    pub applied: u64,
    /// Rows the hub already held at this version or a newer one.
    pub ignored: u64,
}

/// `GET /api/v1/sites`: one line per site of a hub.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SiteRow {
    pub site_id: String,
    pub name: String,
    /// When its last batch arrived (RFC 3339), `null`: never.
    pub last_batch: Option<String>,
    /// Its figures are final up to this instant ("data up to"), `null`:
    /// nothing settled or never heard from.
    pub settled_through: Option<String>,
    /// Instruments it forwarded.
    pub instruments: u64,
    /// Signed checkpoints it forwarded.
    pub checkpoints: u64,
    /// Of those, how many the hub verified with the site's key
    /// (`[[hub.sites]] checkpoint_key`; 0 when none is configured).
    pub checkpoints_verified: u64,
    /// Why the site is flagged, from its newest flagged checkpoint: a
    /// rewritten history, a bad signature or an unreadable note; `null`:
    /// every checkpoint extends the one before.
    pub history: Option<String>,
}

/// The hub id of a site's instrument, booking or unit: `site/id`.
pub fn namespaced(site: &str, id: &str) -> String {
    format!("{site}/{id}")
}

/// The hub's unit of a site's instrument: under the site, so that
/// `unit=site-a` selects one site.
pub fn namespaced_unit(site: &str, unit: Option<&str>) -> String {
    match unit.map(str::trim).filter(|u| !u.is_empty()) {
        Some(u) => format!("{site}/{u}"),
        None => site.to_owned(),
    }
}

/// The instruments sites forwarded (a hub's), resolved like configured
/// ones: the site's name, unit (under the site), zone and open hours; the
/// hub's defaults for the rest (nothing is reconciled here).
pub fn forwarded_instruments(
    conn: &rusqlite::Connection,
    registry: &crate::registry::Registry,
) -> rusqlite::Result<Vec<crate::registry::Instrument>> {
    let mut stmt = conn.prepare_cached(
        "SELECT instrument_id, name, unit, time_zone, open_hours FROM fed_instruments ORDER BY instrument_id",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, Option<String>>(2)?,
            r.get::<_, String>(3)?,
            r.get::<_, Option<String>>(4)?,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (id, name, unit, time_zone, open_hours) = row?;
        let mut inst = registry.instrument(&id);
        inst.name = name;
        inst.unit = unit;
        if let Ok(zone) = jiff::tz::TimeZone::get(&time_zone) {
            inst.zone = zone;
            inst.time_zone = time_zone;
        }
        inst.open_hours = open_hours
            .and_then(|text| serde_json::from_str::<OpenHoursConfig>(&text).ok())
            .and_then(|config| crate::registry::OpenHours::compile(&config).ok());
        inst.monitored = true;
        out.push(inst);
    }
    Ok(out)
}

/// Per forwarded instrument: the instant its site said it is settled through.
pub fn forwarded_settled(
    conn: &rusqlite::Connection,
) -> rusqlite::Result<Vec<(String, Option<crate::reconcile::Ms>)>> {
    conn.prepare_cached("SELECT instrument_id, settled_through_ms FROM fed_instruments")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect()
}
