//! Crash test: a child process appends to the outbox and is killed (SIGKILL)
//! at a random moment, again and again on the same directory. After every
//! kill, every event whose append returned (summaries included) must still
//! be there (or acknowledged), no seq may ever be handed out twice, and the
//! hash chain continues unbroken (every record keeps its hash).
//!
//! `LABHOURS_CRASH_CYCLES` sets the number of kills (default 100);
//! `LABHOURS_CRASH_SEED` replays a run. `scripts/outbox-crash-soak.sh` runs
//! many more.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use labhours_agent::outbox::{Outbox, OutboxSettings};
use labhours_shared::state::State;
use labhours_shared::trust::{ChainHash, chain_hash};
use labhours_shared::wire::{EventKind, Summary, TransitionSource};

const CHILD_DIR: &str = "LABHOURS_CRASH_CHILD_DIR";

fn settings() -> OutboxSettings {
    OutboxSettings {
        max_bytes: 64 * 1024 * 1024,
        summary_flush_ms: 1000,
        cache_bytes: 1024 * 1024,
        min_free_bytes: 0,
    }
}

fn open(dir: &Path) -> Outbox {
    Outbox::open(dir, settings(), Timestamp::now())
        .expect("outbox opens after a kill")
        .0
}

/// Deterministic noise for the schedule (xorshift64).
struct Rng(u64);
impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// The child: appends forever, printing what is durable; killed by the parent.
#[test]
#[ignore = "child process of outbox_survives_being_killed_at_random_points"]
fn crash_child() {
    let dir = std::env::var(CHILD_DIR).expect("run by the crash test");
    let outbox = open(Path::new(&dir));
    println!("ready next={}", outbox.next_seq());
    let mut rng = Rng(outbox.next_seq() | 1);
    loop {
        let n = 1 + rng.below(8) as usize;
        // Some batches are summaries only: they must be as durable as the rest.
        let offset = rng.below(3) as usize;
        let kinds: Vec<EventKind> = (0..n)
            .map(|i| {
                if (i + offset).is_multiple_of(3) {
                    EventKind::Transition {
                        from: State::Standby,
                        to: State::Running,
                        source: TransitionSource::Power,
                        reason: "crash test".into(),
                    }
                } else {
                    EventKind::Summary(Summary {
                        end: Timestamp::now(),
                        samples: 1,
                        failed_reads: 0,
                        min_w: Some(1.0),
                        avg_w: Some(1.0),
                        max_w: Some(1.0),
                        energy_wh: 1.0,
                        covered_s: 1.0,
                        avg_v: None,
                        avg_a: None,
                    })
                }
            })
            .collect();
        let seqs = outbox.append(Timestamp::now(), kinds).expect("append");
        // Whatever the batch holds, append flushed it before returning.
        println!("durable {} {}", seqs[0], seqs[seqs.len() - 1]);
        if rng.below(10) == 0 {
            let through = seqs[0].saturating_sub(1 + rng.below(20));
            outbox.ack_through(through).expect("ack");
            println!("acked {through}");
        }
    }
}

#[test]
fn outbox_survives_being_killed_at_random_points() {
    let cycles: u32 = std::env::var("LABHOURS_CRASH_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let seed: u64 = std::env::var("LABHOURS_CRASH_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| Timestamp::now().as_nanosecond() as u64 | 1);
    eprintln!("crash test: {cycles} cycles, LABHOURS_CRASH_SEED={seed}");
    let mut rng = Rng(seed);
    let dir = tempfile::tempdir().expect("temp dir");
    let exe = std::env::current_exe().expect("test binary path");

    let mut durable: BTreeSet<u64> = BTreeSet::new();
    let mut max_issued = 0u64;
    let mut total_events = 0u64;
    let mut hashes: std::collections::BTreeMap<u64, ChainHash> = Default::default();

    for cycle in 0..cycles {
        let mut child = Command::new(&exe)
            .args([
                "crash_child",
                "--exact",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_DIR, dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("child starts");
        let stdout = child.stdout.take().expect("piped");
        let (tx, rx) = mpsc::channel::<String>();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        // Wait for the child to open the outbox, then let it run a random while.
        // (The test harness prints its own lines first.)
        let next: u64 = loop {
            let line = rx
                .recv_timeout(Duration::from_secs(30))
                .expect("child says ready");
            if let Some((_, n)) = line.split_once("ready next=") {
                break n.trim().parse().expect("a seq");
            }
        };
        assert!(
            next > max_issued,
            "cycle {cycle}: next seq {next} reuses a seq (max issued {max_issued})"
        );
        let run_for = Duration::from_millis(1 + rng.below(40));
        let deadline = Instant::now() + run_for;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match rx.recv_timeout(left) {
                Ok(line) => record(&line, &mut durable, &mut max_issued, &mut total_events),
                Err(_) => break,
            }
        }
        child.kill().expect("kill");
        child.wait().expect("reaped");
        // Lines already written before the kill still count.
        reader.join().expect("reader");
        for line in rx.try_iter() {
            record(&line, &mut durable, &mut max_issued, &mut total_events);
        }

        let outbox = open(dir.path());
        let records = outbox
            .pending_raw(0, usize::MAX, usize::MAX)
            .expect("readable after a kill, every record with its chain hash");
        // The chain survives the kill: each record's prev is the hash of the
        // seq before it as first seen (in this cycle or an earlier one), a
        // seq's hash never changes, and the head is the newest seq's hash.
        for r in &records {
            if let Some(before) = hashes.get(&(r.seq - 1)) {
                assert_eq!(
                    &r.prev, before,
                    "cycle {cycle}: seq {} does not continue the chain (seed {seed})",
                    r.seq
                );
            }
            let h = chain_hash(&r.prev, r.json.as_bytes());
            assert_eq!(
                *hashes.entry(r.seq).or_insert(h),
                h,
                "cycle {cycle}: the hash of seq {} changed (seed {seed})",
                r.seq
            );
        }
        if let Some(last) = records.last().filter(|r| r.seq + 1 == outbox.next_seq()) {
            assert_eq!(
                outbox.chain_head(),
                hashes[&last.seq],
                "cycle {cycle}: head"
            );
        }
        let pending: BTreeSet<u64> = records.iter().map(|e| e.seq).collect();
        for seq in &durable {
            assert!(
                pending.contains(seq),
                "cycle {cycle}: durable seq {seq} is gone (seed {seed})"
            );
        }
        assert!(
            outbox.next_seq() > max_issued,
            "cycle {cycle}: next seq {} would reuse {max_issued} (seed {seed})",
            outbox.next_seq()
        );
    }
    eprintln!("crash test: {total_events} events durable across {cycles} kills");
    assert!(total_events > 0, "the child never got to append");
}

fn record(line: &str, durable: &mut BTreeSet<u64>, max: &mut u64, total: &mut u64) {
    let mut words = line.split_whitespace();
    match words.next() {
        Some("durable") => {
            let first: u64 = words
                .next()
                .and_then(|w| w.parse().ok())
                .expect("first seq");
            let last: u64 = words.next().and_then(|w| w.parse().ok()).expect("last seq");
            assert!(first > *max, "seq {first} issued twice");
            durable.extend(first..=last);
            *total += last - first + 1;
            *max = last;
        }
        Some("acked") => {
            let through: u64 = words.next().and_then(|w| w.parse().ok()).expect("ack");
            // Acknowledged events may go; an unflushed ack may also bring them
            // back after a kill, which is fine (the collector ignores duplicates).
            durable.retain(|&s| s > through);
        }
        _ => {}
    }
}
