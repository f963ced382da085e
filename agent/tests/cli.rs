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
    for sub in [
        "run",
        "check-config",
        "probe",
        "replay",
        "calibrate",
        "keygen",
    ] {
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

/// A replay-only config for `calibrate --samples`, with placeholder thresholds.
fn calibrate_config(dir: &std::path::Path) -> String {
    let path = dir.join("agent.toml");
    std::fs::write(
        &path,
        format!(
            "agent_id = \"gcms-pc\"\ninstrument_id = \"gcms-01\"\ndata_dir = {:?}\n[state]\non_above_w = 1\nrunning_above_w = 100\nmin_dwell_s = 20\n",
            dir.join("data")
        ),
    )
    .expect("write config");
    path.to_str().expect("utf-8").to_owned()
}

/// A day of the simulated GC-MS as a replay CSV (with a status column, as
/// `replay` files have; calibration ignores it).
fn gc_ms_day(dir: &std::path::Path) -> String {
    use labhours_agent::instrument_sim::Profile;
    let t0: jiff::Timestamp = "2026-11-22T00:00:00Z".parse().expect("instant");
    let mut csv = String::from("timestamp,watts,status_line\n");
    for s in Profile::GcMs.record(11, 86_400) {
        let at = t0 + jiff::SignedDuration::from_secs(s.at_s);
        csv.push_str(&format!("{at},{},\n", s.watts));
    }
    let path = dir.join("gcms.csv");
    std::fs::write(&path, csv).expect("write samples");
    path.to_str().expect("utf-8").to_owned()
}

/// The `[state]` block of a calibrate report, parsed.
fn state_block(report: &str) -> labhours_shared::state::StateRules {
    let start = report.find("[state]\n").expect("a [state] block");
    let block: String = report[start..]
        .lines()
        .take_while(|l| !l.trim().is_empty())
        .map(|l| format!("{l}\n"))
        .collect();
    let table: toml::Table = block.parse().expect("the block is TOML");
    table["state"].clone().try_into().expect("a valid [state]")
}

#[test]
fn calibrate_on_a_recording_prints_a_state_block_to_paste_and_changes_nothing() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = calibrate_config(dir.path());
    let before = std::fs::read_to_string(&config).expect("config");
    let samples = gc_ms_day(dir.path());
    let out = agent(&["calibrate", "--config", &config, "--samples", &samples]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let report = text(&out.stdout);
    let state = state_block(&report);
    // Standby 320 W, the oven's hold 550–850 W inside the band, its ramp 1600 W.
    assert!(
        320.0 * 1.03 < state.exit_w() && state.exit_w() < 550.0,
        "{report}"
    );
    assert!(850.0 < state.running_above_w && state.running_above_w < 1600.0 * 0.97);
    assert!(40.0 < state.on_above_w && state.on_above_w < 320.0);
    assert_eq!(state.min_dwell_s, 20, "the config's other keys are kept");
    assert!(report.contains("running (hold)"), "{report}");
    assert!(report.contains("nothing was written"), "{report}");
    assert_eq!(std::fs::read_to_string(&config).expect("config"), before);

    let out = agent(&[
        "calibrate",
        "--config",
        &config,
        "--samples",
        &samples,
        "--json",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(json["state"]["running_above_w"], state.running_above_w);
    assert_eq!(json["levels"].as_array().map(Vec::len), Some(3));
}

#[test]
fn calibrate_on_a_flat_recording_says_why_it_cannot_suggest_anything() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = calibrate_config(dir.path());
    let path = dir.path().join("flat.csv");
    let rows: String = (0..120)
        .map(|s| {
            format!(
                "2026-11-22T08:{:02}:{:02}Z,{}\n",
                s / 60,
                s % 60,
                400 + s % 7
            )
        })
        .collect();
    std::fs::write(&path, format!("timestamp,watts\n{rows}")).expect("write");
    let out = agent(&[
        "calibrate",
        "--config",
        &config,
        "--samples",
        path.to_str().expect("utf-8"),
    ]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("one level") && err.contains("cannot be inferred"),
        "{err}"
    );
}

mod calibrate_live {
    use super::{agent, text};
    use labhours_agent::config::{DataType, Register, RegisterKind, RegisterMap, WordOrder};
    use labhours_agent::modbus_sim::{Fault, Sim, SimUnit, TcpSim, layout_of};

    /// A meter serving power only, so each poll is one read of the script.
    fn power_only() -> SimUnit {
        SimUnit::new(layout_of(&RegisterMap {
            power_w: Register {
                kind: RegisterKind::Input,
                address: 12,
                data_type: DataType::F32,
                word_order: WordOrder::Abcd,
                scale: 1.0,
            },
            voltage_v: None,
            current_a: None,
            energy_kwh: None,
        }))
    }

    fn config(dir: &std::path::Path, port: u16) -> String {
        let path = dir.join("agent.toml");
        std::fs::write(
            &path,
            format!(
                "agent_id = \"sem-pc\"\ninstrument_id = \"sem-01\"\ndata_dir = {:?}\npoll_interval_ms = 100\n\
                 [state]\non_above_w = 1\nrunning_above_w = 100\nmin_dwell_s = 1\n\
                 [[meters]]\nname = \"sem-main\"\nmodel = \"custom\"\ntimeout_ms = 80\ntcp = {{ host = \"127.0.0.1\", port = {port} }}\n\
                 registers.power_w = {{ kind = \"input\", address = 12, data_type = \"f32\" }}\n",
                dir.join("data")
            ),
        )
        .expect("write config");
        path.to_str().expect("utf-8").to_owned()
    }

    async fn run(args: Vec<String>) -> std::process::Output {
        tokio::task::spawn_blocking(move || {
            agent(&args.iter().map(String::as_str).collect::<Vec<_>>())
        })
        .await
        .expect("the agent ran")
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn calibrate_reads_the_meter_for_the_given_minutes_and_saves_what_it_read() {
        // 30 polls of 100 ms (0.05 min): off, standby, imaging, one value per poll.
        let script: Vec<f64> = [(10, 4.0), (10, 420.0), (10, 1650.0)]
            .iter()
            .flat_map(|&(n, w)| std::iter::repeat_n(w, n))
            .collect();
        let sim = Sim::new().with_unit(1, power_only().scripted(script));
        let server = TcpSim::start(sim.clone()).await.expect("sim");
        let dir = tempfile::tempdir().expect("temp dir");
        let config = config(dir.path(), server.addr().port());
        let saved = dir.path().join("recorded.csv");
        let saved = saved.to_str().expect("utf-8").to_owned();
        let out = run([
            "calibrate",
            "--config",
            &config,
            "--minutes",
            "0.05",
            "--save",
            &saved,
        ]
        .map(String::from)
        .to_vec())
        .await;
        assert!(out.status.success(), "{}", text(&out.stderr));
        assert_eq!(sim.requests(1), 30, "one read per poll for 0.05 min");
        let report = text(&out.stdout);
        let state = super::state_block(&report);
        assert!(
            4.0 < state.on_above_w && state.on_above_w < 420.0,
            "{report}"
        );
        assert!(
            420.0 < state.exit_w() && state.running_above_w < 1650.0,
            "{report}"
        );
        assert!(report.contains("30 samples"), "{report}");

        // What was saved calibrates to the same block.
        let again = run(["calibrate", "--config", &config, "--samples", &saved]
            .map(String::from)
            .to_vec())
        .await;
        assert!(again.status.success(), "{}", text(&again.stderr));
        assert_eq!(super::state_block(&text(&again.stdout)), state);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_meter_that_does_not_answer_is_named_and_never_read_as_zero_watts() {
        let sim = Sim::new().with_unit(1, power_only().reading(0.0, 0.0, 0.0, 0.0));
        sim.update(1, |u| u.fault = Some(Fault::Silent));
        let server = TcpSim::start(sim).await.expect("sim");
        let dir = tempfile::tempdir().expect("temp dir");
        let config = config(dir.path(), server.addr().port());
        let out = run(["calibrate", "--config", &config, "--minutes", "0.05"]
            .map(String::from)
            .to_vec())
        .await;
        assert!(!out.status.success());
        let err = text(&out.stderr);
        assert!(
            err.contains("meter `sem-main` could not be read: no answer within 80 ms"),
            "{err}"
        );
        assert!(!text(&out.stdout).contains("[state]"));
    }
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

#[cfg(unix)]
#[test]
fn keygen_then_check_config_signs_and_a_key_others_can_read_is_refused() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().expect("temp dir");
    let key = dir.path().join("keys").join("agent.key");
    let out = agent(&["keygen", "--out", key.to_str().expect("utf-8")]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let printed = text(&out.stdout);
    let key_id = printed
        .lines()
        .find_map(|l| l.strip_prefix("key id:"))
        .expect("a key id line")
        .trim()
        .to_owned();
    assert!(
        printed.contains("labhours-collector agents enrol <agent_id> ed25519:"),
        "{printed}"
    );
    let mode = std::fs::metadata(&key).expect("key").permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let again = agent(&["keygen", "--out", key.to_str().expect("utf-8")]);
    assert!(!again.status.success(), "never overwrites");

    let example = include_str!("../../config/agent.example.toml");
    let config = dir.path().join("agent.toml");
    std::fs::write(
        &config,
        example.replace(
            "# key_file = \"labhours-agent-data/agent.key\"",
            &format!("key_file = {key:?}"),
        ),
    )
    .expect("config");
    let out = agent(&["check-config", "--config", config.to_str().expect("utf-8")]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains(&format!("Envelopes are signed with key {key_id}")),
        "{}",
        text(&out.stdout)
    );
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o640)).expect("chmod");
    let out = agent(&["check-config", "--config", config.to_str().expect("utf-8")]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("signing.key_file") && err.contains("chmod 600"),
        "{err}"
    );
}
