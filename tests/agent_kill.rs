//! The promise under SIGKILL: a live agent — the agent's own `run()`, in a
//! child process — polls a Modbus meter simulator whose power keeps
//! changing (transitions, one-second summaries), watches a folder the test
//! keeps writing result files into, sends heartbeats every second and
//! publishes through the collector's embedded broker to the real collector.
//! The test SIGKILLs the agent at a random moment 0.2–1.5 s after each
//! start, again and again on the same data dir; then it drains the outbox
//! and counts against what the collector stored:
//!
//! - no seq reused: no `agent_id conflict` in the quarantine;
//! - no event lost: the stored seqs are exactly `1..next_seq` (a hole would
//!   be an event that left the machine and never arrived, or a seq given
//!   twice and quarantined);
//! - every result file written is reported exactly once;
//! - the agent signs (`[signing]`, its key enrolled): every event is stored
//!   signed, and its hash chain, recomputed from seq 1 over the stored
//!   bytes, is unbroken (no fork, no anchor taken on trust, no trust refusal).
//!
//! `LABHOURS_KILL_CYCLES` sets the number of kills (default 25, what CI
//! runs; `scripts/agent-kill-soak.sh` runs 1,000); `LABHOURS_KILL_SEED`
//! replays a schedule.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

use labhours_agent::config::MeterModel;
use labhours_tests::live_agent::{self, wait_until};
use labhours_tests::modbus_sim::{Sim, SimUnit, TcpSim};

const AGENT: &str = "kill-agent";

/// The child: the real agent until it is killed.
#[test]
#[ignore = "child process of a_live_agent_killed_at_random_loses_and_reuses_nothing"]
fn kill_child() {
    live_agent::run_child();
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_agent_killed_at_random_loses_and_reuses_nothing() {
    let cycles: u32 = std::env::var("LABHOURS_KILL_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(25);
    let seed: u64 = std::env::var("LABHOURS_KILL_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| jiff::Timestamp::now().as_nanosecond() as u64 | 1);
    eprintln!("agent kill test: {cycles} cycles, LABHOURS_KILL_SEED={seed}");
    let mut rng = Rng(seed);
    let dir = tempfile::tempdir().expect("temp dir");
    let data_dir = dir.path().join("collector");
    std::fs::create_dir_all(dir.path().join("results")).expect("results folder");

    // The agent's key, enrolled before the collector starts.
    let key_path = dir.path().join("agent.key");
    let signer = std::sync::Arc::new(
        labhours_shared::trust::key_file::generate(&key_path).expect("agent key"),
    );
    live_agent::enrol(&data_dir, AGENT, &signer.public_key());
    let collector = live_agent::start_collector(&data_dir).await;
    let mqtt_port = collector.broker_addr().expect("embedded broker").port();

    let sim = Sim::new().with_unit(
        1,
        SimUnit::preset(MeterModel::Sdm120).reading(50.0, 230.0, 0.2, 1.0),
    );
    let meter = TcpSim::start(sim.clone()).await.expect("simulator");
    let config_path = dir.path().join("agent.toml");
    let toml = live_agent::agent_toml(
        (AGENT, "kill-nmr"),
        &dir.path().join("agent"),
        &dir.path().join("results"),
        meter.addr(),
        mqtt_port,
        // Widens the window the old outbox left open (summaries published
        // before they were flushed): the old code fails this test at once.
        &format!(
            "[outbox]\n        summary_flush_ms = 5000\n        [signing]\n        key_file = {key_path:?}"
        ),
    );
    std::fs::write(&config_path, toml).expect("agent config");

    let mut files_written = BTreeSet::new();
    let mut file_no = 0u32;
    for cycle in 0..cycles {
        let mut child = live_agent::spawn("kill_child", &config_path);
        let run_for = Duration::from_millis(200 + rng.below(1300));
        let until = Instant::now() + run_for;
        // Mixed traffic while it runs: power flips (transitions), a result file now and then.
        while Instant::now() < until {
            let watts = if rng.below(2) == 0 { 50.0 } else { 500.0 };
            sim.update(1, |u| u.watts = watts);
            if rng.below(3) == 0 {
                file_no += 1;
                let name = format!("run-{file_no:05}.dat");
                std::fs::write(dir.path().join("results").join(&name), name.as_bytes())
                    .expect("result file");
                files_written.insert(name);
            }
            tokio::time::sleep(Duration::from_millis(50 + rng.below(150))).await;
        }
        child.kill();
        if cycle % 10 == 9 {
            eprintln!("agent kill test: {} kills", cycle + 1);
        }
    }

    // One last clean run so that the files written after the last kill are
    // reported, then the outbox is drained by the same delivery code.
    let mut child = live_agent::spawn("kill_child", &config_path);
    let outbox_dir = dir.path().join("agent");
    wait_until(
        Duration::from_secs(30),
        "every result file reported",
        || result_files(&data_dir).len() >= files_written.len(),
    )
    .await;
    child.kill();
    let next_seq =
        live_agent::drain_signed(&outbox_dir, AGENT, "kill-nmr", mqtt_port, Some(signer)).await;
    let (stored, conflicts) = live_agent::stored(&data_dir, AGENT);
    let expected: Vec<u64> = (1..next_seq).collect();
    let missing: Vec<u64> = expected
        .iter()
        .filter(|s| stored.binary_search(s).is_err())
        .copied()
        .take(20)
        .collect();
    let reported = result_files(&data_dir);
    let twice: Vec<_> = reported.iter().filter(|(_, n)| **n > 1).collect();
    let unreported: Vec<_> = files_written
        .iter()
        .filter(|f| !reported.contains_key(*f))
        .collect();
    eprintln!(
        "agent kill test: {cycles} kills, {} events stored, {} result files, {conflicts} seqs reused, {} seqs missing",
        stored.len(),
        files_written.len(),
        missing.len()
    );
    assert_eq!(conflicts, 0, "a seq was given twice (seed {seed})");
    assert!(
        missing.is_empty(),
        "events lost: seqs {missing:?} never stored (seed {seed})"
    );
    assert_eq!(stored, expected, "every seq once (seed {seed})");
    assert!(twice.is_empty(), "result files reported twice: {twice:?}");
    assert!(
        unreported.is_empty(),
        "result files never reported: {unreported:?}"
    );
    assert!(stored.len() as u32 > cycles, "the agent got to publish");
    let chained = live_agent::assert_chain_unbroken(&data_dir, AGENT);
    assert_eq!(chained, stored.len());
    let refusals = live_agent::trust_refusals(&data_dir);
    assert!(refusals.is_empty(), "trust refusals: {refusals:?}");
    collector.shutdown().await.expect("collector stops");
}

/// Result files the collector stored, by path, with how often each came.
fn result_files(data_dir: &Path) -> BTreeMap<String, u32> {
    let mut out = BTreeMap::new();
    for value in live_agent::payloads(data_dir, AGENT, "result_file") {
        if let Some(path) = value["path"].as_str() {
            *out.entry(path.to_owned()).or_insert(0) += 1;
        }
    }
    out
}
