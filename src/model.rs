//! A loaded model: the manifest checked against the ONNX graph, and the adapters that turn the
//! network into `D(x, level) -> x0` (time input encoding, prediction type, class and float conditions).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use smallvec::SmallVec;

use crate::backend::{self, BackendOptions, DType, Graph, Input, InputData, IoInfo, Runner};
use crate::dump::InputDump;
use crate::error::{Error, Result};
use crate::manifest::{Manifest, Prediction, TimeKind};
use crate::sampler::Level;
use crate::schedule::NoiseSchedule;

/// Where each manifest role sits among the graph's inputs, and how it is fed.
#[derive(Clone, Debug)]
struct Wiring {
    sample: usize,
    /// Input index, element type, and whether it is per-sample (`[B]`) rather than a scalar.
    time: Option<(usize, DType, bool)>,
    class: Option<(usize, DType)>,
    /// Input index, element type and per-sample element count (1 for `[B]` or `[B, 1]`).
    conds: Vec<(usize, DType, usize)>,
    /// Input index, element type and width (last dimension) of the context input.
    context: Option<(usize, DType, Option<usize>)>,
    output: usize,
    /// A batch dimension fixed in the graph (`None` = symbolic).
    fixed_batch: Option<usize>,
}

/// A loaded, validated, immutable model; share it between sessions with `Arc`.
pub struct Model {
    manifest: Manifest,
    dir: PathBuf,
    schedule: NoiseSchedule,
    graph: Arc<dyn Graph>,
    wiring: Wiring,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model").field("name", &self.manifest.name).field("dir", &self.dir).finish()
    }
}

impl Model {
    /// Loads `dir/model.json` and the graph it names.
    pub fn load(dir: &Path, opts: &BackendOptions) -> Result<Model> {
        let started = Instant::now();
        let (manifest, json) = Manifest::load(dir)?;
        let schedule = manifest.noise_schedule.to_schedule().map_err(|e| in_file(e, &json))?;
        let onnx = dir.join(&manifest.denoiser.onnx);
        if !onnx.is_file() {
            return Err(Error::Manifest(format!(
                "{}: key `denoiser.onnx`: file {} not found",
                json.display(),
                onnx.display()
            )));
        }
        let graph = backend::load_graph(&onnx, opts)?;
        let model = Self::wired(dir, manifest, &json, schedule, graph)?;
        log::info!(
            "loaded model `{}` from {} on {} ({}) in {:.1} ms",
            model.manifest.name,
            dir.display(),
            model.graph.backend_name(),
            model.graph.execution_provider(),
            started.elapsed().as_secs_f64() * 1e3
        );
        Ok(model)
    }

    /// A model from `dir/model.json` over a graph the caller loaded or wrapped (a custom backend,
    /// or one instrumented for measurement); the manifest is checked against it as in [`Model::load`].
    pub fn from_graph(dir: &Path, graph: Arc<dyn Graph>) -> Result<Model> {
        let (manifest, json) = Manifest::load(dir)?;
        let schedule = manifest.noise_schedule.to_schedule().map_err(|e| in_file(e, &json))?;
        Self::wired(dir, manifest, &json, schedule, graph)
    }

    /// A model from a manifest made in code (a Stable Diffusion export's UNet, say) over a loaded
    /// graph; checked as [`Model::load`] checks model.json. Errors name `source`.
    pub fn from_manifest(dir: &Path, manifest: Manifest, source: &Path, graph: Arc<dyn Graph>) -> Result<Model> {
        let schedule = manifest.noise_schedule.to_schedule().map_err(|e| in_file(e, source))?;
        Self::wired(dir, manifest, source, schedule, graph)
    }

    fn wired(
        dir: &Path,
        manifest: Manifest,
        json: &Path,
        schedule: NoiseSchedule,
        graph: Arc<dyn Graph>,
    ) -> Result<Model> {
        let onnx = dir.join(&manifest.denoiser.onnx);
        let wiring = wire(&manifest, graph.as_ref())
            .map_err(|e| e.map_message(|m| format!("{}: {m} (graph {})", json.display(), onnx.display())))?;
        Ok(Model { manifest, dir: dir.to_path_buf(), schedule, graph, wiring })
    }

    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// Whether the network's output is float16 (its values, widened to f32, are exact halves).
    pub fn half_output(&self) -> bool {
        self.graph.outputs()[self.wiring.output].dtype == DType::F16
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
    pub fn noise_schedule(&self) -> &NoiseSchedule {
        &self.schedule
    }
    pub fn graph(&self) -> &dyn Graph {
        self.graph.as_ref()
    }
    pub fn sample_len(&self) -> usize {
        self.manifest.sample_len()
    }
    /// Values of the sample input's extra channels per sample.
    pub fn extra_len(&self) -> usize {
        let c = self.manifest.sample_shape.first().copied().unwrap_or(1).max(1);
        self.manifest.denoiser.sample_extra_channels * (self.sample_len() / c)
    }
    pub fn cond_names(&self) -> impl Iterator<Item = &str> {
        self.manifest.denoiser.cond_inputs.iter().map(|c| c.name.as_str())
    }
    /// The largest batch one network call may take (a graph exported with a fixed batch).
    pub fn max_network_batch(&self) -> Option<usize> {
        self.wiring.fixed_batch
    }

    /// A per-session evaluator of the network.
    pub fn network(self: &Arc<Self>) -> Result<Network> {
        Ok(Network {
            model: Arc::clone(self),
            runner: self.graph.runner()?,
            time_f32: Vec::new(),
            time_f16: Vec::new(),
            time_i64: Vec::new(),
            time_i32: Vec::new(),
            class_i64: Vec::new(),
            class_i32: Vec::new(),
            cond_f16: Vec::new(),
            context_f16: Vec::new(),
            sample_cat: Vec::new(),
            sample_f16: Vec::new(),
            sample_shape: Vec::new(),
            shapes: Vec::new(),
            backend_time: Duration::ZERO,
            dump: None,
        })
    }
}

fn in_file(e: Error, path: &Path) -> Error {
    match e {
        Error::Manifest(m) => Error::Manifest(format!("{}: {m}", path.display())),
        other => other,
    }
}

fn find(infos: &[IoInfo], name: &str, key: &str, what: &str) -> Result<usize> {
    infos.iter().position(|i| i.name == name).ok_or_else(|| {
        let names: Vec<&str> = infos.iter().map(|i| i.name.as_str()).collect();
        Error::Manifest(format!("key `{key}`: the graph has no {what} `{name}` (it has: {})", names.join(", ")))
    })
}

/// Checks the manifest against the graph: names, element types, ranks and static dimensions.
fn wire(m: &Manifest, g: &dyn Graph) -> Result<Wiring> {
    let d = &m.denoiser;
    let ins = g.inputs();
    let bad = |key: &str, msg: String| Err(Error::Manifest(format!("key `{key}`: {msg}")));

    let sample = find(ins, &d.sample_input, "denoiser.sample_input", "input")?;
    let output = find(g.outputs(), &d.output, "denoiser.output", "output")?;
    let mut fixed_batch = None;
    let extra = d.sample_extra_channels;
    for (key, info, extra) in
        [("denoiser.sample_input", &ins[sample], extra), ("denoiser.output", &g.outputs()[output], 0)]
    {
        if !matches!(info.dtype, DType::F32 | DType::F16) {
            return bad(key, format!("`{}` is {}, expected float32 or float16", info.name, info.dtype));
        }
        let mut want: Vec<Option<usize>> = m.sample_shape.iter().map(|&s| Some(s)).collect();
        if let Some(Some(c)) = want.first_mut() {
            *c += extra;
        }
        let shape_ok =
            info.shape.len() == want.len() + 1 && info.shape[1..].iter().zip(&want).all(|(g, w)| g.is_none() || g == w);
        if !shape_ok {
            return bad(
                key,
                format!(
                    "`{info}` contradicts sample_shape {:?} (expected [batch, {}])",
                    m.sample_shape,
                    m.sample_shape.iter().map(|s| s.to_string()).collect::<Vec<_>>().join(", ")
                ),
            );
        }
        if let Some(b) = info.shape[0] {
            fixed_batch = Some(fixed_batch.map_or(b, |f: usize| f.min(b)));
        }
    }
    if ins[sample].dtype == DType::F16 && g.outputs()[output].dtype != DType::F16 {
        // Mixed precision graphs exist; both ends are converted independently, nothing to reject.
    }

    let time = match &d.time_input {
        None => None,
        Some(t) => {
            let i = find(ins, &t.name, "denoiser.time_input.name", "input")?;
            let info = &ins[i];
            if !matches!(info.dtype, DType::F32 | DType::F16 | DType::I64 | DType::I32) {
                return bad("denoiser.time_input", format!("`{info}`: unsupported element type {}", info.dtype));
            }
            let per_sample = match info.shape.len() {
                0 => false,
                1 => true,
                2 if info.shape[1] == Some(1) => true,
                _ => return bad("denoiser.time_input", format!("`{info}` must be a scalar or one value per sample")),
            };
            if matches!(info.dtype, DType::I64 | DType::I32) && t.kind != TimeKind::Index {
                return bad(
                    "denoiser.time_input.kind",
                    format!("`{info}` is an integer input, which only kind `index` can feed"),
                );
            }
            Some((i, info.dtype, per_sample))
        }
    };
    let class = match &d.class_input {
        None => None,
        Some(c) => {
            let i = find(ins, &c.name, "denoiser.class_input.name", "input")?;
            let info = &ins[i];
            if !matches!(info.dtype, DType::I64 | DType::I32) || info.shape.len() != 1 {
                return bad("denoiser.class_input", format!("`{info}` must be int64 or int32 of shape [batch]"));
            }
            if let Some(n) = c.null_class {
                if n < c.num_classes as i64 {
                    return bad(
                        "denoiser.class_input.null_class",
                        format!(
                            "{n} is one of the {} real classes; the null class must be >= num_classes",
                            c.num_classes
                        ),
                    );
                }
            }
            Some((i, info.dtype))
        }
    };
    let mut conds = Vec::new();
    for c in &d.cond_inputs {
        let i = find(ins, &c.name, "denoiser.cond_inputs.name", "input")?;
        let info = &ins[i];
        if !matches!(info.dtype, DType::F32 | DType::F16) {
            return bad("denoiser.cond_inputs", format!("`{info}` must be float32 or float16"));
        }
        let per = match info.shape.len() {
            1 => 1,
            2 => match info.shape[1] {
                Some(n) if n > 0 => n,
                _ => return bad("denoiser.cond_inputs", format!("`{info}` needs a fixed second dimension")),
            },
            _ => return bad("denoiser.cond_inputs", format!("`{info}` must be [batch] or [batch, n]")),
        };
        if per != 1 {
            return bad("denoiser.cond_inputs", format!("`{info}`: only one value per sample is supported"));
        }
        conds.push((i, info.dtype, per));
    }
    let context = match &d.context_input {
        None => None,
        Some(c) => {
            let i = find(ins, &c.name, "denoiser.context_input.name", "input")?;
            let info = &ins[i];
            if !matches!(info.dtype, DType::F32 | DType::F16) || info.shape.len() != 3 {
                return bad(
                    "denoiser.context_input",
                    format!("`{info}` must be float32 or float16 [batch, tokens, width]"),
                );
            }
            Some((i, info.dtype, info.shape[2]))
        }
    };
    let mut used: Vec<usize> = vec![sample];
    used.extend(context.map(|c| c.0));
    used.extend(time.map(|t| t.0));
    used.extend(class.map(|c| c.0));
    used.extend(conds.iter().map(|c| c.0));
    if let Some(extra) = ins.iter().enumerate().find(|(i, _)| !used.contains(i)) {
        return bad("denoiser", format!("graph input `{}` is not described in model.json", extra.1));
    }
    Ok(Wiring { sample, time, class, conds, context, output, fixed_batch })
}

/// Conditioning of the samples of one network call.
#[derive(Clone, Copy, Debug)]
pub struct PerSample<'a> {
    /// One label per sample; empty when the model has no class input.
    pub classes: &'a [i64],
    /// `n` values per conditioning input, input-major (the manifest's `cond_inputs` order).
    pub conds: &'a [f32],
    /// `n` context tensors one after another; empty when the model has no context input.
    pub context: &'a [f32],
    /// `n` blocks of the sample input's extra channels; empty when it has none.
    pub extra: &'a [f32],
}

/// One session's network evaluator: feeds the graph and converts its output to `x0`.
/// Input buffers are kept between calls, so steps after the first allocate nothing here.
pub struct Network {
    model: Arc<Model>,
    runner: Box<dyn Runner>,
    time_f32: Vec<f32>,
    time_f16: Vec<half::f16>,
    time_i64: Vec<i64>,
    time_i32: Vec<i32>,
    class_i64: Vec<i64>,
    class_i32: Vec<i32>,
    cond_f16: Vec<half::f16>,
    context_f16: Vec<half::f16>,
    sample_f16: Vec<half::f16>,
    /// The sample with its extra channels appended, per sample.
    sample_cat: Vec<f32>,
    sample_shape: Vec<usize>,
    shapes: Vec<[usize; 2]>,
    /// Time spent inside the backend's run calls since the last [`Network::take_backend_time`].
    backend_time: Duration,
    /// Where every call's inputs are recorded, if anywhere.
    dump: Option<InputDump>,
}

impl Network {
    pub fn model(&self) -> &Arc<Model> {
        &self.model
    }

    /// Sizes the input buffers for calls of up to `n` samples, so that no call allocates here.
    pub fn reserve(&mut self, n: usize) {
        let m = &self.model;
        let conds = m.wiring.conds.len();
        self.time_f32.reserve(n);
        self.time_f16.reserve(n);
        self.time_i64.reserve(n);
        self.time_i32.reserve(n);
        self.class_i64.reserve(n);
        self.class_i32.reserve(n);
        self.cond_f16.reserve(n * conds);
        if m.graph.inputs()[m.wiring.sample].dtype == DType::F16 {
            self.sample_f16.reserve(n * (m.sample_len() + m.extra_len()));
        }
        self.sample_shape.reserve(m.manifest.sample_shape.len() + 1);
        if m.extra_len() > 0 {
            self.sample_cat.reserve(n * (m.sample_len() + m.extra_len()));
        }
        self.shapes.reserve(conds);
    }

    /// Records the inputs of every later call into `dump` (`None` stops recording).
    pub fn set_dump(&mut self, dump: Option<InputDump>) {
        self.dump = dump;
    }

    /// Time spent inside the backend since the last call; resets it.
    pub fn take_backend_time(&mut self) -> Duration {
        std::mem::take(&mut self.backend_time)
    }

    /// The value fed to the time input for `level`, before the dtype cast.
    pub fn time_value(&self, level: &Level) -> Option<f64> {
        let t = self.model.manifest.denoiser.time_input.as_ref()?;
        let v = match t.kind {
            TimeKind::Index => level.timestep,
            TimeKind::Sigma => level.ve_sigma(),
            TimeKind::CNoise => 0.25 * level.ve_sigma().ln(),
            TimeKind::T => level.sigma / (level.alpha + level.sigma),
        };
        Some(v * t.scale)
    }

    /// Evaluates `n` samples `x` (native scaling) at `level` with their conditioning, writing the
    /// predicted clean samples into `x0`.
    pub fn denoise(&mut self, x: &[f32], n: usize, level: &Level, cond: PerSample<'_>, x0: &mut [f32]) -> Result<()> {
        self.predict(x, n, level, cond, x0)?;
        to_x0(self.model.manifest.denoiser.prediction, level, x, x0)
        // Non-finite predictions are caught by the sampler, after guidance, with the step number.
    }

    /// As [`Network::denoise`], but writes the network's own output (epsilon, v, ...) into `out`.
    pub fn predict(&mut self, x: &[f32], n: usize, level: &Level, cond: PerSample<'_>, out: &mut [f32]) -> Result<()> {
        let PerSample { classes, conds, context, extra } = cond;
        let m = Arc::clone(&self.model);
        let w = &m.wiring;
        let len = m.sample_len();
        if x.len() != n * len || out.len() != n * len {
            return Err(Error::Internal(format!(
                "denoise: buffers of {} and {} values for {n} samples of {len}",
                x.len(),
                out.len()
            )));
        }
        if conds.len() != n * w.conds.len() {
            return Err(Error::Internal(format!("denoise: {} conditioning values for {n} samples", conds.len())));
        }
        if let Some(b) = w.fixed_batch {
            if n != b {
                return Err(Error::InvalidArgument(format!(
                    "the graph has a fixed batch of {b}; this call needs {n} (guidance doubles the batch)"
                )));
            }
        }
        copy_into(&mut self.sample_shape, std::iter::once(n).chain(m.manifest.sample_shape.iter().copied()));
        let extra_len = m.extra_len();
        if extra_len > 0 {
            if extra.len() != n * extra_len {
                return Err(Error::Internal(format!("denoise: {} extra channel values for {n} samples", extra.len())));
            }
            self.sample_shape[1] += m.manifest.denoiser.sample_extra_channels;
            self.sample_cat.clear();
            for (xs, es) in x.chunks(len).zip(extra.chunks(extra_len)) {
                self.sample_cat.extend_from_slice(xs);
                self.sample_cat.extend_from_slice(es);
            }
        }
        let input = if extra_len > 0 { self.sample_cat.as_slice() } else { x };
        let time_len = if matches!(w.time, Some((_, _, true))) { n } else { 1 };
        if let (Some((_, dtype, _)), Some(v)) = (w.time, self.time_value(level)) {
            match dtype {
                DType::F32 => fill(&mut self.time_f32, time_len, v as f32),
                DType::F16 => fill(&mut self.time_f16, time_len, half::f16::from_f64(v)),
                // diffusers casts fractional timesteps to integers by truncation (`.long()`).
                DType::I64 => fill(&mut self.time_i64, time_len, v as i64),
                _ => fill(&mut self.time_i32, time_len, v as i32),
            }
        }
        if let Some((_, dtype)) = w.class {
            if classes.len() != n {
                return Err(Error::Internal(format!("denoise: {} class labels for {n} samples", classes.len())));
            }
            match dtype {
                DType::I64 => copy_into(&mut self.class_i64, classes.iter().copied()),
                _ => copy_into(&mut self.class_i32, classes.iter().map(|&c| c as i32)),
            }
        }
        let any_f16_cond = w.conds.iter().any(|c| c.1 == DType::F16);
        if any_f16_cond {
            copy_into(&mut self.cond_f16, conds.iter().map(|&v| half::f16::from_f32(v)));
        }
        let mut context_shape = [n, 0, 0];
        if let Some((_, dtype, width)) = w.context {
            let per = context.len() / n.max(1);
            let width = width.unwrap_or(per);
            if context.len() != n * per || width == 0 || per == 0 || per % width != 0 {
                return Err(Error::InvalidArgument(format!(
                    "context of {} values does not split into {n} samples of [tokens, {width}]",
                    context.len()
                )));
            }
            context_shape = [n, per / width, width];
            if dtype == DType::F16 {
                copy_into(&mut self.context_f16, context.iter().map(|&v| half::f16::from_f32(v)));
            }
        }
        self.shapes.clear();
        for &(i, ..) in &w.conds {
            let rank2 = m.graph.inputs()[i].shape.len() == 2;
            self.shapes.push(if rank2 { [n, 1] } else { [n, 0] });
        }

        let sample_data = if m.graph.inputs()[w.sample].dtype == DType::F16 {
            copy_into(&mut self.sample_f16, input.iter().map(|&v| half::f16::from_f32(v)));
            InputData::F16(&self.sample_f16)
        } else {
            InputData::F32(input)
        };
        let time_shape = [n];
        let time_rank2 = [n, 1];
        // Inline storage: building the input list must not allocate on every step.
        let mut inputs: SmallVec<[Input<'_>; 8]> = SmallVec::new();
        inputs.push(Input { index: w.sample, shape: &self.sample_shape, data: sample_data });
        if let Some((i, dtype, per_sample)) = w.time {
            let shape: &[usize] = if !per_sample {
                &[]
            } else if m.graph.inputs()[i].shape.len() == 2 {
                &time_rank2
            } else {
                &time_shape
            };
            let data = match dtype {
                DType::F32 => InputData::F32(&self.time_f32),
                DType::F16 => InputData::F16(&self.time_f16),
                DType::I64 => InputData::I64(&self.time_i64),
                _ => InputData::I32(&self.time_i32),
            };
            inputs.push(Input { index: i, shape, data });
        }
        if let Some((i, dtype)) = w.class {
            let data =
                if dtype == DType::I64 { InputData::I64(&self.class_i64) } else { InputData::I32(&self.class_i32) };
            inputs.push(Input { index: i, shape: &time_shape, data });
        }
        for (k, &(i, dtype, _)) in w.conds.iter().enumerate() {
            let vals = &conds[k * n..(k + 1) * n];
            let s = &self.shapes[k];
            let shape: &[usize] = if s[1] == 1 { &s[..] } else { &s[..1] };
            let data = if dtype == DType::F16 {
                InputData::F16(&self.cond_f16[k * n..(k + 1) * n])
            } else {
                InputData::F32(vals)
            };
            inputs.push(Input { index: i, shape, data });
        }
        if let Some((i, dtype, _)) = w.context {
            let data = if dtype == DType::F16 { InputData::F16(&self.context_f16) } else { InputData::F32(context) };
            inputs.push(Input { index: i, shape: &context_shape, data });
        }
        if let Some(dump) = &mut self.dump {
            dump.record(&inputs, m.graph.inputs())?;
        }
        let started = Instant::now();
        self.runner.run(&inputs, w.output, out)?;
        self.backend_time += started.elapsed();
        Ok(())
    }
}

fn fill<T: Copy>(buf: &mut Vec<T>, n: usize, v: T) {
    buf.clear();
    buf.resize(n, v);
}

fn copy_into<T>(buf: &mut Vec<T>, it: impl Iterator<Item = T>) {
    buf.clear();
    buf.extend(it);
}

/// Converts the network output in `out` (in place) to the clean-sample prediction, for a native
/// sample `x = alpha * x0 + sigma * noise`.
fn to_x0(pred: Prediction, l: &Level, x: &[f32], out: &mut [f32]) -> Result<()> {
    let (a, s) = (l.alpha, l.sigma);
    // (cx, co): x0 = cx * x + co * out.
    let (cx, co) = match pred {
        Prediction::Sample => return Ok(()),
        Prediction::Epsilon => {
            if a <= 0.0 {
                return Err(Error::InvalidArgument(
                    "an epsilon-prediction model cannot denoise at alpha = 0 (pure noise); use a schedule that stops short of it".into()));
            }
            (1.0 / a, -s / a)
        }
        // v = alpha * eps - sigma * x0.
        Prediction::VPrediction => {
            let n = a * a + s * s;
            (a / n, -s / n)
        }
        // v = eps - x0, so x = (alpha + sigma) x0 + sigma v.
        Prediction::Velocity => {
            let n = a + s;
            (1.0 / n, -s / n)
        }
    };
    let (cx, co) = (cx as f32, co as f32);
    for (o, &xi) in out.iter_mut().zip(x) {
        *o = cx * xi + co * *o;
    }
    Ok(())
}
