//! `labhours-verify`: checks an evidence bundle offline (docs/evidence.md).

use clap::Parser as _;

fn main() -> std::process::ExitCode {
    labhours_collector::evidence::verify::run(labhours_collector::evidence::verify::Args::parse())
}
