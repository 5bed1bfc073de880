//! Classifier-free guidance as a wrapper of the network: `D = D_u + g (D_c - D_u)`.
//!
//! The conditional and unconditional halves run in one batched network call. Guidance is applied to
//! the clean-sample prediction; since `x0` is an affine function of the network output with the same
//! coefficients for both halves, this equals diffusers' guidance on epsilon / v / velocity.
//!
//! Two training-free rules skip the unconditional half, each a single conditional pass instead:
//! - *adaptive guidance* (Castillo et al., "Adaptive Guidance: Training-free Acceleration of
//!   Conditional Diffusion Models"): once the conditional and guided predictions agree (cosine
//!   similarity at least γ for every sample of the batch), guidance stops for the rest of the run.
//!   The cosine is taken between clean-sample predictions, the denoiser's own output: there it rises
//!   steadily over a run (0.70 to 0.9997 on digits), while between the implied noise predictions it
//!   stays above 0.99 from the first step and would stop guidance at once;
//! - a *guidance interval* (Kynkäänniemi et al., "Applying Guidance in a Limited Interval Improves
//!   Sample and Distribution Quality"): guidance only where the noise level σ/α (k-diffusion's sigma)
//!   lies in `[lo, hi]`.

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
    /// `batch` context tensors (e.g. prompt embeddings); empty when the model has no context input.
    pub context: Vec<f32>,
    /// The unconditional branch's context (e.g. negative-prompt embeddings), as `context`.
    pub uncond_context: Vec<f32>,
    /// `batch` blocks of the sample input's extra channels; empty when it has none.
    pub extra: Vec<f32>,
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
    context2: Vec<f32>,
    extra2: Vec<f32>,
    cond: Conditioning,
    x2: Vec<f32>,
    out2: Vec<f32>,
    rules: GuidanceRules,
    /// Adaptive guidance has seen the predictions converge: conditional passes from now on.
    converged: bool,
    /// Network forward passes per sample so far, conditional and unconditional counted separately.
    pub evaluations: usize,
}

/// When guidance runs; both rules off by default.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct GuidanceRules {
    /// Adaptive guidance's threshold γ on the cosine similarity, in (0, 1].
    pub adaptive: Option<f32>,
    /// The interval of σ/α in which guidance runs.
    pub interval: Option<(f64, f64)>,
}

impl GuidanceRules {
    fn check(&self) -> Result<()> {
        if let Some(g) = self.adaptive {
            if !(g > 0.0 && g <= 1.0) {
                return Err(Error::InvalidArgument(format!("adaptive guidance threshold must be in (0, 1], got {g}")));
            }
        }
        if let Some((lo, hi)) = self.interval {
            if !(lo >= 0.0 && hi > lo) {
                return Err(Error::InvalidArgument(format!(
                    "guidance interval must be LO,HI with 0 <= LO < HI (in sigma), got {lo},{hi}"
                )));
            }
        }
        Ok(())
    }

    /// Whether guidance runs at `level` by the interval rule.
    pub fn in_interval(&self, level: &Level) -> bool {
        self.interval.is_none_or(|(lo, hi)| {
            let s = level.ve_sigma();
            lo <= s && s <= hi
        })
    }
}

/// The smallest cosine similarity between matching samples (`len` values each) of `a` and `b`.
pub fn min_cosine(a: &[f32], b: &[f32], len: usize) -> f64 {
    let mut worst = f64::INFINITY;
    for (a, b) in a.chunks(len.max(1)).zip(b.chunks(len.max(1))) {
        let (mut dot, mut na, mut nb) = (0.0f64, 0.0f64, 0.0f64);
        for (&a, &b) in a.iter().zip(b) {
            dot += a as f64 * b as f64;
            na += a as f64 * a as f64;
            nb += b as f64 * b as f64;
        }
        let cos = if na == 0.0 || nb == 0.0 { 1.0 } else { dot / (na.sqrt() * nb.sqrt()) };
        worst = worst.min(cos);
    }
    worst
}

impl Guidance {
    /// `guidance` 1 runs the conditional pass only.
    pub fn new(model: &Model, batch: usize, guidance: f32, cond: Conditioning, rules: GuidanceRules) -> Result<Self> {
        rules.check()?;
        let len = model.sample_len();
        if !guidance.is_finite() || guidance < 0.0 {
            return Err(Error::InvalidArgument(format!("guidance must be a finite number >= 0, got {guidance}")));
        }
        let guided = guidance != 1.0;
        let (mut classes2, mut conds2, mut x2, mut out2) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let (mut context2, mut extra2) = (Vec::new(), Vec::new());
        if guided {
            extra2.extend_from_slice(&cond.extra);
            extra2.extend_from_slice(&cond.extra);
            let d = &model.manifest().denoiser;
            let no_uncond = |what: &str| {
                Error::InvalidArgument(format!(
                    "guidance {guidance} needs an unconditional prediction, but model `{}` has {what}; use guidance 1",
                    model.manifest().name
                ))
            };
            if d.class_input.is_some() {
                let null = model
                    .manifest()
                    .null_class()
                    .ok_or_else(|| no_uncond("no null class (denoiser.class_input.null_class)"))?;
                classes2.extend_from_slice(&cond.classes);
                classes2.resize(2 * batch, null);
            } else if d.context_input.is_none() {
                return Err(no_uncond("no null class (no class input) and no context input"));
            }
            if d.context_input.is_some() {
                if cond.uncond_context.len() != cond.context.len() {
                    return Err(Error::InvalidArgument(format!(
                        "guidance needs an unconditional context as large as the context ({} values), got {}",
                        cond.context.len(),
                        cond.uncond_context.len()
                    )));
                }
                context2.extend_from_slice(&cond.context);
                context2.extend_from_slice(&cond.uncond_context);
            }
            let ncond = model.manifest().denoiser.cond_inputs.len();
            for k in 0..ncond {
                let v = &cond.conds[k * batch..(k + 1) * batch];
                conds2.extend_from_slice(v);
                conds2.extend_from_slice(v);
            }
            x2.resize(2 * batch * len, 0.0);
            out2.resize(2 * batch * len, 0.0);
        }
        Ok(Guidance {
            batch,
            sample_len: len,
            guidance,
            classes2,
            conds2,
            context2,
            extra2,
            cond,
            x2,
            out2,
            rules,
            converged: false,
            evaluations: 0,
        })
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
        if !self.run(x, level, Output::CleanSample, x0)? {
            return Ok(());
        }
        let g = &mut *self.g;
        let n = x.len();
        let (c, u) = g.out2.split_at(n);
        let w = g.guidance;
        for ((o, &c), &u) in x0.iter_mut().zip(c).zip(u) {
            *o = u + w * (c - u);
        }
        if let Some(gamma) = g.rules.adaptive {
            if min_cosine(&g.out2[..n], x0, g.sample_len) >= gamma as f64 {
                g.converged = true;
            }
        }
        Ok(())
    }

    /// torch's float16 guidance, `u + g (c - u)` with each operation rounded to float16 (the scale
    /// kept in float32, as torch keeps a Python scalar). Adaptive guidance is not offered here.
    fn predict_half(&mut self, x: &[f32], level: &Level, step: usize, out: &mut [f32]) -> Result<()> {
        if !self.net.model().half_output() || self.g.rules.adaptive.is_some() {
            return Err(Error::Internal(format!(
                "step {step}: float16 prediction of a float32 network or with adaptive guidance"
            )));
        }
        if self.run(x, level, Output::Network, out)? {
            let g = &*self.g;
            let (c, u) = g.out2.split_at(x.len());
            for ((o, &c), &u) in out.iter_mut().zip(c).zip(u) {
                *o = guide_half(u, c, g.guidance);
            }
        }
        Ok(())
    }
}

/// What a network call writes.
#[derive(Clone, Copy)]
enum Output {
    CleanSample,
    Network,
}

impl Guided<'_> {
    /// The conditional pass alone into `out` where guidance is off at `level` (returns false), else
    /// both halves in one call into the doubled batch's `out2` (returns true).
    fn run(&mut self, x: &[f32], level: &Level, what: Output, out: &mut [f32]) -> Result<bool> {
        let g = &mut *self.g;
        let call = |net: &mut Network, x: &[f32], n: usize, cond: PerSample<'_>, out: &mut [f32]| match what {
            Output::CleanSample => net.denoise(x, n, level, cond, out),
            Output::Network => net.predict(x, n, level, cond, out),
        };
        if g.guidance == 1.0 || g.converged || !g.rules.in_interval(level) {
            g.evaluations += 1;
            let cond = PerSample {
                classes: &g.cond.classes,
                conds: &g.cond.conds,
                context: &g.cond.context,
                extra: &g.cond.extra,
            };
            call(self.net, x, g.batch, cond, out)?;
            return Ok(false);
        }
        let n = x.len();
        g.x2[..n].copy_from_slice(x);
        g.x2[n..].copy_from_slice(x);
        let cond = PerSample { classes: &g.classes2, conds: &g.conds2, context: &g.context2, extra: &g.extra2 };
        call(self.net, &g.x2, 2 * g.batch, cond, &mut g.out2)?;
        g.evaluations += 2;
        Ok(true)
    }
}

/// `u + w (c - u)` for float16 `u` and `c`, as torch computes it.
fn guide_half(u: f32, c: f32, w: f32) -> f32 {
    let half = |v: f32| half::f16::from_f32(v).to_f32();
    half(u + half(w * half(c - u)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn level(alpha: f64, sigma: f64) -> Level {
        Level { alpha, sigma, timestep: 0.0 }
    }

    #[test]
    fn cosine_takes_the_worst_sample() {
        let a = [1.0f32, 0.0, 3.0, 4.0];
        assert!((min_cosine(&a, &a, 2) - 1.0).abs() < 1e-12);
        // First sample orthogonal, second identical: the batch's cosine is the first's.
        let b = [0.0f32, 2.0, 3.0, 4.0];
        assert!(min_cosine(&a, &b, 2).abs() < 1e-12);
        let c = [-1.0f32, 0.0, 6.0, 8.0];
        assert!((min_cosine(&a, &c, 2) + 1.0).abs() < 1e-12);
        assert_eq!(min_cosine(&[0.0; 2], &a[..2], 2), 1.0, "nothing to compare counts as agreement");
    }

    #[test]
    #[allow(clippy::excessive_precision)] // exact float16 values, as torch prints them
    fn float16_guidance_rounds_as_torch() {
        // torch 2.x: u + 7.5 * (c - u) on these float16 tensors (one rounding at the end would
        // give 16.328125 and -6.9453125).
        assert_eq!(guide_half(-0.537109375, 1.7119140625, 7.5), 16.34375);
        assert_eq!(guide_half(-0.482177734375, -1.34375, 7.5), -6.94140625);
    }

    #[test]
    fn interval_is_in_k_diffusion_sigma() {
        let rules = GuidanceRules { interval: Some((0.5, 2.0)), ..GuidanceRules::default() };
        assert!(rules.in_interval(&level(0.6, 0.6))); // sigma/alpha = 1
        assert!(!rules.in_interval(&level(0.3, 0.9))); // 3
        assert!(!rules.in_interval(&level(0.99, 0.1))); // 0.1
        assert!(GuidanceRules::default().in_interval(&level(0.3, 0.9)));
        for bad in [
            GuidanceRules { interval: Some((2.0, 1.0)), ..GuidanceRules::default() },
            GuidanceRules { interval: Some((f64::NAN, 1.0)), ..GuidanceRules::default() },
            GuidanceRules { adaptive: Some(0.0), ..GuidanceRules::default() },
            GuidanceRules { adaptive: Some(1.5), ..GuidanceRules::default() },
        ] {
            assert!(bad.check().is_err(), "{bad:?}");
        }
    }
}
