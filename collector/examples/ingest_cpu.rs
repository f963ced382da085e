//! What verifying signed, chained envelopes costs ingest, measured as CPU
//! time rather than end-to-end rate: prebuilt envelopes of `--agents`
//! simulated agents go through the collector's own ingest path (`classify`,
//! then `ingest_loop` with its trust checks and commits into a real SQLite
//! store) on this one thread, timed by the thread's CPU clock
//! (`/proc/thread-self/schedstat`, nanoseconds; Linux). Other processes on
//! the machine change wall time, not the CPU this thread needs, so the
//! ratio holds on a busy machine. Waiting for the disk is the same in both
//! modes and is not CPU, so events per CPU-second signed / unsigned is a
//! lower bound of the end-to-end ratio.
//!   cargo run --release -p labhours-collector --example ingest_cpu -- --pairs 5

use std::time::Instant;

use anyhow::Context;
use bytes::Bytes;
use clap::Parser;
use jiff::Timestamp;
use labhours_collector::ingest::{
    Classified, Inbound, IngestOptions, IngestStats, classify, ingest_loop,
};
use labhours_collector::store::{Durability, Store};
use labhours_shared::trust::{ChainHash, Signer};
use labhours_shared::wire::{Envelope, SCHEMA_VERSION, TopicKind, Topics};

#[path = "load/envelopes.rs"]
mod envelopes;
use envelopes::{payload, summary};

#[derive(Debug, Parser)]
struct Args {
    /// Simulated agents.
    #[arg(long, default_value_t = 20)]
    agents: usize,
    /// Envelopes per agent.
    #[arg(long, default_value_t = 100)]
    envelopes: u64,
    /// Events per envelope.
    #[arg(long, default_value_t = 100)]
    batch: u64,
    /// At most this many envelopes per commit (the live ingest commits
    /// whatever arrived meanwhile; one per agent is typical under load).
    #[arg(long, default_value_t = 20)]
    per_commit: usize,
    /// Pairs of runs, unsigned (v1) and signed, the order alternating.
    #[arg(long, default_value_t = 5)]
    pairs: usize,
    /// SQLite synchronous setting for the commits: full (the collector's
    /// own) or normal.
    #[arg(long, default_value = "full")]
    durability: String,
}

/// This thread's CPU time so far, in nanoseconds.
fn thread_cpu_ns() -> anyhow::Result<u64> {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat")
        .context("/proc/thread-self/schedstat (Linux only)")?;
    text.split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .context("schedstat's first field")
}

/// One run's figures.
struct Run {
    events: u64,
    cpu_s: f64,
    wall_s: f64,
}

/// Builds every payload first (not timed), then times ingest over them.
fn run(args: &Args, signed: bool, durability: Durability) -> anyhow::Result<Run> {
    let dir = tempfile::tempdir()?;
    let mut store = Store::open(dir.path(), durability)?;
    store.set_trust_policy(labhours_collector::config::TrustConfig::default().policy());
    let topics = Topics::new("labhours");
    let at = Timestamp::now();
    let mut inbound = Vec::new();
    for index in 0..args.agents {
        let agent_id = format!("load-{index:05}");
        let signer = if signed {
            let signer = Signer::from_pkcs8(&Signer::generate_pkcs8()?)?;
            labhours_collector::trust::enrol(
                store.connection(),
                &agent_id,
                &signer.public_key(),
                at,
            )?;
            Some(signer)
        } else {
            None
        };
        let mut head: ChainHash = [0; 32];
        for n in 0..args.envelopes {
            let first = n * args.batch + 1;
            let envelope = Envelope {
                v: SCHEMA_VERSION,
                agent_id: agent_id.clone(),
                instrument_id: format!("inst-{index:05}"),
                sent_at: at,
                acked_through: first - 1,
                events: (first..first + args.batch)
                    .map(|s| summary(s, at))
                    .collect(),
            };
            let mode = if signed { "signed" } else { "v1" };
            let bytes = payload(&envelope, &mut head, mode, signer.as_ref())?;
            inbound.push((
                n,
                index,
                Inbound {
                    topic: topics.topic(&agent_id, TopicKind::Events),
                    payload: Bytes::from(bytes),
                    received_at: at,
                },
            ));
        }
    }
    // Agents interleave as they would on the wire.
    inbound.sort_by_key(|(n, index, _)| (*n, *index));
    let options = IngestOptions {
        durability,
        max_batch_messages: args.per_commit,
        ..IngestOptions::default()
    };
    let (tx, rx) = tokio::sync::mpsc::channel(inbound.len().max(1));
    let (acks, _acks) = tokio::sync::mpsc::unbounded_channel();
    let stats = IngestStats::default();
    let (cpu0, wall0) = (thread_cpu_ns()?, Instant::now());
    for (_, _, msg) in &inbound {
        let classified = classify(&topics, options.max_payload_bytes, msg);
        anyhow::ensure!(
            matches!(classified, Classified::Envelope(_)),
            "a benchmark envelope was refused: {classified:?}"
        );
        tx.try_send(classified).context("queue")?;
    }
    drop(tx);
    ingest_loop(store, &topics, &options, rx, acks, &stats);
    let (cpu, wall) = (thread_cpu_ns()? - cpu0, wall0.elapsed());
    let counts = stats.snapshot();
    let expected = args.agents as u64 * args.envelopes * args.batch;
    anyhow::ensure!(
        counts.events_stored == expected && counts.quarantined == 0,
        "stored {} of {expected} events, {} quarantined",
        counts.events_stored,
        counts.quarantined
    );
    Ok(Run {
        events: expected,
        cpu_s: cpu as f64 / 1e9,
        wall_s: wall.as_secs_f64(),
    })
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let durability = match args.durability.as_str() {
        "full" => Durability::Full,
        "normal" => Durability::Normal,
        other => anyhow::bail!("--durability {other}: use full or normal"),
    };
    let mut ratios = Vec::new();
    for pair in 0..args.pairs {
        let order = if pair % 2 == 0 {
            [false, true]
        } else {
            [true, false]
        };
        let mut rate = [0.0; 2];
        for signed in order {
            let r = run(&args, signed, durability)?;
            let per_cpu = r.events as f64 / r.cpu_s;
            println!(
                "{:>8}: {} events, CPU {:.3} s = {:.0} events/CPU-s, wall {:.3} s = {:.0} events/s",
                if signed { "signed" } else { "unsigned" },
                r.events,
                r.cpu_s,
                per_cpu,
                r.wall_s,
                r.events as f64 / r.wall_s
            );
            rate[usize::from(signed)] = per_cpu;
        }
        ratios.push(rate[1] / rate[0]);
        println!(
            "pair {}: signed / unsigned = {:.1} %",
            pair + 1,
            100.0 * rate[1] / rate[0]
        );
    }
    ratios.sort_by(f64::total_cmp);
    println!(
        "median of {} pairs: signed ingest runs at {:.1} % of the unsigned rate per CPU-second (min {:.1} %, max {:.1} %)",
        ratios.len(),
        100.0 * ratios[ratios.len() / 2],
        100.0 * ratios[0],
        100.0 * ratios[ratios.len() - 1]
    );
    Ok(())
}
