//! The durable outbox: every event the agent accepts is written here, with
//! its sequence number, *before* anything publishes it, and leaves only when
//! a collector acknowledges it after its own commit.
//!
//! # On-disk layout
//!
//! `<data_dir>/outbox/` is a sled database with three trees:
//!
//! | tree | key | value |
//! |---|---|---|
//! | `events` | seq, u64 big-endian (so iteration is in seq order) | 1 priority byte (0 low, 1 high), then the [`Event`] as JSON |
//! | `meta` | `next_seq`, `acked_through` | u64 big-endian |
//! | `files` | result-file key (`<folder index>:<relative path>`) | [`Fingerprint`]: size u64 BE, mtime ms i64 BE |
//!
//! `<data_dir>/outbox.seq` holds the sequence high-water mark outside sled
//! (see [`seq_file`]), so numbering survives even the loss of the database.
//!
//! # Invariants
//!
//! - A seq is assigned in the same sled transaction that stores the event and
//!   advances `next_seq`: it is never given twice, even across crashes, and it
//!   is always below the reserved high-water mark already on disk.
//! - Events are removed only by [`Outbox::ack_through`] or by the size cap;
//!   every seq the cap removes is named in a `dropped` event.
//! - A result file's fingerprint is recorded in the same transaction as its
//!   event: a file is reported once, or not at all.
//!
//! # What a crash can lose
//!
//! - High-priority events (transitions, result files, faults, dropped
//!   notices) are flushed (fsync) before `append` returns: **nothing** once
//!   `append` has returned.
//! - Low-priority events (summaries, heartbeats) are flushed by sled's
//!   background flusher every `outbox.summary_flush_ms` (default 1 s): at most
//!   that window of summaries; any flush of a later high event also makes
//!   them durable.
//! - An acknowledgement not yet flushed: the events come back after restart
//!   and are sent again; the collector ignores duplicates.
//! - If sled reports corruption on open, the directory is moved aside
//!   (`outbox.corrupt-<time>`), a fresh one is started, numbering continues
//!   above the high-water mark, and a `fault` plus a `dropped` event naming
//!   the possibly lost range are appended. The agent never crash-loops on it.

mod seq_file;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use jiff::Timestamp;
use labhours_shared::wire::{Event, EventKind, SeqRange};
use sled::transaction::{ConflictableTransactionError, TransactionError, Transactional};

use crate::results::Fingerprint;
use seq_file::SeqFile;

/// How much the cap frees at once, so a full outbox does not drop on every append.
const CAP_LOW_WATER: f64 = 0.9;

/// Events kept first when the outbox must drop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Priority {
    /// Summaries and heartbeats: flushed within `summary_flush_ms`, dropped first.
    Low = 0,
    /// Transitions, result files, faults, dropped notices: flushed at once.
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
    pub summary_flush_ms: u64,
    pub cache_bytes: u64,
}

impl From<&crate::config::OutboxConfig> for OutboxSettings {
    fn from(c: &crate::config::OutboxConfig) -> Self {
        Self {
            max_bytes: c.max_bytes,
            summary_flush_ms: c.summary_flush_ms,
            cache_bytes: c.cache_bytes,
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
}

/// What `open` had to do to recover, if anything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovery {
    /// Where the corrupt database was moved, if it was.
    pub moved_to: Option<PathBuf>,
    /// Seqs that may have been lost with it.
    pub lost: Option<SeqRange>,
}

/// A handle to the outbox; clones share it.
#[derive(Debug, Clone)]
pub struct Outbox {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    db: sled::Db,
    events: sled::Tree,
    meta: sled::Tree,
    files: sled::Tree,
    settings: OutboxSettings,
    /// Serialises appends (seq order = commit order) and guards the counters.
    state: Mutex<Counters>,
}

#[derive(Debug)]
struct Counters {
    seq_file: SeqFile,
    next_seq: u64,
    /// Bytes of keys and values in `events`.
    bytes: u64,
    count: u64,
    acked_through: u64,
}

const NEXT_SEQ: &[u8] = b"next_seq";
const ACKED_THROUGH: &[u8] = b"acked_through";

impl Outbox {
    /// Opens (or creates) the outbox in `data_dir`, recovering from corruption.
    pub fn open(
        data_dir: &Path,
        settings: OutboxSettings,
        now: Timestamp,
    ) -> Result<(Self, Option<Recovery>), OutboxError> {
        std::fs::create_dir_all(data_dir).map_err(|source| OutboxError::SeqFile {
            path: data_dir.to_owned(),
            source,
        })?;
        let seq_file = SeqFile::open(&data_dir.join("outbox.seq"))?;
        let db_dir = data_dir.join("outbox");
        let (db, moved_to) = match open_db(&db_dir, &settings) {
            Ok(db) => (db, None),
            Err(e) if looks_corrupt(&e) => {
                let moved_to = data_dir.join(format!("outbox.corrupt-{}", now.as_second()));
                tracing::error!(error = %e, moved_to = %moved_to.display(), "outbox is corrupt; starting a fresh one");
                std::fs::rename(&db_dir, &moved_to).map_err(|source| OutboxError::MoveAside {
                    path: db_dir.clone(),
                    source,
                })?;
                (open_db(&db_dir, &settings)?, Some(moved_to))
            }
            Err(e) => return Err(e.into()),
        };
        let (outbox, lost) = Self::from_db(db, seq_file, settings)?;
        let mut notices = Vec::new();
        if let Some(moved_to) = &moved_to {
            notices.push(EventKind::Fault {
                source: "outbox".into(),
                message: format!(
                    "the outbox database was corrupt and was moved to {}; a fresh one was started",
                    moved_to.display()
                ),
            });
        }
        if let Some(lost) = lost {
            notices.push(EventKind::Dropped {
                ranges: vec![lost],
                count: lost.last - lost.first + 1,
                reason: "outbox database lost or corrupt: events in this range may be lost".into(),
            });
        }
        outbox.append(now, notices)?;
        let recovery =
            (moved_to.is_some() || lost.is_some()).then_some(Recovery { moved_to, lost });
        Ok((outbox, recovery))
    }

    /// Builds the handle; when the database is new but seqs were handed out
    /// before (per the seq file), numbering continues above them and the range
    /// that may be lost is returned.
    fn from_db(
        db: sled::Db,
        mut seq_file: SeqFile,
        settings: OutboxSettings,
    ) -> Result<(Self, Option<SeqRange>), OutboxError> {
        let events = db.open_tree("events")?;
        let meta = db.open_tree("meta")?;
        let files = db.open_tree("files")?;
        let (next_seq, lost) = match read_u64(&meta, NEXT_SEQ)? {
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
        meta.insert(NEXT_SEQ, &next_seq.to_be_bytes())?;
        let acked_through = read_u64(&meta, ACKED_THROUGH)?.unwrap_or(seq_file.acked_floor());
        seq_file.note_acked(acked_through);
        let (mut bytes, mut count) = (0u64, 0u64);
        for entry in events.iter() {
            let (k, v) = entry?;
            bytes += (k.len() + v.len()) as u64;
            count += 1;
        }
        let outbox = Self {
            inner: Arc::new(Inner {
                db,
                events,
                meta,
                files,
                settings,
                state: Mutex::new(Counters {
                    seq_file,
                    next_seq,
                    bytes,
                    count,
                    acked_through,
                }),
            }),
        };
        Ok((outbox, lost))
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
        events: Vec<(Timestamp, EventKind)>,
        file_mark: Option<(&str, Fingerprint)>,
    ) -> Result<Vec<u64>, OutboxError> {
        let Some(&(last_at, _)) = events.last() else {
            return Ok(Vec::new());
        };
        let high = events
            .iter()
            .any(|(_, k)| Priority::of(k) == Priority::High);
        let mut state = self.lock();
        let seqs = self.commit(&mut state, events, file_mark)?;
        if state.bytes > self.inner.settings.max_bytes {
            self.enforce_cap(&mut state, seqs.start, last_at)?;
        }
        drop(state);
        if high {
            self.inner.db.flush()?;
        }
        Ok(seqs.collect())
    }

    /// Stores events under the next seqs, advancing the counter in the same
    /// transaction (and recording a result file's fingerprint, if given).
    fn commit(
        &self,
        state: &mut Counters,
        events: Vec<(Timestamp, EventKind)>,
        file_mark: Option<(&str, Fingerprint)>,
    ) -> Result<std::ops::Range<u64>, OutboxError> {
        let inner = &self.inner;
        let next = state.next_seq;
        let n = events.len() as u64;
        state.seq_file.reserve_through(next + n - 1)?;
        let records: Vec<(u64, Vec<u8>)> = events
            .into_iter()
            .zip(next..)
            .map(|((at, kind), seq)| (seq, encode_record(&Event { seq, at, kind })))
            .collect();
        (&inner.events, &inner.meta, &inner.files)
            .transaction(|(ev, meta, files)| {
                for (seq, value) in &records {
                    ev.insert(&seq.to_be_bytes(), value.as_slice())?;
                }
                meta.insert(NEXT_SEQ, &(next + n).to_be_bytes())?;
                if let Some((key, fp)) = file_mark {
                    files.insert(key.as_bytes(), &fp_to_bytes(fp))?;
                }
                Ok::<(), ConflictableTransactionError<()>>(())
            })
            .map_err(|e| match e {
                TransactionError::Storage(e) => OutboxError::Db(e),
                TransactionError::Abort(()) => unreachable!("this transaction never aborts"),
            })?;
        state.next_seq = next + n;
        state.bytes += records.iter().map(|(_, v)| 8 + v.len() as u64).sum::<u64>();
        state.count += n;
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
        let target = (inner.settings.max_bytes as f64 * CAP_LOW_WATER) as u64;
        let mut dropped: Vec<u64> = Vec::new();
        for priority in [Priority::Low, Priority::High] {
            let mut batch = sled::Batch::default();
            for entry in inner.events.range(..keep_from.to_be_bytes()) {
                if state.bytes <= target {
                    break;
                }
                let (k, v) = entry?;
                if v.first().copied() != Some(priority as u8) {
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
            inner.events.apply_batch(batch)?;
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
        let notice = EventKind::Dropped {
            ranges: ranges_of(&dropped),
            count,
            reason: format!(
                "outbox reached its cap of {} bytes",
                inner.settings.max_bytes
            ),
        };
        self.commit(state, vec![(at, notice)], None)?;
        Ok(())
    }

    /// Deletes every event with `seq <= through` (the collector has committed them).
    /// Returns how many were removed. Acks below the current one change nothing.
    pub fn ack_through(&self, through: u64) -> Result<u64, OutboxError> {
        let inner = &self.inner;
        let mut state = self.lock();
        if through <= state.acked_through {
            return Ok(0);
        }
        let mut batch = sled::Batch::default();
        let (mut removed, mut freed) = (0u64, 0u64);
        for entry in inner.events.range(..=through.to_be_bytes()) {
            let (k, v) = entry?;
            freed += (k.len() + v.len()) as u64;
            removed += 1;
            batch.remove(k);
        }
        inner.events.apply_batch(batch)?;
        inner.meta.insert(ACKED_THROUGH, &through.to_be_bytes())?;
        state.bytes -= freed;
        state.count -= removed;
        state.acked_through = through;
        state.seq_file.note_acked(through);
        Ok(removed)
    }

    /// Up to `max_events` events with `seq > after`, in seq order, within about
    /// `max_bytes` of JSON (at least one event is returned if any is pending).
    pub fn pending(
        &self,
        after: u64,
        max_events: usize,
        max_bytes: usize,
    ) -> Result<Vec<Event>, OutboxError> {
        let start = after.saturating_add(1).to_be_bytes();
        let mut out = Vec::new();
        let mut bytes = 0usize;
        for entry in self.inner.events.range(start..) {
            let (k, v) = entry?;
            if out.len() >= max_events || (!out.is_empty() && bytes + v.len() > max_bytes) {
                break;
            }
            bytes += v.len();
            out.push(decode_record(u64_from(&k), &v)?);
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

    /// The highest seq acknowledged so far.
    pub fn acked_through(&self) -> u64 {
        self.lock().acked_through
    }

    /// The seq the next event will get.
    pub fn next_seq(&self) -> u64 {
        self.lock().next_seq
    }

    /// The instant of the oldest unacknowledged event.
    pub fn oldest_pending_at(&self) -> Result<Option<Timestamp>, OutboxError> {
        match self.inner.events.first()? {
            Some((k, v)) => Ok(Some(decode_record(u64_from(&k), &v)?.at)),
            None => Ok(None),
        }
    }

    /// Makes everything appended so far durable now.
    pub fn flush(&self) -> Result<(), OutboxError> {
        self.inner.db.flush()?;
        Ok(())
    }

    /// Size of the database on disk (sled reclaims space lazily).
    pub fn size_on_disk(&self) -> Result<u64, OutboxError> {
        Ok(self.inner.db.size_on_disk()?)
    }

    /// The fingerprint last reported for a result file.
    pub fn file_reported(&self, key: &str) -> Result<Option<Fingerprint>, OutboxError> {
        Ok(self
            .inner
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

    fn lock(&self) -> MutexGuard<'_, Counters> {
        // A panic while holding the lock leaves counters that are still
        // consistent with sled (they are updated after each commit).
        self.inner.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// How long `open` waits for the database's file lock. sled releases it a
/// moment after the last handle is dropped (its flusher thread lets go
/// late), so a reopen in the same process can briefly find it taken; another
/// process holding it is reported after this wait.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

fn open_db(dir: &Path, settings: &OutboxSettings) -> Result<sled::Db, sled::Error> {
    let config = sled::Config::new()
        .path(dir)
        .cache_capacity(settings.cache_bytes)
        .flush_every_ms(Some(settings.summary_flush_ms.max(1)))
        .mode(sled::Mode::LowSpace);
    let started = std::time::Instant::now();
    loop {
        match config.open() {
            Err(sled::Error::Io(e))
                if e.to_string().contains("could not acquire lock")
                    && started.elapsed() < LOCK_WAIT =>
            {
                std::thread::sleep(std::time::Duration::from_millis(20));
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

fn encode_record(event: &Event) -> Vec<u8> {
    let mut value = Vec::with_capacity(160);
    value.push(Priority::of(&event.kind) as u8);
    // Events are plain data: serializing cannot fail.
    serde_json::to_writer(&mut value, event).expect("events serialize");
    value
}

fn decode_record(seq: u64, value: &[u8]) -> Result<Event, OutboxError> {
    let body = value.get(1..).ok_or(OutboxError::Record {
        seq,
        reason: "empty record".into(),
    })?;
    serde_json::from_slice(body).map_err(|e| OutboxError::Record {
        seq,
        reason: e.to_string(),
    })
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
