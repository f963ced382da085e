//! `[log]`, the same in both programs, and the logger it installs.

use std::io::IsTerminal as _;

use super::ConfigError;

/// `[log]`, the same in both programs.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// `text` for a console, `json` for a log collector.
    #[serde(default)]
    pub format: LogFormat,
    /// A `tracing` filter such as `info` or `labhours_agent=debug`;
    /// the `RUST_LOG` environment variable overrides it.
    #[serde(default = "default_log_level")]
    pub level: String,
    /// A folder for daily-rotated log files (`<program>.<date>.log`) instead
    /// of standard error; the Windows service defaults to
    /// `%ProgramData%\labhours\logs`. Under systemd leave it unset: the
    /// journal keeps standard error.
    #[serde(default)]
    pub dir: Option<std::path::PathBuf>,
    /// How many daily files `dir` keeps.
    #[serde(default = "default_max_files")]
    pub max_files: usize,
}

#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    serde::Serialize,
    serde::Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

fn default_log_level() -> String {
    "info".into()
}

fn default_max_files() -> usize {
    14
}

/// `--log-format`, a global flag of both programs: overrides `[log] format`.
#[derive(Debug, Clone, Copy, Default, clap::Args)]
pub struct LogArgs {
    /// Log as text (default) or JSON lines; overrides `[log] format`.
    #[arg(long, global = true, value_enum)]
    pub log_format: Option<LogFormat>,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Text,
            level: default_log_level(),
            dir: None,
            max_files: default_max_files(),
        }
    }
}

/// Colour only for a person at a terminal: a log file, a pipe or the
/// journal gets plain text, and `NO_COLOR` (https://no-color.org) turns it
/// off everywhere.
pub fn colour(is_terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    is_terminal && no_color.is_none_or(|v| v.is_empty())
}

impl LogConfig {
    /// This config with the command line's `--log-format`, and `default_dir`
    /// where `[log] dir` is unset.
    pub fn overridden(&self, args: LogArgs, default_dir: Option<std::path::PathBuf>) -> Self {
        Self {
            format: args.log_format.unwrap_or(self.format),
            dir: self.dir.clone().or(default_dir),
            ..self.clone()
        }
    }

    /// Installs the global `tracing` subscriber (once per process; later calls do nothing).
    pub fn init(&self) {
        self.init_with(None);
    }

    /// [`Self::init`] plus `watch`, a layer that sees events whatever the
    /// level filter says (it brings its own filter), e.g. to count what a
    /// library logs below the configured level.
    pub fn init_with(
        &self,
        watch: Option<
            Box<dyn tracing_subscriber::Layer<tracing_subscriber::Registry> + Send + Sync>,
        >,
    ) {
        use tracing_subscriber::EnvFilter;
        use tracing_subscriber::Layer as _;
        use tracing_subscriber::layer::SubscriberExt as _;
        use tracing_subscriber::util::SubscriberInitExt as _;
        // The embedded broker logs every connection at info and ordinary
        // disconnects as errors: silent unless the level names it
        // (e.g. `level = "info,rumqttd=info"`).
        let level = if self.level.contains("rumqttd") {
            self.level.clone()
        } else {
            format!("{},rumqttd=off", self.level)
        };
        let filter = EnvFilter::try_from_default_env()
            .or_else(|_| EnvFilter::try_new(&level))
            .unwrap_or_else(|_| EnvFilter::new("info"));
        let fmt = tracing_subscriber::fmt::layer();
        let fmt = match self.files() {
            Some(files) => match self.format {
                LogFormat::Text => fmt.with_writer(files).with_ansi(false).boxed(),
                LogFormat::Json => fmt.with_writer(files).json().boxed(),
            },
            None => {
                let ansi = colour(
                    std::io::stderr().is_terminal(),
                    std::env::var_os("NO_COLOR").as_deref(),
                );
                let fmt = fmt.with_writer(std::io::stderr).with_ansi(ansi);
                match self.format {
                    LogFormat::Text => fmt.boxed(),
                    LogFormat::Json => fmt.json().boxed(),
                }
            }
        };
        let _already_set = tracing_subscriber::registry()
            .with(watch)
            .with(fmt.with_filter(filter))
            .try_init();
    }

    /// The rotating files in `dir`, or `None` (standard error) when unset
    /// or when the folder cannot be made (said on standard error).
    fn files(&self) -> Option<tracing_appender::rolling::RollingFileAppender> {
        let dir = self.dir.as_ref()?;
        let prefix = std::env::current_exe()
            .ok()
            .and_then(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
            .unwrap_or_else(|| "labhours".into());
        match rolling_files(dir, &prefix, self.max_files) {
            Ok(files) => Some(files),
            Err(e) => {
                eprintln!(
                    "cannot log to {}: {e}; logging to standard error",
                    dir.display()
                );
                None
            }
        }
    }

    pub fn validate(&self) -> Vec<ConfigError> {
        if self.level.trim().is_empty() {
            vec![ConfigError::new(
                "log.level",
                "is empty",
                "use info, debug or a tracing filter",
            )]
        } else {
            Vec::new()
        }
    }
}

/// Daily files `<prefix>.<YYYY-MM-DD>.log` in `dir` (made if missing),
/// keeping the newest `max_files`.
pub fn rolling_files(
    dir: &std::path::Path,
    prefix: &str,
    max_files: usize,
) -> Result<tracing_appender::rolling::RollingFileAppender, Box<dyn std::error::Error>> {
    // Made first: the appender looks for old files to prune before it makes the folder.
    std::fs::create_dir_all(dir)?;
    Ok(tracing_appender::rolling::Builder::new()
        .rotation(tracing_appender::rolling::Rotation::DAILY)
        .filename_prefix(prefix)
        .filename_suffix("log")
        .max_log_files(max_files.max(1))
        .build(dir)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_flag_overrides_the_format_and_a_default_dir_fills_in() {
        let c = LogConfig::default();
        let json = LogArgs {
            log_format: Some(LogFormat::Json),
        };
        let o = c.overridden(json, Some("logs".into()));
        assert_eq!(o.format, LogFormat::Json);
        assert_eq!(o.dir, Some("logs".into()));
        let set = LogConfig {
            dir: Some("mine".into()),
            format: LogFormat::Json,
            ..LogConfig::default()
        };
        let o = set.overridden(LogArgs::default(), Some("logs".into()));
        assert_eq!((o.format, o.dir), (LogFormat::Json, Some("mine".into())));
    }

    #[test]
    fn files_rotate_daily_under_the_programs_name() {
        use std::io::Write as _;
        use tracing_subscriber::fmt::MakeWriter as _;
        let dir = std::env::temp_dir().join(format!("labhours-logs-{}", std::process::id()));
        let files = rolling_files(&dir.join("logs"), "labhours-agent", 14).expect("made");
        writeln!(files.make_writer(), "hello").unwrap();
        let names: Vec<String> = std::fs::read_dir(dir.join("logs"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        let _ = std::fs::remove_dir_all(&dir);
        let today = jiff::Zoned::now()
            .with_time_zone(jiff::tz::TimeZone::UTC)
            .date();
        assert_eq!(names, [format!("labhours-agent.{today}.log")]);
    }

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        assert!(colour(true, None));
        assert!(!colour(false, None));
        assert!(!colour(true, Some("1".as_ref())));
        // no-color.org: an empty NO_COLOR does not count.
        assert!(colour(true, Some("".as_ref())));
    }
}
