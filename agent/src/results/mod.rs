//! Result files the instrument writes (placeholder until the watcher lands).

/// What identifies one version of a file: a rewritten file is a new result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Fingerprint {
    pub size_bytes: u64,
    pub mtime_ms: i64,
}
