//! Agents' keys and the checks an envelope passes before its events are
//! committed (docs/design/trust.md): signature, key, owner, hash chain.
//!
//! [`check`] runs inside the ingest transaction, so the chain it compares
//! against includes what earlier envelopes of the same commit stored. A
//! refusal names its [`Kind`] and reason; the store quarantines the whole
//! envelope and commits nothing of it.

pub mod cli;

use jiff::Timestamp;
use labhours_shared::trust::{ChainHash, KeyId, PublicKey, Rotation, hex};
use labhours_shared::wire::Incoming;
use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;

use crate::quarantine::Kind;

/// `[trust]` as ingest applies it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrustPolicy {
    /// Accept unsigned envelopes from agents that have no enrolled key
    /// (the migration period). An agent with a key must always sign.
    pub allow_unsigned: bool,
}

impl Default for TrustPolicy {
    fn default() -> Self {
        Self {
            allow_unsigned: true,
        }
    }
}

/// Why an envelope was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub kind: Kind,
    pub reason: String,
}

fn refuse(kind: Kind, reason: String) -> Refusal {
    Refusal { kind, reason }
}

/// What the checks found about an accepted envelope.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Verdict {
    /// Signed by an enrolled, unrevoked key of its agent.
    pub key_id: Option<KeyId>,
    /// Run starts whose `prev` was taken on trust (no stored hash before them).
    pub anchors: Vec<(u64, ChainHash)>,
    /// A new key the agent rotated to, endorsed by its enrolled previous
    /// key: enrolled in the same transaction as the envelope's events.
    pub rotation: Option<Rotation>,
}

/// An enrolled key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeyRow {
    pub agent_id: String,
    pub key_id: String,
    pub public_key: String,
    pub enrolled_at: Timestamp,
    pub revoked_at: Option<Timestamp>,
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error(
        "key {key_id} is already enrolled for agent {owner}; a key belongs to one agent (make another with `labhours-agent keygen`)"
    )]
    OtherOwner { key_id: KeyId, owner: String },
    #[error("agent {agent_id} has no key {key_id} (see `labhours-collector agents keys`)")]
    NoSuchKey { agent_id: String, key_id: KeyId },
    #[error(transparent)]
    Sql(#[from] rusqlite::Error),
}

/// Enrols `key` for `agent_id` (again: a no-op that returns the row).
pub fn enrol(
    conn: &Connection,
    agent_id: &str,
    key: &PublicKey,
    now: Timestamp,
) -> Result<KeyRow, KeyError> {
    let key_id = key.key_id();
    if let Some(row) = key_row(conn, &key_id)? {
        if row.agent_id != agent_id {
            return Err(KeyError::OtherOwner {
                key_id,
                owner: row.agent_id,
            });
        }
        return Ok(row);
    }
    conn.execute(
        "INSERT INTO agent_keys (key_id, agent_id, public_key, enrolled_at_ms)
         VALUES (?1, ?2, ?3, ?4)",
        params![
            key_id.to_string(),
            agent_id,
            key.to_string(),
            now.as_millisecond()
        ],
    )?;
    Ok(key_row(conn, &key_id)?.expect("just inserted"))
}

/// Revokes a key of `agent_id`: envelopes signed with it are refused from now on.
pub fn revoke(
    conn: &Connection,
    agent_id: &str,
    key_id: &KeyId,
    now: Timestamp,
) -> Result<KeyRow, KeyError> {
    let changed = conn.execute(
        "UPDATE agent_keys SET revoked_at_ms = COALESCE(revoked_at_ms, ?3)
         WHERE key_id = ?1 AND agent_id = ?2",
        params![key_id.to_string(), agent_id, now.as_millisecond()],
    )?;
    if changed == 0 {
        return Err(KeyError::NoSuchKey {
            agent_id: agent_id.to_owned(),
            key_id: *key_id,
        });
    }
    Ok(key_row(conn, key_id)?.expect("just updated"))
}

/// Checks a rotation to a key not yet enrolled: the key it comes from must
/// be `agent_id`'s, unrevoked when the envelope arrived, must have signed
/// the statement, and must not have endorsed another key before. Returns
/// the new key's row as it will be enrolled.
fn endorsed(
    conn: &Connection,
    agent_id: &str,
    rotation: &Rotation,
    received_at: Timestamp,
) -> rusqlite::Result<Result<KeyRow, Refusal>> {
    let (from, to) = (rotation.from, rotation.to.key_id());
    let Some(previous) = key_row(conn, &from)? else {
        return Ok(Err(refuse(
            Kind::UnknownKey,
            format!(
                "signed with key {to}, not enrolled, endorsed by key {from}, not enrolled either \
                 (labhours-collector agents enrol {agent_id} <public key>)"
            ),
        )));
    };
    if previous.agent_id != agent_id {
        return Ok(Err(refuse(
            Kind::WrongAgent,
            format!(
                "envelope for {agent_id} rotates to key {to} on the word of key {from}, which belongs to agent {}",
                previous.agent_id
            ),
        )));
    }
    if let Some(revoked) = previous.revoked_at.filter(|t| *t <= received_at) {
        return Ok(Err(refuse(
            Kind::RevokedKey,
            format!(
                "rotation of {agent_id} to key {to} is endorsed by key {from}, revoked at {revoked} \
                 (enrol the new key by hand if it is genuine)"
            ),
        )));
    }
    let public: Result<PublicKey, _> = previous.public_key.parse();
    if !public.is_ok_and(|p| rotation.verifies(agent_id, &p)) {
        return Ok(Err(refuse(
            Kind::BadSignature,
            format!("the rotation of {agent_id} to key {to} does not verify with key {from}"),
        )));
    }
    let successor: Option<String> = conn
        .prepare_cached("SELECT key_id FROM agent_keys WHERE rotated_from = ?1")?
        .query_row([from.to_string()], |r| r.get(0))
        .optional()?;
    if let Some(successor) = successor {
        return Ok(Err(refuse(
            Kind::UnknownKey,
            format!(
                "key {from} of {agent_id} already rotated to key {successor}; it cannot endorse {to} too"
            ),
        )));
    }
    Ok(Ok(KeyRow {
        agent_id: agent_id.to_owned(),
        key_id: to.to_string(),
        public_key: rotation.to.to_string(),
        enrolled_at: received_at,
        revoked_at: None,
    }))
}

/// Enrols the key an accepted envelope rotated to (see [`Verdict::rotation`]).
pub fn enrol_rotated(
    conn: &Connection,
    agent_id: &str,
    rotation: &Rotation,
    at: Timestamp,
) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO agent_keys (key_id, agent_id, public_key, enrolled_at_ms, rotated_from)
         VALUES (?1, ?2, ?3, ?4, ?5)",
        params![
            rotation.to.key_id().to_string(),
            agent_id,
            rotation.to.to_string(),
            at.as_millisecond(),
            rotation.from.to_string()
        ],
    )?;
    tracing::info!(
        agent_id,
        from = %rotation.from,
        to = %rotation.to.key_id(),
        "agent rotated its signing key; the new key is enrolled on the old one's signature"
    );
    Ok(())
}

/// Every enrolled key, by agent, oldest first.
pub fn keys(conn: &Connection) -> rusqlite::Result<Vec<KeyRow>> {
    let mut stmt = conn.prepare(
        "SELECT agent_id, key_id, public_key, enrolled_at_ms, revoked_at_ms
         FROM agent_keys ORDER BY agent_id, enrolled_at_ms, key_id",
    )?;
    stmt.query_map([], row_of)?.collect()
}

fn key_row(conn: &Connection, key_id: &KeyId) -> rusqlite::Result<Option<KeyRow>> {
    conn.prepare_cached(
        "SELECT agent_id, key_id, public_key, enrolled_at_ms, revoked_at_ms
         FROM agent_keys WHERE key_id = ?1",
    )?
    .query_row([key_id.to_string()], row_of)
    .optional()
}

fn row_of(row: &rusqlite::Row<'_>) -> rusqlite::Result<KeyRow> {
    let ts = |ms: i64| Timestamp::from_millisecond(ms).unwrap_or(Timestamp::UNIX_EPOCH);
    Ok(KeyRow {
        agent_id: row.get(0)?,
        key_id: row.get(1)?,
        public_key: row.get(2)?,
        enrolled_at: ts(row.get(3)?),
        revoked_at: row.get::<_, Option<i64>>(4)?.map(ts),
    })
}

/// The stored chain hash of one seq: `None` when the seq is not stored,
/// `Some(None)` when it came unchained (version 1).
fn stored_hash(
    conn: &Connection,
    agent_id: &str,
    seq: u64,
) -> rusqlite::Result<Option<Option<ChainHash>>> {
    conn.prepare_cached("SELECT chain_hash FROM events WHERE agent_id = ?1 AND seq = ?2")?
        .query_row(params![agent_id, seq as i64], |r| {
            r.get::<_, Option<Vec<u8>>>(0)
        })
        .optional()
        .map(|found| found.map(|hash| hash.and_then(hash_of)))
}

/// Whether `seq` lies in a range a `dropped` notice of the agent named
/// (stored, or in this envelope): a declared loss, after which the chain
/// may start again from a new anchor.
fn declared_dropped(conn: &Connection, incoming: &Incoming, seq: u64) -> rusqlite::Result<bool> {
    use labhours_shared::wire::EventKind;
    let in_envelope = incoming.events.iter().any(|e| match &e.kind {
        EventKind::Dropped { ranges, .. } => ranges.iter().any(|r| r.first <= seq && seq <= r.last),
        _ => false,
    });
    if in_envelope {
        return Ok(true);
    }
    conn.prepare_cached(
        "SELECT 1 FROM dropped_ranges WHERE agent_id = ?1 AND first_seq <= ?2 AND last_seq >= ?2 LIMIT 1",
    )?
    .query_row(params![incoming.agent_id, seq as i64], |_| Ok(()))
    .optional()
    .map(|found| found.is_some())
}

/// Whether the agent ever had a key enrolled (then it must sign).
fn has_keys(conn: &Connection, agent_id: &str) -> rusqlite::Result<Option<String>> {
    conn.prepare_cached("SELECT key_id FROM agent_keys WHERE agent_id = ?1 LIMIT 1")?
        .query_row([agent_id], |r| r.get(0))
        .optional()
}

/// Checks one envelope (its topic already matched its `agent_id`) before
/// anything of it is written. `highest_seen` is the agent's highest seq
/// this collector has closed: only seqs at or below it can be stored, so
/// only those are looked up for forks.
pub fn check(
    conn: &Connection,
    policy: TrustPolicy,
    incoming: &Incoming,
    received_at: Timestamp,
    highest_seen: u64,
) -> Result<Result<Verdict, Refusal>, rusqlite::Error> {
    let agent_id = incoming.agent_id.as_str();
    let key_id = incoming.chain.as_ref().and_then(|c| c.key_id);
    let mut verdict = Verdict::default();
    match (&incoming.signed, key_id) {
        (Some(_), None) => {
            return Ok(Err(refuse(
                Kind::BadSignature,
                "the envelope carries a signature but no key_id".into(),
            )));
        }
        (None, Some(key_id)) => {
            return Ok(Err(refuse(
                Kind::BadSignature,
                format!("the envelope names key {key_id} but carries no signature"),
            )));
        }
        (None, None) => {
            if let Some(key) = has_keys(conn, agent_id)? {
                return Ok(Err(refuse(
                    Kind::Unsigned,
                    format!(
                        "unsigned envelope for {agent_id}, which has an enrolled key ({key}): \
                         an agent with a key must sign"
                    ),
                )));
            }
            if !policy.allow_unsigned {
                return Ok(Err(refuse(
                    Kind::Unsigned,
                    format!(
                        "unsigned envelope for {agent_id} and [trust] allow_unsigned = false \
                         (enrol the agent's key: labhours-agent keygen, then labhours-collector agents enrol)"
                    ),
                )));
            }
        }
        (Some(signed), Some(key_id)) => {
            let rotation = incoming.chain.as_ref().and_then(|c| c.rotation.as_ref());
            let key = match (key_row(conn, &key_id)?, rotation) {
                (Some(key), _) => key,
                (None, Some(rotation)) if rotation.to.key_id() == key_id => {
                    match endorsed(conn, agent_id, rotation, received_at)? {
                        Ok(row) => {
                            verdict.rotation = Some(rotation.clone());
                            row
                        }
                        Err(refusal) => return Ok(Err(refusal)),
                    }
                }
                (None, _) => {
                    return Ok(Err(refuse(
                        Kind::UnknownKey,
                        format!(
                            "signed with key {key_id}, which is not enrolled \
                             (labhours-collector agents enrol {agent_id} <public key>)"
                        ),
                    )));
                }
            };
            if key.agent_id != agent_id {
                return Ok(Err(refuse(
                    Kind::WrongAgent,
                    format!(
                        "envelope for {agent_id} signed with key {key_id}, which belongs to agent {}",
                        key.agent_id
                    ),
                )));
            }
            if let Some(revoked) = key.revoked_at.filter(|t| *t <= received_at) {
                return Ok(Err(refuse(
                    Kind::RevokedKey,
                    format!("signed with key {key_id} of {agent_id}, revoked at {revoked}"),
                )));
            }
            let public: PublicKey = match key.public_key.parse() {
                Ok(k) => k,
                Err(e) => return Ok(Err(refuse(Kind::UnknownKey, e.to_string()))),
            };
            if !public.verifies(&signed.message, &signed.signature) {
                return Ok(Err(refuse(
                    Kind::BadSignature,
                    format!(
                        "the signature does not verify with key {key_id} of {agent_id} \
                         over the {} bytes received (forged or changed in transit)",
                        signed.message.len()
                    ),
                )));
            }
            verdict.key_id = Some(key_id);
        }
    }
    let Some(chain) = &incoming.chain else {
        return Ok(Ok(verdict));
    };
    for run in &chain.runs {
        let before = run.first - 1;
        let stored = if before == 0 {
            Some(Some([0u8; 32]))
        } else {
            stored_hash(conn, agent_id, before)?
        };
        match stored {
            Some(Some(hash)) if hash == run.prev => {}
            Some(Some(hash)) if before > 0 && declared_dropped(conn, incoming, before)? => {
                // The agent declared this seq lost (a recovered outbox):
                // its new chain starts here, on its signed word.
                let _ = hash;
                verdict.anchors.push((run.first, run.prev));
            }
            Some(Some(hash)) => {
                return Ok(Err(refuse(
                    Kind::BrokenChain,
                    format!(
                        "prev of seq {} is {}, but seq {before} of {agent_id} is stored with hash {}",
                        run.first,
                        hex(&run.prev),
                        hex(&hash)
                    ),
                )));
            }
            _ => verdict.anchors.push((run.first, run.prev)),
        }
    }
    for (event, hash) in incoming.events.iter().zip(&chain.hashes) {
        if event.seq > highest_seen {
            continue;
        }
        if let Some(Some(stored)) = stored_hash(conn, agent_id, event.seq)?
            && stored != *hash
        {
            return Ok(Err(refuse(
                Kind::Fork,
                format!(
                    "seq {} of {agent_id} is stored with hash {}, this envelope's hashes to {}: \
                     two histories (a restored agent, or a forged event)",
                    event.seq,
                    hex(&stored),
                    hex(hash)
                ),
            )));
        }
    }
    // An anchor taken earlier ahead of these seqs (the live lane went first)
    // is checked now that the seq before it arrives.
    for (index, seq) in run_ends(incoming) {
        let Some(anchor) = anchor_at(conn, agent_id, seq + 1)? else {
            continue;
        };
        if anchor != chain.hashes[index] {
            return Ok(Err(refuse(
                Kind::BrokenChain,
                format!(
                    "seq {seq} of {agent_id} hashes to {}, but seq {} was accepted with prev {}",
                    hex(&chain.hashes[index]),
                    seq + 1,
                    hex(&anchor)
                ),
            )));
        }
    }
    Ok(Ok(verdict))
}

/// A stored hash (a BLOB of 32 bytes).
fn hash_of(bytes: Vec<u8>) -> Option<ChainHash> {
    bytes.try_into().ok()
}

fn anchor_at(conn: &Connection, agent_id: &str, seq: u64) -> rusqlite::Result<Option<ChainHash>> {
    conn.prepare_cached("SELECT prev_hash FROM chain_anchors WHERE agent_id = ?1 AND seq = ?2")?
        .query_row(params![agent_id, seq as i64], |r| r.get::<_, Vec<u8>>(0))
        .optional()
        .map(|h| h.and_then(hash_of))
}

/// Records the anchors of an accepted envelope and drops those its events
/// have now confirmed: an anchor at `s` is confirmed once `s - 1` arrived
/// with a hash equal to it — checked in [`check`] when `s - 1` ends a run,
/// and implied by the fork check when `s` follows `s - 1` inside a run
/// (the same stored hash over the same bytes means the same prev).
pub fn record_anchors(
    conn: &Connection,
    agent_id: &str,
    verdict: &Verdict,
    incoming: &Incoming,
    received_at: Timestamp,
) -> rusqlite::Result<()> {
    if let Some(chain) = &incoming.chain {
        let mut confirmed = conn.prepare_cached(
            "DELETE FROM chain_anchors WHERE agent_id = ?1 AND seq >= ?2 AND seq <= ?3",
        )?;
        for (run, (_, last)) in chain.runs.iter().zip(run_ends(incoming)) {
            confirmed.execute(params![agent_id, run.first as i64, (last + 1) as i64])?;
        }
    }
    let mut insert = conn.prepare_cached(
        "INSERT OR REPLACE INTO chain_anchors (agent_id, seq, prev_hash, key_id, received_at_ms)
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )?;
    for (seq, prev) in &verdict.anchors {
        insert.execute(params![
            agent_id,
            *seq as i64,
            prev.as_slice(),
            verdict.key_id.map(|k| k.to_string()),
            received_at.as_millisecond()
        ])?;
    }
    Ok(())
}

/// The last event of every run of consecutive seqs: (index, seq).
fn run_ends(incoming: &Incoming) -> Vec<(usize, u64)> {
    let events = &incoming.events;
    (0..events.len())
        .filter(|&i| {
            events
                .get(i + 1)
                .is_none_or(|next| next.seq != events[i].seq + 1)
        })
        .map(|i| (i, events[i].seq))
        .collect()
}

#[cfg(test)]
mod tests;
