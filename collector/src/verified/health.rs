//! What `GET /api/v1/healthz` reports beyond "serving": whether the
//! figures are final or still moving, and what the quarantine holds.

use std::collections::BTreeMap;

use jiff::Timestamp;
use rusqlite::Connection;
use serde::Serialize;
use utoipa::ToSchema;

use super::settled;
use crate::quarantine::{self, Kind};
use crate::reconcile::Ms;

/// The body of `healthz`.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Health {
    /// Always `ok` when the collector answers.
    pub status: &'static str,
    pub reconciliation: ReconciliationHealth,
    pub quarantine: QuarantineHealth,
    /// The InfluxDB sink, when `[influxdb]` is configured (docs/influxdb.md).
    pub influxdb: Option<crate::influx::SinkHealth>,
}

/// How far the figures are final (docs/verified.md).
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct ReconciliationHealth {
    /// Figures of every reporting instrument are final before this instant
    /// (UTC); `null` when some instrument has settled nothing yet.
    #[schema(value_type = Option<String>, format = DateTime)]
    pub settled_through: Option<Timestamp>,
    /// Instruments whose results the reconciler has still to recompute.
    pub pending_instruments: u64,
    /// Their stretches to recompute, in days (rounded up per instrument).
    pub pending_instrument_days: u64,
    /// The earliest instant being recomputed.
    #[schema(value_type = Option<String>, format = DateTime)]
    pub pending_since: Option<Timestamp>,
}

/// What the quarantine holds (`GET /api/v1/quarantine` lists it).
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct QuarantineHealth {
    pub total: u64,
    /// Rows per kind; kinds with none are left out.
    pub by_kind: BTreeMap<Kind, u64>,
}

fn instant(ms: Ms) -> Option<Timestamp> {
    Timestamp::from_millisecond(ms).ok()
}

/// The health of the store at `now`.
pub fn health(conn: &Connection, now: Timestamp) -> rusqlite::Result<Health> {
    let per_instrument = settled::per_instrument(conn)?;
    let through = settled::overall(&per_instrument, per_instrument.keys().map(String::as_str));
    let pending = settled::pending(conn, now.as_millisecond())?;
    let by_kind = quarantine::counts(conn)?;
    Ok(Health {
        status: "ok",
        reconciliation: ReconciliationHealth {
            settled_through: through.and_then(instant),
            pending_instruments: pending.instruments,
            pending_instrument_days: pending.instrument_days,
            pending_since: pending.since.and_then(instant),
        },
        quarantine: QuarantineHealth {
            total: by_kind.values().sum(),
            by_kind,
        },
        influxdb: None,
    })
}
