//! The InfluxDB sink against a real peer: VictoriaMetrics from Debian
//! (`victoria-metrics`), which takes InfluxDB's `/api/v2/write`. Started by
//! `tests/interop/run.sh victoria-metrics` (`LABHOURS_VICTORIA_METRICS` names
//! its binary); the test starts and stops its own server processes.
//!
//! Two days of recorded samples go through the real agent (`replay` into
//! its outbox, then its MQTT delivery) to the real collector, whose sink
//! writes to VictoriaMetrics. VictoriaMetrics is stopped after the first
//! day and started again only once the second is stored, so the second day
//! is written only by catching up. The points read back through
//! VictoriaMetrics' export API are then compared with the collector's
//! store: every summary and transition exactly once (VictoriaMetrics keeps
//! duplicates, so a resend would show), with its value, and the verified
//! days with their figures (a day may be written again when it changes).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use labhours_agent::clock::SystemClock;
use labhours_agent::config::{AgentConfig, Purpose};
use labhours_agent::delivery::Delivery;
use labhours_agent::outbox::Outbox;
use labhours_collector::app::{self, Running};
use labhours_collector::config::CollectorConfig;
use labhours_collector::dashboard::session::url_encode;
use labhours_collector::ingest::IngestOptions;
use labhours_tests::brokers::free_port;
use labhours_tests::http;
use serde_json::Value;

const INSTRUMENT: &str = "nmr-600";
const AGENT: &str = "nmr600-backfill";
const WAIT: Duration = Duration::from_secs(60);

/// A VictoriaMetrics process on a loopback port, over a kept storage directory.
struct Victoria {
    bin: PathBuf,
    storage: PathBuf,
    addr: SocketAddr,
    child: Option<Child>,
}

impl Victoria {
    fn start(bin: PathBuf, storage: PathBuf) -> Self {
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let mut vm = Self {
            bin,
            storage,
            addr,
            child: None,
        };
        vm.resume();
        vm
    }

    fn resume(&mut self) {
        let child = Command::new(&self.bin)
            .arg(format!("-httpListenAddr={}", self.addr))
            .arg(format!("-storageDataPath={}", self.storage.display()))
            // The samples are dated in the past: keep them.
            .arg("-retentionPeriod=100y")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("victoria-metrics starts");
        self.child = Some(child);
    }

    /// SIGTERM, as a service manager stops it, and wait for the exit.
    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(child.id().to_string())
                .status();
            let _ = child.wait();
        }
    }

    async fn wait_ready(&self) {
        let deadline = Instant::now() + WAIT;
        while !http::get(self.addr, "/health")
            .await
            .is_ok_and(|r| r.status == 200)
        {
            assert!(Instant::now() < deadline, "victoria-metrics did not start");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// `(labels, timestamp, value)` of every sample of `metric`.
    async fn export(&self, metric: &str) -> Vec<(BTreeMap<String, String>, i64, f64)> {
        let flushed = http::get(self.addr, "/internal/force_flush").await.unwrap();
        assert_eq!(flushed.status, 200);
        let target = format!(
            "/api/v1/export?match%5B%5D={}",
            url_encode(&format!("{{__name__=\"{metric}\"}}"))
        );
        let answer = http::get(self.addr, &target).await.unwrap();
        assert_eq!(answer.status, 200, "{}", answer.text().unwrap_or(""));
        let mut out = Vec::new();
        for line in answer.text().unwrap().lines().filter(|l| !l.is_empty()) {
            let series: Value = serde_json::from_str(line).unwrap();
            let labels: BTreeMap<String, String> = series["metric"]
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
                .collect();
            let times = series["timestamps"].as_array().unwrap();
            let values = series["values"].as_array().unwrap();
            for (t, v) in times.iter().zip(values) {
                out.push((labels.clone(), t.as_i64().unwrap(), v.as_f64().unwrap()));
            }
        }
        out
    }
}

impl Drop for Victoria {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A day of samples every 30 s: off at night, running 08:00–12:00 and
/// 13:00–17:00 (with a wobble, so averages differ), standby between.
fn day_of_samples(path: &Path, date: &str) {
    let mut text = String::from("timestamp,watts\n");
    let start: jiff::Timestamp = format!("{date}T00:00:00Z").parse().unwrap();
    for i in 0..2880 {
        let at = start + jiff::SignedDuration::from_secs(i * 30);
        let hour = i * 30 / 3600;
        let watts = match hour {
            8..=11 | 13..=16 => 800.0 + (i % 7) as f64 * 3.5,
            0..=6 | 20..=23 => 2.0,
            _ => 50.0 + (i % 5) as f64,
        };
        text.push_str(&format!("{at},{watts}\n"));
    }
    std::fs::write(path, text).unwrap();
}

/// The real collector writing to `server` through `api`, and a replay
/// agent that delivers to its embedded broker.
async fn start(dir: &Path, data: &Path, server: SocketAddr, api: &str) -> (Running, AgentConfig) {
    let collector = app::start(
        collector_config(data, server, api),
        IngestOptions::default(),
    )
    .await
    .expect("collector starts");
    tokio::time::timeout(WAIT, collector.subscribed())
        .await
        .unwrap();
    let agent = agent_config(dir, collector.broker_addr().unwrap());
    (collector, agent)
}

fn collector_config(data_dir: &Path, server: SocketAddr, api: &str) -> CollectorConfig {
    CollectorConfig::parse(&format!(
        r#"
        data_dir = {data_dir:?}
        [site]
        time_zone = "UTC"
        [mqtt]
        embedded_listen = "127.0.0.1:0"
        [http]
        listen = "127.0.0.1:0"
        [influxdb]
        url = "http://{server}"
        org = "labhours"
        bucket = "labhours"
        api = "{api}"
        [[instruments]]
        id = "{INSTRUMENT}"
        name = "NMR 600"
        unit = "Chemistry/NMR Centre"
        "#
    ))
    .expect("collector config")
}

fn agent_config(dir: &Path, broker: SocketAddr) -> AgentConfig {
    let path = dir.join("agent.replay-only.toml");
    std::fs::write(
        &path,
        format!(
            r#"
            agent_id = "{AGENT}"
            instrument_id = "{INSTRUMENT}"
            data_dir = {:?}
            # The log's sample spacing (a longer gap would read as unknown).
            poll_interval_ms = 30000
            [mqtt]
            host = "127.0.0.1"
            port = {}
            heartbeat_interval_s = 1
            [state]
            on_above_w = 40.0
            running_above_w = 600.0
            "#,
            dir.join("agent-data"),
            broker.port()
        ),
    )
    .unwrap();
    AgentConfig::load_to_start(&path, Purpose::Replay).expect("agent config")
}

/// Replays `samples` into the agent's outbox and delivers it until the
/// collector acknowledged everything.
async fn replay_and_deliver(config: &AgentConfig, samples: &Path) {
    let (outbox, _) = Outbox::open(
        &config.data_dir,
        (&config.outbox).into(),
        jiff::Timestamp::now(),
    )
    .unwrap();
    let stats = labhours_agent::replay::replay(config, samples, &outbox).unwrap();
    assert!(stats.events_appended > 1000, "{stats:?}");
    let delivery = Delivery::new(
        &config.mqtt,
        &config.agent_id,
        &config.instrument_id,
        outbox.clone(),
        Arc::new(SystemClock),
    )
    .unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    let task = tokio::spawn(delivery.run(stop.clone().cancelled_owned()));
    let deadline = Instant::now() + WAIT;
    while outbox.backlog() > 0 {
        assert!(
            Instant::now() < deadline,
            "the collector did not ack the replay"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.cancel();
    task.await.unwrap();
}

async fn health(collector: &Running) -> Value {
    http::get(collector.http_addr(), "/api/v1/healthz")
        .await
        .unwrap()
        .json()
        .unwrap()
}

/// Waits until the sink has written everything stored and is running.
async fn wait_caught_up(collector: &Running) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let h = health(collector).await;
        let sink = &h["influxdb"];
        if sink["pending_events"] == 0 && sink["state"] == "running" {
            return h;
        }
        assert!(
            Instant::now() < deadline,
            "the sink did not catch up: {h:#}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `(at_ms, payload)` of the stored events of `kind`.
fn stored(data_dir: &Path, kind: &str) -> Vec<(i64, Value)> {
    let conn = labhours_collector::store::open_read_only(data_dir).unwrap();
    let mut stmt = conn
        .prepare("SELECT at_ms, payload FROM events WHERE type = ?1 ORDER BY at_ms")
        .unwrap();
    stmt.query_map([kind], |r| Ok((r.get(0)?, r.get::<_, String>(1)?)))
        .unwrap()
        .map(|r| {
            let (at, payload) = r.unwrap();
            (at, serde_json::from_str(&payload).unwrap())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs VictoriaMetrics: tests/interop/run.sh victoria-metrics"]
async fn two_days_reach_victoria_metrics_exactly_once_through_an_outage() {
    let bin = PathBuf::from(
        std::env::var("LABHOURS_VICTORIA_METRICS").expect("LABHOURS_VICTORIA_METRICS"),
    );
    let dir = tempfile::tempdir().unwrap();
    let mut vm = Victoria::start(bin, dir.path().join("vm"));
    vm.wait_ready().await;
    let data = dir.path().join("collector");
    let (collector, agent) = start(dir.path(), &data, vm.addr, "v2").await;

    let day1 = dir.path().join("day1.csv");
    day_of_samples(&day1, "2026-11-20");
    replay_and_deliver(&agent, &day1).await;
    wait_caught_up(&collector).await;

    // VictoriaMetrics goes away; the second day arrives meanwhile.
    vm.stop();
    let day2 = dir.path().join("day2.csv");
    day_of_samples(&day2, "2026-11-21");
    replay_and_deliver(&agent, &day2).await;
    let deadline = Instant::now() + WAIT;
    loop {
        let h = health(&collector).await;
        if h["influxdb"]["state"] == "retrying"
            && h["influxdb"]["pending_events"].as_u64() > Some(0)
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the sink did not notice the outage: {h:#}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    vm.resume();
    vm.wait_ready().await;
    let h = wait_caught_up(&collector).await;
    assert!(h["influxdb"]["retries"].as_u64() > Some(0), "{h:#}");
    assert_eq!(h["influxdb"]["rejected_batches"], 0, "{h:#}");

    // Every summary once, with its value and tags. The health figures are
    // a step old: wait until the server holds as many as the store.
    let summaries = stored(&data, "summary");
    assert_eq!(summaries.len(), 2 * 1440);
    let deadline = Instant::now() + WAIT;
    while vm.export("labhours_power_avg_w").await.len() < summaries.len() {
        assert!(Instant::now() < deadline, "not every summary was written");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut written = vm.export("labhours_power_avg_w").await;
    written.sort_by_key(|(_, t, _)| *t);
    assert_eq!(
        written.len(),
        summaries.len(),
        "as many points as summaries: none missing, none twice"
    );
    for ((labels, t, v), (at, event)) in written.iter().zip(&summaries) {
        assert_eq!(*t, *at);
        assert_eq!(Some(*v), event["avg_w"].as_f64(), "at {t}");
        assert_eq!(labels["instrument"], INSTRUMENT);
        assert_eq!(labels["agent"], AGENT);
        assert_eq!(labels["unit"], "Chemistry/NMR Centre");
    }
    // Every transition once, as its state's code.
    let mut transitions: Vec<(i64, String)> = stored(&data, "transition")
        .into_iter()
        .map(|(at, e)| (at, e["to"].as_str().unwrap().to_owned()))
        .collect();
    transitions.sort();
    let mut states: Vec<(i64, String)> = vm
        .export("labhours_state_code")
        .await
        .into_iter()
        .map(|(labels, t, _)| (t, labels["state"].clone()))
        .collect();
    states.sort();
    assert!(transitions.len() >= 8, "{transitions:?}");
    assert_eq!(states, transitions);
    // The verified days: each day's figure in the store has been written
    // (a day is written again when reconciliation changes it).
    let days = |data: &Path| -> Vec<(i64, i64)> {
        let conn = labhours_collector::store::open_read_only(data).unwrap();
        conn.prepare(
            "SELECT start_ms, used_ms FROM day_totals WHERE instrument_id = ?1 ORDER BY start_ms",
        )
        .unwrap()
        .query_map([INSTRUMENT], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect()
    };
    let deadline = Instant::now() + WAIT;
    let daily = loop {
        let stored_days = days(&data);
        let daily = vm.export("labhours_daily_used_hours").await;
        let all_written = stored_days.len() >= 2
            && stored_days.iter().all(|(start, used_ms)| {
                daily
                    .iter()
                    .any(|(_, t, h)| t == start && (h - *used_ms as f64 / 3_600_000.0).abs() < 1e-9)
            });
        if all_written {
            break daily;
        }
        assert!(
            Instant::now() < deadline,
            "verified days not written: {daily:?} {stored_days:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        daily.iter().any(|(_, _, h)| *h >= 7.9),
        "8 h of running on a replayed day: {daily:?}"
    );
    collector.shutdown().await.unwrap();
}

/// InfluxDB 1.x (Debian's `influxdb`, started here on free loopback ports)
/// through `api = "v1"`: a replayed day read back with InfluxQL.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs InfluxDB 1.x: tests/interop/run.sh influxdb"]
async fn a_replayed_day_reaches_influxdb_1x_through_its_v1_write_api() {
    let bin = PathBuf::from(std::env::var("LABHOURS_INFLUXD").expect("LABHOURS_INFLUXD"));
    let dir = tempfile::tempdir().unwrap();
    let http_addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let rpc_port = free_port();
    let root = dir.path().join("influxdb");
    let conf = dir.path().join("influxdb.conf");
    std::fs::write(
        &conf,
        format!(
            "reporting-disabled = true\nbind-address = \"127.0.0.1:{rpc_port}\"\n\
             [meta]\n  dir = {meta:?}\n[data]\n  dir = {data:?}\n  wal-dir = {wal:?}\n\
             [http]\n  bind-address = \"{http_addr}\"\n  log-enabled = false\n",
            meta = root.join("meta"),
            data = root.join("data"),
            wal = root.join("wal"),
        ),
    )
    .unwrap();
    struct Killed(Child);
    impl Drop for Killed {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _influxd = Killed(
        Command::new(&bin)
            .arg("-config")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("influxd starts"),
    );
    let deadline = Instant::now() + WAIT;
    while !http::get(http_addr, "/ping")
        .await
        .is_ok_and(|r| r.status == 204)
    {
        assert!(Instant::now() < deadline, "influxd did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let query = |q: &str| format!("/query?db=labhours&epoch=ms&q={}", url_encode(q));
    let created = http::get(http_addr, &query("CREATE DATABASE labhours"))
        .await
        .unwrap();
    assert_eq!(created.status, 200);

    let data = dir.path().join("collector");
    let (collector, agent) = start(dir.path(), &data, http_addr, "v1").await;
    let day = dir.path().join("day.csv");
    day_of_samples(&day, "2026-11-20");
    replay_and_deliver(&agent, &day).await;
    let h = wait_caught_up(&collector).await;
    assert_eq!(h["influxdb"]["rejected_batches"], 0, "{h:#}");

    // The health figures are a step old: wait until the server holds as
    // many summaries as the store.
    let summaries = stored(&data, "summary");
    let deadline = Instant::now() + WAIT;
    let rows = loop {
        let answer = http::get(
            http_addr,
            &query("SELECT avg_w, agent, instrument FROM labhours_power"),
        )
        .await
        .unwrap()
        .json()
        .unwrap();
        let rows = answer["results"][0]["series"][0]["values"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if rows.len() >= summaries.len() {
            break rows;
        }
        assert!(Instant::now() < deadline, "{answer:#} after {h:#}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(rows.len(), summaries.len());
    for (row, (at, event)) in rows.iter().zip(&summaries) {
        assert_eq!(row[0].as_i64(), Some(*at));
        assert_eq!(row[1].as_f64(), event["avg_w"].as_f64());
        assert_eq!(row[2], AGENT);
        assert_eq!(row[3], INSTRUMENT);
    }
    // The verified day follows once reconciliation has run.
    let deadline = Instant::now() + WAIT;
    loop {
        let daily = http::get(
            http_addr,
            &query("SELECT max(used_hours) FROM labhours_daily"),
        )
        .await
        .unwrap()
        .json()
        .unwrap();
        if daily["results"][0]["series"][0]["values"][0][1]
            .as_f64()
            .is_some_and(|h| h >= 7.9)
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "8 h of running not written: {daily:#}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    collector.shutdown().await.unwrap();
}
