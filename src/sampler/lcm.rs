//! Consistency multistep sampling (LCMScheduler): take the model's clean prediction, then re-noise it
//! to the next level with fresh noise, `x' = alpha' x0 + sigma' z`; the last step returns the
//! prediction itself.

use super::common::denoise;
use super::Stepper;
use crate::denoiser::{Denoiser, Level, NoiseSource};
use crate::error::Result;

/// LCMScheduler's consistency boundary condition: the prediction becomes
/// `c_skip(t) x + c_out(t) x0` with `c_skip = sd^2 / ((k t)^2 + sd^2)`, `c_out = k t / sqrt((k t)^2 + sd^2)`
/// for `t = Level.timestep`, `k = timestep_scaling`, `sd = sigma_data`. It only matters near `t = 0`
/// (at `t = 19` it moves the result by ~1e-5) and assumes `timestep` is a discrete index.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ConsistencyBoundary {
    pub timestep_scaling: f64,
    pub sigma_data: f64,
}

impl Default for ConsistencyBoundary {
    /// diffusers' LCMScheduler values.
    fn default() -> Self {
        ConsistencyBoundary { timestep_scaling: 10.0, sigma_data: 0.5 }
    }
}

impl ConsistencyBoundary {
    fn scalings(&self, timestep: f64) -> (f64, f64) {
        let t = timestep * self.timestep_scaling;
        let sd2 = self.sigma_data * self.sigma_data;
        (sd2 / (t * t + sd2), t / (t * t + sd2).sqrt())
    }
}

pub(super) struct Lcm {
    boundary: Option<ConsistencyBoundary>,
    x0: Vec<f32>,
    z: Vec<f32>,
}

impl Lcm {
    pub(super) fn new(n: usize, boundary: Option<ConsistencyBoundary>) -> Self {
        Lcm { boundary, x0: vec![0.0f32; n], z: vec![0.0f32; n] }
    }
}

impl Stepper for Lcm {
    fn step(
        &mut self,
        den: &mut dyn Denoiser,
        levels: &[Level],
        i: usize,
        x: &mut [f32],
        noise: &mut dyn NoiseSource,
    ) -> Result<()> {
        let (cur, next) = (&levels[i], &levels[i + 1]);
        denoise(den, x, cur, i, &mut self.x0)?;
        let (c_skip, c_out) = self.boundary.map_or((0.0, 1.0), |b| b.scalings(cur.timestep));
        if next.sigma > 0.0 {
            noise.fill(i, &mut self.z)?;
            for ((x, &p), &z) in x.iter_mut().zip(&self.x0).zip(&self.z) {
                let d = c_out * p as f64 + c_skip * *x as f64;
                *x = (next.alpha * d + next.sigma * z as f64) as f32;
            }
        } else {
            for (x, &p) in x.iter_mut().zip(&self.x0) {
                let d = c_out * p as f64 + c_skip * *x as f64;
                *x = (next.alpha * d) as f32;
            }
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

    #[test]
    fn boundary_scalings_match_lcm_scheduler() {
        let b = ConsistencyBoundary::default();
        let (skip, out) = b.scalings(999.0);
        assert!(skip < 1e-7 && (out - 1.0).abs() < 1e-7);
        let (skip, out) = b.scalings(0.0);
        assert_eq!((skip, out), (1.0, 0.0));
    }
}
