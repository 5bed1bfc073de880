//! Sampler names, the grid each one walks, and one entry point that runs any of them.

use super::common::{check_run, finished, Progress};
use super::lcm::ConsistencyBoundary;
use super::Stepper;
use crate::denoiser::{Denoiser, Level, NoiseSource, Precision};
use crate::error::{Error, Result};
use crate::schedule::{Grid, NoiseSchedule, Schedule, SigmaSpacing};

/// The samplers of the CLI contract (`--sampler NAME`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SamplerKind {
    Ddim,
    Ddpm,
    Euler,
    EulerAncestral,
    Heun,
    DpmPp2m,
    DpmPp2mSde,
    Lcm,
    FlowEuler,
}

/// Knobs a few samplers take; `Default` reproduces diffusers' defaults.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SamplerOptions {
    /// DDIM's `eta` (0 = deterministic); the other samplers ignore it.
    pub eta: f64,
    /// LCM's boundary condition; `None` for models whose `Level.timestep` is not a discrete index.
    pub lcm_boundary: Option<ConsistencyBoundary>,
    /// The run's arithmetic: with [`Precision::Float16`], DDIM (eta 0) and Euler take diffusers'
    /// float16 steps (see `half`), calling [`Denoiser::epsilon`].
    pub precision: Precision,
}

impl Default for SamplerOptions {
    fn default() -> Self {
        SamplerOptions { eta: 0.0, lcm_boundary: Some(ConsistencyBoundary::default()), precision: Precision::Float32 }
    }
}

impl SamplerKind {
    pub const ALL: [SamplerKind; 9] = [
        SamplerKind::Ddim,
        SamplerKind::Ddpm,
        SamplerKind::Euler,
        SamplerKind::EulerAncestral,
        SamplerKind::Heun,
        SamplerKind::DpmPp2m,
        SamplerKind::DpmPp2mSde,
        SamplerKind::Lcm,
        SamplerKind::FlowEuler,
    ];

    pub fn name(self) -> &'static str {
        match self {
            SamplerKind::Ddim => "ddim",
            SamplerKind::Ddpm => "ddpm",
            SamplerKind::Euler => "euler",
            SamplerKind::EulerAncestral => "euler-a",
            SamplerKind::Heun => "heun",
            SamplerKind::DpmPp2m => "dpmpp-2m",
            SamplerKind::DpmPp2mSde => "dpmpp-2m-sde",
            SamplerKind::Lcm => "lcm",
            SamplerKind::FlowEuler => "flow-euler",
        }
    }

    /// The grid a discrete-time model is sampled on (EDM and flow models have one grid for all).
    pub fn grid(self) -> Grid {
        match self {
            SamplerKind::Ddim => Grid::Ddim,
            SamplerKind::Ddpm => Grid::Ddpm,
            SamplerKind::Lcm => Grid::Lcm,
            SamplerKind::Euler | SamplerKind::EulerAncestral | SamplerKind::Heun | SamplerKind::FlowEuler => {
                Grid::Euler
            }
            SamplerKind::DpmPp2m | SamplerKind::DpmPp2mSde => Grid::Dpm,
        }
    }

    /// One line for `--help`: the method and the grid it walks on discrete-time models.
    pub fn description(self) -> &'static str {
        match self {
            SamplerKind::Ddim => {
                "DDIM (eta 0 = deterministic); DDIMScheduler's integer timesteps, ending on the final alpha"
            }
            SamplerKind::Ddpm => "DDPM ancestral sampling (fixed_small variance); DDPMScheduler's integer timesteps",
            SamplerKind::Euler => "Euler ODE step; EulerDiscreteScheduler's sigma grid (karras/exponential allowed)",
            SamplerKind::EulerAncestral => {
                "Euler ancestral (noise re-injected each step); EulerAncestralDiscreteScheduler's sigma grid"
            }
            SamplerKind::Heun => "Heun 2nd order, two denoiser calls per step; HeunDiscreteScheduler's sigma grid",
            SamplerKind::DpmPp2m => "DPM-Solver++(2M); DPMSolverMultistepScheduler's grid (karras/exponential allowed)",
            SamplerKind::DpmPp2mSde => "DPM-Solver++(2M) SDE, stochastic; DPMSolverMultistepScheduler's grid",
            SamplerKind::Lcm => "latent-consistency multistep (predict, re-noise); LCMScheduler's skip grid",
            SamplerKind::FlowEuler => {
                "Euler step as FlowMatchEulerDiscrete takes it; the flow grid (sigma grid on other models)"
            }
        }
    }

    /// Denoiser calls for `steps` steps (Heun's step onto clean data takes one call).
    pub fn evaluations(self, steps: usize) -> usize {
        match self {
            SamplerKind::Heun => (2 * steps).saturating_sub(1),
            _ => steps,
        }
    }

    /// Whether a run draws noise after the initial sample.
    pub fn is_stochastic(self, opts: &SamplerOptions) -> bool {
        match self {
            SamplerKind::Ddpm | SamplerKind::EulerAncestral | SamplerKind::DpmPp2mSde | SamplerKind::Lcm => true,
            SamplerKind::Ddim => opts.eta > 0.0,
            _ => false,
        }
    }

    /// The schedule this sampler walks for `steps` steps of a model trained on `noise`.
    pub fn schedule(self, noise: &NoiseSchedule, steps: usize, spacing: SigmaSpacing) -> Result<Schedule> {
        noise.schedule(self.grid(), steps, spacing)
    }

    /// The state machine of this sampler for samples of `n` values over `levels`; refuses options
    /// and schedules the method cannot run.
    pub fn stepper(self, levels: &[Level], n: usize, opts: &SamplerOptions) -> Result<Box<dyn Stepper>> {
        use super::{dpmpp, euler, half, heun, lcm};
        let float16 = opts.precision == Precision::Float16;
        Ok(match self {
            SamplerKind::Ddim if float16 && opts.eta == 0.0 => half::ddim(n),
            SamplerKind::Euler if float16 => half::euler(n),
            SamplerKind::Ddim => Box::new(euler::FirstOrder::new(n, opts.eta)?),
            SamplerKind::Euler | SamplerKind::FlowEuler => Box::new(euler::FirstOrder::new(n, 0.0)?),
            SamplerKind::Ddpm | SamplerKind::EulerAncestral => Box::new(euler::FirstOrder::new(n, 1.0)?),
            SamplerKind::Heun => Box::new(heun::Heun::new(n, levels)?),
            SamplerKind::DpmPp2m => Box::new(dpmpp::DpmPp2m::new(n, false)),
            SamplerKind::DpmPp2mSde => Box::new(dpmpp::DpmPp2m::new(n, true)),
            SamplerKind::Lcm => Box::new(lcm::Lcm::new(n, opts.lcm_boundary)),
        })
    }

    /// Whether diffusers' scheduler of this sampler has float16 arithmetic this runtime follows
    /// ([`Precision::Float16`]): DDIM with eta 0, Euler, DPM-Solver++ 2M and LCM.
    pub fn has_float16_steps(self, eta: f64) -> bool {
        match self {
            SamplerKind::Ddim => eta == 0.0,
            SamplerKind::Euler | SamplerKind::DpmPp2m | SamplerKind::Lcm => true,
            _ => false,
        }
    }

    /// Runs the sampler from the initial native sample in `x` over `levels`, leaving the final sample
    /// in `x`. Noise is drawn with `noise.fill(step, ..)` only on steps that use it; `progress` is
    /// called after every step and cancels the run by returning `false`. Scratch buffers are
    /// allocated once per call, never per step.
    pub fn sample(
        self,
        den: &mut dyn Denoiser,
        levels: &[Level],
        x: &mut [f32],
        noise: &mut dyn NoiseSource,
        progress: Progress,
        opts: &SamplerOptions,
    ) -> Result<()> {
        check_run(den, levels, x)?;
        let mut stepper = self.stepper(levels, x.len(), opts)?;
        let total = levels.len() - 1;
        for i in 0..total {
            stepper.step(den, levels, i, x, noise)?;
            finished(progress, i, total)?;
        }
        Ok(())
    }
}

/// All sampler names, in CLI order.
pub fn sampler_names() -> Vec<&'static str> {
    SamplerKind::ALL.iter().map(|k| k.name()).collect()
}

/// Looks a sampler up by its CLI name.
pub fn sampler_by_name(name: &str) -> Result<SamplerKind> {
    SamplerKind::ALL.iter().copied().find(|k| k.name() == name).ok_or_else(|| {
        Error::InvalidArgument(format!("unknown sampler '{name}'; valid: {}", sampler_names().join(", ")))
    })
}
