//! `labhours-collector demo`, started for real (`Demo::start`, what the
//! command runs until Ctrl-C) with three days of history on free ports in a
//! temp dir: it comes alive (every simulated instrument has a state, every
//! booking outcome exists), stops cleanly, and a second start continues
//! without duplicating the history.
//!
//! Time is real (agents, sockets, the reconciler): every wait is for a
//! condition over the HTTP API, bounded.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use labhours_collector::demo::{Demo, DemoArgs};
use labhours_tests::http;
use serde_json::Value;

const OUTCOMES: [&str; 5] = [
    "cancelled",
    "no_data",
    "instrument_fault",
    "no_show",
    "used",
];
const INSTRUMENTS: usize = 6;
/// The agents confirm their first state after `min_dwell_s` (30 s).
const WAIT: Duration = Duration::from_secs(90);

fn args(dir: &Path) -> DemoArgs {
    let mut a = DemoArgs::new(dir);
    a.history_days = 3;
    a.http_port = 0;
    a.mqtt_port = 0;
    a.seed = 7;
    a.time_zone = Some("Asia/Shanghai".into());
    a.lang = Some("en".into());
    a
}

async fn get(addr: SocketAddr, token: &str, target: &str) -> Value {
    let answer = http::get_with_token(addr, target, token)
        .await
        .expect("an HTTP answer");
    assert_eq!(
        answer.status,
        200,
        "GET {target}: {}",
        String::from_utf8_lossy(&answer.body)
    );
    answer.json().expect("JSON")
}

/// `(instrument_id, state)` of every instrument the API lists.
async fn states(demo: &Demo) -> Vec<(String, String)> {
    let answer = get(demo.http_addr, &demo.evaluator_token, "/api/v1/instruments").await;
    answer["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .map(|r| {
            (
                r["instrument_id"].as_str().unwrap_or_default().to_owned(),
                r["state"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

fn all_known(states: &[(String, String)]) -> bool {
    states.len() == INSTRUMENTS && states.iter().all(|(_, s)| s != "unknown")
}

/// Local dates: the first day of history, and today (history ends today).
fn days(demo: &Demo) -> (jiff::civil::Date, jiff::civil::Date) {
    (
        demo.history_from.to_zoned(demo.time_zone.clone()).date(),
        demo.history_to.to_zoned(demo.time_zone.clone()).date(),
    )
}

/// What the history holds, as the API and the database tell: hours per day
/// and booking outcomes of the past days, events (per agent and type) and
/// result files stored from before the history's end. A second backfill
/// would add events there under new seqs.
async fn history(demo: &Demo) -> (Value, Value, Vec<(String, String, i64, i64)>, i64) {
    let (first, today) = days(demo);
    let range = format!("from={first}&to={today}");
    let hours = get(
        demo.http_addr,
        &demo.evaluator_token,
        &format!("/api/v1/hours?{range}&period=day"),
    )
    .await;
    let outcomes = get(
        demo.http_addr,
        &demo.evaluator_token,
        &format!("/api/v1/bookings/outcomes?{range}"),
    )
    .await;
    let conn = labhours_collector::store::open_read_only(&demo.data_dir).expect("database");
    // The live agents' first summaries start at the top of their minute,
    // which may come just before the history's end: leave two minutes out.
    let end = demo.history_to.as_millisecond() - 120_000;
    let mut stmt = conn
        .prepare(
            "SELECT agent_id, type, count(*), max(seq) FROM events WHERE at_ms < ?1
             GROUP BY agent_id, type ORDER BY agent_id, type",
        )
        .expect("query");
    let events: Vec<(String, String, i64, i64)> = stmt
        .query_map([end], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .expect("rows")
        .map(|r| r.expect("row"))
        .collect();
    let files: i64 = conn
        .query_row(
            "SELECT count(*) FROM result_files WHERE mtime_ms < ?1",
            [end],
            |r| r.get(0),
        )
        .expect("count");
    (
        hours["rows"].clone(),
        outcomes["rows"].clone(),
        events,
        files,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_comes_alive_stops_cleanly_and_continues_without_duplicating_history() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("demo");
    let demo = Demo::start(args(&data)).await.expect("the demo starts");
    let (first, today) = days(&demo);
    let tomorrow = today.tomorrow().expect("a date");

    // Alive: every instrument has a state, every outcome kind exists.
    let deadline = Instant::now() + WAIT;
    let outcomes = loop {
        let states = states(&demo).await;
        let outcomes = get(
            demo.http_addr,
            &demo.evaluator_token,
            &format!("/api/v1/bookings/outcomes?from={first}&to={tomorrow}"),
        )
        .await;
        let kinds: BTreeSet<&str> = outcomes["rows"]
            .as_array()
            .expect("rows")
            .iter()
            .filter_map(|r| r["outcome"].as_str())
            .collect();
        if all_known(&states) && OUTCOMES.iter().all(|k| kinds.contains(k)) {
            break outcomes;
        }
        assert!(
            Instant::now() < deadline,
            "not alive within {WAIT:?}: states {states:?}, outcomes {kinds:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    tokio::time::timeout(WAIT, demo.ready())
        .await
        .expect("the history is delivered and reconciled");

    // The showcase's exceptions are there: flags, a walk-up, the Q-TOF's result files as use.
    let rows = outcomes["rows"].as_array().expect("rows");
    let flags: BTreeSet<&str> = rows
        .iter()
        .flat_map(|r| r["flags"].as_array().into_iter().flatten())
        .filter_map(Value::as_str)
        .collect();
    for flag in ["late_start", "overrun", "early_finish"] {
        assert!(flags.contains(flag), "no {flag} in {flags:?}");
    }
    assert!(
        rows.iter()
            .any(|r| r["instrument_id"] == "qtof-01" && r["outcome"] == "used"),
        "the Q-TOF's result files count as use: {outcomes:#}"
    );
    let before = history(&demo).await;
    let h0 = &before.0;
    let unbooked: f64 = h0
        .as_array()
        .expect("rows")
        .iter()
        .filter_map(|r| r["unbooked_hours"].as_f64())
        .sum();
    assert!(unbooked > 0.0, "walk-ups are unbooked use: {h0:#}");

    assert!(!before.2.is_empty() && before.3 > 0, "{before:?}");
    let tokens = (demo.evaluator_token.clone(), demo.admin_token.clone());
    tokio::time::timeout(Duration::from_secs(30), demo.stop())
        .await
        .expect("stops within 30 s")
        .expect("stops cleanly");

    // Again: the same tokens, no second backfill, the same history.
    let demo = Demo::start(args(&data))
        .await
        .expect("the demo starts again");
    assert_eq!(
        (demo.evaluator_token.clone(), demo.admin_token.clone()),
        tokens
    );
    tokio::time::timeout(Duration::from_secs(30), demo.ready())
        .await
        .expect("ready at once: the history is already there");
    let deadline = Instant::now() + WAIT;
    loop {
        let states = states(&demo).await;
        if all_known(&states) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the restarted agents report no state within {WAIT:?}: {states:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let after = history(&demo).await;
    assert_eq!(after.2, before.2, "events from before the history's end");
    assert_eq!(
        after.3, before.3,
        "result files from before the history's end"
    );
    assert_eq!(after.0, before.0, "hours per day of the past days");
    assert_eq!(after.1, before.1, "outcomes of the past days' bookings");
    let conn = labhours_collector::store::open_read_only(&demo.data_dir).expect("database");
    let conflicts: i64 = conn
        .query_row(
            "SELECT count(*) FROM quarantine WHERE reason LIKE 'agent_id conflict%'",
            [],
            |r| r.get(0),
        )
        .expect("count");
    assert_eq!(conflicts, 0, "no seq given twice across the restart");
    demo.stop().await.expect("stops cleanly");
}
