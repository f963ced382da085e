//! `labhours-collector quarantine list|show|purge` on a real database, run
//! as an operator would.

use std::process::{Command, Output};

use labhours_collector::quarantine::{Kind, Quarantined};
use labhours_collector::store::{Batch, Durability, Store};

fn collector(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_labhours-collector"))
        .args(args)
        .env_remove("LABHOURS_COLLECTOR_CONFIG")
        .output()
        .expect("the binary runs")
}

fn stdout(out: &Output) -> String {
    assert!(
        out.status.success(),
        "failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn an_operator_lists_shows_and_purges_refused_payloads() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let config = dir.path().join("collector.toml");
    std::fs::write(
        &config,
        format!("data_dir = {data:?}\n[site]\ntime_zone = \"Asia/Shanghai\"\n"),
    )
    .expect("config");
    let long_ago = jiff::Timestamp::now() - jiff::SignedDuration::from_hours(24 * 400);
    let recent = jiff::Timestamp::now() - jiff::SignedDuration::from_hours(1);
    let mut store = Store::open(&data, Durability::Normal).expect("store");
    store
        .commit(&Batch {
            quarantined: vec![
                Quarantined::new(
                    long_ago,
                    "labhours/v1/agent-old/events",
                    Some("agent-old"),
                    Kind::Undecodable,
                    "undecodable envelope: expected value".into(),
                    b"{garbled",
                ),
                Quarantined::new(
                    recent,
                    "labhours/v1/agent-2/events",
                    Some("agent-2"),
                    Kind::SeqConflict,
                    "agent_id conflict: seq 4 of agent-2 is already stored".into(),
                    &[0xff, 0xfe],
                ),
            ],
            ..Batch::default()
        })
        .expect("commit");
    drop(store);
    let c = config.to_str().expect("utf-8 path");

    let list = stdout(&collector(&["quarantine", "list", "--config", c]));
    let lines: Vec<&str> = list.lines().collect();
    assert_eq!(lines.len(), 3, "header and two rows:\n{list}");
    assert!(
        lines[1].contains("agent-2") && lines[1].contains("seq_conflict"),
        "{list}"
    );
    assert!(
        lines[2].contains("agent-old") && lines[2].contains("undecodable"),
        "{list}"
    );

    let only = stdout(&collector(&[
        "quarantine",
        "list",
        "--config",
        c,
        "--kind",
        "undecodable",
        "--json",
    ]));
    let row: serde_json::Value = serde_json::from_str(only.trim()).expect("one JSON line");
    assert_eq!(row["agent_id"], "agent-old");
    assert_eq!(row["payload_len"], 8);

    let bad = collector(&["quarantine", "list", "--config", c, "--kind", "garbled"]);
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("--kind \"garbled\" is not one of bad_topic"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );

    let show = stdout(&collector(&["quarantine", "show", "--config", c, "1"]));
    assert!(show.contains("reason:    undecodable envelope"), "{show}");
    assert!(show.ends_with("{garbled\n"), "{show}");
    let binary = stdout(&collector(&["quarantine", "show", "--config", c, "2"]));
    assert!(binary.contains("(not UTF-8; hex)\nfffe"), "{binary}");

    let dry = stdout(&collector(&[
        "quarantine",
        "purge",
        "--config",
        c,
        "--older-than",
        "365d",
        "--dry-run",
    ]));
    assert!(dry.starts_with("would delete 1 "), "{dry}");
    let purged = stdout(&collector(&[
        "quarantine",
        "purge",
        "--config",
        c,
        "--older-than",
        "365d",
    ]));
    assert!(purged.starts_with("deleted 1 "), "{purged}");
    let left = stdout(&collector(&["quarantine", "list", "--config", c]));
    assert_eq!(left.lines().count(), 2, "{left}");
    assert!(!left.contains("agent-old"), "{left}");
}
