//! Classifier-free guidance as a wrapper of the network: `D = D_u + g (D_c - D_u)`.
//!
//! The conditional and unconditional halves run in one batched network call, and are combined on
//! the network's own output (epsilon, v, velocity or x0) as diffusers combines them, in the run's
//! arithmetic ([`Precision`]), before it becomes the clean-sample prediction. The same code serves
//! [`Denoiser::denoise`] and [`Denoiser::epsilon`]; it wraps any [`Predictor`].
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

use crate::denoiser::{Denoiser, Level, Precision};
use crate::error::Result;
use crate::model::{PerSample, Predictor};

/// Per-sample conditioning of one generation.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Conditioning {
    /// One class label per sample; empty when the model has no class input.
    pub classes: Vec<i64>,
    /// `batch` values per conditioning input, input-major (the model's `cond_inputs` order).
    pub conds: Vec<f32>,
    /// `batch` context tensors (e.g. prompt embeddings); empty when the model has no context input.
    pub context: Vec<f32>,
    /// `batch` blocks of the sample input's extra channels; empty when it has none.
    pub extra: Vec<f32>,
    /// Per tensor input (the model's `tensor_inputs` order), `batch` tensors one after another.
    pub tensors: Vec<Vec<f32>>,
}

impl Conditioning {
    pub fn per_sample(&self) -> PerSample<'_> {
        PerSample {
            classes: &self.classes,
            conds: &self.conds,
            context: &self.context,
            extra: &self.extra,
            tensors: &self.tensors,
        }
    }

    /// The doubled batch of one guided call: these `batch` samples, then `other`'s.
    fn pair(&self, other: &Conditioning, batch: usize) -> Conditioning {
        let cat = |a: &[f32], b: &[f32]| [a, b].concat();
        // Input-major: each input's values for the doubled batch lie together.
        let conds = self.conds.chunks(batch.max(1)).zip(other.conds.chunks(batch.max(1))).flat_map(|(a, b)| cat(a, b));
        Conditioning {
            classes: [&self.classes[..], &other.classes].concat(),
            conds: conds.collect(),
            context: cat(&self.context, &other.context),
            extra: cat(&self.extra, &other.extra),
            tensors: self.tensors.iter().zip(&other.tensors).map(|(a, b)| cat(a, b)).collect(),
        }
    }
}

/// When guidance runs; both rules off by default. The request check holds them to their limits.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct GuidanceRules {
    /// Adaptive guidance's threshold γ on the cosine similarity, in (0, 1].
    pub adaptive: Option<f32>,
    /// The interval of σ/α in which guidance runs.
    pub interval: Option<(f64, f64)>,
}

impl GuidanceRules {
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

/// Classifier-free guidance state of one generation: the doubled batch's conditioning and the
/// scratch of the batched call. Borrowed together with the network as a [`Guided`] denoiser for
/// each step.
pub struct Guidance {
    batch: usize,
    sample_len: usize,
    scale: f32,
    precision: Precision,
    rules: GuidanceRules,
    cond: Conditioning,
    /// The conditional half and then the unconditional one; `None` at scale 1.
    pair: Option<Conditioning>,
    x2: Vec<f32>,
    out2: Vec<f32>,
    /// Adaptive guidance has seen the predictions converge: conditional passes from now on.
    converged: bool,
    /// Network forward passes per sample so far, conditional and unconditional counted separately.
    pub evaluations: usize,
}

impl Guidance {
    /// Guidance at `scale` for `batch` samples of `sample_len` values, conditioned by `cond`, with
    /// `uncond` the unconditional branch (`None`: the conditional pass only, whatever the scale).
    /// The request check has made sure the values fit one another.
    pub fn new(
        batch: usize,
        sample_len: usize,
        scale: f32,
        rules: GuidanceRules,
        precision: Precision,
        cond: Conditioning,
        uncond: Option<Conditioning>,
    ) -> Self {
        let pair = uncond.filter(|_| scale != 1.0).map(|u| cond.pair(&u, batch));
        let scratch = if pair.is_some() { 2 * batch * sample_len } else { 0 };
        Guidance {
            batch,
            sample_len,
            scale,
            precision,
            rules,
            cond,
            pair,
            x2: vec![0.0; scratch],
            out2: vec![0.0; scratch],
            converged: false,
            evaluations: 0,
        }
    }

    /// The guidance scale (1 = conditional pass only).
    pub fn scale(&self) -> f32 {
        self.scale
    }

    /// The denoiser the samplers call: this guidance over `net`.
    pub fn over<'a>(&'a mut self, net: &'a mut dyn Predictor) -> Guided<'a> {
        Guided { net, g: self }
    }
}

/// The network as the samplers see it, with guidance applied when it is active.
pub struct Guided<'a> {
    net: &'a mut dyn Predictor,
    g: &'a mut Guidance,
}

impl Guided<'_> {
    /// The guided network output for `x` at `level`, into `out`: the conditional pass alone where
    /// guidance is off, else both halves in one call, combined in the run's precision. Returns
    /// whether guidance ran.
    fn guided_output(&mut self, x: &[f32], level: &Level, out: &mut [f32]) -> Result<bool> {
        let g = &mut *self.g;
        match &g.pair {
            Some(pair) if !g.converged && g.rules.in_interval(level) => {
                let n = x.len();
                g.x2[..n].copy_from_slice(x);
                g.x2[n..].copy_from_slice(x);
                self.net.predict(&g.x2, 2 * g.batch, level, pair.per_sample(), &mut g.out2)?;
                g.evaluations += 2;
                let (c, u) = g.out2.split_at(n);
                for ((o, &c), &u) in out.iter_mut().zip(c).zip(u) {
                    *o = g.precision.guide(u, c, g.scale);
                }
                Ok(true)
            }
            _ => {
                g.evaluations += 1;
                self.net.predict(x, g.batch, level, g.cond.per_sample(), out)?;
                Ok(false)
            }
        }
    }
}

impl Denoiser for Guided<'_> {
    fn len(&self) -> usize {
        self.g.batch * self.g.sample_len
    }

    fn denoise(&mut self, x: &[f32], level: &Level, _step: usize, x0: &mut [f32]) -> Result<()> {
        let guided = self.guided_output(x, level, x0)?;
        let precision = self.g.precision;
        self.net.to_x0(precision, level, x, x0)?;
        if let (true, Some(gamma)) = (guided, self.g.rules.adaptive) {
            // The cosine is taken between clean-sample predictions (see the module's comment).
            let conditional = &mut self.g.out2[..x.len()];
            self.net.to_x0(precision, level, x, conditional)?;
            if min_cosine(conditional, x0, self.g.sample_len) >= gamma as f64 {
                self.g.converged = true;
            }
        }
        Ok(())
    }

    fn epsilon(&mut self, x: &[f32], level: &Level, _step: usize, eps: &mut [f32]) -> Result<()> {
        self.guided_output(x, level, eps).map(|_| ())
    }
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
    fn interval_is_in_k_diffusion_sigma() {
        let rules = GuidanceRules { interval: Some((0.5, 2.0)), ..GuidanceRules::default() };
        assert!(rules.in_interval(&level(0.6, 0.6))); // sigma/alpha = 1
        assert!(!rules.in_interval(&level(0.3, 0.9))); // 3
        assert!(!rules.in_interval(&level(0.99, 0.1))); // 0.1
        assert!(GuidanceRules::default().in_interval(&level(0.3, 0.9)));
    }

    /// A network that predicts each sample's class label (and, as a clean-sample model, takes the
    /// prediction as x0), recording the batches it was called with.
    struct Labels {
        calls: Vec<Vec<i64>>,
    }

    impl Predictor for Labels {
        fn sample_len(&self) -> usize {
            2
        }
        fn predict(&mut self, _x: &[f32], n: usize, _l: &Level, cond: PerSample<'_>, out: &mut [f32]) -> Result<()> {
            assert_eq!(cond.classes.len(), n);
            self.calls.push(cond.classes.to_vec());
            for (o, c) in out.chunks_mut(2).zip(cond.classes) {
                o.fill(*c as f32);
            }
            Ok(())
        }
        fn to_x0(&self, _: Precision, _: &Level, _: &[f32], _: &mut [f32]) -> Result<()> {
            Ok(())
        }
    }

    /// Guidance wraps any predictor: one doubled call, `u + w (c - u)`, and a single pass where
    /// the interval turns it off.
    #[test]
    fn guidance_combines_the_halves_of_one_call() {
        let with = |classes: Vec<i64>| Conditioning { classes, ..Conditioning::default() };
        let rules = GuidanceRules { interval: Some((0.0, 2.0)), ..GuidanceRules::default() };
        let mut g = Guidance::new(2, 2, 3.0, rules, Precision::Float32, with(vec![1, 4]), Some(with(vec![10, 10])));
        let mut net = Labels { calls: Vec::new() };
        let mut x0 = [0f32; 4];
        g.over(&mut net).denoise(&[0.0; 4], &level(1.0, 1.0), 0, &mut x0).expect("guided");
        assert_eq!(x0, [-17.0, -17.0, -8.0, -8.0], "10 + 3 (1 - 10) and 10 + 3 (4 - 10)");
        g.over(&mut net).denoise(&[0.0; 4], &level(1.0, 5.0), 1, &mut x0).expect("outside the interval");
        assert_eq!(x0, [1.0, 1.0, 4.0, 4.0]);
        assert_eq!(net.calls, [vec![1, 4, 10, 10], vec![1, 4]]);
        assert_eq!(g.evaluations, 3);
    }
}
