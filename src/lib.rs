//! diffusion-rt: an on-device runtime for ONNX-exported diffusion models.
//!
//! Every generation is one function, `D(x, level) -> x0` ([`denoiser`]), that samplers walk down
//! a schedule; guidance and caching wrap it; the model turns an ONNX graph into it; the backend
//! only runs graphs. A request is checked once ([`request`]) whichever way it came in.
//!
//! Layers, bottom to top. A module uses only modules of lower layers (its own submodules aside),
//! and no modules use each other in a cycle; `tests/layers.rs` reads this list and checks both.
//!
//! 0. [`error`]: one error type, each kind a C status
//! 1. [`limits`], `panic`, [`sysinfo`], [`npy`], [`image`]: know nothing of diffusion
//! 2. [`denoiser`]: the contract every layer shares (noise level, denoiser, noise source, precision)
//! 3. [`backend`], [`schedule`], [`rng`]: run graphs; lay out noise levels; draw seeded noise
//! 4. [`manifest`], [`dump`], [`quality`]: read model.json; record network inputs; judge samples
//! 5. [`model`], [`sampler`]: a graph as a denoiser; samplers over any denoiser
//! 6. [`guidance`], [`cache`]: wrappers of the denoiser
//! 7. [`request`]: a generation request, checked against a model into a plan
//! 8. [`pipeline`]: one generation, whole or step by step
//! 9. [`bench`], [`inspect`]: the benchmark; what `drt inspect` shows of a model
//! 10. [`sd`], [`policy`]: Stable Diffusion exports as they are; policies in closed loop
//! 11. [`ffi`]: the C ABI
//! 12. `java`: the Java API's native methods, over the C ABI (feature `jni`)
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
pub mod denoiser;
pub mod dump;
pub mod error;
pub mod ffi;
pub mod guidance;
pub mod image;
pub mod inspect;
#[cfg(feature = "jni")]
mod java;
pub mod limits;
pub mod manifest;
pub mod model;
pub mod npy;
mod panic;
pub mod pipeline;
pub mod policy;
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
pub use pipeline::{Generation, Session};
pub use request::GenerateParams;
