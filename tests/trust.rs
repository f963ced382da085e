//! Signed, hash-chained evidence against the real collector (embedded
//! broker, real ingest and store) and a real signing agent's delivery
//! (docs/design/trust.md): the agent's events arrive and are stored with
//! their chain; another client that publishes under its topic — with its
//! own enrolled key, an unknown key, a forged or garbled signature, no
//! signature, a rewritten event signed with the agent's own key (a fork),
//! or a revoked key — is quarantined with its reason, shows in the
//! exceptions inbox, and gets nothing committed, while the agent keeps
//! flowing.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use labhours_shared::trust::{ChainHash, Signer, key_file};
use labhours_shared::wire::{ChainedEnvelope, Event, EventKind, RawRecord, TopicKind, Topics};
use labhours_tests::agent::{PREFIX, TestAgent, mqtt_config};
use labhours_tests::http;
use labhours_tests::live_agent::{self, Delivered, Rig, wait_until};
use rumqttc::{AsyncClient, Event as MqttEvent, MqttOptions, Packet, QoS};

const AGENT: &str = "lab-a";
const OTHER: &str = "lab-b";
const RETIRED: &str = "lab-c";
const ROTATING: &str = "rotating-agent";

/// The child: the agent as `labhours-agent run` runs it, until SIGTERM.
#[test]
#[ignore = "child process of a_live_agent_rotates_its_key_mid_stream_without_losing_the_chain"]
fn rotation_child() {
    live_agent::run_child_until_signal();
}

fn key(dir: &Path, name: &str) -> Arc<Signer> {
    Arc::new(key_file::generate(&dir.join(name)).expect("key"))
}

/// Publishes one payload as a client of its own (QoS 1, waits for PUBACK).
async fn publish(port: u16, topic: &str, payload: Vec<u8>) {
    let mut options = MqttOptions::new("intruder", "127.0.0.1", port);
    options.set_max_packet_size(8 << 20, 8 << 20);
    let (client, mut eventloop) = AsyncClient::new(options, 16);
    client
        .publish(topic, QoS::AtLeastOnce, false, payload)
        .await
        .expect("queued");
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match eventloop.poll().await {
                Ok(MqttEvent::Incoming(Packet::PubAck(_))) => break,
                Ok(_) => {}
                Err(e) => panic!("intruder's connection: {e}"),
            }
        }
    })
    .await
    .expect("the broker took the publish");
    let _ = client.disconnect().await;
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

/// A version 2 envelope for `agent` claiming `key_id`, signed by `signer` (if any).
fn envelope(
    agent: &str,
    acked: u64,
    records: &[RawRecord],
    key_id: Option<&Signer>,
    signer: Option<&Signer>,
) -> Vec<u8> {
    let message = ChainedEnvelope {
        agent_id: agent,
        instrument_id: "instrument-1",
        sent_at: Timestamp::now(),
        acked_through: acked,
        key_id: key_id.map(Signer::key_id),
        rotation: key_id.and_then(Signer::rotation),
    }
    .encode(records)
    .expect("encodes");
    match signer {
        Some(s) => s.sign_payload(&message),
        None => message,
    }
}

fn stored_hash(data_dir: &Path, agent: &str, seq: u64) -> ChainHash {
    let conn = labhours_collector::store::open_read_only(data_dir).expect("db");
    let hash: Vec<u8> = conn
        .query_row(
            "SELECT chain_hash FROM events WHERE agent_id = ?1 AND seq = ?2",
            rusqlite::params![agent, seq as i64],
            |r| r.get(0),
        )
        .expect("stored");
    hash.try_into().expect("32 bytes")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_cannot_be_impersonated_and_keeps_flowing_while_forgeries_are_quarantined() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data_dir = dir.path().join("collector");
    let (a_key, b_key, c_key, stranger) = (
        key(dir.path(), "a.key"),
        key(dir.path(), "b.key"),
        key(dir.path(), "c.key"),
        key(dir.path(), "stranger.key"),
    );
    live_agent::enrol(&data_dir, AGENT, &a_key.public_key());
    live_agent::enrol(&data_dir, OTHER, &b_key.public_key());
    live_agent::enrol(&data_dir, RETIRED, &c_key.public_key());
    {
        let store = labhours_collector::store::Store::open(
            &data_dir,
            labhours_collector::store::Durability::Full,
        )
        .expect("store");
        labhours_collector::trust::revoke(
            store.connection(),
            RETIRED,
            &c_key.key_id(),
            Timestamp::now(),
        )
        .expect("revoke");
    }
    let collector = live_agent::start_collector(&data_dir).await;
    let port = collector.broker_addr().expect("embedded broker").port();
    let mqtt = mqtt_config(port);
    let mut agent = TestAgent::start_signed(&dir.path().join("agent"), AGENT, &mqtt, a_key.clone());
    agent.append(20);
    agent.wait_drained(Duration::from_secs(30)).await;

    let topics = Topics::new(PREFIX);
    let a_topic = topics.topic(AGENT, TopicKind::Events);
    let next = agent.outbox.next_seq();
    let head = agent.outbox.chain_head();
    let acked = next - 1;
    let forged_next = [record(next, head, "injected")];
    let mut garbled = envelope(AGENT, acked, &forged_next, Some(&a_key), Some(&a_key));
    let at = garbled
        .windows(8)
        .position(|w| w == b"injected")
        .expect("the event's text");
    garbled[at] = b'I';
    let h4 = stored_hash(&data_dir, AGENT, 4);
    let forgeries: Vec<(&str, String, Vec<u8>)> = vec![
        // lab-b publishes under lab-a's topic with its own enrolled key.
        (
            "wrong_agent",
            a_topic.clone(),
            envelope(AGENT, acked, &forged_next, Some(&b_key), Some(&b_key)),
        ),
        (
            "unknown_key",
            a_topic.clone(),
            envelope(AGENT, acked, &forged_next, Some(&stranger), Some(&stranger)),
        ),
        // Claims lab-a's key, signed by another.
        (
            "bad_signature",
            a_topic.clone(),
            envelope(AGENT, acked, &forged_next, Some(&a_key), Some(&b_key)),
        ),
        // lab-a's own signature, one byte changed in transit.
        ("bad_signature", a_topic.clone(), garbled),
        // Unsigned, for an agent with a key.
        (
            "unsigned",
            a_topic.clone(),
            envelope(AGENT, acked, &forged_next, None, None),
        ),
        // A rewritten seq 5 with a valid chain from seq 4, signed with
        // lab-a's key (a restored or stolen agent rewriting history).
        (
            "fork",
            a_topic.clone(),
            envelope(
                AGENT,
                4,
                &[record(5, h4, "rewritten")],
                Some(&a_key),
                Some(&a_key),
            ),
        ),
        (
            "revoked_key",
            topics.topic(RETIRED, TopicKind::Events),
            envelope(
                RETIRED,
                0,
                &[record(1, [0; 32], "old key")],
                Some(&c_key),
                Some(&c_key),
            ),
        ),
    ];
    let expected: Vec<&str> = forgeries.iter().map(|(k, _, _)| *k).collect();
    for (_, topic, payload) in forgeries {
        publish(port, &topic, payload).await;
    }
    wait_until(Duration::from_secs(20), "every forgery quarantined", || {
        live_agent::trust_refusals(&data_dir).len() >= expected.len()
    })
    .await;
    let refusals = live_agent::trust_refusals(&data_dir);
    let kinds: Vec<&str> = refusals.iter().map(|(k, _, _)| k.as_str()).collect();
    assert_eq!(kinds, expected, "{refusals:?}");
    assert!(
        refusals[0].2.contains("belongs to agent lab-b"),
        "{refusals:?}"
    );

    // The agent keeps flowing: its next events (the seq the forgeries
    // claimed included) arrive, and nothing of the forgeries is stored.
    agent.append(20);
    agent.wait_drained(Duration::from_secs(30)).await;
    let (stored, conflicts) = live_agent::stored(&data_dir, AGENT);
    assert_eq!(conflicts, 0);
    assert_eq!(stored, (1..agent.outbox.next_seq()).collect::<Vec<_>>());
    let chained = live_agent::assert_chain_unbroken(&data_dir, AGENT);
    assert_eq!(chained, stored.len());
    for field in ["injected", "Injected", "rewritten", "old key"] {
        let found = live_agent::payloads(&data_dir, AGENT, "fault")
            .iter()
            .chain(&live_agent::payloads(&data_dir, RETIRED, "fault"))
            .any(|p| p["message"].as_str() == Some(field));
        assert!(!found, "{field:?} was committed");
    }
    let evidence: i64 = labhours_collector::store::open_read_only(&data_dir)
        .expect("db")
        .query_row(
            "SELECT count(*) FROM signed_envelopes WHERE agent_id = ?1",
            [AGENT],
            |r| r.get(0),
        )
        .expect("count");
    assert!(evidence >= 2, "the signed envelopes are kept as evidence");

    // The admin sees them in the exceptions inbox, and the agents page
    // shows the agent's key.
    let addr = collector.http_addr();
    let inbox = http::get(addr, "/exceptions?kind=trust")
        .await
        .expect("exceptions page");
    let text = inbox.text().expect("html");
    assert!(text.contains("Trust failure"), "{text}");
    assert!(text.contains("belongs to agent lab-b"), "{text}");
    let agents = http::get(addr, "/agents").await.expect("agents page");
    let text = agents.text().expect("html");
    assert!(
        text.contains(&a_key.key_id().to_string()),
        "the agents page names lab-a's key: {text}"
    );
    agent.stop().await;
    collector.shutdown().await.expect("collector stops");
}

/// Rotation under a live agent (the agent's own `run`, in a child process,
/// reading power from a simulator and publishing through the real
/// collector's embedded broker): it runs on its enrolled key, is stopped
/// with SIGTERM mid-stream, and restarts with `[signing] key_file` = a new
/// key and `previous_key_file` = the old one. The collector enrols the new
/// key on the old one's signature, with no admin step; every event arrives
/// once, the chain is unbroken across the switch. Then the admin revokes
/// the old key: envelopes signed with it, and a second rotation it
/// endorses, are quarantined, while the agent keeps flowing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_agent_rotates_its_key_mid_stream_without_losing_the_chain() {
    let dir = tempfile::tempdir().expect("temp dir");
    let old_path = dir.path().join("old.key");
    let new_path = dir.path().join("new.key");
    let old = Arc::new(key_file::generate(&old_path).expect("old key"));
    let new = key_file::generate(&new_path).expect("new key");
    let stranger_path = dir.path().join("stranger.key");
    key_file::generate(&stranger_path).expect("stranger key");
    let signing = |rotating: bool| {
        let mut text = format!(
            "[log]\n        level = \"warn\"\n        [signing]\n        key_file = {:?}",
            if rotating { &new_path } else { &old_path }
        );
        if rotating {
            text += &format!("\n        previous_key_file = {old_path:?}");
        }
        text
    };
    let rig = Rig::start(dir.path(), (ROTATING, "rot-nmr"), &signing(false)).await;
    let data_dir = &rig.data_dir;
    live_agent::enrol(data_dir, ROTATING, &old.public_key());
    let stored_count = || live_agent::stored(data_dir, ROTATING).0.len();

    let mut child = live_agent::spawn("rotation_child", &rig.config_path);
    wait_until(Duration::from_secs(30), "events under the old key", || {
        stored_count() >= 5
    })
    .await;
    rig.sim.update(1, |u| u.watts = 500.0);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let exit = child.terminate(Duration::from_secs(15)).await;
    assert!(exit.success(), "{exit:?}");
    let before_rotation = stored_count();

    // Rotate: new key, old key as previous; the admin does nothing.
    let toml = live_agent::agent_toml(
        (ROTATING, "rot-nmr"),
        &rig.outbox,
        &rig.results,
        rig.meter.addr(),
        rig.mqtt_port,
        &signing(true),
    );
    std::fs::write(&rig.config_path, toml).expect("rotated config");
    let mut child = live_agent::spawn("rotation_child", &rig.config_path);
    rig.sim.update(1, |u| u.watts = 50.0);
    let rotated_to = |key: &Signer| {
        labhours_collector::store::open_read_only(data_dir)
            .expect("db")
            .query_row(
                "SELECT rotated_from FROM agent_keys WHERE key_id = ?1 AND agent_id = ?2",
                rusqlite::params![key.key_id().to_string(), ROTATING],
                |r| r.get::<_, Option<String>>(0),
            )
            .ok()
            .flatten()
    };
    wait_until(
        Duration::from_secs(30),
        "the new key enrolled by rotation",
        || rotated_to(&new).is_some(),
    )
    .await;
    assert_eq!(rotated_to(&new), Some(old.key_id().to_string()));
    wait_until(Duration::from_secs(30), "events under the new key", || {
        stored_count() >= before_rotation + 5
    })
    .await;

    // The old key cannot endorse a second successor.
    let port = rig.mqtt_port;
    let topic = Topics::new(PREFIX).topic(ROTATING, TopicKind::Events);
    let stranger_rotated = Arc::new(
        key_file::load(&stranger_path)
            .expect("key")
            .rotated_from(&old, ROTATING),
    );
    let fake = [record(1_000_000, [7; 32], "second successor")];
    publish(
        port,
        &topic,
        envelope(
            ROTATING,
            0,
            &fake,
            Some(&stranger_rotated),
            Some(&stranger_rotated),
        ),
    )
    .await;
    wait_until(
        Duration::from_secs(20),
        "the second successor quarantined",
        || !live_agent::trust_refusals(data_dir).is_empty(),
    )
    .await;

    // The admin revokes the old key: what it signs is refused from now on,
    // and so is a rotation it endorses.
    {
        let store = labhours_collector::store::Store::open(
            data_dir,
            labhours_collector::store::Durability::Full,
        )
        .expect("store");
        labhours_collector::trust::revoke(
            store.connection(),
            ROTATING,
            &old.key_id(),
            Timestamp::now(),
        )
        .expect("revoke");
    }
    let fake = [record(1_000_001, [7; 32], "old key after revoke")];
    publish(
        port,
        &topic,
        envelope(ROTATING, 0, &fake, Some(&old), Some(&old)),
    )
    .await;
    wait_until(
        Duration::from_secs(20),
        "both forgeries quarantined",
        || live_agent::trust_refusals(data_dir).len() >= 2,
    )
    .await;
    let refusals = live_agent::trust_refusals(data_dir);
    let kinds: Vec<&str> = refusals.iter().map(|(k, _, _)| k.as_str()).collect();
    assert_eq!(kinds, ["unknown_key", "revoked_key"], "{refusals:?}");
    assert!(
        refusals[0].2.contains("already rotated to key"),
        "{refusals:?}"
    );
    assert!(refusals[1].2.contains("revoked at"), "{refusals:?}");

    // The agent keeps flowing on the new key after the revocation.
    let after_revoke = stored_count();
    rig.sim.update(1, |u| u.watts = 500.0);
    wait_until(
        Duration::from_secs(30),
        "events after the revocation",
        || stored_count() >= after_revoke + 3,
    )
    .await;
    let exit = child.terminate(Duration::from_secs(15)).await;
    assert!(exit.success(), "{exit:?}");
    let new = Arc::new(new.rotated_from(&old, ROTATING));
    let next_seq =
        live_agent::drain_signed(&rig.outbox, ROTATING, "rot-nmr", rig.mqtt_port, Some(new)).await;
    let delivered = Delivered::count(data_dir, ROTATING, next_seq, &Default::default());
    delivered.assert_exactly_once(0);
    assert_eq!(
        live_agent::assert_chain_unbroken(data_dir, ROTATING),
        delivered.stored.len()
    );
    assert_eq!(
        live_agent::trust_refusals(data_dir).len(),
        2,
        "the agent's own envelopes were all accepted"
    );
    rig.collector.shutdown().await.expect("collector stops");
}
