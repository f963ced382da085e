//! Throughput of the durable outbox: events per second through `append` and
//! `ack_through`, with the default durability (`[outbox]` defaults: 256 MiB
//! cap, summaries flushed by sled every 1000 ms, 1 MiB cache).
//!
//! Run: `cargo bench -p labhours-agent --bench outbox`.
//!
//! Cases:
//! - `summaries_1_per_call`: the common live case. One summary per `append`
//!   (no fsync: sled's background flusher makes them durable), acknowledged
//!   every 100 events as a collector would.
//! - `transitions_batch_100`: replay / backfill. 100 transitions per
//!   `append_at`, so one fsync per 100 events, acknowledged per batch.
//! - `transitions_1_per_call`: the worst case, not the target. Every
//!   transition is fsynced before `append` returns, so this is bounded by the
//!   disk's fsync rate.
//!
//! The database lives under `target/tmp` (`CARGO_TARGET_TMPDIR`), i.e. on the
//! same disk as the worktree, never on a tmpfs that would make fsync free.
//! `LABHOURS_BENCH_DIR` overrides the location.

use std::hint::black_box;
use std::path::PathBuf;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use jiff::Timestamp;
use labhours_agent::config::OutboxConfig;
use labhours_agent::outbox::Outbox;
use labhours_shared::state::State;
use labhours_shared::wire::{EventKind, Summary, TransitionSource};

const T0_S: i64 = 1_795_000_020;

/// Where the benchmark databases live: on the worktree's disk.
fn bench_root() -> PathBuf {
    let root = std::env::var_os("LABHOURS_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")));
    std::fs::create_dir_all(&root).expect("bench dir");
    root
}

fn open() -> (tempfile::TempDir, Outbox) {
    let dir = tempfile::tempdir_in(bench_root()).expect("temp dir");
    let (outbox, _) = Outbox::open(
        dir.path(),
        (&OutboxConfig::default()).into(),
        Timestamp::from_second(T0_S).expect("in range"),
    )
    .expect("open outbox");
    (dir, outbox)
}

fn at(i: u64) -> Timestamp {
    Timestamp::from_second(T0_S + i as i64).expect("in range")
}

/// A one-minute summary as the engine writes it (about 230 bytes of JSON).
fn summary(i: u64) -> EventKind {
    let w = 1500.0 + (i % 97) as f64 * 0.37;
    EventKind::Summary(Summary {
        end: at(i * 60 + 60),
        samples: 60,
        failed_reads: 0,
        min_w: Some(w - 12.5),
        avg_w: Some(w),
        max_w: Some(w + 17.25),
        energy_wh: w / 60.0,
        covered_s: 60.0,
        avg_v: Some(230.1),
        avg_a: Some(w / 230.1),
    })
}

fn transition(i: u64) -> EventKind {
    let (from, to) = if i.is_multiple_of(2) {
        (State::Standby, State::Running)
    } else {
        (State::Running, State::Standby)
    };
    EventKind::Transition {
        from,
        to,
        source: TransitionSource::Power,
        reason: "power 1523.4 W >= running_above_w 600 W".into(),
    }
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("outbox");
    group.sample_size(10);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(5));

    // (a) Live: one summary per append, acked every 100.
    {
        const EVENTS: u64 = 10_000;
        const ACK_EVERY: u64 = 100;
        let (_dir, outbox) = open();
        let mut i = 0u64;
        group.throughput(Throughput::Elements(EVENTS));
        group.bench_function("summaries_1_per_call_ack_100", |b| {
            b.iter(|| {
                for n in 1..=EVENTS {
                    let seqs = outbox.append(at(i), vec![summary(i)]).expect("append");
                    i += 1;
                    if n.is_multiple_of(ACK_EVERY) {
                        black_box(outbox.ack_through(seqs[0]).expect("ack"));
                    }
                }
            })
        });
        assert_eq!(outbox.backlog(), 0, "every summary acknowledged");
    }

    // (b) Replay / backfill: 100 transitions per append (one fsync), acked per batch.
    {
        const BATCHES: u64 = 20;
        const BATCH: u64 = 100;
        let (_dir, outbox) = open();
        let mut i = 0u64;
        group.throughput(Throughput::Elements(BATCHES * BATCH));
        group.bench_function("transitions_batch_100", |b| {
            b.iter(|| {
                for _ in 0..BATCHES {
                    let batch: Vec<_> =
                        (0..BATCH).map(|k| (at(i + k), transition(i + k))).collect();
                    i += BATCH;
                    let seqs = outbox.append_at(batch).expect("append");
                    black_box(outbox.ack_through(seqs[seqs.len() - 1]).expect("ack"));
                }
            })
        });
    }

    // (c) Worst case: one transition per append, each fsynced; acked every 100.
    {
        const EVENTS: u64 = 200;
        let (_dir, outbox) = open();
        let mut i = 0u64;
        group.throughput(Throughput::Elements(EVENTS));
        group.bench_function("transitions_1_per_call", |b| {
            b.iter(|| {
                for n in 1..=EVENTS {
                    let seqs = outbox.append(at(i), vec![transition(i)]).expect("append");
                    i += 1;
                    if n.is_multiple_of(100) {
                        black_box(outbox.ack_through(seqs[0]).expect("ack"));
                    }
                }
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
