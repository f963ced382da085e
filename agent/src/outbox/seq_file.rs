//! The sequence high-water mark, kept in a small file beside the database so
//! numbering never goes back even if the database is lost.
//!
//! Format: one line `reserved=<u64> acked=<u64>`. Seqs are reserved in blocks
//! (one fsync per block, not per event): every seq ever handed out is at or
//! below `reserved`. `acked` is a lower bound of what a collector has
//! acknowledged, saved whenever a block is reserved; after a loss, the seqs in
//! `acked+1 ..= reserved` are the ones that may be gone.

use std::io::Write;
use std::path::{Path, PathBuf};

use super::OutboxError;

/// Seqs reserved per write of the file.
const BLOCK: u64 = 65_536;

#[derive(Debug)]
pub(super) struct SeqFile {
    path: PathBuf,
    reserved: u64,
    acked_saved: u64,
    acked: u64,
}

impl SeqFile {
    pub fn open(path: &Path) -> Result<Self, OutboxError> {
        let (reserved, acked) = match std::fs::read_to_string(path) {
            Ok(text) => parse(&text).unwrap_or_else(|| {
                // Not fatal: the database's own counter still holds; only a
                // simultaneous loss of both would lose the numbering.
                tracing::error!(path = %path.display(), "unreadable outbox sequence file; relying on the database's counter");
                (0, 0)
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => (0, 0),
            Err(source) => {
                return Err(OutboxError::SeqFile {
                    path: path.to_owned(),
                    source,
                });
            }
        };
        Ok(Self {
            path: path.to_owned(),
            reserved,
            acked_saved: acked,
            acked,
        })
    }

    pub fn reserved(&self) -> u64 {
        self.reserved
    }

    pub fn acked_floor(&self) -> u64 {
        self.acked_saved
    }

    pub fn note_acked(&mut self, through: u64) {
        self.acked = self.acked.max(through);
    }

    /// Makes sure `seq` is reserved on disk before it is used.
    pub fn reserve_through(&mut self, seq: u64) -> Result<(), OutboxError> {
        if seq <= self.reserved {
            return Ok(());
        }
        let reserved = seq.saturating_add(BLOCK);
        self.write(reserved, self.acked)
            .map_err(|source| OutboxError::SeqFile {
                path: self.path.clone(),
                source,
            })?;
        self.reserved = reserved;
        self.acked_saved = self.acked;
        Ok(())
    }

    fn write(&self, reserved: u64, acked: u64) -> std::io::Result<()> {
        let tmp = self.path.with_extension("seq.tmp");
        let mut file = std::fs::File::create(&tmp)?;
        writeln!(file, "reserved={reserved} acked={acked}")?;
        file.sync_all()?;
        std::fs::rename(&tmp, &self.path)?;
        // Make the rename itself durable (directories can be fsynced on Unix only).
        #[cfg(unix)]
        if let Some(dir) = self.path.parent() {
            std::fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    }
}

fn parse(text: &str) -> Option<(u64, u64)> {
    let mut reserved = None;
    let mut acked = None;
    for part in text.split_whitespace() {
        match part.split_once('=')? {
            ("reserved", v) => reserved = Some(v.parse().ok()?),
            ("acked", v) => acked = Some(v.parse().ok()?),
            _ => return None,
        }
    }
    Some((reserved?, acked?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_survive_reopening_and_come_in_blocks() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("outbox.seq");
        let mut f = SeqFile::open(&path).expect("open");
        assert_eq!(f.reserved(), 0);
        f.note_acked(0);
        f.reserve_through(1).expect("reserve");
        assert_eq!(f.reserved(), 1 + BLOCK);
        f.reserve_through(500).expect("within the block: no write");
        f.note_acked(400);
        f.reserve_through(BLOCK + 2).expect("next block");
        let again = SeqFile::open(&path).expect("reopen");
        assert_eq!(
            (again.reserved(), again.acked_floor()),
            (2 * BLOCK + 2, 400)
        );
    }

    #[test]
    fn a_garbled_file_is_not_fatal() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("outbox.seq");
        std::fs::write(&path, "reserved=banana").expect("write");
        assert_eq!(SeqFile::open(&path).expect("open").reserved(), 0);
    }
}
