//! Command line of `labhours-collector`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

use labhours_shared::config::LogArgs;
use labhours_shared::service::{self, ServiceCommand};

use crate::config::CollectorConfig;

/// Receives labhours agent events, reconciles machine hours with bookings
/// and serves verified usage hours.
#[derive(Debug, Parser)]
#[command(name = "labhours-collector", version, about, long_about = None)]
pub struct Cli {
    #[command(flatten)]
    pub log: LogArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the collector: embedded MQTT broker (unless an external one is
    /// configured), ingest, reconciliation and the HTTP API, until stopped.
    Run(RunArgs),
    /// Install, remove, start, stop or look at the collector as a system
    /// service (systemd on Linux, the service manager on Windows).
    #[command(subcommand)]
    Service(ServiceCommand),
    /// Check a config file and every file it names, as `run` would at start,
    /// and print a summary; every problem is listed with its key and the fix.
    CheckConfig(ConfigArg),
    /// Manage bookings.
    #[command(subcommand)]
    Bookings(BookingsCommand),
    /// Print verified hours for a period (CSV or JSON), for offline
    /// evaluation: exactly what GET /api/v1/hours answers.
    Report(ReportArgs),
    /// Look at or purge the payloads the collector refused.
    #[command(subcommand)]
    Quarantine(crate::quarantine::cli::QuarantineCommand),
    /// Enrol, revoke and list agents' signing keys (docs/design/trust.md).
    #[command(subcommand)]
    Agents(crate::trust::cli::AgentsCommand),
    /// Sign, list and show the key of the collector's checkpoints (docs/evidence.md).
    #[command(subcommand)]
    Checkpoint(crate::evidence::cli::CheckpointCommand),
    /// Export an instrument's evidence bundle for `labhours-verify`.
    #[command(subcommand)]
    Evidence(crate::evidence::cli::EvidenceCommand),
    /// Make API tokens and their hashes for [[http.tokens]].
    #[command(subcommand)]
    Token(TokenCommand),
    /// Reconcile every instrument again from the stored evidence, bookings and
    /// corrections (safe beside a running collector).
    Rebuild(ConfigArg),
    /// Run the whole system on simulated instruments: the collector, six
    /// real agents on simulated meters, bookings and a month of history
    /// (docs/demo.md). Ctrl-C stops it; run again to continue.
    Demo(crate::demo::DemoArgs),
}

#[derive(Debug, Subcommand)]
pub enum BookingsCommand {
    /// Import bookings from CSV or iCalendar; nothing is applied if any row is bad.
    Import {
        #[command(flatten)]
        config: ConfigArg,
        /// A `.csv` or `.ics` file.
        file: PathBuf,
        /// Show what would change without changing anything.
        #[arg(long)]
        dry_run: bool,
        /// Apply the good rows even if some are bad (the bad ones are still listed).
        #[arg(long)]
        skip_invalid: bool,
        /// The file's format, when its extension does not tell.
        #[arg(long, value_enum)]
        format: Option<crate::bookings::Format>,
    },
}

/// `report`: the parameters of GET /api/v1/hours.
#[derive(Debug, clap::Args)]
pub struct ReportArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Start: a local date YYYY-MM-DD (midnight in each instrument's zone)
    /// or an RFC 3339 instant with offset.
    #[arg(long)]
    pub from: String,
    /// End (exclusive), same forms.
    #[arg(long)]
    pub to: String,
    /// Only this instrument.
    #[arg(long)]
    pub instrument: Option<String>,
    /// Only instruments in this unit or below it.
    #[arg(long)]
    pub unit: Option<String>,
    /// Split into local periods: day, month or year (default: one period).
    #[arg(long)]
    pub period: Option<String>,
    /// Rows per instrument (default), unit or usage_type.
    #[arg(long)]
    pub group_by: Option<String>,
    #[arg(long, value_enum, default_value_t = ReportFormat::Csv)]
    pub format: ReportFormat,
    /// Write to this file instead of standard output.
    #[arg(long, short)]
    pub output: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Read a token from standard input (one line) and print its SHA-256,
    /// the `sha256` of an [[http.tokens]] entry.
    Hash,
    /// Generate a random token, print it once and the [[http.tokens]] entry
    /// to paste into the collector's config (which keeps only the hash).
    New {
        /// Who holds it, e.g. evaluation-office (recorded with their corrections).
        #[arg(long)]
        name: String,
        /// evaluator (reads) or admin (reads and writes corrections and bookings).
        #[arg(long, value_enum)]
        role: crate::config::TokenRole,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ReportFormat {
    Csv,
    Json,
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
    /// The collector's config file (see config/collector.example.toml);
    /// without it every setting takes its default.
    #[arg(long, short, env = "LABHOURS_COLLECTOR_CONFIG")]
    pub config: Option<PathBuf>,
}

impl ConfigArg {
    /// The config from the file, or the defaults when none is given.
    pub fn load(&self) -> anyhow::Result<CollectorConfig> {
        Ok(match &self.config {
            Some(path) => CollectorConfig::load(path)?,
            None => CollectorConfig::default(),
        })
    }

    /// [`Self::load`] plus every file the config names, read as a start
    /// reads them: what `run` and `check-config` both call.
    pub fn load_to_start(&self) -> anyhow::Result<CollectorConfig> {
        Ok(match &self.config {
            Some(path) => CollectorConfig::load_to_start(path)?,
            None => {
                let config = CollectorConfig::default();
                labhours_shared::config::ConfigErrors(config.unreadable_files()).into_result()?;
                config
            }
        })
    }
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
            Command::CheckConfig(arg) => {
                let c = arg.load_to_start()?;
                for warning in c.warnings() {
                    eprintln!("warning: {warning}");
                }
                let tokens = match c.http.tokens.len() {
                    0 => "no API tokens: local callers are admins".to_owned(),
                    1 => "1 API token".to_owned(),
                    n => format!("{n} API tokens"),
                };
                println!(
                    "{}: OK. Site {:?} ({}), {} instrument(s); MQTT {}; HTTP on {} ({tokens}).",
                    arg.config
                        .as_deref()
                        .map_or("defaults".into(), |p| p.display().to_string()),
                    c.site.name,
                    c.site.time_zone(),
                    c.instruments.len(),
                    match &c.mqtt.external {
                        Some(ext) => format!("external broker {}:{}", ext.host, ext.port),
                        None => format!(
                            "embedded broker on {} ({}, {})",
                            c.mqtt.embedded_listen,
                            if c.mqtt.embedded_tls.is_some() {
                                "TLS"
                            } else {
                                "plain TCP"
                            },
                            if c.mqtt.require_credentials {
                                "agent credentials required"
                            } else {
                                "no credentials required"
                            }
                        ),
                    },
                    c.http.listen,
                );
                Ok(())
            }
            Command::Run(args) => {
                let config = args.config.load_to_start()?;
                crate::app::serve(config, log, args.windows_service)
            }
            Command::Service(command) => {
                let paths = |path: &Path| {
                    CollectorConfig::load(path)
                        .ok()
                        .map(|c| (c.data_dir, c.log.dir))
                };
                service::execute(&service::COLLECTOR, command, &paths)
            }
            Command::Bookings(BookingsCommand::Import {
                config,
                file,
                dry_run,
                skip_invalid,
                format,
            }) => {
                let ok = import_bookings(
                    &config.load()?,
                    &file,
                    format,
                    crate::bookings::store::ImportOptions {
                        dry_run,
                        skip_invalid,
                    },
                )?;
                if ok {
                    Ok(())
                } else {
                    Err(anyhow::anyhow!(
                        "nothing applied: fix the rows above, or pass --skip-invalid to apply the good ones"
                    ))
                }
            }
            Command::Report(args) => report(&args),
            Command::Quarantine(command) => command.execute(),
            Command::Agents(command) => command.execute(),
            Command::Checkpoint(command) => command.execute(),
            Command::Evidence(command) => command.execute(),
            Command::Token(TokenCommand::Hash) => {
                let mut line = String::new();
                std::io::stdin()
                    .read_line(&mut line)
                    .context("cannot read the token from standard input")?;
                let token = line.trim_end_matches(['\r', '\n']);
                anyhow::ensure!(
                    !token.is_empty(),
                    "no token on standard input; e.g. `printf %s \"$TOKEN\" | labhours-collector token hash`"
                );
                println!("{}", crate::api::hash_token(token));
                Ok(())
            }
            Command::Token(TokenCommand::New { name, role }) => {
                if labhours_shared::wire::check_id("name", &name).is_err() {
                    anyhow::bail!(
                        "--name {name:?} is not a plain name: use 1-64 characters from A-Z a-z 0-9 . _ -"
                    );
                }
                let token = crate::api::new_token()?;
                println!("{token}");
                println!();
                println!(
                    "# The line above is the token for {name:?}: it is shown only now; give it to its holder."
                );
                println!("# Paste this into the collector's config and restart it:");
                println!("[[http.tokens]]");
                println!("name = {name:?}");
                println!("role = \"{}\"", role.as_str());
                println!("sha256 = \"{}\"", crate::api::hash_token(&token));
                Ok(())
            }
            Command::Demo(args) => {
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .context("cannot start the async runtime")?;
                runtime.block_on(crate::demo::run(args, crate::app::shutdown_signal()))
            }
            Command::Rebuild(args) => {
                let config = args.load()?;
                let started = std::time::Instant::now();
                let pass = crate::verified::rebuild(&config)?;
                println!(
                    "rebuilt {} instruments: {} instrument-days, {} booking outcomes in {:.1} s",
                    pass.instruments,
                    pass.days,
                    pass.bookings,
                    started.elapsed().as_secs_f64()
                );
                Ok(())
            }
        }
    }
}

/// `report`: the hours GET /api/v1/hours would answer, from the data dir
/// opened read-only, in the same JSON or CSV.
fn report(args: &ReportArgs) -> anyhow::Result<()> {
    use crate::api::{Format, hours_body, hours_query, params::Params};
    let config = args.config.load()?;
    let mut pairs = vec![
        ("from".to_owned(), args.from.clone()),
        ("to".to_owned(), args.to.clone()),
    ];
    for (name, value) in [
        ("instrument", &args.instrument),
        ("unit", &args.unit),
        ("period", &args.period),
        ("group_by", &args.group_by),
    ] {
        if let Some(v) = value {
            pairs.push((name.to_owned(), v.clone()));
        }
    }
    let query = hours_query(&Params::from_pairs(pairs)).map_err(|e| {
        let flag = e.body.parameter.as_deref().unwrap_or("").replace('_', "-");
        anyhow::anyhow!("--{flag}: {}", e.body.error)
    })?;
    let format = match args.format {
        ReportFormat::Csv => Format::Csv,
        ReportFormat::Json => Format::Json,
    };
    let reports = crate::verified::open_reports(&config)?;
    let answer = reports.hours(&query)?;
    let mut body = hours_body(&query, answer.rows, answer.settled_through, format)?;
    match &args.output {
        Some(path) => std::fs::write(path, &body)
            .with_context(|| format!("cannot write {}", path.display()))?,
        None => {
            use std::io::Write;
            if !body.ends_with(b"\n") {
                body.push(b'\n');
            }
            std::io::stdout()
                .write_all(&body)
                .context("cannot write to standard output")?;
        }
    }
    Ok(())
}

/// A long import shows how far it is after this long (on a terminal).
const PROGRESS_AFTER: std::time::Duration = std::time::Duration::from_secs(2);

/// Runs `work`; when stderr is a terminal and `work` takes longer than
/// [`PROGRESS_AFTER`], shows `progress` on one line of stderr, refreshed
/// four times a second. Nothing otherwise (logs and pipes stay clean).
fn with_progress<T>(
    name: &str,
    progress: &crate::bookings::Progress,
    work: impl FnOnce() -> T,
) -> T {
    use std::io::IsTerminal;
    use std::sync::mpsc::{RecvTimeoutError, channel};
    if !std::io::stderr().is_terminal() {
        return work();
    }
    let (done, finished) = channel::<()>();
    std::thread::scope(|s| {
        s.spawn(move || {
            let mut wait = PROGRESS_AFTER;
            let mut shown = false;
            // Ends when `done` is dropped: work finished (or panicked).
            while let Err(RecvTimeoutError::Timeout) = finished.recv_timeout(wait) {
                let (parsed, stored) = progress.get();
                eprint!(
                    "\r{name}: {parsed} rows parsed, {stored} bookings compared with the store"
                );
                shown = true;
                wait = std::time::Duration::from_millis(250);
            }
            if shown {
                eprintln!();
            }
        });
        let out = work();
        drop(done);
        out
    })
}

/// `bookings import`: prints every error and the summary; false when there
/// were errors and `--skip-invalid` was not given (nothing applied).
fn import_bookings(
    config: &CollectorConfig,
    file: &std::path::Path,
    format: Option<crate::bookings::Format>,
    options: crate::bookings::store::ImportOptions,
) -> anyhow::Result<bool> {
    use crate::bookings::{self, Format, ParseContext};
    let format = match format.or_else(|| Format::from_path(file)) {
        Some(f) => f,
        None => anyhow::bail!(
            "{}: cannot tell the format from the extension; name it .csv or .ics, or pass --format csv|ics",
            file.display()
        ),
    };
    let bytes = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
    let text =
        bookings::decode(&file.display().to_string(), bytes, format).map_err(anyhow::Error::msg)?;
    let ctx = ParseContext::from_config(config)
        .with_context(|| format!("site.time_zone {:?}", config.site.time_zone()))?;
    let name = file.file_name().map_or_else(
        || file.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    let progress = bookings::Progress::default();
    let report = with_progress(&name, &progress, || -> anyhow::Result<_> {
        let now = jiff::Timestamp::now();
        let ctx = ctx.at(now);
        let parsed = bookings::parse_counted(format, &text, &ctx, &progress);
        let mut store =
            crate::store::Store::open(&config.data_dir, crate::store::Durability::Full)?;
        Ok(store.import_bookings_counted(parsed, &name, options, now, &progress)?)
    })?;
    for error in &report.errors {
        println!("{name} {error}");
    }
    for warning in &report.warnings {
        println!("{name} line {}: warning: {}", warning.line, warning.message);
    }
    if let Some(line) = report.not_monitored_summary() {
        println!("{name}: {line}");
    }
    for updated in &report.updated {
        println!(
            "updated {}: {}",
            updated.booking_id,
            updated.fields.join(", ")
        );
    }
    let prefix = if report.applied {
        ""
    } else {
        "not applied: would be "
    };
    let dry = if options.dry_run { "dry run, " } else { "" };
    println!(
        "{name}: {dry}{prefix}{}{}",
        report.summary(),
        if report.errors.is_empty() {
            String::new()
        } else {
            format!(", {} error(s)", report.errors.len())
        }
    );
    Ok(report.errors.is_empty() || options.skip_invalid)
}
