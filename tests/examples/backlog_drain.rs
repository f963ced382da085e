//! How long one agent takes to drain a large backlog into the collector,
//! end to end (outbox → MQTT → embedded broker → SQLite commit → ack →
//! outbox delete). Target: 1,000,000 events in ≤ 60 s.
//!
//! `cargo run --release -p labhours-tests --example backlog_drain [-- EVENTS]`

use std::sync::Arc;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use labhours_agent::clock::SystemClock;
use labhours_agent::config::MqttConfig;
use labhours_agent::delivery::Delivery;
use labhours_agent::outbox::{Outbox, OutboxSettings};
use labhours_collector::app;
use labhours_collector::config::CollectorConfig;
use labhours_collector::ingest::IngestOptions;
use labhours_shared::wire::{EventKind, Summary};
use labhours_tests::brokers::free_port;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let events: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let dir = tempfile::tempdir_in(env!("CARGO_MANIFEST_DIR"))?;
    let settings = OutboxSettings {
        max_bytes: 4 << 30,
        summary_flush_ms: 1000,
        cache_bytes: 1 << 20,
        min_free_bytes: 0,
    };
    let (outbox, _) = Outbox::open(&dir.path().join("agent"), settings, Timestamp::now())?;
    let filling = Instant::now();
    let at = Timestamp::now();
    let mut left = events;
    while left > 0 {
        let n = left.min(10_000);
        let kinds = (0..n).map(|i| summary(i as f64)).collect();
        outbox.append(at, kinds)?;
        left -= n;
    }
    outbox.flush()?;
    println!(
        "backlog: {events} summaries appended in {:.1} s",
        filling.elapsed().as_secs_f64()
    );

    let port = free_port();
    let mut config = CollectorConfig {
        data_dir: dir.path().join("collector"),
        ..CollectorConfig::default()
    };
    config.http.listen = ([127, 0, 0, 1], 0).into();
    config.mqtt.embedded_listen = ([127, 0, 0, 1], port).into();
    let collector = app::start(config, IngestOptions::default()).await?;
    tokio::time::timeout(Duration::from_secs(10), collector.subscribed()).await?;

    let mqtt = MqttConfig {
        host: "127.0.0.1".into(),
        port,
        ..MqttConfig::default()
    };
    let delivery = Delivery::new(
        &mqtt,
        "drain-agent",
        "instrument-1",
        outbox.clone(),
        Arc::new(SystemClock),
    )?;
    let stop = tokio_util::sync::CancellationToken::new();
    let started = Instant::now();
    let task = tokio::spawn(delivery.run(stop.clone().cancelled_owned()));
    while outbox.backlog() > 0 {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let took = started.elapsed().as_secs_f64();
    println!(
        "drained {events} events in {took:.1} s ({:.0} events/s end to end, committed then acknowledged)",
        events as f64 / took
    );
    stop.cancel();
    task.await?;
    collector.shutdown().await?;
    Ok(())
}

fn summary(w: f64) -> EventKind {
    EventKind::Summary(Summary {
        end: Timestamp::now(),
        samples: 60,
        failed_reads: 0,
        min_w: Some(w),
        avg_w: Some(w),
        max_w: Some(w),
        energy_wh: w / 60.0,
        covered_s: 60.0,
        avg_v: Some(230.0),
        avg_a: None,
    })
}
