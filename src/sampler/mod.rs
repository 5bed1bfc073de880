//! Samplers, written once against [`Denoiser`] and a list of noise [`Level`]s.
//!
//! The sample is kept in the model's own ("native") scaling, `x = alpha * x0 + sigma * noise`:
//! variance-preserving models (DDPM) have `alpha^2 + sigma^2 = 1`, EDM/variance-exploding models
//! `alpha = 1`, rectified-flow models `alpha = 1 - t, sigma = t`. Working with the pair instead of the
//! k-diffusion "VE sigma" `sigma / alpha` keeps flow models finite at `t = 1` (`alpha = 0`), and the
//! network always sees exactly the tensor a diffusers pipeline would feed it.

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

/// One point of a noise schedule.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Level {
    /// Signal scale of the native sample at this level.
    pub alpha: f64,
    /// Noise scale of the native sample at this level (0 = clean data).
    pub sigma: f64,
    /// The model's own time coordinate for this level: the discrete timestep index (possibly
    /// fractional) for `discrete` schedules, flow time `t` in [0, 1] for `flow`, VE sigma for `edm`.
    /// Carried so a model fed integer timesteps gets exactly the value diffusers feeds it.
    pub timestep: f64,
}

impl Level {
    /// k-diffusion's variance-exploding sigma, `sigma / alpha` (infinite at `alpha = 0`).
    pub fn ve_sigma(&self) -> f64 {
        self.sigma / self.alpha
    }
    /// Log signal-to-noise half ratio used by DPM-Solver, `ln(alpha / sigma)`.
    pub fn lambda(&self) -> f64 {
        (self.alpha / self.sigma).ln()
    }
}

/// `D(x, level) -> x0_hat`: everything below the sampler (network, parameterisation, guidance,
/// caching) hides behind this.
pub trait Denoiser {
    /// Number of f32 values in one call's `x` (batch × sample elements).
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Writes the predicted clean sample for the native sample `x` at `level` into `x0`.
    /// `step` is the index of the sampler step (for error messages and caches).
    fn denoise(&mut self, x: &[f32], level: &Level, step: usize, x0: &mut [f32]) -> Result<()>;
    /// Writes the guided network output itself (epsilon for the models [`half`] steps serve) in
    /// float16 arithmetic; only denoisers over a float16 network give it.
    fn predict_half(&mut self, _x: &[f32], _level: &Level, step: usize, _out: &mut [f32]) -> Result<()> {
        Err(crate::error::Error::Internal(format!("step {step}: this denoiser has no float16 output")))
    }
}

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

/// Where a stochastic sampler gets its standard-normal noise, one tensor of `len` values per draw.
///
/// Samplers call `fill` only on steps whose update uses noise, at most once per step, with the
/// 0-based step index; a source keyed by step (see `crate::rng`) therefore gives the same noise
/// whatever happened on other steps.
pub trait NoiseSource {
    fn fill(&mut self, step: usize, out: &mut [f32]) -> Result<()>;
}

/// A source for deterministic samplers: any request is an internal error.
pub struct NoNoise;

impl NoiseSource for NoNoise {
    fn fill(&mut self, step: usize, _out: &mut [f32]) -> Result<()> {
        Err(crate::error::Error::Internal(format!("a deterministic sampler asked for noise at step {step}")))
    }
}
