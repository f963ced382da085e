//! Delivery scenarios against a real broker on `127.0.0.1:<port>`, shared by
//! the embedded-broker suite (`tests/delivery.rs`) and the Mosquitto suite
//! (`tests/delivery_mosquitto.rs`).
//!
//! Every scenario ends with the same exact check: the set of `(agent_id,
//! seq)` the test collector committed equals the set the agent's outbox
//! assigned, each committed once with the content appended, and the outbox
//! is empty. Waits are for conditions, each bounded by a timeout.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use labhours_agent::delivery::VERSION;
use labhours_shared::wire::{EventKind, Presence};
use rumqttc::{AsyncClient, Event as MqttEvent, MqttOptions, Outgoing, Packet};

use crate::agent::{PREFIX, TestAgent, mqtt_config};
use crate::brokers::{Mosquitto, mosquitto_bin, wait_for_port};
use crate::fake_collector::{FakeCollector, Setup, SharedStore, lock};
use crate::tls::TestCerts;

const SHORT: Duration = Duration::from_secs(10);
const LONG: Duration = Duration::from_secs(30);

/// Polls `cond` every 20 ms until it holds; panics after `within`.
pub async fn wait_until(within: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let waited = tokio::time::timeout(within, async {
        while !cond() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(waited.is_ok(), "not within {within:?}: {what}");
}

/// The exact check (see the module doc).
pub fn assert_committed_exactly_once(
    store: &SharedStore,
    agent_id: &str,
    produced: &BTreeSet<u64>,
    appended: &BTreeMap<u64, EventKind>,
) {
    let store = lock(store);
    let committed = store.events(agent_id);
    let seqs: BTreeSet<u64> = committed.keys().copied().collect();
    let missing: Vec<_> = produced.difference(&seqs).collect();
    let extra: Vec<_> = seqs.difference(produced).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "committed set differs: missing {missing:?}, unexpected {extra:?}"
    );
    for (seq, kind) in appended {
        assert_eq!(&committed[seq].kind, kind, "content of seq {seq}");
    }
    assert_eq!(
        store.received - store.duplicates,
        produced.len() as u64,
        "each event is committed once"
    );
}

async fn collector(port: u16, store: &SharedStore, setup: Setup) -> FakeCollector {
    FakeCollector::start(port, PREFIX, store.clone(), setup).await
}

/// Appends `rounds` small bursts, `gap` apart (an instrument's stream).
async fn stream(agent: &mut TestAgent, rounds: usize, gap: Duration) {
    for round in 0..rounds {
        agent.append(1 + (round * 7) % 23);
        tokio::time::sleep(gap).await;
    }
}

/// A steady stream with heartbeats reaches the collector exactly once;
/// presence goes online on connect and offline on a clean stop.
pub async fn steady_stream(port: u16) {
    let store = SharedStore::default();
    let collector = collector(port, &store, Setup::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = mqtt_config(port);
    config.heartbeat_interval_s = 1;
    let mut agent = TestAgent::start(dir.path(), "steady", &config);
    agent.wait_status(SHORT, "connected", |s| s.connected).await;
    wait_until(SHORT, "presence online", || {
        lock(&store)
            .presence
            .get("steady")
            .is_some_and(|p| p.status == Presence::Online && p.at.is_some())
    })
    .await;

    stream(&mut agent, 40, Duration::from_millis(20)).await;
    wait_until(SHORT, "a heartbeat committed", || {
        lock(&store)
            .events("steady")
            .values()
            .any(|e| matches!(e.kind, EventKind::Heartbeat(_)))
    })
    .await;
    agent.wait_drained(LONG).await;
    let produced = agent.produced();
    let appended = agent.stop().await;

    assert_committed_exactly_once(&store, "steady", &produced, &appended);
    let beat = lock(&store)
        .events("steady")
        .into_values()
        .find_map(|e| match e.kind {
            EventKind::Heartbeat(h) => Some(h),
            _ => None,
        })
        .unwrap();
    assert_eq!(beat.version, VERSION);
    assert!(beat.uptime_s >= 1, "{beat:?}");
    let skew = jiff::Timestamp::now().duration_since(beat.clock).abs();
    assert!(skew < jiff::SignedDuration::from_secs(60), "{beat:?}");
    wait_until(SHORT, "presence offline after a clean stop", || {
        lock(&store)
            .presence
            .get("steady")
            .is_some_and(|p| p.status == Presence::Offline)
    })
    .await;
    collector.stop().await;
}

/// Another client takes the agent's client id with a clean session, which
/// discards the broker's session: the agent reconnects with
/// `session_present = false`, subscribes to its acks again and resends.
pub async fn lost_session(port: u16) {
    let store = SharedStore::default();
    let collector = collector(port, &store, Setup::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let config = mqtt_config(port);
    let mut agent = TestAgent::start(dir.path(), "lost-session", &config);
    agent.wait_status(SHORT, "connected", |s| s.connected).await;
    stream(&mut agent, 10, Duration::from_millis(10)).await;
    agent.wait_drained(LONG).await;

    take_over_session(port, "lost-session").await;
    let status = agent
        .wait_status(SHORT, "reconnected without a session", |s| {
            s.connected && s.connects >= 2 && s.session_present == Some(false)
        })
        .await;
    assert!(status.connects >= 2);
    // Acks only arrive if the agent subscribed again.
    stream(&mut agent, 10, Duration::from_millis(10)).await;
    agent.wait_drained(LONG).await;
    let produced = agent.produced();
    let appended = agent.stop().await;
    assert_committed_exactly_once(&store, "lost-session", &produced, &appended);
    collector.stop().await;
}

/// Connects as `client_id` with a clean session, then disconnects.
async fn take_over_session(port: u16, client_id: &str) {
    let mut options = MqttOptions::new(client_id, "127.0.0.1", port);
    options.set_clean_session(true);
    let (client, mut eventloop) = AsyncClient::new(options, 10);
    tokio::time::timeout(SHORT, async {
        loop {
            match eventloop.poll().await {
                Ok(MqttEvent::Incoming(Packet::ConnAck(_))) => {
                    client.try_disconnect().expect("disconnect queued");
                }
                Ok(MqttEvent::Outgoing(Outgoing::Disconnect)) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .expect("the intruder connected and left");
}

/// The collector stops mid-stream (a clean-session subscriber: what is
/// published meanwhile is lost) and starts again with its database: the
/// agent resends after the ack timeout.
pub async fn collector_restart(port: u16) {
    let store = SharedStore::default();
    let first = collector(port, &store, Setup::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let config = mqtt_config(port);
    let mut agent = TestAgent::start(dir.path(), "collector-restart", &config);
    stream(&mut agent, 10, Duration::from_millis(10)).await;
    agent.wait_drained(LONG).await;

    first.stop().await;
    stream(&mut agent, 10, Duration::from_millis(10)).await;
    agent
        .wait_status(SHORT, "an ack timeout while the collector is away", |s| {
            s.ack_timeouts >= 1
        })
        .await;
    assert!(agent.outbox.backlog() > 0);

    let second = collector(port, &store, Setup::default()).await;
    agent.wait_drained(LONG).await;
    let produced = agent.produced();
    let appended = agent.stop().await;
    assert_committed_exactly_once(&store, "collector-restart", &produced, &appended);
    second.stop().await;
}

/// The collector commits a batch but its ack is lost: the agent resends the
/// batch after the ack timeout, the collector sees every seq twice and
/// still counts each once.
pub async fn duplicate_delivery(port: u16) {
    let store = SharedStore::default();
    let collector = collector(
        port,
        &store,
        Setup {
            swallow_acks: 1,
            ..Setup::default()
        },
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let config = mqtt_config(port);
    let mut agent = TestAgent::start(dir.path(), "duplicates", &config);
    agent.wait_status(SHORT, "connected", |s| s.connected).await;
    // One burst under a batch: one envelope, whose ack is swallowed.
    agent.append(30);
    agent.wait_drained(LONG).await;
    let status = agent.status.borrow().clone();
    assert!(status.ack_timeouts >= 1, "{status:?}");
    assert!(lock(&store).duplicates >= 30, "the batch was resent");

    stream(&mut agent, 10, Duration::from_millis(10)).await;
    agent.wait_drained(LONG).await;
    let produced = agent.produced();
    let appended = agent.stop().await;
    assert_committed_exactly_once(&store, "duplicates", &produced, &appended);
    collector.stop().await;
}

/// The agent stops with a backlog (no collector yet), and again mid-stream;
/// each time a new `Delivery` on the same outbox directory finishes the job.
pub async fn agent_restart(port: u16) {
    let store = SharedStore::default();
    let dir = tempfile::tempdir().unwrap();
    let config = mqtt_config(port);
    let mut appended = BTreeMap::new();

    // 1. Published to nobody, then stopped: all of it stays in the outbox.
    let mut agent = TestAgent::start(dir.path(), "restart", &config);
    agent.append(80);
    agent
        .wait_status(SHORT, "the backlog was published", |s| s.sent_through >= 80)
        .await;
    assert_eq!(agent.outbox.backlog(), 80);
    appended.extend(agent.stop().await);

    // 2. A collector appears; a new agent on the same outbox, stopped mid-stream.
    let collector = collector(port, &store, Setup::default()).await;
    let mut agent = TestAgent::start(dir.path(), "restart", &config);
    assert_eq!(
        agent.outbox.backlog(),
        80,
        "the backlog survived the restart"
    );
    stream(&mut agent, 15, Duration::from_millis(5)).await;
    appended.extend(agent.stop().await);

    // 3. And once more, until everything is acknowledged.
    let mut agent = TestAgent::start(dir.path(), "restart", &config);
    stream(&mut agent, 5, Duration::from_millis(5)).await;
    agent.wait_drained(LONG).await;
    let produced = agent.produced();
    appended.extend(agent.stop().await);
    assert_committed_exactly_once(&store, "restart", &produced, &appended);
    collector.stop().await;
}

/// An agent that vanishes without a clean disconnect leaves its last will:
/// the retained `offline` status without `at`.
pub async fn last_will(port: u16) {
    let store = SharedStore::default();
    let collector = collector(port, &store, Setup::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let agent = TestAgent::start(dir.path(), "will", &mqtt_config(port));
    wait_until(SHORT, "presence online", || {
        lock(&store)
            .presence
            .get("will")
            .is_some_and(|p| p.status == Presence::Online)
    })
    .await;
    agent.abort().await;
    wait_until(SHORT, "the last will (offline, no time)", || {
        lock(&store)
            .presence
            .get("will")
            .is_some_and(|p| p.status == Presence::Offline && p.at.is_none())
    })
    .await;
    collector.stop().await;
}

/// Mosquitto (`persistence false`) is killed and started again mid-stream:
/// every session and queued message is gone, and nothing is lost.
pub async fn broker_restart(broker: &mut Mosquitto) {
    let port = broker.port;
    let store = SharedStore::default();
    let collector = collector(port, &store, Setup::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let config = mqtt_config(port);
    let mut agent = TestAgent::start(dir.path(), "broker-restart", &config);
    agent.wait_status(SHORT, "connected", |s| s.connected).await;
    stream(&mut agent, 15, Duration::from_millis(10)).await;
    broker.restart();
    stream(&mut agent, 15, Duration::from_millis(10)).await;
    agent
        .wait_status(SHORT, "reconnected to the new broker", |s| {
            s.connected && s.connects >= 2 && s.session_present == Some(false)
        })
        .await;
    stream(&mut agent, 10, Duration::from_millis(10)).await;
    agent.wait_drained(LONG).await;
    let produced = agent.produced();
    let appended = agent.stop().await;
    assert_committed_exactly_once(&store, "broker-restart", &produced, &appended);
    collector.stop().await;
}

/// The broker requires a username and password: the agent reads its
/// password from `mqtt.password_file` (trailing newline trimmed) and
/// delivers; a wrong password never connects and says why.
pub async fn credentials(port: u16, users: &[(&str, &str)]) {
    let store = SharedStore::default();
    let (collector_user, collector_password) = users[0];
    let (agent_user, agent_password) = users[1];
    let collector = collector(
        port,
        &store,
        Setup {
            credentials: Some((collector_user.into(), collector_password.into())),
            ..Setup::default()
        },
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let password_file = dir.path().join("mqtt-password");
    std::fs::write(&password_file, format!("{agent_password}\n")).unwrap();
    let mut config = mqtt_config(port);
    config.username = Some(agent_user.into());
    config.password_file = Some(password_file.clone());
    let mut agent = TestAgent::start(&dir.path().join("a"), "with-password", &config);
    stream(&mut agent, 5, Duration::from_millis(10)).await;
    agent.wait_drained(LONG).await;
    let produced = agent.produced();
    let appended = agent.stop().await;
    assert_committed_exactly_once(&store, "with-password", &produced, &appended);

    std::fs::write(&password_file, "not-the-password\n").unwrap();
    let mut refused = TestAgent::start(&dir.path().join("b"), "wrong-password", &config);
    let status = refused
        .wait_status(SHORT, "a refused connection", |s| s.last_error.is_some())
        .await;
    assert_eq!(status.connects, 0, "{status:?}");
    refused.stop().await;
    collector.stop().await;
}

/// Delivery over TLS (rustls with ring) to a Mosquitto listener that
/// requires a client certificate; the test collector uses the plain listener.
pub async fn tls_with_client_certificate() {
    let certs_dir = tempfile::tempdir().unwrap();
    let certs = TestCerts::generate(certs_dir.path());
    let tls_port = crate::brokers::free_port();
    let broker = Mosquitto::start_with(
        &mosquitto_bin(),
        &format!(
            "listener {tls_port} 127.0.0.1\ncafile {}\ncertfile {}\nkeyfile {}\nrequire_certificate true\n",
            certs.ca.display(),
            certs.server_cert.display(),
            certs.server_key.display(),
        ),
    );
    wait_for_port(tls_port, SHORT);
    let store = SharedStore::default();
    let collector = collector(broker.port, &store, Setup::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = mqtt_config(tls_port);
    config.tls = Some(labhours_shared::config::TlsConfig {
        ca_file: certs.ca.clone(),
        client_cert_file: Some(certs.client_cert.clone()),
        client_key_file: Some(certs.client_key.clone()),
    });
    let mut agent = TestAgent::start(dir.path(), "tls-agent", &config);
    agent
        .wait_status(SHORT, "connected over TLS", |s| s.connected)
        .await;
    stream(&mut agent, 5, Duration::from_millis(10)).await;
    agent.wait_drained(LONG).await;
    let produced = agent.produced();
    let appended = agent.stop().await;
    assert_committed_exactly_once(&store, "tls-agent", &produced, &appended);

    // Without the client certificate the broker refuses the handshake.
    config.tls = Some(labhours_shared::config::TlsConfig {
        ca_file: certs.ca.clone(),
        client_cert_file: None,
        client_key_file: None,
    });
    let other = tempfile::tempdir().unwrap();
    let mut refused = TestAgent::start(other.path(), "tls-no-cert", &config);
    let status = refused
        .wait_status(SHORT, "a refused TLS connection", |s| {
            s.last_error.is_some()
        })
        .await;
    assert_eq!(
        status.connects,
        0,
        "{status:?}; broker log: {}",
        broker.log()
    );
    refused.stop().await;
    collector.stop().await;
}
