//! First-order samplers: one denoiser call per step, optionally re-injecting noise.
//!
//! All of them are one update written in alpha/sigma form: with `eps = (x - alpha x0) / sigma`,
//! `x' = alpha' x0 + sqrt(sigma'^2 - s^2) eps + s z`, where `s^2 = eta^2 sigma'^2 v / sigma^2` and
//! `v = sigma^2 - (alpha / alpha')^2 sigma'^2` is the variance of the forward step between the levels.
//! `eta = 0` is DDIM, which is also k-diffusion's Euler step in variance-exploding coordinates and
//! FlowMatchEuler's step for `alpha = 1 - t`; `eta = 1` is the DDPM posterior (`fixed_small`
//! variance), which is also Euler-ancestral's `sigma_up`/`sigma_down` split. The form stays finite
//! where `alpha = 0` (a flow schedule's start) because nothing divides by `alpha`.

use super::common::{axpby, axpbypcz, denoise};
use super::Stepper;
use crate::denoiser::{Denoiser, Level, NoiseSource};
use crate::error::{Error, Result};

/// `(coefficient of x, coefficient of x0, noise std)` of one step from `cur` to `next`.
pub(super) fn step_coefficients(cur: &Level, next: &Level, eta: f64) -> (f64, f64, f64) {
    let (a, s, a1, s1) = (cur.alpha, cur.sigma, next.alpha, next.sigma);
    let std = if eta > 0.0 {
        let ratio = a / a1;
        let v = (s * s - ratio * ratio * s1 * s1).max(0.0);
        eta * s1 * v.sqrt() / s
    } else {
        0.0
    };
    let dir = (s1 * s1 - std * std).max(0.0).sqrt();
    (dir / s, a1 - dir * a / s, std)
}

/// The first-order update as a [`Stepper`]; draws noise (through `noise.fill(step, ..)`) only on
/// steps whose noise term is non-zero, i.e. `eta > 0` and a noisy target level.
pub(super) struct FirstOrder {
    eta: f64,
    x0: Vec<f32>,
    z: Vec<f32>,
}

impl FirstOrder {
    pub(super) fn new(n: usize, eta: f64) -> Result<Self> {
        if !(eta >= 0.0 && eta.is_finite()) {
            return Err(Error::InvalidArgument(format!("eta must be a finite value >= 0, got {eta}")));
        }
        let z = if eta > 0.0 { vec![0.0f32; n] } else { Vec::new() };
        Ok(FirstOrder { eta, x0: vec![0.0f32; n], z })
    }
}

impl Stepper for FirstOrder {
    fn step(
        &mut self,
        den: &mut dyn Denoiser,
        levels: &[Level],
        i: usize,
        x: &mut [f32],
        noise: &mut dyn NoiseSource,
    ) -> Result<()> {
        denoise(den, x, &levels[i], i, &mut self.x0)?;
        let (cx, cx0, std) = step_coefficients(&levels[i], &levels[i + 1], self.eta);
        if std > 0.0 {
            noise.fill(i, &mut self.z)?;
            axpbypcz(x, cx, cx0, &self.x0, std, &self.z);
        } else {
            axpby(x, cx, cx0, &self.x0);
        }
        Ok(())
    }

    fn denoised(&self) -> &[f32] {
        &self.x0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vp(acp: f64) -> Level {
        Level { alpha: acp.sqrt(), sigma: (1.0 - acp).sqrt(), timestep: 0.0 }
    }

    #[test]
    fn eta_zero_is_the_ddim_step() {
        let (cur, next) = (vp(0.3), vp(0.6));
        let (cx, cx0, std) = step_coefficients(&cur, &next, 0.0);
        assert_eq!(std, 0.0);
        assert!((cx - next.sigma / cur.sigma).abs() < 1e-15);
        assert!((cx0 - (next.alpha - cur.alpha * next.sigma / cur.sigma)).abs() < 1e-15);
    }

    #[test]
    fn eta_one_is_the_ddpm_posterior() {
        let (acp, acp1) = (0.3f64, 0.6f64);
        let (cx, cx0, std) = step_coefficients(&vp(acp), &vp(acp1), 1.0);
        let (alpha_t, beta_t) = (acp / acp1, 1.0 - acp / acp1);
        assert!((cx - alpha_t.sqrt() * (1.0 - acp1) / (1.0 - acp)).abs() < 1e-14);
        assert!((cx0 - acp1.sqrt() * beta_t / (1.0 - acp)).abs() < 1e-14);
        assert!((std * std - (1.0 - acp1) / (1.0 - acp) * beta_t).abs() < 1e-14);
    }

    #[test]
    fn eta_one_in_ve_coordinates_is_euler_ancestral() {
        // alpha = 1: sigma_up^2 = s1^2 (s^2 - s1^2) / s^2, sigma_down^2 = s1^2 - sigma_up^2.
        let (s, s1) = (3.0f64, 1.5f64);
        let cur = Level { alpha: 1.0, sigma: s, timestep: 0.0 };
        let next = Level { alpha: 1.0, sigma: s1, timestep: 0.0 };
        let (cx, cx0, std) = step_coefficients(&cur, &next, 1.0);
        let up = (s1 * s1 * (s * s - s1 * s1) / (s * s)).sqrt();
        let down = (s1 * s1 - up * up).sqrt();
        assert!((std - up).abs() < 1e-14);
        assert!((cx - down / s).abs() < 1e-14);
        assert!((cx0 - (1.0 - down / s)).abs() < 1e-14);
    }

    #[test]
    fn flow_start_with_zero_alpha_stays_finite() {
        let cur = Level { alpha: 0.0, sigma: 1.0, timestep: 1.0 };
        let next = Level { alpha: 0.25, sigma: 0.75, timestep: 0.75 };
        for eta in [0.0, 1.0] {
            let (cx, cx0, std) = step_coefficients(&cur, &next, eta);
            assert!(cx.is_finite() && cx0.is_finite() && std.is_finite());
        }
        let (cx, cx0, _) = step_coefficients(&cur, &next, 0.0);
        assert!((cx - 0.75).abs() < 1e-15 && (cx0 - 0.25).abs() < 1e-15);
    }
}
