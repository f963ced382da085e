//! Checkpoints: the collector's signed statement, at one instant, of every
//! agent's chain head and of every instrument's bookings and corrections
//! (docs/evidence.md). The body, one fact a line:
//!
//! ```text
//! labhours/<site>                                   origin
//! time 2026-03-04T00:00:00Z                         when it was signed
//! agent <agent_id> <last_seq> <head hex>            one per chained agent
//! inputs <instrument_id> <bookings> <sha256 hex> <corrections> <sha256 hex>
//! ```
//!
//! `inputs` hashes are SHA-256 over the instrument's rows exactly as an
//! evidence bundle writes them (`bookings.jsonl`, `corrections.jsonl`,
//! see [`super::bundle`]): bookings are not signed by agents, so this is
//! what makes a later edit of one detectable.

use std::collections::BTreeMap;

use jiff::Timestamp;
use labhours_shared::trust::{ChainHash, PublicKey, Signer, from_hex, hex};
use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;

use super::bundle;
use super::note;

/// One agent's chain head.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Head {
    pub agent_id: String,
    pub last_seq: u64,
    #[serde(serialize_with = "ser_hex")]
    pub head: ChainHash,
}

/// The digest of one instrument's bookings and corrections.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Inputs {
    pub instrument_id: String,
    pub bookings: u64,
    pub bookings_sha256: String,
    pub corrections: u64,
    pub corrections_sha256: String,
}

fn ser_hex<S: serde::Serializer>(h: &ChainHash, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&hex(h))
}

/// A checkpoint's body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Body {
    pub origin: String,
    pub time: Timestamp,
    pub heads: Vec<Head>,
    pub inputs: Vec<Inputs>,
}

impl Body {
    /// The note text (ends in a newline).
    pub fn text(&self) -> String {
        let mut out = format!("{}\ntime {}\n", self.origin, self.time);
        for h in &self.heads {
            out.push_str(&format!(
                "agent {} {} {}\n",
                h.agent_id,
                h.last_seq,
                hex(&h.head)
            ));
        }
        for i in &self.inputs {
            out.push_str(&format!(
                "inputs {} {} {} {} {}\n",
                i.instrument_id, i.bookings, i.bookings_sha256, i.corrections, i.corrections_sha256
            ));
        }
        out
    }

    /// Reads a body back; errors name the line.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut lines = text.lines().enumerate();
        let origin = lines
            .next()
            .map(|(_, l)| l.to_owned())
            .filter(|l| !l.is_empty())
            .ok_or("the checkpoint has no origin line")?;
        let mut body = Body {
            origin,
            time: Timestamp::UNIX_EPOCH,
            heads: Vec::new(),
            inputs: Vec::new(),
        };
        let mut timed = false;
        for (n, line) in lines {
            let bad = |why: &str| format!("checkpoint line {}: {line:?}: {why}", n + 1);
            let words: Vec<&str> = line.split(' ').collect();
            match words.as_slice() {
                ["time", t] => {
                    body.time = t.parse().map_err(|_| bad("not an RFC 3339 instant"))?;
                    timed = true;
                }
                ["agent", id, seq, head] => body.heads.push(Head {
                    agent_id: (*id).to_owned(),
                    last_seq: seq.parse().map_err(|_| bad("seq is not a number"))?,
                    head: from_hex::<32>(head).ok_or_else(|| bad("head is not 64 hex digits"))?,
                }),
                ["inputs", id, nb, hb, nc, hc] => body.inputs.push(Inputs {
                    instrument_id: (*id).to_owned(),
                    bookings: nb.parse().map_err(|_| bad("count is not a number"))?,
                    bookings_sha256: (*hb).to_owned(),
                    corrections: nc.parse().map_err(|_| bad("count is not a number"))?,
                    corrections_sha256: (*hc).to_owned(),
                }),
                _ => return Err(bad("expected `time`, `agent` or `inputs` and its fields")),
            }
        }
        if !timed {
            return Err("the checkpoint has no `time` line".into());
        }
        Ok(body)
    }

    pub fn head(&self, agent_id: &str) -> Option<&Head> {
        self.heads.iter().find(|h| h.agent_id == agent_id)
    }

    pub fn inputs_of(&self, instrument_id: &str) -> Option<&Inputs> {
        self.inputs
            .iter()
            .find(|i| i.instrument_id == instrument_id)
    }
}

/// A stored checkpoint, as served.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct Checkpoint {
    pub id: i64,
    /// The instant the body names (RFC 3339, UTC).
    #[schema(value_type = String)]
    pub signed_at: Timestamp,
    /// The signed-note key name (`labhours/<site>`).
    pub key_name: String,
    /// The whole signed note (C2SP signed-note format).
    pub note: String,
}

/// The origin and key name of a site: `labhours/<site name>`.
pub fn origin(site_name: &str) -> String {
    note::key_name(&format!("labhours/{site_name}"))
}

/// Every chained agent's highest stored seq and its hash.
pub fn heads(conn: &Connection) -> rusqlite::Result<Vec<Head>> {
    let mut stmt = conn.prepare(
        "SELECT e.agent_id, e.seq, e.chain_hash FROM events e
         JOIN (SELECT agent_id, MAX(seq) AS seq FROM events WHERE chain_hash IS NOT NULL
               GROUP BY agent_id) m ON m.agent_id = e.agent_id AND m.seq = e.seq
         ORDER BY e.agent_id",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, i64>(1)?,
            r.get::<_, Vec<u8>>(2)?,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (agent_id, seq, hash) = row?;
        if let Ok(head) = hash.try_into() {
            out.push(Head {
                agent_id,
                last_seq: seq as u64,
                head,
            });
        }
    }
    Ok(out)
}

/// The digest of every instrument that has bookings or corrections.
pub fn inputs(conn: &Connection) -> rusqlite::Result<Vec<Inputs>> {
    let ids: Vec<String> = conn
        .prepare(
            "SELECT instrument_id FROM bookings UNION SELECT instrument_id FROM corrections
             ORDER BY 1",
        )?
        .query_map([], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    ids.into_iter().map(|id| inputs_of(conn, &id)).collect()
}

/// One instrument's digest, over the rows a bundle would hold.
pub fn inputs_of(conn: &Connection, instrument_id: &str) -> rusqlite::Result<Inputs> {
    let bookings = bundle::table_lines(conn, bundle::Table::Bookings, instrument_id)?;
    let corrections = bundle::table_lines(conn, bundle::Table::Corrections, instrument_id)?;
    Ok(digest(instrument_id, &bookings, &corrections))
}

/// The digest of rows as lines (each without its newline).
pub fn digest(instrument_id: &str, bookings: &[String], corrections: &[String]) -> Inputs {
    Inputs {
        instrument_id: instrument_id.to_owned(),
        bookings: bookings.len() as u64,
        bookings_sha256: bundle::lines_sha256(bookings),
        corrections: corrections.len() as u64,
        corrections_sha256: bundle::lines_sha256(corrections),
    }
}

/// Signs a checkpoint of the store as it is now and keeps it.
pub fn sign(
    conn: &Connection,
    signer: &Signer,
    site_name: &str,
    now: Timestamp,
) -> rusqlite::Result<Checkpoint> {
    // One read transaction: heads and inputs of the same instant.
    conn.execute_batch("BEGIN")?;
    let body = (|| {
        Ok::<_, rusqlite::Error>(Body {
            origin: origin(site_name),
            time: now,
            heads: heads(conn)?,
            inputs: inputs(conn)?,
        })
    })();
    conn.execute_batch("COMMIT")?;
    let body = body?;
    let name = body.origin.clone();
    let text = note::sign(&body.text(), &name, signer);
    conn.execute(
        "INSERT INTO checkpoints (signed_at_ms, key_name, note) VALUES (?1, ?2, ?3)",
        params![body.time.as_millisecond(), name, text],
    )?;
    Ok(Checkpoint {
        id: conn.last_insert_rowid(),
        signed_at: body.time,
        key_name: name,
        note: text,
    })
}

/// Stored checkpoints, oldest first (only the newest with `latest`).
pub fn list(conn: &Connection, latest: bool) -> rusqlite::Result<Vec<Checkpoint>> {
    let sql = if latest {
        "SELECT id, signed_at_ms, key_name, note FROM checkpoints ORDER BY signed_at_ms DESC, id DESC LIMIT 1"
    } else {
        "SELECT id, signed_at_ms, key_name, note FROM checkpoints ORDER BY signed_at_ms, id"
    };
    conn.prepare(sql)?
        .query_map([], |r| {
            Ok(Checkpoint {
                id: r.get(0)?,
                signed_at: Timestamp::from_millisecond(r.get(1)?).unwrap_or(Timestamp::UNIX_EPOCH),
                key_name: r.get(2)?,
                note: r.get(3)?,
            })
        })?
        .collect()
}

/// When the newest checkpoint was signed.
pub fn newest_at(conn: &Connection) -> rusqlite::Result<Option<Timestamp>> {
    conn.query_row("SELECT MAX(signed_at_ms) FROM checkpoints", [], |r| {
        r.get::<_, Option<i64>>(0)
    })
    .optional()
    .map(|ms| {
        ms.flatten()
            .and_then(|ms| Timestamp::from_millisecond(ms).ok())
    })
}

/// The collector's public key and its signed-note name, as served.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct CollectorKey {
    /// `labhours/<site>`: the key name in signature lines.
    pub key_name: String,
    /// `ed25519:<64 hex digits>`.
    pub public_key: String,
    /// The signed-note verifier key `<name>+<hash>+<base64>`.
    pub verifier_key: String,
}

impl CollectorKey {
    pub fn new(site_name: &str, key: &PublicKey) -> Self {
        let name = origin(site_name);
        Self {
            verifier_key: note::verifier_key(&name, key),
            key_name: name,
            public_key: key.to_string(),
        }
    }
}

/// The collector's signing key: `[trust] key_file`, or
/// `<data_dir>/collector.key` created on first use.
pub fn load_key(config: &crate::config::CollectorConfig) -> anyhow::Result<Signer> {
    use labhours_shared::trust::key_file;
    match &config.trust.key_file {
        Some(path) => Ok(key_file::load(path)?),
        None => {
            let path = config.data_dir.join("collector.key");
            if path.exists() {
                Ok(key_file::load(&path)?)
            } else {
                std::fs::create_dir_all(&config.data_dir)?;
                Ok(key_file::generate(&path)?)
            }
        }
    }
}

/// Due when no checkpoint was signed since the start of the current UTC day.
pub fn due(newest: Option<Timestamp>, now: Timestamp) -> bool {
    const DAY_S: i64 = 86_400;
    match newest {
        None => true,
        Some(t) => t.as_second().div_euclid(DAY_S) < now.as_second().div_euclid(DAY_S),
    }
}

/// Checkpoints a bundle or a caller holds, keyed by time.
pub type ByTime = BTreeMap<Timestamp, Body>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_body_reads_back_what_it_writes_and_bad_lines_are_named() {
        let body = Body {
            origin: "labhours/site".into(),
            time: "2026-03-04T00:00:00Z".parse().expect("ts"),
            heads: vec![Head {
                agent_id: "a1".into(),
                last_seq: 42,
                head: [7; 32],
            }],
            inputs: vec![digest("nmr", &["{}".into()], &[])],
        };
        let text = body.text();
        assert_eq!(Body::parse(&text), Ok(body));
        let err = Body::parse("labhours/site\ntime x\n").unwrap_err();
        assert!(err.contains("line 2"), "{err}");
        let err =
            Body::parse("labhours/site\ntime 2026-03-04T00:00:00Z\nagent a1 x 00\n").unwrap_err();
        assert!(err.contains("line 3"), "{err}");
    }

    #[test]
    fn a_checkpoint_is_due_once_per_utc_day() {
        let t = |s: &str| s.parse::<Timestamp>().expect("ts");
        assert!(due(None, t("2026-03-04T00:00:01Z")));
        assert!(!due(
            Some(t("2026-03-04T00:00:00Z")),
            t("2026-03-04T23:59:59Z")
        ));
        assert!(due(
            Some(t("2026-03-04T23:59:59Z")),
            t("2026-03-05T00:00:00Z")
        ));
    }
}
