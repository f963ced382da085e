//! Blocking file-system work: walking a folder, looking at one file, hashing.
//! Everything here runs on tokio's blocking pool (a network share can stall).

use std::fs::{File, Metadata};
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use jiff::Timestamp;
use sha2::{Digest, Sha256};

use super::Fingerprint;

/// Read size for hashing: the whole file is never held in memory.
pub(crate) const HASH_BUFFER_BYTES: usize = 64 * 1024;

/// Which files of a folder are results.
#[derive(Debug)]
pub(crate) struct Filter {
    include: GlobSet,
    exclude: GlobSet,
    pub(crate) recursive: bool,
}

impl Filter {
    pub(crate) fn new(
        include: &[String],
        exclude: &[String],
        recursive: bool,
    ) -> anyhow::Result<Self> {
        Ok(Self {
            include: glob_set("include", include)?,
            exclude: glob_set("exclude", exclude)?,
            recursive,
        })
    }

    /// `rel` is the path relative to the folder with `/` separators.
    pub(crate) fn wants(&self, rel: &str) -> bool {
        if !self.recursive && rel.contains('/') {
            return false;
        }
        self.include.is_match(rel) && !self.exclude.is_match(rel)
    }
}

/// Globs match the relative path, and `*` stops at `/` (as in a shell), so
/// `*.raw` means top-level files and `**/*.raw` means any depth.
fn glob_set(key: &str, globs: &[String]) -> anyhow::Result<GlobSet> {
    let mut set = GlobSetBuilder::new();
    for (i, glob) in globs.iter().enumerate() {
        let glob = GlobBuilder::new(glob)
            .literal_separator(true)
            // Windows file names are case-insensitive; match them the same way.
            .case_insensitive(cfg!(windows))
            .build()
            .map_err(|e| anyhow::anyhow!("{key}[{i}] {glob:?} is not a valid glob: {e}"))?;
        set.add(glob);
    }
    Ok(set.build()?)
}

/// `root/a/b` → `a/b`, on every platform.
pub(crate) fn relative(root: &Path, path: &Path) -> Option<String> {
    let rel = path.strip_prefix(root).ok()?;
    let parts: Vec<_> = rel
        .components()
        // Non-UTF-8 names are rare on instrument PCs; a lossy name still
        // identifies the file in a report better than silence would.
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    (!parts.is_empty()).then(|| parts.join("/"))
}

/// Size and modification time of one file version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Version {
    pub(crate) fingerprint: Fingerprint,
    pub(crate) mtime: Timestamp,
}

pub(crate) fn version(meta: &Metadata) -> io::Result<Version> {
    let mtime = Timestamp::try_from(meta.modified()?).map_err(io::Error::other)?;
    Ok(Version {
        fingerprint: Fingerprint {
            size_bytes: meta.len(),
            mtime_ms: mtime.as_millisecond(),
        },
        mtime,
    })
}

/// What one look at a path found.
#[derive(Debug)]
pub(crate) enum Stat {
    File(Version),
    /// Gone, or no longer a regular file: nothing to report, no fault.
    Gone,
    Dir,
    Error(io::Error),
}

/// Follows symlinks: a link to a result file is a result file.
pub(crate) fn stat(path: &Path) -> Stat {
    match std::fs::metadata(path) {
        Ok(meta) if meta.is_file() => match version(&meta) {
            Ok(v) => Stat::File(v),
            Err(e) => Stat::Error(e),
        },
        Ok(meta) if meta.is_dir() => Stat::Dir,
        Ok(_) => Stat::Gone,
        Err(e) if e.kind() == io::ErrorKind::NotFound => Stat::Gone,
        Err(e) => Stat::Error(e),
    }
}

#[derive(Debug)]
pub(crate) struct Found {
    pub(crate) rel: String,
    pub(crate) path: PathBuf,
    pub(crate) version: Version,
}

#[derive(Debug, Default)]
pub(crate) struct Walk {
    /// The folder itself could not be used (missing, not a folder, unreadable).
    pub(crate) folder_error: Option<String>,
    pub(crate) files: Vec<Found>,
    /// Relative path → problem, for sub-folders and files that could not be looked at.
    pub(crate) errors: Vec<(String, String)>,
}

/// Lists the folder's result files with their current versions.
pub(crate) fn walk(root: &Path, filter: &Filter) -> Walk {
    let mut out = Walk::default();
    match std::fs::metadata(root) {
        Ok(meta) if meta.is_dir() => {}
        Ok(_) => {
            out.folder_error = Some(format!("{} is not a folder", root.display()));
            return out;
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            out.folder_error = Some(format!(
                "folder {} does not exist (not created yet, moved, or the share is not mounted)",
                root.display()
            ));
            return out;
        }
        Err(e) => {
            out.folder_error = Some(format!("cannot open folder {}: {e}", root.display()));
            return out;
        }
    }
    let walker = walkdir::WalkDir::new(root)
        .min_depth(1)
        .max_depth(if filter.recursive { usize::MAX } else { 1 })
        .sort_by_file_name();
    for entry in walker {
        let entry = match entry {
            Ok(entry) => entry,
            Err(e) => {
                let gone = e.io_error().map(io::Error::kind) == Some(io::ErrorKind::NotFound);
                if e.depth() == 0 {
                    out.folder_error = Some(format!("cannot read folder {}: {e}", root.display()));
                    return out;
                }
                // Deleted between listing and looking: not a problem.
                if !gone {
                    let rel = e.path().and_then(|p| relative(root, p)).unwrap_or_default();
                    out.errors
                        .push((rel.clone(), format!("cannot list {rel}: {e}")));
                }
                continue;
            }
        };
        if entry.file_type().is_dir() {
            continue;
        }
        let Some(rel) = relative(root, entry.path()) else {
            continue;
        };
        if !filter.wants(&rel) {
            continue;
        }
        match stat(entry.path()) {
            Stat::File(version) => out.files.push(Found {
                rel,
                path: entry.into_path(),
                version,
            }),
            Stat::Gone | Stat::Dir => {}
            Stat::Error(e) => {
                let message = format!("cannot look at {rel}: {e}");
                out.errors.push((rel, message));
            }
        }
    }
    out
}

#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Hashed {
    Done {
        sha256: String,
    },
    /// The file changed while it was read: not complete yet.
    Changed(Version),
    Gone,
}

/// SHA-256 of the file, streamed, then checked against `before`: a file that
/// changed while it was read is not reported with a hash of a mix of versions.
/// `cancel` stops a long read at the next chunk (shutdown).
pub(crate) fn hash(path: &Path, before: Fingerprint, cancel: &AtomicBool) -> io::Result<Hashed> {
    let mut file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Hashed::Gone),
        Err(e) if still_being_written(&e) => return Ok(changed(path)),
        Err(e) => return Err(e),
    };
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; HASH_BUFFER_BYTES];
    let mut total = 0u64;
    loop {
        if cancel.load(Ordering::Relaxed) {
            return Err(io::Error::new(io::ErrorKind::Interrupted, "cancelled"));
        }
        let n = match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buf[..n]);
        total += n as u64;
    }
    // The path, not the open handle: a file replaced by rename is a new version.
    match stat(path) {
        Stat::File(after) if after.fingerprint == before && total == before.size_bytes => {
            Ok(Hashed::Done {
                sha256: labhours_shared::trust::hex(&hasher.finalize()),
            })
        }
        Stat::File(after) => Ok(Hashed::Changed(after)),
        Stat::Gone | Stat::Dir => Ok(Hashed::Gone),
        Stat::Error(e) => Err(e),
    }
}

fn changed(path: &Path) -> Hashed {
    match stat(path) {
        Stat::File(v) => Hashed::Changed(v),
        _ => Hashed::Gone,
    }
}

/// Windows refuses to open a file another program holds open for writing
/// (sharing or lock violation): that file is still being written.
fn still_being_written(e: &io::Error) -> bool {
    cfg!(windows) && matches!(e.raw_os_error(), Some(32 | 33))
}

/// Sets the flag when dropped: a hashing future dropped on shutdown stops
/// its blocking read instead of finishing a large file nobody waits for.
#[derive(Debug)]
pub(crate) struct CancelOnDrop(pub(crate) Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(include: &[&str], exclude: &[&str], recursive: bool) -> Filter {
        let owned = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        Filter::new(&owned(include), &owned(exclude), recursive).unwrap()
    }

    #[test]
    fn globs_match_the_relative_path_and_star_stops_at_a_slash() {
        let f = filter(&["*.raw"], &[], true);
        assert!(f.wants("a.raw"));
        assert!(!f.wants("2026/a.raw"));
        let f = filter(&["**/*.raw"], &["**/tmp/**"], true);
        assert!(f.wants("a.raw"));
        assert!(f.wants("2026/run-1/a.raw"));
        assert!(!f.wants("2026/tmp/a.raw"));
        assert!(!f.wants("a.raw.part"));
    }

    #[test]
    fn a_non_recursive_filter_takes_top_level_files_only() {
        let f = filter(&["**/*"], &[], false);
        assert!(f.wants("fid"));
        assert!(!f.wants("run/fid"));
    }

    #[test]
    fn relative_paths_use_forward_slashes() {
        let root = Path::new("data").join("nmr");
        let file = root.join("2026").join("run-17").join("fid");
        assert_eq!(relative(&root, &file).as_deref(), Some("2026/run-17/fid"));
        assert_eq!(relative(&root, &root), None);
        assert_eq!(relative(&root, Path::new("elsewhere/fid")), None);
    }

    #[test]
    fn hex_is_lower_case_and_two_digits_per_byte() {
        assert_eq!(
            labhours_shared::trust::hex(&[0x00, 0x0f, 0xa0, 0xff]),
            "000fa0ff"
        );
    }

    fn version_of(path: &Path) -> Version {
        match stat(path) {
            Stat::File(v) => v,
            other => panic!("expected a file, got {other:?}"),
        }
    }

    #[test]
    fn hashing_a_file_that_changed_since_it_was_looked_at_says_changed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fid");
        std::fs::write(&path, b"abc").unwrap();
        let before = version_of(&path);
        std::fs::write(&path, b"abcdef").unwrap();
        let got = hash(&path, before.fingerprint, &AtomicBool::new(false)).unwrap();
        assert_eq!(got, Hashed::Changed(version_of(&path)));
    }

    #[test]
    fn hashing_an_unchanged_file_gives_its_digest() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fid");
        std::fs::write(&path, b"abc").unwrap();
        let before = version_of(&path);
        let got = hash(&path, before.fingerprint, &AtomicBool::new(false)).unwrap();
        assert_eq!(
            got,
            Hashed::Done {
                sha256: "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad".into()
            }
        );
    }

    #[test]
    fn hashing_stops_when_cancelled_and_reports_a_vanished_file_as_gone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fid");
        std::fs::write(&path, b"abc").unwrap();
        let before = version_of(&path).fingerprint;
        let err = hash(&path, before, &AtomicBool::new(true)).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::Interrupted);
        std::fs::remove_file(&path).unwrap();
        assert_eq!(
            hash(&path, before, &AtomicBool::new(false)).unwrap(),
            Hashed::Gone
        );
    }

    #[cfg(unix)]
    #[test]
    fn a_read_error_is_an_error_not_a_digest() {
        // Opening a directory works on Unix; reading it fails (EISDIR).
        let dir = tempfile::tempdir().unwrap();
        let before = Fingerprint {
            size_bytes: 0,
            mtime_ms: 0,
        };
        assert!(hash(dir.path(), before, &AtomicBool::new(false)).is_err());
    }
}
