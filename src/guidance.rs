//! Classifier-free guidance as a wrapper of the network: `D = D_u + g (D_c - D_u)`.
//!
//! The conditional and unconditional halves run in one batched network call. Guidance is applied to
//! the clean-sample prediction; since `x0` is an affine function of the network output with the same
//! coefficients for both halves, this equals diffusers' guidance on epsilon / v / velocity.

use crate::error::{Error, Result};
use crate::model::{Network, PerSample};
use crate::sampler::{Denoiser, Level};

/// Per-sample conditioning of one generation.
#[derive(Clone, Debug, Default)]
pub struct Conditioning {
    /// One class label per sample; empty when the model has no class input.
    pub classes: Vec<i64>,
    /// `batch` values per conditioning input, input-major (the model's `cond_inputs` order).
    pub conds: Vec<f32>,
}

/// The network as the samplers see it, with guidance applied when it is active.
pub struct Guided<'a> {
    net: &'a mut Network,
    batch: usize,
    guidance: f32,
    /// Labels and conditions of the doubled batch: conditional half first, then the null class.
    classes2: Vec<i64>,
    conds2: Vec<f32>,
    cond: Conditioning,
    x2: Vec<f32>,
    out2: Vec<f32>,
    /// Network forward passes per sample so far, conditional and unconditional counted separately.
    pub evaluations: usize,
}

impl<'a> Guided<'a> {
    /// `guidance` ≤ 1 (and exactly 1) runs the conditional pass only.
    pub fn new(net: &'a mut Network, batch: usize, guidance: f32, cond: Conditioning) -> Result<Self> {
        let model = net.model().clone();
        let len = model.sample_len();
        if !guidance.is_finite() || guidance < 0.0 {
            return Err(Error::InvalidArgument(format!("guidance must be a finite number >= 0, got {guidance}")));
        }
        let guided = guidance != 1.0;
        let (mut classes2, mut conds2, mut x2, mut out2) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        if guided {
            let null = model.manifest().null_class().ok_or_else(|| {
                Error::InvalidArgument(format!(
                    "guidance {guidance} needs an unconditional prediction, but model `{}` has no null class \
                     (denoiser.class_input.null_class); use guidance 1", model.manifest().name))
            })?;
            classes2.extend_from_slice(&cond.classes);
            classes2.resize(2 * batch, null);
            let ncond = model.manifest().denoiser.cond_inputs.len();
            for k in 0..ncond {
                let v = &cond.conds[k * batch..(k + 1) * batch];
                conds2.extend_from_slice(v);
                conds2.extend_from_slice(v);
            }
            x2.resize(2 * batch * len, 0.0);
            out2.resize(2 * batch * len, 0.0);
        }
        Ok(Guided { net, batch, guidance, classes2, conds2, cond, x2, out2, evaluations: 0 })
    }
}

impl Denoiser for Guided<'_> {
    fn len(&self) -> usize {
        self.batch * self.net.model().sample_len()
    }

    fn denoise(&mut self, x: &[f32], level: &Level, _step: usize, x0: &mut [f32]) -> Result<()> {
        if self.guidance == 1.0 {
            self.evaluations += 1;
            let cond = PerSample { classes: &self.cond.classes, conds: &self.cond.conds };
            return self.net.denoise(x, self.batch, level, cond, x0);
        }
        let n = x.len();
        self.x2[..n].copy_from_slice(x);
        self.x2[n..].copy_from_slice(x);
        let cond = PerSample { classes: &self.classes2, conds: &self.conds2 };
        self.net.denoise(&self.x2, 2 * self.batch, level, cond, &mut self.out2)?;
        self.evaluations += 2;
        let (c, u) = self.out2.split_at(n);
        let g = self.guidance;
        for ((o, &c), &u) in x0.iter_mut().zip(c).zip(u) {
            *o = u + g * (c - u);
        }
        Ok(())
    }
}
