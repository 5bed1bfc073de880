//! Output-level step caching: a wrapper of the denoiser that answers some calls without running
//! the network, from the predictions of the calls that did run. It works on whole-model outputs, so
//! any ONNX graph qualifies.
//!
//! Whether a call may be answered from the cache follows AdaptiveDiffusion (Ye et al., "Training-Free
//! Adaptive Diffusion with Bounded Difference Approximation Strategy"): the trajectory is stable when
//! the third-order difference of the last four samples is small against the first-order one,
//! `|Δ³x| / |Δx| < threshold`; at most `max_skips` calls in a row are skipped, and the first three
//! calls always run. A skipped call either reuses the last prediction (`skip`) or extrapolates it
//! from the last evaluated ones with Adams–Bashforth weights (`ab`, as AB-Cache does with cached
//! features; second order).

use crate::denoiser::{Denoiser, Level};
use crate::error::{Error, Result};

/// How a skipped call is answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CacheMode {
    /// The last evaluated prediction, as it is.
    Skip,
    /// `3/2 p₁ − 1/2 p₂` from the last two evaluated predictions.
    AdamsBashforth,
}

impl CacheMode {
    pub fn from_name(name: &str) -> Result<CacheMode> {
        match name {
            "skip" => Ok(CacheMode::Skip),
            "ab" => Ok(CacheMode::AdamsBashforth),
            _ => Err(Error::InvalidArgument(format!("unknown step cache `{name}` (expected skip or ab)"))),
        }
    }
}

/// Step caching settings.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CacheOptions {
    pub mode: CacheMode,
    /// Largest `|Δ³x| / |Δx|` at which a call is answered from the cache.
    pub threshold: f32,
    /// Most calls answered from the cache in a row.
    pub max_skips: u32,
}

impl CacheOptions {
    pub const DEFAULT_THRESHOLD: f32 = 0.5;
    pub const DEFAULT_MAX_SKIPS: u32 = 1;

    pub fn new(mode: CacheMode) -> CacheOptions {
        CacheOptions { mode, threshold: Self::DEFAULT_THRESHOLD, max_skips: Self::DEFAULT_MAX_SKIPS }
    }
}

/// The cache of one generation: the last four samples the denoiser was called with, the last two
/// predictions it made, and buffers sized once, so a call allocates nothing.
pub struct StepCache {
    opts: CacheOptions,
    /// The last four inputs; once full, the oldest is at `head` and the newest at `(head + 3) % 4`.
    xs: [Vec<f32>; 4],
    head: usize,
    seen: usize,
    /// The last two evaluated predictions, newest first.
    preds: [Vec<f32>; 2],
    evaluated: usize,
    in_a_row: u32,
    /// Calls answered from the cache so far.
    pub skipped: usize,
}

impl StepCache {
    /// A cache for calls of `n` values, with options the request check has held to their limits.
    pub fn new(opts: CacheOptions, n: usize) -> StepCache {
        let buf = || vec![0.0f32; n];
        StepCache {
            opts,
            xs: [buf(), buf(), buf(), buf()],
            head: 0,
            seen: 0,
            preds: [buf(), buf()],
            evaluated: 0,
            in_a_row: 0,
            skipped: 0,
        }
    }

    /// The denoiser with this cache in front of `inner`.
    pub fn over<'a>(&'a mut self, inner: &'a mut dyn Denoiser) -> Cached<'a> {
        Cached { inner, cache: self }
    }

    fn remember_input(&mut self, x: &[f32]) {
        // Fill slots 0..4, then overwrite the oldest (at `head`) and move `head` on.
        let slot = if self.seen < 4 {
            self.seen
        } else {
            let oldest = self.head;
            self.head = (self.head + 1) % 4;
            oldest
        };
        self.xs[slot].copy_from_slice(x);
        self.seen += 1;
    }

    /// `|Δ³x| / |Δx|` over the last four inputs (oldest to newest `a, b, c, d`):
    /// `Δ³x = d − 3c + 3b − a`, `Δx = d − c`.
    fn stability(&self) -> Option<f64> {
        if self.seen < 4 {
            return None;
        }
        let at = |k: usize| &self.xs[(self.head + k) % 4];
        let (a, b, c, d) = (at(0), at(1), at(2), at(3));
        let (mut num, mut den) = (0.0f64, 0.0f64);
        for i in 0..d.len() {
            let d3 = d[i] as f64 - 3.0 * c[i] as f64 + 3.0 * b[i] as f64 - a[i] as f64;
            let d1 = d[i] as f64 - c[i] as f64;
            num += d3 * d3;
            den += d1 * d1;
        }
        Some(if den == 0.0 { f64::INFINITY } else { (num / den).sqrt() })
    }

    fn can_skip(&self) -> bool {
        self.evaluated >= 3
            && self.in_a_row < self.opts.max_skips
            && self.stability().is_some_and(|s| s < self.opts.threshold as f64)
    }
}

/// A denoiser answered partly from a [`StepCache`].
pub struct Cached<'a> {
    inner: &'a mut dyn Denoiser,
    cache: &'a mut StepCache,
}

impl Denoiser for Cached<'_> {
    fn len(&self) -> usize {
        self.inner.len()
    }

    fn denoise(&mut self, x: &[f32], level: &Level, step: usize, x0: &mut [f32]) -> Result<()> {
        let c = &mut *self.cache;
        c.remember_input(x);
        // A clean level is the last call of a run: always the network's own answer.
        if level.sigma > 0.0 && c.can_skip() {
            match c.opts.mode {
                CacheMode::Skip => x0.copy_from_slice(&c.preds[0]),
                CacheMode::AdamsBashforth => {
                    for ((o, &p1), &p2) in x0.iter_mut().zip(&c.preds[0]).zip(&c.preds[1]) {
                        *o = 1.5 * p1 - 0.5 * p2;
                    }
                }
            }
            c.in_a_row += 1;
            c.skipped += 1;
            return Ok(());
        }
        self.inner.denoise(x, level, step, x0)?;
        let [newest, older] = &mut c.preds;
        std::mem::swap(newest, older);
        newest.copy_from_slice(x0);
        c.evaluated += 1;
        c.in_a_row = 0;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A denoiser whose prediction is `x * scale`, counting its calls.
    struct Counting {
        calls: usize,
        scale: f32,
    }

    impl Denoiser for Counting {
        fn len(&self) -> usize {
            2
        }
        fn denoise(&mut self, x: &[f32], _: &Level, _: usize, x0: &mut [f32]) -> Result<()> {
            self.calls += 1;
            for (o, &x) in x0.iter_mut().zip(x) {
                *o = x * self.scale;
            }
            Ok(())
        }
    }

    fn noisy() -> Level {
        Level { alpha: 0.8, sigma: 0.6, timestep: 500.0 }
    }

    /// Runs `xs` through a cache in front of a counting denoiser; returns the calls made and outputs.
    fn run(opts: CacheOptions, xs: &[[f32; 2]]) -> (usize, Vec<[f32; 2]>) {
        let mut inner = Counting { calls: 0, scale: 2.0 };
        let mut cache = StepCache::new(opts, 2);
        let mut outs = Vec::new();
        for (i, x) in xs.iter().enumerate() {
            let mut o = [0.0f32; 2];
            cache.over(&mut inner).denoise(x, &noisy(), i, &mut o).expect("denoise");
            outs.push(o);
        }
        (inner.calls, outs)
    }

    #[test]
    fn a_straight_trajectory_is_answered_from_the_cache_within_the_cap() {
        // Samples on a line: Δ³x = 0, so every call after the first three may be skipped, but at
        // most `max_skips` in a row.
        let line: Vec<[f32; 2]> = (0..10).map(|i| [i as f32, 1.0 - i as f32]).collect();
        let (calls, outs) = run(CacheOptions { mode: CacheMode::Skip, threshold: 0.1, max_skips: 1 }, &line);
        assert_eq!(calls, 3 + 3, "after the first three, every other call is skipped (3, 5, 7, 9)");
        // A skipped call returns the last evaluated prediction.
        assert_eq!(outs[3], outs[2]);
        let (calls, _) = run(CacheOptions { mode: CacheMode::Skip, threshold: 0.1, max_skips: 3 }, &line);
        assert_eq!(calls, 3 + 1, "three skips, one call, three skips");
    }

    #[test]
    fn adams_bashforth_extrapolates_the_last_two_predictions() {
        let line: Vec<[f32; 2]> = (0..5).map(|i| [i as f32, 2.0 * i as f32]).collect();
        let (_, outs) = run(CacheOptions { mode: CacheMode::AdamsBashforth, threshold: 0.1, max_skips: 1 }, &line);
        // Predictions 2x: call 2 gave (4, 8), call 1 gave (2, 4); call 3 skipped: 1.5 p1 - 0.5 p2.
        assert_eq!(outs[3], [1.5 * 4.0 - 0.5 * 2.0, 1.5 * 8.0 - 0.5 * 4.0]);
    }

    #[test]
    fn a_curving_trajectory_runs_every_call() {
        // Δ³x of t³ is 6 throughout while Δx grows: |Δ³x| / |Δx| falls from 6/19 to 6/127.
        let cubic: Vec<[f32; 2]> = (0..8)
            .map(|i| {
                let t = i as f32;
                [t * t * t, -t * t * t]
            })
            .collect();
        let (calls, _) = run(CacheOptions { mode: CacheMode::Skip, threshold: 0.04, max_skips: 2 }, &cubic);
        assert_eq!(calls, 8);
        // The threshold decides: loose enough, the same trajectory is skipped.
        let (calls, _) = run(CacheOptions { mode: CacheMode::Skip, threshold: 10.0, max_skips: 1 }, &cubic);
        assert!(calls < 8);
    }

    #[test]
    fn unknown_modes_are_refused() {
        assert!(CacheMode::from_name("sometimes").is_err());
    }
}
