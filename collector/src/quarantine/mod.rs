//! The quarantine: payloads the collector refused, kept with the reason so
//! an operator can see what was rejected and why (`docs/collector-ingest.md`).
//!
//! Ingest writes rows ([`Quarantined`], in the same transaction as the
//! batch it came with); this module reads them for the API
//! (`GET /api/v1/quarantine`), the CLI (`labhours-collector quarantine`),
//! the dashboard and `healthz`, and purges old ones.

use std::collections::BTreeMap;
use std::fmt;

use jiff::Timestamp;
use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};

pub mod cli;

/// How much of a quarantined payload is kept.
pub const KEEP_BYTES: usize = 64 * 1024;

/// Why a payload was refused, by class; the row's `reason` says it in full.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// The topic is not `<prefix>/<agent_id>/<events|status>`.
    BadTopic,
    /// Larger than `ingest.max_payload_bytes`.
    Oversized,
    /// Not a valid envelope or status for this protocol version.
    Undecodable,
    /// The payload's agent_id differs from the topic's.
    AgentMismatch,
    /// A seq too large for the store.
    UnstorableSeq,
    /// Seqs no real agent sends (no events, events at or below the ack, a
    /// `dropped` notice naming its own or later seqs).
    InconsistentSeqs,
    /// A seq already stored with other content (two agents with one id?).
    SeqConflict,
    /// An `acked_through` above anything received that does not continue from it.
    ImplausibleFloor,
    /// Unsigned, from an agent with an enrolled key or while `[trust]
    /// allow_unsigned = false` (docs/design/trust.md).
    Unsigned,
    /// Signed with a key id no one enrolled.
    UnknownKey,
    /// Signed with a key enrolled for another agent: an agent publishing
    /// under another's topic with its own key.
    WrongAgent,
    /// Signed with a revoked key.
    RevokedKey,
    /// The signature does not verify over the bytes received (forged or garbled).
    BadSignature,
    /// `prev` differs from the stored hash of the seq before.
    BrokenChain,
    /// A seq already stored with another chain hash: two histories.
    Fork,
    /// Stored by a version that did not classify, and not recognised.
    #[default]
    Other,
}

impl Kind {
    pub const ALL: [Kind; 16] = [
        Self::BadTopic,
        Self::Oversized,
        Self::Undecodable,
        Self::AgentMismatch,
        Self::UnstorableSeq,
        Self::InconsistentSeqs,
        Self::SeqConflict,
        Self::ImplausibleFloor,
        Self::Unsigned,
        Self::UnknownKey,
        Self::WrongAgent,
        Self::RevokedKey,
        Self::BadSignature,
        Self::BrokenChain,
        Self::Fork,
        Self::Other,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::BadTopic => "bad_topic",
            Self::Oversized => "oversized",
            Self::Undecodable => "undecodable",
            Self::AgentMismatch => "agent_mismatch",
            Self::UnstorableSeq => "unstorable_seq",
            Self::InconsistentSeqs => "inconsistent_seqs",
            Self::SeqConflict => "seq_conflict",
            Self::ImplausibleFloor => "implausible_floor",
            Self::Unsigned => "unsigned",
            Self::UnknownKey => "unknown_key",
            Self::WrongAgent => "wrong_agent",
            Self::RevokedKey => "revoked_key",
            Self::BadSignature => "bad_signature",
            Self::BrokenChain => "broken_chain",
            Self::Fork => "fork",
            Self::Other => "other",
        }
    }

    /// A refusal by the trust checks (signature, key, chain): the
    /// exceptions inbox lists these as trust failures.
    pub fn is_trust(self) -> bool {
        matches!(
            self,
            Self::Unsigned
                | Self::UnknownKey
                | Self::WrongAgent
                | Self::RevokedKey
                | Self::BadSignature
                | Self::BrokenChain
                | Self::Fork
        )
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == text.trim())
    }

    /// The accepted names, as error messages list them.
    pub fn names() -> String {
        Self::ALL.map(Kind::as_str).join(", ")
    }

    /// The class of a reason written before rows were classified (schema < 5).
    fn of_legacy_reason(reason: &str) -> Self {
        let starts = |p: &str| reason.starts_with(p);
        if starts("topic ") {
            Self::BadTopic
        } else if starts("oversized") {
            Self::Oversized
        } else if starts("undecodable") {
            Self::Undecodable
        } else if starts("agent_id conflict") {
            Self::SeqConflict
        } else if starts("agent_id ") && reason.contains(" differs from ") {
            Self::AgentMismatch
        } else if reason.contains("the largest seq the store can hold") {
            Self::UnstorableSeq
        } else if starts("acked_through ") && reason.contains("is above anything received") {
            Self::ImplausibleFloor
        } else if starts("an envelope with no events") || starts("events[") {
            Self::InconsistentSeqs
        } else {
            Self::Other
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A payload that was refused, on its way to the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quarantined {
    pub received_at: Timestamp,
    /// The MQTT topic it came on.
    pub topic: String,
    /// The agent it names, when one can be told.
    pub agent_id: Option<String>,
    pub kind: Kind,
    pub reason: String,
    /// At most [`KEEP_BYTES`] of the payload.
    pub payload: Vec<u8>,
    /// The original payload length.
    pub payload_len: usize,
}

impl Quarantined {
    /// Keeps at most the first [`KEEP_BYTES`] of `payload`.
    pub fn new(
        received_at: Timestamp,
        topic: &str,
        agent_id: Option<&str>,
        kind: Kind,
        reason: String,
        payload: &[u8],
    ) -> Self {
        Self {
            received_at,
            topic: topic.to_owned(),
            agent_id: agent_id.map(str::to_owned),
            kind,
            reason,
            payload: payload[..payload.len().min(KEEP_BYTES)].to_vec(),
            payload_len: payload.len(),
        }
    }

    /// Writes the row (inside the caller's transaction).
    pub fn insert(&self, conn: &Connection) -> rusqlite::Result<()> {
        conn.prepare_cached(
            "INSERT INTO quarantine
                 (received_at_ms, topic, agent_id, kind, reason, payload, payload_len)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )?
        .execute(params![
            self.received_at.as_millisecond(),
            self.topic,
            self.agent_id,
            self.kind.as_str(),
            self.reason,
            self.payload,
            i64::try_from(self.payload_len).unwrap_or(i64::MAX),
        ])?;
        Ok(())
    }
}

/// Which rows to list; every field narrows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    pub agent_id: Option<String>,
    pub kind: Option<Kind>,
    /// Received at or after (UTC ms).
    pub from_ms: Option<i64>,
    /// Received before (UTC ms).
    pub to_ms: Option<i64>,
    /// At most this many rows, newest first.
    pub limit: usize,
}

/// One stored row, without its payload.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Entry {
    pub id: i64,
    #[schema(value_type = String, format = DateTime)]
    pub received_at: Timestamp,
    pub topic: String,
    pub agent_id: Option<String>,
    pub kind: Kind,
    pub reason: String,
    /// The original payload length in bytes (at most 64 KiB of it is kept).
    pub payload_len: u64,
}

/// One row with the payload it kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Detail {
    #[serde(flatten)]
    pub entry: Entry,
    /// The kept payload as text when it is UTF-8.
    pub payload_text: Option<String>,
    /// The kept payload in lower-case hex (always present).
    pub payload_hex: String,
    /// Whether only the first 64 KiB were kept.
    pub truncated: bool,
}

const COLUMNS: &str = "id, received_at_ms, topic, agent_id, kind, reason, payload_len";

fn entry(row: &rusqlite::Row<'_>) -> rusqlite::Result<Entry> {
    let at: i64 = row.get(1)?;
    let kind: String = row.get(4)?;
    Ok(Entry {
        id: row.get(0)?,
        received_at: Timestamp::from_millisecond(at).unwrap_or(Timestamp::UNIX_EPOCH),
        topic: row.get(2)?,
        agent_id: row.get(3)?,
        kind: Kind::parse(&kind).unwrap_or(Kind::Other),
        reason: row.get(5)?,
        payload_len: row.get::<_, i64>(6)?.max(0) as u64,
    })
}

/// The rows `filter` selects, newest first.
pub fn list(conn: &Connection, filter: &Filter) -> rusqlite::Result<Vec<Entry>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM quarantine
         WHERE (?1 IS NULL OR agent_id = ?1) AND (?2 IS NULL OR kind = ?2)
           AND (?3 IS NULL OR received_at_ms >= ?3) AND (?4 IS NULL OR received_at_ms < ?4)
         ORDER BY received_at_ms DESC, id DESC LIMIT ?5"
    ))?;
    stmt.query_map(
        params![
            filter.agent_id,
            filter.kind.map(Kind::as_str),
            filter.from_ms,
            filter.to_ms,
            i64::try_from(filter.limit).unwrap_or(i64::MAX),
        ],
        entry,
    )?
    .collect()
}

/// One row with its payload.
pub fn get(conn: &Connection, id: i64) -> rusqlite::Result<Option<Detail>> {
    conn.query_row(
        &format!("SELECT {COLUMNS}, payload FROM quarantine WHERE id = ?1"),
        [id],
        |row| {
            let entry = entry(row)?;
            let payload: Vec<u8> = row.get(7)?;
            Ok(Detail {
                truncated: (payload.len() as u64) < entry.payload_len,
                payload_hex: labhours_shared::trust::hex(&payload),
                payload_text: String::from_utf8(payload).ok(),
                entry,
            })
        },
    )
    .optional()
}

/// Deletes the rows received before `before`; returns how many.
pub fn purge(conn: &Connection, before: Timestamp) -> rusqlite::Result<usize> {
    conn.execute(
        "DELETE FROM quarantine WHERE received_at_ms < ?1",
        [before.as_millisecond()],
    )
}

/// How many rows are stored, per kind (kinds with none left out).
pub fn counts(conn: &Connection) -> rusqlite::Result<BTreeMap<Kind, u64>> {
    let mut stmt =
        conn.prepare_cached("SELECT kind, COUNT(*) FROM quarantine GROUP BY kind ORDER BY kind")?;
    let rows = stmt.query_map([], |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?.max(0) as u64))
    })?;
    let mut counts = BTreeMap::new();
    for row in rows {
        let (kind, n) = row?;
        *counts
            .entry(Kind::parse(&kind).unwrap_or(Kind::Other))
            .or_default() += n;
    }
    Ok(counts)
}

/// The agent a topic names: `<prefix>/<agent_id>/<kind>` (any prefix depth).
pub fn topic_agent(topic: &str) -> Option<String> {
    let mut parts = topic.rsplit('/');
    let _kind = parts.next()?;
    parts.next().filter(|a| !a.is_empty()).map(str::to_owned)
}

/// Gives rows stored before schema 5 their agent and kind, from the topic
/// and the reason text they were written with.
pub fn classify_legacy_rows(conn: &mut Connection) -> rusqlite::Result<usize> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let rows: Vec<(i64, String, String)> = tx
        .prepare("SELECT id, topic, reason FROM quarantine WHERE agent_id IS NULL")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<rusqlite::Result<_>>()?;
    {
        let mut update =
            tx.prepare("UPDATE quarantine SET agent_id = ?2, kind = ?3 WHERE id = ?1")?;
        for (id, topic, reason) in &rows {
            let kind = Kind::of_legacy_reason(reason);
            let agent = (kind != Kind::BadTopic)
                .then(|| topic_agent(topic))
                .flatten();
            update.execute(params![id, agent, kind.as_str()])?;
        }
    }
    tx.commit()?;
    Ok(rows.len())
}

#[cfg(test)]
mod tests;
