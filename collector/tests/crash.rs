//! The collector as a process, killed with SIGKILL mid-stream and restarted
//! on the same data dir: every acked event is in the database, and resent
//! events are stored once.

mod support;

use std::path::Path;
use std::process::{Child, Command, Stdio};

use support::*;

/// The collector's process; SIGKILLed when dropped, so a failing test leaves
/// no collector behind.
struct Collector(Child);

impl Collector {
    fn kill(&mut self) {
        self.0.kill().expect("SIGKILL");
        self.0.wait().expect("reaped");
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn_collector(dir: &Path, port: u16) -> Collector {
    spawn_collector_with(dir, port, "warn", Stdio::inherit())
}

/// The collector binary on the embedded broker at `port`, logging at `level`.
fn spawn_collector_with(dir: &Path, port: u16, level: &str, stderr: Stdio) -> Collector {
    let config = dir.join("collector.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = {:?}\n[mqtt]\nembedded_listen = \"127.0.0.1:{port}\"\n[http]\nlisten = \"127.0.0.1:0\"\n[log]\nlevel = \"{level}\"\n",
            dir.join("data")
        ),
    )
    .expect("write config");
    Command::new(env!("CARGO_BIN_EXE_labhours-collector"))
        .args(["run", "--config"])
        .arg(&config)
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .map(Collector)
        .expect("collector starts")
}

/// First seq of the last batch of 10.
const LAST: u64 = 1996;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_collector_keeps_everything_it_acked_and_stores_resends_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let mut child = spawn_collector(dir.path(), port);
    let mut a = TestAgent::connect("127.0.0.1", port, "agent-crash").await;
    a.publish_until_acked(&faults("agent-crash", 0, 1..=5), 5)
        .await;

    // 200 batches of 10 without waiting; SIGKILL as soon as some are acked.
    for first in (6..=LAST).step_by(10) {
        a.publish(&faults("agent-crash", 5, first..=first + 9))
            .await;
    }
    while a.acked < 100 {
        a.next_ack().await;
    }
    child.kill();
    let acked = a.acked;
    drop(a);

    let data = dir.path().join("data");
    {
        let db = db(&data);
        let through = committed_through(&db, "agent-crash").expect("agent row");
        assert!(through >= acked, "stored {through} < acked {acked}");
        println!("SIGKILL after ack {acked}; the database had committed through {through}");
        assert_backed(&db, "agent-crash", 1, acked);
    }

    // Restart on the same data dir; the agent resends everything (as if it
    // had lost the acks: an agent never names an ack above what it sends).
    let mut child = spawn_collector(dir.path(), port);
    let mut a = TestAgent::connect("127.0.0.1", port, "agent-crash").await;
    a.publish_until_acked(&faults("agent-crash", 0, 1..=5), 5)
        .await;
    for first in (6..=LAST).step_by(10) {
        a.publish(&faults("agent-crash", 0, first..=first + 9))
            .await;
    }
    while a.acked < LAST + 9 {
        a.next_ack().await;
    }
    child.kill();
    let db = db(&data);
    assert_eq!(
        stored_seqs(&db, "agent-crash"),
        (1..=LAST + 9).collect::<Vec<_>>()
    );
    assert_eq!(committed_through(&db, "agent-crash"), Some(LAST + 9));
}

/// A payload above the embedded broker's limit never reaches ingest (the
/// broker drops the connection first); the collector still logs it, with
/// the client and the size, at the default log level.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_payload_leaves_a_log_line_with_its_client_and_size() {
    use std::io::{BufRead, BufReader};

    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    // The default level: rumqttd's own log is off there.
    let mut child = spawn_collector_with(dir.path(), port, "info", Stdio::piped());
    let stderr = child.0.stderr.take().expect("piped");
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let a = TestAgent::connect("127.0.0.1", port, "agent-big").await;
    let payload = vec![b'x'; 5 * 1024 * 1024];
    a.publish_raw(&a.events_topic(), payload).await;
    let deadline = std::time::Instant::now() + WAIT;
    let line = loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let line = rx
            .recv_timeout(left)
            .expect("a log line about the oversized payload");
        if line.contains("oversized payload") {
            break line;
        }
    };
    child.kill();
    assert!(line.contains("agent-big"), "{line}");
    assert!(line.contains("5242"), "the size is named: {line}");
}
