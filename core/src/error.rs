//! Errors of the core crate. Every message says what went wrong and, where possible, what to do.

use std::path::PathBuf;

/// The one error type of `arpg-core`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The cause is part of the message (not a `source`, so error chains do not repeat it).
    #[error("{path}: {err}")]
    Io { path: PathBuf, err: std::io::Error },

    /// The file exists but is not a checkpoint format we can read.
    #[error("{path}: not a readable checkpoint: {reason}")]
    NotACheckpoint { path: PathBuf, reason: String },

    /// A readable container without any weight tensors in it.
    #[error("{path}: no weights found ({reason})")]
    NoWeights { path: PathBuf, reason: String },

    /// Required tensors are absent.
    #[error("{path}: expected a {model} checkpoint, but {} key(s) are missing: {}", missing.len(), list_keys(missing))]
    MissingKeys {
        path: PathBuf,
        model: String,
        missing: Vec<String>,
    },

    /// A tensor with the right name but the wrong shape.
    #[error(
        "{path}: tensor `{key}` has shape {found:?}, expected {expected:?} for the {model} config"
    )]
    WrongShape {
        path: PathBuf,
        model: String,
        key: String,
        expected: Vec<usize>,
        found: Vec<usize>,
    },

    /// A tensor the model needs is in the file but can never be loaded (an element type that
    /// is not a float, a malformed record). `reason` completes "tensor `key` ...".
    #[error("{path}: tensor `{key}` {reason}")]
    UnusableTensor {
        path: PathBuf,
        key: String,
        reason: String,
    },

    /// The configuration cannot be determined or is inconsistent.
    #[error("config: {0}")]
    Config(String),

    /// A request the model cannot serve (bad class id, empty mask, T = 0, ...).
    #[error("{0}")]
    InvalidRequest(String),

    /// The cause is part of the message, as for `Io`.
    #[error("{context}: {err}")]
    Json {
        context: String,
        err: serde_json::Error,
    },

    /// An image or mask that cannot be used (unreadable, too large, damaged).
    #[error("{path}: {reason}")]
    Image { path: PathBuf, reason: String },

    /// Weights or activations that are not finite numbers (NaN or infinity).
    #[error("{0}")]
    NonFinite(String),

    /// The GPU path failed (no adapter, device lost, out of memory, limits too small); callers
    /// fall back to the CPU.
    #[error("GPU: {0}")]
    Gpu(String),

    /// A broken invariant of this crate (a bug, not bad input).
    #[error("internal error: {0}")]
    Internal(String),

    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

fn list_keys(keys: &[String]) -> String {
    const SHOWN: usize = 8;
    let mut s = keys
        .iter()
        .take(SHOWN)
        .map(|k| format!("`{k}`"))
        .collect::<Vec<_>>()
        .join(", ");
    if keys.len() > SHOWN {
        s.push_str(&format!(" and {} more", keys.len() - SHOWN));
    }
    s
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, err: std::io::Error) -> Self {
        // Errors that carry their own path (tempfile's) would name it twice: keep the cause.
        let err = match err.get_ref().and_then(|inner| inner.source()) {
            Some(cause) => std::io::Error::new(err.kind(), cause.to_string()),
            None => err,
        };
        Self::Io {
            path: path.into(),
            err,
        }
    }
}
