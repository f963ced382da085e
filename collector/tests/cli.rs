//! The collector's command line, run as a user would.

use std::process::{Command, Output};

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
    for sub in ["run", "check-config", "bookings", "report", "rebuild"] {
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
        text(&out.stdout).contains("embedded broker on 127.0.0.1:1883; HTTP on 127.0.0.1:8080")
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
    assert!(err.contains("port (line 3, column 1)"), "{err}");
}

#[test]
fn run_fails_with_a_clear_message_when_the_broker_port_is_taken() {
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
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!("cannot listen on 127.0.0.1:{port}")),
        "{err}"
    );
}
