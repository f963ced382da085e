//! Catch-up of the InfluxDB sink after an outage: a store holding
//! `--minutes` of live data from `--instruments` agents (a one-minute power
//! summary each, a transition every 10 minutes, a heartbeat a minute) that
//! the sink has not written yet, then the sink writes all of it to `--url`
//! (a VictoriaMetrics or InfluxDB) as fast as the server takes it.
//!
//!   cargo run --release -p labhours-collector --example influx_catchup -- \
//!       --instruments 1000 --minutes 60 --url http://127.0.0.1:8428
//!
//! Prints the time from the first request to the sink being idle.

use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use clap::Parser;
use jiff::{SignedDuration, Timestamp};
use labhours_collector::config::{CollectorConfig, InfluxApi, InfluxConfig};
use labhours_collector::influx::client::Target;
use labhours_collector::influx::{Sink, SinkStats, Step};
use labhours_collector::registry::Registry;
use labhours_collector::store::{Batch, Durability, Received, Store};
use labhours_shared::state::State;
use labhours_shared::wire::{
    Envelope, Event, EventKind, Heartbeat, SCHEMA_VERSION, Summary, TransitionSource,
};

#[derive(Debug, Parser)]
struct Args {
    #[arg(long, default_value_t = 1000)]
    instruments: usize,
    /// Length of the outage: minutes of data waiting.
    #[arg(long, default_value_t = 60)]
    minutes: i64,
    /// The server's base URL.
    #[arg(long)]
    url: String,
}

fn events(minutes: i64, start: Timestamp) -> Vec<Event> {
    let mut out = Vec::new();
    for m in 0..minutes {
        let at = start + SignedDuration::from_mins(m);
        out.push(EventKind::Summary(Summary {
            end: at + SignedDuration::from_mins(1),
            samples: 60,
            failed_reads: 0,
            min_w: Some(40.0),
            avg_w: Some(400.0 + m as f64),
            max_w: Some(900.0),
            energy_wh: 6.5,
            covered_s: 60.0,
            avg_v: Some(230.0),
            avg_a: Some(1.7),
        }));
        out.push(EventKind::Heartbeat(Heartbeat {
            uptime_s: m as u64 * 60,
            backlog: 0,
            oldest_unacked_age_s: None,
            clock: at,
            version: "bench".into(),
        }));
        if m % 10 == 0 {
            out.push(EventKind::Transition {
                from: State::Standby,
                to: if m % 20 == 0 {
                    State::Running
                } else {
                    State::Standby
                },
                source: TransitionSource::Power,
                reason: "bench".into(),
            });
        }
    }
    out.into_iter()
        .enumerate()
        .map(|(i, kind)| Event {
            seq: i as u64 + 1,
            at: start + SignedDuration::from_mins(i as i64 / 3),
            kind,
        })
        .collect()
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let dir = tempfile::tempdir()?;
    let config = CollectorConfig {
        data_dir: dir.path().to_owned(),
        ..CollectorConfig::default()
    };
    let start = Timestamp::now() - SignedDuration::from_mins(args.minutes);
    let mut store = Store::open(dir.path(), Durability::Normal)?;
    let mut total = 0;
    for i in 0..args.instruments {
        let agent = format!("agent-{i:04}");
        let evs = events(args.minutes, start);
        total += evs.len();
        store.commit(&Batch {
            envelopes: vec![Received {
                received_at: Timestamp::now(),
                topic: format!("labhours/v1/{agent}/events"),
                message: Envelope {
                    v: SCHEMA_VERSION,
                    agent_id: agent.clone(),
                    instrument_id: format!("inst-{i:04}"),
                    sent_at: Timestamp::now(),
                    acked_through: 0,
                    events: evs,
                }
                .into(),
            }],
            ..Batch::default()
        })?;
    }
    drop(store);
    println!(
        "{} instruments, {} minutes: {total} events waiting",
        args.instruments, args.minutes
    );
    let influx = InfluxConfig {
        url: args.url.clone(),
        org: "labhours".into(),
        bucket: "labhours".into(),
        token_file: None,
        api: InfluxApi::V2,
    };
    let registry = Arc::new(Registry::from_config(&config).map_err(|e| anyhow::anyhow!("{e}"))?);
    let stats = Arc::new(SinkStats::default());
    let mut sink = Sink::open(
        dir.path(),
        registry,
        Target::new(&influx, None),
        stats.clone(),
    )
    .context("sink")?;
    let started = Instant::now();
    loop {
        match sink.step(Timestamp::now().as_millisecond())? {
            Step::Sent => {}
            Step::Idle => break,
            other => anyhow::bail!("the server did not take the data: {other:?}"),
        }
    }
    let secs = started.elapsed().as_secs_f64();
    let health = stats.health(Timestamp::now().as_millisecond());
    println!(
        "caught up in {secs:.2} s: {} points in {} requests ({:.0} points/s), {} retries",
        health.points_written,
        health.batches_written,
        health.points_written as f64 / secs,
        health.retries
    );
    Ok(())
}
