//! Result-file watcher, through its public API: real temp folders, an
//! in-memory sink, and time the tests control (a manual clock for
//! `scan_once`, paused tokio time for `run`; one test uses real
//! file-system events and so real time, bounded by a timeout).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use labhours_agent::clock::{Clock, ManualClock, SystemClock};
use labhours_agent::config::ResultsConfig;
use labhours_agent::results::{Fingerprint, ResultSink, ResultWatcher, ScanStats};
use labhours_shared::wire::ResultFile;

const ABC_SHA256: &str = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";

/// The outbox, in memory.
struct MemorySink {
    state: Mutex<SinkState>,
    count: tokio::sync::watch::Sender<usize>,
    /// This many `report` calls fail before they start working again.
    failing_reports: AtomicUsize,
}

#[derive(Default)]
struct SinkState {
    fingerprints: HashMap<String, Fingerprint>,
    events: Vec<(String, ResultFile)>,
    faults: Vec<(String, String)>,
}

impl MemorySink {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::default(),
            count: tokio::sync::watch::Sender::new(0),
            failing_reports: AtomicUsize::new(0),
        })
    }

    fn events(&self) -> Vec<(String, ResultFile)> {
        self.state.lock().unwrap().events.clone()
    }

    fn faults(&self) -> Vec<(String, String)> {
        self.state.lock().unwrap().faults.clone()
    }

    /// Reported relative paths of folder 0.
    fn paths(&self) -> BTreeSet<String> {
        self.events().into_iter().map(|(_, e)| e.path).collect()
    }

    fn event(&self, key: &str) -> ResultFile {
        let events: Vec<_> = self
            .events()
            .into_iter()
            .filter(|(k, _)| k == key)
            .collect();
        assert_eq!(
            events.len(),
            1,
            "expected one event for {key}, got {events:?}"
        );
        events[0].1.clone()
    }

    async fn wait_for_events(&self, n: usize) {
        let mut rx = self.count.subscribe();
        rx.wait_for(|count| *count >= n).await.expect("sink alive");
    }
}

impl ResultSink for MemorySink {
    fn reported(&self, key: &str) -> anyhow::Result<Option<Fingerprint>> {
        Ok(self.state.lock().unwrap().fingerprints.get(key).copied())
    }

    fn report(&self, key: &str, fingerprint: Fingerprint, event: ResultFile) -> anyhow::Result<()> {
        if self
            .failing_reports
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            anyhow::bail!("disk full");
        }
        let mut state = self.state.lock().unwrap();
        state.fingerprints.insert(key.to_owned(), fingerprint);
        state.events.push((key.to_owned(), event));
        self.count.send_replace(state.events.len());
        Ok(())
    }

    fn fault(&self, source: &str, message: &str) -> anyhow::Result<()> {
        let mut state = self.state.lock().unwrap();
        state.faults.push((source.to_owned(), message.to_owned()));
        Ok(())
    }
}

/// Follows paused tokio time, for `run` tests.
struct TokioClock {
    base: Timestamp,
    start: tokio::time::Instant,
}

impl Clock for TokioClock {
    fn now(&self) -> Timestamp {
        self.base + SignedDuration::try_from(self.start.elapsed()).unwrap()
    }
}

fn t0() -> Timestamp {
    "2026-11-22T08:00:00Z".parse().unwrap()
}

fn folder(path: &Path) -> ResultsConfig {
    ResultsConfig {
        folder: path.to_path_buf(),
        include: vec!["**/*".into()],
        exclude: vec![],
        recursive: true,
        min_age_s: 10,
        rescan_interval_s: 300,
        poll: false,
        sample_id_pattern: None,
    }
}

struct Harness {
    dir: tempfile::TempDir,
    sink: Arc<MemorySink>,
    clock: Arc<ManualClock>,
}

impl Harness {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
            sink: MemorySink::new(),
            clock: Arc::new(ManualClock::new(t0())),
        }
    }

    fn root(&self) -> &Path {
        self.dir.path()
    }

    fn write(&self, rel: &str, content: &[u8]) -> PathBuf {
        let path = self.root().join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, content).unwrap();
        path
    }

    fn append(&self, rel: &str, content: &[u8]) {
        use std::io::Write as _;
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(self.root().join(rel))
            .unwrap();
        file.write_all(content).unwrap();
    }

    fn watcher(&self, configs: &[ResultsConfig]) -> ResultWatcher {
        ResultWatcher::new(configs, self.sink.clone(), self.clock.clone()).unwrap()
    }

    fn advance(&self, secs: i64) {
        self.clock.advance(SignedDuration::from_secs(secs));
    }
}

async fn scan(w: &mut ResultWatcher) -> ScanStats {
    w.scan_once().await.expect("the sink works")
}

/// Sees every file, waits `min_age_s`, sees them again: the usual way to completion.
async fn two_checks(h: &Harness, w: &mut ResultWatcher, min_age_s: i64) -> ScanStats {
    scan(w).await;
    h.advance(min_age_s);
    scan(w).await
}

#[tokio::test]
async fn a_file_counts_only_after_two_stable_checks_and_min_age() {
    let h = Harness::new();
    h.write("fid", b"abc");
    let mut w = h.watcher(&[folder(h.root())]);

    let first = scan(&mut w).await;
    assert_eq!((first.files, first.pending, first.reported), (1, 1, 0));
    h.advance(9);
    assert_eq!(
        scan(&mut w).await.reported,
        0,
        "unchanged but only 9 s of 10"
    );
    h.advance(1);
    let done = scan(&mut w).await;
    assert_eq!((done.reported, done.pending), (1, 0));
    let event = h.sink.event("0:fid");
    assert_eq!(event.path, "fid");
    assert_eq!(event.size_bytes, 3);
    assert_eq!(event.sha256, ABC_SHA256);
}

#[tokio::test]
async fn min_age_zero_still_needs_two_checks_a_second_apart() {
    let h = Harness::new();
    h.write("fid", b"abc");
    let mut w = h.watcher(&[ResultsConfig {
        min_age_s: 0,
        ..folder(h.root())
    }]);
    assert_eq!(scan(&mut w).await.reported, 0, "one check proves nothing");
    assert_eq!(
        scan(&mut w).await.reported,
        0,
        "two checks at the same instant neither"
    );
    h.advance(1);
    assert_eq!(scan(&mut w).await.reported, 1);
}

#[tokio::test]
async fn a_file_still_growing_is_not_reported() {
    let h = Harness::new();
    h.write("fid", b"a");
    let mut w = h.watcher(&[ResultsConfig {
        min_age_s: 2,
        ..folder(h.root())
    }]);
    scan(&mut w).await;
    for more in [b"b", b"c"] {
        h.append("fid", more);
        h.advance(5);
        let stats = scan(&mut w).await;
        assert_eq!(
            (stats.reported, stats.pending),
            (0, 1),
            "grew since the last check"
        );
    }
    h.advance(5);
    assert_eq!(scan(&mut w).await.reported, 1);
    let event = h.sink.event("0:fid");
    assert_eq!((event.size_bytes, event.sha256.as_str()), (3, ABC_SHA256));
}

#[tokio::test]
async fn include_exclude_and_recursive_are_honoured() {
    let h = Harness::new();
    for rel in [
        "a.raw",
        "b.txt",
        "a.raw.part",
        "sub/c.raw",
        "sub/tmp/d.raw",
        "tmp/e.raw",
    ] {
        h.write(rel, rel.as_bytes());
    }
    let raw = ResultsConfig {
        include: vec!["**/*.raw".into()],
        exclude: vec!["**/tmp/**".into()],
        ..folder(h.root())
    };
    let cases = [
        (raw.clone(), vec!["a.raw", "sub/c.raw"]),
        (
            ResultsConfig {
                recursive: false,
                ..raw.clone()
            },
            vec!["a.raw"],
        ),
        // `*` does not cross `/`: only top-level files.
        (
            ResultsConfig {
                include: vec!["*.raw".into()],
                exclude: vec![],
                ..raw
            },
            vec!["a.raw"],
        ),
    ];
    for (config, expected) in cases {
        // A fresh sink and clock per case, over the same files.
        let sink = MemorySink::new();
        let clock = Arc::new(ManualClock::new(t0()));
        let mut w =
            ResultWatcher::new(std::slice::from_ref(&config), sink.clone(), clock.clone()).unwrap();
        scan(&mut w).await;
        clock.advance(SignedDuration::from_secs(10));
        scan(&mut w).await;
        let expected: BTreeSet<String> = expected.into_iter().map(String::from).collect();
        assert_eq!(sink.paths(), expected, "{config:?}");
    }
}

#[tokio::test]
async fn sha256_is_right_for_known_content_and_for_a_file_larger_than_the_buffer() {
    let h = Harness::new();
    h.write("abc", b"abc");
    // 1 MiB + 7 bytes: many 64 KiB reads and a short last one.
    let big: Vec<u8> = (0..1024 * 1024 + 7).map(|i| (i % 251) as u8).collect();
    h.write("big", &big);
    let mut w = h.watcher(&[folder(h.root())]);
    assert_eq!(two_checks(&h, &mut w, 10).await.reported, 2);
    assert_eq!(h.sink.event("0:abc").sha256, ABC_SHA256);
    let big_event = h.sink.event("0:big");
    assert_eq!(big_event.size_bytes, 1024 * 1024 + 7);
    // From Python's hashlib over the same bytes.
    assert_eq!(
        big_event.sha256,
        "9e037498ddbb955fba0752812031c14ba299a4875cb400e8b8c1d77b3962c90e"
    );
}

#[tokio::test]
async fn the_sample_id_comes_from_the_file_name_and_two_folders_never_collide() {
    let h = Harness::new();
    h.write("S-17_fid.raw", b"1");
    h.write("S-99/blank.raw", b"2");
    let named = ResultsConfig {
        sample_id_pattern: Some(r"S-(?P<sample>\d+)".into()),
        ..folder(h.root())
    };
    let whole = ResultsConfig {
        sample_id_pattern: Some(r"S-\d+".into()),
        ..folder(h.root())
    };
    let mut w = h.watcher(&[named, whole]);
    assert_eq!(two_checks(&h, &mut w, 10).await.reported, 4);
    assert_eq!(
        h.sink.event("0:S-17_fid.raw").sample_id.as_deref(),
        Some("17")
    );
    assert_eq!(
        h.sink.event("1:S-17_fid.raw").sample_id.as_deref(),
        Some("S-17")
    );
    // The folder name is not the file name.
    assert_eq!(h.sink.event("0:S-99/blank.raw").sample_id, None);
    assert_eq!(h.sink.event("1:S-99/blank.raw").sample_id, None);
}

#[tokio::test]
async fn a_restarted_watcher_does_not_report_again() {
    let h = Harness::new();
    h.write("run-1/fid", b"abc");
    let config = [folder(h.root())];
    let mut first = h.watcher(&config);
    assert_eq!(two_checks(&h, &mut first, 10).await.reported, 1);
    drop(first);

    let mut restarted = h.watcher(&config);
    for _ in 0..3 {
        let stats = scan(&mut restarted).await;
        assert_eq!(
            (stats.reported, stats.already_reported, stats.pending),
            (0, 1, 0)
        );
        h.advance(60);
    }
    assert_eq!(h.sink.events().len(), 1);
}

#[tokio::test]
async fn a_rewritten_file_is_reported_again() {
    let h = Harness::new();
    let path = h.write("fid", b"v1");
    let mut w = h.watcher(&[folder(h.root())]);
    assert_eq!(two_checks(&h, &mut w, 10).await.reported, 1);
    assert_eq!(scan(&mut w).await.already_reported, 1);

    // Same size, new content and mtime: a new version.
    std::fs::write(&path, b"v2").unwrap();
    let later = std::time::SystemTime::now() + Duration::from_secs(60);
    std::fs::File::options()
        .write(true)
        .open(&path)
        .unwrap()
        .set_modified(later)
        .unwrap();
    assert_eq!(two_checks(&h, &mut w, 10).await.reported, 1);
    let events = h.sink.events();
    assert_eq!(events.len(), 2);
    assert_ne!(events[0].1.sha256, events[1].1.sha256);
    assert_eq!(events[1].1.mtime, Timestamp::try_from(later).unwrap());
    assert_eq!(
        scan(&mut w).await.already_reported,
        1,
        "the new version is not reported twice"
    );
}

#[tokio::test]
async fn a_missing_folder_is_one_fault_and_its_files_are_reported_once_it_appears() {
    let h = Harness::new();
    let root = h.root().join("later");
    let mut w = h.watcher(&[folder(&root)]);
    for _ in 0..3 {
        scan(&mut w).await;
        h.advance(60);
    }
    let faults = h.sink.faults();
    assert_eq!(faults.len(), 1, "{faults:?}");
    assert_eq!(faults[0].0, format!("results:{}", root.display()));
    assert!(faults[0].1.contains("does not exist"), "{}", faults[0].1);

    h.write("later/fid", b"abc");
    assert_eq!(two_checks(&h, &mut w, 10).await.reported, 1);
    assert_eq!(h.sink.faults().len(), 1, "no new fault once it is back");

    // Vanishing again is a new problem, reported once.
    std::fs::remove_dir_all(&root).unwrap();
    scan(&mut w).await;
    scan(&mut w).await;
    assert_eq!(h.sink.faults().len(), 2);
}

#[cfg(unix)]
#[tokio::test]
async fn a_file_that_cannot_be_looked_at_is_a_fault_once_and_others_are_still_reported() {
    let h = Harness::new();
    h.write("ok.raw", b"abc");
    // A symlink loop cannot be opened, even by root.
    let looped = h.root().join("loop.raw");
    std::os::unix::fs::symlink(&looped, &looped).unwrap();
    let mut w = h.watcher(&[folder(h.root())]);
    for _ in 0..3 {
        scan(&mut w).await;
        h.advance(10);
    }
    assert_eq!(h.sink.paths(), BTreeSet::from(["ok.raw".to_owned()]));
    let faults = h.sink.faults();
    assert_eq!(faults.len(), 1, "{faults:?}");
    assert!(faults[0].1.contains("loop.raw"), "{}", faults[0].1);

    // Once gone the problem is cleared, so its return is news again.
    std::fs::remove_file(&looped).unwrap();
    scan(&mut w).await;
    std::os::unix::fs::symlink(&looped, &looped).unwrap();
    scan(&mut w).await;
    assert_eq!(h.sink.faults().len(), 2);
}

#[cfg(unix)]
#[tokio::test]
async fn an_unreadable_file_is_a_fault_once_and_others_are_still_reported() {
    use std::os::unix::fs::PermissionsExt as _;
    let h = Harness::new();
    h.write("ok.raw", b"abc");
    let secret = h.write("secret.raw", b"abc");
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o000)).unwrap();
    let blocked = std::fs::File::open(&secret).is_err();
    let mut w = h.watcher(&[folder(h.root())]);
    for _ in 0..4 {
        scan(&mut w).await;
        h.advance(10);
    }
    assert!(h.sink.paths().contains("ok.raw"));
    if blocked {
        assert!(!h.sink.paths().contains("secret.raw"));
        let faults = h.sink.faults();
        assert_eq!(faults.len(), 1, "retried, but reported once: {faults:?}");
        assert!(
            faults[0].1.contains("cannot read secret.raw"),
            "{}",
            faults[0].1
        );
    } else {
        eprintln!(
            "SKIPPED the fault assertion: running as root, where chmod 000 does not stop reads \
             (the symlink-loop test covers faults for root)"
        );
    }
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644)).unwrap();
}

#[tokio::test]
async fn when_the_sink_fails_nothing_is_lost_and_the_next_pass_reports() {
    let h = Harness::new();
    h.write("a", b"a");
    h.write("b", b"b");
    let mut w = h.watcher(&[folder(h.root())]);
    scan(&mut w).await;
    h.advance(10);
    h.sink.failing_reports.store(1, Ordering::SeqCst);
    let err = w.scan_once().await.unwrap_err();
    assert!(format!("{err:#}").contains("disk full"), "{err:#}");
    assert!(h.sink.events().is_empty());
    assert_eq!(scan(&mut w).await.reported, 2);
    let keys: BTreeMap<_, _> = h.sink.events().into_iter().collect();
    assert_eq!(keys.keys().collect::<Vec<_>>(), ["0:a", "0:b"]);
}

#[tokio::test(start_paused = true)]
async fn run_without_watcher_finds_new_files_on_the_rescan_timer() {
    let h = Harness::new();
    h.write("first", b"1");
    let clock = Arc::new(TokioClock {
        base: t0(),
        start: tokio::time::Instant::now(),
    });
    let config = ResultsConfig {
        poll: true,
        min_age_s: 5,
        rescan_interval_s: 60,
        ..folder(h.root())
    };
    let w = ResultWatcher::new(&[config], h.sink.clone(), clock).unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(w.run(async {
        stopped.await.ok();
    }));

    // Seen at the start, complete 5 s later.
    tokio::time::timeout(Duration::from_secs(6), h.sink.wait_for_events(1))
        .await
        .expect("the first file is reported once 5 s old");
    h.write("second", b"2");
    // No events with poll = true: nothing before the rescan at 60 s ...
    let early = tokio::time::timeout(Duration::from_secs(50), h.sink.wait_for_events(2)).await;
    assert!(
        early.is_err(),
        "found before the rescan: {:?}",
        h.sink.paths()
    );
    // ... then found at 60 s and reported at 65 s.
    tokio::time::timeout(Duration::from_secs(15), h.sink.wait_for_events(2))
        .await
        .expect("the second file is reported after the rescan");

    stop.send(()).unwrap();
    task.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn run_picks_up_a_folder_that_appears_later() {
    let h = Harness::new();
    let root = h.root().join("share");
    let clock = Arc::new(TokioClock {
        base: t0(),
        start: tokio::time::Instant::now(),
    });
    let config = ResultsConfig {
        min_age_s: 5,
        rescan_interval_s: 3600,
        ..folder(&root)
    };
    let w = ResultWatcher::new(&[config], h.sink.clone(), clock).unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(w.run(async {
        stopped.await.ok();
    }));
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(h.sink.faults().len(), 1);

    h.write("share/fid", b"abc");
    // Missing folders are retried every 30 s, not every rescan (1 h).
    tokio::time::timeout(Duration::from_secs(40), h.sink.wait_for_events(1))
        .await
        .expect("reported after the folder appeared");
    assert_eq!(h.sink.faults().len(), 1);
    stop.send(()).unwrap();
    task.await.unwrap();
}

/// Real file-system events, so real time: the rescan is an hour away, so
/// only the event can bring the new file in within the timeout.
#[tokio::test]
async fn run_picks_up_a_new_file_from_a_file_system_event_before_the_rescan() {
    let h = Harness::new();
    h.write("before", b"1");
    let config = ResultsConfig {
        min_age_s: 0,
        rescan_interval_s: 3600,
        ..folder(h.root())
    };
    let w = ResultWatcher::new(&[config], h.sink.clone(), Arc::new(SystemClock)).unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(w.run(async {
        stopped.await.ok();
    }));
    // Reported means the first walk ran, and the watch is set up before it.
    tokio::time::timeout(Duration::from_secs(10), h.sink.wait_for_events(1))
        .await
        .expect("the existing file is reported");

    h.write("sub/after", b"2");
    // 200 ms of event grouping + 1 s between the two checks.
    tokio::time::timeout(Duration::from_secs(5), h.sink.wait_for_events(2))
        .await
        .expect("the new file is reported from the event, long before the rescan");
    assert_eq!(
        h.sink.paths(),
        BTreeSet::from(["before".to_owned(), "sub/after".to_owned()])
    );
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("run stops on shutdown")
        .unwrap();
}
