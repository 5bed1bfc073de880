//! diffusion-rt: an on-device runtime for ONNX-exported diffusion models.
//!
//! Layers, top to bottom (nothing below knows about anything above): [`pipeline`] (one generation),
//! [`sampler`] over a [`schedule`], [`guidance`] wrapping the network, [`model`] (manifest adapters
//! turning the network into `D(x, level) -> x0`), [`backend`] (tract or ONNX Runtime).
//!
//! ```
//! use std::sync::Arc;
//! use diffusion_rt::{BackendOptions, GenerateParams, Model, Session};
//!
//! fn main() -> diffusion_rt::Result<()> {
//!     let model = Arc::new(Model::load("models/digits".as_ref(), &BackendOptions::default())?);
//!     let mut session = Session::new(&model)?; // one per thread; the model is shared
//!     let params = GenerateParams { batch: 2, classes: vec![3, 7], seed: 42, ..GenerateParams::default() };
//!     let out = session.generate(&params, &mut |step, total| {
//!         eprintln!("{step}/{total}");
//!         true // false cancels
//!     })?;
//!     assert_eq!(out.samples.len(), 2 * model.sample_len());
//!     Ok(())
//! }
//! ```

pub mod backend;
pub mod bench;
pub mod cache;
pub mod dump;
pub mod error;
pub mod ffi;
pub mod guidance;
pub mod image;
pub mod manifest;
pub mod model;
pub mod npy;
mod panic;
pub mod pipeline;
pub mod quality;
pub mod request;
pub mod rng;
pub mod sampler;
pub mod schedule;
pub mod sd;
pub mod sysinfo;

pub use backend::{BackendKind, BackendOptions};
pub use error::{Error, Result};
pub use model::Model;
pub use pipeline::{GenerateParams, Generation, Session};
