//! The `calibrate` command: get the samples, calibrate, print.

use std::path::{Path, PathBuf};

use anyhow::Context as _;

use super::{calibrate, report, source};
use crate::config::{AgentConfig, Purpose};

/// Where the samples come from.
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    /// Read the config's meters for this long.
    Minutes(f64),
    /// A recorded CSV.
    Samples(PathBuf),
}

/// The longest recording `--minutes` takes: a week.
const MAX_MINUTES: f64 = 7.0 * 24.0 * 60.0;

pub fn run(config: &Path, input: Input, save: Option<&Path>, json: bool) -> anyhow::Result<()> {
    let (config, samples, origin) = match input {
        Input::Samples(path) => {
            let config = AgentConfig::load_to_start(config, Purpose::Replay)?;
            let samples = source::load(&path)?;
            (config, samples, path.display().to_string())
        }
        Input::Minutes(minutes) => {
            anyhow::ensure!(
                minutes.is_finite() && minutes > 0.0 && minutes <= MAX_MINUTES,
                "--minutes {minutes}: give a duration above 0 and at most {MAX_MINUTES} (a week)"
            );
            let config = AgentConfig::load_to_start(config, Purpose::Run)?;
            let cycles =
                ((minutes * 60_000.0 / config.poll_interval_ms as f64).round() as usize).max(1);
            let recorded = record(&config, cycles)?;
            if let Some(path) = save {
                source::save(path, &recorded.samples)
                    .with_context(|| format!("cannot write the samples to {}", path.display()))?;
                eprintln!("samples written to {}", path.display());
            }
            let mut origin = format!("the meters, {minutes} min");
            if !recorded.failures.is_empty() {
                origin.push_str(&format!("; {}", source::describe(&recorded.failures)));
            }
            (config, recorded.samples, origin)
        }
    };
    let result = calibrate(&samples, &config.state, config.poll_interval_ms)?;
    if json {
        println!("{}", report::json(&result, &origin));
    } else {
        print!("{}", report::text(&result, &origin));
    }
    Ok(())
}

/// Records `cycles` reads, telling the person at the terminal how far it got.
fn record(config: &AgentConfig, cycles: usize) -> anyhow::Result<source::Recorded> {
    let names: Vec<&str> = config.meters.iter().map(|m| m.name.as_str()).collect();
    eprintln!(
        "recording {cycles} reads of {} every {} ms; leave the instrument doing what it normally does \
         (off, idle and working) …",
        names.join(" + "),
        config.poll_interval_ms
    );
    // About once a minute, or ten times in all for a short recording.
    let every = (60_000 / config.poll_interval_ms.max(1) as usize)
        .min(cycles / 10)
        .max(1);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let recorded = runtime.block_on(source::record(config, cycles, |done, watts| {
        if done % every == 0 || done == cycles {
            let now = watts.map_or("a failed read".to_owned(), |w| format!("{w:.1} W"));
            eprintln!("  {done}/{cycles} reads, now {now}");
        }
    }))?;
    Ok(recorded)
}
