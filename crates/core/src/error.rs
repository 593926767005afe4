//! Errors of retbench-core. Snapshot errors always carry the file's path,
//! because the person reading them needs to know which file to throw away.

use std::path::PathBuf;

/// A configuration value that parses but makes no sense.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
}

/// Why a snapshot could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not a readable safetensors file (truncated or corrupted?): {message}")]
    Malformed { path: PathBuf, message: String },
    #[error("{path}: not a retbench memory snapshot ({message})")]
    NotSnapshot { path: PathBuf, message: String },
    #[error(
        "{path}: snapshot format version {found} is newer than this retbench supports ({supported}); upgrade retbench"
    )]
    NewerVersion {
        path: PathBuf,
        found: u32,
        supported: u32,
    },
    #[error(
        "{path}: snapshot was written for retention config {found}, not {expected}; it cannot be loaded into this layer"
    )]
    ConfigMismatch {
        path: PathBuf,
        expected: String,
        found: String,
    },
    #[error("{path}: tensor {tensor} holds {what}: one such slot poisons every read; refusing it")]
    NonFinite {
        path: PathBuf,
        tensor: String,
        what: String,
    },
    #[error(
        "{path}: checksum mismatch (stored {stored}, computed {computed}): the file is corrupted"
    )]
    Checksum {
        path: PathBuf,
        stored: String,
        computed: String,
    },
}

/// Everything else the core can fail at.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    #[error("invalid retention config: {0}")]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    #[error("{0}")]
    Usage(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
