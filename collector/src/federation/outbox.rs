//! The site's side: what changed since the hub last acknowledged it.
//!
//! While `[upstream]` is set, triggers on every forwarded table record each
//! insert, update and delete in `fed_outbox` under a new version of the
//! site's counter (`fed_state.next_version`, never reset). A batch is the
//! oldest changes with the rows as they are now (a deleted row is sent as
//! `null`); once the hub took it, exactly those (key, version) entries are
//! deleted, so a row changed again meanwhile is sent again.

use rusqlite::types::ValueRef;
use rusqlite::{Connection, params};
use std::collections::BTreeMap;

use serde_json::Value;

use super::{RowChange, TABLES, Table};

const TRIGGER_PREFIX: &str = "fed_outbox_";

fn key_exprs(t: &Table, row: &str) -> (String, String, String) {
    let col = |c: &str| {
        if c.starts_with('\'') {
            c.to_owned()
        } else {
            format!("{row}.{c}")
        }
    };
    (
        col(t.instrument),
        t.key_int.map_or_else(|| "0".to_owned(), col),
        t.key_text.map_or_else(|| "''".to_owned(), col),
    )
}

/// Creates the triggers (if absent) and, the first time, puts every
/// existing row in the outbox, so the hub gets the whole history.
pub fn prepare(conn: &Connection) -> rusqlite::Result<()> {
    let exists: bool = conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'trigger' AND name LIKE 'fed_outbox_%')",
        [],
        |r| r.get(0),
    )?;
    if exists {
        return Ok(());
    }
    let mut sql = String::from("BEGIN IMMEDIATE;\n");
    for t in TABLES {
        for (event, row) in [("INSERT", "NEW"), ("UPDATE", "NEW"), ("DELETE", "OLD")] {
            let (inst, ki, kt) = key_exprs(t, row);
            sql.push_str(&format!(
                "CREATE TRIGGER {TRIGGER_PREFIX}{name}_{ev} AFTER {event} ON {name} BEGIN {record} END;\n",
                name = t.name,
                ev = event.to_lowercase(),
                record = record_change(t.name, &inst, &ki, &kt),
            ));
        }
        // An update that changes the key leaves the old key unsent: the
        // update trigger above records the new one, this one the old.
        let (inst, ki, kt) = key_exprs(t, "OLD");
        let (ni, nki, nkt) = key_exprs(t, "NEW");
        sql.push_str(&format!(
            "CREATE TRIGGER {TRIGGER_PREFIX}{name}_rekey AFTER UPDATE ON {name}
                 WHEN ({inst}, {ki}, {kt}) IS NOT ({ni}, {nki}, {nkt}) BEGIN {record} END;\n",
            name = t.name,
            record = record_change(t.name, &inst, &ki, &kt),
        ));
        // Everything already stored, each row its own version.
        let (inst, ki, kt) = key_exprs(t, t.name);
        sql.push_str(&format!(
            "INSERT INTO fed_outbox (tbl, instrument_id, key_int, key_text, version)
                 SELECT '{name}', {inst}, {ki}, {kt},
                        (SELECT next_version FROM fed_state) + ROW_NUMBER() OVER ()
                 FROM {name} WHERE true
                 ON CONFLICT (tbl, instrument_id, key_int, key_text) DO UPDATE SET version = excluded.version;
             UPDATE fed_state SET next_version = MAX(next_version, (SELECT COALESCE(MAX(version), 0) FROM fed_outbox));\n",
            name = t.name,
        ));
    }
    sql.push_str("COMMIT;");
    conn.execute_batch(&sql)
}

/// A trigger's body: the change of `table`'s row keyed by the three
/// expressions, under the next version.
fn record_change(table: &str, inst: &str, key_int: &str, key_text: &str) -> String {
    format!(
        "UPDATE fed_state SET next_version = next_version + 1;
         INSERT INTO fed_outbox (tbl, instrument_id, key_int, key_text, version)
         VALUES ('{table}', {inst}, {key_int}, {key_text}, (SELECT next_version FROM fed_state))
         ON CONFLICT (tbl, instrument_id, key_int, key_text) DO UPDATE SET version = excluded.version;"
    )
}

/// Removes the triggers and the outbox when `[upstream]` is off; turning
/// it on again sends everything again (the hub may have missed changes).
pub fn unprepare(conn: &Connection) -> rusqlite::Result<()> {
    let names: Vec<String> = conn
        .prepare(
            "SELECT name FROM sqlite_master WHERE type = 'trigger' AND name LIKE 'fed_outbox_%'",
        )?
        .query_map([], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    if names.is_empty() {
        return Ok(());
    }
    let mut sql = String::from("BEGIN IMMEDIATE;\n");
    for name in names {
        sql.push_str(&format!("DROP TRIGGER IF EXISTS \"{name}\";\n"));
    }
    sql.push_str("DELETE FROM fed_outbox; COMMIT;");
    conn.execute_batch(&sql)
}

/// The changes of a batch and the column names of their rows, per table.
pub type Changes = (Vec<RowChange>, BTreeMap<String, Vec<String>>);

/// The oldest `limit` changes, with the rows as they are now. Call inside
/// a read transaction, so the rows and the versions agree.
pub fn next_changes(conn: &Connection, limit: usize) -> rusqlite::Result<Changes> {
    let mut stmt = conn.prepare_cached(
        "SELECT tbl, instrument_id, key_int, key_text, version FROM fed_outbox
         ORDER BY version LIMIT ?1",
    )?;
    let entries: Vec<(String, String, i64, String, i64)> = stmt
        .query_map([limit as i64], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
        })?
        .collect::<rusqlite::Result<_>>()?;
    let mut out = Vec::with_capacity(entries.len());
    let mut columns = BTreeMap::new();
    for (tbl, instrument_id, key_int, key_text, version) in entries {
        let Some(t) = super::table(&tbl) else {
            continue;
        };
        let (names, row) = read_row(conn, t, &instrument_id, key_int, &key_text)?;
        columns.entry(tbl.clone()).or_insert(names);
        out.push(RowChange {
            tbl,
            instrument_id,
            key_int,
            key_text,
            version,
            row,
        });
    }
    Ok((out, columns))
}

/// The column names of `t` and its row under a key, as JSON values.
fn read_row(
    conn: &Connection,
    t: &Table,
    instrument_id: &str,
    key_int: i64,
    key_text: &str,
) -> rusqlite::Result<(Vec<String>, Option<Vec<Value>>)> {
    let (inst, ki, kt) = key_exprs(t, t.name);
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT * FROM {name} WHERE {inst} = ?1 AND {ki} = ?2 AND {kt} = ?3",
        name = t.name
    ))?;
    let names: Vec<String> = stmt.column_names().into_iter().map(str::to_owned).collect();
    let mut rows = stmt.query(params![instrument_id, key_int, key_text])?;
    let Some(row) = rows.next()? else {
        return Ok((names, None));
    };
    let mut values = Vec::with_capacity(names.len());
    for i in 0..names.len() {
        let value = match row.get_ref(i)? {
            ValueRef::Null => Value::Null,
            ValueRef::Integer(n) => Value::from(n),
            ValueRef::Real(x) => Value::from(x),
            ValueRef::Text(s) => Value::from(String::from_utf8_lossy(s).into_owned()),
            ValueRef::Blob(b) => Value::from(labhours_shared::trust::hex(b)),
        };
        values.push(value);
    }
    Ok((names, Some(values)))
}

/// Deletes the changes the hub took: exactly these keys at these
/// versions (a newer change of the same key stays to be sent).
pub fn ack(conn: &Connection, sent: &[RowChange]) -> rusqlite::Result<()> {
    let mut stmt = conn.prepare_cached(
        "DELETE FROM fed_outbox
         WHERE tbl = ?1 AND instrument_id = ?2 AND key_int = ?3 AND key_text = ?4 AND version = ?5",
    )?;
    let mut top = 0;
    for c in sent {
        stmt.execute(params![
            c.tbl,
            c.instrument_id,
            c.key_int,
            c.key_text,
            c.version
        ])?;
        top = top.max(c.version);
    }
    conn.execute(
        "UPDATE fed_state SET acked_version = MAX(acked_version, ?1)",
        [top],
    )?;
    Ok(())
}

/// The registry hash the hub last acknowledged.
pub fn acked_registry(conn: &Connection) -> rusqlite::Result<String> {
    conn.query_row("SELECT registry_sha256 FROM fed_state", [], |r| r.get(0))
}

pub fn set_acked_registry(conn: &Connection, sha256: &str) -> rusqlite::Result<()> {
    conn.execute("UPDATE fed_state SET registry_sha256 = ?1", [sha256])?;
    Ok(())
}

/// The site's checkpoints after the last one the hub acknowledged, oldest
/// first: (id, signed note).
pub fn next_checkpoints(conn: &Connection, limit: usize) -> rusqlite::Result<Vec<(i64, String)>> {
    conn.prepare_cached(
        "SELECT id, note FROM checkpoints
         WHERE id > (SELECT acked_checkpoint FROM fed_state) ORDER BY id LIMIT ?1",
    )?
    .query_map([limit as i64], |r| Ok((r.get(0)?, r.get(1)?)))?
    .collect()
}

pub fn set_acked_checkpoint(conn: &Connection, id: i64) -> rusqlite::Result<()> {
    conn.execute("UPDATE fed_state SET acked_checkpoint = ?1", [id])?;
    Ok(())
}

/// How many changes wait to be sent.
pub fn pending(conn: &Connection) -> rusqlite::Result<u64> {
    conn.query_row("SELECT COUNT(*) FROM fed_outbox", [], |r| r.get(0))
}
