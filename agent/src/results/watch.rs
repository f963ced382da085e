//! The long-running loop: file-system events as hints, timers as the guarantee.
//!
//! Timing (all per folder):
//! - a full walk at start, then every `rescan_interval_s` (every
//!   `min(rescan_interval_s, 30 s)` while the folder is missing or unreadable,
//!   so a share that comes back is picked up and watched again soon);
//! - file-system events are collected for [`HINT_DELAY`] and then only the
//!   named paths are looked at (a new sub-folder, an overflow or an event on
//!   the folder itself triggers a full walk);
//! - each pending candidate is looked at again when it could be complete:
//!   `max(min_age_s, 1 s)` after its current version was first seen, and
//!   never more than once a second.
//!
//! `poll = true` uses no file-system watcher at all: the rescan timer is the
//! only discovery (notify's `PollWatcher` would walk the same share on its
//! own schedule, costing as much for nothing more).

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use notify::event::{AccessKind, AccessMode};
use notify::{Event, EventKind, RecommendedWatcher, RecursiveMode, Watcher as _};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::{ResultWatcher, ScanStats};

/// Events come in bursts while a file is written; look once per burst.
pub(crate) const HINT_DELAY: Duration = Duration::from_millis(200);
/// Retry period for a folder that is missing or unreadable.
const FAULT_RETRY: Duration = Duration::from_secs(30);
/// Beyond this many distinct paths per burst, a walk is cheaper.
const MAX_HINT_PATHS: usize = 1024;

#[derive(Debug, Default)]
struct FolderHints {
    paths: HashSet<PathBuf>,
    walk: bool,
    /// The folder itself was removed, renamed or replaced: watch it anew.
    rewatch: bool,
}

/// Filled by notify's thread, drained by the loop.
#[derive(Debug)]
struct HintQueue {
    folders: Mutex<Vec<FolderHints>>,
    wake: tokio::sync::Notify,
}

impl HintQueue {
    fn new(folders: usize) -> Self {
        Self {
            folders: Mutex::new((0..folders).map(|_| FolderHints::default()).collect()),
            wake: tokio::sync::Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<FolderHints>> {
        // Hints are only hints: whatever a panicking holder left is usable.
        self.folders.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn push(&self, i: usize, root: &Path, event: notify::Result<Event>) {
        {
            let mut all = self.lock();
            let hints = &mut all[i];
            match event {
                Err(e) => {
                    debug!(folder = %root.display(), "watch error, walking: {e}");
                    hints.walk = true;
                }
                // Reads (ours included, while hashing) change nothing.
                Ok(Event {
                    kind: EventKind::Access(kind),
                    ..
                }) if kind != AccessKind::Close(AccessMode::Write) => return,
                Ok(event) => {
                    if event.need_rescan() || event.paths.is_empty() {
                        hints.walk = true;
                    }
                    for path in event.paths {
                        if path == root {
                            hints.rewatch = true;
                            hints.walk = true;
                        } else if hints.paths.len() < MAX_HINT_PATHS {
                            hints.paths.insert(path);
                        } else {
                            hints.walk = true;
                        }
                    }
                }
            }
        }
        self.wake.notify_one();
    }

    fn take(&self, i: usize) -> FolderHints {
        std::mem::take(&mut self.lock()[i])
    }
}

struct Schedule {
    next_walk: Vec<Instant>,
    hints_due: Option<Instant>,
    watches: Vec<Option<RecommendedWatcher>>,
}

pub(super) async fn run(mut w: ResultWatcher, shutdown: impl std::future::Future<Output = ()>) {
    let n = w.folders.len();
    let queue = Arc::new(HintQueue::new(n));
    let mut schedule = Schedule {
        next_walk: vec![Instant::now(); n],
        hints_due: None,
        watches: (0..n).map(|_| None).collect(),
    };
    tokio::pin!(shutdown);
    info!(folders = n, "watching result folders");
    loop {
        // Shutdown also interrupts a long hash (see `CancelOnDrop`).
        let next = tokio::select! {
            biased;
            () = &mut shutdown => break,
            next = w.due_work(&queue, &mut schedule) => next,
        };
        tokio::select! {
            biased;
            () = &mut shutdown => break,
            () = queue.wake.notified() => {
                schedule.hints_due.get_or_insert_with(|| Instant::now() + HINT_DELAY);
            }
            () = tokio::time::sleep_until(next) => {}
        }
    }
    info!("result watcher stopped");
}

impl ResultWatcher {
    /// Does whatever is due now; returns when something is due next.
    async fn due_work(&mut self, queue: &Arc<HintQueue>, s: &mut Schedule) -> Instant {
        let start = Instant::now();
        let take_hints = s.hints_due.is_some_and(|due| due <= start);
        if take_hints {
            s.hints_due = None;
        }
        for i in 0..self.folders.len() {
            let hints = if take_hints {
                queue.take(i)
            } else {
                FolderHints::default()
            };
            if hints.rewatch {
                s.watches[i] = None;
            }
            let mut stats = ScanStats::default();
            let mut walk = hints.walk || s.next_walk[i] <= start;
            let mut result = Ok(());
            if !walk && !hints.paths.is_empty() {
                match self
                    .check_paths(i, hints.paths.into_iter().collect(), &mut stats)
                    .await
                {
                    Ok(needs_walk) => walk = needs_walk,
                    Err(e) => result = Err(e),
                }
            }
            if walk && result.is_ok() {
                // Watch first, then walk: a file created in between is seen twice, not never.
                self.ensure_watch(i, queue, &mut s.watches[i]).await;
                result = self.walk_folder(i, &mut stats).await;
                let folder = &self.folders[i];
                let period = if folder.folder_fault.is_some() {
                    // A watch on a vanished folder is dead; it is made again once the folder is back.
                    s.watches[i] = None;
                    folder.rescan.min(FAULT_RETRY)
                } else {
                    folder.rescan
                };
                s.next_walk[i] = Instant::now() + period;
            }
            if result.is_ok() && self.folders[i].due_in(self.clock.now()) == Some(Duration::ZERO) {
                result = self.check_due(i, &mut stats).await;
            }
            let folder = &self.folders[i];
            if let Err(e) = result {
                warn!(folder = %folder.root.display(), "result sink failed, will retry: {e:#}");
            }
            if stats.reported > 0 {
                info!(folder = %folder.root.display(), files = stats.reported, "result files reported");
            }
        }

        let now = Instant::now();
        let clock_now = self.clock.now();
        let mut next = s
            .next_walk
            .iter()
            .copied()
            .min()
            .unwrap_or(now + FAULT_RETRY);
        if let Some(due) = s.hints_due {
            next = next.min(due);
        }
        for folder in &self.folders {
            if let Some(due_in) = folder.due_in(clock_now) {
                next = next.min(now + due_in);
            }
        }
        next
    }

    async fn ensure_watch(
        &mut self,
        i: usize,
        queue: &Arc<HintQueue>,
        slot: &mut Option<RecommendedWatcher>,
    ) {
        let folder = &self.folders[i];
        if folder.poll || slot.is_some() {
            return;
        }
        let root = folder.root.clone();
        let mode = if folder.filter.recursive {
            RecursiveMode::Recursive
        } else {
            RecursiveMode::NonRecursive
        };
        let queue = queue.clone();
        // Watching a large tree adds a watch per sub-folder: blocking work.
        let made = tokio::task::spawn_blocking(move || {
            if !root.is_dir() {
                return Ok(None); // the walk reports why
            }
            let handler_root = root.clone();
            let mut watcher = RecommendedWatcher::new(
                move |event| queue.push(i, &handler_root, event),
                notify::Config::default(),
            )?;
            watcher.watch(&root, mode)?;
            Ok(Some(watcher))
        })
        .await
        .unwrap_or_else(|e| Err(notify::Error::generic(&e.to_string())));
        let folder = &mut self.folders[i];
        match made {
            Ok(watcher) => {
                if watcher.is_some()
                    && let Some(old) = folder.watch_fault.take()
                {
                    info!(folder = %folder.root.display(), "watching again (was: {old})");
                }
                *slot = watcher;
            }
            Err(e) => {
                let problem = format!(
                    "cannot watch {} for changes ({e}); new files are found by the rescan every {} s",
                    folder.root.display(),
                    folder.rescan.as_secs()
                );
                if folder.watch_fault.as_deref() == Some(problem.as_str()) {
                    return;
                }
                warn!(folder = %folder.root.display(), "{problem}");
                let source = folder.source.clone();
                match self.send_fault(source, problem.clone()).await {
                    Ok(()) => self.folders[i].watch_fault = Some(problem),
                    Err(e) => warn!("result sink failed, will retry: {e:#}"),
                }
            }
        }
    }
}
