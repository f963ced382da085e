//! Config handling shared by both programs: the error type every
//! `validate()` returns, reading and parsing a config file so that every
//! problem is reported at once ([`parse`], [`file`]), the files a config names
//! ([`file::read_secret`], [`tls`]) and the `[log]` table ([`log`]).

use std::fmt;

pub mod file;
pub mod log;
pub mod parse;
pub mod tls;

pub use file::{ConfigFileError, load_file};
pub use log::{LogArgs, LogConfig, LogFormat};
pub use parse::{Example, parse_toml};
pub use tls::{ServerTlsConfig, TlsConfig};

/// Where in the file a problem is (1-based).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    pub line: usize,
    pub column: usize,
}

/// One problem in a config file: which field, what is wrong, how to fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Dotted path of the field, e.g. `meters[1].poll_interval_ms`; empty for
    /// a syntax error, which has no key.
    pub field: String,
    pub problem: String,
    pub fix: String,
    /// Set when the problem was found while reading the file.
    pub at: Option<Position>,
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
            at: None,
        }
    }

    /// The same error for a field nested under `prefix` (e.g. `meters[0]`).
    pub fn under(mut self, prefix: &str) -> Self {
        self.field = format!("{prefix}.{}", self.field);
        self
    }

    /// The same error at a position in the file.
    pub fn at(mut self, at: Option<Position>) -> Self {
        self.at = at;
        self
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.field.is_empty(), self.at) {
            (false, Some(p)) => {
                write!(f, "`{}` (line {}, column {})", self.field, p.line, p.column)?
            }
            (false, None) => write!(f, "`{}`", self.field)?,
            (true, Some(p)) => write!(f, "line {}, column {}", p.line, p.column)?,
            (true, None) => write!(f, "the file")?,
        }
        write!(f, ": {}. Fix: {}", self.problem, self.fix)
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

    /// The keys of the problems, in order.
    pub fn fields(&self) -> Vec<&str> {
        self.0.iter().map(|e| e.field.as_str()).collect()
    }

    /// Each problem's key and line (when it has one), in order.
    pub fn keys_and_lines(&self) -> Vec<(&str, Option<usize>)> {
        self.0
            .iter()
            .map(|e| (e.field.as_str(), e.at.map(|p| p.line)))
            .collect()
    }

    /// The problems of a `validate()` result (none for `Ok`).
    pub fn of(result: Result<(), ConfigErrors>) -> Vec<ConfigError> {
        result.err().map(|e| e.0).unwrap_or_default()
    }
}
