//! Reading a config file, and the files a config names (passwords, tokens).

use std::fmt;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use super::{ConfigError, ConfigErrors};

/// Why a config file could not be used. Its message is complete on its own:
/// there is no `source()`, so a cause is never printed twice.
#[derive(Debug)]
pub enum ConfigFileError {
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    Invalid {
        path: PathBuf,
        errors: ConfigErrors,
    },
}

impl fmt::Display for ConfigFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Read { path, error } => write!(
                f,
                "cannot read config file {}: {error}. Fix: {}",
                path.display(),
                fix_for(error)
            ),
            Self::Invalid { path, errors } => write!(f, "config file {}: {errors}", path.display()),
        }
    }
}

impl std::error::Error for ConfigFileError {}

impl ConfigFileError {
    /// The keys of the problems (none when the file could not be read).
    pub fn fields(&self) -> Vec<&str> {
        self.errors().map(ConfigErrors::fields).unwrap_or_default()
    }

    /// The problems, when the file was read but is wrong.
    pub fn errors(&self) -> Option<&ConfigErrors> {
        match self {
            Self::Invalid { errors, .. } => Some(errors),
            Self::Read { .. } => None,
        }
    }
}

/// Reads `path` and hands its text to `parse` (which reports every problem).
pub fn load_file<T>(
    path: &Path,
    parse: impl FnOnce(&str) -> Result<T, ConfigErrors>,
) -> Result<T, ConfigFileError> {
    let text = std::fs::read_to_string(path).map_err(|error| ConfigFileError::Read {
        path: path.to_owned(),
        error,
    })?;
    parse(&text).map_err(|errors| ConfigFileError::Invalid {
        path: path.to_owned(),
        errors,
    })
}

/// The error for a file named by `field` that cannot be read.
pub fn unreadable(field: &str, path: &Path, error: &std::io::Error) -> ConfigError {
    ConfigError::new(
        field,
        format!("cannot read {}: {error}", path.display()),
        fix_for(error),
    )
}

/// A secret kept in its own file (password, token): its text without the
/// trailing line break an editor adds.
pub fn read_secret(field: &str, path: &Path) -> Result<String, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| unreadable(field, path, &e))?;
    Ok(text.trim_end_matches(['\r', '\n']).to_owned())
}

/// A data directory is created when missing, but something else in its
/// place would stop the program at start.
pub fn check_dir(field: &str, path: &Path) -> Option<ConfigError> {
    match std::fs::metadata(path) {
        Ok(meta) if !meta.is_dir() => Some(ConfigError::new(
            field,
            format!("{} is a file, not a directory", path.display()),
            "name a directory (it is created if missing)",
        )),
        _ => None,
    }
}

fn fix_for(error: &std::io::Error) -> &'static str {
    match error.kind() {
        ErrorKind::NotFound => {
            "create the file or correct the path (a relative path is read from the directory the program starts in)"
        }
        ErrorKind::PermissionDenied => "let the user the program runs as read the file",
        ErrorKind::InvalidData => "save the file as UTF-8",
        _ => "check that the path names a readable file",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_file_says_so_once_with_a_fix() {
        let path = Path::new("/nonexistent/labhours.toml");
        let err = load_file(path, |_| Ok(())).unwrap_err();
        let text = format!("{err}");
        assert_eq!(text.matches("No such file").count(), 1, "{text}");
        assert!(text.contains("/nonexistent/labhours.toml"), "{text}");
        assert!(text.contains("Fix: create the file"), "{text}");
        assert!(std::error::Error::source(&err).is_none());
    }

    #[test]
    fn a_secret_loses_its_trailing_line_break_only() {
        let file = std::env::temp_dir().join(format!("labhours-secret-{}", std::process::id()));
        std::fs::write(&file, " pa ss\r\n").unwrap();
        let secret = read_secret("mqtt.password_file", &file);
        std::fs::remove_file(&file).unwrap();
        assert_eq!(secret.unwrap(), " pa ss");
        let err = read_secret("mqtt.password_file", &file).unwrap_err();
        assert_eq!(err.field, "mqtt.password_file");
    }
}
