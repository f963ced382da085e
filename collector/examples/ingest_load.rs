//! Load generator for the collector's ingest: starts `app::start` (embedded
//! rumqttd, or an external broker with `--broker host:port`), then N
//! simulated agents, each an ordinary MQTT client, publish envelopes and
//! count events as acknowledged only when the collector's ack (sent after its
//! commit) covers them. Reports end-to-end events/s (publish → commit → ack)
//! and ack latency percentiles.
//!
//! Throughput: each agent keeps `--window` envelopes unacknowledged and sends
//! the next as soon as an ack frees a slot.
//!   cargo run --release -p labhours-collector --example ingest_load -- --agents 20 --batch 100
//! Latency at a fixed rate: `--rate` events/s spread over the agents.
//!   cargo run --release -p labhours-collector --example ingest_load -- --agents 500 --batch 2 --rate 1000

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use jiff::Timestamp;
use labhours_collector::app;
use labhours_collector::config::{CollectorConfig, ExternalBroker, InfluxApi, InfluxConfig};
use labhours_collector::ingest::IngestOptions;
use labhours_collector::store::Durability;
use labhours_shared::trust::{ChainHash, Signer};
use labhours_shared::wire::{Ack, Envelope, SCHEMA_VERSION, TopicKind, Topics};
use rumqttc::{AsyncClient, Event as MqttEvent, MqttOptions, Packet, QoS};
use tokio::sync::Mutex;

#[path = "load/envelopes.rs"]
mod envelopes;
use envelopes::{payload, summary};

#[derive(Debug, Parser)]
struct Args {
    /// Simulated agents (one MQTT connection each).
    #[arg(long, default_value_t = 20)]
    agents: usize,
    /// Events per envelope.
    #[arg(long, default_value_t = 100)]
    batch: u64,
    /// Envelopes each agent may have unacknowledged (throughput mode).
    #[arg(long, default_value_t = 4)]
    window: usize,
    /// Total events/s across all agents; without it, as fast as acks allow.
    #[arg(long)]
    rate: Option<f64>,
    /// Measured seconds (after a 2 s warm-up).
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// An external broker (e.g. Mosquitto) instead of the embedded one.
    #[arg(long)]
    broker: Option<String>,
    /// SQLite synchronous setting for the commits: full or normal.
    #[arg(long, default_value = "full")]
    durability: String,
    /// Simulated agents disable Nagle's algorithm (TCP_NODELAY).
    #[arg(long)]
    nodelay: bool,
    /// Data directory (default: a fresh temporary one, removed at the end).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Run the InfluxDB sink too, writing to this server (e.g. a
    /// VictoriaMetrics at http://127.0.0.1:8428), to measure its cost.
    #[arg(long)]
    influx: Option<String>,
    /// Envelopes as agents send them: `v1` (typed, unsigned: the figures
    /// before issue 14), `chained` (version 2, events verbatim with their
    /// chain, unsigned) or `signed` (version 2, each agent's key enrolled,
    /// every envelope signed and verified before commit).
    #[arg(long, default_value = "v1")]
    envelopes: String,
    /// The embedded broker requires per-agent credentials
    /// (`[mqtt] require_credentials`); each agent logs in with its own.
    #[arg(long)]
    credentials: bool,
    /// The embedded broker speaks TLS (`[mqtt.embedded_tls]`) with
    /// `server.crt` and `server.key` from this directory; agents trust its
    /// `ca.crt` (a certificate for 127.0.0.1).
    #[arg(long)]
    tls_dir: Option<PathBuf>,
}

#[derive(Debug, Default)]
struct Totals {
    acked_events: AtomicU64,
    latencies_us: Mutex<Vec<u64>>,
}

#[allow(clippy::too_many_arguments)]
async fn agent(
    index: usize,
    signer: Option<Arc<Signer>>,
    password: Option<String>,
    tls: Option<Arc<rustls::ClientConfig>>,
    host: String,
    port: u16,
    topics: Topics,
    args: Arc<Args>,
    totals: Arc<Totals>,
    measure_from: Instant,
    stop_at: Instant,
) -> anyhow::Result<()> {
    let agent_id = format!("load-{index:05}");
    // The client id is the agent id, as real agents connect (and as the
    // broker requires with credentials).
    let mut options = MqttOptions::new(&agent_id, host, port);
    options
        .set_keep_alive(Duration::from_secs(30))
        .set_max_packet_size(4 << 20, 4 << 20)
        .set_inflight(100);
    if let Some(password) = password {
        options.set_credentials(&agent_id, password);
    }
    if let Some(tls) = tls {
        options.set_transport(rumqttc::Transport::tls_with_config(
            rumqttc::TlsConfiguration::Rustls(tls),
        ));
    }
    let (client, mut eventloop) = AsyncClient::new(options, 64);
    if args.nodelay {
        let mut network = eventloop.network_options();
        network.set_tcp_nodelay(true);
        eventloop.set_network_options(network);
    }
    let (ack_tx, mut acks) = tokio::sync::mpsc::unbounded_channel::<u64>();
    let (ready_tx, mut ready) = tokio::sync::watch::channel(false);
    let ack_topic = topics.topic(&agent_id, TopicKind::Ack);
    let sub = client.clone();
    let poller = tokio::spawn(async move {
        loop {
            match eventloop.poll().await {
                Ok(MqttEvent::Incoming(Packet::ConnAck(_))) => {
                    let _ = sub.try_subscribe(&ack_topic, QoS::AtLeastOnce);
                }
                Ok(MqttEvent::Incoming(Packet::SubAck(_))) => {
                    ready_tx.send_replace(true);
                }
                Ok(MqttEvent::Incoming(Packet::Publish(p))) => {
                    if let Ok(ack) = Ack::decode(&p.payload) {
                        let _ = ack_tx.send(ack.committed_through);
                    }
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    });
    tokio::time::timeout(Duration::from_secs(30), ready.wait_for(|r| *r))
        .await
        .context("agent did not connect in 30 s")??;

    let topic = topics.topic(&agent_id, TopicKind::Events);
    let mut next_seq = 1u64;
    let mut acked_through = 0u64;
    let mut head: ChainHash = [0; 32];
    // (last seq, events, sent at) of each unacknowledged envelope, in order.
    let mut in_flight: VecDeque<(u64, u64, Instant)> = VecDeque::new();
    let mut latencies = Vec::new();
    let per_agent_interval = args
        .rate
        .map(|rate| Duration::from_secs_f64(args.batch as f64 * args.agents as f64 / rate));
    let mut next_send = Instant::now()
        + per_agent_interval.map_or(Duration::ZERO, |i| {
            i.mul_f64(index as f64 / args.agents as f64)
        });
    let window = if args.rate.is_some() {
        usize::MAX
    } else {
        args.window
    };
    while Instant::now() < stop_at {
        let can_send = in_flight.len() < window && Instant::now() >= next_send;
        if can_send {
            let at = Timestamp::now();
            let events = (next_seq..next_seq + args.batch)
                .map(|s| summary(s, at))
                .collect();
            let envelope = Envelope {
                v: SCHEMA_VERSION,
                agent_id: agent_id.clone(),
                instrument_id: format!("inst-{index:05}"),
                sent_at: at,
                acked_through,
                events,
            };
            next_seq += args.batch;
            let payload = payload(&envelope, &mut head, &args.envelopes, signer.as_deref())?;
            in_flight.push_back((next_seq - 1, args.batch, Instant::now()));
            client
                .publish(&topic, QoS::AtLeastOnce, false, payload)
                .await?;
            if let Some(interval) = per_agent_interval {
                next_send += interval;
            }
            continue;
        }
        let wait_until = if in_flight.len() < window {
            next_send.min(stop_at)
        } else {
            stop_at
        };
        let got = tokio::time::timeout_at(wait_until.into(), acks.recv()).await;
        let Ok(Some(through)) = got else { continue };
        acked_through = acked_through.max(through);
        let now = Instant::now();
        while let Some(&(last, n, sent)) = in_flight.front() {
            if last > acked_through {
                break;
            }
            in_flight.pop_front();
            if sent >= measure_from {
                totals.acked_events.fetch_add(n, Ordering::Relaxed);
                latencies.push(now.duration_since(sent).as_micros() as u64);
            }
        }
    }
    totals.latencies_us.lock().await.extend(latencies);
    poller.abort();
    Ok(())
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Arc::new(Args::parse());
    let temp = tempfile::tempdir()?;
    let data_dir = args
        .data_dir
        .clone()
        .unwrap_or_else(|| temp.path().to_owned());
    let mut config = CollectorConfig {
        data_dir: data_dir.clone(),
        ..CollectorConfig::default()
    };
    config.mqtt.embedded_listen = ([127, 0, 0, 1], 0).into();
    config.influxdb = args.influx.as_ref().map(|url| InfluxConfig {
        url: url.clone(),
        org: "labhours".into(),
        bucket: "labhours".into(),
        token_file: None,
        api: InfluxApi::V2,
    });
    if let Some(broker) = &args.broker {
        let (host, port) = broker.rsplit_once(':').context("--broker host:port")?;
        config.mqtt.external = Some(ExternalBroker {
            host: host.into(),
            port: port.parse().context("--broker port")?,
            client_id: "labhours-collector-load".into(),
            username: None,
            password_file: None,
            tls: None,
            shared_group: None,
        });
    }
    let durability = match args.durability.as_str() {
        "full" => Durability::Full,
        "normal" => Durability::Normal,
        other => anyhow::bail!("--durability {other}: use full or normal"),
    };
    let options = IngestOptions {
        durability,
        ..IngestOptions::default()
    };
    anyhow::ensure!(
        matches!(args.envelopes.as_str(), "v1" | "chained" | "signed"),
        "--envelopes {}: use v1, chained or signed",
        args.envelopes
    );
    // Each agent's key, enrolled before the collector starts.
    let signers: Vec<Option<Arc<Signer>>> = (0..args.agents)
        .map(|_| -> anyhow::Result<Option<Arc<Signer>>> {
            if args.envelopes != "signed" {
                return Ok(None);
            }
            let signer = Signer::from_pkcs8(&Signer::generate_pkcs8()?)?;
            Ok(Some(Arc::new(signer)))
        })
        .collect::<anyhow::Result<_>>()?;
    if args.envelopes == "signed" {
        let store = labhours_collector::store::Store::open(&data_dir, durability)?;
        for (index, signer) in signers.iter().enumerate() {
            if let Some(s) = signer {
                labhours_collector::trust::enrol(
                    store.connection(),
                    &format!("load-{index:05}"),
                    &s.public_key(),
                    Timestamp::now(),
                )?;
            }
        }
    }
    let passwords: Vec<Option<String>> = if args.credentials {
        config.mqtt.require_credentials = true;
        let store = labhours_collector::store::Store::open(&data_dir, durability)?;
        (0..args.agents)
            .map(|index| {
                labhours_collector::broker::credentials::issue(
                    store.connection(),
                    &format!("load-{index:05}"),
                    Timestamp::now(),
                )
                .map(Some)
            })
            .collect::<anyhow::Result<_>>()?
    } else {
        vec![None; args.agents]
    };
    let client_tls = match &args.tls_dir {
        Some(dir) => {
            config.mqtt.embedded_tls = Some(labhours_shared::config::ServerTlsConfig {
                cert_file: dir.join("server.crt"),
                key_file: dir.join("server.key"),
            });
            let tls = labhours_shared::config::TlsConfig {
                ca_file: dir.join("ca.crt"),
                client_cert_file: None,
                client_key_file: None,
            }
            .client_config("--tls-dir")
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
            Some(tls)
        }
        None => None,
    };
    let running = app::start(config.clone(), options).await?;
    tokio::time::timeout(Duration::from_secs(30), running.subscribed())
        .await
        .context("ingest did not subscribe in 30 s")?;
    let (host, port) = match (&config.mqtt.external, running.broker_addr()) {
        (Some(ext), _) => (ext.host.clone(), ext.port),
        (None, Some(addr)) => (addr.ip().to_string(), addr.port()),
        (None, None) => unreachable!("embedded broker has an address"),
    };

    let totals = Arc::new(Totals::default());
    let warm_up = Duration::from_secs(2);
    let start =
        Instant::now() + Duration::from_secs(1) + args.agents as u32 * Duration::from_millis(2);
    let measure_from = start + warm_up;
    let stop_at = measure_from + Duration::from_secs_f64(args.seconds);
    let before = running.stats();
    let mut tasks = Vec::new();
    for (index, signer) in signers.iter().enumerate() {
        tasks.push(tokio::spawn(agent(
            index,
            signer.clone(),
            passwords[index].clone(),
            client_tls.clone(),
            host.clone(),
            port,
            Topics::new(&config.mqtt.topic_prefix),
            args.clone(),
            totals.clone(),
            measure_from,
            stop_at,
        )));
    }
    for task in tasks {
        task.await??;
    }
    let after = running.stats();
    let sink = if args.influx.is_some() {
        let url = format!("http://{}/api/v1/healthz", running.http_addr());
        let health = tokio::task::spawn_blocking(move || {
            ureq::get(&url)
                .call()
                .map(|mut r| r.body_mut().read_to_string().unwrap_or_default())
        })
        .await??;
        let health: serde_json::Value = serde_json::from_str(&health)?;
        Some(health["influxdb"].clone())
    } else {
        None
    };
    running.shutdown().await?;

    let events = totals.acked_events.load(Ordering::Relaxed);
    let mut lat = std::mem::take(&mut *totals.latencies_us.lock().await);
    lat.sort_unstable();
    let commits = after.commits - before.commits;
    let envelopes = after.envelopes - before.envelopes;
    println!(
        "ingest_load: broker={}{}{} envelopes={} influx={} agents={} batch={} {} durability={}",
        args.broker.as_deref().unwrap_or("embedded"),
        if args.tls_dir.is_some() { "+tls" } else { "" },
        if args.credentials { "+credentials" } else { "" },
        args.envelopes,
        args.influx.as_deref().unwrap_or("off"),
        args.agents,
        args.batch,
        match args.rate {
            Some(rate) => format!("rate={rate} events/s"),
            None => format!("window={}", args.window),
        },
        args.durability,
    );
    println!(
        "  {events} events acked in {:.1} s = {:.0} events/s end to end (publish -> commit -> ack)",
        args.seconds,
        events as f64 / args.seconds
    );
    println!(
        "  ack latency per envelope: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms ({} envelopes)",
        percentile(&lat, 0.50),
        percentile(&lat, 0.99),
        percentile(&lat, 1.0),
        lat.len()
    );
    println!(
        "  {commits} commits for {envelopes} envelopes ({:.1} envelopes per commit), {} duplicates, {} quarantined",
        envelopes as f64 / commits.max(1) as f64,
        after.duplicates,
        after.quarantined
    );
    let db = std::fs::metadata(data_dir.join(labhours_collector::store::DB_FILE))?.len();
    println!("  database {:.1} MiB", db as f64 / (1 << 20) as f64);
    if let Some(sink) = sink {
        println!("  influxdb sink at the end: {sink}");
    }
    Ok(())
}
