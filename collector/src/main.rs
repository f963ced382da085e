use clap::Parser;

fn main() -> std::process::ExitCode {
    labhours_collector::cli::Cli::parse().execute()
}
