//! Steps that do diffusers' arithmetic on a float16 network output, so that a float16 export gives
//! the images diffusers' pipelines give (to float32 rounding) rather than ones a float16 rounding
//! apart. Used for epsilon-prediction networks whose output is float16.
//!
//! torch computes a 0-dim float32 tensor (a scheduler's coefficient) times a float16 tensor in
//! float16: the coefficient is cast to float16 and the product rounded to float16. Where those
//! products occur, and where a scheduler casts its sample back to float16, depends on the scheduler:
//! - DPMSolverMultistep and LCM: only in the clean-sample estimate `(x - sigma eps) / alpha`; the
//!   rest of their step is float32 arithmetic on that estimate, so drt's own steppers run on it;
//! - DDIM (eta 0): in that estimate and in the direction term `sigma' eps`;
//! - EulerDiscrete: in variance-exploding coordinates, `x0 = x - sigma eps`, and the sample is cast
//!   to float16 after every step, its scaled network input with it.
//!
//! The guidance combination is float16 too: see `Guided::predict_half`.

use half::f16;

use super::registry::SamplerKind;
use super::{Denoiser, Level, NoiseSource, Stepper};
use crate::error::{Error, Result};

fn round(v: f32) -> f32 {
    f16::from_f32(v).to_f32()
}

/// `c · e` for a float32 scalar `c` and a float16 value `e`, as torch computes it.
fn times(c: f64, e: f32) -> f32 {
    round(round(c as f32) * e)
}

/// diffusers' clean-sample estimate of an epsilon output `eps` at `l`: `(x - sigma eps) / alpha`.
fn clean(l: &Level, x: &[f32], eps: &[f32], x0: &mut [f32]) {
    let a = l.alpha as f32;
    for ((o, &x), &e) in x0.iter_mut().zip(x).zip(eps) {
        *o = (x - times(l.sigma, e)) / a;
    }
}

fn predict(den: &mut dyn Denoiser, x: &[f32], level: &Level, step: usize, eps: &mut [f32]) -> Result<()> {
    den.predict_half(x, level, step, eps)?;
    if eps.iter().any(|v| !v.is_finite()) {
        return Err(Error::NonFinite { step });
    }
    Ok(())
}

/// `kind`'s stepper `plain` with diffusers' float16 arithmetic where this module has it (DDIM with
/// eta 0, Euler, DPM-Solver++ 2M, LCM); `plain` itself for the other samplers.
pub(super) fn stepper(kind: SamplerKind, plain: Box<dyn Stepper>, n: usize, eta: f64) -> Box<dyn Stepper> {
    let how = match kind {
        SamplerKind::DpmPp2m | SamplerKind::Lcm => How::Clean(plain),
        SamplerKind::Ddim if eta == 0.0 => How::Ddim { x0: vec![0.0; n] },
        SamplerKind::Euler => How::Euler { ve: vec![0.0; n], input: vec![0.0; n], x0: vec![0.0; n] },
        _ => return plain,
    };
    Box::new(Half { how, eps: vec![0.0; n] })
}

enum How {
    /// A clean-sample stepper fed diffusers' float16 estimate (it keeps its own `x0`).
    Clean(Box<dyn Stepper>),
    Ddim {
        x0: Vec<f32>,
    },
    /// The float16 sample in variance-exploding coordinates and the network input made from it.
    Euler {
        ve: Vec<f32>,
        input: Vec<f32>,
        x0: Vec<f32>,
    },
}

struct Half {
    how: How,
    eps: Vec<f32>,
}

/// The denoiser a [`How::Clean`] stepper calls.
struct Estimate<'a> {
    den: &'a mut dyn Denoiser,
    eps: &'a mut [f32],
}

impl Denoiser for Estimate<'_> {
    fn len(&self) -> usize {
        self.den.len()
    }

    fn denoise(&mut self, x: &[f32], level: &Level, step: usize, x0: &mut [f32]) -> Result<()> {
        predict(self.den, x, level, step, self.eps)?;
        clean(level, x, self.eps, x0);
        Ok(())
    }
}

impl Stepper for Half {
    fn step(
        &mut self,
        den: &mut dyn Denoiser,
        levels: &[Level],
        i: usize,
        x: &mut [f32],
        noise: &mut dyn NoiseSource,
    ) -> Result<()> {
        let (cur, next) = (&levels[i], &levels[i + 1]);
        match &mut self.how {
            How::Clean(inner) => inner.step(&mut Estimate { den, eps: &mut self.eps }, levels, i, x, noise),
            How::Ddim { x0 } => {
                predict(den, x, cur, i, &mut self.eps)?;
                clean(cur, x, &self.eps, x0);
                let a1 = next.alpha as f32;
                for ((x, &x0), &e) in x.iter_mut().zip(x0.iter()).zip(&self.eps) {
                    *x = a1 * x0 + times(next.sigma, e);
                }
                Ok(())
            }
            How::Euler { ve, input, x0 } => {
                let (s, s1) = (cur.ve_sigma(), next.ve_sigma());
                let (a, a1) = (cur.alpha as f32, next.alpha as f32);
                // The first step starts from float32 latents, later ones from the float16 sample the
                // step before left (which `x` holds exactly, scaled by alpha).
                let scale = (s * s + 1.0).sqrt() as f32;
                for ((v, i_), &x) in ve.iter_mut().zip(input.iter_mut()).zip(x.iter()) {
                    *v = if i == 0 { x / a } else { round(x / a) };
                    *i_ = round(*v / scale);
                }
                predict(den, input, cur, i, &mut self.eps)?;
                let (s32, dt) = (s as f32, (s1 - s) as f32);
                for (((x, x0), &v), &e) in x.iter_mut().zip(x0.iter_mut()).zip(ve.iter()).zip(&self.eps) {
                    *x0 = v - times(s, e);
                    let derivative = (v - *x0) / s32;
                    *x = round(v + derivative * dt) * a1;
                }
                Ok(())
            }
        }
    }

    fn denoised(&self) -> &[f32] {
        match &self.how {
            How::Clean(inner) => inner.denoised(),
            How::Ddim { x0 } | How::Euler { x0, .. } => x0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[allow(clippy::excessive_precision)] // exact float16 values, as torch prints them
    fn products_round_as_torch_rounds_them() {
        // torch 2.x: torch.tensor(0.7071234567) * torch.tensor([..], dtype=torch.float16).
        let e = [1.234375f32, -3.140625, 0.09991455078125, 1000.5];
        let want = [0.87255859375f32, -2.220703125, 0.07061767578125, 707.5];
        for (e, want) in e.into_iter().zip(want) {
            assert_eq!(times(0.7071234567, e), want, "{e}");
        }
        // Rounding the product alone (the coefficient kept in float32) gives another value here.
        assert_ne!(round(0.7071234567f32 * 1.234375), 0.87255859375);
    }
}
