//! Command line of `labhours-agent`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use labhours_shared::config::LogArgs;
use labhours_shared::service::{self, ServiceCommand};

use crate::config::{AgentConfig, Purpose};
use crate::delivery::{Delivery, wait_until_drained};
use crate::outbox::Outbox;

/// Measures what a scientific instrument really does and delivers it,
/// durably, to a labhours collector.
#[derive(Debug, Parser)]
#[command(name = "labhours-agent", version, about, long_about = None)]
pub struct Cli {
    #[command(flatten)]
    pub log: LogArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run as a service: poll the meters, read the status line, watch the
    /// result folders, and deliver events until stopped (Ctrl-C / SIGTERM).
    Run(RunArgs),
    /// Install, remove, start, stop or look at the agent as a system service
    /// (systemd on Linux, the service manager on Windows).
    #[command(subcommand)]
    Service(ServiceCommand),
    /// Check a config file and every file it names, as a start would, and
    /// print a summary; every problem is listed with its key and the fix.
    CheckConfig {
        #[command(flatten)]
        config: ConfigArg,
        /// The command the config is for: `replay` needs no meter or port.
        #[arg(long = "for", value_enum, default_value = "run")]
        purpose: Purpose,
    },
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
    /// Make the agent's Ed25519 signing key (docs/agent.md#signing): writes
    /// the private key readable by its owner only (never overwriting a
    /// file), prints the public key, its id, the `[signing]` lines for the
    /// config and the `labhours-collector agents enrol` line to run.
    Keygen {
        /// The agent's config file: the key goes to `<data_dir>/agent.key`
        /// and the enrol line names its agent_id.
        #[arg(long, short, env = "LABHOURS_AGENT_CONFIG")]
        config: Option<PathBuf>,
        /// Where to write the key instead.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Suggest `[state]` thresholds from the instrument's own power: read
    /// the meters for a while (or load a recording), find the levels the
    /// power sits at and print a `[state]` block to paste, with the
    /// evidence. Never writes the config.
    Calibrate {
        #[command(flatten)]
        config: ConfigArg,
        /// How long to read the meters, in minutes (0.5 = 30 s).
        #[arg(long, default_value_t = 30.0)]
        minutes: f64,
        /// Calibrate on a recording instead (CSV `timestamp,watts[,status_line]`, as for `replay`).
        #[arg(long, conflicts_with = "minutes")]
        samples: Option<PathBuf>,
        /// Also write what was read as a CSV, for a later `--samples`.
        #[arg(long, conflicts_with = "samples")]
        save: Option<PathBuf>,
        /// Print JSON instead of tables.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Started by the Windows service manager (`service install` sets it).
    #[arg(long = "windows-service", hide = true)]
    pub windows_service: bool,
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
        match self.command.execute(self.log) {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                eprintln!("error: {err:#}");
                ExitCode::FAILURE
            }
        }
    }
}

impl Command {
    fn execute(self, log: LogArgs) -> anyhow::Result<()> {
        match self {
            Command::CheckConfig { config, purpose } => check_config(&config.config, purpose),
            Command::Keygen { config, out } => keygen(config.as_deref(), out),
            Command::Run(args) => {
                let config = AgentConfig::load_to_start(&args.config.config, Purpose::Run)?;
                crate::app::serve(config, log, args.windows_service)
            }
            Command::Service(command) => {
                let paths = |path: &Path| {
                    AgentConfig::load(path)
                        .ok()
                        .map(|c| (c.data_dir, c.log.dir))
                };
                service::execute(&service::AGENT, command, &paths)
            }
            Command::Probe(arg) => {
                let config = AgentConfig::load_to_start(&arg.config, Purpose::Run)?;
                let (report, all_ok) = runtime()?.block_on(crate::probe::probe(&config));
                print!("{report}");
                anyhow::ensure!(all_ok, "some sources did not answer (see above)");
                Ok(())
            }
            Command::Calibrate {
                config,
                minutes,
                samples,
                save,
                json,
            } => {
                let input = match samples {
                    Some(path) => crate::calibrate::command::Input::Samples(path),
                    None => crate::calibrate::command::Input::Minutes(minutes),
                };
                crate::calibrate::command::run(&config.config, input, save.as_deref(), json)
            }
            Command::Replay {
                config,
                samples,
                no_wait,
            } => {
                let config = AgentConfig::load_to_start(&config.config, Purpose::Replay)?;
                config.log.overridden(log, None).init();
                let signer = config
                    .signing
                    .signer(&config.agent_id)?
                    .map(std::sync::Arc::new);
                let (outbox, _) = Outbox::open(
                    &config.data_dir,
                    (&config.outbox).into(),
                    jiff::Timestamp::now(),
                )?;
                let started = std::time::Instant::now();
                let stats = crate::replay::replay(&config, &samples, &outbox)?;
                println!(
                    "{}: {} samples ({} status lines matched) → {} events in the outbox in {:.2} s",
                    samples.display(),
                    stats.rows,
                    stats.status_lines_matched,
                    stats.events_appended,
                    started.elapsed().as_secs_f64()
                );
                if !no_wait {
                    runtime()?.block_on(deliver_all(&config, outbox, signer))?;
                    println!("the collector acknowledged everything");
                }
                Ok(())
            }
        }
    }
}

/// Delivers the outbox until the collector has acknowledged all of it (or Ctrl-C).
async fn deliver_all(
    config: &AgentConfig,
    outbox: Outbox,
    signer: Option<std::sync::Arc<labhours_shared::trust::Signer>>,
) -> anyhow::Result<()> {
    let clock = std::sync::Arc::new(crate::clock::SystemClock);
    let delivery = Delivery::new(
        &config.mqtt,
        &config.agent_id,
        &config.instrument_id,
        outbox.clone(),
        clock,
    )?
    .with_signer(signer);
    let stop = tokio_util::sync::CancellationToken::new();
    let task = tokio::spawn(delivery.run(stop.clone().cancelled_owned()));
    let drained = tokio::select! {
        _ = wait_until_drained(&outbox, std::time::Duration::from_millis(100)) => true,
        _ = crate::app::shutdown_signal() => false,
    };
    stop.cancel();
    task.await?;
    anyhow::ensure!(
        drained,
        "interrupted: {} events are not acknowledged yet (they stay in the outbox)",
        outbox.backlog()
    );
    Ok(())
}

/// The agent's runtime: two worker threads are plenty for a few meters and
/// ports, and keep the footprint small.
pub(crate) fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?)
}

/// The default key file: `agent.key` in the config's data_dir.
pub const KEY_FILE_NAME: &str = "agent.key";

fn keygen(config: Option<&Path>, out: Option<PathBuf>) -> anyhow::Result<()> {
    let config = config.map(AgentConfig::load).transpose()?;
    let path = match (out, &config) {
        (Some(out), _) => out,
        (None, Some(c)) => c.data_dir.join(KEY_FILE_NAME),
        (None, None) => anyhow::bail!(
            "give --out <path> for the key file, or --config <agent config> to write it to <data_dir>/{KEY_FILE_NAME}"
        ),
    };
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", parent.display()))?;
    }
    let signer = labhours_shared::trust::key_file::generate(&path)?;
    print!(
        "{}",
        keygen_report(&path, &signer, config.as_ref().map(|c| c.agent_id.as_str()))
    );
    Ok(())
}

/// What `keygen` prints: the key, and the two steps that make it count.
fn keygen_report(
    path: &Path,
    signer: &labhours_shared::trust::Signer,
    agent_id: Option<&str>,
) -> String {
    let public = signer.public_key();
    format!(
        "wrote the private key to {path} (readable by its owner only; keep it there)\n\
         public key: {public}\n\
         key id:     {id}\n\
         \n\
         1. in the agent's config:\n\
         \n\
         [signing]\n\
         key_file = {path:?}\n\
         \n\
         2. on the collector:\n\
         \n\
         labhours-collector agents enrol {agent} {public}\n",
        path = path.display(),
        id = public.key_id(),
        agent = agent_id.unwrap_or("<agent_id>"),
    )
}

fn check_config(path: &Path, purpose: Purpose) -> anyhow::Result<()> {
    let c = AgentConfig::load_to_start(path, purpose)?;
    let only = match purpose {
        Purpose::Run => "",
        Purpose::Replay => " (for replay)",
    };
    println!(
        "{}: OK{only}. Agent {} watches instrument {} with {} meter(s), {} status port and {} result folder(s); broker {}:{}.",
        path.display(),
        c.agent_id,
        c.instrument_id,
        c.meters.len(),
        if c.status.as_ref().is_some_and(|s| s.serial.is_some()) {
            "a"
        } else {
            "no"
        },
        c.results.len(),
        c.mqtt.host,
        c.mqtt.port,
    );
    // load_to_start has read the key: it loads.
    match c.signing.signer(&c.agent_id)? {
        Some(signer) => {
            println!(
                "Envelopes are signed with key {} ({}).",
                signer.key_id(),
                signer.public_key()
            );
            if let Some(r) = signer.rotation() {
                println!(
                    "Rotating: they carry key {}'s endorsement of it, so the collector enrols it by itself; remove previous_key_file once `labhours-collector agents keys` lists {}.",
                    r.from,
                    signer.key_id()
                );
            }
        }
        None => println!(
            "Envelopes are unsigned (no [signing]): a collector accepts them only while [trust] allow_unsigned = true; `labhours-agent keygen` makes a key."
        ),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keygen_writes_a_private_key_next_to_the_data_and_prints_what_to_do_with_it() {
        let dir = tempfile::tempdir().expect("temp dir");
        let data = dir.path().join("data");
        let config = dir.path().join("agent.toml");
        let text = format!(
            "agent_id = \"nmr-pc\"\ninstrument_id = \"nmr-600\"\ndata_dir = {data:?}\n[state]\non_above_w = 20\nrunning_above_w = 400\n[[meters]]\nname = \"m\"\nmodel = \"sdm120\"\ntcp = {{ host = \"127.0.0.1\" }}\n"
        );
        std::fs::write(&config, text).expect("config");
        keygen(Some(&config), None).expect("keygen");
        let key = data.join(KEY_FILE_NAME);
        let signer = labhours_shared::trust::key_file::load(&key).expect("an owner-only key");
        let report = keygen_report(&key, &signer, Some("nmr-pc"));
        assert!(report.contains(&format!(
            "labhours-collector agents enrol nmr-pc {}",
            signer.public_key()
        )));
        assert!(report.contains(&signer.key_id().to_string()));
        assert!(report.contains("[signing]\nkey_file = "));
        let again = keygen(Some(&config), None).unwrap_err().to_string();
        assert!(again.contains("never overwritten"), "{again}");
        assert!(
            keygen(None, None)
                .unwrap_err()
                .to_string()
                .contains("--out")
        );
    }
}
