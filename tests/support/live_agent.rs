//! A live agent in a child process (the test binary runs itself, entering
//! a test that calls the agent's own `run()`), for tests that SIGKILL it or
//! take its disk away, and what they check afterwards in the collector's store.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use labhours_agent::clock::SystemClock;
use labhours_agent::config::AgentConfig;
use labhours_agent::delivery::Delivery;
use labhours_agent::outbox::{Outbox, OutboxSettings};

pub use crate::delivery_scenarios::wait_until;

/// A live agent's config: one-second summaries and heartbeats, power read
/// every 100 ms from the Modbus simulator at `meter` (10 W on, 100 W
/// running, no dwell), result files `*.dat` in `results`, published to the
/// broker on `mqtt_port`. `extra` is appended (more TOML sections).
pub fn agent_toml(
    ids: (&str, &str),
    data_dir: &Path,
    results: &Path,
    meter: std::net::SocketAddr,
    mqtt_port: u16,
    extra: &str,
) -> String {
    let (agent_id, instrument_id) = ids;
    format!(
        r#"
        agent_id = "{agent_id}"
        instrument_id = "{instrument_id}"
        data_dir = "{data}"
        poll_interval_ms = 100
        [mqtt]
        host = "127.0.0.1"
        port = {mqtt_port}
        topic_prefix = "{prefix}"
        keep_alive_s = 5
        heartbeat_interval_s = 1
        ack_timeout_s = 2
        [state]
        on_above_w = 10
        running_above_w = 100
        min_dwell_s = 0
        summary_interval_s = 1
        [[meters]]
        name = "mains"
        model = "sdm120"
        timeout_ms = 80
        tcp = {{ host = "{host}", port = {port} }}
        [[results]]
        folder = "{results}"
        include = ["*.dat"]
        min_age_s = 0
        rescan_interval_s = 1
        {extra}
        "#,
        prefix = crate::agent::PREFIX,
        data = data_dir.display(),
        results = results.display(),
        host = meter.ip(),
        port = meter.port(),
    )
}

/// The real collector's config for these tests: its own data dir, the
/// embedded broker on `mqtt_port` (0: any), HTTP on any loopback port.
pub fn collector_config(
    data_dir: &Path,
    mqtt_port: u16,
) -> labhours_collector::config::CollectorConfig {
    let mut config = labhours_collector::config::CollectorConfig {
        data_dir: data_dir.to_owned(),
        ..Default::default()
    };
    config.http.listen = ([127, 0, 0, 1], 0).into();
    config.mqtt.embedded_listen = ([127, 0, 0, 1], mqtt_port).into();
    config.mqtt.topic_prefix = crate::agent::PREFIX.into();
    config
}

/// Deterministic noise for test schedules (xorshift64); the seed replays one.
#[derive(Debug)]
pub struct Rng(pub u64);

impl Rng {
    pub fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// A real collector (embedded broker, data in `<dir>/collector`), a Modbus
/// meter simulator at 50 W, and a live agent's config `<dir>/agent.toml`
/// (outbox in `<dir>/agent`, result files `*.dat` in `<dir>/results`).
#[derive(Debug)]
pub struct Rig {
    pub collector: labhours_collector::app::Running,
    pub data_dir: std::path::PathBuf,
    pub mqtt_port: u16,
    pub sim: crate::modbus_sim::Sim,
    pub meter: crate::modbus_sim::TcpSim,
    pub config_path: std::path::PathBuf,
    pub results: std::path::PathBuf,
    pub outbox: std::path::PathBuf,
}

impl Rig {
    /// Starts the collector and the simulator; `extra` goes into the agent's config.
    pub async fn start(dir: &Path, ids: (&str, &str), extra: &str) -> Self {
        use crate::modbus_sim::{Sim, SimUnit, TcpSim};
        let data_dir = dir.join("collector");
        let results = dir.join("results");
        std::fs::create_dir_all(&results).expect("results folder");
        let collector = start_collector(&data_dir).await;
        let mqtt_port = collector.broker_addr().expect("embedded broker").port();
        let sim = Sim::new().with_unit(
            1,
            SimUnit::preset(labhours_agent::config::MeterModel::Sdm120)
                .reading(50.0, 230.0, 0.2, 1.0),
        );
        let meter = TcpSim::start(sim.clone()).await.expect("simulator");
        let config_path = dir.join("agent.toml");
        let outbox = dir.join("agent");
        let toml = agent_toml(ids, &outbox, &results, meter.addr(), mqtt_port, extra);
        std::fs::write(&config_path, toml).expect("agent config");
        Self {
            collector,
            data_dir,
            mqtt_port,
            sim,
            meter,
            config_path,
            results,
            outbox,
        }
    }
}

/// Starts the real collector on [`collector_config`] (embedded broker on
/// any port) and waits until its ingest is subscribed.
pub async fn start_collector(data_dir: &Path) -> labhours_collector::app::Running {
    let collector = labhours_collector::app::start(
        collector_config(data_dir, 0),
        labhours_collector::ingest::IngestOptions::default(),
    )
    .await
    .expect("collector starts");
    tokio::time::timeout(Duration::from_secs(10), collector.subscribed())
        .await
        .expect("collector subscribed");
    collector
}

/// Enrols `key` for `agent_id` in the collector's store in `data_dir`
/// (creating it), as `labhours-collector agents enrol` does.
pub fn enrol(data_dir: &Path, agent_id: &str, key: &labhours_shared::trust::PublicKey) {
    let store = labhours_collector::store::Store::open(
        data_dir,
        labhours_collector::store::Durability::Full,
    )
    .expect("store");
    labhours_collector::trust::enrol(store.connection(), agent_id, key, jiff::Timestamp::now())
        .expect("enrol");
}

/// The environment variable that carries the child's config path.
pub const CHILD_CONFIG: &str = "LABHOURS_LIVE_AGENT_CONFIG";

/// The body of the child test: runs the agent until the process is killed.
pub fn run_child() {
    let Ok(path) = std::env::var(CHILD_CONFIG) else {
        eprintln!("not started by a live-agent test: nothing to do");
        return;
    };
    let config = AgentConfig::load(Path::new(&path)).expect("config");
    // Its log goes to the test's output: a failing run shows what it did.
    config.log.init();
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime
        .block_on(labhours_agent::run(config, std::future::pending()))
        .expect("the agent runs until killed");
}

/// The body of a child test that runs the agent as the binary's `run`
/// does (logger, runtime, stop on SIGTERM or Ctrl-C, systemd readiness)
/// until it is told to stop; a failed stop fails the child (exit code 101).
pub fn run_child_until_signal() {
    let Ok(path) = std::env::var(CHILD_CONFIG) else {
        eprintln!("not started by a live-agent test: nothing to do");
        return;
    };
    let config = AgentConfig::load(Path::new(&path)).expect("config");
    labhours_agent::app::serve(config, Default::default(), false).expect("a clean stop");
}

/// The agent's process; killed (SIGKILL) when dropped, so a failing test
/// leaves no agent behind.
#[derive(Debug)]
pub struct AgentProcess(Child);

impl AgentProcess {
    /// SIGKILL, and reap.
    pub fn kill(&mut self) {
        self.0.kill().expect("SIGKILL");
        self.0.wait().expect("reaped");
    }

    /// SIGTERM (what systemd sends), then waits at most `within` for the
    /// process to exit; its exit status.
    pub async fn terminate(&mut self, within: Duration) -> std::process::ExitStatus {
        let status = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -TERM {}", self.0.id());
        let deadline = std::time::Instant::now() + within;
        loop {
            if let Some(exit) = self.0.try_wait().expect("status") {
                return exit;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the agent did not exit within {within:?} of SIGTERM"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Whether it is still running.
    pub fn is_running(&mut self) -> bool {
        self.0.try_wait().expect("status").is_none()
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the agent in a child process through the test named `child_test`.
pub fn spawn(child_test: &str, config: &Path) -> AgentProcess {
    spawn_with_env(child_test, config, &[])
}

/// [`spawn`] with more environment variables (e.g. NOTIFY_SOCKET).
pub fn spawn_with_env(
    child_test: &str,
    config: &Path,
    env: &[(&str, &std::ffi::OsStr)],
) -> AgentProcess {
    let child = Command::new(std::env::current_exe().expect("test binary"))
        .args([child_test, "--exact", "--ignored", "--nocapture"])
        .env(CHILD_CONFIG, config)
        .env_remove("RUST_LOG")
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("agent starts");
    AgentProcess(child)
}

/// Delivers what is left in the outbox in `dir` (the agent must be
/// stopped); returns its next seq.
pub async fn drain(dir: &Path, agent_id: &str, instrument_id: &str, mqtt_port: u16) -> u64 {
    drain_signed(dir, agent_id, instrument_id, mqtt_port, None).await
}

/// [`drain`] for an agent that signs with `signer`.
pub async fn drain_signed(
    dir: &Path,
    agent_id: &str,
    instrument_id: &str,
    mqtt_port: u16,
    signer: Option<Arc<labhours_shared::trust::Signer>>,
) -> u64 {
    let settings = OutboxSettings {
        max_bytes: 256 * 1024 * 1024,
        summary_flush_ms: 1000,
        cache_bytes: 1024 * 1024,
        min_free_bytes: 0,
    };
    let (outbox, _) = Outbox::open(dir, settings, jiff::Timestamp::now()).expect("outbox opens");
    let mut mqtt = crate::agent::mqtt_config(mqtt_port);
    mqtt.heartbeat_interval_s = 3600;
    let delivery = Delivery::new(
        &mqtt,
        agent_id,
        instrument_id,
        outbox.clone(),
        Arc::new(SystemClock),
    )
    .expect("delivery")
    .with_signer(signer);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(delivery.run(async {
        let _ = stopped.await;
    }));
    wait_until(Duration::from_secs(60), "the outbox drained", || {
        outbox.backlog() == 0
    })
    .await;
    let _ = stop.send(());
    task.await.expect("delivery stops");
    outbox.next_seq()
}

/// The seqs stored for `agent_id`, in order, and how many conflicts (a seq
/// that arrived twice with different content) were quarantined.
pub fn stored(data_dir: &Path, agent_id: &str) -> (Vec<u64>, i64) {
    let conn = labhours_collector::store::open_read_only(data_dir).expect("database");
    let conflicts: i64 = conn
        .query_row(
            "SELECT count(*) FROM quarantine WHERE reason LIKE 'agent_id conflict%'",
            [],
            |r| r.get(0),
        )
        .expect("query");
    let seqs = conn
        .prepare("SELECT seq FROM events WHERE agent_id = ?1 ORDER BY seq")
        .expect("query")
        .query_map([agent_id], |r| r.get::<_, i64>(0))
        .expect("rows")
        .map(|r| r.expect("seq") as u64)
        .collect();
    (seqs, conflicts)
}

/// The payloads of `agent_id`'s events of one type, as JSON.
pub fn payloads(data_dir: &Path, agent_id: &str, kind: &str) -> Vec<serde_json::Value> {
    let Ok(conn) = labhours_collector::store::open_read_only(data_dir) else {
        return Vec::new();
    };
    let Ok(mut stmt) =
        conn.prepare("SELECT payload FROM events WHERE agent_id = ?1 AND type = ?2 ORDER BY seq")
    else {
        return Vec::new();
    };
    stmt.query_map([agent_id, kind], |r| r.get::<_, String>(0))
        .map(|rows| {
            rows.filter_map(Result::ok)
                .map(|p| serde_json::from_str(&p).expect("stored JSON"))
                .collect()
        })
        .unwrap_or_default()
}

/// Result files the collector stored for `agent_id`, by path, with how
/// often each came.
pub fn result_files(data_dir: &Path, agent_id: &str) -> std::collections::BTreeMap<String, u32> {
    let mut out = std::collections::BTreeMap::new();
    for value in payloads(data_dir, agent_id, "result_file") {
        if let Some(path) = value["path"].as_str() {
            *out.entry(path.to_owned()).or_insert(0) += 1;
        }
    }
    out
}

/// What the collector holds for an agent, against the seqs `1..next_seq`
/// its outbox gave and the result files a test wrote.
#[derive(Debug)]
pub struct Delivered {
    pub stored: Vec<u64>,
    /// Seqs that arrived twice with different content (quarantined).
    pub conflicts: i64,
    /// The first 20 seqs never stored.
    pub missing: Vec<u64>,
    pub files_reported_twice: Vec<String>,
    pub files_unreported: Vec<String>,
    next_seq: u64,
}

impl Delivered {
    pub fn count(
        data_dir: &Path,
        agent_id: &str,
        next_seq: u64,
        files_written: &std::collections::BTreeSet<String>,
    ) -> Self {
        let (stored, conflicts) = stored(data_dir, agent_id);
        let missing = (1..next_seq)
            .filter(|s| stored.binary_search(s).is_err())
            .take(20)
            .collect();
        let reported = result_files(data_dir, agent_id);
        Self {
            stored,
            conflicts,
            missing,
            files_reported_twice: reported
                .iter()
                .filter(|(_, n)| **n > 1)
                .map(|(f, _)| f.clone())
                .collect(),
            files_unreported: files_written
                .iter()
                .filter(|f| !reported.contains_key(*f))
                .cloned()
                .collect(),
            next_seq,
        }
    }

    /// Every seq `1..next_seq` stored exactly once, no seq given twice,
    /// every result file reported exactly once.
    pub fn assert_exactly_once(&self, seed: u64) {
        assert_eq!(self.conflicts, 0, "a seq was given twice (seed {seed})");
        assert!(
            self.missing.is_empty(),
            "events lost: seqs {:?} never stored (seed {seed})",
            self.missing
        );
        let expected: Vec<u64> = (1..self.next_seq).collect();
        assert_eq!(self.stored, expected, "every seq once (seed {seed})");
        assert!(
            self.files_reported_twice.is_empty(),
            "result files reported twice: {:?}",
            self.files_reported_twice
        );
        assert!(
            self.files_unreported.is_empty(),
            "result files never reported: {:?}",
            self.files_unreported
        );
    }
}

/// Checks `agent_id`'s chain in the collector's store from seq 1: every
/// event stored with a chain hash that is `chain_hash(previous hash, the
/// stored bytes)`, signed, and no link taken on trust (anchor). Returns
/// how many events were checked.
pub fn assert_chain_unbroken(data_dir: &Path, agent_id: &str) -> usize {
    use labhours_shared::trust::{chain_hash, hex};
    let conn = labhours_collector::store::open_read_only(data_dir).expect("database");
    let mut stmt = conn
        .prepare(
            "SELECT seq, payload, chain_hash, signed FROM events WHERE agent_id = ?1 ORDER BY seq",
        )
        .expect("query");
    let rows: Vec<(i64, String, Option<Vec<u8>>, bool)> = stmt
        .query_map([agent_id], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
        })
        .expect("rows")
        .collect::<Result<_, _>>()
        .expect("rows");
    let mut head = [0u8; 32];
    for (i, (seq, payload, stored, signed)) in rows.iter().enumerate() {
        assert_eq!(
            *seq,
            i as i64 + 1,
            "seq {seq}: the chain has a hole before it"
        );
        head = chain_hash(&head, payload.as_bytes());
        let stored = stored
            .as_deref()
            .unwrap_or_else(|| panic!("seq {seq} has no chain hash"));
        assert_eq!(hex(stored), hex(&head), "seq {seq}: the chain breaks here");
        assert!(*signed, "seq {seq} is not marked signed");
    }
    let anchors: i64 = conn
        .query_row(
            "SELECT count(*) FROM chain_anchors WHERE agent_id = ?1",
            [agent_id],
            |r| r.get(0),
        )
        .expect("anchors");
    assert_eq!(anchors, 0, "every link checked, none taken on trust");
    rows.len()
}

/// The trust refusals in the quarantine: (kind, agent, reason), oldest first.
pub fn trust_refusals(data_dir: &Path) -> Vec<(String, String, String)> {
    let conn = labhours_collector::store::open_read_only(data_dir).expect("database");
    conn.prepare(
        "SELECT kind, COALESCE(agent_id, ''), reason FROM quarantine WHERE kind IN
         ('unsigned','unknown_key','wrong_agent','revoked_key','bad_signature','broken_chain','fork')
         ORDER BY id",
    )
    .expect("query")
    .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
    .expect("rows")
    .collect::<Result<_, _>>()
    .expect("rows")
}
