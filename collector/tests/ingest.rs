//! The collector's ingest, run for real: embedded rumqttd on a free port, a
//! temp data dir, and test agents that are plain MQTT clients.

mod support;

use std::path::Path;
use std::time::Duration;

use labhours_collector::app::{self, Running};
use labhours_collector::config::CollectorConfig;
use labhours_collector::ingest::IngestOptions;
use labhours_shared::wire::{EventKind, Presence, SCHEMA_VERSION};
use support::*;

fn config(data_dir: &Path, port: u16) -> CollectorConfig {
    let mut config = CollectorConfig {
        data_dir: data_dir.to_owned(),
        ..CollectorConfig::default()
    };
    config.mqtt.embedded_listen = ([127, 0, 0, 1], port).into();
    config.http.listen = ([127, 0, 0, 1], 0).into();
    config
}

async fn start(data_dir: &Path) -> Running {
    let running = app::start(config(data_dir, 0), IngestOptions::default())
        .await
        .expect("collector starts");
    tokio::time::timeout(WAIT, running.subscribed())
        .await
        .expect("ingest subscribed in time");
    running
}

async fn agent(running: &Running, agent_id: &str) -> TestAgent {
    let addr = running.broker_addr().expect("embedded broker");
    TestAgent::connect(&addr.ip().to_string(), addr.port(), agent_id).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_order_batches_are_acked_through_their_last_seq_and_stored_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let running = start(dir.path()).await;
    let mut a = agent(&running, "agent-1").await;
    for (i, first) in [1u64, 11, 21].into_iter().enumerate() {
        a.publish(&faults("agent-1", first - 1, first..=first + 9))
            .await;
        a.ack_through(first + 9).await;
        let db = db(dir.path());
        assert_backed(&db, "agent-1", 1, first + 9);
        assert_eq!(stored_seqs(&db, "agent-1").len(), 10 * (i + 1));
    }
    let db = db(dir.path());
    assert_eq!(stored_seqs(&db, "agent-1"), (1..=30).collect::<Vec<_>>());
    assert_eq!(committed_through(&db, "agent-1"), Some(30));
    running.shutdown().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resent_envelope_is_stored_once_and_acked_again() {
    let dir = tempfile::tempdir().expect("tempdir");
    let running = start(dir.path()).await;
    let mut a = agent(&running, "agent-dup").await;
    let env = faults("agent-dup", 0, 1..=5);
    a.publish(&env).await;
    a.ack_through(5).await;
    a.publish(&env).await;
    a.ack_through(5).await;
    assert_eq!(
        stored_seqs(&db(dir.path()), "agent-dup"),
        vec![1, 2, 3, 4, 5]
    );
    let stats = running.stats();
    assert_eq!((stats.events_stored, stats.duplicates), (5, 5));
    running.shutdown().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_order_batches_hold_the_ack_until_the_gap_closes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let running = start(dir.path()).await;
    let mut a = agent(&running, "agent-ooo").await;
    a.publish(&faults("agent-ooo", 0, 5..=8)).await;
    let ack = a.next_ack().await;
    assert_eq!(
        ack.committed_through, 0,
        "nothing is committed without seqs 1-4"
    );
    assert_eq!(stored_seqs(&db(dir.path()), "agent-ooo"), vec![5, 6, 7, 8]);
    a.publish(&faults("agent-ooo", 0, 1..=4)).await;
    a.ack_through(8).await;
    assert_backed(&db(dir.path()), "agent-ooo", 1, 8);
    running.shutdown().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_event_closes_the_gap_it_names() {
    let dir = tempfile::tempdir().expect("tempdir");
    let running = start(dir.path()).await;
    let mut a = agent(&running, "agent-drop").await;
    a.publish(&faults("agent-drop", 0, 1..=2)).await;
    a.ack_through(2).await;
    // Seqs 3-4 were dropped by the outbox; 7 says so.
    a.publish(&envelope(
        "agent-drop",
        2,
        vec![fault(5), fault(6), dropped(7, 3, 4)],
    ))
    .await;
    a.ack_through(7).await;
    let db = db(dir.path());
    assert_eq!(stored_seqs(&db, "agent-drop"), vec![1, 2, 5, 6, 7]);
    assert_backed(&db, "agent-drop", 1, 7);
    running.shutdown().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_contact_counts_from_the_agents_acked_through() {
    let dir = tempfile::tempdir().expect("tempdir");
    let running = start(dir.path()).await;
    let mut a = agent(&running, "agent-old").await;
    a.publish(&faults("agent-old", 41, 42..=43)).await;
    a.ack_through(43).await;
    // Later the agent says a collector acked through 60 (e.g. this one's
    // database was reset meanwhile): the floor moves, and the hole is recorded.
    a.publish(&faults("agent-old", 60, 61..=61)).await;
    a.ack_through(61).await;
    let db = db(dir.path());
    let raised: (i64, i64) = db
        .query_row(
            "SELECT skipped_first, skipped_last FROM floor_raises WHERE agent_id = 'agent-old'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .expect("one floor raise");
    assert_eq!(raised, (44, 60));
    assert_eq!(running.stats().floor_raises, 1);
    running.shutdown().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_agent_claiming_the_first_ones_id_is_quarantined_not_merged() {
    let dir = tempfile::tempdir().expect("tempdir");
    let running = start(dir.path()).await;
    let mut first = agent(&running, "twin").await;
    first.publish(&faults("twin", 0, 1..=3)).await;
    first.ack_through(3).await;
    // Another PC configured with the same agent_id: its own seqs 1-4.
    let mut other = envelope("twin", 0, (1..=4).map(fault).collect());
    for e in &mut other.events {
        e.kind = EventKind::Fault {
            source: "other-pc".into(),
            message: format!("other {}", e.seq),
        };
    }
    first.publish(&other).await;
    first.ack_through(4).await;
    let db = db(dir.path());
    assert_eq!(stored_seqs(&db, "twin"), vec![1, 2, 3, 4]);
    let first_three: String = db
        .query_row(
            "SELECT payload FROM events WHERE agent_id = 'twin' AND seq = 2",
            [],
            |r| r.get(0),
        )
        .expect("seq 2");
    assert!(
        first_three.contains("meter:main"),
        "the first agent's event is kept: {first_three}"
    );
    let conflicts: i64 = db
        .query_row(
            "SELECT count(*) FROM quarantine WHERE reason LIKE 'agent_id conflict%'",
            [],
            |r| r.get(0),
        )
        .expect("count");
    assert_eq!(conflicts, 3);
    assert_eq!(running.stats().id_conflicts, 3);
    running.shutdown().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_payloads_are_quarantined_with_their_reason_and_ingest_goes_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    let running = start(dir.path()).await;
    let mut a = agent(&running, "agent-bad").await;
    let topic = a.events_topic();

    a.publish_raw(&topic, b"{\"v\":1, \"agent_id\": tru".to_vec())
        .await;
    // A version this build does not know (2 is the current envelope version).
    let mut v3 = serde_json::to_value(faults("agent-bad", 0, 1..=1)).expect("json");
    v3["v"] = 3.into();
    a.publish_raw(&topic, v3.to_string().into_bytes()).await;
    let mut big = fault(1);
    big.kind = EventKind::Fault {
        source: "meter:main".into(),
        message: "x".repeat(1536 * 1024),
    };
    a.publish(&envelope("agent-bad", 0, vec![big])).await;
    a.publish(&faults("agent-somebody-else", 0, 1..=1)).await;
    a.publish(&faults("agent-bad", 0, 1..=3)).await;
    a.ack_through(3).await;

    let db = db(dir.path());
    let reasons = quarantine_reasons(&db);
    assert_eq!(reasons.len(), 4, "{reasons:#?}");
    assert!(reasons.iter().all(|(t, ..)| *t == topic));
    assert!(reasons[0].1.contains("not valid JSON"), "{}", reasons[0].1);
    assert!(
        reasons[1].1.contains("schema version 3"),
        "{}",
        reasons[1].1
    );
    assert!(reasons[2].1.starts_with("oversized"), "{}", reasons[2].1);
    assert_eq!(reasons[2].2, 64 * 1024, "only the first 64 KiB are kept");
    assert!(reasons[2].3 > 1536 * 1024);
    assert!(reasons[3].1.contains("differs from"), "{}", reasons[3].1);
    assert_eq!(stored_seqs(&db, "agent-bad"), vec![1, 2, 3]);
    assert!(stored_seqs(&db, "agent-somebody-else").is_empty());
    assert_eq!(running.stats().quarantined, 4);
    running.shutdown().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retained_status_messages_set_presence_in_the_registry() {
    let dir = tempfile::tempdir().expect("tempdir");
    let running = start(dir.path()).await;
    let a = agent(&running, "agent-st").await;
    a.publish_status(&status("agent-st", Presence::Online))
        .await;
    let presence = |dir: &Path| -> Option<String> {
        db(dir)
            .query_row(
                "SELECT presence FROM agents WHERE agent_id = 'agent-st'",
                [],
                |r| r.get(0),
            )
            .ok()
    };
    eventually("presence online", || {
        presence(dir.path()).as_deref() == Some("online")
    })
    .await;
    let mut will = status("agent-st", Presence::Offline);
    will.at = None;
    a.publish_status(&will).await;
    eventually("presence offline", || {
        presence(dir.path()).as_deref() == Some("offline")
    })
    .await;
    assert_eq!(running.stats().statuses, 2);
    assert_eq!(SCHEMA_VERSION, will.v);
    running.shutdown().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn committed_state_survives_a_restart_on_the_same_data_dir() {
    let dir = tempfile::tempdir().expect("tempdir");
    let running = start(dir.path()).await;
    let mut a = agent(&running, "agent-rs").await;
    a.publish(&faults("agent-rs", 0, 1..=4)).await;
    a.ack_through(4).await;
    a.publish(&faults("agent-rs", 0, 7..=8)).await;
    a.ack_through(4).await;
    drop(a);
    running.shutdown().await.expect("clean shutdown");
    assert_eq!(committed_through(&db(dir.path()), "agent-rs"), Some(4));

    // A new collector (its broker on a new port) on the same data dir.
    let running = start(dir.path()).await;
    let mut a = agent(&running, "agent-rs").await;
    a.publish(&faults("agent-rs", 0, 1..=4)).await;
    a.ack_through(4).await;
    a.publish(&faults("agent-rs", 4, 5..=6)).await;
    a.ack_through(8).await;
    assert_eq!(
        stored_seqs(&db(dir.path()), "agent-rs"),
        (1..=8).collect::<Vec<_>>()
    );
    assert_eq!(running.stats().duplicates, 4);
    running.shutdown().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_serves_until_its_shutdown_future_completes_and_then_returns_ok() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let collector = tokio::spawn(labhours_collector::run(config(dir.path(), port), async {
        let _ = stop_rx.await;
    }));
    let mut a = TestAgent::connect("127.0.0.1", port, "agent-run").await;
    a.publish_until_acked(&faults("agent-run", 0, 1..=3), 3)
        .await;
    stop_tx.send(()).expect("collector running");
    tokio::time::timeout(WAIT, collector)
        .await
        .expect("run returns after shutdown")
        .expect("run task")
        .expect("run returns Ok");
    assert_eq!(committed_through(&db(dir.path()), "agent-run"), Some(3));
    // Quiet: nothing more arrives for this agent.
    a.no_ack_for(Duration::from_millis(200)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_http_api_answers_on_its_bound_port_and_stops_with_the_collector() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().expect("temp dir");
    let running = start(dir.path()).await;
    let addr = running.http_addr();
    assert_ne!(addr.port(), 0);
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream
        .write_all(b"GET /api/v1/healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .expect("send");
    let mut answer = String::new();
    tokio::time::timeout(WAIT, stream.read_to_string(&mut answer))
        .await
        .expect("answer in time")
        .expect("read");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains(r#"{"status":"ok","#), "{answer}");
    tokio::time::timeout(WAIT, running.shutdown())
        .await
        .expect("stops in time")
        .expect("clean stop");
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}
