//! Samplers, written once against [`Denoiser`] and a list of noise [`Level`]s (both from
//! `crate::denoiser`, the contract they share with everything below them).

use crate::denoiser::{Denoiser, Level, NoiseSource};
use crate::error::Result;

mod common;
mod dpmpp;
mod euler;
mod half;
mod heun;
mod lcm;
mod registry;
#[cfg(test)]
mod tests;

pub use common::{check_run, Progress};
pub use lcm::ConsistencyBoundary;
pub use registry::{sampler_by_name, sampler_names, SamplerKind, SamplerOptions};

/// A sampler as a resumable state machine, so a caller can drive the loop one step at a time.
///
/// `step(.., i, ..)` moves `x` from `levels[i]` to `levels[i + 1]`. Steps are taken in order
/// `0, 1, ..`, each once, over the same `levels`; the stepper keeps the history multistep methods
/// need and every scratch buffer, so a step allocates nothing.
pub trait Stepper: Send {
    fn step(
        &mut self,
        den: &mut dyn Denoiser,
        levels: &[Level],
        i: usize,
        x: &mut [f32],
        noise: &mut dyn NoiseSource,
    ) -> Result<()>;
    /// The clean-sample prediction of the last step taken (for previews); zeros before the first.
    fn denoised(&self) -> &[f32];
}
