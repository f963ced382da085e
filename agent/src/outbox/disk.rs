//! The disk under the outbox: free space, and telling "the disk is full"
//! apart from "the files are damaged".
//!
//! sled cannot recover in place from a failed write (once its flusher hits
//! an I/O error every later operation fails, and some reads stall), so the
//! outbox stops appending *before* the disk is full: it keeps
//! `min_free_bytes` free for sled's own housekeeping (deletions after acks,
//! snapshots), which keeps delivery going while new events are refused.
//!
//! Another program can still take the last byte between two checks; sled's
//! write then fails and the database must be closed and opened again, which
//! itself needs room. So the outbox also holds a [`Reserve`]: a file of
//! `min_free_bytes` it allocates beside the database and deletes when it has
//! to reopen on a full disk — what was accepted can still be delivered
//! (CockroachDB keeps an "emergency ballast" file for the same reason).

use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How long a free-space reading is trusted while little is written.
const RECHECK_AFTER: Duration = Duration::from_millis(500);

/// Free bytes on the filesystem holding `path`, for this (unprivileged) user.
pub fn free_bytes(path: &Path) -> io::Result<u64> {
    fs4::available_space(path)
}

/// ENOSPC (and the Windows codes for a full disk) or a quota.
pub fn is_disk_full(e: &io::Error) -> bool {
    if matches!(
        e.kind(),
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
    ) {
        return true;
    }
    // sled wraps the OS error in a custom error; the message is all that is left.
    let text = e.to_string();
    text.contains("No space left on device")
        || text.contains("os error 28")
        || text.contains("os error 112")
        || text.contains("os error 39")
        || text.contains("StorageFull")
}

/// Whether sled's error is the disk being full.
pub fn sled_disk_full(e: &sled::Error) -> bool {
    matches!(e, sled::Error::Io(io) if is_disk_full(io))
}

/// Checks free space before appends, cheaply: the filesystem is asked again
/// when the last answer is older than [`RECHECK_AFTER`] or when more than a
/// quarter of the reserve has been written since.
#[derive(Debug)]
pub struct SpaceGuard {
    min_free_bytes: u64,
    last: Option<(Instant, u64)>,
    written_since: u64,
}

/// Appends must stop: the disk has less free space than the reserve.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LowSpace {
    pub free_bytes: u64,
    pub min_free_bytes: u64,
}

impl SpaceGuard {
    pub fn new(min_free_bytes: u64) -> Self {
        Self {
            min_free_bytes,
            last: None,
            written_since: 0,
        }
    }

    /// Records `bytes` written since the last check.
    pub fn wrote(&mut self, bytes: u64) {
        self.written_since = self.written_since.saturating_add(bytes);
    }

    /// Ok when at least the reserve plus `incoming` bytes are free.
    pub fn check(&mut self, dir: &Path, incoming: u64, now: Instant) -> Result<(), LowSpace> {
        if self.min_free_bytes == 0 {
            return Ok(());
        }
        let stale = match self.last {
            None => true,
            Some((at, _)) => {
                now.saturating_duration_since(at) >= RECHECK_AFTER
                    || self.written_since.saturating_add(incoming) >= self.min_free_bytes / 4
            }
        };
        if stale {
            // An unreadable free-space figure must not stop the agent: sled's
            // own errors still catch a really full disk.
            let free = free_bytes(dir).unwrap_or(u64::MAX);
            self.last = Some((now, free));
            self.written_since = 0;
        }
        let free = self.last.map_or(u64::MAX, |(_, f)| f);
        let free_after = free.saturating_sub(self.written_since.saturating_add(incoming));
        if free_after < self.min_free_bytes {
            // Ask again next time: space may come back at any moment.
            self.last = None;
            return Err(LowSpace {
                free_bytes: free,
                min_free_bytes: self.min_free_bytes,
            });
        }
        Ok(())
    }
}

/// Disk space set aside for reopening the database on a full disk: a file
/// whose blocks are really allocated (not sparse), given back on demand.
#[derive(Debug)]
pub struct Reserve {
    path: PathBuf,
    bytes: u64,
    held: bool,
}

impl Reserve {
    /// The reserve file in `dir`, held if a full one is already there
    /// (0 bytes: no reserve, always "held").
    pub fn new(dir: &Path, bytes: u64) -> Self {
        let path = dir.join("outbox.reserve");
        let held = bytes == 0 || std::fs::metadata(&path).is_ok_and(|m| m.len() >= bytes);
        Self { path, bytes, held }
    }

    /// How big it is when held.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Whether the space is set aside.
    pub fn held(&self) -> bool {
        self.held
    }

    /// Allocates the file; a partial one is removed, so a failure leaves
    /// the disk as it was.
    pub fn hold(&mut self) -> io::Result<()> {
        if self.held {
            return Ok(());
        }
        let allocated = (|| {
            let file = std::fs::File::create(&self.path)?;
            fs4::fs_std::FileExt::allocate(&file, self.bytes)?;
            file.sync_all()
        })();
        match allocated {
            Ok(()) => self.held = true,
            Err(_) => {
                let _ = std::fs::remove_file(&self.path);
            }
        }
        allocated
    }

    /// Gives the space back; true when there was something to give.
    pub fn release(&mut self) -> bool {
        if self.bytes == 0 || !self.held {
            return false;
        }
        self.held = false;
        std::fs::remove_file(&self.path).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_disk_is_recognised_by_kind_and_by_the_wrapped_message() {
        assert!(is_disk_full(&io::Error::from(io::ErrorKind::StorageFull)));
        assert!(is_disk_full(&io::Error::from_raw_os_error(28)));
        let wrapped = io::Error::other(format!("{:?}", io::Error::from_raw_os_error(28)));
        assert!(is_disk_full(&wrapped), "{wrapped}");
        assert!(!is_disk_full(&io::Error::from(io::ErrorKind::InvalidData)));
        assert!(!is_disk_full(&io::Error::from(
            io::ErrorKind::PermissionDenied
        )));
    }

    #[test]
    fn a_reserve_larger_than_the_free_space_refuses_and_asks_again_next_time() {
        let dir = tempfile::tempdir().expect("temp dir");
        let free = free_bytes(dir.path()).expect("free space");
        let mut guard = SpaceGuard::new(free.saturating_mul(2).max(1));
        let now = Instant::now();
        let low = guard.check(dir.path(), 0, now).unwrap_err();
        assert_eq!(low.min_free_bytes, free.saturating_mul(2).max(1));
        assert!(guard.last.is_none(), "a refusal is not cached");
    }

    #[test]
    fn a_small_reserve_lets_appends_through_and_rechecks_after_a_quarter_of_it() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut guard = SpaceGuard::new(4096);
        let now = Instant::now();
        guard.check(dir.path(), 100, now).expect("room");
        let first = guard.last.expect("checked").0;
        guard.wrote(100);
        guard.check(dir.path(), 100, now).expect("room");
        assert_eq!(guard.last.expect("cached").0, first, "no new check yet");
        guard.wrote(2000);
        let later = now + Duration::from_millis(1);
        guard.check(dir.path(), 0, later).expect("room");
        assert_eq!(
            guard.last.expect("checked").0,
            later,
            "a quarter written: asked again"
        );
    }

    #[test]
    fn a_reserve_takes_real_blocks_and_gives_them_back() {
        use fs4::fs_std::FileExt as _;
        let dir = tempfile::tempdir().expect("temp dir");
        let mut reserve = Reserve::new(dir.path(), 256 * 1024);
        assert!(!reserve.held());
        reserve.hold().expect("room");
        assert!(reserve.held());
        let file = std::fs::File::open(dir.path().join("outbox.reserve")).expect("file");
        assert!(
            file.allocated_size().expect("size") >= 256 * 1024,
            "not sparse"
        );
        assert!(reserve.release());
        assert!(!reserve.held());
        assert!(!reserve.release(), "nothing left to give");
        reserve.hold().expect("room");
        assert!(
            Reserve::new(dir.path(), 256 * 1024).held(),
            "found held after a restart"
        );
        assert!(
            Reserve::new(dir.path(), 0).held(),
            "no reserve: nothing to hold"
        );
    }

    #[test]
    fn a_reserve_that_does_not_fit_leaves_no_partial_file() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut reserve = Reserve::new(dir.path(), u64::MAX / 2);
        assert!(reserve.hold().is_err());
        assert!(!reserve.held());
        assert!(!dir.path().join("outbox.reserve").exists());
    }

    #[test]
    fn no_reserve_means_no_check() {
        let mut guard = SpaceGuard::new(0);
        guard
            .check(Path::new("/nonexistent/dir"), u64::MAX, Instant::now())
            .expect("off");
    }
}
