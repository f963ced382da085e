//! Every example config in `config/` parses and validates with the program it is for.

use std::path::PathBuf;

use labhours_agent::config::{AgentConfig, Purpose};
use labhours_collector::config::CollectorConfig;

fn config_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../config")
}

#[test]
fn every_file_in_config_parses_and_validates() {
    let mut checked = Vec::new();
    for entry in std::fs::read_dir(config_dir()).expect("config/ exists") {
        let path = entry.expect("readable entry").path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_owned();
        if !name.ends_with(".toml") {
            continue;
        }
        if name.starts_with("agent.replay-only") {
            AgentConfig::load_to_start(&path, Purpose::Replay).unwrap_or_else(|e| panic!("{e}"));
        } else if name.starts_with("agent") {
            AgentConfig::load(&path).unwrap_or_else(|e| panic!("{e}"));
        } else if name.starts_with("collector") {
            CollectorConfig::load(&path).unwrap_or_else(|e| panic!("{e}"));
        } else {
            panic!(
                "{name}: name config files agent*.toml (agent.replay-only*.toml for replay) or collector*.toml so this test knows which program reads them"
            );
        }
        checked.push(name);
    }
    checked.sort();
    assert!(
        checked.contains(&"agent.example.toml".to_owned()),
        "{checked:?}"
    );
    assert!(
        checked.contains(&"collector.example.toml".to_owned()),
        "{checked:?}"
    );
}
