//! Classifier-free guidance as a wrapper of the network: `D = D_u + g (D_c - D_u)`.
//!
//! The conditional and unconditional halves run in one batched network call. Guidance is applied to
//! the clean-sample prediction; since `x0` is an affine function of the network output with the same
//! coefficients for both halves, this equals diffusers' guidance on epsilon / v / velocity.

use crate::error::{Error, Result};
use crate::model::{Model, Network, PerSample};
use crate::sampler::{Denoiser, Level};

/// Per-sample conditioning of one generation.
#[derive(Clone, Debug, Default)]
pub struct Conditioning {
    /// One class label per sample; empty when the model has no class input.
    pub classes: Vec<i64>,
    /// `batch` values per conditioning input, input-major (the model's `cond_inputs` order).
    pub conds: Vec<f32>,
}

/// Classifier-free guidance state of one generation: the doubled batch's labels and the scratch of
/// the batched call. Borrowed together with the network as a [`Guided`] denoiser for each step.
pub struct Guidance {
    batch: usize,
    sample_len: usize,
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

impl Guidance {
    /// `guidance` 1 runs the conditional pass only.
    pub fn new(model: &Model, batch: usize, guidance: f32, cond: Conditioning) -> Result<Self> {
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
        Ok(Guidance { batch, sample_len: len, guidance, classes2, conds2, cond, x2, out2, evaluations: 0 })
    }

    /// The guidance scale (1 = conditional pass only).
    pub fn scale(&self) -> f32 {
        self.guidance
    }

    /// The denoiser the samplers call: this guidance over `net`.
    pub fn over<'a>(&'a mut self, net: &'a mut Network) -> Guided<'a> {
        Guided { net, g: self }
    }
}

/// The network as the samplers see it, with guidance applied when it is active.
pub struct Guided<'a> {
    net: &'a mut Network,
    g: &'a mut Guidance,
}

impl Denoiser for Guided<'_> {
    fn len(&self) -> usize {
        self.g.batch * self.g.sample_len
    }

    fn denoise(&mut self, x: &[f32], level: &Level, _step: usize, x0: &mut [f32]) -> Result<()> {
        let g = &mut *self.g;
        if g.guidance == 1.0 {
            g.evaluations += 1;
            let cond = PerSample { classes: &g.cond.classes, conds: &g.cond.conds };
            return self.net.denoise(x, g.batch, level, cond, x0);
        }
        let n = x.len();
        g.x2[..n].copy_from_slice(x);
        g.x2[n..].copy_from_slice(x);
        let cond = PerSample { classes: &g.classes2, conds: &g.conds2 };
        self.net.denoise(&g.x2, 2 * g.batch, level, cond, &mut g.out2)?;
        g.evaluations += 2;
        let (c, u) = g.out2.split_at(n);
        let w = g.guidance;
        for ((o, &c), &u) in x0.iter_mut().zip(c).zip(u) {
            *o = u + w * (c - u);
        }
        Ok(())
    }
}
