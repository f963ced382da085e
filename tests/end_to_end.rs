//! The real agent delivery and the real collector together (issue: the
//! end-to-end acknowledged pipeline). Every test ends with the exact check:
//! the set of `(agent_id, seq)` in the collector's database equals the set the
//! agent's outbox assigned, each exactly once, and the outbox is empty.
//!
//! Brokers: the collector's own embedded one (also behind a TCP proxy whose
//! link is cut and restored, for a network outage); an in-process rumqttd used as
//! an external broker (so the collector can be restarted while the broker
//! stays); and Mosquitto, restarted mid-stream without persistence (ignored
//! here, run by tests/interop/run.sh with LABHOURS_MOSQUITTO_BIN).

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use labhours_collector::app::{self, Running};
use labhours_collector::config::{CollectorConfig, ExternalBroker};
use labhours_collector::ingest::IngestOptions;
use labhours_tests::agent::{PREFIX, TestAgent, mqtt_config};
use labhours_tests::brokers::{Mosquitto, Rumqttd, free_port, mosquitto_bin};
use labhours_tests::proxy::CutProxy;

const DRAIN: Duration = Duration::from_secs(60);

fn collector_config(data_dir: &Path, broker: Broker) -> CollectorConfig {
    let mut config = CollectorConfig {
        data_dir: data_dir.to_owned(),
        ..CollectorConfig::default()
    };
    config.http.listen = ([127, 0, 0, 1], 0).into();
    config.mqtt.topic_prefix = PREFIX.into();
    match broker {
        Broker::Embedded(port) => config.mqtt.embedded_listen = ([127, 0, 0, 1], port).into(),
        Broker::External(port) => {
            config.mqtt.external = Some(ExternalBroker {
                host: "127.0.0.1".into(),
                port,
                client_id: "e2e-collector".into(),
                username: None,
                password_file: None,
                tls: None,
                shared_group: None,
            })
        }
    }
    config
}

#[derive(Clone, Copy)]
enum Broker {
    Embedded(u16),
    External(u16),
}

async fn start_collector(data_dir: &Path, broker: Broker) -> Running {
    let running = app::start(collector_config(data_dir, broker), IngestOptions::default())
        .await
        .expect("collector starts");
    tokio::time::timeout(Duration::from_secs(10), running.subscribed())
        .await
        .expect("collector subscribed within 10 s");
    running
}

/// The seqs the collector committed for `agent_id`, and how many rows hold them.
fn committed(data_dir: &Path, agent_id: &str) -> (BTreeSet<u64>, u64) {
    let conn = labhours_collector::store::open_read_only(data_dir).expect("database");
    let mut stmt = conn
        .prepare("SELECT seq FROM events WHERE agent_id = ?1")
        .expect("query");
    let seqs: Vec<u64> = stmt
        .query_map([agent_id], |row| row.get::<_, i64>(0))
        .expect("rows")
        .map(|r| r.expect("seq") as u64)
        .collect();
    let rows = seqs.len() as u64;
    (seqs.into_iter().collect(), rows)
}

/// `appended` are the seqs the test appended; the outbox may have added
/// heartbeats, which must arrive too.
async fn assert_exactly_once(agent: &TestAgent, data_dir: &Path, appended: &BTreeSet<u64>) {
    agent.wait_drained(DRAIN).await;
    let produced = &agent.produced();
    assert!(appended.is_subset(produced));
    let (seqs, rows) = committed(data_dir, &agent.agent_id);
    let missing: Vec<_> = produced.difference(&seqs).take(10).collect();
    let extra: Vec<_> = seqs.difference(produced).take(10).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "missing {missing:?}, unexpected {extra:?}"
    );
    assert_eq!(rows, produced.len() as u64, "each event stored once");
    assert_eq!(agent.outbox.backlog(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_restarts_through_the_embedded_broker_lose_and_double_nothing() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (agent_dir, data_dir) = (dir.path().join("agent"), dir.path().join("collector"));
    let port = free_port();
    let collector = start_collector(&data_dir, Broker::Embedded(port)).await;

    let mut agent = TestAgent::start(&agent_dir, "e2e-agent", &mqtt_config(port));
    let mut produced = BTreeSet::new();
    for _ in 0..5 {
        produced.extend(agent.append(300));
    }
    // Stopped mid-stream and started again on the same outbox.
    agent.stop().await;
    let mut agent = TestAgent::start(&agent_dir, "e2e-agent", &mqtt_config(port));
    for _ in 0..5 {
        produced.extend(agent.append(300));
    }
    assert_exactly_once(&agent, &data_dir, &produced).await;
    collector.shutdown().await.expect("collector stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_network_cut_and_restored_loses_and_doubles_nothing() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (agent_dir, data_dir) = (dir.path().join("agent"), dir.path().join("collector"));
    let port = free_port();
    let collector = start_collector(&data_dir, Broker::Embedded(port)).await;
    let network = CutProxy::start(port).await;
    let mut agent = TestAgent::start(&agent_dir, "e2e-agent", &mqtt_config(network.port));
    agent
        .wait_status(Duration::from_secs(10), "connected", |s| s.connected)
        .await;
    let mut appended = BTreeSet::new();
    for _ in 0..3 {
        appended.extend(agent.append(300));
    }
    network.cut();
    agent
        .wait_status(Duration::from_secs(15), "the agent notices the cut", |s| {
            !s.connected
        })
        .await;
    // Accepted while the network is down: they wait in the outbox.
    for _ in 0..3 {
        appended.extend(agent.append(300));
    }
    network.restore();
    assert_exactly_once(&agent, &data_dir, &appended).await;
    assert!(agent.status.borrow().connects >= 2, "it reconnected");
    collector.shutdown().await.expect("collector stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_stopped_mid_stream_and_restarted_loses_and_doubles_nothing() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (agent_dir, data_dir) = (dir.path().join("agent"), dir.path().join("collector"));
    let broker = Rumqttd::start();
    let collector = start_collector(&data_dir, Broker::External(broker.port)).await;
    let mut agent = TestAgent::start(&agent_dir, "e2e-agent", &mqtt_config(broker.port));
    let mut produced = BTreeSet::new();
    for _ in 0..5 {
        produced.extend(agent.append(400));
    }
    // Stopped mid-stream (a SIGKILL is collector/tests/crash.rs), events still arriving meanwhile.
    collector.shutdown().await.expect("collector stops");
    for _ in 0..5 {
        produced.extend(agent.append(400));
    }
    let collector = start_collector(&data_dir, Broker::External(broker.port)).await;
    assert_exactly_once(&agent, &data_dir, &produced).await;
    collector.shutdown().await.expect("collector stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Mosquitto: run tests/interop/run.sh"]
async fn mosquitto_restarted_without_persistence_between_agent_and_collector_loses_nothing() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (agent_dir, data_dir) = (dir.path().join("agent"), dir.path().join("collector"));
    let mut broker = Mosquitto::start(&mosquitto_bin());
    let collector = start_collector(&data_dir, Broker::External(broker.port)).await;
    let mut agent = TestAgent::start(&agent_dir, "e2e-agent", &mqtt_config(broker.port));
    let mut produced = BTreeSet::new();
    for _ in 0..5 {
        produced.extend(agent.append(400));
    }
    // The broker forgets every session and queued message.
    broker.restart();
    for _ in 0..5 {
        produced.extend(agent.append(400));
    }
    assert_exactly_once(&agent, &data_dir, &produced).await;
    collector.shutdown().await.expect("collector stops");
}
