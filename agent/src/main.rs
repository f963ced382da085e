use clap::Parser;

fn main() -> std::process::ExitCode {
    labhours_agent::cli::Cli::parse().execute()
}
