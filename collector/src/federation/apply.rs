//! The hub's side: a site's batch applied in one transaction.
//!
//! Every row goes under the site's namespace: instrument ids and booking
//! ids become `site/id`, units `site/unit` (so `unit=site` selects a
//! site). A row is written only when its version is newer than the one
//! the hub holds for that key (`fed_versions`), so a resent or reordered
//! batch changes nothing, and a row the site re-derived later replaces the
//! old one. Day and month rows go into the hub's own `day_totals` and
//! `month_totals`, so `/api/v1/hours` answers with the same code.

use std::collections::HashMap;

use rusqlite::types::Value as Sql;
use rusqlite::{Connection, OptionalExtension, params};
use serde_json::Value;

use super::history::{self, SiteKey};
use super::{Applied, Batch, RowChange, SiteRow, namespaced, namespaced_unit};
use crate::reconcile::Ms;

/// Why a batch was refused (answered 422, naming what is wrong).
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("{0}")]
    Bad(String),
    #[error("database: {0}")]
    Db(#[from] rusqlite::Error),
}

/// Applies `batch` from `site` (taken from its credential) at `now`.
pub fn apply(
    conn: &mut Connection,
    site: &str,
    key: Option<&SiteKey>,
    batch: &Batch,
    now: Ms,
) -> Result<Applied, ApplyError> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let mut applied = Applied::default();
    let columns = Columns::read(&tx)?;
    tx.execute(
        "INSERT INTO fed_sites (site_id, last_batch_ms, settled_through_ms, version)
         VALUES (?1, ?2, ?3, 0)
         ON CONFLICT (site_id) DO UPDATE SET last_batch_ms = excluded.last_batch_ms,
             settled_through_ms = excluded.settled_through_ms",
        params![site, now, batch.settled_through_ms],
    )?;
    if let Some(registry) = &batch.registry {
        let mut stmt = tx.prepare_cached(
            "INSERT INTO fed_instruments (instrument_id, site_id, name, unit, time_zone, open_hours)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT (instrument_id) DO UPDATE SET name = excluded.name, unit = excluded.unit,
                 time_zone = excluded.time_zone, open_hours = excluded.open_hours",
        )?;
        for (i, e) in registry.iter().enumerate() {
            if jiff::tz::TimeZone::get(&e.time_zone).is_err() {
                return Err(ApplyError::Bad(format!(
                    "registry[{i}].time_zone: {:?} is not an IANA zone this hub knows; update the hub's time zone data",
                    e.time_zone
                )));
            }
            let open = e
                .open_hours
                .as_ref()
                .map(serde_json::to_string)
                .transpose()
                .map_err(|err| ApplyError::Bad(format!("registry[{i}].open_hours: {err}")))?;
            stmt.execute(params![
                namespaced(site, &e.id),
                site,
                e.name,
                namespaced_unit(site, e.unit.as_deref()),
                e.time_zone,
                open
            ])?;
        }
    }
    {
        let mut stmt = tx.prepare_cached(
            "UPDATE fed_instruments SET settled_through_ms = ?2 WHERE instrument_id = ?1",
        )?;
        for (id, through) in &batch.settled {
            stmt.execute(params![namespaced(site, id), through])?;
        }
    }
    {
        let mut newer = tx.prepare_cached(
            "INSERT INTO fed_versions (site_id, tbl, instrument_id, key_int, key_text, version)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT (site_id, tbl, instrument_id, key_int, key_text)
             DO UPDATE SET version = excluded.version WHERE excluded.version > fed_versions.version",
        )?;
        let mut plans: HashMap<&str, Plan> = HashMap::new();
        for (i, change) in batch.rows.iter().enumerate() {
            let Some(t) = super::table(&change.tbl) else {
                return Err(ApplyError::Bad(format!(
                    "rows[{i}].tbl: {:?} is not a forwarded table (day_totals, month_totals, booking_outcomes, bookings, corrections)",
                    change.tbl
                )));
            };
            let took = newer.execute(params![
                site,
                t.name,
                change.instrument_id,
                change.key_int,
                change.key_text,
                change.version
            ])?;
            if took == 0 {
                applied.ignored += 1;
                continue;
            }
            if change.row.is_some() && !plans.contains_key(t.name) {
                let plan =
                    Plan::new(t.name, &columns, batch.columns.get(t.name)).map_err(
                        |e| match e {
                            ApplyError::Bad(m) => ApplyError::Bad(format!("rows[{i}]: {m}")),
                            other => other,
                        },
                    )?;
                plans.insert(t.name, plan);
            }
            write_row(
                &tx,
                plans.get(t.name),
                batch.columns.get(t.name),
                site,
                change,
            )
            .map_err(|e| match e {
                ApplyError::Bad(m) => ApplyError::Bad(format!("rows[{i}]: {m}")),
                other => other,
            })?;
            applied.applied += 1;
        }
    }
    for note in &batch.checkpoints {
        keep_checkpoint(&tx, site, key, note, now)?;
    }
    tx.commit()?;
    Ok(applied)
}

/// Checks a forwarded checkpoint against the site's last good one and
/// keeps it with the verdict; a resent one is already kept, as it was.
fn keep_checkpoint(
    tx: &Connection,
    site: &str,
    key: Option<&SiteKey>,
    note: &str,
    now: Ms,
) -> rusqlite::Result<()> {
    let known: bool = tx
        .prepare_cached(
            "SELECT EXISTS (SELECT 1 FROM fed_checkpoints WHERE site_id = ?1 AND note = ?2)",
        )?
        .query_row(params![site, note], |r| r.get(0))?;
    if known {
        return Ok(());
    }
    let previous: Option<String> = tx
        .prepare_cached(
            "SELECT note FROM fed_checkpoints WHERE site_id = ?1 AND problem IS NULL
             ORDER BY signed_at_ms DESC LIMIT 1",
        )?
        .query_row([site], |r| r.get(0))
        .optional()?;
    // A kept good note always reads back.
    let previous = previous.and_then(|n| {
        let (text, _) = crate::evidence::note::split(&n).ok()?;
        crate::evidence::checkpoint::Body::parse(text).ok()
    });
    let checked = history::check(note, key, previous.as_ref());
    if let Some(problem) = &checked.problem {
        tracing::warn!(site, %problem, "a site's checkpoint is flagged");
    }
    tx.prepare_cached(
        "INSERT INTO fed_checkpoints (site_id, note, received_at_ms, signed_at_ms, verified, problem)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![
        site,
        note,
        now,
        checked.body.map(|b| b.time.as_millisecond()),
        checked.verified,
        checked.problem
    ])?;
    Ok(())
}

/// The hub's columns of every forwarded table, and their NOT NULL flags.
struct Columns(HashMap<&'static str, Vec<(String, bool)>>);

impl Columns {
    fn read(conn: &Connection) -> rusqlite::Result<Self> {
        let mut out = HashMap::new();
        for t in super::TABLES {
            let cols = conn
                .prepare_cached(&format!(
                    "SELECT name, \"notnull\" FROM pragma_table_info('{}')",
                    t.name
                ))?
                .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, bool>(1)?)))?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            out.insert(t.name, cols);
        }
        Ok(Self(out))
    }
}

fn sql_value(v: &Value) -> Sql {
    match v {
        Value::Null => Sql::Null,
        Value::Bool(b) => Sql::Integer(i64::from(*b)),
        Value::Number(n) => n
            .as_i64()
            .map(Sql::Integer)
            .unwrap_or_else(|| Sql::Real(n.as_f64().unwrap_or(0.0))),
        Value::String(s) => Sql::Text(s.clone()),
        other => Sql::Text(other.to_string()),
    }
}

/// Where each of the hub's columns comes from in a site's row.
enum Source {
    At(usize),
    /// An id to put under the site (instrument, booking).
    Namespaced(usize),
}

/// How rows of one table are written: the statement, and per hub column
/// the site's value it takes (made once per table and batch).
struct Plan {
    sql: String,
    sources: Vec<Source>,
    width: usize,
}

impl Plan {
    fn new(
        table: &'static str,
        columns: &Columns,
        site: Option<&Vec<String>>,
    ) -> Result<Self, ApplyError> {
        let site = site.ok_or_else(|| {
            ApplyError::Bad(format!(
                "{table}: the batch has rows but no columns[{table:?}]"
            ))
        })?;
        let mut names = Vec::new();
        let mut sources = Vec::new();
        for (name, not_null) in &columns.0[table] {
            match site.iter().position(|c| c == name) {
                Some(i) if name == "instrument_id" || name == "booking_id" => {
                    sources.push(Source::Namespaced(i));
                }
                Some(i) => sources.push(Source::At(i)),
                None if *not_null => {
                    return Err(ApplyError::Bad(format!(
                        "{table}: column {name:?} is missing; the site runs an older schema than the hub: upgrade the site"
                    )));
                }
                None => continue,
            }
            names.push(name.as_str());
        }
        let placeholders: Vec<String> = (1..=names.len()).map(|i| format!("?{i}")).collect();
        Ok(Self {
            sql: format!(
                "INSERT OR REPLACE INTO {table} ({}) VALUES ({})",
                names.join(", "),
                placeholders.join(", ")
            ),
            sources,
            width: site.len(),
        })
    }
}

fn write_row(
    conn: &Connection,
    plan: Option<&Plan>,
    site_columns: Option<&Vec<String>>,
    site: &str,
    c: &RowChange,
) -> Result<(), ApplyError> {
    let inst = namespaced(site, &c.instrument_id);
    if c.tbl == "corrections" {
        match (&c.row, site_columns) {
            (None, _) => conn.execute(
                "DELETE FROM fed_corrections WHERE site_id = ?1 AND id = ?2",
                params![site, c.key_int],
            )?,
            (Some(row), Some(names)) => {
                let object: serde_json::Map<String, Value> =
                    names.iter().cloned().zip(row.iter().cloned()).collect();
                conn.execute(
                    "INSERT OR REPLACE INTO fed_corrections (site_id, id, instrument_id, row)
                     VALUES (?1, ?2, ?3, ?4)",
                    params![site, c.key_int, inst, Value::Object(object).to_string()],
                )?
            }
            (Some(_), None) => {
                return Err(ApplyError::Bad(
                    "corrections: no columns[\"corrections\"]".into(),
                ));
            }
        };
        return Ok(());
    }
    let (Some(row), Some(plan)) = (&c.row, plan) else {
        match c.tbl.as_str() {
            "day_totals" => conn
                .prepare_cached("DELETE FROM day_totals WHERE instrument_id = ?1 AND start_ms = ?2")?
                .execute(params![inst, c.key_int])?,
            "month_totals" => conn
                .prepare_cached("DELETE FROM month_totals WHERE instrument_id = ?1 AND month = ?2")?
                .execute(params![inst, c.key_text])?,
            "booking_outcomes" => conn
                .prepare_cached(
                    "DELETE FROM booking_outcomes WHERE instrument_id = ?1 AND start_ms = ?2 AND booking_id = ?3",
                )?
                .execute(params![inst, c.key_int, namespaced(site, &c.key_text)])?,
            "bookings" => conn
                .prepare_cached("DELETE FROM bookings WHERE booking_id = ?1")?
                .execute(params![namespaced(site, &c.key_text)])?,
            _ => 0,
        };
        return Ok(());
    };
    if row.len() != plan.width {
        return Err(ApplyError::Bad(format!(
            "{}: {} values for {} columns",
            c.tbl,
            row.len(),
            plan.width
        )));
    }
    let values = plan.sources.iter().map(|source| match source {
        Source::At(i) => sql_value(&row[*i]),
        Source::Namespaced(i) => match &row[*i] {
            Value::String(id) => Sql::Text(namespaced(site, id)),
            other => sql_value(other),
        },
    });
    conn.prepare_cached(&plan.sql)?
        .execute(rusqlite::params_from_iter(values))
        .map_err(|e| match e {
            rusqlite::Error::SqliteFailure(f, Some(m))
                if f.code == rusqlite::ErrorCode::ConstraintViolation =>
            {
                ApplyError::Bad(format!("{}: {m}", c.tbl))
            }
            other => ApplyError::Db(other),
        })?;
    Ok(())
}

/// `GET /api/v1/sites`: every configured site with what it forwarded.
pub fn sites(conn: &Connection, configured: &[(String, String)]) -> rusqlite::Result<Vec<SiteRow>> {
    let mut seen = conn.prepare_cached(
        "SELECT last_batch_ms, settled_through_ms,
                (SELECT COUNT(*) FROM fed_instruments WHERE site_id = ?1),
                (SELECT COUNT(*) FROM fed_checkpoints WHERE site_id = ?1),
                (SELECT COUNT(*) FROM fed_checkpoints WHERE site_id = ?1 AND verified),
                (SELECT problem FROM fed_checkpoints WHERE site_id = ?1 AND problem IS NOT NULL
                 ORDER BY received_at_ms DESC LIMIT 1)
         FROM fed_sites WHERE site_id = ?1",
    )?;
    let mut out = Vec::with_capacity(configured.len());
    for (id, name) in configured {
        type Seen = (Ms, Option<Ms>, u64, u64, u64, Option<String>);
        let row: Option<Seen> = seen
            .query_row([id], |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                ))
            })
            .optional()?;
        let text = |ms: Ms| {
            jiff::Timestamp::from_millisecond(ms)
                .map(|t| t.to_string())
                .unwrap_or_default()
        };
        out.push(match row {
            Some((last, settled, instruments, checkpoints, checkpoints_verified, history)) => {
                SiteRow {
                    site_id: id.clone(),
                    name: name.clone(),
                    last_batch: Some(text(last)),
                    settled_through: settled.map(text),
                    instruments,
                    checkpoints,
                    checkpoints_verified,
                    history,
                }
            }
            None => SiteRow {
                site_id: id.clone(),
                name: name.clone(),
                ..SiteRow::default()
            },
        });
    }
    Ok(out)
}
