//! Config validation errors shared by both programs.

use std::fmt;

/// One problem in a config file: which field, what is wrong, how to fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Dotted path of the field, e.g. `meters[1].poll_interval_ms`.
    pub field: String,
    pub problem: String,
    pub fix: String,
}

impl ConfigError {
    pub fn new(
        field: impl Into<String>,
        problem: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        Self {
            field: field.into(),
            problem: problem.into(),
            fix: fix.into(),
        }
    }

    /// The same error for a field nested under `prefix` (e.g. `meters[0]`).
    pub fn under(mut self, prefix: &str) -> Self {
        self.field = format!("{prefix}.{}", self.field);
        self
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "`{}`: {}. Fix: {}", self.field, self.problem, self.fix)
    }
}

impl std::error::Error for ConfigError {}

/// All problems found in one config, reported together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0.len();
        writeln!(
            f,
            "{n} problem{} in the config:",
            if n == 1 { "" } else { "s" }
        )?;
        for e in &self.0 {
            writeln!(f, "  - {e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

impl ConfigErrors {
    /// `Ok` when no problem was collected.
    pub fn into_result(self) -> Result<(), ConfigErrors> {
        if self.0.is_empty() { Ok(()) } else { Err(self) }
    }
}

/// Parses a TOML config; a syntax error, an unknown key or a wrong type comes
/// back as one [`ConfigError`] that gives the line and what was expected.
/// `example` names the example file to compare against.
pub fn parse_toml<T: serde::de::DeserializeOwned>(
    text: &str,
    example: &str,
) -> Result<T, ConfigErrors> {
    toml::from_str(text).map_err(|e| {
        let (line, column) = e
            .span()
            .map(|span| line_column(text, span.start))
            .unwrap_or((0, 0));
        let key = e.message().split('`').nth(1).unwrap_or("").to_owned();
        let field = if key.is_empty() {
            format!("line {line}, column {column}")
        } else {
            format!("{key} (line {line}, column {column})")
        };
        ConfigErrors(vec![ConfigError::new(
            field,
            e.message().trim().to_owned(),
            format!("compare with {example}, which lists every key with its unit and default"),
        )])
    })
}

fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    (line, column)
}

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
        let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
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

/// TLS to an MQTT broker: the CA to trust, and optionally a client certificate.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    pub ca_file: std::path::PathBuf,
    #[serde(default)]
    pub client_cert_file: Option<std::path::PathBuf>,
    #[serde(default)]
    pub client_key_file: Option<std::path::PathBuf>,
}

impl TlsConfig {
    pub fn validate(&self) -> Vec<ConfigError> {
        if self.client_cert_file.is_some() != self.client_key_file.is_some() {
            vec![ConfigError::new(
                "client_key_file",
                "a client certificate needs its key and the key needs its certificate",
                "set both client_cert_file and client_key_file, or neither",
            )]
        } else {
            Vec::new()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Demo {
        poll_interval_ms: u64,
    }

    #[test]
    fn a_misspelt_key_is_named_with_its_line_and_the_example_to_follow() {
        let err = parse_toml::<Demo>("\npolll_interval_ms = 5\n", "config/x.toml").unwrap_err();
        let e = &err.0[0];
        assert_eq!(e.field, "polll_interval_ms (line 2, column 1)");
        assert!(
            e.problem.contains("expected `poll_interval_ms`"),
            "{}",
            e.problem
        );
        assert!(e.fix.contains("config/x.toml"));
    }

    #[test]
    fn a_wrong_type_points_at_the_value() {
        let err = parse_toml::<Demo>("poll_interval_ms = \"fast\"", "x").unwrap_err();
        assert!(
            err.0[0].field.starts_with("line 1, column 20"),
            "{}",
            err.0[0].field
        );
        assert!(
            err.0[0].problem.contains("expected u64"),
            "{}",
            err.0[0].problem
        );
    }
}
