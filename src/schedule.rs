//! Noise schedules: from a model's training schedule and a step count to the list of [`Level`]s a
//! sampler walks, laid out exactly as the diffusers scheduler users compare against would lay it out.
//!
//! Which grid a sampler gets follows diffusers' conventions ([`Grid`]): DDIM, DDPM and LCM walk
//! integer timesteps of the `alphas_cumprod` table; Euler, Heun and DPM-Solver walk k-diffusion sigma
//! grids (optionally Karras or exponential). EDM and flow models have one grid for every sampler.
//! A [`Schedule`] also carries how the initial unit noise is scaled, because that too differs per
//! diffusers scheduler.

mod continuous;
mod discrete;
mod numpy;

use crate::denoiser::Level;
use crate::error::{Error, Result};
use crate::limits;

/// `beta_schedule` of a discrete model (names as in diffusers' `scheduler_config.json`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BetaSchedule {
    Linear,
    ScaledLinear,
    SquaredcosCapV2,
}

/// `timestep_spacing` of a discrete model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimestepSpacing {
    Linspace,
    Leading,
    Trailing,
}

/// How sigmas are spaced on sigma grids (`--schedule`): the grid's own spacing, or diffusers'
/// `use_karras_sigmas` / `use_exponential_sigmas` over the same sigma range.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum SigmaSpacing {
    #[default]
    Default,
    Karras,
    Exponential,
}

/// `final_sigmas_type` of Euler and DPM-Solver grids.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum FinalSigmas {
    #[default]
    Zero,
    SigmaMin,
}

fn parse<T: Copy>(what: &str, name: &str, table: &[(&str, T)]) -> Result<T> {
    table.iter().find(|(n, _)| *n == name).map(|(_, v)| *v).ok_or_else(|| {
        let valid: Vec<&str> = table.iter().map(|(n, _)| *n).collect();
        Error::InvalidArgument(format!("unknown {what} '{name}'; valid: {}", valid.join(", ")))
    })
}

fn name_of<T: Copy + PartialEq>(v: T, table: &[(&'static str, T)]) -> &'static str {
    table.iter().find(|(_, t)| *t == v).map_or("?", |(n, _)| n)
}

/// Each enum's names, as in diffusers' configs and the CLI; parsing and printing share them.
macro_rules! named {
    ($t:ident, $what:literal, $table:ident: [$(($n:literal, $v:ident)),+]) => {
        const $table: &[(&str, $t)] = &[$(($n, $t::$v)),+];
        impl $t {
            pub fn from_name(name: &str) -> Result<Self> {
                parse($what, name, $table)
            }
            pub fn name(self) -> &'static str {
                name_of(self, $table)
            }
        }
        impl std::fmt::Display for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.name())
            }
        }
    };
}

named!(BetaSchedule, "beta_schedule", BETA_SCHEDULES: [("linear", Linear), ("scaled_linear", ScaledLinear),
    ("squaredcos_cap_v2", SquaredcosCapV2)]);
named!(TimestepSpacing, "timestep_spacing", TIMESTEP_SPACINGS: [("linspace", Linspace), ("leading", Leading),
    ("trailing", Trailing)]);
named!(SigmaSpacing, "sigma spacing", SIGMA_SPACINGS: [("default", Default), ("karras", Karras),
    ("exponential", Exponential)]);
named!(FinalSigmas, "final_sigmas_type", FINAL_SIGMAS: [("zero", Zero), ("sigma_min", SigmaMin)]);

/// A DDPM-style training schedule (`noise_schedule.type = "discrete"`).
#[derive(Clone, Debug, PartialEq)]
pub struct DiscreteSchedule {
    pub num_train_timesteps: usize,
    pub beta_start: f64,
    pub beta_end: f64,
    pub beta_schedule: BetaSchedule,
    /// `None`: each sampler uses its diffusers scheduler's own default (`leading` for DDIM/DDPM,
    /// `linspace` for Euler, Heun and DPM-Solver), as `Scheduler.from_config` does when the key is absent.
    pub timestep_spacing: Option<TimestepSpacing>,
    pub steps_offset: usize,
    /// DDIM only: whether its last step lands on clean data or on `alphas_cumprod[0]`.
    pub set_alpha_to_one: bool,
    /// Euler and DPM-Solver grids.
    pub final_sigmas_type: FinalSigmas,
    /// LCM only: size of the skip grid its timesteps are drawn from.
    pub original_inference_steps: usize,
}

impl Default for DiscreteSchedule {
    /// diffusers' `DDPMScheduler` defaults.
    fn default() -> Self {
        DiscreteSchedule {
            num_train_timesteps: 1000,
            beta_start: 0.0001,
            beta_end: 0.02,
            beta_schedule: BetaSchedule::Linear,
            timestep_spacing: None,
            steps_offset: 0,
            set_alpha_to_one: true,
            final_sigmas_type: FinalSigmas::Zero,
            original_inference_steps: 50,
        }
    }
}

/// An EDM (Karras et al.) schedule: `alpha = 1`, sigma from `sigma_max` to `sigma_min`.
#[derive(Clone, Debug, PartialEq)]
pub struct EdmSchedule {
    pub sigma_min: f64,
    pub sigma_max: f64,
    /// Not used by the grid; the model adapter's preconditioning needs it.
    pub sigma_data: f64,
    pub rho: f64,
}

impl Default for EdmSchedule {
    fn default() -> Self {
        EdmSchedule { sigma_min: 0.002, sigma_max: 80.0, sigma_data: 0.5, rho: 7.0 }
    }
}

/// A rectified-flow schedule (`x = (1 - t) x0 + t noise`) with a static timestep `shift`.
#[derive(Clone, Debug, PartialEq)]
pub struct FlowSchedule {
    pub num_train_timesteps: usize,
    pub shift: f64,
}

impl Default for FlowSchedule {
    fn default() -> Self {
        FlowSchedule { num_train_timesteps: 1000, shift: 1.0 }
    }
}

/// Song et al.'s variance-preserving SDE in continuous time `t` in [0, 1]:
/// `ᾱ(t) = exp(−½ t² (β_max − β_min) − t β_min)`, `alpha = √ᾱ`, `sigma = √(1 − ᾱ)`.
#[derive(Clone, Debug, PartialEq)]
pub struct VpSchedule {
    pub beta_min: f64,
    pub beta_max: f64,
    /// The smallest time a grid visits before its final clean level.
    pub t_min: f64,
}

impl Default for VpSchedule {
    /// score-SDE's and diffusers' `ScoreSdeVpScheduler` values.
    fn default() -> Self {
        VpSchedule { beta_min: 0.1, beta_max: 20.0, t_min: 1e-3 }
    }
}

/// The model's training noise schedule.
#[derive(Clone, Debug, PartialEq)]
pub enum NoiseSchedule {
    Discrete(DiscreteSchedule),
    Edm(EdmSchedule),
    Flow(FlowSchedule),
    Vp(VpSchedule),
}

impl std::fmt::Display for NoiseSchedule {
    /// One line for `drt inspect`, in the keys' own terms.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NoiseSchedule::Discrete(d) => {
                write!(
                    f,
                    "discrete, {} train timesteps, {} betas {} to {}",
                    d.num_train_timesteps, d.beta_schedule, d.beta_start, d.beta_end
                )?;
                match d.timestep_spacing {
                    Some(s) => write!(f, ", {s} spacing")?,
                    None => f.write_str(", each sampler's own spacing")?,
                }
                if d.steps_offset != 0 {
                    write!(f, ", steps offset {}", d.steps_offset)?;
                }
                Ok(())
            }
            NoiseSchedule::Edm(e) => {
                write!(f, "edm, sigma {} to {}, sigma_data {}, rho {}", e.sigma_min, e.sigma_max, e.sigma_data, e.rho)
            }
            NoiseSchedule::Flow(fl) => {
                write!(f, "flow, shift {}, {} train timesteps", fl.shift, fl.num_train_timesteps)
            }
            NoiseSchedule::Vp(v) => {
                write!(f, "vp, beta {} to {}, t from 1 to {} then 0", v.beta_min, v.beta_max, v.t_min)
            }
        }
    }
}

/// Which diffusers scheduler's grid to lay out for a discrete model (EDM, flow and vp ignore it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Grid {
    /// DDIMScheduler: listed timesteps, then the "final alpha".
    Ddim,
    /// DDPMScheduler: listed timesteps, then clean data.
    Ddpm,
    /// LCMScheduler: timesteps from the `original_inference_steps` skip grid, then clean data.
    Lcm,
    /// EulerDiscrete / EulerAncestralDiscrete / HeunDiscrete sigma grid.
    Euler,
    /// DPMSolverMultistep sigma grid.
    Dpm,
}

/// The levels a sampler walks (`steps + 1` of them: the last is where the sample ends) and the factor
/// turning unit noise into the initial native sample.
///
/// The last level's `timestep` is never fed to a model: it is -1 on clean final levels of the
/// DDIM/DDPM/LCM grids (diffusers' `prev_timestep < 0`), 0 on sigma and flow grids.
#[derive(Clone, Debug, PartialEq)]
pub struct Schedule {
    levels: Vec<Level>,
    init_noise_scale: f64,
}

impl NoiseSchedule {
    /// Lays out `steps` steps on `grid` with the given sigma spacing.
    ///
    /// Karras/exponential spacing applies to sigma grids (Euler, DPM) and to EDM and flow models; the
    /// integer-timestep grids of DDIM, DDPM and LCM have no sigma spacing, so asking for one is an error.
    pub fn schedule(&self, grid: Grid, steps: usize, spacing: SigmaSpacing) -> Result<Schedule> {
        match self {
            NoiseSchedule::Discrete(cfg) => {
                let own = |default| cfg.timestep_spacing.unwrap_or(default);
                if spacing != SigmaSpacing::Default && matches!(grid, Grid::Ddim | Grid::Ddpm | Grid::Lcm) {
                    return Err(Error::InvalidArgument(format!(
                        "{spacing} sigma spacing needs a sigma-grid sampler (euler, euler-a, heun, dpmpp-2m, \
                         dpmpp-2m-sde, flow-euler); {grid:?} walks integer timesteps"
                    )));
                }
                let levels = match grid {
                    Grid::Ddim => discrete::ddim_levels(cfg, steps, own(TimestepSpacing::Leading))?,
                    Grid::Ddpm => discrete::ddpm_levels(cfg, steps, own(TimestepSpacing::Leading))?,
                    Grid::Lcm => discrete::lcm_levels(cfg, steps)?,
                    Grid::Euler => discrete::euler_levels(cfg, steps, own(TimestepSpacing::Linspace), spacing)?,
                    Grid::Dpm => discrete::dpm_levels(cfg, steps, own(TimestepSpacing::Linspace), spacing)?,
                };
                let scale = match grid {
                    Grid::Euler => euler_init_scale(&levels, own(TimestepSpacing::Linspace)),
                    _ => 1.0,
                };
                Schedule::new(levels, scale)
            }
            NoiseSchedule::Edm(cfg) => Schedule::new(continuous::edm_levels(cfg, steps, spacing)?, edm_init_scale(cfg)),
            NoiseSchedule::Flow(cfg) => Schedule::new(continuous::flow_levels(cfg, steps, spacing)?, 1.0),
            // The initial sample is the unit noise itself (sigma(1) is 1 − 2e-5 at the defaults).
            NoiseSchedule::Vp(cfg) => Schedule::new(continuous::vp_levels(cfg, steps, spacing)?, 1.0),
        }
    }
}

/// EulerDiscrete-family `init_noise_sigma` composed with the first `scale_model_input`: the k-diffusion
/// sample starts at `max_sigma * n` (`linspace`, `trailing`) or `sqrt(max_sigma^2 + 1) * n` (`leading`),
/// and the native sample is that times `alpha_0`.
fn euler_init_scale(levels: &[Level], spacing: TimestepSpacing) -> f64 {
    let max = levels.iter().map(|l| (l.sigma / l.alpha) as f32).fold(0.0f32, f32::max) as f64;
    let ve = match spacing {
        TimestepSpacing::Leading => (max * max + 1.0).sqrt(),
        _ => max,
    };
    ve * levels[0].alpha
}

/// EDMEulerScheduler's `init_noise_sigma`, `sqrt(sigma_max^2 + 1)` (not `sigma_max`).
fn edm_init_scale(cfg: &EdmSchedule) -> f64 {
    (cfg.sigma_max * cfg.sigma_max + 1.0).sqrt()
}

impl Schedule {
    /// A schedule from explicit levels. Levels must be finite with `alpha, sigma >= 0`, every level
    /// but the last must be noisy (`sigma > 0`), and every level after the first must keep some signal
    /// (`alpha > 0`; only the start of a flow schedule may have none).
    pub fn new(levels: Vec<Level>, init_noise_scale: f64) -> Result<Self> {
        validate_levels(&levels)?;
        if !(init_noise_scale.is_finite() && init_noise_scale > 0.0) {
            return Err(Error::InvalidArgument(format!("init_noise_scale must be positive, got {init_noise_scale}")));
        }
        Ok(Schedule { levels, init_noise_scale })
    }

    /// A custom sigma table in the model's own convention, last entry included (usually 0): k-diffusion
    /// sigmas for discrete models (timesteps by diffusers' `_sigma_to_t`; the initial sample scaled as
    /// EulerDiscrete does for the configured spacing), sigmas for EDM, times `t` for flow and vp models.
    pub fn from_sigmas(noise: &NoiseSchedule, sigmas: &[f64]) -> Result<Self> {
        limits::sigma_table(sigmas)?;
        match noise {
            NoiseSchedule::Discrete(cfg) => {
                let tab = discrete::tables(cfg)?;
                let levels = sigmas
                    .iter()
                    .map(|&s| {
                        let s = s as f32;
                        discrete::ve_level(s, discrete::sigma_to_t(s as f64, &tab.log_sigmas) as f32 as f64)
                    })
                    .collect::<Vec<_>>();
                validate_levels(&levels)?; // before euler_init_scale reads levels[0]
                let scale = euler_init_scale(&levels, cfg.timestep_spacing.unwrap_or(TimestepSpacing::Linspace));
                Schedule::new(levels, scale)
            }
            NoiseSchedule::Edm(cfg) => {
                Schedule::new(sigmas.iter().map(|&s| continuous::edm_level(s as f32)).collect(), edm_init_scale(cfg))
            }
            NoiseSchedule::Flow(_) => {
                if sigmas[0] > 1.0 {
                    return Err(Error::InvalidArgument(format!("flow times must lie in [0, 1], got {}", sigmas[0])));
                }
                Schedule::new(sigmas.iter().map(|&t| continuous::flow_level(t as f32)).collect(), 1.0)
            }
            NoiseSchedule::Vp(cfg) => {
                if sigmas[0] > 1.0 {
                    return Err(Error::InvalidArgument(format!("vp times must lie in [0, 1], got {}", sigmas[0])));
                }
                Schedule::new(sigmas.iter().map(|&t| continuous::vp_level(cfg, t)).collect(), 1.0)
            }
        }
    }

    pub fn levels(&self) -> &[Level] {
        &self.levels
    }

    /// Number of sampler steps (one fewer than levels).
    pub fn steps(&self) -> usize {
        self.levels.len() - 1
    }

    /// Factor from unit Gaussian noise to the initial native sample (diffusers' `init_noise_sigma`
    /// composed with its first `scale_model_input`).
    pub fn init_noise_scale(&self) -> f64 {
        self.init_noise_scale
    }

    /// Writes the initial native sample for unit noise `noise` into `x`.
    pub fn initial_sample(&self, noise: &[f32], x: &mut [f32]) -> Result<()> {
        if noise.len() != x.len() {
            return Err(Error::InvalidArgument(format!(
                "initial noise has {} values, the sample {}",
                noise.len(),
                x.len()
            )));
        }
        for (x, &n) in x.iter_mut().zip(noise) {
            *x = (n as f64 * self.init_noise_scale) as f32;
        }
        Ok(())
    }
}

/// The invariants every sampler relies on (it divides by `sigma` of the level it leaves and by
/// `alpha` of the level it reaches).
pub fn validate_levels(levels: &[Level]) -> Result<()> {
    if levels.len() < 2 {
        return Err(Error::InvalidArgument(format!("a schedule needs at least 2 levels, got {}", levels.len())));
    }
    let last = levels.len() - 1;
    for (i, l) in levels.iter().enumerate() {
        let ok =
            l.alpha.is_finite() && l.sigma.is_finite() && l.timestep.is_finite() && l.alpha >= 0.0 && l.sigma >= 0.0;
        if !ok || (i < last && l.sigma == 0.0) || (i > 0 && l.alpha == 0.0) {
            return Err(Error::InvalidArgument(format!(
                "level {i} of {} is unusable (alpha {}, sigma {}, timestep {})",
                levels.len(),
                l.alpha,
                l.sigma,
                l.timestep
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_and_unknown_names_list_valid_ones() {
        assert_eq!(BetaSchedule::from_name("scaled_linear").unwrap(), BetaSchedule::ScaledLinear);
        assert_eq!(SigmaSpacing::from_name("karras").unwrap(), SigmaSpacing::Karras);
        let e = TimestepSpacing::from_name("lead").unwrap_err().to_string();
        assert!(e.contains("linspace, leading, trailing"), "{e}");
    }

    #[test]
    fn timestep_grids_reject_sigma_spacing() {
        let n = NoiseSchedule::Discrete(DiscreteSchedule::default());
        assert!(n.schedule(Grid::Ddim, 10, SigmaSpacing::Karras).is_err());
        assert!(n.schedule(Grid::Euler, 10, SigmaSpacing::Karras).is_ok());
    }

    #[test]
    fn absurd_sizes_are_errors() {
        let huge = DiscreteSchedule { num_train_timesteps: 1 << 40, ..DiscreteSchedule::default() };
        assert!(NoiseSchedule::Discrete(huge).schedule(Grid::Euler, 10, SigmaSpacing::Default).is_err());
        let edm = NoiseSchedule::Edm(EdmSchedule::default());
        assert!(edm.schedule(Grid::Euler, 1 << 40, SigmaSpacing::Default).is_err());
        assert!(edm.schedule(Grid::Euler, 0, SigmaSpacing::Default).is_err());
        let flow = NoiseSchedule::Flow(FlowSchedule { num_train_timesteps: 0, shift: 1.0 });
        assert!(flow.schedule(Grid::Euler, 10, SigmaSpacing::Default).is_err());
        let nan = NoiseSchedule::Edm(EdmSchedule { sigma_max: f64::NAN, ..EdmSchedule::default() });
        assert!(nan.schedule(Grid::Euler, 10, SigmaSpacing::Default).is_err());
    }

    #[test]
    fn euler_init_scale_follows_spacing() {
        let mut cfg = DiscreteSchedule::default();
        let lin = NoiseSchedule::Discrete(cfg.clone()).schedule(Grid::Euler, 10, SigmaSpacing::Default).unwrap();
        let l0 = lin.levels()[0];
        assert!((lin.init_noise_scale() - l0.sigma).abs() < 1e-6);
        cfg.timestep_spacing = Some(TimestepSpacing::Leading);
        let lead = NoiseSchedule::Discrete(cfg).schedule(Grid::Euler, 10, SigmaSpacing::Default).unwrap();
        assert!((lead.init_noise_scale() - 1.0).abs() < 1e-6);
    }

    #[test]
    fn custom_tables_are_checked() {
        let n = NoiseSchedule::Discrete(DiscreteSchedule::default());
        assert!(Schedule::from_sigmas(&n, &[1.0]).is_err());
        assert!(Schedule::from_sigmas(&n, &[1.0, 2.0]).is_err());
        assert!(Schedule::from_sigmas(&n, &[1.0, 0.0, 0.0]).is_err());
        assert!(Schedule::from_sigmas(&n, &[f64::NAN, 0.0]).is_err());
        let s = Schedule::from_sigmas(&n, &[14.0, 1.0, 0.0]).unwrap();
        assert_eq!(s.steps(), 2);
        assert!(s.levels()[0].timestep > 500.0 && s.levels()[0].timestep < 999.0);
        let f = NoiseSchedule::Flow(FlowSchedule::default());
        assert!(Schedule::from_sigmas(&f, &[1.5, 0.0]).is_err());
        let s = Schedule::from_sigmas(&f, &[1.0, 0.5, 0.0]).unwrap();
        assert_eq!(s.levels()[0].alpha, 0.0);
    }

    #[test]
    fn initial_sample_checks_length() {
        let s = Schedule::new(
            vec![Level { alpha: 0.5, sigma: 0.8, timestep: 1.0 }, Level { alpha: 1.0, sigma: 0.0, timestep: 0.0 }],
            2.0,
        )
        .unwrap();
        let mut x = [0.0f32; 2];
        assert!(s.initial_sample(&[1.0], &mut x).is_err());
        s.initial_sample(&[1.0, -0.5], &mut x).unwrap();
        assert_eq!(x, [2.0, -1.0]);
    }
}
