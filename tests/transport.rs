//! The embedded broker's transport security against the real collector
//! (embedded rumqttd, real ingest and store) and real agents' delivery
//! (docs/design/trust.md#transport): with `[mqtt] require_credentials` a
//! CONNECT without a valid per-agent credential is refused; an agent
//! connected with valid credentials and its own enrolled key cannot get
//! events stored under another agent's id (quarantined with the reason);
//! with `[mqtt.embedded_tls]` agents deliver over TLS and a plaintext
//! client is refused on that listener.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use labhours_collector::app::Running;
use labhours_collector::broker::credentials;
use labhours_shared::config::{ServerTlsConfig, TlsConfig};
use labhours_shared::trust::{ChainHash, Signer, key_file};
use labhours_shared::wire::{ChainedEnvelope, Event, EventKind, RawRecord, TopicKind, Topics};
use labhours_tests::agent::{PREFIX, TestAgent, mqtt_config};
use labhours_tests::live_agent::{self, wait_until};
use labhours_tests::tls::TestCerts;
use rumqttc::{
    AsyncClient, Event as MqttEvent, MqttOptions, Packet, QoS, TlsConfiguration, Transport,
};

const A: &str = "lab-a";
const B: &str = "lab-b";

fn key(dir: &Path, name: &str) -> Arc<Signer> {
    Arc::new(key_file::generate(&dir.join(name)).expect("key"))
}

/// Issues `agent`'s broker password as `agents credential` does and writes
/// it to a file for the agent's `password_file`.
fn credential(data_dir: &Path, dir: &Path, agent: &str) -> (String, std::path::PathBuf) {
    let store = labhours_collector::store::Store::open(
        data_dir,
        labhours_collector::store::Durability::Full,
    )
    .expect("store");
    let secret = credentials::issue(store.connection(), agent, Timestamp::now()).expect("issue");
    let file = dir.join(format!("{agent}.password"));
    std::fs::write(&file, format!("{secret}\n")).expect("password file");
    (secret, file)
}

async fn start_collector(data_dir: &Path, tls: Option<&TestCerts>) -> Running {
    let mut config = live_agent::collector_config(data_dir, 0);
    config.mqtt.require_credentials = true;
    config.mqtt.embedded_tls = tls.map(|certs| ServerTlsConfig {
        cert_file: certs.server_cert.clone(),
        key_file: certs.server_key.clone(),
    });
    let collector = labhours_collector::app::start(
        config,
        labhours_collector::ingest::IngestOptions::default(),
    )
    .await
    .expect("collector starts");
    // Subscribed: the ingest's own client got in with its internal login.
    tokio::time::timeout(Duration::from_secs(10), collector.subscribed())
        .await
        .expect("collector subscribed");
    collector
}

/// An MQTT client: connects, and publishes `payloads` (QoS 1, each
/// PUBACKed) once connected. Err: the broker refused or dropped it before
/// its CONNACK (rumqttd closes the connection without one on bad auth).
async fn client(
    port: u16,
    client_id: &str,
    login: Option<(&str, &str)>,
    tls: Option<&Path>,
    payloads: Vec<(String, Vec<u8>)>,
) -> Result<(), String> {
    let mut options = MqttOptions::new(client_id, "127.0.0.1", port);
    options.set_max_packet_size(8 << 20, 8 << 20);
    if let Some((user, pass)) = login {
        options.set_credentials(user, pass);
    }
    if let Some(ca) = tls {
        let config = TlsConfig {
            ca_file: ca.to_owned(),
            client_cert_file: None,
            client_key_file: None,
        }
        .client_config("test")
        .expect("client TLS");
        options.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(config)));
    }
    let (mqtt, mut eventloop) = AsyncClient::new(options, 16);
    let expected = payloads.len();
    for (topic, payload) in payloads {
        mqtt.publish(topic, QoS::AtLeastOnce, false, payload)
            .await
            .expect("queued");
    }
    let outcome = tokio::time::timeout(Duration::from_secs(10), async {
        let mut connected = false;
        let mut acked = 0;
        loop {
            match eventloop.poll().await {
                Ok(MqttEvent::Incoming(Packet::ConnAck(_))) => connected = true,
                Ok(MqttEvent::Incoming(Packet::PubAck(_))) => acked += 1,
                Ok(_) => {}
                Err(e) if !connected => return Err(format!("refused: {e}")),
                Err(e) => panic!("{client_id}'s connection broke after CONNACK: {e}"),
            }
            if connected && acked == expected {
                return Ok(());
            }
        }
    })
    .await
    .expect("the broker answered within 10 s");
    let _ = mqtt.disconnect().await;
    outcome
}

fn record(seq: u64, prev: ChainHash, text: &str) -> RawRecord {
    let event = Event {
        seq,
        at: Timestamp::now(),
        kind: EventKind::Fault {
            source: "intruder".into(),
            message: text.into(),
        },
    };
    RawRecord {
        seq,
        prev,
        json: serde_json::to_string(&event).expect("json"),
    }
}

/// A version 2 envelope claiming `agent`, signed by `signer` (if any).
fn envelope(agent: &str, records: &[RawRecord], signer: Option<&Signer>) -> Vec<u8> {
    let message = ChainedEnvelope {
        agent_id: agent,
        instrument_id: "instrument-1",
        sent_at: Timestamp::now(),
        acked_through: 0,
        key_id: signer.map(Signer::key_id),
        rotation: signer.and_then(Signer::rotation),
    }
    .encode(records)
    .expect("encodes");
    match signer {
        Some(s) => s.sign_payload(&message),
        None => message,
    }
}

/// Every quarantined payload's kind and reason, oldest first.
fn quarantined(data_dir: &Path) -> Vec<(String, String)> {
    let conn = labhours_collector::store::open_read_only(data_dir).expect("database");
    conn.prepare("SELECT kind, reason FROM quarantine ORDER BY id")
        .expect("query")
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .expect("rows")
        .collect::<Result<_, _>>()
        .expect("rows")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_are_checked_at_connect_and_agent_a_cannot_inject_as_agent_b() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data_dir = dir.path().join("collector");
    let (a_key, b_key) = (key(dir.path(), "a.key"), key(dir.path(), "b.key"));
    live_agent::enrol(&data_dir, A, &a_key.public_key());
    live_agent::enrol(&data_dir, B, &b_key.public_key());
    let (a_secret, a_file) = credential(&data_dir, dir.path(), A);
    let (b_secret, b_file) = credential(&data_dir, dir.path(), B);
    let collector = start_collector(&data_dir, None).await;
    let port = collector.broker_addr().expect("embedded broker").port();

    // Refused at CONNECT: no login, a wrong password, another agent's
    // password, a client id that is not the username, the ingest's own
    // client id, the internal username with a guess.
    let refused = [
        ("nobody", None),
        (A, Some((A, "0".repeat(64)))),
        (A, Some((A, b_secret.clone()))),
        (B, Some((A, a_secret.clone()))),
        (credentials::INTERNAL_CLIENT_ID, Some((A, a_secret.clone()))),
        (
            credentials::INTERNAL_CLIENT_ID,
            Some((credentials::INTERNAL_USERNAME, a_secret.clone())),
        ),
    ];
    for (client_id, login) in &refused {
        let login = login.as_ref().map(|(u, p)| (*u, p.as_str()));
        let outcome = client(port, client_id, login, None, Vec::new()).await;
        assert!(outcome.is_err(), "{client_id} {login:?} was let in");
    }
    client(port, A, Some((A, &a_secret)), None, Vec::new())
        .await
        .expect("lab-a's own credential is accepted");

    // Both real agents deliver with their credentials and keys.
    let with_login = |user: &str, file: &Path| {
        let mut mqtt = mqtt_config(port);
        mqtt.username = Some(user.into());
        mqtt.password_file = Some(file.to_owned());
        mqtt
    };
    let mut agent_a = TestAgent::start_signed(
        &dir.path().join("a"),
        A,
        &with_login(A, &a_file),
        a_key.clone(),
    );
    let mut agent_b = TestAgent::start_signed(
        &dir.path().join("b"),
        B,
        &with_login(B, &b_file),
        b_key.clone(),
    );
    agent_a.append(10);
    agent_b.append(10);
    agent_a.wait_drained(Duration::from_secs(30)).await;
    agent_b.wait_drained(Duration::from_secs(30)).await;

    // lab-a, connected as itself with valid credentials, publishes under
    // lab-b's topic: as lab-b signed with its own key, as itself, and as
    // lab-b unsigned. The broker takes them (rumqttd has no publish ACL);
    // the ingest refuses each.
    let b_topic = Topics::new(PREFIX).topic(B, TopicKind::Events);
    let next_b = agent_b.outbox.next_seq();
    let head_b = agent_b.outbox.chain_head();
    let injected = [record(next_b, head_b, "injected by lab-a")];
    let before = quarantined(&data_dir).len();
    let forgeries = vec![
        (b_topic.clone(), envelope(B, &injected, Some(&a_key))),
        (b_topic.clone(), envelope(A, &injected, Some(&a_key))),
        (b_topic.clone(), envelope(B, &injected, None)),
    ];
    client(port, A, Some((A, &a_secret)), None, forgeries)
        .await
        .expect("lab-a connects and the broker takes its publishes");
    wait_until(
        Duration::from_secs(20),
        "the three forgeries quarantined",
        || quarantined(&data_dir).len() >= before + 3,
    )
    .await;
    // Ordered by kind: a topic mismatch is refused before the commit, the
    // trust failures inside it.
    let mut found = quarantined(&data_dir)[before..].to_vec();
    found.sort();
    let kinds: Vec<&str> = found.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        kinds,
        ["agent_mismatch", "unsigned", "wrong_agent"],
        "{found:?}"
    );
    assert!(
        found[0].1.contains("differs from \"lab-b\" in the topic"),
        "{found:?}"
    );
    assert!(
        found[1].1.contains("an agent with a key must sign"),
        "{found:?}"
    );
    assert!(found[2].1.contains("belongs to agent lab-a"), "{found:?}");

    // lab-b keeps flowing and holds only its own events, chain unbroken.
    agent_b.append(10);
    agent_b.wait_drained(Duration::from_secs(30)).await;
    let (stored, conflicts) = live_agent::stored(&data_dir, B);
    assert_eq!(conflicts, 0);
    assert_eq!(stored, (1..agent_b.outbox.next_seq()).collect::<Vec<_>>());
    assert_eq!(
        live_agent::assert_chain_unbroken(&data_dir, B),
        stored.len()
    );
    let injected_stored = live_agent::payloads(&data_dir, B, "fault")
        .iter()
        .chain(&live_agent::payloads(&data_dir, A, "fault"))
        .any(|p| p["message"].as_str() == Some("injected by lab-a"));
    assert!(!injected_stored, "lab-a's forgery was committed");

    // A removed credential is refused at the next CONNECT.
    {
        let store = labhours_collector::store::Store::open(
            &data_dir,
            labhours_collector::store::Durability::Full,
        )
        .expect("store");
        assert!(credentials::remove(store.connection(), A).expect("remove"));
    }
    let outcome = client(port, A, Some((A, &a_secret)), None, Vec::new()).await;
    assert!(outcome.is_err(), "a removed credential still connects");

    agent_a.stop().await;
    agent_b.stop().await;
    collector.shutdown().await.expect("collector stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedded_broker_speaks_tls_when_configured_and_refuses_plaintext() {
    let dir = tempfile::tempdir().expect("temp dir");
    let certs_dir = dir.path().join("certs");
    std::fs::create_dir_all(&certs_dir).expect("certs dir");
    let certs = TestCerts::generate(&certs_dir);
    let data_dir = dir.path().join("collector");
    let a_key = key(dir.path(), "a.key");
    live_agent::enrol(&data_dir, A, &a_key.public_key());
    let (a_secret, a_file) = credential(&data_dir, dir.path(), A);
    let collector = start_collector(&data_dir, Some(&certs)).await;
    let port = collector.broker_addr().expect("embedded broker").port();

    // Plaintext on the TLS listener: refused, even with a valid login.
    let outcome = client(port, A, Some((A, &a_secret)), None, Vec::new()).await;
    assert!(
        outcome.is_err(),
        "a plaintext client got in on the TLS listener"
    );
    // TLS with a wrong password: refused; with the right one: in.
    let outcome = client(port, A, Some((A, "nope")), Some(&certs.ca), Vec::new()).await;
    assert!(outcome.is_err(), "a wrong password got in over TLS");
    client(port, A, Some((A, &a_secret)), Some(&certs.ca), Vec::new())
        .await
        .expect("TLS with lab-a's credential");

    // A real agent delivers over TLS.
    let mut mqtt = mqtt_config(port);
    mqtt.username = Some(A.into());
    mqtt.password_file = Some(a_file);
    mqtt.tls = Some(TlsConfig {
        ca_file: certs.ca.clone(),
        client_cert_file: None,
        client_key_file: None,
    });
    let mut agent = TestAgent::start_signed(&dir.path().join("a"), A, &mqtt, a_key);
    agent.append(50);
    agent.wait_drained(Duration::from_secs(30)).await;
    let (stored, conflicts) = live_agent::stored(&data_dir, A);
    assert_eq!(conflicts, 0);
    assert_eq!(stored, (1..=50).collect::<Vec<_>>());
    assert_eq!(live_agent::assert_chain_unbroken(&data_dir, A), 50);
    agent.stop().await;
    collector.shutdown().await.expect("collector stops");
}
