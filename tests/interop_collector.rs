//! Real-peer check: the collector's ingest against Mosquitto as an external
//! broker (`mqtt.external`), with test agents publishing through it.
//!
//! Ignored in `cargo test`; `tests/interop/run.sh` starts Mosquitto on a free
//! loopback port, sets `LABHOURS_MOSQUITTO=host:port` and runs these with
//! `--ignored`.

#[path = "../collector/tests/support/mod.rs"]
mod support;

use std::path::Path;

use labhours_collector::app::{self, Running};
use labhours_collector::config::{CollectorConfig, ExternalBroker};
use labhours_collector::ingest::IngestOptions;
use support::*;

fn broker() -> (String, u16) {
    let addr = std::env::var("LABHOURS_MOSQUITTO").expect(
        "LABHOURS_MOSQUITTO=host:port must name a running Mosquitto (tests/interop/run.sh sets it)",
    );
    let (host, port) = addr.rsplit_once(':').expect("host:port");
    (host.to_owned(), port.parse().expect("numeric port"))
}

/// Each test has its own topic prefix, so collectors of concurrent tests
/// never see (and ack) each other's agents.
fn config(
    prefix: &str,
    data_dir: &Path,
    client_id: &str,
    shared_group: Option<&str>,
) -> CollectorConfig {
    let (host, port) = broker();
    let mut config = CollectorConfig {
        data_dir: data_dir.to_owned(),
        ..CollectorConfig::default()
    };
    config.http.listen = ([127, 0, 0, 1], 0).into();
    config.mqtt.topic_prefix = prefix.into();
    config.mqtt.external = Some(ExternalBroker {
        host,
        port,
        client_id: client_id.into(),
        username: None,
        password_file: None,
        tls: None,
        shared_group: shared_group.map(str::to_owned),
    });
    config
}

async fn start(config: CollectorConfig) -> Running {
    let running = app::start(config, IngestOptions::default())
        .await
        .expect("collector starts");
    tokio::time::timeout(WAIT, running.subscribed())
        .await
        .expect("ingest subscribed to Mosquitto in time");
    running
}

async fn agent(prefix: &str, agent_id: &str) -> TestAgent {
    let (host, port) = broker();
    TestAgent::connect_under(prefix, &host, port, agent_id).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Mosquitto: run tests/interop/run.sh"]
async fn ingest_through_mosquitto_acks_only_committed_seqs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let running = start(config(
        "interop/ingest",
        dir.path(),
        "collector-mosq-1",
        None,
    ))
    .await;
    let mut a = agent("interop/ingest", "mosq-agent-1").await;

    a.publish(&faults("mosq-agent-1", 0, 5..=8)).await;
    assert_eq!(a.next_ack().await.committed_through, 0);
    a.publish(&faults("mosq-agent-1", 0, 1..=4)).await;
    a.ack_through(8).await;
    a.publish(&faults("mosq-agent-1", 0, 1..=4)).await;
    a.ack_through(8).await;
    a.publish_raw(&a.events_topic(), b"not json".to_vec()).await;
    a.publish(&envelope(
        "mosq-agent-1",
        8,
        vec![fault(9), dropped(12, 10, 11)],
    ))
    .await;
    a.ack_through(12).await;

    let db = db(dir.path());
    assert_eq!(
        stored_seqs(&db, "mosq-agent-1"),
        vec![1, 2, 3, 4, 5, 6, 7, 8, 9, 12]
    );
    assert_backed(&db, "mosq-agent-1", 1, 12);
    let reasons = quarantine_reasons(&db);
    assert_eq!(reasons.len(), 1);
    assert!(reasons[0].1.contains("not valid JSON"), "{}", reasons[0].1);
    running.shutdown().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Mosquitto: run tests/interop/run.sh"]
async fn mosquitto_keeps_the_collectors_session_across_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let running = start(config(
        "interop/session",
        dir.path(),
        "collector-mosq-2",
        None,
    ))
    .await;
    let mut a = agent("interop/session", "mosq-agent-2").await;
    a.publish(&faults("mosq-agent-2", 0, 1..=2)).await;
    a.ack_through(2).await;
    running.shutdown().await.expect("clean shutdown");

    // Published while the collector is away: Mosquitto queues it for the
    // collector's persistent session (clean_session = false).
    a.publish(&faults("mosq-agent-2", 2, 3..=4)).await;
    let running = start(config(
        "interop/session",
        dir.path(),
        "collector-mosq-2",
        None,
    ))
    .await;
    a.ack_through(4).await;
    assert_eq!(
        stored_seqs(&db(dir.path()), "mosq-agent-2"),
        vec![1, 2, 3, 4]
    );
    running.shutdown().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Mosquitto: run tests/interop/run.sh"]
async fn collectors_in_a_shared_group_each_receive_a_share_of_the_envelopes() {
    let dirs = [
        tempfile::tempdir().expect("tempdir"),
        tempfile::tempdir().expect("tempdir"),
    ];
    let one = start(config(
        "interop/shared",
        dirs[0].path(),
        "collector-share-1",
        Some("labhours"),
    ))
    .await;
    let two = start(config(
        "interop/shared",
        dirs[1].path(),
        "collector-share-2",
        Some("labhours"),
    ))
    .await;
    let a = agent("interop/shared", "mosq-agent-3").await;
    for first in (1..=191).step_by(10) {
        a.publish(&faults("mosq-agent-3", 0, first..=first + 9))
            .await;
    }
    let total = |one: &Running, two: &Running| {
        one.stats().events_stored
            + one.stats().duplicates
            + two.stats().events_stored
            + two.stats().duplicates
    };
    eventually("200 events received across the group", || {
        total(&one, &two) >= 200
    })
    .await;
    let mut all: Vec<u64> = stored_seqs(&db(dirs[0].path()), "mosq-agent-3");
    let from_two = stored_seqs(&db(dirs[1].path()), "mosq-agent-3");
    assert!(
        !all.is_empty() && !from_two.is_empty(),
        "both members get a share: {} and {}",
        all.len(),
        from_two.len()
    );
    all.extend(from_two);
    all.sort_unstable();
    assert_eq!(
        all,
        (1..=200).collect::<Vec<_>>(),
        "each envelope went to one member"
    );
    one.shutdown().await.expect("clean shutdown");
    two.shutdown().await.expect("clean shutdown");
}

/// A Mosquitto of this test's own with a TLS listener (certificates made
/// with the `openssl` command), killed when dropped.
struct TlsMosquitto {
    child: std::process::Child,
    plain_port: u16,
    tls_port: u16,
    ca: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for TlsMosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = std::process::Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("the openssl command runs (Debian package openssl)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn make_ca(dir: &Path, name: &str) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            &format!("/CN={name}"),
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.pem"),
        ],
    );
}

async fn tls_mosquitto() -> TlsMosquitto {
    // Same gate as the other tests here: run.sh has made sure Mosquitto is installed.
    let _ = broker();
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    make_ca(d, "ca");
    openssl(
        d,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=localhost",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
        ],
    );
    std::fs::write(
        d.join("san.ext"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\n",
    )
    .expect("write");
    openssl(
        d,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "san.ext",
            "-out",
            "server.pem",
        ],
    );
    // Mosquitto started as root drops to its own user, which must read these.
    {
        use std::os::unix::fs::PermissionsExt;
        let readable = |path: &Path, mode| {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod")
        };
        readable(d, 0o755);
        for file in ["ca.pem", "server.pem", "server.key"] {
            readable(&d.join(file), 0o644);
        }
    }
    let (plain_port, tls_port) = (free_port(), free_port());
    let conf = d.join("mosquitto.conf");
    std::fs::write(
        &conf,
        format!(
            "allow_anonymous true\npersistence false\n\
             listener {plain_port} 127.0.0.1\n\
             listener {tls_port} 127.0.0.1\ncafile {0}/ca.pem\ncertfile {0}/server.pem\nkeyfile {0}/server.key\n",
            d.display()
        ),
    )
    .expect("write");
    let child = std::process::Command::new("/usr/sbin/mosquitto")
        .arg("-c")
        .arg(&conf)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("mosquitto starts");
    let up = async {
        for port in [plain_port, tls_port] {
            while tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_err()
            {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    };
    tokio::time::timeout(WAIT, up)
        .await
        .expect("mosquitto listens");
    TlsMosquitto {
        child,
        plain_port,
        tls_port,
        ca: d.join("ca.pem"),
        _dir: dir,
    }
}

fn tls_config(data_dir: &Path, port: u16, ca: &Path) -> CollectorConfig {
    let mut config = CollectorConfig {
        data_dir: data_dir.to_owned(),
        ..CollectorConfig::default()
    };
    config.http.listen = ([127, 0, 0, 1], 0).into();
    config.mqtt.external = Some(ExternalBroker {
        host: "localhost".into(),
        port,
        client_id: "collector-tls".into(),
        username: None,
        password_file: None,
        tls: Some(labhours_shared::config::TlsConfig {
            ca_file: ca.to_owned(),
            client_cert_file: None,
            client_key_file: None,
        }),
        shared_group: None,
    });
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Mosquitto: run tests/interop/run.sh"]
async fn ingest_reaches_mosquitto_over_tls_and_refuses_a_server_its_ca_did_not_sign() {
    let mosquitto = tls_mosquitto().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let running = start(tls_config(dir.path(), mosquitto.tls_port, &mosquitto.ca)).await;
    let mut a = TestAgent::connect("127.0.0.1", mosquitto.plain_port, "tls-agent").await;
    a.publish(&faults("tls-agent", 0, 1..=3)).await;
    a.ack_through(3).await;
    assert_eq!(stored_seqs(&db(dir.path()), "tls-agent"), vec![1, 2, 3]);
    running.shutdown().await.expect("clean shutdown");

    // Another CA: the handshake fails, so the ingest never subscribes.
    let other = tempfile::tempdir().expect("tempdir");
    make_ca(other.path(), "other");
    let dir = tempfile::tempdir().expect("tempdir");
    let config = tls_config(
        dir.path(),
        mosquitto.tls_port,
        &other.path().join("other.pem"),
    );
    let running = app::start(config, IngestOptions::default())
        .await
        .expect("starts; connecting is retried in the background");
    let subscribed =
        tokio::time::timeout(std::time::Duration::from_secs(2), running.subscribed()).await;
    assert!(
        subscribed.is_err(),
        "subscribed through a server it cannot trust"
    );
    running.shutdown().await.expect("shutdown");
}
