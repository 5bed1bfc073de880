//! The contract every layer shares, on the ground floor: a noise [`Level`], the denoiser
//! `D(x, level) -> x0` that samplers call ([`Denoiser`]), where stochastic samplers draw their
//! noise ([`NoiseSource`]), and the arithmetic a run's predictions are made in ([`Precision`]).
//! Schedules, samplers, guidance, caching and the model all depend on this module and on nothing
//! of each other's insides; it imports nothing above the error type.
//!
//! A sample is kept in the model's own ("native") scaling, `x = alpha * x0 + sigma * noise`:
//! variance-preserving models (DDPM) have `alpha^2 + sigma^2 = 1`, EDM/variance-exploding models
//! `alpha = 1`, rectified-flow models `alpha = 1 - t, sigma = t`. Working with the pair instead of the
//! k-diffusion "VE sigma" `sigma / alpha` keeps flow models finite at `t = 1` (`alpha = 0`), and the
//! network always sees exactly the tensor a diffusers pipeline would feed it.

pub mod half;

use crate::error::{Error, Result};

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
    /// Writes the noise prediction that [`Denoiser::denoise`]'s clean sample is made from. Only a
    /// run in [`Precision::Float16`] calls it, for the steps whose float16 arithmetic needs the
    /// prediction itself; denoisers of such runs give it.
    fn epsilon(&mut self, _x: &[f32], _level: &Level, step: usize, _eps: &mut [f32]) -> Result<()> {
        Err(Error::Internal(format!("step {step}: this denoiser gives no noise prediction")))
    }
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
        Err(Error::Internal(format!("a deterministic sampler asked for noise at step {step}")))
    }
}

/// The arithmetic of a run's predictions, which guidance, the clean-sample estimate and the
/// sampler's steps all follow. The request check chooses it once per run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Precision {
    /// float32 (and float64 where the samplers want it) throughout.
    #[default]
    Float32,
    /// torch's float16 arithmetic on a float16 epsilon network's output, as diffusers' pipelines
    /// run a float16 export (see [`half`]), so the images are diffusers' to float32 rounding.
    Float16,
}

impl Precision {
    /// Classifier-free guidance's `u + w (c − u)` of the unconditional and conditional predictions.
    pub fn guide(self, u: f32, c: f32, w: f32) -> f32 {
        match self {
            Precision::Float32 => u + w * (c - u),
            Precision::Float16 => half::guide(u, c, w),
        }
    }
}
