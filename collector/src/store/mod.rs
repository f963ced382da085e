//! The collector's system of record: one SQLite database in `data_dir`.
//!
//! # Layout
//!
//! `<data_dir>/labhours.sqlite3` (plus SQLite's `-wal` and `-shm` files),
//! schema from the numbered scripts in `collector/migrations/`, applied in
//! order at open; `PRAGMA user_version` holds the number of the last one
//! applied (see [`migrations`]). Tables: `events` (one row per
//! `(agent_id, seq)`), `agents` (registry, presence, health, committed_through),
//! `dropped_ranges`, `floor_raises` and `quarantine`. Admins can read the file
//! with any SQLite tool while the collector runs (WAL mode).
//!
//! # Durability
//!
//! Journal mode WAL. With [`Durability::Full`] (the default) every commit
//! fsyncs the WAL before [`Store::commit`] returns, so a commit that was
//! acknowledged to an agent survives a crash *and* a power cut; the agent
//! deletes events on that ack, so this is the setting that keeps "no event
//! lost". [`Durability::Normal`] skips that fsync (the WAL is synced at
//! checkpoints): a commit survives the process being killed but not an OS
//! crash or power cut, which could lose acknowledged events; it exists to
//! measure the cost, see `docs/collector-ingest.md`.
//!
//! # Invariants
//!
//! * An event row is written at most once: inserts are `INSERT OR IGNORE` on
//!   the primary key, so resent events never double-count.
//! * `agents.committed_through` is written in the same transaction as the
//!   events that moved it, so after a crash it never claims more than the
//!   table holds. The in-memory [`SeqTracker`]s are updated only after the
//!   transaction commits, and are rebuilt from the tables at open.

pub mod derived;
pub mod gaps;
pub mod migrations;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use jiff::Timestamp;
use labhours_shared::wire::{AgentStatus, EventKind, Incoming, Presence};
use rusqlite::{Connection, OpenFlags, OptionalExtension, params};

pub use crate::quarantine::Quarantined;
pub use gaps::SeqTracker;

use crate::quarantine::Kind as QuarantineKind;
use crate::trust::TrustPolicy;

/// The database file inside `data_dir`.
pub const DB_FILE: &str = "labhours.sqlite3";

/// How hard a commit is pushed to disk before it returns (and is acked).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Durability {
    /// `synchronous=FULL`: the WAL is fsynced at every commit.
    #[default]
    Full,
    /// `synchronous=NORMAL`: survives a killed process, not a power cut.
    Normal,
}

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot create the data directory {path}: {source}")]
    CreateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("database {path}: {source}")]
    Open {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error(
        "database {path} has schema version {found}, newer than this build knows ({known}): \
         run the newer labhours-collector, or restore a backup"
    )]
    SchemaTooNew {
        path: PathBuf,
        found: i64,
        known: i64,
    },
    #[error("database: {0}")]
    Sql(#[from] rusqlite::Error),
}

/// A message that passed every check, with when and on which topic it arrived.
#[derive(Debug, Clone)]
pub struct Received<T> {
    pub received_at: Timestamp,
    /// Where a refusal found only at commit (a seq conflict, an
    /// implausible floor) is recorded as coming from.
    pub topic: String,
    pub message: T,
}

/// Everything that arrived since the last commit; committed in one transaction.
#[derive(Debug, Default)]
pub struct Batch {
    pub envelopes: Vec<Received<Incoming>>,
    pub statuses: Vec<Received<AgentStatus>>,
    pub quarantined: Vec<Quarantined>,
}

impl Batch {
    pub fn is_empty(&self) -> bool {
        self.envelopes.is_empty() && self.statuses.is_empty() && self.quarantined.is_empty()
    }
}

/// What one commit did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CommitOutcome {
    /// `(agent_id, committed_through)` for every agent whose envelope was in
    /// the batch: the acks to publish now that the commit is durable.
    pub acks: Vec<(String, u64)>,
    /// Event rows written.
    pub stored: u64,
    /// Events that were already stored (resends).
    pub duplicates: u64,
    /// Events whose seq was already stored with *different* content: two
    /// agents are using one agent_id. The newcomer is quarantined, never merged.
    pub conflicts: u64,
    /// Times an agent's `acked_through` raised the floor past a hole.
    pub floor_raises: u64,
    /// Envelopes quarantined because their `acked_through` claimed a floor
    /// above anything this collector received from the agent.
    pub implausible_floors: u64,
    /// Envelopes quarantined by the trust checks (signature, key, chain).
    pub trust_refusals: u64,
}

#[derive(Debug, Clone)]
struct AgentState {
    tracker: SeqTracker,
    acked_floor: u64,
}

/// The SQLite store and, in memory, every agent's gap tracker.
#[derive(Debug)]
pub struct Store {
    conn: Connection,
    path: PathBuf,
    agents: HashMap<String, AgentState>,
    trust: TrustPolicy,
}

fn ms(t: Timestamp) -> i64 {
    t.as_millisecond()
}

/// SQLite integers are signed 64-bit: seqs above `i64::MAX` are refused at ingest.
fn sql_seq(seq: u64) -> i64 {
    i64::try_from(seq).unwrap_or(i64::MAX)
}

fn kind_name(kind: &EventKind) -> &'static str {
    match kind {
        EventKind::Transition { .. } => "transition",
        EventKind::Summary(_) => "summary",
        EventKind::ResultFile(_) => "result_file",
        EventKind::Fault { .. } => "fault",
        EventKind::Heartbeat(_) => "heartbeat",
        EventKind::Dropped { .. } => "dropped",
    }
}

impl Store {
    /// Opens (creating if needed) `<data_dir>/labhours.sqlite3`, applies the
    /// pending migrations and rebuilds every agent's gap tracker.
    pub fn open(data_dir: &Path, durability: Durability) -> Result<Self, StoreError> {
        std::fs::create_dir_all(data_dir).map_err(|source| StoreError::CreateDir {
            path: data_dir.to_owned(),
            source,
        })?;
        let path = data_dir.join(DB_FILE);
        let open_err = |source| StoreError::Open {
            path: path.clone(),
            source,
        };
        let mut conn = Connection::open_with_flags(
            &path,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(open_err)?;
        let mode: String = conn
            .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
            .map_err(open_err)?;
        if !mode.eq_ignore_ascii_case("wal") {
            tracing::warn!(%mode, path = %path.display(), "SQLite refused WAL mode");
        }
        let sync = match durability {
            Durability::Full => "FULL",
            Durability::Normal => "NORMAL",
        };
        conn.pragma_update(None, "synchronous", sync)
            .map_err(open_err)?;
        // Readers (admins' tools) may hold the database briefly.
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(open_err)?;
        let found = migrations::version(&conn).map_err(open_err)?;
        migrations::apply(&mut conn, &path)?;
        if found > 0 && found < migrations::DERIVED_SINCE {
            let events = derived::rebuild(&mut conn)?;
            tracing::info!(
                events,
                "derived the reconciliation tables from the stored events"
            );
        }
        if found > 0 && found < migrations::QUARANTINE_COLUMNS_SINCE {
            let rows = crate::quarantine::classify_legacy_rows(&mut conn)?;
            tracing::info!(
                rows,
                "classified the quarantined payloads by agent and kind"
            );
        }
        let mut store = Self {
            conn,
            path,
            agents: HashMap::new(),
            trust: TrustPolicy::default(),
        };
        store.load_trackers()?;
        Ok(store)
    }

    /// What ingest accepts unsigned (`[trust]`).
    pub fn set_trust_policy(&mut self, policy: TrustPolicy) {
        self.trust = policy;
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The connection, for readers such as the bookings queries.
    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    /// Upserts parsed bookings (see [`crate::bookings::store::import`]).
    pub fn import_bookings(
        &mut self,
        parsed: crate::bookings::Parsed,
        source: &str,
        options: crate::bookings::store::ImportOptions,
        now: Timestamp,
    ) -> Result<crate::bookings::store::ImportReport, StoreError> {
        self.import_bookings_counted(parsed, source, options, now, &Default::default())
    }

    /// [`Self::import_bookings`], counting the bookings compared in `progress`.
    pub fn import_bookings_counted(
        &mut self,
        parsed: crate::bookings::Parsed,
        source: &str,
        options: crate::bookings::store::ImportOptions,
        now: Timestamp,
        progress: &crate::bookings::Progress,
    ) -> Result<crate::bookings::store::ImportReport, StoreError> {
        // A year of bookings is tens of MB of table and index pages: with
        // SQLite's default 2 MB cache the transaction spills pages to the
        // WAL before it commits. 64 MiB, as the reconciliation writer.
        self.conn.pragma_update(None, "cache_size", -65_536)?;
        Ok(crate::bookings::store::import_counted(
            &mut self.conn,
            parsed,
            source,
            options,
            now,
            progress,
        )?)
    }

    /// The agent's committed_through, or `None` before its first envelope.
    pub fn committed_through(&self, agent_id: &str) -> Option<u64> {
        self.agents
            .get(agent_id)
            .map(|a| a.tracker.committed_through())
    }

    fn load_trackers(&mut self) -> Result<(), StoreError> {
        let mut agents = self.conn.prepare(
            "SELECT agent_id, acked_floor, committed_through FROM agents
             WHERE committed_through IS NOT NULL",
        )?;
        let mut seqs = self
            .conn
            .prepare("SELECT seq FROM events WHERE agent_id = ?1 AND seq > ?2 ORDER BY seq")?;
        let mut dropped = self.conn.prepare(
            "SELECT first_seq, last_seq FROM dropped_ranges WHERE agent_id = ?1 AND last_seq > ?2",
        )?;
        let rows = agents
            .query_map([], |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    row.get::<_, Option<i64>>(1)?.unwrap_or(0),
                    row.get::<_, i64>(2)?,
                ))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        for (agent_id, acked_floor, through) in rows {
            let mut tracker = SeqTracker::first_contact(through as u64);
            for seq in seqs.query_map(params![agent_id, through], |r| r.get::<_, i64>(0))? {
                tracker.close_seq(seq? as u64);
            }
            for range in dropped.query_map(params![agent_id, through], |r| {
                Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?))
            })? {
                let (first, last) = range?;
                tracker.close(first as u64, last as u64);
            }
            self.agents.insert(
                agent_id,
                AgentState {
                    tracker,
                    acked_floor: acked_floor as u64,
                },
            );
        }
        Ok(())
    }

    /// Writes the batch in one transaction; on success the in-memory trackers
    /// move on and the outcome lists the acks to send. On error nothing is
    /// written and nothing moves: the agents will resend.
    pub fn commit(&mut self, batch: &Batch) -> Result<CommitOutcome, StoreError> {
        let mut outcome = CommitOutcome::default();
        // Working copies of the touched agents, applied after the commit.
        let mut touched: HashMap<&str, AgentState> = HashMap::new();
        let mut order: Vec<&str> = Vec::new();
        // Agents with an accepted envelope in this batch.
        let mut seen_in_batch: std::collections::HashSet<&str> = Default::default();
        // Immediate: this transaction reads (chains, keys) before it writes;
        // a deferred one fails at once, without waiting, when another
        // connection (an import, `agents enrol`, the InfluxDB cursor) wrote
        // in between.
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let mut deriver = derived::Deriver::default();
        {
            let mut insert_event = tx.prepare_cached(
                "INSERT OR IGNORE INTO events
                 (agent_id, seq, instrument_id, at_ms, type, payload, received_at_ms,
                  chain_hash, signed)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            )?;
            let mut insert_dropped = tx.prepare_cached(
                "INSERT OR IGNORE INTO dropped_ranges (agent_id, first_seq, last_seq, event_seq)
                 VALUES (?1, ?2, ?3, ?4)",
            )?;
            let mut stored_payload =
                tx.prepare_cached("SELECT payload FROM events WHERE agent_id = ?1 AND seq = ?2")?;
            let mut fill_hash = tx.prepare_cached(
                "UPDATE events SET chain_hash = ?3 WHERE agent_id = ?1 AND seq = ?2 AND chain_hash IS NULL",
            )?;
            let mut insert_evidence = tx.prepare_cached(
                "INSERT INTO signed_envelopes (agent_id, key_id, first_seq, last_seq, received_at_ms, payload)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?;
            let mut insert_raise = tx.prepare_cached(
                "INSERT INTO floor_raises (agent_id, received_at_ms, skipped_first, skipped_last)
                 VALUES (?1, ?2, ?3, ?4)",
            )?;
            let mut upsert_agent = tx.prepare_cached(
                "INSERT INTO agents (agent_id, instrument_id, first_seen_ms, last_seen_ms,
                     clock_skew_ms, acked_floor, committed_through)
                 VALUES (?1, ?2, ?3, ?3, ?4, ?5, ?6)
                 ON CONFLICT (agent_id) DO UPDATE SET
                     instrument_id = excluded.instrument_id,
                     last_seen_ms = max(last_seen_ms, excluded.last_seen_ms),
                     clock_skew_ms = excluded.clock_skew_ms,
                     acked_floor = excluded.acked_floor,
                     committed_through = excluded.committed_through",
            )?;
            let mut heartbeat = tx.prepare_cached(
                "UPDATE agents SET heartbeat_at_ms = ?2, backlog = ?3,
                     oldest_unacked_age_s = ?4, version = ?5
                 WHERE agent_id = ?1 AND (heartbeat_at_ms IS NULL OR heartbeat_at_ms <= ?2)",
            )?;

            for received in &batch.envelopes {
                let incoming = &received.message;
                let env = &incoming.envelope;
                let agent_id = env.agent_id.as_str();
                if !touched.contains_key(agent_id) {
                    let state = self.agents.get(agent_id).cloned().unwrap_or(AgentState {
                        tracker: SeqTracker::first_contact(env.acked_through),
                        acked_floor: env.acked_through,
                    });
                    order.push(agent_id);
                    touched.insert(agent_id, state);
                }
                let known = self.agents.contains_key(agent_id) || seen_in_batch.contains(agent_id);
                let state = touched.get_mut(agent_id).expect("inserted above");
                // Signature, key and chain before anything of it is written.
                let verdict = match crate::trust::check(
                    &tx,
                    self.trust,
                    incoming,
                    received.received_at,
                    state.tracker.highest_closed(),
                )? {
                    Ok(verdict) => {
                        if let Some(rotation) = &verdict.rotation {
                            crate::trust::enrol_rotated(
                                &tx,
                                agent_id,
                                rotation,
                                received.received_at,
                            )?;
                        }
                        verdict
                    }
                    Err(refusal) => {
                        tracing::error!(
                            agent_id,
                            kind = %refusal.kind,
                            reason = %refusal.reason,
                            "envelope refused by the trust checks; quarantined"
                        );
                        Quarantined::new(
                            received.received_at,
                            &received.topic,
                            Some(agent_id),
                            refusal.kind,
                            refusal.reason,
                            &incoming.payload(),
                        )
                        .insert(&tx)?;
                        outcome.trust_refusals += 1;
                        continue;
                    }
                };
                // A floor above anything received from a known agent is what a
                // forged envelope would claim to stall the real agent's acks.
                // A real agent shows it only after this collector lost data
                // (a restored backup), and then its drain starts right above
                // the floor: that shape is accepted, anything else is kept
                // in quarantine with its reason.
                let highest = state.tracker.highest_closed();
                if known
                    && env.acked_through > highest
                    && env.events.first().map(|e| e.seq) != Some(env.acked_through + 1)
                {
                    let reason = format!(
                        "acked_through {} is above anything received from {agent_id} \
                         (highest seq {highest}) and the envelope does not continue from it",
                        env.acked_through
                    );
                    tracing::error!(
                        agent_id,
                        acked_through = env.acked_through,
                        highest,
                        "implausible envelope quarantined"
                    );
                    Quarantined::new(
                        received.received_at,
                        &received.topic,
                        Some(agent_id),
                        QuarantineKind::ImplausibleFloor,
                        reason,
                        &incoming.payload(),
                    )
                    .insert(&tx)?;
                    outcome.implausible_floors += 1;
                    continue;
                }
                seen_in_batch.insert(agent_id);
                if let Some((first, last)) = state.tracker.raise_floor(env.acked_through) {
                    tracing::warn!(
                        agent_id,
                        skipped_first = first,
                        skipped_last = last,
                        "agent reports seqs acknowledged that this collector never stored; \
                         raising its floor"
                    );
                    state.acked_floor = env.acked_through;
                    insert_raise.execute(params![
                        agent_id,
                        ms(received.received_at),
                        sql_seq(first),
                        sql_seq(last)
                    ])?;
                    outcome.floor_raises += 1;
                }
                let received_ms = ms(received.received_at);
                let signed = verdict.key_id.is_some();
                let mut new_events = 0u64;
                for (i, event) in env.events.iter().enumerate() {
                    // Version 2: the bytes the agent hashed (and signed), verbatim.
                    let (payload, chain_hash) = match &incoming.chain {
                        Some(chain) => (chain.raw[i].clone(), Some(chain.hashes[i].as_slice())),
                        None => (
                            serde_json::to_string(event).map_err(|e| {
                                rusqlite::Error::ToSqlConversionFailure(Box::new(e))
                            })?,
                            None,
                        ),
                    };
                    let written = insert_event.execute(params![
                        agent_id,
                        sql_seq(event.seq),
                        env.instrument_id,
                        ms(event.at),
                        kind_name(&event.kind),
                        payload,
                        received_ms,
                        chain_hash,
                        signed,
                    ])?;
                    if written == 1 {
                        outcome.stored += 1;
                        new_events += 1;
                        deriver.event(&tx, &env.instrument_id, agent_id, event)?;
                    } else {
                        let first: String = stored_payload
                            .query_row(params![agent_id, sql_seq(event.seq)], |r| r.get(0))?;
                        if first == payload {
                            outcome.duplicates += 1;
                            if let Some(hash) = chain_hash {
                                // Stored from a version 1 envelope: now chained.
                                fill_hash.execute(params![agent_id, sql_seq(event.seq), hash])?;
                            }
                        } else {
                            // Same id, same seq, other content: a second agent
                            // claims this id. Keep the first, quarantine the
                            // newcomer, and say so loudly.
                            tracing::error!(
                                agent_id,
                                seq = event.seq,
                                "an event arrived with a seq already stored with other content: \
                                 two agents may share this agent_id; quarantined"
                            );
                            Quarantined::new(
                                received.received_at,
                                &received.topic,
                                Some(agent_id),
                                QuarantineKind::SeqConflict,
                                format!(
                                    "agent_id conflict: seq {} of {agent_id} is already stored with \
                                     other content (two agents with one id?)",
                                    event.seq
                                ),
                                payload.as_bytes(),
                            )
                            .insert(&tx)?;
                            outcome.conflicts += 1;
                        }
                    }
                    state.tracker.close_seq(event.seq);
                    if let EventKind::Dropped { ranges, .. } = &event.kind {
                        for r in ranges {
                            insert_dropped.execute(params![
                                agent_id,
                                sql_seq(r.first),
                                sql_seq(r.last),
                                sql_seq(event.seq)
                            ])?;
                            state.tracker.close(r.first, r.last);
                        }
                    }
                }
                if let (Some(key_id), true) = (verdict.key_id, new_events > 0) {
                    insert_evidence.execute(params![
                        agent_id,
                        key_id.to_string(),
                        sql_seq(env.events.first().map_or(0, |e| e.seq)),
                        sql_seq(env.events.last().map_or(0, |e| e.seq)),
                        received_ms,
                        incoming.payload(),
                    ])?;
                }
                crate::trust::record_anchors(
                    &tx,
                    agent_id,
                    &verdict,
                    incoming,
                    received.received_at,
                )?;
                let skew = received_ms - ms(env.sent_at);
                upsert_agent.execute(params![
                    agent_id,
                    env.instrument_id,
                    received_ms,
                    skew,
                    sql_seq(state.acked_floor),
                    sql_seq(state.tracker.committed_through()),
                ])?;
                for event in &env.events {
                    if let EventKind::Heartbeat(hb) = &event.kind {
                        heartbeat.execute(params![
                            agent_id,
                            ms(event.at),
                            sql_seq(hb.backlog),
                            hb.oldest_unacked_age_s.map(sql_seq),
                            hb.version,
                        ])?;
                    }
                }
            }

            // An offline will carries no rules: the last reported stay.
            let mut status = tx.prepare_cached(
                "INSERT INTO agents (agent_id, instrument_id, first_seen_ms, last_seen_ms,
                     presence, presence_at_ms, version, state_rules)
                 VALUES (?1, ?2, ?3, ?3, ?4, ?5, ?6, ?7)
                 ON CONFLICT (agent_id) DO UPDATE SET
                     instrument_id = excluded.instrument_id,
                     last_seen_ms = max(last_seen_ms, excluded.last_seen_ms),
                     presence = excluded.presence,
                     presence_at_ms = excluded.presence_at_ms,
                     version = excluded.version,
                     state_rules = COALESCE(excluded.state_rules, state_rules)",
            )?;
            for received in &batch.statuses {
                let s = &received.message;
                let presence = match s.status {
                    Presence::Online => "online",
                    Presence::Offline => "offline",
                };
                status.execute(params![
                    s.agent_id,
                    s.instrument_id,
                    ms(received.received_at),
                    presence,
                    ms(s.at.unwrap_or(received.received_at)),
                    s.version,
                    s.state_rules
                        .as_ref()
                        .map(serde_json::to_string)
                        .transpose()
                        .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?,
                ])?;
            }

            for q in &batch.quarantined {
                q.insert(&tx)?;
            }
        }
        deriver.finish(&tx)?;
        tx.commit()?;

        for agent_id in order {
            let state = touched
                .remove(agent_id)
                .expect("every touched agent has state");
            // Acks go only to agents with an accepted envelope: a quarantined
            // one is not acknowledged, and changes nothing.
            if seen_in_batch.contains(agent_id) {
                outcome
                    .acks
                    .push((agent_id.to_owned(), state.tracker.committed_through()));
                self.agents.insert(agent_id.to_owned(), state);
            }
        }
        Ok(outcome)
    }
}

/// Opens the database read-only (for tools and tests); never migrates.
pub fn open_read_only(data_dir: &Path) -> Result<Connection, StoreError> {
    let path = data_dir.join(DB_FILE);
    Connection::open_with_flags(&path, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(|source| StoreError::Open { path, source })
}

/// `committed_through` as stored for one agent (for tools and tests).
pub fn stored_committed_through(
    conn: &Connection,
    agent_id: &str,
) -> Result<Option<u64>, StoreError> {
    Ok(conn
        .query_row(
            "SELECT committed_through FROM agents WHERE agent_id = ?1",
            [agent_id],
            |row| row.get::<_, Option<i64>>(0),
        )
        .optional()?
        .flatten()
        .map(|v| v as u64))
}

#[cfg(test)]
mod tests;
