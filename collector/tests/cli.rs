//! The collector's command line, run as a user would (`bookings import` on
//! temp files included).

use std::path::Path;
use std::process::{Command, Output};

fn collector_with_stdin(args: &[&str], stdin: &str) -> Output {
    use std::io::Write;
    use std::process::Stdio;
    let mut child = Command::new(env!("CARGO_BIN_EXE_labhours-collector"))
        .args(args)
        .env_remove("LABHOURS_COLLECTOR_CONFIG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary runs");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write stdin");
    child.wait_with_output().expect("the binary ends")
}

fn collector(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_labhours-collector"))
        .args(args)
        .env_remove("LABHOURS_COLLECTOR_CONFIG")
        .output()
        .expect("the binary runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn help_describes_every_subcommand() {
    let out = collector(&["--help"]);
    assert!(out.status.success());
    let help = text(&out.stdout);
    for sub in [
        "run",
        "check-config",
        "bookings",
        "report",
        "token",
        "rebuild",
        "demo",
        "agents",
    ] {
        assert!(help.contains(sub), "{sub} missing from:\n{help}");
    }
    let out = collector(&["bookings", "import", "--help"]);
    assert!(text(&out.stdout).contains("--dry-run"));
}

#[test]
fn check_config_without_a_file_uses_the_defaults() {
    let out = collector(&["check-config"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("embedded broker on 127.0.0.1:1883 (plain TCP, no credentials required); HTTP on 127.0.0.1:8080")
    );
}

#[test]
fn check_config_accepts_the_example() {
    let example = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../config/collector.example.toml"
    );
    let out = collector(&["check-config", "--config", example]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("(Asia/Shanghai), 2 instrument(s)"));
}

#[test]
fn check_config_names_the_bad_field_and_fails() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("collector.toml");
    std::fs::write(&path, "[http]\nlisten = \"127.0.0.1:8080\"\nport = 9\n").expect("write");
    let out = collector(&[
        "check-config",
        "--config",
        path.to_str().expect("utf-8 path"),
    ]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("`http.port` (line 3, column 1)"), "{err}");
    assert!(err.contains("this table takes listen, tokens"), "{err}");
}

/// `run` with a config (no time zone) whose broker port is taken: it starts,
/// logs, and fails. Returns the port and what it printed.
fn run_with_the_broker_port_taken() -> (u16, Output) {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port();
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("collector.toml");
    std::fs::write(
        &path,
        format!(
            "data_dir = {:?}\n[mqtt]\nembedded_listen = \"127.0.0.1:{port}\"\n",
            dir.path().join("data")
        ),
    )
    .expect("write");
    let out = collector(&["run", "--config", path.to_str().expect("utf-8 path")]);
    (port, out)
}

#[test]
fn run_fails_with_a_clear_message_when_the_broker_port_is_taken() {
    let (port, out) = run_with_the_broker_port_taken();
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!("cannot listen on 127.0.0.1:{port}")),
        "{err}"
    );
}

// tokens and report

#[test]
fn token_hash_prints_the_sha256_of_one_line_from_stdin() {
    let out = collector_with_stdin(&["token", "hash"], "test\n");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08\n"
    );
    let out = collector_with_stdin(&["token", "hash"], "");
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("no token on standard input"));
}

#[test]
fn token_new_prints_a_token_and_an_entry_that_the_config_accepts() {
    let out = collector(&[
        "token",
        "new",
        "--name",
        "evaluation-office",
        "--role",
        "evaluator",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let printed = text(&out.stdout);
    let token = printed.lines().next().expect("the token first");
    assert!(token.starts_with("lh_") && token.len() == 67, "{printed}");
    let entry = &printed[printed.find("[[http.tokens]]").expect("an entry")..];
    assert!(
        entry.contains("name = \"evaluation-office\"\nrole = \"evaluator\"\n"),
        "{entry}"
    );
    let hashed = collector_with_stdin(&["token", "hash"], token);
    assert!(entry.contains(&format!("sha256 = \"{}\"", text(&hashed.stdout).trim())));

    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("collector.toml");
    std::fs::write(
        &path,
        format!("[http]\nlisten = \"0.0.0.0:8080\"\n\n{entry}"),
    )
    .expect("write");
    let out = collector(&["check-config", "--config", path.to_str().expect("utf-8")]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("HTTP on 0.0.0.0:8080 (1 API token)"),
        "{}",
        text(&out.stdout)
    );
}

#[test]
fn a_public_http_listen_without_tokens_is_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("collector.toml");
    std::fs::write(&path, "[http]\nlisten = \"0.0.0.0:8080\"\n").expect("write");
    let out = collector(&["check-config", "--config", path.to_str().expect("utf-8")]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("`http.tokens`"), "{err}");
    assert!(err.contains("token new"), "{err}");
}

#[test]
fn report_names_a_bad_option_before_opening_anything() {
    let out = collector(&[
        "report",
        "--from",
        "2025-03-01",
        "--to",
        "2025-04-01",
        "--period",
        "week",
    ]);
    assert!(!out.status.success());
    assert_eq!(
        text(&out.stderr),
        "error: --period: period=\"week\" is not one of: day, month, year\n"
    );
    let out = collector(&["report", "--from", "2025-04-01", "--to", "2025-03-01"]);
    assert!(
        text(&out.stderr).starts_with("error: --to: "),
        "{}",
        text(&out.stderr)
    );
}

// bookings import

/// A config with a temp data dir, the Shanghai zone and two instruments.
fn setup(dir: &Path) -> String {
    let config = dir.join("collector.toml");
    let data = dir.join("data");
    std::fs::write(
        &config,
        format!(
            "data_dir = {:?}\n[site]\ntime_zone = \"Asia/Shanghai\"\n\n[[instruments]]\nid = \"nmr-600\"\nname = \"NMR\"\n\n[[instruments]]\nid = \"xrd-1\"\nname = \"XRD\"\n",
            data.to_str().expect("utf-8")
        ),
    )
    .expect("write config");
    config.to_str().expect("utf-8").to_owned()
}

fn import(config: &str, file: &Path, extra: &[&str]) -> Output {
    let mut args = vec!["bookings", "import", "--config", config];
    args.push(file.to_str().expect("utf-8"));
    args.extend_from_slice(extra);
    collector(&args)
}

fn stored(dir: &Path) -> i64 {
    let conn = labhours_collector::store::open_read_only(&dir.join("data")).expect("db");
    conn.query_row("SELECT count(*) FROM bookings", [], |r| r.get(0))
        .expect("count")
}

const GOOD: &str = "\u{feff}booking_id,instrument_id,user,group,usage_type,start,end,status\r\nB1,nmr-600,alice,Chem,科研,2026-11-23 09:00,2026-11-23 11:00,confirmed\r\nB2,xrd-1,bob,Phys,teaching,2026-11-23T13:00:00+08:00,2026-11-23T15:00:00+08:00,confirmed\r\n";

#[test]
fn importing_a_csv_twice_inserts_then_changes_nothing() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = setup(dir.path());
    let file = dir.path().join("bookings.csv");
    std::fs::write(&file, GOOD).expect("write");
    let out = import(&config, &file, &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("2 inserted, 0 updated, 0 unchanged"));
    let out = import(&config, &file, &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("0 inserted, 0 updated, 2 unchanged"));
    assert_eq!(stored(dir.path()), 2);
}

#[test]
fn a_file_with_bad_rows_lists_each_with_its_line_applies_nothing_and_fails() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = setup(dir.path());
    let file = dir.path().join("bookings.csv");
    std::fs::write(
        &file,
        format!("{GOOD}B3,nmr-600,c,g,lab,2026-11-23 09:00,2026-11-23 10:00,confirmed\r\nB4,nmr-600,c,g,research,2026-11-23 10:00,2026-11-23 09:00,confirmed\r\n"),
    )
    .expect("write");
    let out = import(&config, &file, &[]);
    assert!(!out.status.success());
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("bookings.csv line 4: usage_type \"lab\" is not one of teaching, research, external, training, maintenance"),
        "{stdout}"
    );
    assert!(
        stdout.contains("bookings.csv line 5: end 2026-11-23 09:00 is not after start"),
        "{stdout}"
    );
    assert!(text(&out.stderr).contains("--skip-invalid"));
    assert_eq!(stored(dir.path()), 0);

    let out = import(&config, &file, &["--skip-invalid"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("2 inserted, 0 updated, 0 unchanged, 2 error(s)"));
    assert_eq!(stored(dir.path()), 2);
}

#[test]
fn bookings_of_an_instrument_not_monitored_are_imported_and_named_in_the_summary() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = setup(dir.path());
    let file = dir.path().join("bookings.csv");
    std::fs::write(
        &file,
        format!("{GOOD}B3,sem-2,c,g,research,2026-11-23 09:00,2026-11-23 10:00,confirmed\r\nB4,sem-2,c,g,research,2026-11-24 09:00,2026-11-24 10:00,confirmed\r\nB5,nmr-6OO,c,g,research,2026-11-24 09:00,2026-11-24 10:00,confirmed\r\n"),
    )
    .expect("write");
    let out = import(&config, &file, &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("bookings.csv: 3 booking(s) of instruments not monitored"),
        "{stdout}"
    );
    assert!(stdout.contains(": nmr-6OO (1), sem-2 (2)"), "{stdout}");
    assert!(
        stdout.contains("5 inserted, 0 updated, 0 unchanged"),
        "{stdout}"
    );
    // Not a terminal: no progress line.
    assert_eq!(text(&out.stderr), "");
    assert_eq!(stored(dir.path()), 5);
}

#[test]
fn a_file_that_is_not_utf8_is_refused_naming_line_and_column() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = setup(dir.path());
    let file = dir.path().join("bookings.csv");
    // "张三" in GBK, as Excel saves "CSV" on a Chinese Windows.
    let mut bytes = GOOD.as_bytes().to_vec();
    bytes.extend(b"B3,nmr-600,");
    bytes.extend([0xD5, 0xC5, 0xC8, 0xFD]);
    bytes.extend(b",g,research,2026-11-23 09:00,2026-11-23 10:00,confirmed\r\n");
    std::fs::write(&file, bytes).expect("write");
    let out = import(&config, &file, &[]);
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("bookings.csv line 4, column 12 (byte "),
        "{stderr}"
    );
    assert!(stderr.contains("CSV UTF-8"), "{stderr}");
    // Refused before the database is even opened.
    assert!(!dir.path().join("data").exists());
}

#[test]
fn a_dry_run_reports_and_writes_nothing() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = setup(dir.path());
    let file = dir.path().join("bookings.csv");
    std::fs::write(&file, GOOD).expect("write");
    let out = import(&config, &file, &["--dry-run"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("dry run, not applied: would be 2 inserted"));
    assert_eq!(stored(dir.path()), 0);
}

#[test]
fn an_ics_feed_is_imported_with_recurrences_and_updates_are_named() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = setup(dir.path());
    let file = dir.path().join("feed.ics");
    let feed = |end: &str| {
        format!(
            "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nBEGIN:VEVENT\r\nUID:course-1\r\nORGANIZER;CN=Alice:mailto:alice@chem.example.edu\r\nCATEGORIES:教学\r\nLOCATION:nmr-600\r\nDTSTART;TZID=Asia/Shanghai:20261123T090000\r\nDTEND;TZID=Asia/Shanghai:{end}\r\nRRULE:FREQ=WEEKLY;BYDAY=MO,WE;COUNT=4\r\nEXDATE;TZID=Asia/Shanghai:20261125T090000\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n"
        )
    };
    std::fs::write(&file, feed("20261123T110000")).expect("write");
    let out = import(&config, &file, &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("3 inserted, 0 updated, 0 unchanged"));
    std::fs::write(&file, feed("20261123T120000")).expect("write");
    let out = import(&config, &file, &[]);
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("updated course-1/20261130T010000Z: end"),
        "{stdout}"
    );
    assert!(
        stdout.contains("0 inserted, 3 updated, 0 unchanged"),
        "{stdout}"
    );
}

#[test]
fn an_ics_series_that_starts_off_rule_is_imported_with_a_warning_naming_its_line() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = setup(dir.path());
    let file = dir.path().join("feed.ics");
    // Tuesday 24 November; the rule says Mondays and Wednesdays.
    let feed = "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nBEGIN:VEVENT\r\nUID:o1\r\nCATEGORIES:research\r\nLOCATION:nmr-600\r\nDTSTART:20261124T010000Z\r\nDTEND:20261124T020000Z\r\nRRULE:FREQ=WEEKLY;BYDAY=MO,WE;COUNT=2\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n";
    std::fs::write(&file, feed).expect("write");
    let out = import(&config, &file, &[]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        stdout.contains("feed.ics line 3: warning: event UID \"o1\": DTSTART 2026-11-24 (Tuesday)"),
        "{stdout}"
    );
    assert!(stdout.contains("3 inserted"), "{stdout}");
}

#[test]
fn an_unknown_extension_needs_format() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = setup(dir.path());
    let file = dir.path().join("export.txt");
    std::fs::write(&file, GOOD).expect("write");
    let out = import(&config, &file, &[]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("--format csv|ics"));
    let out = import(&config, &file, &["--format", "csv"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
}

/// `labhours-collector demo` as a user runs it: it prints the banner in the
/// terminal's language, gets ready, and Ctrl-C (SIGINT) stops it cleanly
/// with exit status 0.
#[cfg(unix)]
#[test]
fn the_demo_prints_its_banner_and_ctrl_c_stops_it_cleanly() {
    use std::io::BufRead;
    use std::process::Stdio;
    use std::sync::mpsc;
    use std::time::Duration;

    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("demo");
    let data_arg = data.to_str().expect("a UTF-8 path");
    let mut child = Command::new(env!("CARGO_BIN_EXE_labhours-collector"))
        .args(["demo", "--data-dir", data_arg, "--history-days", "1"])
        .args(["--http-port", "0", "--mqtt-port", "0"])
        .env("LANG", "zh_CN.UTF-8")
        .env_remove("LC_ALL")
        .env_remove("LC_MESSAGES")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("the binary runs");
    let (tx, lines) = mpsc::channel();
    let stdout = child.stdout.take().expect("stdout");
    let reader = std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    /// Reads lines (bounded) until one starts with `prefix`.
    fn wait_for(
        lines: &mpsc::Receiver<String>,
        seen: &mut Vec<String>,
        prefix: &str,
        within: Duration,
    ) {
        let deadline = std::time::Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match lines.recv_timeout(left) {
                Ok(line) => {
                    let found = line.starts_with(prefix);
                    seen.push(line);
                    if found {
                        return;
                    }
                }
                Err(_) => panic!(
                    "no line starting {prefix:?} within {within:?}; printed:\n{}",
                    seen.join("\n")
                ),
            }
        }
    }
    let mut seen = Vec::new();
    wait_for(&lines, &mut seen, "就绪", Duration::from_secs(60));
    let printed = seen.join("\n");
    for want in [
        "仪表盘：       http://127.0.0.1:",
        "评估方令牌：   lh_",
        "管理员令牌：   lh_",
        "curl -H \"Authorization: Bearer lh_",
    ] {
        assert!(printed.contains(want), "{want:?} missing from:\n{printed}");
    }
    let kill = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(kill.success());
    wait_for(&lines, &mut seen, "已停止", Duration::from_secs(30));
    let status = child.wait().expect("the demo ends");
    assert!(status.success(), "{status}");
    reader.join().expect("the reader ends");
    assert!(data.join("demo.json").exists() && data.join("collector.toml").exists());
}

#[test]
fn a_missing_config_file_is_explained_once() {
    let out = collector(&["check-config", "--config", "/nonexistent/collector.toml"]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert_eq!(err.matches("No such file").count(), 1, "{err}");
    assert!(
        err.contains("cannot read config file /nonexistent/collector.toml"),
        "{err}"
    );
}

#[test]
fn every_bad_key_is_reported_at_once_with_its_path_and_line() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("collector.toml");
    std::fs::write(
        &path,
        "[site]\ntime_zone = \"Asia/Shanghai\"\n[http]\nlisten = 8080\n[reconciliation]\nmerge_gap_s = \"300\"\nsilence_after_s = 0\n[[instruments]]\nid = \"nmr\"\nname = \"NMR\"\nusage_source = \"filez\"\n",
    )
    .expect("write");
    let out = collector(&["check-config", "--config", path.to_str().expect("utf-8")]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("4 problems"), "{err}");
    for expected in [
        "`http.listen` (line 4, column 10)",
        "`reconciliation.merge_gap_s` (line 6, column 15): invalid type: string \"300\", expected u64. Fix: write a whole number (0 or more), without quotes, e.g. `merge_gap_s = 300`",
        "`instruments[0].usage_source` (line 11, column 16)",
        "`reconciliation.silence_after_s`: 0 s",
    ] {
        assert!(err.contains(expected), "{expected} missing from:\n{err}");
    }
}

#[test]
fn check_config_refuses_the_missing_files_that_run_refuses() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("collector.toml");
    std::fs::write(
        &path,
        format!(
            "data_dir = {data:?}\n[site]\ntime_zone = \"Asia/Shanghai\"\n[mqtt.external]\nhost = \"127.0.0.1\"\nport = 1\nusername = \"c\"\npassword_file = {pw:?}\n[mqtt.external.tls]\nca_file = {ca:?}\n",
            data = dir.path().join("data"),
            pw = dir.path().join("missing-password"),
            ca = dir.path().join("missing-ca.pem"),
        ),
    )
    .expect("write");
    let path = path.to_str().expect("utf-8");
    let check = collector(&["check-config", "--config", path]);
    let run = collector(&["run", "--config", path]);
    for out in [&check, &run] {
        assert!(!out.status.success());
        let err = text(&out.stderr);
        assert!(
            err.contains("`mqtt.external.password_file`: cannot read"),
            "{err}"
        );
        assert!(
            err.contains("`mqtt.external.tls.ca_file`: cannot read"),
            "{err}"
        );
    }
    assert_eq!(text(&check.stderr), text(&run.stderr));
}

#[test]
fn a_site_without_a_time_zone_is_warned_about_by_check_config_and_at_start() {
    let out = collector(&["check-config"]);
    assert!(out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("warning: `site.time_zone`: is not set, so days, months and local booking times are read in UTC. Fix: name the site's zone, e.g. [site] time_zone = \"Asia/Shanghai\""),
        "{err}"
    );

    let dir = tempfile::tempdir().expect("temp dir");
    let utc = dir.path().join("utc.toml");
    std::fs::write(&utc, "[site]\ntime_zone = \"UTC\"\n").expect("write");
    let out = collector(&["check-config", "--config", utc.to_str().expect("utf-8")]);
    assert!(out.status.success());
    assert!(
        !text(&out.stderr).contains("warning"),
        "{}",
        text(&out.stderr)
    );

    // At start (here one that then fails: its broker port is taken), in the
    // log, which goes to a pipe: plain text without colour codes.
    let (_, out) = run_with_the_broker_port_taken();
    assert!(!out.status.success());
    let logs = text(&out.stderr);
    assert!(logs.contains("WARN"), "{logs}");
    assert!(logs.contains("site.time_zone"), "{logs}");
    assert!(!logs.contains('\u{1b}'), "{logs:?}");
}

/// Standard output of a command that must succeed.
fn stdout(out: &Output) -> String {
    assert!(
        out.status.success(),
        "failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `quarantine list|show|purge` on a real database, as an operator runs them.
#[test]
fn an_operator_lists_shows_and_purges_refused_payloads() {
    use labhours_collector::quarantine::{Kind, Quarantined};
    use labhours_collector::store::{Batch, Durability, Store};
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

/// `run` as systemd starts it (Type=notify, WatchdogSec): READY=1 once it
/// serves, watchdog pings, and on SIGTERM STOPPING=1 and a clean exit. The
/// test is the notify socket; `sh -c 'WATCHDOG_PID=$$ exec …'` gives the
/// process its own pid, as systemd does.
#[cfg(unix)]
#[test]
fn run_under_systemd_reports_ready_pings_the_watchdog_and_stops_cleanly_on_sigterm() {
    use std::os::unix::net::UnixDatagram;
    use std::time::{Duration, Instant};
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("collector.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = {:?}\n[site]\ntime_zone = \"Asia/Shanghai\"\n[mqtt]\nembedded_listen = \"127.0.0.1:0\"\n[http]\nlisten = \"127.0.0.1:0\"\n",
            dir.path().join("data")
        ),
    )
    .expect("write");
    let socket_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).expect("notify socket");
    socket
        .set_read_timeout(Some(Duration::from_secs(60)))
        .expect("timeout");
    let mut child = Command::new("sh")
        .args(["-c", r#"WATCHDOG_PID=$$ exec "$0" "$@""#])
        .arg(env!("CARGO_BIN_EXE_labhours-collector"))
        .args(["run", "--config", config.to_str().expect("utf-8")])
        .env("NOTIFY_SOCKET", &socket_path)
        .env("WATCHDOG_USEC", "200000")
        .env("RUST_LOG", "warn")
        .spawn()
        .expect("the binary runs");
    let pid = child.id().to_string();
    let mut messages = Vec::new();
    let mut next = |messages: &mut Vec<String>| {
        let mut buf = [0u8; 512];
        match socket.recv(&mut buf) {
            Ok(n) => messages.push(String::from_utf8_lossy(&buf[..n]).into_owned()),
            Err(e) => {
                let _ = child.kill();
                panic!("nothing on the notify socket within 60 s ({e}); got {messages:?}");
            }
        }
    };
    while messages.iter().filter(|m| *m == "WATCHDOG=1\n").count() < 2 {
        next(&mut messages);
    }
    assert!(
        messages.contains(&"READY=1\nSTATUS=running\n".to_owned()),
        "{messages:?}"
    );
    let kill = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill runs");
    assert!(kill.success());
    while !messages.iter().any(|m| m == "STOPPING=1\n") {
        next(&mut messages);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().expect("status") {
            break status;
        }
        assert!(Instant::now() < deadline, "no exit within 30 s of SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status}");
}

#[cfg(unix)]
#[test]
fn service_install_dry_run_prints_the_collectors_unit() {
    let out = collector(&[
        "service",
        "install",
        "--print",
        "--exe",
        "/usr/bin/labhours-collector",
        "--config",
        "/etc/labhours/collector.toml",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        include_str!("../../deploy/labhours-collector.service")
    );
}

#[test]
fn agents_enrol_lists_and_revokes_keys_and_refuses_a_key_of_another_agent() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = setup(dir.path());
    let der = labhours_shared::trust::Signer::generate_pkcs8().expect("key");
    let signer = labhours_shared::trust::Signer::from_pkcs8(&der).expect("parses");
    let public = signer.public_key().to_string();
    let key_id = signer.key_id().to_string();
    let out = collector(&["agents", "enrol", "--config", &config, "nmr-pc", &public]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains(&format!("enrolled key {key_id} for agent nmr-pc")));
    let out = collector(&["agents", "enrol", "--config", &config, "xrd-pc", &public]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("already enrolled for agent nmr-pc"),
        "{}",
        text(&out.stderr)
    );
    let out = collector(&[
        "agents",
        "enrol",
        "--config",
        &config,
        "xrd-pc",
        "ed25519:12",
    ]);
    assert!(
        text(&out.stderr).contains("64 hex digits"),
        "{}",
        text(&out.stderr)
    );
    let out = collector(&["agents", "keys", "--config", &config, "--json"]);
    let row: serde_json::Value = serde_json::from_str(text(&out.stdout).trim()).expect("json");
    assert_eq!(row["agent_id"], "nmr-pc");
    assert_eq!(row["public_key"], public.as_str());
    assert!(row["revoked_at"].is_null());
    let out = collector(&["agents", "revoke", "--config", &config, "nmr-pc", &key_id]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = collector(&["agents", "keys", "--config", &config]);
    let table = text(&out.stdout);
    assert!(
        table.contains(&key_id) && !table.contains(" -  "),
        "{table}"
    );
}

#[test]
fn agents_credential_prints_a_password_once_lists_replaces_and_removes_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = setup(dir.path());
    let issue = || collector(&["agents", "credential", "--config", &config, "nmr-pc"]);
    let out = issue();
    assert!(out.status.success(), "{}", text(&out.stderr));
    // The password alone on stdout (to redirect into the agent's
    // password_file), the explanation on stderr.
    let first = text(&out.stdout).trim().to_owned();
    assert!(
        first.len() == 64 && first.chars().all(|c| c.is_ascii_hexdigit()),
        "{first:?}"
    );
    assert!(
        text(&out.stderr).contains("username = \"nmr-pc\""),
        "{}",
        text(&out.stderr)
    );
    let second = text(&issue().stdout).trim().to_owned();
    assert_ne!(first, second, "issuing again makes a new password");
    let listed = text(&collector(&["agents", "credentials", "--config", &config]).stdout);
    assert!(listed.contains("nmr-pc"), "{listed}");
    assert!(!listed.contains(&second), "the password is never listed");
    // Only the hash is stored.
    for file in std::fs::read_dir(dir.path().join("data")).expect("data dir") {
        let path = file.expect("entry").path();
        let bytes = std::fs::read(&path).unwrap_or_default();
        assert!(
            !bytes.windows(64).any(|w| w == second.as_bytes()),
            "the password is stored in clear in {}",
            path.display()
        );
    }
    let out = collector(&["agents", "credential", "--config", &config, "bad/id"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("agent_id"),
        "{}",
        text(&out.stderr)
    );
    let remove = || {
        collector(&[
            "agents",
            "credential",
            "--config",
            &config,
            "nmr-pc",
            "--remove",
        ])
    };
    assert!(remove().status.success());
    let out = remove();
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("has no broker credential"),
        "{}",
        text(&out.stderr)
    );
}
