//! The durable outbox: every event the agent accepts is written here, with
//! its sequence number, and made durable (fsync) *before* anything can
//! publish it; it leaves only when a collector acknowledges it after its own
//! commit.
//!
//! # On-disk layout
//!
//! `<data_dir>/outbox/` is a sled database with three trees:
//!
//! | tree | key | value |
//! |---|---|---|
//! | `events` | seq, u64 big-endian (so iteration is in seq order) | 1 byte: priority (0 low, 1 high) + 0x80; the 32-byte chain hash of seq − 1 (`prev`); then the [`Event`] as JSON |
//! | `meta` | `next_seq`, `acked_through` (u64 big-endian); `chain_head`: the chain hash of `next_seq − 1` (32 bytes) | |
//! | `files` | result-file key (`<folder index>:<relative path>`) | [`Fingerprint`]: size u64 BE, mtime ms i64 BE |
//!
//! `<data_dir>/outbox.seq` holds the sequence high-water mark outside sled
//! (see [`seq_file`]), so numbering survives even the loss of the database.
//!
//! # Invariants
//!
//! - A seq is assigned in the same sled transaction that stores the event and
//!   advances `next_seq`, and it is always below the reserved high-water mark
//!   already on disk.
//! - Every append is flushed (fsync) before it returns, whatever the event's
//!   priority, and [`Outbox::pending`] hands out only events that are on
//!   disk. So nothing that has left the machine can be lost by a crash, and a
//!   seq that has left the machine is never given to another event. (A crash
//!   between a commit and its flush can only lose events whose `append` had
//!   not returned; their seqs were never published and are given again.)
//! - Events are removed only by [`Outbox::ack_through`] or by the size cap;
//!   every seq the cap removes is named in a `dropped` event.
//! - A result file's fingerprint is recorded in the same transaction as its
//!   event: a file is reported once, or not at all.
//! - The hash chain (docs/design/trust.md): every record carries `prev`,
//!   the chain hash of the seq before it, written in the same transaction as
//!   the event and `chain_head`, so there is no seq without its hash and the
//!   chain survives a crash exactly as events do. `h(n) = chain_hash(h(n-1),
//!   json(n))` over the JSON bytes as stored, which is what is sent. Because
//!   each record keeps its own `prev`, acks and the size cap may delete any
//!   event and the next envelope still knows the hash before its first
//!   event. Records of an older outbox (without `prev`) are upgraded at
//!   open: chained from the zero hash in seq order.
//!
//! # What a crash can lose
//!
//! - Nothing once `append` has returned Ok.
//! - An acknowledgement not yet flushed: the events come back after restart
//!   and are sent again; the collector ignores duplicates.
//! - If sled reports corruption on open (and the disk is not full), the
//!   directory is moved aside (`outbox.corrupt-<time>`), a fresh one is
//!   started, numbering continues above the high-water mark, and a `fault`
//!   plus a `dropped` event naming the possibly lost range are appended. The
//!   agent never crash-loops on it.
//!
//! # A full disk
//!
//! Appends stop *before* the disk is full: when less than `min_free_bytes`
//! would be left, [`Outbox::append`] refuses with [`OutboxError::DiskFull`]
//! and writes nothing, so sled keeps room to delete acknowledged events and
//! delivery goes on. If a write fails anyway (another program filled the
//! disk), the database handle is closed — sled cannot go on after a failed
//! write — and the outbox is [`OutboxError::Unavailable`] until it can be
//! opened again, which it tries by itself once a second when space is back.
//! Neither is ever taken for corruption. When appends work again, the first
//! one carries a `fault` event saying how long the outbox refused events and
//! how many.

mod disk;
mod seq_file;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use jiff::Timestamp;
use labhours_shared::trust::{ChainHash, chain_hash};
use labhours_shared::wire::{Event, EventKind, RawRecord, SeqRange};
use sled::transaction::{ConflictableTransactionError, TransactionError, Transactional};

use crate::results::Fingerprint;
pub use disk::free_bytes;
use disk::{Reserve, SpaceGuard, is_disk_full, sled_disk_full};
use seq_file::SeqFile;

/// How much the cap frees at once, so a full outbox does not drop on every append.
const CAP_LOW_WATER: f64 = 0.9;
/// Seq ranges named by one `dropped` notice at most (about 40 bytes each).
const MAX_RANGES_PER_NOTICE: usize = 1000;
/// Longest text kept in a fault message or transition reason: events stay
/// small whatever an error or a status line says.
const MAX_TEXT_BYTES: usize = 4096;
/// How often an unavailable outbox tries to open its database again.
const REOPEN_EVERY: Duration = Duration::from_secs(1);

/// Events kept first when the outbox must drop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Priority {
    /// Summaries and heartbeats: dropped first when the cap is reached.
    Low = 0,
    /// Transitions, result files, faults, dropped notices.
    High = 1,
}

impl Priority {
    pub fn of(kind: &EventKind) -> Self {
        match kind {
            EventKind::Summary(_) | EventKind::Heartbeat(_) => Priority::Low,
            _ => Priority::High,
        }
    }
}

#[derive(Debug, Clone)]
pub struct OutboxSettings {
    pub max_bytes: u64,
    /// sled's background flush interval (acknowledgements and deletions;
    /// appends are flushed at once).
    pub summary_flush_ms: u64,
    pub cache_bytes: u64,
    /// Appends stop when less than this would stay free on the disk (0: never).
    pub min_free_bytes: u64,
}

impl From<&crate::config::OutboxConfig> for OutboxSettings {
    fn from(c: &crate::config::OutboxConfig) -> Self {
        Self {
            max_bytes: c.max_bytes,
            summary_flush_ms: c.summary_flush_ms,
            cache_bytes: c.cache_bytes,
            min_free_bytes: c.min_free_bytes,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    #[error("outbox database: {0}")]
    Db(#[from] sled::Error),
    #[error("outbox sequence file {path}: {source}")]
    SeqFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot move the corrupt outbox {path} aside: {source}")]
    MoveAside {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("outbox record {seq} is unreadable: {reason}")]
    Record { seq: u64, reason: String },
    #[error(
        "the disk holding {path} is full: {free_bytes} bytes free, the outbox keeps {min_free_bytes} free; new events are refused until space is freed"
    )]
    DiskFull {
        path: PathBuf,
        free_bytes: u64,
        min_free_bytes: u64,
    },
    #[error(
        "an outbox write in {path} failed ({reason}); the database is closed and reopens by itself"
    )]
    WriteFailed { path: PathBuf, reason: String },
    #[error("the outbox in {path} is unavailable since {since} ({reason}); it reopens by itself")]
    Unavailable {
        path: PathBuf,
        since: Timestamp,
        reason: String,
    },
}

impl OutboxError {
    /// Nothing was written: the events may be offered again later.
    pub fn nothing_written(&self) -> bool {
        matches!(
            self,
            OutboxError::DiskFull { .. } | OutboxError::Unavailable { .. }
        )
    }
}

/// What `open` had to do to recover, if anything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovery {
    /// Where the corrupt database was moved, if it was.
    pub moved_to: Option<PathBuf>,
    /// Seqs that may have been lost with it.
    pub lost: Option<SeqRange>,
}

/// The outbox's health, for heartbeats, logs and tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OutboxHealth {
    /// Since when appends are refused (disk full or database closed).
    pub refusing_since: Option<Timestamp>,
    /// Why, when refusing.
    pub reason: Option<String>,
    /// Events refused since the outbox opened.
    pub refused_total: u64,
    /// Times the database was closed after a failed write and opened again.
    pub reopens: u64,
}

/// A handle to the outbox; clones share it.
#[derive(Debug, Clone)]
pub struct Outbox {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    data_dir: PathBuf,
    settings: OutboxSettings,
    /// Serialises appends (seq order = commit order) and guards the counters.
    state: Mutex<Counters>,
}

/// The open database's trees (cheap handles).
#[derive(Debug, Clone)]
struct Trees {
    db: sled::Db,
    events: sled::Tree,
    meta: sled::Tree,
    files: sled::Tree,
}

#[derive(Debug)]
struct Counters {
    /// `None` while the database is closed after a failed write.
    trees: Option<Trees>,
    seq_file: SeqFile,
    next_seq: u64,
    /// The chain hash of `next_seq - 1`.
    chain_head: ChainHash,
    /// Every seq up to here is on disk: only these may be published.
    durable_through: u64,
    /// Bytes of keys and values in `events`.
    bytes: u64,
    count: u64,
    acked_through: u64,
    /// An ack whose deletions wait for disk space.
    deferred_ack: u64,
    guard: SpaceGuard,
    /// Room to reopen the database on a full disk (see `disk`).
    reserve: Reserve,
    outage: Option<Outage>,
    last_reopen_try: Option<Instant>,
    health: OutboxHealth,
}

/// A period of refused appends, reported when appends work again.
#[derive(Debug, Clone)]
struct Outage {
    since: Timestamp,
    reason: String,
    refused: u64,
    /// Events whose write failed half-way: they may or may not be on disk.
    uncertain: u64,
}

const NEXT_SEQ: &[u8] = b"next_seq";
const ACKED_THROUGH: &[u8] = b"acked_through";
const CHAIN_HEAD: &[u8] = b"chain_head";
/// Set in a record's first byte when `prev` follows it (records written
/// before the chain have only the priority there).
const CHAINED: u8 = 0x80;
/// Bytes before a chained record's JSON.
const CHAINED_HEADER: usize = 1 + 32;

/// The database as found on disk, ready to become the outbox's state.
struct Loaded {
    trees: Trees,
    next_seq: u64,
    acked_through: u64,
    chain_head: ChainHash,
    bytes: u64,
    count: u64,
    lost: Option<SeqRange>,
    moved_to: Option<PathBuf>,
}

impl Outbox {
    /// Opens (or creates) the outbox in `data_dir`, recovering from
    /// corruption. A full disk is [`OutboxError::DiskFull`], never corruption:
    /// the caller waits for space and tries again.
    pub fn open(
        data_dir: &Path,
        settings: OutboxSettings,
        now: Timestamp,
    ) -> Result<(Self, Option<Recovery>), OutboxError> {
        std::fs::create_dir_all(data_dir).map_err(|source| OutboxError::SeqFile {
            path: data_dir.to_owned(),
            source,
        })?;
        let mut seq_file = SeqFile::open(&data_dir.join("outbox.seq"))?;
        let loaded = load(data_dir, &settings, &mut seq_file, now, LOCK_WAIT)?;
        let recovery = (loaded.moved_to.is_some() || loaded.lost.is_some()).then(|| Recovery {
            moved_to: loaded.moved_to.clone(),
            lost: loaded.lost,
        });
        let notices = recovery_notices(&loaded);
        let outbox = Self {
            inner: Arc::new(Inner {
                data_dir: data_dir.to_owned(),
                state: Mutex::new(Counters {
                    trees: None,
                    seq_file,
                    next_seq: 0,
                    chain_head: [0; 32],
                    durable_through: 0,
                    bytes: 0,
                    count: 0,
                    acked_through: 0,
                    deferred_ack: 0,
                    guard: SpaceGuard::new(settings.min_free_bytes),
                    reserve: Reserve::new(data_dir, settings.min_free_bytes),
                    outage: None,
                    last_reopen_try: None,
                    health: OutboxHealth::default(),
                }),
                settings,
            }),
        };
        outbox.lock().install(loaded);
        if let Err(e) = outbox.take_reserve(&mut outbox.lock(), 0) {
            tracing::warn!(error = %e, "the outbox has no reserve yet; it takes one when the disk has room");
        }
        outbox.append(now, notices)?;
        Ok((outbox, recovery))
    }

    /// Appends events at instant `at` each (`(at, kind)` pairs via [`Outbox::append_at`]).
    pub fn append(&self, at: Timestamp, kinds: Vec<EventKind>) -> Result<Vec<u64>, OutboxError> {
        self.append_at(kinds.into_iter().map(|k| (at, k)).collect())
    }

    /// Appends events durably (see the module doc) and returns their seqs.
    pub fn append_at(&self, events: Vec<(Timestamp, EventKind)>) -> Result<Vec<u64>, OutboxError> {
        self.append_inner(events, None)
    }

    fn append_inner(
        &self,
        mut events: Vec<(Timestamp, EventKind)>,
        file_mark: Option<(&str, Fingerprint)>,
    ) -> Result<Vec<u64>, OutboxError> {
        let Some(&(last_at, _)) = events.last() else {
            return Ok(Vec::new());
        };
        let mut state = self.lock();
        let n = events.len() as u64;
        // Rough size of what is about to be written (the guard's estimate).
        let incoming = n * 256;
        if let Err(e) = self
            .usable(&mut state, incoming)
            .and_then(|()| self.take_reserve(&mut state, incoming))
        {
            state.refuse(last_at, &e, n, 0);
            return Err(e);
        }
        if state.deferred_ack > state.acked_through {
            let through = state.deferred_ack;
            self.apply_ack(&mut state, through)?;
        }
        if let Some(outage) = state.outage.take() {
            events.insert(0, (last_at, outage_notice(&outage, last_at)));
        }
        let seqs = match self.commit(&mut state, events, file_mark) {
            Ok(seqs) => seqs,
            Err(e) => return Err(self.failed(&mut state, e, last_at, n)),
        };
        if state.bytes > self.inner.settings.max_bytes
            && let Err(e) = self.enforce_cap(&mut state, seqs.start, last_at)
        {
            return Err(self.failed(&mut state, e, last_at, n));
        }
        drop(state);
        self.flush_through(seqs.end - 1, last_at, n)?;
        // Seqs of the caller's events (an outage notice may have come first).
        Ok((seqs.end - n..seqs.end).collect())
    }

    /// Makes everything up to `head` durable; a failure closes the database.
    fn flush_through(&self, head: u64, at: Timestamp, events: u64) -> Result<(), OutboxError> {
        if self.lock().durable_through >= head {
            return Ok(());
        }
        if self.sync(head, at, events)? {
            Ok(())
        } else {
            Err(self.unavailable(&self.lock()))
        }
    }

    /// Flushes sled now and moves `durable_through` up to `head`; false when
    /// the database is closed. A failure closes it ([`Self::failed`]).
    fn sync(&self, head: u64, at: Timestamp, events: u64) -> Result<bool, OutboxError> {
        let Some(db) = self.lock().trees.as_ref().map(|t| t.db.clone()) else {
            return Ok(false);
        };
        // Outside the lock: appends go on while the disk syncs.
        let flushed = db.flush();
        drop(db);
        let mut state = self.lock();
        match flushed {
            Ok(_) => {
                state.durable_through = state.durable_through.max(head);
                Ok(true)
            }
            Err(e) => Err(self.failed(&mut state, e.into(), at, events)),
        }
    }

    /// Ok when the database is open (reopening it if it is time) and the
    /// disk has room for `incoming` more bytes.
    fn usable(&self, state: &mut Counters, incoming: u64) -> Result<(), OutboxError> {
        if state.trees.is_none() {
            self.try_reopen(state)?;
        }
        self.check_space(state, incoming, Instant::now())
    }

    /// [`OutboxError::DiskFull`] unless the disk keeps the reserve after
    /// `incoming` more bytes.
    fn check_space(
        &self,
        state: &mut Counters,
        incoming: u64,
        now: Instant,
    ) -> Result<(), OutboxError> {
        state
            .guard
            .check(&self.inner.data_dir, incoming, now)
            .map_err(|low| OutboxError::DiskFull {
                path: self.inner.data_dir.clone(),
                free_bytes: low.free_bytes,
                min_free_bytes: low.min_free_bytes,
            })
    }

    /// Opens the database again after a failed write, at most once a second
    /// and only with the reserve free.
    fn try_reopen(&self, state: &mut Counters) -> Result<(), OutboxError> {
        let inner = &self.inner;
        let now = Instant::now();
        if state
            .last_reopen_try
            .is_some_and(|t| now.saturating_duration_since(t) < REOPEN_EVERY)
        {
            return Err(self.unavailable(state));
        }
        state.last_reopen_try = Some(now);
        if let Err(full) = self.check_space(state, 0, now) {
            // Reopening needs room: give back the reserve. New events stay
            // refused until it can be taken again ([`Self::take_reserve`]).
            if !state.reserve.release() {
                return Err(full);
            }
            tracing::warn!(
                bytes = state.reserve.bytes(),
                "the disk is full: the outbox gave back its reserve to reopen, so accepted events can still be delivered"
            );
        }
        let at = state
            .outage
            .as_ref()
            .map_or_else(Timestamp::now, |o| o.since);
        match load(
            &inner.data_dir,
            &inner.settings,
            &mut state.seq_file,
            at,
            Duration::ZERO,
        ) {
            Ok(loaded) => {
                tracing::warn!(
                    next_seq = loaded.next_seq,
                    backlog = loaded.count,
                    "outbox database opened again"
                );
                let notices = recovery_notices(&loaded);
                state.install(loaded);
                state.health.reopens += 1;
                if !notices.is_empty() {
                    // A fresh database after a loss: say so first.
                    self.commit(state, notices.into_iter().map(|k| (at, k)).collect(), None)?;
                }
                Ok(())
            }
            Err(e) => {
                tracing::debug!(error = %e, "the outbox cannot be opened yet");
                Err(self.unavailable(state))
            }
        }
    }

    /// Takes the reserve again (appends wait until the disk has room for it
    /// on top of `incoming` and the usual free space).
    fn take_reserve(&self, state: &mut Counters, incoming: u64) -> Result<(), OutboxError> {
        if state.reserve.held() {
            return Ok(());
        }
        let bytes = state.reserve.bytes();
        self.check_space(state, incoming.saturating_add(bytes), Instant::now())?;
        if let Err(e) = state.reserve.hold() {
            tracing::debug!(error = %e, "the outbox's reserve cannot be taken yet");
            return Err(OutboxError::DiskFull {
                path: self.inner.data_dir.clone(),
                free_bytes: free_bytes(&self.inner.data_dir).unwrap_or(0),
                min_free_bytes: self.inner.settings.min_free_bytes.saturating_add(bytes),
            });
        }
        state.guard.wrote(bytes);
        Ok(())
    }

    fn unavailable(&self, state: &Counters) -> OutboxError {
        let (since, reason) = state.outage.as_ref().map_or_else(
            || (Timestamp::now(), "closed".to_owned()),
            |o| (o.since, o.reason.clone()),
        );
        OutboxError::Unavailable {
            path: self.inner.data_dir.clone(),
            since,
            reason,
        }
    }

    /// A write failed. sled cannot go on after a failed write, so the
    /// database is closed (to be opened again by [`Self::try_reopen`]); the
    /// error becomes [`OutboxError::WriteFailed`] (the events may or may not
    /// be on disk), or [`OutboxError::DiskFull`] when the sequence file could
    /// not be written (nothing was stored).
    fn failed(
        &self,
        state: &mut Counters,
        e: OutboxError,
        at: Timestamp,
        events: u64,
    ) -> OutboxError {
        let free = free_bytes(&self.inner.data_dir).ok();
        let out = match e {
            OutboxError::Db(db) => {
                if state.trees.take().is_some() {
                    tracing::error!(
                        error = %db,
                        path = %self.inner.data_dir.display(),
                        free_bytes = ?free,
                        "an outbox write failed; the database is closed and will be opened again when possible"
                    );
                }
                OutboxError::WriteFailed {
                    path: self.inner.data_dir.clone(),
                    reason: if sled_disk_full(&db) {
                        format!("disk full ({} bytes free)", free.unwrap_or(0))
                    } else {
                        db.to_string()
                    },
                }
            }
            OutboxError::SeqFile { source, .. } if is_disk_full(&source) => OutboxError::DiskFull {
                path: self.inner.data_dir.clone(),
                free_bytes: free.unwrap_or(0),
                min_free_bytes: self.inner.settings.min_free_bytes,
            },
            other => other,
        };
        if out.nothing_written() {
            state.refuse(at, &out, events, 0);
        } else {
            state.refuse(at, &out, 0, events);
        }
        out
    }

    /// Stores events under the next seqs, advancing the counter in the same
    /// transaction (and recording a result file's fingerprint, if given).
    fn commit(
        &self,
        state: &mut Counters,
        events: Vec<(Timestamp, EventKind)>,
        file_mark: Option<(&str, Fingerprint)>,
    ) -> Result<std::ops::Range<u64>, OutboxError> {
        let trees = state.trees.clone().ok_or_else(|| self.unavailable(state))?;
        let next = state.next_seq;
        let n = events.len() as u64;
        state.seq_file.reserve_through(next + n - 1)?;
        let mut head = state.chain_head;
        let records: Vec<(u64, Vec<u8>)> = events
            .into_iter()
            .zip(next..)
            .map(|((at, kind), seq)| {
                let kind = bounded(kind);
                let value = encode_record(&Event { seq, at, kind }, &head);
                head = chain_hash(&head, &value[CHAINED_HEADER..]);
                (seq, value)
            })
            .collect();
        (&trees.events, &trees.meta, &trees.files)
            .transaction(|(ev, meta, files)| {
                for (seq, value) in &records {
                    ev.insert(&seq.to_be_bytes(), value.as_slice())?;
                }
                meta.insert(NEXT_SEQ, &(next + n).to_be_bytes())?;
                meta.insert(CHAIN_HEAD, &head)?;
                if let Some((key, fp)) = file_mark {
                    files.insert(key.as_bytes(), &fp_to_bytes(fp))?;
                }
                Ok::<(), ConflictableTransactionError<()>>(())
            })
            .map_err(|e| match e {
                TransactionError::Storage(e) => OutboxError::Db(e),
                TransactionError::Abort(()) => unreachable!("this transaction never aborts"),
            })?;
        let written = records.iter().map(|(_, v)| 8 + v.len() as u64).sum::<u64>();
        state.next_seq = next + n;
        state.chain_head = head;
        state.bytes += written;
        state.count += n;
        state.guard.wrote(written);
        Ok(next..next + n)
    }

    /// Drops events until the outbox is below the low-water mark: summaries and
    /// heartbeats first (oldest first), then the oldest of the rest, never the
    /// batch just appended (seq >= `keep_from`). Appends one `dropped` event
    /// naming every dropped seq.
    fn enforce_cap(
        &self,
        state: &mut Counters,
        keep_from: u64,
        at: Timestamp,
    ) -> Result<(), OutboxError> {
        let inner = &self.inner;
        let trees = state.trees.clone().ok_or_else(|| self.unavailable(state))?;
        let target = (inner.settings.max_bytes as f64 * CAP_LOW_WATER) as u64;
        let mut dropped: Vec<u64> = Vec::new();
        for priority in [Priority::Low, Priority::High] {
            let mut batch = sled::Batch::default();
            for entry in trees.events.range(..keep_from.to_be_bytes()) {
                if state.bytes <= target {
                    break;
                }
                let (k, v) = entry?;
                if record_priority(&v) != Some(priority) {
                    continue;
                }
                let seq = u64_from(&k);
                // A dropped notice that is itself dropped hands its ranges on,
                // so every gap stays named.
                if let Ok(Event {
                    kind: EventKind::Dropped { ranges, .. },
                    ..
                }) = decode_record(seq, &v)
                {
                    dropped.extend(ranges.iter().flat_map(|r| r.first..=r.last));
                }
                state.bytes -= (k.len() + v.len()) as u64;
                state.count -= 1;
                dropped.push(seq);
                batch.remove(k);
            }
            trees.events.apply_batch(batch)?;
        }
        if dropped.is_empty() {
            return Ok(());
        }
        dropped.sort_unstable();
        dropped.dedup();
        let count = dropped.len() as u64;
        tracing::warn!(
            count,
            max_bytes = inner.settings.max_bytes,
            "outbox full: dropped events"
        );
        // Scattered drops make many ranges: several notices keep each event
        // (and so every envelope) far below what a broker or collector takes.
        let notices = ranges_of(&dropped)
            .chunks(MAX_RANGES_PER_NOTICE)
            .map(|ranges| {
                let kind = EventKind::Dropped {
                    count: ranges.iter().map(|r| r.last - r.first + 1).sum(),
                    ranges: ranges.to_vec(),
                    reason: format!(
                        "outbox reached its cap of {} bytes",
                        inner.settings.max_bytes
                    ),
                };
                (at, kind)
            })
            .collect();
        self.commit(state, notices, None)?;
        Ok(())
    }

    /// Deletes every event with `seq <= through` (the collector has committed them).
    /// Returns how many were removed. Acks below the current one change nothing.
    /// On a full disk the deletion waits (deleting writes too, and sled
    /// cannot go on after a failed write); it is done by the next append or
    /// ack once there is room.
    pub fn ack_through(&self, through: u64) -> Result<u64, OutboxError> {
        let mut state = self.lock();
        let through = through.max(state.deferred_ack);
        if through <= state.acked_through {
            return Ok(0);
        }
        if let Err(e) = self.usable(&mut state, 0) {
            if e.nothing_written() {
                state.deferred_ack = through;
                return Ok(0);
            }
            return Err(e);
        }
        self.apply_ack(&mut state, through)
    }

    fn apply_ack(&self, state: &mut Counters, through: u64) -> Result<u64, OutboxError> {
        state.deferred_ack = 0;
        if through <= state.acked_through {
            return Ok(0);
        }
        let trees = state.trees.clone().ok_or_else(|| self.unavailable(state))?;
        let result = (|| -> Result<(u64, u64), OutboxError> {
            let mut batch = sled::Batch::default();
            let (mut removed, mut freed) = (0u64, 0u64);
            for entry in trees.events.range(..=through.to_be_bytes()) {
                let (k, v) = entry?;
                freed += (k.len() + v.len()) as u64;
                removed += 1;
                batch.remove(k);
            }
            trees.events.apply_batch(batch)?;
            trees.meta.insert(ACKED_THROUGH, &through.to_be_bytes())?;
            Ok((removed, freed))
        })();
        let (removed, freed) = match result {
            Ok(r) => r,
            Err(e) => return Err(self.failed(state, e, Timestamp::now(), 0)),
        };
        state.bytes -= freed;
        state.count -= removed;
        state.acked_through = through;
        state.seq_file.note_acked(through);
        Ok(removed)
    }

    /// Up to `max_events` events with `seq > after`, in seq order, within about
    /// `max_bytes` of JSON (at least one event is returned if any is pending).
    /// Only events already on disk are returned: what is published can never
    /// be lost or renumbered by a crash.
    pub fn pending(
        &self,
        after: u64,
        max_events: usize,
        max_bytes: usize,
    ) -> Result<Vec<Event>, OutboxError> {
        self.pending_raw(after, max_events, max_bytes)?
            .into_iter()
            .map(|r| decode_json(r.seq, r.json.as_bytes()))
            .collect()
    }

    /// [`Outbox::pending`] as delivered: each record's JSON exactly as
    /// stored (and hashed), with the chain hash before it.
    pub fn pending_raw(
        &self,
        after: u64,
        max_events: usize,
        max_bytes: usize,
    ) -> Result<Vec<RawRecord>, OutboxError> {
        {
            // Reopen first: what is on disk is deliverable even while the
            // disk is too full for anything new.
            let mut state = self.lock();
            if state.trees.is_none() {
                self.try_reopen(&mut state)?;
            }
        }
        let head = self.next_seq().saturating_sub(1);
        if head <= after {
            return Ok(Vec::new());
        }
        self.flush_through(head, Timestamp::now(), 0)?;
        let (trees, durable) = {
            let state = self.lock();
            let trees = state
                .trees
                .clone()
                .ok_or_else(|| self.unavailable(&state))?;
            (trees, state.durable_through)
        };
        let start = after.saturating_add(1).to_be_bytes();
        let mut out = Vec::new();
        let mut bytes = 0usize;
        for entry in trees.events.range(start..=durable.to_be_bytes()) {
            let (k, v) = entry?;
            if out.len() >= max_events || (!out.is_empty() && bytes + v.len() > max_bytes) {
                break;
            }
            bytes += v.len();
            out.push(raw_record(u64_from(&k), &v)?);
        }
        Ok(out)
    }

    /// Events waiting for acknowledgement.
    pub fn backlog(&self) -> u64 {
        self.lock().count
    }

    /// Bytes of events waiting for acknowledgement (what the cap counts).
    pub fn backlog_bytes(&self) -> u64 {
        self.lock().bytes
    }

    /// The highest seq acknowledged so far (deletions waiting for disk
    /// space included).
    pub fn acked_through(&self) -> u64 {
        let state = self.lock();
        state.acked_through.max(state.deferred_ack)
    }

    /// The chain hash of the newest seq (zero before the first event).
    pub fn chain_head(&self) -> ChainHash {
        self.lock().chain_head
    }

    /// The seq the next event will get.
    pub fn next_seq(&self) -> u64 {
        self.lock().next_seq
    }

    /// Changes whenever the database was opened again after a failed
    /// write (numbering may then resume below what was counted in memory:
    /// seqs that never reached the disk, and so were never published).
    pub fn generation(&self) -> u64 {
        self.lock().health.reopens
    }

    /// Refused appends and reopenings.
    pub fn health(&self) -> OutboxHealth {
        let state = self.lock();
        let mut health = state.health.clone();
        if let Some(o) = &state.outage {
            health.refusing_since = Some(o.since);
            health.reason = Some(o.reason.clone());
        }
        health
    }

    /// The instant of the oldest unacknowledged event (none while the
    /// database is closed).
    pub fn oldest_pending_at(&self) -> Result<Option<Timestamp>, OutboxError> {
        let Some(trees) = self.lock().trees.clone() else {
            return Ok(None);
        };
        match trees.events.first()? {
            Some((k, v)) => Ok(Some(decode_record(u64_from(&k), &v)?.at)),
            None => Ok(None),
        }
    }

    /// Makes everything appended so far (and every ack) durable now.
    pub fn flush(&self) -> Result<(), OutboxError> {
        let head = self.next_seq().saturating_sub(1);
        self.sync(head, Timestamp::now(), 0).map(|_| ())
    }

    /// Size of the database on disk (sled reclaims space lazily).
    pub fn size_on_disk(&self) -> Result<u64, OutboxError> {
        let state = self.lock();
        let trees = state
            .trees
            .as_ref()
            .ok_or_else(|| self.unavailable(&state))?;
        Ok(trees.db.size_on_disk()?)
    }

    /// The fingerprint last reported for a result file.
    pub fn file_reported(&self, key: &str) -> Result<Option<Fingerprint>, OutboxError> {
        let trees = {
            let state = self.lock();
            state
                .trees
                .clone()
                .ok_or_else(|| self.unavailable(&state))?
        };
        Ok(trees
            .files
            .get(key.as_bytes())?
            .and_then(|v| fp_from_bytes(&v)))
    }

    /// Appends a result-file event and records its fingerprint in one transaction.
    pub fn append_result_file(
        &self,
        at: Timestamp,
        key: &str,
        fingerprint: Fingerprint,
        event: labhours_shared::wire::ResultFile,
    ) -> Result<u64, OutboxError> {
        let seqs = self.append_inner(
            vec![(at, EventKind::ResultFile(event))],
            Some((key, fingerprint)),
        )?;
        Ok(seqs[0])
    }

    /// Changes the free-space reserve (tests make a disk "full" and free it).
    #[cfg(test)]
    pub(crate) fn set_min_free_bytes(&self, min_free_bytes: u64) {
        let mut state = self.lock();
        state.guard = SpaceGuard::new(min_free_bytes);
        state.reserve = Reserve::new(&self.inner.data_dir, min_free_bytes);
    }

    fn lock(&self) -> MutexGuard<'_, Counters> {
        // A panic while holding the lock leaves counters that are still
        // consistent with sled (they are updated after each commit).
        self.inner.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Counters {
    /// Takes over a freshly opened database.
    fn install(&mut self, loaded: Loaded) {
        self.next_seq = loaded.next_seq;
        self.chain_head = loaded.chain_head;
        self.durable_through = loaded.next_seq.saturating_sub(1);
        self.bytes = loaded.bytes;
        self.count = loaded.count;
        self.acked_through = loaded.acked_through;
        self.seq_file.note_acked(loaded.acked_through);
        self.trees = Some(loaded.trees);
    }

    /// Records refused (`refused`) or possibly lost (`uncertain`) events.
    fn refuse(&mut self, at: Timestamp, e: &OutboxError, refused: u64, uncertain: u64) {
        self.health.refused_total += refused + uncertain;
        match &mut self.outage {
            Some(o) => {
                o.refused += refused;
                o.uncertain += uncertain;
            }
            None => {
                tracing::error!(error = %e, "the outbox refuses new events");
                self.outage = Some(Outage {
                    since: at,
                    reason: match e {
                        OutboxError::DiskFull { free_bytes, .. } => {
                            format!("disk full ({free_bytes} bytes free)")
                        }
                        other => other.to_string(),
                    },
                    refused,
                    uncertain,
                });
            }
        }
    }
}

/// The fault event that reports a period of refused appends.
fn outage_notice(outage: &Outage, until: Timestamp) -> EventKind {
    tracing::warn!(
        since = %outage.since,
        refused = outage.refused,
        uncertain = outage.uncertain,
        "the outbox accepts events again"
    );
    EventKind::Fault {
        source: "outbox".into(),
        message: format!(
            "the outbox refused new events from {} to {until}: {}; {} events were refused{}",
            outage.since,
            outage.reason,
            outage.refused,
            if outage.uncertain > 0 {
                format!(
                    " and {} more may be lost (their write failed half-way)",
                    outage.uncertain
                )
            } else {
                String::new()
            }
        ),
    }
}

/// The fault and dropped notices that tell the collector about a recovery.
fn recovery_notices(loaded: &Loaded) -> Vec<EventKind> {
    let mut notices = Vec::new();
    if let Some(moved_to) = &loaded.moved_to {
        notices.push(EventKind::Fault {
            source: "outbox".into(),
            message: format!(
                "the outbox database was corrupt and was moved to {}; a fresh one was started",
                moved_to.display()
            ),
        });
    }
    if let Some(lost) = loaded.lost {
        notices.push(EventKind::Dropped {
            ranges: vec![lost],
            count: lost.last - lost.first + 1,
            reason: "outbox database lost or corrupt: events in this range may be lost".into(),
        });
    }
    notices
}

/// Opens the database in `data_dir/outbox`, moving a corrupt one aside —
/// unless the disk is full, which is reported as such and never taken for
/// corruption. When the database is new but seqs were handed out before (per
/// the seq file), numbering continues above them and the range that may be
/// lost is returned.
fn load(
    data_dir: &Path,
    settings: &OutboxSettings,
    seq_file: &mut SeqFile,
    now: Timestamp,
    lock_wait: Duration,
) -> Result<Loaded, OutboxError> {
    let db_dir = data_dir.join("outbox");
    let disk_full = |free_bytes: u64| OutboxError::DiskFull {
        path: data_dir.to_owned(),
        free_bytes,
        min_free_bytes: settings.min_free_bytes,
    };
    let free = || free_bytes(data_dir).unwrap_or(u64::MAX);
    let (db, moved_to) = match open_db(&db_dir, settings, lock_wait) {
        Ok(db) => (db, None),
        Err(e) if sled_disk_full(&e) => return Err(disk_full(free())),
        // A nearly full disk makes sled read half-written files: wait for space
        // before judging the database.
        Err(e) if looks_corrupt(&e) && free() < settings.min_free_bytes.max(1024 * 1024) => {
            tracing::error!(error = %e, "the outbox cannot be read while its disk is full; waiting for space");
            return Err(disk_full(free()));
        }
        Err(e) if looks_corrupt(&e) => {
            let moved_to = data_dir.join(format!("outbox.corrupt-{}", now.as_second()));
            tracing::error!(error = %e, moved_to = %moved_to.display(), "outbox is corrupt; starting a fresh one");
            std::fs::rename(&db_dir, &moved_to).map_err(|source| OutboxError::MoveAside {
                path: db_dir.clone(),
                source,
            })?;
            (open_db(&db_dir, settings, lock_wait)?, Some(moved_to))
        }
        Err(e) => return Err(e.into()),
    };
    let trees = Trees {
        events: db.open_tree("events")?,
        meta: db.open_tree("meta")?,
        files: db.open_tree("files")?,
        db,
    };
    let (next_seq, lost) = match read_u64(&trees.meta, NEXT_SEQ)? {
        Some(next) => (next, None),
        None if seq_file.reserved() > 0 => {
            let lost = SeqRange {
                first: seq_file.acked_floor() + 1,
                last: seq_file.reserved(),
            };
            (
                seq_file.reserved() + 1,
                (lost.first <= lost.last).then_some(lost),
            )
        }
        None => (1, None),
    };
    trees.meta.insert(NEXT_SEQ, &next_seq.to_be_bytes())?;
    let chain_head = upgrade_chain(&trees, next_seq)?;
    let acked_through = read_u64(&trees.meta, ACKED_THROUGH)?.unwrap_or(seq_file.acked_floor());
    let (mut bytes, mut count) = (0u64, 0u64);
    for entry in trees.events.iter() {
        let (k, v) = entry?;
        bytes += (k.len() + v.len()) as u64;
        count += 1;
    }
    Ok(Loaded {
        trees,
        next_seq,
        acked_through,
        chain_head,
        bytes,
        count,
        lost,
        moved_to,
    })
}

/// How long `open` waits for the database's file lock. sled releases it a
/// moment after the last handle is dropped (its flusher thread lets go
/// late), so a reopen in the same process can briefly find it taken; another
/// process holding it is reported after this wait.
const LOCK_WAIT: Duration = Duration::from_secs(5);

fn open_db(
    dir: &Path,
    settings: &OutboxSettings,
    lock_wait: Duration,
) -> Result<sled::Db, sled::Error> {
    let config = sled::Config::new()
        .path(dir)
        .cache_capacity(settings.cache_bytes)
        .flush_every_ms(Some(settings.summary_flush_ms.max(1)))
        .mode(sled::Mode::LowSpace);
    let started = Instant::now();
    loop {
        match config.open() {
            Err(sled::Error::Io(e))
                if e.to_string().contains("could not acquire lock")
                    && started.elapsed() < lock_wait =>
            {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(sled::Error::Io(e)) if e.to_string().contains("could not acquire lock") => {
                return Err(sled::Error::Io(std::io::Error::new(
                    e.kind(),
                    format!(
                        "{} is in use by another process (is another labhours-agent running with this data_dir?): {e}",
                        dir.display()
                    ),
                )));
            }
            other => return other,
        }
    }
}

/// Errors that mean the files are damaged, as opposed to an I/O problem such
/// as a held lock or a permission, where moving the data aside would be wrong.
fn looks_corrupt(e: &sled::Error) -> bool {
    use std::io::ErrorKind;
    match e {
        sled::Error::Corruption { .. }
        | sled::Error::ReportableBug(_)
        | sled::Error::Unsupported(_)
        | sled::Error::CollectionNotFound(_) => true,
        sled::Error::Io(io) => {
            matches!(io.kind(), ErrorKind::InvalidData | ErrorKind::UnexpectedEof)
        }
    }
}

/// Cuts long free text (an error message, a status line) at [`MAX_TEXT_BYTES`].
fn bounded(mut kind: EventKind) -> EventKind {
    let cut = |text: &mut String| {
        if text.len() > MAX_TEXT_BYTES {
            let mut end = MAX_TEXT_BYTES;
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            text.truncate(end);
            text.push_str(" …");
        }
    };
    match &mut kind {
        EventKind::Fault { source, message } => {
            cut(source);
            cut(message);
        }
        EventKind::Transition { reason, .. } | EventKind::Dropped { reason, .. } => cut(reason),
        _ => {}
    }
    kind
}

fn encode_record(event: &Event, prev: &ChainHash) -> Vec<u8> {
    let mut value = Vec::with_capacity(192);
    value.push(Priority::of(&event.kind) as u8 | CHAINED);
    value.extend_from_slice(prev);
    // Events are plain data: serializing cannot fail.
    serde_json::to_writer(&mut value, event).expect("events serialize");
    value
}

/// A record's priority, whichever format it is in.
fn record_priority(value: &[u8]) -> Option<Priority> {
    match value.first()? & !CHAINED {
        0 => Some(Priority::Low),
        1 => Some(Priority::High),
        _ => None,
    }
}

/// A record's `prev` (none in the format before the chain) and JSON.
fn split_record(seq: u64, value: &[u8]) -> Result<(Option<ChainHash>, &[u8]), OutboxError> {
    let bad = |reason: &str| OutboxError::Record {
        seq,
        reason: reason.into(),
    };
    let first = *value.first().ok_or_else(|| bad("empty record"))?;
    if first & CHAINED == 0 {
        return Ok((None, &value[1..]));
    }
    let prev: ChainHash = value
        .get(1..CHAINED_HEADER)
        .and_then(|p| p.try_into().ok())
        .ok_or_else(|| bad("record cut short before its chain hash"))?;
    Ok((Some(prev), &value[CHAINED_HEADER..]))
}

fn decode_json(seq: u64, json: &[u8]) -> Result<Event, OutboxError> {
    serde_json::from_slice(json).map_err(|e| OutboxError::Record {
        seq,
        reason: e.to_string(),
    })
}

fn decode_record(seq: u64, value: &[u8]) -> Result<Event, OutboxError> {
    decode_json(seq, split_record(seq, value)?.1)
}

fn raw_record(seq: u64, value: &[u8]) -> Result<RawRecord, OutboxError> {
    let (prev, json) = split_record(seq, value)?;
    let prev = prev.ok_or_else(|| OutboxError::Record {
        seq,
        reason: "record without its chain hash (not upgraded)".into(),
    })?;
    let json = std::str::from_utf8(json).map_err(|e| OutboxError::Record {
        seq,
        reason: e.to_string(),
    })?;
    Ok(RawRecord {
        seq,
        prev,
        json: json.to_owned(),
    })
}

/// The chain head of a database just opened, upgrading records written
/// before the chain: they are chained in seq order from the hash before
/// them (zero when unknown), in one transaction with the new head. A
/// database whose records all carry `prev` is only read.
fn upgrade_chain(trees: &Trees, next_seq: u64) -> Result<ChainHash, OutboxError> {
    let stored_head: Option<ChainHash> = trees
        .meta
        .get(CHAIN_HEAD)?
        .and_then(|v| v.as_ref().try_into().ok());
    let mut rewrites: Vec<(u64, Vec<u8>)> = Vec::new();
    let mut head = [0u8; 32];
    let mut last_seq = None;
    for entry in trees.events.iter() {
        let (k, v) = entry?;
        let seq = u64_from(&k);
        let (prev, json) = split_record(seq, &v)?;
        let prev = match prev {
            Some(prev) => prev,
            None => {
                let mut value = Vec::with_capacity(CHAINED_HEADER + json.len());
                value.push(v[0] | CHAINED);
                value.extend_from_slice(&head);
                value.extend_from_slice(json);
                rewrites.push((seq, value));
                head
            }
        };
        head = chain_hash(&prev, json);
        last_seq = Some(seq);
    }
    let head = match (last_seq, stored_head) {
        // The newest record is the newest seq: its hash is the head.
        (Some(seq), _) if seq + 1 == next_seq => head,
        (_, Some(stored)) => stored,
        (Some(_), None) => head,
        (None, None) => [0; 32],
    };
    if rewrites.is_empty() && stored_head == Some(head) {
        return Ok(head);
    }
    if !rewrites.is_empty() {
        tracing::info!(
            records = rewrites.len(),
            "outbox records from before the hash chain upgraded"
        );
    }
    (&trees.events, &trees.meta)
        .transaction(|(ev, meta)| {
            for (seq, value) in &rewrites {
                ev.insert(&seq.to_be_bytes(), value.as_slice())?;
            }
            meta.insert(CHAIN_HEAD, &head)?;
            Ok::<(), ConflictableTransactionError<()>>(())
        })
        .map_err(|e| match e {
            TransactionError::Storage(e) => OutboxError::Db(e),
            TransactionError::Abort(()) => unreachable!("this transaction never aborts"),
        })?;
    Ok(head)
}

fn fp_to_bytes(fp: Fingerprint) -> [u8; 16] {
    let mut out = [0u8; 16];
    out[..8].copy_from_slice(&fp.size_bytes.to_be_bytes());
    out[8..].copy_from_slice(&fp.mtime_ms.to_be_bytes());
    out
}

fn fp_from_bytes(bytes: &[u8]) -> Option<Fingerprint> {
    let size = bytes.get(..8)?.try_into().ok()?;
    let mtime = bytes.get(8..16)?.try_into().ok()?;
    Some(Fingerprint {
        size_bytes: u64::from_be_bytes(size),
        mtime_ms: i64::from_be_bytes(mtime),
    })
}

fn u64_from(bytes: &[u8]) -> u64 {
    let mut buf = [0u8; 8];
    let n = bytes.len().min(8);
    buf[8 - n..].copy_from_slice(&bytes[bytes.len() - n..]);
    u64::from_be_bytes(buf)
}

fn read_u64(tree: &sled::Tree, key: &[u8]) -> Result<Option<u64>, sled::Error> {
    Ok(tree.get(key)?.map(|v| u64_from(&v)))
}

/// Sorted seqs to inclusive contiguous ranges.
fn ranges_of(seqs: &[u64]) -> Vec<SeqRange> {
    let mut ranges: Vec<SeqRange> = Vec::new();
    for &seq in seqs {
        match ranges.last_mut() {
            Some(r) if r.last + 1 == seq => r.last = seq,
            _ => ranges.push(SeqRange {
                first: seq,
                last: seq,
            }),
        }
    }
    ranges
}

#[cfg(test)]
mod tests;
