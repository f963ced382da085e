//! Throughput of the state engine: samples per second through `push`.
//!
//! Run: `cargo bench -p labhours-shared --bench state_engine`.
//! The input is a day-like profile at 1 Hz: standby, runs above the running
//! threshold with noise, failed reads now and then, and a status line every
//! few minutes, so every code path is exercised.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use jiff::Timestamp;
use labhours_shared::state::{EngineSettings, Output, Reading, State, StateEngine, StateRules};

const SAMPLES: usize = 1_000_000;
const T0_MS: i64 = 1_795_000_020_000;

fn profile() -> Vec<Reading> {
    let mut rng: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        // xorshift: deterministic noise without a dependency
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    (0..SAMPLES)
        .map(|i| {
            let at = Timestamp::from_millisecond(T0_MS + i as i64 * 1000).expect("in range");
            let noise = (next() % 100) as f64 / 10.0;
            if i % 600 == 599 {
                let state = if (i / 600) % 3 == 0 {
                    State::Running
                } else {
                    State::Standby
                };
                return Reading::status(at, state);
            }
            let watts = match (i / 1800) % 4 {
                _ if next() % 500 == 0 => None,
                0 => Some(40.0 + noise),
                1 | 2 => Some(1500.0 + noise * 10.0),
                _ => Some(3.0 + noise / 10.0),
            };
            Reading::power(at, watts)
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let readings = profile();
    let settings = EngineSettings::new(&StateRules::with_thresholds(10.0, 1000.0), 1000);
    let start = readings[0].at();
    let mut group = c.benchmark_group("state_engine");
    group.throughput(Throughput::Elements(SAMPLES as u64));
    group.sample_size(10);
    group.bench_function("push_1M_samples", |b| {
        let mut out: Vec<Output> = Vec::with_capacity(64 * 1024);
        b.iter(|| {
            out.clear();
            let mut engine = StateEngine::new(settings, start);
            engine.push_all(readings.iter().cloned(), &mut out);
            black_box(out.len())
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
