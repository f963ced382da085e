//! A graceful stop loses nothing: a live agent — run as the binary's `run`
//! runs it (logger, runtime, SIGTERM handler, systemd readiness), in a child
//! process — is started and stopped with SIGTERM 100 times on the same data
//! dir while a Modbus simulator's power keeps changing and result files keep
//! arriving, publishing through the collector's embedded broker to the real
//! collector. Like systemd, the test hands the child a NOTIFY_SOCKET and
//! sends SIGTERM only after READY=1. Each stop must end the process cleanly
//! (exit 0 within 15 s, STOPPING=1 sent). Then the outbox is drained and
//! the collector must hold:
//!
//! - every seq `1..next_seq` exactly once, no `agent_id conflict`;
//! - every result file written, reported exactly once;
//! - transitions that chain (each starts where the previous ended): a stop
//!   in a known state is recorded as "data ends (agent stopped)", since
//!   every run starts in `unknown` (a stop while a meter read had failed,
//!   already `unknown`, records nothing).
//!
//! `LABHOURS_SIGTERM_CYCLES` sets the number of stops (default 100);
//! `LABHOURS_SIGTERM_SEED` replays a schedule.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use labhours_tests::live_agent::{self, AgentProcess, Delivered, Rig, Rng, wait_until};
use tokio::net::UnixDatagram;

const AGENT: &str = "sigterm-agent";
const INSTRUMENT: &str = "sigterm-xrd";

/// The child: the agent as `labhours-agent run` runs it, until SIGTERM.
#[test]
#[ignore = "child process of sigterm_100_times_under_load_loses_and_duplicates_nothing"]
fn sigterm_child() {
    live_agent::run_child_until_signal();
}

/// The notify socket's messages, as systemd would read them.
struct Notify {
    socket: UnixDatagram,
    stopping: u32,
}

impl Notify {
    /// Waits (at most 30 s) for READY=1, counting STOPPING=1 on the way.
    async fn ready(&mut self) {
        let mut buf = [0u8; 512];
        let deadline = Duration::from_secs(30);
        loop {
            let n = tokio::time::timeout(deadline, self.socket.recv(&mut buf))
                .await
                .expect("READY=1 within 30 s of the start")
                .expect("notify socket");
            let message = String::from_utf8_lossy(&buf[..n]);
            if message.lines().any(|l| l == "STOPPING=1") {
                self.stopping += 1;
            }
            if message.lines().any(|l| l == "READY=1") {
                return;
            }
        }
    }

    /// Counts the STOPPING=1 already received (the process has exited).
    fn count_stopping(&mut self) {
        let mut buf = [0u8; 512];
        while let Ok(n) = self.socket.try_recv(&mut buf) {
            if String::from_utf8_lossy(&buf[..n])
                .lines()
                .any(|l| l == "STOPPING=1")
            {
                self.stopping += 1;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_100_times_under_load_loses_and_duplicates_nothing() {
    let cycles: u32 = std::env::var("LABHOURS_SIGTERM_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let seed: u64 = std::env::var("LABHOURS_SIGTERM_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| jiff::Timestamp::now().as_nanosecond() as u64 | 1);
    eprintln!("agent SIGTERM test: {cycles} cycles, LABHOURS_SIGTERM_SEED={seed}");
    let started = Instant::now();
    let mut rng = Rng(seed);
    let dir = tempfile::tempdir().expect("temp dir");
    let rig = Rig::start(
        dir.path(),
        (AGENT, INSTRUMENT),
        "[log]\n        level = \"warn\"",
    )
    .await;
    let (data_dir, results, config_path) = (&rig.data_dir, &rig.results, &rig.config_path);
    let socket_path = dir.path().join("notify.sock");
    let mut notify = Notify {
        socket: UnixDatagram::bind(&socket_path).expect("notify socket"),
        stopping: 0,
    };
    let start = || {
        live_agent::spawn_with_env(
            "sigterm_child",
            config_path,
            &[("NOTIFY_SOCKET", socket_path.as_os_str())],
        )
    };

    let mut files_written = BTreeSet::new();
    let mut file_no = 0u32;
    let mut longest_stop = Duration::ZERO;
    for cycle in 0..cycles {
        let mut child = start();
        notify.ready().await;
        let run_for = Duration::from_millis(200 + rng.below(600));
        let until = Instant::now() + run_for;
        // Mixed traffic while it runs: power flips (transitions), result files.
        while Instant::now() < until {
            let watts = if rng.below(2) == 0 { 50.0 } else { 500.0 };
            rig.sim.update(1, |u| u.watts = watts);
            if rng.below(2) == 0 {
                file_no += 1;
                let name = format!("run-{file_no:05}.dat");
                std::fs::write(results.join(&name), name.as_bytes()).expect("result file");
                files_written.insert(name);
            }
            tokio::time::sleep(Duration::from_millis(30 + rng.below(100))).await;
        }
        longest_stop = longest_stop.max(stop(&mut child, cycle).await);
        notify.count_stopping();
        if cycle % 20 == 19 {
            eprintln!(
                "agent SIGTERM test: {} stops, {:.0} s",
                cycle + 1,
                started.elapsed().as_secs_f64()
            );
        }
    }

    // One last run until every result file is reported, stopped the same way;
    // then what is still unacknowledged is drained by the same delivery code.
    let mut child = start();
    notify.ready().await;
    wait_until(
        Duration::from_secs(30),
        "every result file reported",
        || live_agent::result_files(data_dir, AGENT).len() >= files_written.len(),
    )
    .await;
    stop(&mut child, cycles).await;
    notify.count_stopping();
    let stops = cycles + 1;
    let next_seq = live_agent::drain(&rig.outbox, AGENT, INSTRUMENT, rig.mqtt_port).await;

    let delivered = Delivered::count(data_dir, AGENT, next_seq, &files_written);
    // Each run starts in `unknown`; a stop in a known state must record the
    // change to `unknown`, or the next run's first transition would not
    // start where the last one ended.
    let transitions = live_agent::payloads(data_dir, AGENT, "transition");
    let breaks: Vec<String> = transitions
        .windows(2)
        .filter(|w| w[1]["from"] != w[0]["to"])
        .map(|w| format!("{} then {}", w[0], w[1]))
        .take(5)
        .collect();
    let stopped_transitions = transitions
        .iter()
        .filter(|t| t["reason"] == "data ends (agent stopped)")
        .count();
    eprintln!(
        "agent SIGTERM test: {stops} stops in {:.1} s (longest stop {} ms), {} events stored for seqs 1..{next_seq}, {} missing, {} conflicts, {} result files ({} reported twice, {} unreported), {stopped_transitions} 'agent stopped' transitions, {} STOPPING=1",
        started.elapsed().as_secs_f64(),
        longest_stop.as_millis(),
        delivered.stored.len(),
        delivered.missing.len(),
        delivered.conflicts,
        files_written.len(),
        delivered.files_reported_twice.len(),
        delivered.files_unreported.len(),
        notify.stopping,
    );
    delivered.assert_exactly_once(seed);
    assert!(
        breaks.is_empty(),
        "a stop was not recorded (seed {seed}): {breaks:?}"
    );
    assert_eq!(
        transitions.last().map(|t| t["to"].clone()),
        Some("unknown".into()),
        "the last stop recorded"
    );
    assert!(
        stopped_transitions > stops as usize / 2,
        "most stops happen in a known state"
    );
    assert_eq!(notify.stopping, stops, "STOPPING=1 at every stop");
    assert!(
        delivered.stored.len() as u32 > 5 * cycles,
        "the agent got to publish"
    );
    rig.collector.shutdown().await.expect("collector stops");
}

/// SIGTERM; the process must exit with status 0 within 15 s. How long it took.
async fn stop(child: &mut AgentProcess, cycle: u32) -> Duration {
    let asked = Instant::now();
    let exit = child.terminate(Duration::from_secs(15)).await;
    assert!(
        exit.success(),
        "stop {}: the agent did not stop cleanly on SIGTERM: {exit}",
        cycle + 1
    );
    asked.elapsed()
}
