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
    pub fn io(path: &Path, err: impl std::fmt::Display) -> Self {
        Error::Io(format!("{}: {err}", path.display()))
    }
}
