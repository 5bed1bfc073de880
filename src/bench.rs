//! The benchmark behind `drt bench` and `drt_bench_run`: whole generations after warm-up, timed
//! per step and inside the backend, optionally judged by a classifier, reported as one JSON object.
//!
//! Generation `k` (warm-ups included) uses seed `seed + k`, so the judged samples are distinct
//! while every run does the same work. `overhead_ratio` is the median over measured runs of
//! (whole generation time) / (time inside the backend's run calls): what the runtime adds around
//! the network, 1.0 being nothing at all.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::backend::{BackendOptions, DType};
use crate::cache::CacheMode;
use crate::error::{Error, Result};
use crate::guidance::GuidanceRules;
use crate::model::Model;
use crate::pipeline::{GenerateParams, Session};
use crate::quality::Judge;
use crate::sysinfo::{self, Device};

/// How the benchmark runs, besides the generation's own parameters.
#[derive(Clone, Debug)]
pub struct BenchOptions {
    /// Measured generations.
    pub runs: usize,
    /// Generations run first and not measured (the first one pays one-time costs).
    pub warmup: usize,
    /// A classifier directory (see [`crate::quality`]) to judge the measured samples with.
    pub classifier: Option<PathBuf>,
    /// The session's cap on a generation's buffers (see [`Session::set_memory_limit`]).
    pub memory_limit: Option<usize>,
}

impl Default for BenchOptions {
    fn default() -> Self {
        BenchOptions { runs: 5, warmup: 1, classifier: None, memory_limit: None }
    }
}

/// Upper bound on measured plus warm-up runs.
pub const MAX_RUNS: usize = 10_000;

/// One benchmark's figures; times in milliseconds. Serialises to the documented JSON keys.
#[derive(Clone, Debug, Serialize)]
pub struct BenchReport {
    pub device: Device,
    pub version: &'static str,
    pub backend: &'static str,
    pub execution_provider: String,
    pub model: String,
    /// `fp32`, `fp16` (float16 graph inputs) or `int8` (a quantized graph).
    pub precision: &'static str,
    pub batch: usize,
    pub sampler: &'static str,
    pub steps: usize,
    pub guidance: f32,
    /// Intra-op threads of the backend (tract runs on one).
    pub threads: usize,
    /// Network forward passes per sample and generation, conditional and unconditional counted
    /// apart (the median over measured runs: adaptive rules vary it).
    pub nfe: usize,
    pub runs: usize,
    pub warmup: usize,
    /// Loading the model and creating the session.
    pub load_ms: f64,
    /// The first step after loading (one-time initialisation included).
    pub first_step_ms: f64,
    pub step_ms_p50: f64,
    pub step_ms_p90: f64,
    pub total_ms_p50: f64,
    pub backend_ms_p50: f64,
    pub overhead_ratio: f64,
    /// Peak resident memory of the process after the generations (before any judging).
    pub peak_rss_mb: Option<f64>,
    /// Adaptive guidance's threshold, when on.
    pub adaptive_guidance: Option<f32>,
    /// The guidance interval in sigma, when on.
    pub guidance_interval: Option<[f64; 2]>,
    /// Step caching, when on.
    pub step_cache: Option<StepCacheReport>,
    /// With any of the options above: relative L2 distance of the first measured run's samples to
    /// the same run (seed, settings) without them.
    pub rel_l2_to_baseline: Option<f64>,
    /// Samples the quality figures are computed over (all measured runs).
    pub judged_samples: Option<usize>,
    pub class_accuracy: Option<f64>,
    pub frechet_distance: Option<f64>,
}

/// The step cache's settings as the report gives them.
#[derive(Clone, Debug, Serialize)]
pub struct StepCacheReport {
    pub mode: &'static str,
    pub threshold: f32,
    pub max_skips: u32,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// `|a - b| / |b|`.
fn rel_l2(a: &[f32], b: &[f32]) -> f64 {
    let num: f64 = a.iter().zip(b).map(|(x, y)| (*x as f64 - *y as f64).powi(2)).sum();
    let den: f64 = b.iter().map(|y| (*y as f64).powi(2)).sum();
    (num / den.max(1e-30)).sqrt()
}

/// The `q`-quantile (0..=1) of `v` with linear interpolation between order statistics (numpy's default).
pub fn quantile(v: &[f64], q: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let pos = q.clamp(0.0, 1.0) * (s.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    s[lo] + (s[hi] - s[lo]) * (pos - lo as f64)
}

/// Loads the model in `dir` and benchmarks generations with `params`.
pub fn run(dir: &Path, backend: &BackendOptions, params: &GenerateParams, opts: &BenchOptions) -> Result<BenchReport> {
    run_with(dir, backend, |_| Ok(params.clone()), opts)
}

/// As [`run`], with the parameters made from the loaded model (which sizes, say, supplied noise).
pub fn run_with(
    dir: &Path,
    backend: &BackendOptions,
    make_params: impl FnOnce(&Model) -> Result<GenerateParams>,
    opts: &BenchOptions,
) -> Result<BenchReport> {
    if opts.runs == 0 || opts.runs.saturating_add(opts.warmup) > MAX_RUNS {
        return Err(Error::InvalidArgument(format!(
            "runs must be at least 1 and runs + warmup at most {MAX_RUNS}, got {} + {}",
            opts.runs, opts.warmup
        )));
    }
    if let Some(c) = &opts.classifier {
        // Judged after the runs (so its memory stays out of the peak RSS); found before them.
        for f in ["classifier.onnx", "reference_mean.npy", "reference_cov.npy"] {
            let path = c.join(f);
            std::fs::metadata(&path).map_err(|e| Error::io(&path, e))?;
        }
    }
    let started = Instant::now();
    let model = Arc::new(Model::load(dir, backend)?);
    let mut session = Session::new(&model)?;
    if let Some(limit) = opts.memory_limit {
        session.set_memory_limit(limit);
    }
    let load_ms = ms(started.elapsed());

    let mut params = make_params(&model)?;
    let classes = classes_to_judge(&model, &mut params, opts);
    let (mut totals, mut backends, mut steps_ms) = (Vec::new(), Vec::new(), Vec::new());
    let (mut first_step_ms, mut judged, mut nfes) = (0.0, Vec::new(), Vec::new());
    let mut first_measured: Option<Vec<f32>> = None;
    let mut last = None;
    for k in 0..opts.warmup + opts.runs {
        let p = GenerateParams { seed: params.seed.wrapping_add(k as u64), ..params.clone() };
        let t0 = Instant::now();
        let total = session.begin(&p)?;
        for i in 0..total {
            let ts = Instant::now();
            session.step()?;
            let step = ms(ts.elapsed());
            if k == 0 && i == 0 {
                first_step_ms = step;
            }
            if k >= opts.warmup {
                steps_ms.push(step);
            }
        }
        let gen = session.finish()?;
        let elapsed = t0.elapsed();
        if k >= opts.warmup {
            totals.push(ms(elapsed));
            nfes.push(gen.nfe as f64);
            if first_measured.is_none() {
                first_measured = Some(gen.samples.clone());
            }
            backends.push(ms(gen.backend_time));
            if opts.classifier.is_some() {
                judged.extend_from_slice(&gen.samples);
            }
        }
        last = Some(gen);
    }
    let peak_rss_mb = sysinfo::peak_rss_bytes().map(|b| b as f64 / (1024.0 * 1024.0));
    // With an acceleration rule on: how far the first measured run lands from the same run without it.
    let rules = crate::pipeline::guidance_rules(&model, &params);
    let accelerated = rules != GuidanceRules::default() || params.step_cache.is_some();
    let rel_l2_to_baseline = match (&first_measured, accelerated) {
        (Some(fast), true) => {
            let p = GenerateParams {
                seed: params.seed.wrapping_add(opts.warmup as u64),
                guidance_rules: GuidanceRules::default(),
                // An explicit scale: the model's default interval stays off too.
                guidance: last.as_ref().map(|g| g.guidance),
                step_cache: None,
                ..params.clone()
            };
            let base = session.generate(&p, &mut |_, _| true)?.samples;
            Some(rel_l2(fast, &base))
        }
        _ => None,
    };
    let gen = last.ok_or_else(|| Error::Internal("no generation ran".into()))?;
    let ratios: Vec<f64> = totals.iter().zip(&backends).map(|(t, b)| t / b.max(1e-9)).collect();

    let mut report = BenchReport {
        device: Device::this(),
        version: env!("CARGO_PKG_VERSION"),
        backend: model.graph().backend_name(),
        execution_provider: model.graph().execution_provider(),
        model: model.manifest().name.clone(),
        precision: precision(&model),
        batch: params.batch,
        sampler: gen.sampler.name(),
        steps: gen.steps,
        guidance: gen.guidance,
        threads: model.graph().threads(),
        nfe: quantile(&nfes, 0.5).round() as usize,
        runs: opts.runs,
        warmup: opts.warmup,
        load_ms,
        first_step_ms,
        step_ms_p50: quantile(&steps_ms, 0.5),
        step_ms_p90: quantile(&steps_ms, 0.9),
        total_ms_p50: quantile(&totals, 0.5),
        backend_ms_p50: quantile(&backends, 0.5),
        overhead_ratio: quantile(&ratios, 0.5),
        peak_rss_mb,
        adaptive_guidance: rules.adaptive,
        guidance_interval: rules.interval.map(|(lo, hi)| [lo, hi]),
        step_cache: params.step_cache.map(|c| StepCacheReport {
            mode: match c.mode {
                CacheMode::Skip => "skip",
                CacheMode::AdamsBashforth => "ab",
            },
            threshold: c.threshold,
            max_skips: c.max_skips,
        }),
        rel_l2_to_baseline,
        judged_samples: None,
        class_accuracy: None,
        frechet_distance: None,
    };
    if let Some(dir) = &opts.classifier {
        let mut judge = Judge::load(dir, backend)?;
        let wanted: Vec<i64> = match classes {
            Some(c) => (0..opts.runs).flat_map(|_| c.iter().copied()).collect(),
            None => Vec::new(),
        };
        let q = judge.judge(&judged, &wanted)?;
        report.judged_samples = Some(q.samples);
        report.class_accuracy = q.class_accuracy;
        report.frechet_distance = Some(q.frechet_distance);
    }
    Ok(report)
}

/// The class each sample of a generation asks for, when a classifier will judge them. Without
/// `--class` on a class-conditional model, the batch cycles through the classes, so accuracy covers
/// all of them.
fn classes_to_judge(model: &Model, params: &mut GenerateParams, opts: &BenchOptions) -> Option<Vec<i64>> {
    opts.classifier.as_ref()?;
    let num = model.manifest().denoiser.class_input.as_ref()?.num_classes as i64;
    if params.classes.is_empty() {
        params.classes = (0..params.batch as i64).map(|i| i % num.max(1)).collect();
    }
    Some(match params.classes.as_slice() {
        [one] => vec![*one; params.batch],
        many => many.to_vec(),
    })
}

/// `fp16` when the graph takes float16 samples, `int8` when it holds quantization operators.
fn precision(model: &Model) -> &'static str {
    let g = model.graph();
    let sample = &model.manifest().denoiser.sample_input;
    if g.inputs().iter().any(|i| &i.name == sample && i.dtype == DType::F16) {
        return "fp16";
    }
    // Operator types are plain strings in the ONNX protobuf; finding one is finding its bytes.
    let onnx = model.dir().join(&model.manifest().denoiser.onnx);
    let bytes = std::fs::read(onnx).unwrap_or_default();
    let quantized = [&b"QuantizeLinear"[..], b"QLinearConv", b"QLinearMatMul", b"MatMulInteger", b"ConvInteger"]
        .iter()
        .any(|op| bytes.windows(op.len()).any(|w| w == *op));
    if quantized {
        "int8"
    } else {
        "fp32"
    }
}

impl BenchReport {
    /// The report as pretty-printed JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
    }

    /// A human-readable table of the figures.
    pub fn table(&self) -> String {
        let opt = |v: Option<f64>, digits: usize| v.map_or("-".to_string(), |v| format!("{v:.digits$}"));
        let rows: Vec<(&str, String)> = vec![
            ("device", format!("{} ({} cores, {})", self.device.cpu, self.device.cores, self.device.os)),
            ("model", format!("{} [{}]", self.model, self.precision)),
            ("backend", format!("{} on {} ({} threads)", self.backend, self.execution_provider, self.threads)),
            (
                "sampling",
                format!(
                    "{} × {} steps, guidance {}, batch {}, {} network passes per sample",
                    self.sampler, self.steps, self.guidance, self.batch, self.nfe
                ),
            ),
            ("runs", format!("{} measured after {} warm-up", self.runs, self.warmup)),
            (
                "acceleration",
                match (self.adaptive_guidance, self.guidance_interval, &self.step_cache) {
                    (None, None, None) => "-".to_string(),
                    (a, i, c) => format!(
                        "adaptive guidance {}, guidance interval {}, step cache {}; rel. L2 to the run without: {}",
                        a.map_or("off".into(), |g| g.to_string()),
                        i.map_or("off".into(), |[lo, hi]| format!("[{lo}, {hi}]")),
                        c.as_ref().map_or("off".into(), |c| format!(
                            "{} (threshold {}, max skips {})",
                            c.mode, c.threshold, c.max_skips
                        )),
                        opt(self.rel_l2_to_baseline, 4)
                    ),
                },
            ),
            ("load", format!("{:.1} ms", self.load_ms)),
            ("first step", format!("{:.2} ms", self.first_step_ms)),
            ("step p50 / p90", format!("{:.2} / {:.2} ms", self.step_ms_p50, self.step_ms_p90)),
            ("generation p50", format!("{:.1} ms", self.total_ms_p50)),
            ("in backend p50", format!("{:.1} ms", self.backend_ms_p50)),
            ("overhead ratio", format!("{:.4}", self.overhead_ratio)),
            ("peak RSS", format!("{} MB", opt(self.peak_rss_mb, 1))),
            ("class accuracy", opt(self.class_accuracy.map(|a| a * 100.0), 1) + " %"),
            ("Fréchet distance", opt(self.frechet_distance, 2)),
        ];
        rows.iter().map(|(k, v)| format!("{k:<17} {v}\n")).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::quantile;

    #[test]
    fn quantiles_interpolate_like_numpy() {
        // np.percentile([3, 1, 4, 1, 5], [50, 90]) == [3.0, 4.6]
        let v = [3.0, 1.0, 4.0, 1.0, 5.0];
        assert_eq!(quantile(&v, 0.5), 3.0);
        assert!((quantile(&v, 0.9) - 4.6).abs() < 1e-12);
        assert_eq!(quantile(&[2.5], 0.9), 2.5);
        assert!(quantile(&[], 0.5).is_nan());
    }
}
