//! The evidence bundle's layout, shared by [`super::export`] and
//! [`super::verify`] (docs/evidence.md): a directory of plain files and
//! `manifest.json`, which names every other file with its SHA-256.
//!
//! Store rows (events, bookings, corrections) are written one JSON object
//! a line, every column by name, so the verifier can load them into a
//! scratch store as they were and a checkpoint can hash them exactly as
//! the bundle holds them.

use std::collections::BTreeMap;

use rusqlite::Connection;
use rusqlite::types::ValueRef;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest as _, Sha256};

/// The bundle format this build writes and reads.
pub const FORMAT: &str = "labhours-evidence/1";

pub const MANIFEST: &str = "manifest.json";
/// The site and the instrument's config (rules, zone, usage source).
pub const CONFIG: &str = "config.json";
/// The collector's public key ([`super::checkpoint::CollectorKey`]).
pub const COLLECTOR_KEY: &str = "collector_key.json";
/// The enrolled keys of the instrument's agents (`agent_keys` rows).
pub const KEYS: &str = "agent_keys.jsonl";
/// Every signed envelope of those agents, exactly as received.
pub const ENVELOPES: &str = "envelopes.jsonl";
/// The instrument's stored events (`events` rows).
pub const EVENTS: &str = "events.jsonl";
pub const BOOKINGS: &str = "bookings.jsonl";
pub const CORRECTIONS: &str = "corrections.jsonl";
/// Every stored checkpoint ([`super::checkpoint::Checkpoint`]).
pub const CHECKPOINTS: &str = "checkpoints.jsonl";
/// The figures as the collector reported them ([`Reported`]).
pub const REPORTED: &str = "reported.json";

/// Every file a bundle holds besides the manifest.
pub const FILES: [&str; 10] = [
    CONFIG,
    COLLECTOR_KEY,
    KEYS,
    ENVELOPES,
    EVENTS,
    BOOKINGS,
    CORRECTIONS,
    CHECKPOINTS,
    REPORTED,
    "README.txt",
];

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: String,
    pub instrument_id: String,
    /// `--from` and `--to` as given (a local date or an RFC 3339 instant).
    pub from: String,
    pub to: String,
    /// When the figures were computed: the verifier recomputes "as of" it.
    pub exported_at: jiff::Timestamp,
    /// File name → SHA-256 (hex) of its bytes.
    pub files: BTreeMap<String, String>,
}

/// The figures as reported: daily hours rows and the booking outcomes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reported {
    pub hours: Vec<crate::verified::HoursRow>,
    pub outcomes: Vec<crate::verified::OutcomeRow>,
}

/// One signed envelope, as `signed_envelopes` keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EnvelopeLine {
    pub agent_id: String,
    pub key_id: String,
    pub received_at_ms: i64,
    /// The payload exactly as received: JSON, a newline, the hex signature.
    pub payload: String,
}

/// Store tables a bundle copies rows of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Table {
    Events,
    Bookings,
    Corrections,
}

impl Table {
    pub fn name(self) -> &'static str {
        match self {
            Table::Events => "events",
            Table::Bookings => "bookings",
            Table::Corrections => "corrections",
        }
    }

    fn select(self) -> &'static str {
        match self {
            Table::Events => "SELECT * FROM events WHERE instrument_id = ?1 ORDER BY agent_id, seq",
            Table::Bookings => {
                "SELECT * FROM bookings WHERE instrument_id = ?1 ORDER BY booking_id"
            }
            Table::Corrections => "SELECT * FROM corrections WHERE instrument_id = ?1 ORDER BY id",
        }
    }
}

/// The instrument's rows of `table`, one JSON object each (no newline).
/// Blobs are written `{"hex": "..."}` so a text column never reads as one.
pub fn table_lines(
    conn: &Connection,
    table: Table,
    instrument_id: &str,
) -> rusqlite::Result<Vec<String>> {
    let mut stmt = conn.prepare_cached(table.select())?;
    let names: Vec<String> = stmt
        .column_names()
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
    let mut rows = stmt.query([instrument_id])?;
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        let mut object = Map::new();
        for (i, name) in names.iter().enumerate() {
            let value = match row.get_ref(i)? {
                ValueRef::Null => Value::Null,
                ValueRef::Integer(n) => Value::from(n),
                ValueRef::Real(x) => Value::from(x),
                ValueRef::Text(t) => Value::from(String::from_utf8_lossy(t).into_owned()),
                ValueRef::Blob(b) => {
                    serde_json::json!({ "hex": labhours_shared::trust::hex(b) })
                }
            };
            object.insert(name.clone(), value);
        }
        out.push(Value::Object(object).to_string());
    }
    Ok(out)
}

/// Inserts rows read back from [`table_lines`] into `table`.
pub fn insert_lines(
    conn: &Connection,
    table: Table,
    lines: &[Map<String, Value>],
) -> Result<(), String> {
    use rusqlite::types::Value as Sql;
    for (n, row) in lines.iter().enumerate() {
        let names: Vec<&String> = row.keys().collect();
        let sql = format!(
            "INSERT INTO {} ({}) VALUES ({})",
            table.name(),
            names
                .iter()
                .map(|n| format!("\"{n}\""))
                .collect::<Vec<_>>()
                .join(", "),
            (1..=names.len())
                .map(|i| format!("?{i}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let values: Vec<Sql> = row
            .values()
            .map(|v| match v {
                Value::Null => Ok(Sql::Null),
                Value::Number(x) => Ok(x
                    .as_i64()
                    .map(Sql::Integer)
                    .unwrap_or_else(|| Sql::Real(x.as_f64().unwrap_or(0.0)))),
                Value::String(s) => Ok(Sql::Text(s.clone())),
                Value::Object(o) => o
                    .get("hex")
                    .and_then(Value::as_str)
                    .and_then(hex_bytes)
                    .map(Sql::Blob)
                    .ok_or_else(|| "an object that is not {\"hex\": ...}".to_owned()),
                other => Err(format!("unexpected value {other}")),
            })
            .collect::<Result<_, _>>()
            .map_err(|e| format!("{}.jsonl line {}: {e}", table.name(), n + 1))?;
        // The same columns every row: one prepared statement.
        conn.prepare_cached(&sql)
            .and_then(|mut stmt| stmt.execute(rusqlite::params_from_iter(values)))
            .map_err(|e| format!("{}.jsonl line {}: {e}", table.name(), n + 1))?;
    }
    Ok(())
}

fn hex_bytes(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

/// SHA-256 of the lines as a file holds them (each ending in a newline).
pub fn lines_sha256(lines: &[String]) -> String {
    let mut h = Sha256::new();
    for line in lines {
        h.update(line.as_bytes());
        h.update(b"\n");
    }
    labhours_shared::trust::hex(&h.finalize())
}

pub fn sha256(bytes: &[u8]) -> String {
    labhours_shared::trust::hex(&Sha256::digest(bytes))
}

/// The SHA-256 of the file at `path`, read a MiB at a time (a year of
/// events is hundreds of MB: never in memory at once).
pub fn file_sha256(path: &std::path::Path) -> std::io::Result<String> {
    use std::io::Read as _;
    let mut file = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        match file.read(&mut buf)? {
            0 => return Ok(labhours_shared::trust::hex(&h.finalize())),
            n => h.update(&buf[..n]),
        }
    }
}

/// Lines as a file's bytes.
pub fn join_lines(lines: &[String]) -> Vec<u8> {
    let mut out = Vec::with_capacity(lines.iter().map(|l| l.len() + 1).sum());
    for line in lines {
        out.extend_from_slice(line.as_bytes());
        out.push(b'\n');
    }
    out
}
