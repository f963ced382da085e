//! Writes the dashboard's test scenario (`labhours_collector::dashboard::scenario`)
//! for the browser check (`tests/browser/`): a config and a seeded database.
//!
//! ```text
//! cargo run -p labhours-collector --example dashboard_scenario -- \
//!     --dir /tmp/lh-dash --listen 127.0.0.1:18080 [--no-tokens] [--day 2025-03-03]
//! labhours-collector run --config /tmp/lh-dash/collector.toml
//! ```
//!
//! The day defaults to yesterday in the site zone, so that the pages'
//! defaults (today, the last seven days, this year) show it. Prints the day.

use std::path::PathBuf;

use anyhow::Context;
use jiff::Timestamp;
use jiff::civil::Date;
use jiff::tz::TimeZone;
use labhours_collector::dashboard::scenario::{ZONE, config, seed};

fn main() -> anyhow::Result<()> {
    let mut dir = None;
    let mut listen = "127.0.0.1:8080".to_owned();
    let mut tokens = true;
    let mut day: Option<Date> = None;
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        match flag.as_str() {
            "--no-tokens" => tokens = false,
            "--dir" => dir = Some(PathBuf::from(it.next().context("--dir needs a value")?)),
            "--listen" => listen = it.next().context("--listen needs a value")?,
            "--day" => day = Some(it.next().context("--day needs a value")?.parse()?),
            other => anyhow::bail!("unknown argument {other:?}"),
        }
    }
    let dir = dir.context("--dir is required")?;
    let day = match day {
        Some(d) => d,
        None => Timestamp::now()
            .to_zoned(TimeZone::get(ZONE)?)
            .date()
            .yesterday()?,
    };
    let data = dir.join("data");
    std::fs::create_dir_all(&data)?;
    std::fs::write(dir.join("collector.toml"), config(&data, &listen, tokens))?;
    seed(&data, day)?;
    println!("{day}");
    Ok(())
}
