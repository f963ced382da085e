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
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

fn default_log_level() -> String {
    "info".into()
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Text,
            level: default_log_level(),
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
        let ansi = colour(
            std::io::stderr().is_terminal(),
            std::env::var_os("NO_COLOR").as_deref(),
        );
        let fmt = tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(ansi);
        let fmt = match self.format {
            LogFormat::Text => fmt.boxed(),
            LogFormat::Json => fmt.json().boxed(),
        };
        let _already_set = tracing_subscriber::registry()
            .with(watch)
            .with(fmt.with_filter(filter))
            .try_init();
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

#[cfg(test)]
mod tests {
    use super::colour;

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        assert!(colour(true, None));
        assert!(!colour(false, None));
        assert!(!colour(true, Some("1".as_ref())));
        // no-color.org: an empty NO_COLOR does not count.
        assert!(colour(true, Some("".as_ref())));
    }
}
