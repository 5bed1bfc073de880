//! Grids of discrete-time (DDPM-trained) models, as diffusers' schedulers lay them out.
//!
//! diffusers builds the beta/alpha tables in float32 (torch) and the grids in float64 (numpy) with
//! float32 round trips in between; every cast below mirrors one of theirs, because the timestep a
//! network is fed is rounded or interpolated from those float32 tables.

use super::numpy::{np_arange, np_interp_index, np_linspace, np_linspace_open, np_round, torch_linspace_f32};
use super::{BetaSchedule, DiscreteSchedule, FinalSigmas, SigmaSpacing, TimestepSpacing};
use crate::denoiser::Level;
use crate::error::{Error, Result};
use crate::limits::{self, MAX_TRAIN_TIMESTEPS};

/// The per-train-timestep tables every discrete grid is drawn from.
pub(super) struct Tables {
    /// `alphas_cumprod`, float32 as diffusers keeps it.
    pub acp: Vec<f32>,
    /// k-diffusion sigmas `sqrt((1 - acp) / acp)`, float32.
    pub sigmas: Vec<f32>,
    /// `ln(sigmas)` in float32, the table `_sigma_to_t` interpolates in.
    pub log_sigmas: Vec<f32>,
}

fn betas(cfg: &DiscreteSchedule) -> Vec<f32> {
    let t = cfg.num_train_timesteps;
    match cfg.beta_schedule {
        BetaSchedule::Linear => torch_linspace_f32(cfg.beta_start, cfg.beta_end, t),
        BetaSchedule::ScaledLinear => {
            torch_linspace_f32(cfg.beta_start.sqrt(), cfg.beta_end.sqrt(), t).into_iter().map(|b| b * b).collect()
        }
        BetaSchedule::SquaredcosCapV2 => {
            // Computed in Python floats, then stored as float32.
            let alpha_bar = |x: f64| {
                let c = ((x + 0.008) / 1.008 * std::f64::consts::PI / 2.0).cos();
                c * c
            };
            (0..t)
                .map(|i| {
                    let t1 = i as f64 / t as f64;
                    let t2 = (i + 1) as f64 / t as f64;
                    (1.0 - alpha_bar(t2) / alpha_bar(t1)).min(0.999) as f32
                })
                .collect()
        }
    }
}

pub(super) fn tables(cfg: &DiscreteSchedule) -> Result<Tables> {
    let t = cfg.num_train_timesteps;
    if !(2..=MAX_TRAIN_TIMESTEPS).contains(&t) {
        return Err(Error::InvalidArgument(format!(
            "num_train_timesteps must be between 2 and {MAX_TRAIN_TIMESTEPS}, got {t}"
        )));
    }
    let betas = betas(cfg);
    if betas.iter().any(|b| !(*b > 0.0 && *b < 1.0)) {
        return Err(Error::InvalidArgument(format!(
            "betas must lie in (0, 1); check beta_start {} and beta_end {}",
            cfg.beta_start, cfg.beta_end
        )));
    }
    // torch.cumprod on float32 accumulates in float64 and rounds each partial product.
    let mut acc = 1.0f64;
    let acp: Vec<f32> = betas
        .iter()
        .map(|&b| {
            acc *= (1.0f32 - b) as f64;
            acc as f32
        })
        .collect();
    let sigmas: Vec<f32> = acp.iter().map(|&a| ((1.0f32 - a) / a).sqrt()).collect();
    let log_sigmas = sigmas.iter().map(|&s| (s as f64).ln() as f32).collect();
    Ok(Tables { acp, sigmas, log_sigmas })
}

/// diffusers' `_sigma_to_t`: the (fractional) train timestep whose log-sigma matches, by linear
/// interpolation in the log-sigma table.
pub(super) fn sigma_to_t(sigma: f64, log_sigmas: &[f32]) -> f64 {
    let log_sigma = sigma.max(1e-10).ln();
    // `cumsum(dists >= 0).argmax()`: the first index at which the running count peaks.
    let (mut count, mut peak, mut low) = (0usize, 0usize, 0usize);
    for (i, &ls) in log_sigmas.iter().enumerate() {
        if log_sigma - ls as f64 >= 0.0 {
            count += 1;
        }
        if count > peak {
            peak = count;
            low = i;
        }
    }
    let low = low.min(log_sigmas.len() - 2);
    let high = low + 1;
    let (lo, hi) = (log_sigmas[low], log_sigmas[high]);
    // numpy subtracts the two float32 table entries in float32.
    let w = ((lo as f64 - log_sigma) / (lo - hi) as f64).clamp(0.0, 1.0);
    (1.0 - w) * low as f64 + w * high as f64
}

fn check_steps(cfg: &DiscreteSchedule, steps: usize) -> Result<()> {
    limits::steps(steps)?;
    if steps > cfg.num_train_timesteps {
        return Err(Error::InvalidArgument(format!(
            "steps must be between 1 and num_train_timesteps ({}), got {steps}",
            cfg.num_train_timesteps
        )));
    }
    Ok(())
}

/// DDIMScheduler / DDPMScheduler `set_timesteps`: integer timesteps, descending.
fn ddpm_timesteps(cfg: &DiscreteSchedule, steps: usize, spacing: TimestepSpacing) -> Vec<f64> {
    let t = cfg.num_train_timesteps;
    match spacing {
        TimestepSpacing::Linspace => np_linspace(0.0, (t - 1) as f64, steps).into_iter().rev().map(np_round).collect(),
        TimestepSpacing::Leading => {
            let ratio = t / steps;
            (0..steps).rev().map(|i| (i * ratio + cfg.steps_offset) as f64).collect()
        }
        TimestepSpacing::Trailing => {
            np_arange(t as f64, 0.0, -(t as f64 / steps as f64)).into_iter().map(|x| np_round(x) - 1.0).collect()
        }
    }
}

fn acp_level(tab: &Tables, t: f64) -> Level {
    let a = tab.acp[t as usize] as f64;
    Level { alpha: a.sqrt(), sigma: (1.0 - a).sqrt(), timestep: t }
}

fn check_range(tab: &Tables, ts: &[f64]) -> Result<()> {
    let max = tab.acp.len() as f64;
    match ts.iter().find(|&&t| !(t >= 0.0 && t < max)) {
        Some(t) => Err(Error::InvalidArgument(format!(
            "timestep {t} falls outside the {} train timesteps (check steps_offset)",
            tab.acp.len()
        ))),
        None => Ok(()),
    }
}

/// DDIM: the model is evaluated at each listed timestep and the last step lands on the "final"
/// alpha (1 with `set_alpha_to_one`, else `alphas_cumprod[0]`).
///
/// diffusers steps DDIM from `t` to `t - T // steps`, which is the next listed timestep for
/// `leading` and (when `T % steps == 0`) `trailing`, but not for `linspace`, where the model is then
/// evaluated at a noise level the sample is not at. We always step to the next listed timestep, so
/// DDIM with `linspace` spacing (and `trailing` with `T % steps != 0`) is the consistent grid, not a
/// copy of that inconsistency.
pub(super) fn ddim_levels(cfg: &DiscreteSchedule, steps: usize, spacing: TimestepSpacing) -> Result<Vec<Level>> {
    check_steps(cfg, steps)?;
    let tab = tables(cfg)?;
    let ts = ddpm_timesteps(cfg, steps, spacing);
    check_range(&tab, &ts)?;
    let mut levels: Vec<Level> = ts.iter().map(|&t| acp_level(&tab, t)).collect();
    levels.push(if cfg.set_alpha_to_one {
        Level { alpha: 1.0, sigma: 0.0, timestep: -1.0 }
    } else {
        acp_level(&tab, 0.0)
    });
    Ok(levels)
}

/// DDPM: same timesteps as DDIM; the posterior always ends on clean data (`alpha_prod = 1`).
pub(super) fn ddpm_levels(cfg: &DiscreteSchedule, steps: usize, spacing: TimestepSpacing) -> Result<Vec<Level>> {
    check_steps(cfg, steps)?;
    let tab = tables(cfg)?;
    let ts = ddpm_timesteps(cfg, steps, spacing);
    check_range(&tab, &ts)?;
    let mut levels: Vec<Level> = ts.iter().map(|&t| acp_level(&tab, t)).collect();
    levels.push(Level { alpha: 1.0, sigma: 0.0, timestep: -1.0 });
    Ok(levels)
}

/// LCMScheduler: `steps` timesteps picked from the `original_inference_steps`-point skip grid
/// `k, 2k, .. ` (minus one) with `k = T // original_inference_steps`; always ends on clean data.
pub(super) fn lcm_levels(cfg: &DiscreteSchedule, steps: usize) -> Result<Vec<Level>> {
    let orig = cfg.original_inference_steps;
    if orig == 0 || orig > cfg.num_train_timesteps {
        return Err(Error::InvalidArgument(format!(
            "original_inference_steps must be between 1 and num_train_timesteps ({}), got {orig}",
            cfg.num_train_timesteps
        )));
    }
    if steps == 0 || steps > orig {
        return Err(Error::InvalidArgument(format!(
            "lcm takes between 1 and original_inference_steps ({orig}) steps, got {steps}"
        )));
    }
    let tab = tables(cfg)?;
    let k = cfg.num_train_timesteps / orig;
    let origin: Vec<usize> = (1..=orig).rev().map(|i| i * k - 1).collect();
    let mut levels: Vec<Level> = np_linspace_open(0.0, origin.len() as f64, steps)
        .into_iter()
        .map(|x| acp_level(&tab, origin[x.floor() as usize] as f64))
        .collect();
    levels.push(Level { alpha: 1.0, sigma: 0.0, timestep: -1.0 });
    Ok(levels)
}

/// A level on a k-diffusion sigma grid: the native (variance-preserving) sample is the
/// k-diffusion one divided by `sqrt(1 + s^2)`.
pub(super) fn ve_level(s: f32, timestep: f64) -> Level {
    let s = s as f64;
    let alpha = 1.0 / (s * s + 1.0).sqrt();
    Level { alpha, sigma: s * alpha, timestep }
}

fn karras(sigma_min: f64, sigma_max: f64, steps: usize) -> Vec<f64> {
    let rho = 7.0;
    let (min_inv, max_inv) = (sigma_min.powf(1.0 / rho), sigma_max.powf(1.0 / rho));
    np_linspace(0.0, 1.0, steps).into_iter().map(|r| (max_inv + r * (min_inv - max_inv)).powf(rho)).collect()
}

fn exponential(sigma_min: f64, sigma_max: f64, steps: usize) -> Vec<f64> {
    np_linspace(sigma_max.ln(), sigma_min.ln(), steps).into_iter().map(f64::exp).collect()
}

/// Re-spaces `in_sigmas` (descending) as diffusers' `_convert_to_karras` / `_convert_to_exponential`.
pub(super) fn respace(in_sigmas: &[f64], steps: usize, spacing: SigmaSpacing) -> Vec<f64> {
    let (max, min) = (in_sigmas[0], in_sigmas[in_sigmas.len() - 1]);
    match spacing {
        SigmaSpacing::Default => in_sigmas.to_vec(),
        SigmaSpacing::Karras => karras(min, max, steps),
        SigmaSpacing::Exponential => exponential(min, max, steps),
    }
}

/// EulerDiscrete / EulerAncestralDiscrete / HeunDiscrete `set_timesteps`: float32 timesteps
/// (fractional for `linspace`), sigmas interpolated linearly in the sigma table, optionally
/// re-spaced (then timesteps come from `_sigma_to_t`), and a final sigma of 0 or `sigma_min`.
pub(super) fn euler_levels(
    cfg: &DiscreteSchedule,
    steps: usize,
    timestep_spacing: TimestepSpacing,
    spacing: SigmaSpacing,
) -> Result<Vec<Level>> {
    check_steps(cfg, steps)?;
    let tab = tables(cfg)?;
    let t = cfg.num_train_timesteps;
    let mut ts: Vec<f32> = match timestep_spacing {
        TimestepSpacing::Linspace => {
            np_linspace(0.0, (t - 1) as f64, steps).into_iter().rev().map(|x| x as f32).collect()
        }
        TimestepSpacing::Leading => {
            let ratio = t / steps;
            (0..steps).rev().map(|i| (i * ratio) as f32 + cfg.steps_offset as f32).collect()
        }
        TimestepSpacing::Trailing => {
            np_arange(t as f64, 0.0, -(t as f64 / steps as f64)).into_iter().map(|x| np_round(x) as f32 - 1.0).collect()
        }
    };
    let ts64: Vec<f64> = ts.iter().map(|&x| x as f64).collect();
    check_range(&tab, &ts64.iter().map(|x| x.floor()).collect::<Vec<_>>())?;
    let mut sigmas: Vec<f64> = ts.iter().map(|&x| np_interp_index(x as f64, &tab.sigmas)).collect();
    if spacing != SigmaSpacing::Default {
        sigmas = respace(&sigmas, steps, spacing);
        ts = sigmas.iter().map(|&s| sigma_to_t(s, &tab.log_sigmas) as f32).collect();
    }
    let last = match cfg.final_sigmas_type {
        FinalSigmas::Zero => 0.0,
        FinalSigmas::SigmaMin => tab.sigmas[0] as f64,
    };
    let mut levels: Vec<Level> = sigmas.iter().zip(&ts).map(|(&s, &t)| ve_level(s as f32, t as f64)).collect();
    levels.push(ve_level(last as f32, 0.0));
    Ok(levels)
}

/// DPMSolverMultistep `set_timesteps`: integer timesteps from `steps + 1` points with the last
/// dropped, sigmas read from the table; with re-spacing, timesteps from `_sigma_to_t` (rounded for
/// Karras unless the betas are `squaredcos_cap_v2`, then truncated by the int64 cast as diffusers does).
pub(super) fn dpm_levels(
    cfg: &DiscreteSchedule,
    steps: usize,
    timestep_spacing: TimestepSpacing,
    spacing: SigmaSpacing,
) -> Result<Vec<Level>> {
    check_steps(cfg, steps)?;
    let tab = tables(cfg)?;
    let t = cfg.num_train_timesteps;
    let levels_ts: Vec<f64>;
    let sigmas: Vec<f64>;
    if spacing == SigmaSpacing::Default {
        let ts: Vec<f64> = match timestep_spacing {
            TimestepSpacing::Linspace => {
                let mut v: Vec<f64> =
                    np_linspace(0.0, (t - 1) as f64, steps + 1).into_iter().rev().map(np_round).collect();
                v.pop();
                v
            }
            TimestepSpacing::Leading => {
                let ratio = t / (steps + 1);
                (1..=steps).rev().map(|i| (i * ratio + cfg.steps_offset) as f64).collect()
            }
            TimestepSpacing::Trailing => {
                np_arange(t as f64, 0.0, -(t as f64 / steps as f64)).into_iter().map(|x| np_round(x) - 1.0).collect()
            }
        };
        check_range(&tab, &ts)?;
        sigmas = ts.iter().map(|&x| np_interp_index(x, &tab.sigmas)).collect();
        levels_ts = ts;
    } else {
        let full: Vec<f64> = tab.sigmas.iter().rev().map(|&s| s as f64).collect();
        sigmas = respace(&full, steps, spacing);
        let round = spacing == SigmaSpacing::Karras && cfg.beta_schedule != BetaSchedule::SquaredcosCapV2;
        levels_ts = sigmas
            .iter()
            .map(|&s| {
                let x = sigma_to_t(s, &tab.log_sigmas);
                if round {
                    np_round(x)
                } else {
                    x.trunc()
                }
            })
            .collect();
    }
    let last = match cfg.final_sigmas_type {
        FinalSigmas::Zero => 0.0f32,
        FinalSigmas::SigmaMin => tab.sigmas[0],
    };
    let mut levels: Vec<Level> = sigmas.iter().zip(&levels_ts).map(|(&s, &t)| ve_level(s as f32, t)).collect();
    levels.push(ve_level(last, 0.0));
    Ok(levels)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sd() -> DiscreteSchedule {
        DiscreteSchedule {
            beta_start: 0.00085,
            beta_end: 0.012,
            beta_schedule: BetaSchedule::ScaledLinear,
            steps_offset: 1,
            ..DiscreteSchedule::default()
        }
    }

    #[test]
    fn sigma_to_t_inverts_the_table() {
        let tab = tables(&sd()).unwrap();
        for t in [0usize, 1, 17, 500, 998, 999] {
            let got = sigma_to_t(tab.sigmas[t] as f64, &tab.log_sigmas);
            assert!((got - t as f64).abs() < 1e-3, "t={t} got {got}");
        }
        // Below the table clamps to 0, above it to the last index.
        assert_eq!(sigma_to_t(1e-6, &tab.log_sigmas), 0.0);
        assert_eq!(sigma_to_t(1e6, &tab.log_sigmas), 999.0);
    }

    #[test]
    fn leading_spacing_adds_the_offset() {
        let l = ddim_levels(&sd(), 10, TimestepSpacing::Leading).unwrap();
        let ts: Vec<f64> = l.iter().map(|l| l.timestep).collect();
        assert_eq!(ts, vec![901.0, 801.0, 701.0, 601.0, 501.0, 401.0, 301.0, 201.0, 101.0, 1.0, -1.0]);
    }

    #[test]
    fn trailing_spacing_starts_at_the_last_train_step() {
        let l = ddpm_levels(&sd(), 4, TimestepSpacing::Trailing).unwrap();
        let ts: Vec<f64> = l.iter().map(|l| l.timestep).collect();
        assert_eq!(ts, vec![999.0, 749.0, 499.0, 249.0, -1.0]);
    }

    #[test]
    fn lcm_grid_is_drawn_from_the_skip_grid() {
        let l = lcm_levels(&sd(), 4).unwrap();
        let ts: Vec<f64> = l.iter().map(|l| l.timestep).collect();
        // origin timesteps 999, 979, ..., 19; indices floor(linspace(0, 50, 4, endpoint=False)) = 0, 12, 25, 37
        assert_eq!(ts, vec![999.0, 759.0, 499.0, 259.0, -1.0]);
        assert!(lcm_levels(&sd(), 51).is_err());
    }

    #[test]
    fn dpm_linspace_drops_the_last_of_steps_plus_one_points() {
        let l = dpm_levels(&sd(), 10, TimestepSpacing::Linspace, SigmaSpacing::Default).unwrap();
        let ts: Vec<f64> = l[..10].iter().map(|l| l.timestep).collect();
        assert_eq!(ts, vec![999.0, 899.0, 799.0, 699.0, 599.0, 500.0, 400.0, 300.0, 200.0, 100.0]);
        assert_eq!(l[10].sigma, 0.0);
    }

    #[test]
    fn bad_configs_are_errors() {
        let mut c = sd();
        c.steps_offset = 200;
        assert!(ddim_levels(&c, 10, TimestepSpacing::Leading).is_err());
        assert!(ddim_levels(&sd(), 0, TimestepSpacing::Leading).is_err());
        assert!(ddim_levels(&sd(), 1001, TimestepSpacing::Leading).is_err());
        let mut c = sd();
        c.beta_end = 2.0;
        assert!(euler_levels(&c, 10, TimestepSpacing::Linspace, SigmaSpacing::Default).is_err());
    }
}
