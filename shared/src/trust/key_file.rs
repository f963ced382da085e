//! Private key files: PKCS#8, created readable by their owner only and
//! never overwritten; refused when others may read them.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use super::Signer;

#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{path} already exists; a key is never overwritten (move it away first, or enrol the key it holds)"
    )]
    Exists { path: PathBuf },
    #[error(
        "{path} can be read by other users (mode {mode:o}); run `chmod 600 {path}` so only the agent's service account can read it"
    )]
    Readable { path: PathBuf, mode: u32 },
    #[error("{path}: {reason}")]
    Invalid { path: PathBuf, reason: String },
}

/// Writes a new key to `path` (which must not exist) and returns it.
pub fn generate(path: &Path) -> Result<Signer, KeyFileError> {
    let io = |source| KeyFileError::Io {
        path: path.to_owned(),
        source,
    };
    let der = Signer::generate_pkcs8().map_err(|e| KeyFileError::Invalid {
        path: path.to_owned(),
        reason: e.to_string(),
    })?;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path).map_err(|source| {
        if source.kind() == std::io::ErrorKind::AlreadyExists {
            KeyFileError::Exists {
                path: path.to_owned(),
            }
        } else {
            io(source)
        }
    })?;
    file.write_all(&der).map_err(io)?;
    file.sync_all().map_err(io)?;
    load_bytes(path, &der)
}

/// Reads the key at `path`, refusing a file other users can read.
pub fn load(path: &Path) -> Result<Signer, KeyFileError> {
    let io = |source| KeyFileError::Io {
        path: path.to_owned(),
        source,
    };
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(path).map_err(io)?.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(KeyFileError::Readable {
                path: path.to_owned(),
                mode,
            });
        }
    }
    let der = std::fs::read(path).map_err(io)?;
    load_bytes(path, &der)
}

fn load_bytes(path: &Path, der: &[u8]) -> Result<Signer, KeyFileError> {
    Signer::from_pkcs8(der).map_err(|e| KeyFileError::Invalid {
        path: path.to_owned(),
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_key_loads_back_and_is_never_overwritten() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("agent.key");
        let made = generate(&path).expect("generated");
        assert_eq!(load(&path).expect("loads").public_key(), made.public_key());
        let again = generate(&path).unwrap_err();
        assert!(matches!(again, KeyFileError::Exists { .. }), "{again}");
        assert_eq!(
            load(&path).expect("same key").public_key(),
            made.public_key()
        );
    }

    #[cfg(unix)]
    #[test]
    fn a_key_others_can_read_is_refused_with_the_fix() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("agent.key");
        generate(&path).expect("generated");
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let err = load(&path).unwrap_err().to_string();
        assert!(err.contains("chmod 600"), "{err}");
    }

    #[test]
    fn a_file_that_is_not_a_key_says_so() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("agent.key");
        generate(&path).expect("generated");
        std::fs::write(&path, b"not a key").expect("overwrite for the test");
        let err = load(&path).unwrap_err().to_string();
        assert!(err.contains("not an Ed25519 private key"), "{err}");
    }
}
