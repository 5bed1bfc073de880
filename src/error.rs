//! One error type for the whole crate. Each variant maps to one `drt_status` code of the C ABI, so the
//! kind of failure survives every layer; the message names the offending key, file or argument.

use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    #[error("I/O error: {0}")]
    Io(String),
    #[error("model error: {0}")]
    Model(String),
    #[error("manifest error: {0}")]
    Manifest(String),
    #[error("backend unavailable: {0}")]
    BackendUnavailable(String),
    #[error("cancelled at step {step}")]
    Cancelled { step: usize },
    #[error("non-finite value (NaN or Inf) in the denoiser output at step {step} (counted from 0)")]
    NonFinite { step: usize },
    #[error("out of memory: {0}")]
    OutOfMemory(String),
    #[error("internal error: {0}")]
    Internal(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// The same kind of error with its message rewritten by `f` (a caller adding context), so a
    /// message never repeats the kind's prefix.
    pub fn map_message(self, f: impl FnOnce(String) -> String) -> Error {
        match self {
            Error::InvalidArgument(m) => Error::InvalidArgument(f(m)),
            Error::Io(m) => Error::Io(f(m)),
            Error::Model(m) => Error::Model(f(m)),
            Error::Manifest(m) => Error::Manifest(f(m)),
            Error::BackendUnavailable(m) => Error::BackendUnavailable(f(m)),
            Error::OutOfMemory(m) => Error::OutOfMemory(f(m)),
            Error::Internal(m) => Error::Internal(f(m)),
            e @ (Error::Cancelled { .. } | Error::NonFinite { .. }) => e,
        }
    }

    /// The message without the kind's prefix, for a caller that reports it under another kind.
    pub fn message(&self) -> String {
        match self {
            Error::InvalidArgument(m)
            | Error::Io(m)
            | Error::Model(m)
            | Error::Manifest(m)
            | Error::BackendUnavailable(m)
            | Error::OutOfMemory(m)
            | Error::Internal(m) => m.clone(),
            e @ (Error::Cancelled { .. } | Error::NonFinite { .. }) => e.to_string(),
        }
    }

    pub fn io(path: &Path, err: impl std::fmt::Display) -> Self {
        Error::Io(format!("{}: {err}", path.display()))
    }
}
