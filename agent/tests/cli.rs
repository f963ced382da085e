//! The agent's command line, run as a user would.

use std::process::{Command, Output};

fn agent(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_labhours-agent"))
        .args(args)
        .env_remove("LABHOURS_AGENT_CONFIG")
        .output()
        .expect("the binary runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn help_describes_every_subcommand() {
    let out = agent(&["--help"]);
    assert!(out.status.success());
    let help = text(&out.stdout);
    for sub in ["run", "check-config", "probe", "replay"] {
        assert!(help.contains(sub), "{sub} missing from:\n{help}");
    }
}

#[test]
fn check_config_accepts_the_example() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../config/agent.example.toml");
    let out = agent(&["check-config", "--config", example]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("Agent nmr600-pc watches instrument nmr-600 with 2 meter(s)")
    );
}

#[test]
fn check_config_names_the_bad_field_and_fails() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("agent.toml");
    std::fs::write(
        &path,
        "agent_id = \"a\"\ninstrument_id = \"i\"\npoll_interval_ms = 5\n[state]\non_above_w = 1\nrunning_above_w = 100\n[[meters]]\nname = \"m\"\nmodel = \"sdm120\"\ntcp = { host = \"h\" }\n",
    )
    .expect("write config");
    let out = agent(&[
        "check-config",
        "--config",
        path.to_str().expect("utf-8 path"),
    ]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("`poll_interval_ms`"), "{err}");
    assert!(err.contains("Fix:"), "{err}");
}

#[test]
fn a_missing_config_file_is_named() {
    let out = agent(&["check-config", "--config", "/nonexistent/agent.toml"]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("cannot read config file /nonexistent/agent.toml"));
}

#[test]
fn the_replay_only_example_is_valid_for_replay_and_not_for_run() {
    let example = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../config/agent.replay-only.example.toml"
    );
    let out = agent(&["check-config", "--config", example, "--for", "replay"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = agent(&["check-config", "--config", example]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("`status.serial`"));
}

#[test]
fn a_missing_config_file_is_explained_once() {
    let out = agent(&["check-config", "--config", "/nonexistent/agent.toml"]);
    let err = text(&out.stderr);
    assert_eq!(err.matches("No such file").count(), 1, "{err}");
    assert!(err.contains("Fix: create the file"), "{err}");
}

#[test]
fn every_bad_key_is_reported_at_once_with_its_path_and_line() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("agent.toml");
    std::fs::write(
        &path,
        "agent_id = \"a\"\ninstrument_id = \"i\"\npoll_interval_ms = \"1000\"\n[state]\non_above_w = 1\nrunning_above_w = 100\n[[meters]]\nname = \"m\"\nmodel = \"sdm120\"\nunit_id = 300\ntcp = { host = \"h\", prot = 502 }\n",
    )
    .expect("write config");
    let out = agent(&["check-config", "--config", path.to_str().expect("utf-8")]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("3 problems"), "{err}");
    for expected in [
        "`poll_interval_ms` (line 3, column 20): invalid type: string \"1000\", expected u64. Fix: write a whole number",
        "`meters[0].unit_id` (line 10, column 11)",
        "`meters[0].tcp.prot` (line 11, column 21)",
        "did you mean `port`?",
    ] {
        assert!(err.contains(expected), "{expected} missing from:\n{err}");
    }
}

/// A config naming a password file and a CA that do not exist.
fn config_with_missing_files(dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("agent.toml");
    std::fs::write(
        &path,
        format!(
            "agent_id = \"a\"\ninstrument_id = \"i\"\ndata_dir = {data:?}\n[mqtt]\nusername = \"a\"\npassword_file = {pw:?}\n[mqtt.tls]\nca_file = {ca:?}\n[state]\non_above_w = 1\nrunning_above_w = 100\n[[meters]]\nname = \"m\"\nmodel = \"sdm120\"\ntcp = {{ host = \"127.0.0.1\", port = 1 }}\n",
            data = dir.join("data"),
            pw = dir.join("missing-password"),
            ca = dir.join("missing-ca.pem"),
        ),
    )
    .expect("write config");
    path
}

#[test]
fn check_config_refuses_the_missing_files_that_run_refuses() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = config_with_missing_files(dir.path());
    let path = path.to_str().expect("utf-8");
    let check = agent(&["check-config", "--config", path]);
    let run = agent(&["run", "--config", path]);
    for out in [&check, &run] {
        assert!(!out.status.success());
        let err = text(&out.stderr);
        assert!(err.contains("`mqtt.password_file`: cannot read"), "{err}");
        assert!(err.contains("`mqtt.tls.ca_file`: cannot read"), "{err}");
    }
    assert_eq!(text(&check.stderr), text(&run.stderr));
}

const REPLAY_ONLY: &str = "agent_id = \"nmr-pc\"\ninstrument_id = \"nmr-600\"\n[state]\non_above_w = 20\nrunning_above_w = 400\n[status]\n[[status.rules]]\npattern = \"^RUN\"\nstate = \"running\"\n[log]\nlevel = \"debug\"\n";

#[test]
fn a_replay_only_config_replays_without_hardware_and_logs_without_colour() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("agent.toml");
    std::fs::write(
        &path,
        format!("data_dir = {:?}\n{REPLAY_ONLY}", dir.path().join("data")),
    )
    .expect("write config");
    let samples = dir.path().join("samples.csv");
    std::fs::write(
        &samples,
        "timestamp,watts,status_line\n2026-11-22T08:00:00Z,5,\n2026-11-22T08:00:01Z,500,RUN S-1\n2026-11-22T08:10:01Z,500,\n",
    )
    .expect("write samples");
    let config = path.to_str().expect("utf-8");

    let out = agent(&["check-config", "--config", config, "--for", "replay"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("OK (for replay)"));
    let out = agent(&["check-config", "--config", config]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("`status.serial`"));

    let out = agent(&[
        "replay",
        "--config",
        config,
        "--samples",
        samples.to_str().expect("utf-8"),
        "--no-wait",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("3 samples (1 status lines matched)"),
        "{}",
        text(&out.stdout)
    );
    // Debug logs went to a pipe: plain text, no colour codes.
    let logs = text(&out.stderr);
    assert!(logs.contains("DEBUG"), "{logs}");
    assert!(!logs.contains('\u{1b}'), "{logs:?}");
}

/// A replay-only agent in `dir` with `extra` appended to its config (in
/// its `[log]` table), run
/// with `args` before the subcommand; its output.
fn replay_with(dir: &std::path::Path, extra: &str, args: &[&str]) -> Output {
    let path = dir.join("agent.toml");
    std::fs::write(
        &path,
        format!("data_dir = {:?}\n{REPLAY_ONLY}\n{extra}", dir.join("data")),
    )
    .expect("write config");
    let samples = dir.join("samples.csv");
    std::fs::write(
        &samples,
        "timestamp,watts,status_line\n2026-11-22T08:00:00Z,5,\n2026-11-22T08:00:01Z,500,\n",
    )
    .expect("write samples");
    let mut all = args.to_vec();
    all.extend([
        "replay",
        "--config",
        path.to_str().expect("utf-8"),
        "--samples",
        samples.to_str().expect("utf-8"),
        "--no-wait",
    ]);
    agent(&all)
}

#[test]
fn log_format_json_overrides_the_config_and_every_line_is_json() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = replay_with(dir.path(), "", &["--log-format", "json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let logs = text(&out.stderr);
    assert!(logs.lines().count() > 0, "no logs");
    for line in logs.lines() {
        let value: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(value["level"].is_string(), "{line}");
    }
}

#[test]
fn a_log_dir_takes_the_logs_in_daily_files() {
    let dir = tempfile::tempdir().expect("temp dir");
    let logs = dir.path().join("logs");
    let out = replay_with(dir.path(), &format!("dir = {logs:?}\n"), &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stderr).is_empty(), "{}", text(&out.stderr));
    let files: Vec<_> = std::fs::read_dir(&logs)
        .expect("the log dir was made")
        .map(|e| e.expect("entry").path())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    let name = files[0].file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        name.starts_with("labhours-agent.") && name.ends_with(".log"),
        "{name}"
    );
    assert!(
        std::fs::read_to_string(&files[0])
            .unwrap()
            .contains("DEBUG")
    );
}

#[cfg(not(windows))]
#[test]
fn service_install_dry_run_prints_the_unit_and_changes_nothing() {
    let out = agent(&[
        "service",
        "install",
        "--dry-run",
        "--exe",
        "/usr/bin/labhours-agent",
        "--config",
        "/etc/labhours/agent.toml",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let unit = text(&out.stdout);
    for line in [
        "Type=notify",
        "ExecStart=/usr/bin/labhours-agent run --config /etc/labhours/agent.toml",
        "StateDirectory=labhours/agent",
    ] {
        assert!(unit.lines().any(|l| l == line), "{line} missing:\n{unit}");
    }
    let steps = text(&out.stderr);
    assert!(
        steps.contains("would run: systemctl enable --now labhours-agent"),
        "{steps}"
    );
}

#[cfg(not(windows))]
#[test]
fn the_windows_service_flag_is_refused_on_linux() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../config/agent.example.toml");
    let out = agent(&["run", "--config", example, "--windows-service"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("systemd"),
        "{}",
        text(&out.stderr)
    );
}
