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
use crate::pipeline::{Generation, Session};
use crate::quality::Judge;
use crate::request::{guidance_rules, GenerateParams};
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
    /// The interval is the model's default recipe rather than the request's.
    #[serde(skip)]
    pub interval_from_model: bool,
    /// Every sample asked for the null class: guidance compares it with itself.
    #[serde(skip)]
    pub unconditional: bool,
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
    check_options(opts)?;
    let started = Instant::now();
    let model = Arc::new(Model::load(dir, backend)?);
    let mut session = Session::new(&model)?;
    if let Some(limit) = opts.memory_limit {
        session.set_memory_limit(limit);
    }
    let load_ms = ms(started.elapsed());

    let mut params = make_params(&model)?;
    let classes = classes_to_judge(&model, &mut params, opts);
    let measured = measure(&mut session, &params, opts)?;
    let peak_rss_mb = sysinfo::peak_rss_bytes().map(|b| b as f64 / (1024.0 * 1024.0));
    let rules = guidance_rules(&model, &params);
    let rel_l2_to_baseline = distance_to_baseline(&mut session, &params, rules, opts, &measured)?;
    let mut report = report(&model, &params, rules, opts, &measured, load_ms, peak_rss_mb, rel_l2_to_baseline);
    if let Some(dir) = &opts.classifier {
        let mut judge = Judge::load(dir, backend)?;
        let wanted: Vec<i64> = match classes {
            Some(c) => (0..opts.runs).flat_map(|_| c.iter().copied()).collect(),
            None => Vec::new(),
        };
        let q = judge.judge(&measured.judged, &wanted)?;
        report.judged_samples = Some(q.samples);
        report.class_accuracy = q.class_accuracy;
        report.frechet_distance = Some(q.frechet_distance);
    }
    Ok(report)
}

fn check_options(opts: &BenchOptions) -> Result<()> {
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
    Ok(())
}

/// What the timed generations measured.
struct Measured {
    /// Per measured run: the whole generation, and the time inside the backend (ms).
    totals: Vec<f64>,
    backends: Vec<f64>,
    /// Every measured step (ms).
    steps_ms: Vec<f64>,
    /// The very first step after loading (ms).
    first_step_ms: f64,
    nfes: Vec<f64>,
    /// The first measured run's samples, and all measured samples when a classifier judges them.
    first: Vec<f32>,
    judged: Vec<f32>,
    last: Generation,
}

/// Runs the warm-up and measured generations step by step, timing each step.
fn measure(session: &mut Session, params: &GenerateParams, opts: &BenchOptions) -> Result<Measured> {
    let (mut totals, mut backends, mut steps_ms, mut nfes) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut first_step_ms, mut first, mut judged, mut last) = (0.0, Vec::new(), Vec::new(), None);
    for k in 0..opts.warmup + opts.runs {
        let p = GenerateParams { seed: params.seed.wrapping_add(k as u64), ..params.clone() };
        let measured = k >= opts.warmup;
        let t0 = Instant::now();
        let total = session.begin(&p)?;
        for i in 0..total {
            let ts = Instant::now();
            session.step()?;
            let step = ms(ts.elapsed());
            if k == 0 && i == 0 {
                first_step_ms = step;
            }
            if measured {
                steps_ms.push(step);
            }
        }
        let gen = session.finish()?;
        let elapsed = t0.elapsed();
        if measured {
            totals.push(ms(elapsed));
            nfes.push(gen.nfe as f64);
            if k == opts.warmup {
                first = gen.samples.clone();
            }
            backends.push(ms(gen.backend_time));
            if opts.classifier.is_some() {
                judged.extend_from_slice(&gen.samples);
            }
        }
        last = Some(gen);
    }
    let last = last.ok_or_else(|| Error::Internal("no generation ran".into()))?;
    Ok(Measured { totals, backends, steps_ms, first_step_ms, nfes, first, judged, last })
}

/// With a guidance rule or step caching on: how far the first measured run lands from the same
/// run (seed, scale) without them.
fn distance_to_baseline(
    session: &mut Session,
    params: &GenerateParams,
    rules: GuidanceRules,
    opts: &BenchOptions,
    m: &Measured,
) -> Result<Option<f64>> {
    if rules == GuidanceRules::default() && params.step_cache.is_none() {
        return Ok(None);
    }
    let p = GenerateParams {
        seed: params.seed.wrapping_add(opts.warmup as u64),
        guidance_rules: GuidanceRules::default(),
        // An explicit scale: the model's default interval stays off too.
        guidance: Some(m.last.guidance),
        step_cache: None,
        ..params.clone()
    };
    let base = session.generate(&p, &mut |_, _| true)?.samples;
    Ok(Some(rel_l2(&m.first, &base)))
}

#[allow(clippy::too_many_arguments)] // the report's sources, each named
fn report(
    model: &Model,
    params: &GenerateParams,
    rules: GuidanceRules,
    opts: &BenchOptions,
    m: &Measured,
    load_ms: f64,
    peak_rss_mb: Option<f64>,
    rel_l2_to_baseline: Option<f64>,
) -> BenchReport {
    let ratios: Vec<f64> = m.totals.iter().zip(&m.backends).map(|(t, b)| t / b.max(1e-9)).collect();
    let null_class = model.manifest().denoiser.class_input.as_ref().and_then(|c| c.null_class);
    BenchReport {
        device: Device::this(),
        version: env!("CARGO_PKG_VERSION"),
        backend: model.graph().backend_name(),
        execution_provider: model.graph().execution_provider().to_string(),
        model: model.manifest().name.clone(),
        precision: precision(model),
        batch: params.batch,
        sampler: m.last.sampler.name(),
        steps: m.last.steps,
        guidance: m.last.guidance,
        threads: model.graph().threads(),
        nfe: quantile(&m.nfes, 0.5).round() as usize,
        runs: opts.runs,
        warmup: opts.warmup,
        load_ms,
        first_step_ms: m.first_step_ms,
        step_ms_p50: quantile(&m.steps_ms, 0.5),
        step_ms_p90: quantile(&m.steps_ms, 0.9),
        total_ms_p50: quantile(&m.totals, 0.5),
        backend_ms_p50: quantile(&m.backends, 0.5),
        overhead_ratio: quantile(&ratios, 0.5),
        peak_rss_mb,
        adaptive_guidance: rules.adaptive,
        guidance_interval: rules.interval.map(|(lo, hi)| [lo, hi]),
        interval_from_model: params.guidance_rules.interval.is_none() && rules.interval.is_some(),
        unconditional: null_class.is_some()
            && (params.classes.is_empty() || params.classes.iter().all(|c| Some(*c) == null_class)),
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
    }
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

/// `fp16` when the graph takes float16 samples, `int8` when it holds quantization operators,
/// `int4` when its matrix products have 4-bit weights (ONNX Runtime's `MatMulNBits`).
fn precision(model: &Model) -> &'static str {
    let g = model.graph();
    let sample = &model.manifest().denoiser.sample_input;
    if g.inputs().iter().any(|i| &i.name == sample && i.dtype == DType::F16) {
        return "fp16";
    }
    // Operator types are plain strings in the ONNX protobuf; finding one is finding its bytes.
    let onnx = model.dir().join(&model.manifest().denoiser.onnx);
    let bytes = std::fs::read(onnx).unwrap_or_default();
    let has = |op: &[u8]| bytes.windows(op.len()).any(|w| w == op);
    if has(b"MatMulNBits") {
        return match weight_bits(&bytes) {
            Some(8) => "int8",
            _ => "int4",
        };
    }
    let quantized = [&b"QuantizeLinear"[..], b"QLinearConv", b"QLinearMatMul", b"MatMulInteger", b"ConvInteger"]
        .iter()
        .any(|op| has(op));
    if quantized {
        "int8"
    } else {
        "fp32"
    }
}

/// The `bits` of the graph's first `MatMulNBits` node.
#[cfg(feature = "tract")]
fn weight_bits(onnx: &[u8]) -> Option<i64> {
    use prost::Message;
    let model = tract_onnx::pb::ModelProto::decode(onnx).ok()?;
    let node = model.graph?.node.into_iter().find(|n| n.op_type == "MatMulNBits")?;
    node.attribute.iter().find(|a| a.name == "bits").map(|a| a.i)
}

#[cfg(not(feature = "tract"))]
fn weight_bits(_: &[u8]) -> Option<i64> {
    None
}

impl BenchReport {
    /// The report as pretty-printed JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
    }

    /// A human-readable table of the figures.
    pub fn table(&self) -> String {
        let opt = |v: Option<f64>, digits: usize| v.map_or("-".to_string(), |v| format!("{v:.digits$}"));
        let plural = |n: usize, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
        let unconditional = if self.unconditional && self.guidance != 1.0 {
            " (no class given: guidance compares the null class with itself)"
        } else {
            ""
        };
        let rows: Vec<(&str, String)> = vec![
            ("device", format!("{} ({} cores, {})", self.device.cpu, self.device.cores, self.device.os)),
            ("model", format!("{} [{}]", self.model, self.precision)),
            (
                "backend",
                format!(
                    "{} on {} ({})",
                    self.backend,
                    self.execution_provider,
                    plural(self.threads, "thread", "threads")
                ),
            ),
            (
                "sampling",
                format!(
                    "{} × {}, guidance {}{unconditional}, batch {}, {} per sample",
                    self.sampler,
                    plural(self.steps, "step", "steps"),
                    self.guidance,
                    self.batch,
                    plural(self.nfe, "network pass", "network passes")
                ),
            ),
            ("runs", format!("{} measured after {} warm-up", self.runs, self.warmup)),
            ("acceleration", self.acceleration()),
            ("load", format!("{:.1} ms", self.load_ms)),
            ("first step", format!("{:.2} ms", self.first_step_ms)),
            ("step p50 / p90", format!("{:.2} / {:.2} ms", self.step_ms_p50, self.step_ms_p90)),
            ("generation p50", format!("{:.1} ms", self.total_ms_p50)),
            ("in backend p50", format!("{:.1} ms", self.backend_ms_p50)),
            ("overhead ratio", format!("{:.4}", self.overhead_ratio)),
            ("peak RSS", self.peak_rss_mb.map_or("-".into(), |v| format!("{v:.1} MB"))),
            ("class accuracy", self.class_accuracy.map_or("-".into(), |a| format!("{:.1} %", a * 100.0))),
            ("Fréchet distance", opt(self.frechet_distance, 2)),
        ];
        rows.iter().map(|(k, v)| format!("{k:<17} {v}\n")).collect()
    }

    /// The acceleration row: which rules ran, and how far they moved the samples.
    fn acceleration(&self) -> String {
        if self.adaptive_guidance.is_none() && self.guidance_interval.is_none() && self.step_cache.is_none() {
            return "-".into();
        }
        let interval = self.guidance_interval.map_or("off".into(), |[lo, hi]| {
            let whose = if self.interval_from_model { " (the model's default)" } else { "" };
            format!("[{lo}, {hi}]{whose}")
        });
        let cache = self
            .step_cache
            .as_ref()
            .map_or("off".into(), |c| format!("{} (threshold {}, max skips {})", c.mode, c.threshold, c.max_skips));
        let distance = match self.rel_l2_to_baseline {
            None => "-".into(),
            Some(0.0) => "0 (the same samples)".into(),
            Some(d) if d < 1e-3 => format!("{d:.2e}"),
            Some(d) => format!("{d:.4}"),
        };
        format!(
            "adaptive guidance {}, guidance interval {interval}, step cache {cache}; rel. L2 to the run without: {distance}",
            self.adaptive_guidance.map_or("off".into(), |g| g.to_string()),
        )
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
