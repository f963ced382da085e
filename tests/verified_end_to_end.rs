//! The whole chain with real parts: a Modbus TCP meter simulator → the real
//! agent (`Agent::start`) → MQTT through the collector's embedded broker →
//! the real collector (`app::start`: ingest, SQLite, the background
//! reconciler, the HTTP API) → a booking imported over `POST
//! /api/v1/bookings` → verified hours, booking outcomes, instruments and CSV
//! read back over real HTTP (`labhours_tests::http`).
//!
//! Time is real here (sockets, the agent's clock, the reconciler's one-second
//! passes): every wait is for a condition, bounded. The expected figures are
//! computed from the transitions the collector actually stored, not from the
//! test's own timing.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use jiff::tz::TimeZone;
use labhours_agent::app::Agent;
use labhours_agent::clock::SystemClock;
use labhours_agent::config::{AgentConfig, MeterModel};
use labhours_collector::app::{self, Running};
use labhours_collector::config::CollectorConfig;
use labhours_collector::ingest::IngestOptions;
use labhours_tests::agent::PREFIX;
use labhours_tests::http;
use labhours_tests::modbus_sim::{Sim, SimUnit, TcpSim};
use serde_json::{Value, json};

const INSTRUMENT: &str = "e2e-nmr";
const AGENT: &str = "e2e-agent";
const BOOKING: &str = "b-e2e-1";
const RUNNING_W: f64 = 500.0;
/// Above `on_above_w`, below `running_above_w`: standby.
const IDLE_W: f64 = 50.0;
/// How long the meter draws running power. Hours are reported rounded to
/// two decimals, so at least 18 s of use are needed for `used_hours` to be
/// 0.01 rather than 0.
const RUN_MS: i64 = 18_500;
/// The booking's slot: from the first stored transition to this long after
/// the run began (so it covers the whole run).
const SLOT_AFTER_RUN_START_MS: i64 = 20_000;
/// These thresholds must match between `[instruments.rules]` and the assertions.
const MIN_SESSION_S: i64 = 1;
const NO_SHOW_BELOW_S: i64 = 1;
/// The default `late_grace_s` (900 s): use this long after the slot still belongs to it.
const LATE_GRACE_MS: i64 = 900_000;
const WAIT: Duration = Duration::from_secs(15);

/// One configured instrument in UTC. The contract's defaults (`min_session_s
/// = 120`, `no_show_below_s = 300`) would make a run of a few seconds a
/// dropped session — no usage at all — and its booking a `no_show`, which is
/// the correct answer for such a short run. To see real usage counted and
/// the outcome `used` within a short test, both are lowered to 1 s.
fn collector_config(data_dir: &Path) -> CollectorConfig {
    let text = format!(
        r#"
        data_dir = "{data}"
        [site]
        time_zone = "UTC"
        [mqtt]
        topic_prefix = "{PREFIX}"
        embedded_listen = "127.0.0.1:0"
        [http]
        listen = "127.0.0.1:0"
        [reconciliation]
        min_session_s = {MIN_SESSION_S}
        no_show_below_s = {NO_SHOW_BELOW_S}
        [[instruments]]
        id = "{INSTRUMENT}"
        name = "E2E NMR"
        unit = "Chemistry/NMR Centre"
        [instruments.thresholds]
        on_above_w = 10.0
        running_above_w = 100.0
        min_dwell_s = 0
        "#,
        data = data_dir.display(),
    );
    CollectorConfig::parse(&text).expect("a valid collector config")
}

/// The agent with a short poll interval, no dwell time and a heartbeat
/// every second (signs of life, so the collector's data reaches "now").
fn agent_config(data_dir: &Path, meter: SocketAddr, mqtt_port: u16) -> AgentConfig {
    let text = format!(
        r#"
        agent_id = "{AGENT}"
        instrument_id = "{INSTRUMENT}"
        data_dir = "{data}"
        poll_interval_ms = 200
        [mqtt]
        host = "127.0.0.1"
        port = {mqtt_port}
        topic_prefix = "{PREFIX}"
        keep_alive_s = 5
        heartbeat_interval_s = 1
        ack_timeout_s = 2
        [state]
        on_above_w = 10
        running_above_w = 100
        min_dwell_s = 0
        [[meters]]
        name = "mains"
        model = "sdm120"
        timeout_ms = 150
        tcp = {{ host = "{host}", port = {port} }}
        "#,
        data = data_dir.display(),
        host = meter.ip(),
        port = meter.port(),
    );
    AgentConfig::parse(&text).expect("a valid agent config")
}

async fn start_collector(data_dir: &Path) -> Running {
    let running = app::start(collector_config(data_dir), IngestOptions::default())
        .await
        .expect("collector starts");
    tokio::time::timeout(Duration::from_secs(10), running.subscribed())
        .await
        .expect("collector subscribed within 10 s");
    running
}

/// The instrument's transitions as the collector stored them, `(at_ms, state)`
/// in timeline order.
fn stored_transitions(data_dir: &Path) -> Vec<(i64, String)> {
    let conn = labhours_collector::store::open_read_only(data_dir).expect("database");
    let mut stmt = conn
        .prepare(
            "SELECT at_ms, state FROM transitions WHERE instrument_id = ?1
             ORDER BY at_ms, agent_id, seq",
        )
        .expect("query");
    stmt.query_map([INSTRUMENT], |r| Ok((r.get(0)?, r.get(1)?)))
        .expect("rows")
        .map(|r| r.expect("row"))
        .collect()
}

/// Waits (bounded) until the last stored transition is to `state`; returns all of them.
async fn wait_for_state(data_dir: &Path, state: &str) -> Vec<(i64, String)> {
    let deadline = Instant::now() + WAIT;
    loop {
        let stored = stored_transitions(data_dir);
        if stored.last().is_some_and(|(_, s)| s == state) {
            return stored;
        }
        assert!(
            Instant::now() < deadline,
            "the collector stored no transition to {state} within {WAIT:?}; it holds {stored:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Milliseconds as the API's hours: rounded to two decimals.
fn hours(ms: i64) -> f64 {
    (ms as f64 / 36_000.0).round() / 100.0
}

fn instant_ms(value: &Value) -> i64 {
    let text = value
        .as_str()
        .unwrap_or_else(|| panic!("{value} is no instant"));
    let at: Timestamp = text.parse().unwrap_or_else(|e| panic!("{text}: {e}"));
    at.as_millisecond()
}

fn ms_to_rfc3339(ms: i64) -> String {
    Timestamp::from_millisecond(ms)
        .expect("in range")
        .to_string()
}

async fn get_json(addr: SocketAddr, target: &str) -> Value {
    let answer = http::get(addr, target).await.expect("an HTTP answer");
    assert_eq!(
        answer.status,
        200,
        "GET {target}: {}",
        String::from_utf8_lossy(&answer.body)
    );
    assert!(
        answer
            .header("content-type")
            .is_some_and(|t| t.starts_with("application/json")),
        "GET {target}: {:?}",
        answer.headers
    );
    answer.json().expect("JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metered_use_inside_a_booking_becomes_verified_hours_over_http() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (agent_dir, data_dir) = (dir.path().join("agent"), dir.path().join("collector"));
    let collector = start_collector(&data_dir).await;
    let api = collector.http_addr();
    let mqtt_port = collector.broker_addr().expect("embedded broker").port();

    // The meter draws running power from the start.
    let sim = Sim::new().with_unit(
        1,
        SimUnit::preset(MeterModel::Sdm120).reading(RUNNING_W, 230.0, 2.2, 10.0),
    );
    let meter = TcpSim::start(sim.clone()).await.expect("simulator");
    let agent = Agent::start(
        agent_config(&agent_dir, meter.addr(), mqtt_port),
        Arc::new(SystemClock),
    )
    .expect("agent starts");

    // The running transition reached the collector's database.
    let stored = wait_for_state(&data_dir, "running").await;
    let timeline_start = stored[0].0;
    let run_start = stored.last().expect("a transition").0;

    // A booking covering the run, imported while the instrument runs.
    let slot = (timeline_start, run_start + SLOT_AFTER_RUN_START_MS);
    let import = http::post_json(
        api,
        "/api/v1/bookings",
        &json!({"bookings": [{
            "booking_id": BOOKING,
            "instrument_id": INSTRUMENT,
            "user": "li",
            "group": "chem",
            "usage_type": "research",
            "start": ms_to_rfc3339(slot.0),
            "end": ms_to_rfc3339(slot.1),
            "status": "confirmed",
        }]}),
    )
    .await
    .expect("an HTTP answer");
    let report = import.json().expect("JSON");
    assert_eq!(import.status, 200, "{report:#}");
    assert_eq!(report["applied"], json!(true), "{report:#}");
    assert_eq!(report["inserted"], json!([BOOKING]), "{report:#}");
    assert_eq!(report["errors"], json!([]), "{report:#}");

    // The run lasts RUN_MS on the agent's clock (the same system clock); then idle power.
    let switch_at = run_start + RUN_MS;
    let now = Timestamp::now().as_millisecond();
    if switch_at > now {
        tokio::time::sleep(Duration::from_millis((switch_at - now) as u64)).await;
    }
    sim.update(1, |u| u.watts = IDLE_W);
    let stored = wait_for_state(&data_dir, "standby").await;

    // What the collector holds is exactly one run: the expected use.
    let runs: Vec<(i64, i64)> = stored
        .windows(2)
        .filter(|w| w[0].1 == "running")
        .map(|w| (w[0].0, w[1].0))
        .collect();
    assert_eq!(runs.len(), 1, "one run in {stored:?}");
    let (first_use, last_use) = runs[0];
    assert_eq!(first_use, run_start);
    let used_ms = last_use - first_use;
    assert!(
        used_ms >= RUN_MS,
        "the run lasts at least as long as the meter drew power: {stored:?}"
    );
    assert!(
        first_use >= slot.0 && last_use <= slot.1 + LATE_GRACE_MS,
        "within the booking's window (its slot and the default late grace): {stored:?}"
    );
    // 300 s is the contract's no-show threshold; this test lowered it to 1 s.
    let expected_outcome = if used_ms < NO_SHOW_BELOW_S * 1000 {
        "no_show"
    } else {
        "used"
    };
    assert_eq!(expected_outcome, "used");

    let day = Timestamp::from_millisecond(timeline_start)
        .expect("in range")
        .to_zoned(TimeZone::UTC)
        .date();
    let range = format!(
        "from={day}&to={}&instrument={INSTRUMENT}",
        day.tomorrow().and_then(|d| d.tomorrow()).expect("a date")
    );

    // Reconciled once the collector's data covers the whole slot: the
    // booking's outcome then shows no unknown time in it.
    let deadline = Instant::now() + WAIT;
    let outcome = loop {
        let outcomes = get_json(api, &format!("/api/v1/bookings/outcomes?{range}")).await;
        let row = outcomes["rows"]
            .as_array()
            .and_then(|rows| rows.iter().find(|r| r["booking_id"] == BOOKING))
            .cloned();
        if let Some(row) = row.filter(|r| r["unknown_s"].as_f64() == Some(0.0)) {
            break row;
        }
        assert!(
            Instant::now() < deadline,
            "the booking is not reconciled over its whole slot within {WAIT:?}: {outcomes:#}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };

    // The booking's outcome (§5).
    assert_eq!(outcome["outcome"], expected_outcome, "{outcome:#}");
    assert_eq!(outcome["flags"], json!([]), "{outcome:#}");
    assert_eq!(outcome["instrument_id"], INSTRUMENT);
    assert_eq!(outcome["user"], "li");
    assert_eq!(outcome["group"], "chem");
    assert_eq!(outcome["usage_type"], "research");
    assert_eq!(
        outcome["booked_s"].as_f64(),
        Some((slot.1 - slot.0) as f64 / 1000.0)
    );
    assert_eq!(
        outcome["used_s"].as_f64(),
        Some(used_ms as f64 / 1000.0),
        "{outcome:#}"
    );
    assert_eq!(outcome["early_s"].as_f64(), Some(0.0));
    assert_eq!(outcome["overrun_s"].as_f64(), Some(0.0));
    assert_eq!(outcome["fault_s"].as_f64(), Some(0.0));
    assert_eq!(instant_ms(&outcome["first_use"]), first_use);
    assert_eq!(instant_ms(&outcome["last_use"]), last_use);
    assert_eq!(
        outcome["sessions"],
        json!([format!("{INSTRUMENT}@{first_use}")])
    );

    // Verified hours (§6): all use is inside the booking's window.
    let hours_answer = get_json(api, &format!("/api/v1/hours?{range}")).await;
    let rows = hours_answer["rows"].as_array().expect("rows");
    assert_eq!(rows.len(), 1, "{hours_answer:#}");
    let row = &rows[0];
    let used_hours = row["used_hours"].as_f64().expect("used_hours");
    assert!(used_hours > 0.0, "{row:#}");
    assert_eq!(used_hours, hours(used_ms), "{row:#}");
    assert_eq!(
        row["booked_used_hours"].as_f64(),
        Some(used_hours),
        "{row:#}"
    );
    assert_eq!(row["unbooked_hours"].as_f64(), Some(0.0), "{row:#}");
    assert_eq!(row["booked_hours"].as_f64(), Some(hours(slot.1 - slot.0)));
    assert_eq!(row["by_usage_type"]["research"].as_f64(), Some(used_hours));
    assert_eq!(row["by_usage_type"]["unassigned"].as_f64(), Some(0.0));
    assert_eq!(row["no_show_count"], json!(0));
    assert_eq!(row["fault_hours"].as_f64(), Some(0.0));
    assert_eq!(row["instrument_id"], INSTRUMENT);
    assert_eq!(row["name"], "E2E NMR");
    assert_eq!(row["unit"], "Chemistry/NMR Centre");
    assert_eq!(row["instruments"], json!(1));

    // The instrument, its state now and its agent online.
    let answer = get_json(api, "/api/v1/instruments").await;
    let instrument = answer["rows"]
        .as_array()
        .and_then(|rows| rows.iter().find(|r| r["instrument_id"] == INSTRUMENT))
        .unwrap_or_else(|| panic!("{INSTRUMENT} listed: {answer:#}"));
    assert_eq!(instrument["configured"], json!(true), "{instrument:#}");
    assert_eq!(instrument["time_zone"], "UTC");
    assert_eq!(instrument["state"], "standby", "{instrument:#}");
    assert_eq!(instant_ms(&instrument["since"]), last_use);
    assert_eq!(instrument["agent_online"], json!(true), "{instrument:#}");
    let agents = instrument["agents"].as_array().expect("agents");
    assert_eq!(agents.len(), 1, "{instrument:#}");
    assert_eq!(agents[0]["agent_id"], AGENT);
    assert_eq!(agents[0]["online"], json!(true));
    // The agent reported the thresholds it applies; they agree with the registry.
    assert_eq!(
        agents[0]["applied_thresholds"],
        json!({
            "on_above_w": 10.0,
            "running_above_w": 100.0,
            "running_exit_below_w": 90.0,
            "min_dwell_s": 0,
            "status_stale_after_s": 300,
        }),
        "{instrument:#}"
    );
    assert_eq!(agents[0]["threshold_mismatch"], json!([]), "{instrument:#}");

    // Reconciliation has caught up and the agent's heartbeats settle the past.
    let health = get_json(api, "/api/v1/healthz").await;
    assert_eq!(health["status"], "ok", "{health:#}");
    assert!(
        health["reconciliation"]["settled_through"].is_string(),
        "{health:#}"
    );

    // The same hours as CSV: the documented header, one row with the same figure.
    let csv = http::get(api, &format!("/api/v1/hours?{range}&format=csv"))
        .await
        .expect("an HTTP answer");
    assert_eq!(csv.status, 200);
    assert!(
        csv.header("content-type")
            .is_some_and(|t| t.starts_with("text/csv")),
        "{:?}",
        csv.headers
    );
    let text = csv.text().expect("UTF-8");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "a header and one row: {text}");
    assert!(
        lines[0].starts_with("instrument_id,name,unit,instruments,period_start"),
        "{text}"
    );
    let header: Vec<&str> = lines[0].split(',').collect();
    let cells: Vec<&str> = lines[1].split(',').collect();
    assert_eq!(cells.len(), header.len(), "{text}");
    let cell = |name: &str| cells[header.iter().position(|h| *h == name).expect(name)];
    assert_eq!(cell("instrument_id"), INSTRUMENT);
    assert_eq!(cell("used_hours"), row["used_hours"].to_string());
    assert_eq!(
        cell("booked_used_hours"),
        row["booked_used_hours"].to_string()
    );

    agent.stop().await.expect("agent stops cleanly");
    drop(meter);
    collector.shutdown().await.expect("collector stops");
}
