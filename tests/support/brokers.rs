//! Real MQTT brokers for the delivery tests: rumqttd embedded in the test
//! process, and a Mosquitto process the test can kill and start again.

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A loopback port nothing listens on right now.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    listener.local_addr().expect("local address").port()
}

/// Waits (at most `within`) until something accepts connections on the port.
pub fn wait_for_port(port: u16, within: Duration) {
    let deadline = Instant::now() + within;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    while TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_err() {
        assert!(
            Instant::now() < deadline,
            "nothing listens on {addr} after {within:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// rumqttd 0.20 running on its own thread for the rest of the test process
/// (it has no stop). No persistence, as in production.
#[derive(Debug)]
pub struct Rumqttd {
    pub port: u16,
}

impl Rumqttd {
    pub fn start() -> Self {
        Self::start_with_users(&[])
    }

    /// A broker that accepts only these username/password pairs (none: anyone).
    pub fn start_with_users(users: &[(&str, &str)]) -> Self {
        use rumqttd::{Broker, Config, ConnectionSettings, RouterConfig, ServerSettings};

        let port = free_port();
        let server = ServerSettings {
            name: "v4-test".into(),
            listen: SocketAddr::from(([127, 0, 0, 1], port)),
            tls: None,
            next_connection_delay_ms: 1,
            connections: ConnectionSettings {
                connection_timeout_ms: 60_000,
                max_payload_size: 4 * 1024 * 1024,
                max_inflight_count: 100,
                auth: (!users.is_empty()).then(|| {
                    users
                        .iter()
                        .map(|(u, p)| ((*u).to_owned(), (*p).to_owned()))
                        .collect()
                }),
                external_auth: None,
                dynamic_filters: true,
            },
        };
        let config = Config {
            id: 0,
            router: RouterConfig {
                max_connections: 100,
                max_outgoing_packet_count: 200,
                max_segment_size: 100 * 1024 * 1024,
                max_segment_count: 10,
                ..RouterConfig::default()
            },
            v4: Some(HashMap::from([("1".to_owned(), server)])),
            ..Config::default()
        };
        let mut broker = Broker::new(config);
        std::thread::Builder::new()
            .name(format!("rumqttd-{port}"))
            .spawn(move || {
                if let Err(e) = broker.start() {
                    eprintln!("rumqttd on port {port} stopped: {e}");
                }
            })
            .expect("spawn the broker thread");
        wait_for_port(port, Duration::from_secs(10));
        Self { port }
    }
}

/// The Mosquitto binary named by `LABHOURS_MOSQUITTO_BIN` (tests/interop/run.sh sets it).
pub fn mosquitto_bin() -> PathBuf {
    let bin = std::env::var_os("LABHOURS_MOSQUITTO_BIN").expect(
        "LABHOURS_MOSQUITTO_BIN must name the mosquitto binary (tests/interop/run.sh sets it)",
    );
    PathBuf::from(bin)
}

/// A Mosquitto process on a fixed loopback port, `persistence false`: a
/// restart loses every session and every queued message.
#[derive(Debug)]
pub struct Mosquitto {
    pub port: u16,
    bin: PathBuf,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl Mosquitto {
    pub fn start(bin: &Path) -> Self {
        Self::start_with(bin, "")
    }

    /// With `extra` appended to the config (e.g. a TLS listener).
    pub fn start_with(bin: &Path, extra: &str) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let port = free_port();
        let conf = dir.path().join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!("allow_anonymous true\npersistence false\nlistener {port} 127.0.0.1\n{extra}"),
        )
        .expect("write mosquitto.conf");
        let mut broker = Self {
            port,
            bin: bin.to_owned(),
            dir,
            child: None,
        };
        broker.spawn();
        broker
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("mosquitto.log"))
            .expect("mosquitto log file");
        let child = Command::new(&self.bin)
            .arg("-c")
            .arg(self.dir.path().join("mosquitto.conf"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.bin.display()));
        self.child = Some(child);
        wait_for_port(self.port, Duration::from_secs(10));
    }

    /// Kills the broker (no clean shutdown: clients see the connection drop).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills the broker and starts a fresh one on the same port.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// What the broker logged so far (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("mosquitto.log")).unwrap_or_default()
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        self.kill();
    }
}
