//! diffusion-rt: an on-device runtime for ONNX-exported diffusion models.
//!
//! Layers, top to bottom (nothing below knows about anything above): [`pipeline`] (one generation),
//! [`sampler`] over a [`schedule`], [`guidance`] wrapping the network, [`model`] (manifest adapters
//! turning the network into `D(x, level) -> x0`), [`backend`] (tract or ONNX Runtime).

pub mod backend;
pub mod error;
pub mod guidance;
pub mod image;
pub mod manifest;
pub mod model;
pub mod npy;
pub mod pipeline;
pub mod rng;
pub mod sampler;
pub mod schedule;

pub use backend::{BackendKind, BackendOptions};
pub use error::{Error, Result};
pub use model::Model;
pub use pipeline::{GenerateParams, Generation, Session};
