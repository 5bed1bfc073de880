//! The two steppers whose float16 arithmetic reaches beyond the clean-sample estimate (see
//! `crate::denoiser::half` for the rounding rules and which diffusers schedulers do what): DDIM
//! with eta 0, which scales the noise prediction itself, and EulerDiscrete, which steps a float16
//! sample in variance-exploding coordinates. DPM-Solver++ 2M and LCM need no stepper of their own:
//! over a float16 run's denoiser, their ordinary steps are diffusers' arithmetic.

use super::Stepper;
use crate::denoiser::half::{clean_in_place, round, times};
use crate::denoiser::{Denoiser, Level, NoiseSource};
use crate::error::{Error, Result};

fn epsilon(den: &mut dyn Denoiser, x: &[f32], level: &Level, step: usize, eps: &mut [f32]) -> Result<()> {
    den.epsilon(x, level, step, eps)?;
    if eps.iter().any(|v| !v.is_finite()) {
        return Err(Error::NonFinite { step });
    }
    Ok(())
}

/// DDIM (eta 0) on `n` values: `x' = alpha' x0 + sigma' eps`, the direction term a float16 product.
pub(super) fn ddim(n: usize) -> Box<dyn Stepper> {
    Box::new(Ddim { eps: vec![0.0; n], x0: vec![0.0; n] })
}

/// EulerDiscrete on `n` values, its sample kept in float16 between steps.
pub(super) fn euler(n: usize) -> Box<dyn Stepper> {
    Box::new(Euler { eps: vec![0.0; n], ve: vec![0.0; n], input: vec![0.0; n], x0: vec![0.0; n] })
}

struct Ddim {
    eps: Vec<f32>,
    x0: Vec<f32>,
}

impl Stepper for Ddim {
    fn step(
        &mut self,
        den: &mut dyn Denoiser,
        levels: &[Level],
        i: usize,
        x: &mut [f32],
        _: &mut dyn NoiseSource,
    ) -> Result<()> {
        let (cur, next) = (&levels[i], &levels[i + 1]);
        epsilon(den, x, cur, i, &mut self.eps)?;
        self.x0.copy_from_slice(&self.eps);
        clean_in_place(cur, x, &mut self.x0);
        let a1 = next.alpha as f32;
        for ((x, &x0), &e) in x.iter_mut().zip(&self.x0).zip(&self.eps) {
            *x = a1 * x0 + times(next.sigma, e);
        }
        Ok(())
    }

    fn denoised(&self) -> &[f32] {
        &self.x0
    }
}

/// The float16 sample in variance-exploding coordinates, the network input made from it, and the
/// clean-sample estimate.
struct Euler {
    eps: Vec<f32>,
    ve: Vec<f32>,
    input: Vec<f32>,
    x0: Vec<f32>,
}

impl Stepper for Euler {
    fn step(
        &mut self,
        den: &mut dyn Denoiser,
        levels: &[Level],
        i: usize,
        x: &mut [f32],
        _: &mut dyn NoiseSource,
    ) -> Result<()> {
        let (cur, next) = (&levels[i], &levels[i + 1]);
        let (s, s1) = (cur.ve_sigma(), next.ve_sigma());
        let (a, a1) = (cur.alpha as f32, next.alpha as f32);
        // The first step starts from float32 latents, later ones from the float16 sample the
        // step before left (which `x` holds exactly, scaled by alpha).
        let scale = (s * s + 1.0).sqrt() as f32;
        for ((v, input), &x) in self.ve.iter_mut().zip(self.input.iter_mut()).zip(x.iter()) {
            *v = if i == 0 { x / a } else { round(x / a) };
            *input = round(*v / scale);
        }
        epsilon(den, &self.input, cur, i, &mut self.eps)?;
        let (s32, dt) = (s as f32, (s1 - s) as f32);
        for (((x, x0), &v), &e) in x.iter_mut().zip(self.x0.iter_mut()).zip(&self.ve).zip(&self.eps) {
            *x0 = v - times(s, e);
            let derivative = (v - *x0) / s32;
            *x = round(v + derivative * dt) * a1;
        }
        Ok(())
    }

    fn denoised(&self) -> &[f32] {
        &self.x0
    }
}
