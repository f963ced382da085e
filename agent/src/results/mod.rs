//! Result files: finds the files an instrument writes into watched folders and
//! reports each completed file version exactly once as a
//! [`ResultFile`] event. `docs/result-files.md` explains the rules and timing.
//!
//! - A folder is walked (recursively or not); a file is a candidate when its
//!   path relative to the folder, with `/` separators, matches one `include`
//!   glob and no `exclude` glob. `*` does not cross `/`: `**/*.raw` is any depth.
//! - A candidate is complete once it is seen unchanged (size and mtime) on a
//!   later check at least `max(min_age_s, 1 s)` after it was first seen in
//!   that version, by the [`Clock`]. Age is measured from when the agent first
//!   saw the version, not from the file's mtime, so a share whose clock is
//!   off neither rushes nor stalls files.
//! - Complete files are hashed (streaming SHA-256), checked again, and handed
//!   to the [`ResultSink`], which remembers the [`Fingerprint`]; a version the
//!   sink already has is skipped, so restarts report nothing twice.

mod scan;
mod watch;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use anyhow::Context as _;
use jiff::{SignedDuration, Timestamp};
use labhours_shared::wire::ResultFile;
use regex::Regex;
use tracing::{debug, info, warn};

pub use crate::clock::{Clock, SystemClock};
use crate::config::ResultsConfig;
use scan::{CancelOnDrop, Filter, Hashed, Stat, Version};

/// What identifies one version of a file: a rewritten file is a new result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Fingerprint {
    pub size_bytes: u64,
    pub mtime_ms: i64,
}

/// Where the watcher reports; implemented by the outbox.
pub trait ResultSink: Send + Sync + 'static {
    /// The fingerprint last reported for `key`, if any.
    fn reported(&self, key: &str) -> anyhow::Result<Option<Fingerprint>>;
    /// Durably appends the event and records the fingerprint, in one step.
    fn report(
        &self,
        key: &str,
        fingerprint: Fingerprint,
        event: labhours_shared::wire::ResultFile,
    ) -> anyhow::Result<()>;
    /// Records a fault event (source such as `results:/data/nmr`, a message for the technician).
    fn fault(&self, source: &str, message: &str) -> anyhow::Result<()>;
}

/// What one [`ResultWatcher::scan_once`] pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ScanStats {
    /// Result files found (matching the globs).
    pub files: usize,
    /// Files skipped because the sink already has this version.
    pub already_reported: usize,
    /// Files reported in this pass.
    pub reported: usize,
    /// Files waiting to be complete after this pass (still changing or too young).
    pub pending: usize,
    /// Problems newly reported to the sink in this pass.
    pub faults: usize,
}

/// Two checks closer together than this say nothing about stability, so a
/// file is complete only once unchanged for at least this long, even with
/// `min_age_s = 0`.
const MIN_SETTLE: SignedDuration = SignedDuration::from_secs(1);

/// Watches the `[[results]]` folders and reports completed files.
pub struct ResultWatcher {
    folders: Vec<Folder>,
    sink: Arc<dyn ResultSink>,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for ResultWatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResultWatcher")
            .field("folders", &self.folders)
            .finish_non_exhaustive()
    }
}

/// A file seen but not yet reported.
#[derive(Debug)]
struct Candidate {
    path: PathBuf,
    version: Version,
    /// When this version was first seen: its age counts from here.
    first_seen: Timestamp,
    checked_at: Timestamp,
}

#[derive(Debug)]
struct Folder {
    index: usize,
    root: PathBuf,
    /// `results:<folder>`, the fault source.
    source: String,
    filter: Arc<Filter>,
    sample_id: Option<SampleId>,
    settle: SignedDuration,
    rescan: Duration,
    poll: bool,
    pending: HashMap<String, Candidate>,
    /// Relative path → the problem last reported for it (sent once).
    faults: HashMap<String, Problem>,
    folder_fault: Option<String>,
    watch_fault: Option<String>,
}

#[derive(Debug)]
struct Problem {
    message: String,
    /// Reading the content failed: lasts until the file is reported or gone.
    /// Other problems (listing, looking) last while the walk still meets them.
    reading: bool,
}

#[derive(Debug)]
struct SampleId {
    regex: Regex,
    named: bool,
}

impl SampleId {
    /// The `sample` group if the pattern has one, else the whole match.
    fn extract(&self, file_name: &str) -> Option<String> {
        let caps = self.regex.captures(file_name)?;
        let m = if self.named {
            caps.name("sample")?
        } else {
            caps.get(0)?
        };
        (!m.as_str().is_empty()).then(|| m.as_str().to_owned())
    }
}

impl Folder {
    fn key(&self, rel: &str) -> String {
        format!("{}:{rel}", self.index)
    }

    /// How long until the earliest candidate could be complete, by `now`.
    fn due_in(&self, now: Timestamp) -> Option<Duration> {
        self.pending
            .values()
            .map(|c| {
                let aged = self.settle - now.duration_since(c.first_seen);
                // At most one stat per second per file, whatever happens.
                let spaced = MIN_SETTLE - now.duration_since(c.checked_at);
                Duration::try_from(aged.max(spaced)).unwrap_or(Duration::ZERO)
            })
            .min()
    }
}

impl ResultWatcher {
    pub fn new(
        configs: &[ResultsConfig],
        sink: Arc<dyn ResultSink>,
        clock: Arc<dyn Clock>,
    ) -> anyhow::Result<Self> {
        let folders = configs
            .iter()
            .enumerate()
            .map(|(index, c)| Folder::new(index, c).with_context(|| format!("results[{index}]")))
            .collect::<anyhow::Result<_>>()?;
        Ok(Self {
            folders,
            sink,
            clock,
        })
    }

    /// One pass over every folder (used by tests and by `run`): finds candidates, reports completed files.
    ///
    /// Problems with folders and files go to the sink as faults and the pass
    /// goes on. An `Err` means the sink itself failed: the pass stops there
    /// and the next pass retries whatever was not reported.
    pub async fn scan_once(&mut self) -> anyhow::Result<ScanStats> {
        let mut stats = ScanStats::default();
        for i in 0..self.folders.len() {
            self.walk_folder(i, &mut stats).await?;
        }
        stats.pending = self.folders.iter().map(|f| f.pending.len()).sum();
        Ok(stats)
    }

    /// Runs until `shutdown` resolves, scanning on file-system hints and on the rescan timer.
    pub async fn run(self, shutdown: impl std::future::Future<Output = ()>) {
        watch::run(self, shutdown).await;
    }

    /// Lists the folder and looks at every result file in it.
    async fn walk_folder(&mut self, i: usize, stats: &mut ScanStats) -> anyhow::Result<()> {
        let (root, filter) = (self.folders[i].root.clone(), self.folders[i].filter.clone());
        let walk = tokio::task::spawn_blocking(move || scan::walk(&root, &filter))
            .await
            .context("folder walk panicked")?;
        if let Some(problem) = walk.folder_error {
            return self.folder_fault(i, problem, stats).await;
        }
        let folder = &mut self.folders[i];
        if let Some(old) = folder.folder_fault.take() {
            info!(folder = %folder.root.display(), "results folder is usable again (was: {old})");
        }
        stats.files += walk.files.len();

        // Forget what is gone; a problem that is no longer seen has cleared.
        let seen: HashSet<&str> = walk.files.iter().map(|f| f.rel.as_str()).collect();
        folder.pending.retain(|rel, _| seen.contains(rel.as_str()));
        let failing: HashSet<&str> = walk.errors.iter().map(|(rel, _)| rel.as_str()).collect();
        folder.faults.retain(|rel, problem| {
            let keep =
                failing.contains(rel.as_str()) || (problem.reading && seen.contains(rel.as_str()));
            if !keep {
                info!(folder = %folder.root.display(), "cleared: {}", problem.message);
            }
            keep
        });

        for (rel, problem) in walk.errors {
            self.file_fault(i, rel, problem, false, stats).await?;
        }
        for found in walk.files {
            self.observe(i, found.rel, found.path, found.version, stats)
                .await?;
        }
        Ok(())
    }

    /// Looks at the given paths only (file-system hints, due candidates).
    /// Returns true when a full walk is needed (a new sub-folder, a path
    /// outside the folder).
    async fn check_paths(
        &mut self,
        i: usize,
        paths: Vec<PathBuf>,
        stats: &mut ScanStats,
    ) -> anyhow::Result<bool> {
        let root = self.folders[i].root.clone();
        let mut needs_walk = false;
        let mut items = Vec::with_capacity(paths.len());
        for path in paths {
            match scan::relative(&root, &path) {
                Some(rel) => items.push((rel, path)),
                None => needs_walk = true,
            }
        }
        let looked = tokio::task::spawn_blocking(move || {
            items
                .into_iter()
                .map(|(rel, path)| {
                    let stat = scan::stat(&path);
                    (rel, path, stat)
                })
                .collect::<Vec<_>>()
        })
        .await
        .context("looking at files panicked")?;
        for (rel, path, stat) in looked {
            let folder = &mut self.folders[i];
            match stat {
                Stat::File(version) if folder.filter.wants(&rel) => {
                    self.observe(i, rel, path, version, stats).await?;
                }
                Stat::File(_) => {}
                Stat::Dir => needs_walk |= folder.filter.recursive,
                Stat::Gone => {
                    folder.pending.remove(&rel);
                    if let Some(problem) = folder.faults.remove(&rel) {
                        info!(folder = %folder.root.display(), "gone, so cleared: {}", problem.message);
                    }
                }
                Stat::Error(e) if folder.filter.wants(&rel) => {
                    folder.pending.remove(&rel);
                    let problem = format!("cannot look at {rel}: {e}");
                    self.file_fault(i, rel, problem, false, stats).await?;
                }
                Stat::Error(e) => debug!(path = %path.display(), "ignored: {e}"),
            }
        }
        Ok(needs_walk)
    }

    /// Checks the candidates whose time has come.
    async fn check_due(&mut self, i: usize, stats: &mut ScanStats) -> anyhow::Result<()> {
        let now = self.clock.now();
        let folder = &self.folders[i];
        let due: Vec<PathBuf> = folder
            .pending
            .values()
            .filter(|c| {
                now.duration_since(c.first_seen) >= folder.settle
                    && now.duration_since(c.checked_at) >= MIN_SETTLE
            })
            .map(|c| c.path.clone())
            .collect();
        if !due.is_empty() {
            self.check_paths(i, due, stats).await?;
        }
        Ok(())
    }

    /// One look at one result file: track it, or report it once complete.
    async fn observe(
        &mut self,
        i: usize,
        rel: String,
        path: PathBuf,
        version: Version,
        stats: &mut ScanStats,
    ) -> anyhow::Result<()> {
        let now = self.clock.now();
        let folder = &mut self.folders[i];
        if folder.faults.get(&rel).is_some_and(|p| !p.reading)
            && let Some(problem) = folder.faults.remove(&rel)
        {
            info!(folder = %folder.root.display(), "cleared: {}", problem.message);
        }
        match folder.pending.get_mut(&rel) {
            None => {
                // Before any hashing: the sink may have this version already
                // (reported before a restart, or earlier in this run).
                let key = folder.key(&rel);
                if self.sink.reported(&key)? == Some(version.fingerprint) {
                    stats.already_reported += 1;
                    return Ok(());
                }
                folder.pending.insert(
                    rel,
                    Candidate {
                        path,
                        version,
                        first_seen: now,
                        checked_at: now,
                    },
                );
                return Ok(());
            }
            // Changed (still being written), or the clock went back: start over.
            Some(c) if c.version != version || now < c.first_seen => {
                *c = Candidate {
                    path,
                    version,
                    first_seen: now,
                    checked_at: now,
                };
                return Ok(());
            }
            Some(c) if now.duration_since(c.first_seen) < folder.settle => {
                c.checked_at = now;
                return Ok(());
            }
            Some(c) => c.checked_at = now,
        }
        self.complete(i, rel, stats).await
    }

    /// Hashes a complete candidate and reports it.
    async fn complete(
        &mut self,
        i: usize,
        rel: String,
        stats: &mut ScanStats,
    ) -> anyhow::Result<()> {
        let Some(c) = self.folders[i].pending.get(&rel) else {
            return Ok(());
        };
        let (path, version) = (c.path.clone(), c.version);
        let cancel = Arc::new(AtomicBool::new(false));
        let _stop_if_dropped = CancelOnDrop(cancel.clone());
        let hashed = {
            let path = path.clone();
            tokio::task::spawn_blocking(move || scan::hash(&path, version.fingerprint, &cancel))
                .await
                .unwrap_or_else(|e| Err(std::io::Error::other(e)))
        };
        let folder = &mut self.folders[i];
        match hashed {
            Ok(Hashed::Done { sha256 }) => {
                let file_name = rel.rsplit('/').next().unwrap_or(&rel);
                let event = ResultFile {
                    path: rel.clone(),
                    size_bytes: version.fingerprint.size_bytes,
                    sha256,
                    mtime: version.mtime,
                    sample_id: folder.sample_id.as_ref().and_then(|s| s.extract(file_name)),
                };
                let key = folder.key(&rel);
                let sink = self.sink.clone();
                let fingerprint = version.fingerprint;
                // Durable writes may wait for the disk: keep them off the async threads.
                tokio::task::spawn_blocking(move || sink.report(&key, fingerprint, event))
                    .await
                    .context("the result sink panicked")??;
                let folder = &mut self.folders[i];
                folder.pending.remove(&rel);
                if let Some(problem) = folder.faults.remove(&rel) {
                    info!(folder = %folder.root.display(), "cleared: {}", problem.message);
                }
                debug!(folder = %folder.root.display(), file = %rel, "reported");
                stats.reported += 1;
            }
            Ok(Hashed::Changed(now_version)) => {
                let now = self.clock.now();
                if let Some(c) = folder.pending.get_mut(&rel) {
                    c.version = now_version;
                    c.first_seen = now;
                    c.checked_at = now;
                }
            }
            Ok(Hashed::Gone) => {
                folder.pending.remove(&rel);
            }
            Err(e) => {
                // Retried at the next walk, not at every check.
                folder.pending.remove(&rel);
                let problem = format!("cannot read {rel}: {e}");
                self.file_fault(i, rel, problem, true, stats).await?;
            }
        }
        Ok(())
    }

    /// Reports a folder-level problem once; while it lasts, nothing else in
    /// the folder is tracked.
    async fn folder_fault(
        &mut self,
        i: usize,
        problem: String,
        stats: &mut ScanStats,
    ) -> anyhow::Result<()> {
        let folder = &mut self.folders[i];
        folder.pending.clear();
        folder.faults.clear();
        if folder.folder_fault.as_deref() == Some(problem.as_str()) {
            return Ok(());
        }
        warn!(folder = %folder.root.display(), "{problem}");
        self.send_fault(self.folders[i].source.clone(), problem.clone())
            .await?;
        self.folders[i].folder_fault = Some(problem);
        stats.faults += 1;
        Ok(())
    }

    /// Reports a problem with one file or sub-folder, once per distinct message.
    async fn file_fault(
        &mut self,
        i: usize,
        rel: String,
        message: String,
        reading: bool,
        stats: &mut ScanStats,
    ) -> anyhow::Result<()> {
        let folder = &self.folders[i];
        if folder
            .faults
            .get(&rel)
            .is_some_and(|p| p.message == message)
        {
            return Ok(());
        }
        warn!(folder = %folder.root.display(), "{message}");
        self.send_fault(folder.source.clone(), message.clone())
            .await?;
        self.folders[i]
            .faults
            .insert(rel, Problem { message, reading });
        stats.faults += 1;
        Ok(())
    }

    async fn send_fault(&self, source: String, message: String) -> anyhow::Result<()> {
        let sink = self.sink.clone();
        tokio::task::spawn_blocking(move || sink.fault(&source, &message))
            .await
            .context("the result sink panicked")?
    }
}

impl Folder {
    fn new(index: usize, c: &ResultsConfig) -> anyhow::Result<Self> {
        anyhow::ensure!(c.rescan_interval_s > 0, "rescan_interval_s must be above 0");
        let sample_id = c
            .sample_id_pattern
            .as_deref()
            .map(|pattern| {
                let regex = Regex::new(pattern).context("sample_id_pattern")?;
                let named = regex.capture_names().any(|n| n == Some("sample"));
                anyhow::Ok(SampleId { regex, named })
            })
            .transpose()?;
        let min_age = SignedDuration::from_secs(i64::try_from(c.min_age_s).unwrap_or(i64::MAX));
        Ok(Self {
            index,
            root: c.folder.clone(),
            source: format!("results:{}", c.folder.display()),
            filter: Arc::new(Filter::new(&c.include, &c.exclude, c.recursive)?),
            sample_id,
            settle: min_age.max(MIN_SETTLE),
            rescan: Duration::from_secs(c.rescan_interval_s),
            poll: c.poll,
            pending: HashMap::new(),
            faults: HashMap::new(),
            folder_fault: None,
            watch_fault: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_id(pattern: &str) -> SampleId {
        let regex = Regex::new(pattern).unwrap();
        let named = regex.capture_names().any(|n| n == Some("sample"));
        SampleId { regex, named }
    }

    #[test]
    fn the_sample_group_wins_over_the_whole_match() {
        assert_eq!(
            sample_id(r"S-(?P<sample>\d+)").extract("S-17_fid.raw"),
            Some("17".into())
        );
        assert_eq!(
            sample_id(r"S-\d+").extract("S-17_fid.raw"),
            Some("S-17".into())
        );
        assert_eq!(sample_id(r"S-\d+").extract("blank.raw"), None);
        // A `sample` group that took no part in the match gives no id.
        assert_eq!(sample_id(r"S-\d+(?P<sample>x)?").extract("S-17.raw"), None);
    }
}
