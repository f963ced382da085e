//! Versioned schema migrations, kept in the repository as numbered SQL
//! scripts (`collector/migrations/NNNN_name.sql`) and compiled in.
//!
//! `PRAGMA user_version` holds how many have been applied. At open, each
//! pending script runs in its own transaction together with the bump of
//! `user_version`, so a crash leaves the database at one version or the
//! next, never in between. A database whose version is newer than this
//! build knows is refused rather than guessed at. Scripts are never edited
//! once released: a change is a new script.

use std::path::Path;

use rusqlite::Connection;

use super::StoreError;

/// Every migration in order; the version after applying `MIGRATIONS[i]` is `i + 1`.
pub const MIGRATIONS: &[(&str, &str)] = &[
    (
        "0001_events",
        include_str!("../../migrations/0001_events.sql"),
    ),
    (
        "0002_bookings",
        include_str!("../../migrations/0002_bookings.sql"),
    ),
    (
        "0003_verified",
        include_str!("../../migrations/0003_verified.sql"),
    ),
    (
        "0004_dashboard",
        include_str!("../../migrations/0004_dashboard.sql"),
    ),
    (
        "0005_energy_quarantine_agent_rules",
        include_str!("../../migrations/0005_energy_quarantine_agent_rules.sql"),
    ),
    (
        "0006_disputed_time",
        include_str!("../../migrations/0006_disputed_time.sql"),
    ),
    (
        "0007_influx_export",
        include_str!("../../migrations/0007_influx_export.sql"),
    ),
    (
        "0008_bookings_by_length",
        include_str!("../../migrations/0008_bookings_by_length.sql"),
    ),
    (
        "0009_trust",
        include_str!("../../migrations/0009_trust.sql"),
    ),
    (
        "0010_checkpoints",
        include_str!("../../migrations/0010_checkpoints.sql"),
    ),
    (
        "0011_transport",
        include_str!("../../migrations/0011_transport.sql"),
    ),
    (
        "0012_federation",
        include_str!("../../migrations/0012_federation.sql"),
    ),
];

/// The version that last changed how [`super::derived`] fills its tables
/// (0005: energy counted once per instant): an older database gets them
/// derived again from its events when it is upgraded.
pub const DERIVED_SINCE: i64 = 5;

/// The first version whose quarantine rows carry `agent_id` and `kind`:
/// older rows are classified from their topic and reason at upgrade.
pub const QUARANTINE_COLUMNS_SINCE: i64 = 5;

/// The schema version this build creates.
pub fn latest() -> i64 {
    MIGRATIONS.len() as i64
}

/// The database's schema version (0 for a new file).
pub fn version(conn: &Connection) -> rusqlite::Result<i64> {
    conn.pragma_query_value(None, "user_version", |row| row.get(0))
}

/// Applies every pending migration; returns how many ran.
pub fn apply(conn: &mut Connection, path: &Path) -> Result<usize, StoreError> {
    let found = version(conn)?;
    if found > latest() {
        return Err(StoreError::SchemaTooNew {
            path: path.to_owned(),
            found,
            known: latest(),
        });
    }
    let mut ran = 0;
    for (index, (name, sql)) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", index as i64 + 1)?;
        tx.commit()?;
        tracing::info!(migration = name, path = %path.display(), "applied schema migration");
        ran += 1;
    }
    Ok(ran)
}
