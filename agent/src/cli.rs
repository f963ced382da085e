//! Command line of `labhours-agent`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::AgentConfig;

/// Measures what a scientific instrument really does and delivers it,
/// durably, to a labhours collector.
#[derive(Debug, Parser)]
#[command(name = "labhours-agent", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run as a service: poll the meters, read the status line, watch the
    /// result folders, and deliver events until stopped (Ctrl-C / SIGTERM).
    Run(ConfigArg),
    /// Check a config file and print a summary; every error names the field and the fix.
    CheckConfig(ConfigArg),
    /// Read every configured meter and status port once and print what came
    /// back, with a clear message per failure (for wiring a meter).
    Probe(ConfigArg),
    /// Feed recorded samples (CSV `timestamp,watts,status_line`) through the
    /// same state engine and outbox as live polling, then wait until the
    /// collector has acknowledged everything.
    Replay {
        #[command(flatten)]
        config: ConfigArg,
        /// CSV file with header `timestamp,watts,status_line`.
        #[arg(long)]
        samples: PathBuf,
        /// Exit once the events are in the outbox, without waiting for acknowledgement.
        #[arg(long)]
        no_wait: bool,
    },
}

#[derive(Debug, clap::Args)]
pub struct ConfigArg {
    /// The agent's config file (see config/agent.example.toml).
    #[arg(long, short, env = "LABHOURS_AGENT_CONFIG")]
    pub config: PathBuf,
}

impl Cli {
    /// Runs the command; errors are printed with their causes.
    pub fn execute(self) -> ExitCode {
        match self.command.execute() {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                eprintln!("error: {err:#}");
                ExitCode::FAILURE
            }
        }
    }
}

impl Command {
    fn execute(self) -> anyhow::Result<()> {
        match self {
            Command::CheckConfig(arg) => check_config(&arg.config),
            Command::Run(_) | Command::Probe(_) | Command::Replay { .. } => anyhow::bail!(
                "this build of labhours-agent cannot do that yet: only check-config is available"
            ),
        }
    }
}

fn check_config(path: &Path) -> anyhow::Result<()> {
    let c = AgentConfig::load(path)?;
    println!(
        "{}: OK. Agent {} watches instrument {} with {} meter(s), {} status port and {} result folder(s); broker {}:{}.",
        path.display(),
        c.agent_id,
        c.instrument_id,
        c.meters.len(),
        if c.status.is_some() { "a" } else { "no" },
        c.results.len(),
        c.mqtt.host,
        c.mqtt.port,
    );
    Ok(())
}
