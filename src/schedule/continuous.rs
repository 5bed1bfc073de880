//! Grids of continuous-time models: EDM (variance exploding, `alpha = 1`), rectified flow
//! (`alpha = 1 - t`, `sigma = t`) and the variance-preserving SDE (`alpha² + sigma² = 1`).

use super::discrete::respace;
use super::numpy::{np_linspace, torch_linspace_f64};
use super::{EdmSchedule, FlowSchedule, SigmaSpacing, VpSchedule};
use crate::denoiser::Level;
use crate::error::{Error, Result};
use crate::limits::{self, MAX_TRAIN_TIMESTEPS};

fn check_steps(steps: usize) -> Result<()> {
    limits::steps(steps).map(|_| ())
}

/// EDMEulerScheduler `set_timesteps`: Karras (rho) or exponential sigmas from `sigma_max` down to
/// `sigma_min` in float64, stored as float32, then a final 0. `Level.timestep` is the sigma itself;
/// the model adapter derives `c_noise` from it.
pub(super) fn edm_levels(cfg: &EdmSchedule, steps: usize, spacing: SigmaSpacing) -> Result<Vec<Level>> {
    check_steps(steps)?;
    if !(cfg.sigma_min > 0.0 && cfg.sigma_max > cfg.sigma_min && cfg.rho > 0.0) {
        return Err(Error::InvalidArgument(format!(
            "edm schedule needs 0 < sigma_min < sigma_max and rho > 0, got sigma_min {} sigma_max {} rho {}",
            cfg.sigma_min, cfg.sigma_max, cfg.rho
        )));
    }
    let sigmas: Vec<f64> = match spacing {
        SigmaSpacing::Default | SigmaSpacing::Karras => {
            let (min_inv, max_inv) = (cfg.sigma_min.powf(1.0 / cfg.rho), cfg.sigma_max.powf(1.0 / cfg.rho));
            torch_linspace_f64(0.0, 1.0, steps)
                .into_iter()
                .map(|r| (max_inv + r * (min_inv - max_inv)).powf(cfg.rho))
                .collect()
        }
        SigmaSpacing::Exponential => {
            torch_linspace_f64(cfg.sigma_min.ln(), cfg.sigma_max.ln(), steps).into_iter().rev().map(f64::exp).collect()
        }
    };
    let mut levels: Vec<Level> = sigmas.iter().map(|&s| edm_level(s as f32)).collect();
    levels.push(edm_level(0.0));
    Ok(levels)
}

pub(super) fn edm_level(s: f32) -> Level {
    Level { alpha: 1.0, sigma: s as f64, timestep: s as f64 }
}

pub(super) fn flow_level(t: f32) -> Level {
    let t = t as f64;
    Level { alpha: 1.0 - t, sigma: t, timestep: t }
}

/// FlowMatchEulerDiscreteScheduler with a static `shift`.
///
/// Its constructor shifts the train grid `t = k / T` in float32, and `set_timesteps` then spaces
/// `steps` points linearly between that grid's first and last value and shifts them again, so the
/// smallest sigma is shifted twice. We reproduce that (it is what the scheduler feeds the network).
/// `Level.timestep` is the flow time `t` in [0, 1]; diffusers feeds `t * num_train_timesteps`.
pub(super) fn flow_levels(cfg: &FlowSchedule, steps: usize, spacing: SigmaSpacing) -> Result<Vec<Level>> {
    check_steps(steps)?;
    let t = cfg.num_train_timesteps;
    if !((1..=MAX_TRAIN_TIMESTEPS).contains(&t) && cfg.shift > 0.0 && cfg.shift.is_finite()) {
        return Err(Error::InvalidArgument(format!(
            "flow schedule needs num_train_timesteps >= 1 and shift > 0, got {t} and {}",
            cfg.shift
        )));
    }
    let shift32 = |s: f32| {
        let a = cfg.shift as f32 * s;
        a / (1.0f32 + (cfg.shift - 1.0) as f32 * s)
    };
    let sigma_max = shift32(1.0) as f64; // the train grid's first entry, T / T
    let sigma_min = shift32(1.0f32 / t as f32) as f64;
    let shift = |s: f64| cfg.shift * s / (1.0 + (cfg.shift - 1.0) * s);
    let mut sigmas: Vec<f64> = np_linspace(sigma_max * t as f64, sigma_min * t as f64, steps)
        .into_iter()
        .map(|x| shift(x / t as f64))
        .collect();
    sigmas = respace(&sigmas, steps, spacing);
    let mut levels: Vec<Level> = sigmas.iter().map(|&s| flow_level(s as f32)).collect();
    levels.push(flow_level(0.0));
    Ok(levels)
}

/// The level at time `t` of a vp schedule, in float64 throughout (no diffusers scheduler rounds
/// it to float32). `Level.timestep` is `t`, which the network is fed (times the time input's scale).
pub(super) fn vp_level(cfg: &VpSchedule, t: f64) -> Level {
    let log_abar = -0.5 * t * t * (cfg.beta_max - cfg.beta_min) - t * cfg.beta_min;
    // 1 − ᾱ as −expm1(ln ᾱ): exact where ᾱ is close to 1, at small t.
    Level { alpha: (0.5 * log_abar).exp(), sigma: (-log_abar.exp_m1()).sqrt(), timestep: t }
}

/// `steps` levels at `t = linspace(1, t_min, steps)`, then the clean level `t = 0` (sigma 0), for
/// every sampler.
pub(super) fn vp_levels(cfg: &VpSchedule, steps: usize, spacing: SigmaSpacing) -> Result<Vec<Level>> {
    check_steps(steps)?;
    if spacing != SigmaSpacing::Default {
        return Err(Error::InvalidArgument(format!(
            "{spacing} sigma spacing is not defined for a vp schedule, whose grid is linear in t"
        )));
    }
    Ok(np_linspace(1.0, cfg.t_min, steps).into_iter().chain(std::iter::once(0.0)).map(|t| vp_level(cfg, t)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edm_grid_runs_from_sigma_max_to_zero() {
        let cfg = EdmSchedule::default();
        let l = edm_levels(&cfg, 5, SigmaSpacing::Karras).unwrap();
        assert_eq!(l.len(), 6);
        assert!((l[0].sigma - 80.0).abs() < 1e-4);
        assert!((l[4].sigma - 0.002).abs() < 1e-9);
        assert_eq!(l[5].sigma, 0.0);
        assert!(l.iter().all(|l| l.alpha == 1.0));
        let e = edm_levels(&cfg, 5, SigmaSpacing::Exponential).unwrap();
        assert!((e[2].sigma - (80.0f64 * 0.002).sqrt()).abs() < 1e-4);
    }

    #[test]
    fn flow_without_shift_is_linear_in_t() {
        let cfg = FlowSchedule { num_train_timesteps: 1000, shift: 1.0 };
        let l = flow_levels(&cfg, 4, SigmaSpacing::Default).unwrap();
        assert_eq!(l[0].sigma, 1.0);
        assert_eq!(l[0].alpha, 0.0);
        assert!((l[3].sigma - 0.001).abs() < 1e-9);
        assert_eq!(l[4].sigma, 0.0);
        assert_eq!(l[4].alpha, 1.0);
    }

    #[test]
    fn flow_shift_moves_levels_up() {
        let base =
            flow_levels(&FlowSchedule { num_train_timesteps: 1000, shift: 1.0 }, 10, SigmaSpacing::Default).unwrap();
        let shifted =
            flow_levels(&FlowSchedule { num_train_timesteps: 1000, shift: 3.0 }, 10, SigmaSpacing::Default).unwrap();
        for (b, s) in base[1..10].iter().zip(&shifted[1..10]) {
            assert!(s.sigma > b.sigma);
        }
        assert!(
            flow_levels(&FlowSchedule { num_train_timesteps: 1000, shift: -1.0 }, 10, SigmaSpacing::Default).is_err()
        );
    }
}
