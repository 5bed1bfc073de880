//! Heun's second-order method (Karras et al. 2022, Algorithm 1 without churn), as HeunDiscrete and
//! FlowMatchHeunDiscrete run it: an Euler step, a second denoiser call at the target level, and the
//! step redone with the averaged slope; the step onto a clean level stays first order.
//!
//! Unlike the Euler step, Heun's result depends on the time variable the ODE is integrated in. We use
//! the one diffusers uses for the schedule at hand: variance-exploding coordinates (`x / alpha`,
//! `sigma / alpha`) in general, and flow coordinates (`x / (alpha + sigma)`, `sigma / (alpha + sigma)`)
//! when every level has `alpha + sigma = 1`, i.e. a rectified-flow schedule. In both the ODE reads
//! `dx/ds = (x - x0) / s`.

use super::common::denoise;
use super::Stepper;
use crate::denoiser::{Denoiser, Level, NoiseSource};
use crate::error::{Error, Result};

/// `(c, s)`: the integration coordinates are `x * c` and time `s`.
fn coords(l: &Level, flow: bool) -> (f64, f64) {
    let norm = if flow { l.alpha + l.sigma } else { l.alpha };
    (1.0 / norm, l.sigma / norm)
}

pub(super) struct Heun {
    flow: bool,
    x0: Vec<f32>,
    x2: Vec<f32>,
    x0b: Vec<f32>,
}

impl Heun {
    pub(super) fn new(n: usize, levels: &[Level]) -> Result<Self> {
        let flow = levels.iter().all(|l| (l.alpha + l.sigma - 1.0).abs() < 1e-6);
        if !flow && levels.first().is_some_and(|l| l.alpha == 0.0) {
            return Err(Error::InvalidArgument(
                "heun integrates in sigma/alpha and needs alpha > 0 at the first level (except on flow schedules)"
                    .into(),
            ));
        }
        Ok(Heun { flow, x0: vec![0.0f32; n], x2: vec![0.0f32; n], x0b: vec![0.0f32; n] })
    }
}

impl Stepper for Heun {
    fn step(
        &mut self,
        den: &mut dyn Denoiser,
        levels: &[Level],
        i: usize,
        x: &mut [f32],
        _noise: &mut dyn NoiseSource,
    ) -> Result<()> {
        let (cur, next) = (&levels[i], &levels[i + 1]);
        let ((c, s), (c1, s1)) = (coords(cur, self.flow), coords(next, self.flow));
        denoise(den, x, cur, i, &mut self.x0)?;
        let dt = s1 - s;
        if next.sigma == 0.0 {
            // Euler onto the clean level lands on the prediction itself.
            for (x, &p) in x.iter_mut().zip(&self.x0) {
                *x = (next.alpha * p as f64) as f32;
            }
            return Ok(());
        }
        for ((x2, &x), &p) in self.x2.iter_mut().zip(x.iter()).zip(&self.x0) {
            let xt = x as f64 * c;
            *x2 = ((xt + dt * (xt - p as f64) / s) / c1) as f32;
        }
        denoise(den, &self.x2, next, i, &mut self.x0b)?;
        for (((x, &x2), &p), &q) in x.iter_mut().zip(&self.x2).zip(&self.x0).zip(&self.x0b) {
            let xt = *x as f64 * c;
            let d1 = (xt - p as f64) / s;
            let d2 = (x2 as f64 * c1 - q as f64) / s1;
            *x = ((xt + dt * 0.5 * (d1 + d2)) / c1) as f32;
        }
        Ok(())
    }

    fn denoised(&self) -> &[f32] {
        &self.x0
    }
}
