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
