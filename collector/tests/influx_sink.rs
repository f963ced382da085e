//! The InfluxDB sink against a real HTTP server that answers what the test
//! tells it (204, 413, 429/503 with Retry-After, 400, 401), over a real
//! store: every point arrives exactly once, cursors move only after a 2xx,
//! and each answer is handled as documented. The sink is driven step by
//! step, so no test waits out a back-off.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use jiff::Timestamp;
use labhours_collector::config::{CollectorConfig, InfluxApi, InfluxConfig};
use labhours_collector::influx::client::Target;
use labhours_collector::influx::{Sink, SinkState, SinkStats, Step};
use labhours_collector::registry::Registry;
use labhours_collector::store::{Batch, Durability, Received, Store};
use labhours_shared::state::State as InstrumentState;
use labhours_shared::wire::{
    Envelope, Event, EventKind, Heartbeat, ResultFile, SCHEMA_VERSION, Summary, TransitionSource,
};

/// What the server received, and what it answers next (then 204).
#[derive(Default)]
struct Server {
    answers: Mutex<VecDeque<(u16, Option<&'static str>, &'static str)>>,
    /// (query, authorization, body) of every request.
    requests: Mutex<Vec<(String, String, String)>>,
    /// How long each answer takes (ms), so a writer can be caught mid-request.
    delay_ms: std::sync::atomic::AtomicU64,
}

async fn write(
    State(server): State<Arc<Server>>,
    uri: Uri,
    headers: HeaderMap,
    body: String,
) -> Response {
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    server.requests.lock().unwrap().push((
        uri.path_and_query()
            .map(|p| p.to_string())
            .unwrap_or_default(),
        auth,
        body,
    ));
    let delay = server.delay_ms.load(std::sync::atomic::Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(delay)).await;
    let (status, retry_after, message) = server
        .answers
        .lock()
        .unwrap()
        .pop_front()
        .unwrap_or((204, None, ""));
    let mut response = (StatusCode::from_u16(status).unwrap(), message.to_owned()).into_response();
    if let Some(after) = retry_after {
        response
            .headers_mut()
            .insert("retry-after", after.parse().unwrap());
    }
    response
}

async fn serve() -> (SocketAddr, Arc<Server>) {
    let server = Arc::new(Server::default());
    let app = Router::new()
        .route("/api/v2/write", axum::routing::post(write))
        .route("/write", axum::routing::post(write))
        .with_state(server.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, server)
}

fn at(s: &str) -> Timestamp {
    s.parse().unwrap()
}

fn summary(seq: u64, minute: i64) -> Event {
    let start = at("2026-11-20T08:00:00Z") + jiff::SignedDuration::from_mins(minute);
    Event {
        seq,
        at: start,
        kind: EventKind::Summary(Summary {
            end: start + jiff::SignedDuration::from_mins(1),
            samples: 60,
            failed_reads: 0,
            min_w: Some(10.0),
            avg_w: Some(20.0 + minute as f64),
            max_w: Some(30.0),
            energy_wh: 0.5,
            covered_s: 60.0,
            avg_v: None,
            avg_a: None,
        }),
    }
}

/// A store with `n` summaries, a transition, a result file, a fault and a
/// heartbeat from one agent, reconciled (so its days exist).
fn store_with(dir: &std::path::Path, n: u64) -> (CollectorConfig, Arc<Registry>) {
    let config = CollectorConfig::parse(&format!(
        "data_dir = {:?}\n[site]\ntime_zone = \"Asia/Shanghai\"\n\
         [[instruments]]\nid = \"nmr-600\"\nname = \"NMR\"\nunit = \"Chemistry, NMR Centre\"\n",
        dir
    ))
    .unwrap();
    let mut store = Store::open(dir, Durability::Normal).unwrap();
    let mut events: Vec<Event> = (1..=n).map(|i| summary(i, i as i64)).collect();
    let extra = [
        EventKind::Transition {
            from: InstrumentState::Standby,
            to: InstrumentState::Running,
            source: TransitionSource::Power,
            reason: "power".into(),
        },
        EventKind::ResultFile(ResultFile {
            path: "2026/11/20/S1.raw".into(),
            size_bytes: 1234,
            sha256: "0".repeat(64),
            mtime: at("2026-11-20T09:00:00Z"),
            sample_id: None,
        }),
        EventKind::Fault {
            source: "meter:main".into(),
            message: "timeout, \"no answer\"\nretrying".into(),
        },
        EventKind::Heartbeat(Heartbeat {
            uptime_s: 1,
            backlog: 0,
            oldest_unacked_age_s: None,
            clock: at("2026-11-20T10:00:00Z"),
            version: "t".into(),
        }),
    ];
    for (i, kind) in extra.into_iter().enumerate() {
        events.push(Event {
            seq: n + 1 + i as u64,
            at: at("2026-11-20T10:00:00Z"),
            kind,
        });
    }
    store
        .commit(&Batch {
            envelopes: vec![Received {
                received_at: Timestamp::now(),
                topic: "labhours/v1/agent-1/events".into(),
                message: Envelope {
                    v: SCHEMA_VERSION,
                    agent_id: "agent-1".into(),
                    instrument_id: "nmr-600".into(),
                    sent_at: Timestamp::now(),
                    acked_through: 0,
                    events,
                }
                .into(),
            }],
            ..Batch::default()
        })
        .unwrap();
    drop(store);
    let reports = labhours_collector::verified::store_reports(&config).unwrap();
    reports.catch_up(Timestamp::now()).unwrap();
    let registry = Arc::new(Registry::from_config(&config).unwrap());
    (config, registry)
}

fn open_sink(
    config: &CollectorConfig,
    registry: Arc<Registry>,
    addr: SocketAddr,
    api: InfluxApi,
) -> (Sink, Arc<SinkStats>) {
    let influx = InfluxConfig {
        url: format!("http://{addr}/"),
        org: "lab org".into(),
        bucket: "labhours".into(),
        token_file: None,
        api,
    };
    let stats = Arc::new(SinkStats::default());
    let sink = Sink::open(
        &config.data_dir,
        registry,
        Target::new(&influx, Some("s3cret".into())),
        stats.clone(),
    )
    .unwrap();
    (sink, stats)
}

fn lines(server: &Server) -> Vec<String> {
    server
        .requests
        .lock()
        .unwrap()
        .iter()
        .flat_map(|(_, _, body)| body.lines().map(str::to_owned).collect::<Vec<_>>())
        .collect()
}

/// Steps until the sink is idle (at most `max` steps); returns the steps.
fn drain(sink: &mut Sink, max: usize) -> Vec<Step> {
    let mut steps = Vec::new();
    for _ in 0..max {
        let step = sink.step(Timestamp::now().as_millisecond()).unwrap();
        steps.push(step.clone());
        if matches!(step, Step::Idle | Step::Stop) {
            break;
        }
    }
    steps
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_point_is_written_once_with_its_tags_and_the_cursor_follows() {
    let dir = tempfile::tempdir().unwrap();
    let (config, registry) = store_with(dir.path(), 30);
    let (addr, server) = serve().await;
    let (mut sink, stats) = open_sink(&config, registry.clone(), addr, InfluxApi::V2);
    let steps = tokio::task::spawn_blocking(move || (drain(&mut sink, 20), sink))
        .await
        .unwrap();
    assert_eq!(steps.0.last(), Some(&Step::Idle), "{:?}", steps.0);
    let requests = server.requests.lock().unwrap().clone();
    assert_eq!(
        requests[0].0,
        "/api/v2/write?org=lab%20org&bucket=labhours&precision=ms"
    );
    assert_eq!(requests[0].1, "Token s3cret");
    let all = lines(&server);
    let count = |m: &str| all.iter().filter(|l| l.starts_with(m)).count();
    assert_eq!(count("labhours_power,"), 30);
    assert_eq!(count("labhours_state,"), 1);
    assert_eq!(count("labhours_result_files,"), 1);
    assert_eq!(count("labhours_faults,"), 1);
    assert!(count("labhours_daily,") >= 1, "{all:#?}");
    assert!(
        all.iter().any(|l| l
            == "labhours_power,instrument=nmr-600,unit=Chemistry\\,\\ NMR\\ Centre,agent=agent-1 \
                energy_wh=0.5,samples=60i,failed_reads=0i,covered_s=60.0,min_w=10.0,avg_w=21.0,max_w=30.0 \
                1795161660000"),
        "{all:#?}"
    );
    assert!(
        all.iter()
            .any(|l| l.starts_with("labhours_state,instrument=nmr-600,")
                && l.contains(",state=running code=2i ")),
        "{all:#?}"
    );
    assert!(
        all.iter()
            .any(|l| l.contains("message=\"timeout, \\\"no answer\\\" retrying\"")),
        "{all:#?}"
    );
    let health = stats.health(Timestamp::now().as_millisecond());
    assert_eq!(health.state, SinkState::Running);
    assert_eq!(health.pending_events, 0);
    assert_eq!(health.points_written as usize, all.len());

    // A restart resumes from the cursors: nothing is sent again.
    drop(steps.1);
    let (mut again, _) = open_sink(&config, registry, addr, InfluxApi::V2);
    let before = lines(&server).len();
    let steps = tokio::task::spawn_blocking(move || drain(&mut again, 5))
        .await
        .unwrap();
    assert_eq!(steps, [Step::Idle]);
    assert_eq!(lines(&server).len(), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busy_servers_are_waited_for_large_batches_split_and_bad_ones_set_aside() {
    let dir = tempfile::tempdir().unwrap();
    let (config, registry) = store_with(dir.path(), 6_000);
    let (addr, server) = serve().await;
    server.answers.lock().unwrap().extend([
        (503, Some("3"), "overloaded"),
        (429, None, "slow down"),
        (413, None, "too large"),
        (400, None, "unable to parse 'x': bad timestamp"),
    ]);
    let (mut sink, stats) = open_sink(&config, registry, addr, InfluxApi::V1);
    let (steps, stats) = tokio::task::spawn_blocking(move || (drain(&mut sink, 50), stats))
        .await
        .unwrap();
    assert_eq!(
        steps[0],
        Step::Wait(Duration::from_secs(3)),
        "Retry-After honoured"
    );
    assert_eq!(
        steps[1],
        Step::Wait(Duration::from_secs(2)),
        "then doubling"
    );
    assert_eq!(steps.last(), Some(&Step::Idle));
    let requests = server.requests.lock().unwrap().clone();
    assert!(requests[0].0.starts_with("/write?db=labhours&precision=ms"));
    // The first three were refused and sent again; the 413 halved the next one.
    let sizes: Vec<usize> = requests.iter().map(|r| r.2.lines().count()).collect();
    assert_eq!(sizes[0], 5_000);
    assert_eq!(sizes[1], 5_000);
    assert_eq!(sizes[2], 5_000);
    assert_eq!(sizes[3], 2_500, "{sizes:?}");
    // The 400 batch (the fourth request) is set aside, not resent.
    let rejected = requests[3].2.clone();
    let conn = rusqlite::Connection::open(dir.path().join("labhours.sqlite3")).unwrap();
    let (status, message, points): (u16, String, i64) = conn
        .query_row(
            "SELECT status, message, points FROM influx_rejected",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    assert_eq!(
        (status, message.as_str(), points),
        (400, "unable to parse 'x': bad timestamp", 2_500)
    );
    let delivered: Vec<String> = requests[4..]
        .iter()
        .flat_map(|r| r.2.lines().map(str::to_owned).collect::<Vec<_>>())
        .collect();
    let power = |ls: &[String]| {
        ls.iter()
            .filter(|l| l.starts_with("labhours_power,"))
            .count()
    };
    let rejected_lines: Vec<String> = rejected.lines().map(str::to_owned).collect();
    assert_eq!(
        power(&delivered) + power(&rejected_lines),
        6_000,
        "every summary either written once or set aside"
    );
    let mut unique = delivered.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), delivered.len(), "nothing written twice");
    let health = stats.health(Timestamp::now().as_millisecond());
    assert_eq!(health.retries, 2);
    assert_eq!(health.rejected_batches, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_token_stops_the_sink_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (config, registry) = store_with(dir.path(), 10);
    let (addr, server) = serve().await;
    server
        .answers
        .lock()
        .unwrap()
        .push_back((401, None, "unauthorized access"));
    let (mut first, stats) = open_sink(&config, registry.clone(), addr, InfluxApi::V2);
    let steps = tokio::task::spawn_blocking(move || drain(&mut first, 5))
        .await
        .unwrap();
    assert_eq!(steps, [Step::Stop]);
    let health = stats.health(Timestamp::now().as_millisecond());
    assert_eq!(health.state, SinkState::Stopped);
    assert!(
        health
            .last_error
            .as_deref()
            .is_some_and(|e| e.starts_with("401: unauthorized access")),
        "{health:?}"
    );
    assert_eq!(health.pending_events, 14);
    // Fixed and restarted: everything arrives.
    let (mut second, _) = open_sink(&config, registry, addr, InfluxApi::V2);
    let steps = tokio::task::spawn_blocking(move || drain(&mut second, 5))
        .await
        .unwrap();
    assert_eq!(steps.last(), Some(&Step::Idle));
    let power = lines(&server)
        .iter()
        .filter(|l| l.starts_with("labhours_power,"))
        .count();
    assert_eq!(power, 20, "10 refused, then 10 written");
}

/// The Grafana dashboards in config/grafana/ ask only for what the sink
/// writes: a renamed field would otherwise leave a panel silently empty.
#[test]
fn the_grafana_dashboards_ask_for_what_the_sink_writes() {
    use labhours_collector::influx::export::SCHEMA;
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/grafana");
    let mut known: Vec<String> = Vec::new();
    for (measurement, fields) in SCHEMA {
        known.push((*measurement).to_owned());
        // VictoriaMetrics names a field `<measurement>_<field>`.
        known.extend(fields.iter().map(|f| format!("{measurement}_{f}")));
    }
    let all_fields: Vec<&str> = SCHEMA.iter().flat_map(|(_, f)| f.iter().copied()).collect();
    let mut files = 0;
    for entry in std::fs::read_dir(&dir).expect("config/grafana") {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        let dashboard: serde_json::Value =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(dashboard["panels"].as_array().is_some_and(|p| p.len() >= 3));
        files += 1;
        let mut rest = text.as_str();
        while let Some(at) = rest.find("labhours_") {
            let name: String = rest[at..]
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                .collect();
            let name = name.trim_end_matches('_');
            assert!(
                known.iter().any(|k| k == name),
                "{}: {name} is not written",
                path.display()
            );
            rest = &rest[at + name.len()..];
        }
        for part in text.split("r._field == \\\"").skip(1) {
            let field = &part[..part.find('\\').unwrap()];
            assert!(
                all_fields.contains(&field),
                "{}: field {field} is not written",
                path.display()
            );
        }
    }
    assert_eq!(files, 2);
}

/// The promise under SIGKILL: the real collector process is killed at
/// random while its sink is writing (requests in flight, cursors moving),
/// ten times, then let finish. The server must hold every point at least
/// once, and anything twice only from a batch that was in flight at a
/// kill (its answer never reached the cursor).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_killed_while_writing_loses_no_point() {
    const SUMMARIES: u64 = 30_000;
    const KILLS: u64 = 10;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    store_with(&data, SUMMARIES);
    let (addr, server) = serve().await;
    server
        .delay_ms
        .store(40, std::sync::atomic::Ordering::Relaxed);
    let config = dir.path().join("collector.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = {data:?}\n[site]\ntime_zone = \"Asia/Shanghai\"\n\
             [mqtt]\nembedded_listen = \"127.0.0.1:0\"\n[http]\nlisten = \"127.0.0.1:0\"\n\
             [influxdb]\nurl = \"http://{addr}\"\norg = \"o\"\nbucket = \"b\"\n\
             [[instruments]]\nid = \"nmr-600\"\nname = \"NMR\"\n"
        ),
    )
    .unwrap();
    let power_lines = || -> Vec<String> {
        lines(&server)
            .into_iter()
            .filter(|l| l.starts_with("labhours_power,"))
            .collect()
    };
    let start = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_labhours-collector"))
            .arg("run")
            .arg("--config")
            .arg(&config)
            .env_remove("LABHOURS_COLLECTOR_CONFIG")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("the collector starts")
    };
    // A fixed seed: the kill instants differ from run to run of the loop,
    // not from one test run to the next.
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut requests_at_kills = Vec::new();
    for _ in 0..KILLS {
        let before = server.requests.lock().unwrap().len();
        let mut child = start();
        // Kill only once it is writing: at least one request after this start
        // (a generous bound: a loaded machine starts the process slowly).
        let deadline = std::time::Instant::now() + Duration::from_secs(120);
        while server.requests.lock().unwrap().len() <= before {
            assert!(std::time::Instant::now() < deadline, "the sink never wrote");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        tokio::time::sleep(Duration::from_millis(10 + (seed >> 33) % 120)).await;
        child.kill().expect("SIGKILL");
        child.wait().unwrap();
        requests_at_kills.push(server.requests.lock().unwrap().len());
    }
    let mut child = start();
    let deadline = std::time::Instant::now() + Duration::from_secs(180);
    let expected: std::collections::BTreeSet<i64> = (1..=SUMMARIES as i64)
        .map(|m| 1_795_161_600_000 + m * 60_000)
        .collect();
    let distinct = |ls: &[String]| -> std::collections::BTreeSet<i64> {
        ls.iter()
            .map(|l| l.rsplit(' ').next().unwrap().parse().unwrap())
            .collect()
    };
    while distinct(&power_lines()) != expected {
        assert!(
            std::time::Instant::now() < deadline,
            "{} of {SUMMARIES} summaries written after {KILLS} kills",
            distinct(&power_lines()).len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The last answer moves the cursor to the end, and the sink goes idle.
    let db = data.join("labhours.sqlite3");
    let cursor = || -> Option<i64> {
        rusqlite::Connection::open(&db)
            .ok()?
            .query_row("SELECT exported_through FROM influx_cursor", [], |r| {
                r.get(0)
            })
            .ok()
    };
    while cursor() != Some(SUMMARIES as i64 + 4) {
        assert!(
            std::time::Instant::now() < deadline,
            "the cursor stopped at {:?}",
            cursor()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let all = power_lines();
    assert_eq!(distinct(&all), expected, "every summary written");
    // Twice only what was in flight: at most one batch (5,000 points) per kill.
    let twice = all.len() as u64 - SUMMARIES;
    assert!(
        twice <= KILLS * 5_000,
        "{twice} points written twice for {KILLS} kills (requests at kills: {requests_at_kills:?})"
    );
    assert_eq!(
        cursor(),
        Some(SUMMARIES as i64 + 4),
        "the cursor reached the last seq"
    );
}
