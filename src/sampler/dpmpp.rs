//! DPM-Solver++(2M) and its SDE variant (Lu et al. 2022), as DPMSolverMultistepScheduler runs them
//! with `solver_order = 2`, `solver_type = "midpoint"`, `lower_order_final = True`.
//!
//! Written in alpha/sigma with `lambda = ln(alpha / sigma)`; `exp(-h)` is formed as the ratio
//! `sigma' alpha / (alpha' sigma)`, so a target with `sigma' = 0` or a start with `alpha = 0` gives exact
//! zeros rather than `ln 0`. The first step has no history and is first order; so is the last step
//! when it lands on clean data or the run has fewer than 15 steps (diffusers' `lower_order_final`).

use super::common::denoise;
use super::Stepper;
use crate::denoiser::{Denoiser, Level, NoiseSource};
use crate::error::Result;

/// DPM-Solver++(2M) as a [`Stepper`]; with `sde`, the stochastic variant, drawing noise on every
/// step that lands on a noisy level.
pub(super) struct DpmPp2m {
    sde: bool,
    x0: Vec<f32>,
    prev_x0: Vec<f32>,
    z: Vec<f32>,
}

impl DpmPp2m {
    pub(super) fn new(n: usize, sde: bool) -> Self {
        let z = if sde { vec![0.0f32; n] } else { Vec::new() };
        DpmPp2m { sde, x0: vec![0.0f32; n], prev_x0: vec![0.0f32; n], z }
    }
}

impl Stepper for DpmPp2m {
    fn step(
        &mut self,
        den: &mut dyn Denoiser,
        levels: &[Level],
        i: usize,
        x: &mut [f32],
        noise: &mut dyn NoiseSource,
    ) -> Result<()> {
        let total = levels.len() - 1;
        let (cur, next) = (&levels[i], &levels[i + 1]);
        denoise(den, x, cur, i, &mut self.x0)?;
        // exp(-h) with h = lambda' - lambda.
        let e = next.sigma * cur.alpha / (next.alpha * cur.sigma);
        let last = i + 1 == total;
        let second_order = i > 0 && !(last && (next.sigma == 0.0 || total < 15));
        // D1 weight 0.5 / r with r = h_prev / h; a previous level without signal gives r = inf.
        let d1 = if second_order {
            let prev = &levels[i - 1];
            let h = -e.ln();
            let h_prev = (cur.alpha * prev.sigma / (cur.sigma * prev.alpha)).ln();
            let w = 0.5 * h / h_prev;
            if w.is_finite() {
                w
            } else {
                0.0
            }
        } else {
            0.0
        };
        // x' = cx x + cd (x0 + w (x0 - prev_x0)) + std z
        let (cx, cd, std) = if self.sde {
            let e2 = e * e;
            (next.sigma / cur.sigma * e, next.alpha * (1.0 - e2), next.sigma * (1.0 - e2).max(0.0).sqrt())
        } else {
            (next.sigma / cur.sigma, next.alpha - cur.alpha * next.sigma / cur.sigma, 0.0)
        };
        let (k0, k1) = (cd * (1.0 + d1), cd * d1);
        let (x0, prev_x0) = (&self.x0, &self.prev_x0);
        if std > 0.0 {
            noise.fill(i, &mut self.z)?;
            for (((x, &p), &q), &z) in x.iter_mut().zip(x0).zip(prev_x0).zip(&self.z) {
                *x = (cx * *x as f64 + k0 * p as f64 - k1 * q as f64 + std * z as f64) as f32;
            }
        } else {
            for ((x, &p), &q) in x.iter_mut().zip(x0).zip(prev_x0) {
                *x = (cx * *x as f64 + k0 * p as f64 - k1 * q as f64) as f32;
            }
        }
        std::mem::swap(&mut self.x0, &mut self.prev_x0);
        Ok(())
    }

    fn denoised(&self) -> &[f32] {
        // The step's prediction was swapped into the history.
        &self.prev_x0
    }
}
