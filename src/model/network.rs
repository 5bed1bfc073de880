//! One session's evaluator of the network: the caller's values converted to the graph's inputs
//! (element types, shapes, the time encoding), and the output turned into the clean-sample
//! prediction the manifest's `prediction` implies.

use std::sync::Arc;
use std::time::{Duration, Instant};

use smallvec::SmallVec;

use super::Model;
use crate::backend::{DType, Input, InputData, Runner};
use crate::denoiser::half::clean_in_place;
use crate::denoiser::{Level, Precision};
use crate::dump::InputDump;
use crate::error::{Error, Result};
use crate::manifest::{Prediction, TimeKind};
use crate::schedule::NoiseSchedule;

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
    /// Per tensor input, `n` tensors one after another.
    pub tensors: &'a [Vec<f32>],
}

/// A conditional network as guidance calls it: any number of samples with their conditioning in
/// one call, and the conversion of its output to a clean-sample prediction.
pub trait Predictor {
    /// Values of one sample.
    fn sample_len(&self) -> usize;
    /// Writes the network's own output (epsilon, v, x0 or velocity) for the `n` native samples
    /// `x` at `level` into `out`.
    fn predict(&mut self, x: &[f32], n: usize, level: &Level, cond: PerSample<'_>, out: &mut [f32]) -> Result<()>;
    /// Turns the output in `out` (for the samples `x`) into the clean-sample prediction, in place,
    /// in the run's `precision`.
    fn to_x0(&self, precision: Precision, level: &Level, x: &[f32], out: &mut [f32]) -> Result<()>;
}

/// One session's network evaluator. Input buffers are kept between calls, so steps after the
/// first allocate nothing here.
pub struct Network {
    model: Arc<Model>,
    runner: Box<dyn Runner>,
    feeds: Feeds,
    /// Time spent inside the backend's run calls since the last [`Network::take_backend_time`].
    backend_time: Duration,
    /// Where every call's inputs are recorded, if anywhere.
    dump: Option<InputDump>,
}

/// One call's inputs in the graph's element types and shapes; float inputs stay float32 (a
/// float16 graph's runner narrows them, [`crate::backend`]).
#[derive(Default)]
struct Feeds {
    time_f32: Vec<f32>,
    time_i64: Vec<i64>,
    time_i32: Vec<i32>,
    class_i64: Vec<i64>,
    class_i32: Vec<i32>,
    /// Per tensor input: its shape `[n, ...]`.
    tensor_shapes: Vec<Vec<usize>>,
    /// The sample with its extra channels appended, per sample.
    sample_cat: Vec<f32>,
    sample_shape: Vec<usize>,
    /// `[n]` and `[n, 1]`: per-sample inputs of rank 1 and 2.
    batch: [usize; 1],
    batch_rank2: [usize; 2],
    context_shape: [usize; 3],
}

impl Network {
    pub(super) fn new(model: &Arc<Model>) -> Result<Network> {
        Ok(Network {
            model: Arc::clone(model),
            runner: model.graph.runner()?,
            feeds: Feeds::default(),
            backend_time: Duration::ZERO,
            dump: None,
        })
    }

    pub fn model(&self) -> &Arc<Model> {
        &self.model
    }

    /// Sizes the input buffers for calls of up to `n` samples, so that no call allocates here.
    pub fn reserve(&mut self, n: usize) {
        let m = &self.model;
        let f = &mut self.feeds;
        f.time_f32.reserve(n);
        f.time_i64.reserve(n);
        f.time_i32.reserve(n);
        f.class_i64.reserve(n);
        f.class_i32.reserve(n);
        f.sample_shape.reserve(m.manifest.sample_shape.len() + 1);
        if m.extra_len() > 0 {
            f.sample_cat.reserve(n * (m.sample_len() + m.extra_len()));
        }
        f.tensor_shapes = m.wiring.tensors.iter().map(|(_, per)| [&[n][..], per].concat()).collect();
    }

    /// [`crate::backend::Runner::release_after_run`] for the calls from now on.
    pub fn release_after_calls(&mut self, on: bool) {
        self.runner.release_after_run(on);
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
            // A vp level carries its own time; elsewhere `t` is the flow time the level implies.
            TimeKind::T if matches!(self.model.schedule, NoiseSchedule::Vp(_)) => level.timestep,
            TimeKind::T => level.sigma / (level.alpha + level.sigma),
        };
        Some(v * t.scale)
    }

    /// Refuses a call whose buffers do not fit `n` samples, or that the graph's fixed batch cannot take.
    fn check_call(&self, x: &[f32], n: usize, cond: &PerSample<'_>, out: &[f32]) -> Result<()> {
        let m = &self.model;
        let len = m.sample_len();
        let internal = |msg: String| Err(Error::Internal(format!("network call: {msg}")));
        if x.len() != n * len || out.len() != n * len {
            return internal(format!("buffers of {} and {} values for {n} samples of {len}", x.len(), out.len()));
        }
        if cond.conds.len() != n * m.wiring.conds.len() {
            return internal(format!("{} conditioning values for {n} samples", cond.conds.len()));
        }
        if m.wiring.class.is_some() && cond.classes.len() != n {
            return internal(format!("{} class labels for {n} samples", cond.classes.len()));
        }
        if cond.extra.len() != n * m.extra_len() {
            return internal(format!("{} extra channel values for {n} samples", cond.extra.len()));
        }
        let tensors = m.wiring.tensors.iter().map(|(_, per)| n * per.iter().product::<usize>());
        if cond.tensors.len() != m.wiring.tensors.len() || cond.tensors.iter().map(Vec::len).ne(tensors) {
            return internal(format!("tensor inputs of the wrong sizes for {n} samples"));
        }
        if let Some(b) = m.wiring.fixed_batch.filter(|&b| b != n) {
            return Err(Error::InvalidArgument(format!(
                "the graph has a fixed batch of {b}; this call needs {n} (guidance doubles the batch)"
            )));
        }
        Ok(())
    }
}

impl Predictor for Network {
    fn sample_len(&self) -> usize {
        self.model.sample_len()
    }

    fn predict(&mut self, x: &[f32], n: usize, level: &Level, cond: PerSample<'_>, out: &mut [f32]) -> Result<()> {
        self.check_call(x, n, &cond, out)?;
        let m = Arc::clone(&self.model);
        let time = self.time_value(level);
        self.feeds.fill(&m, x, n, time, &cond)?;
        let inputs = self.feeds.inputs(&m, x, n, &cond);
        if let Some(dump) = &mut self.dump {
            dump.record(&inputs, m.graph.inputs())?;
        }
        let started = Instant::now();
        self.runner.run(&inputs, m.wiring.output, out)?;
        self.backend_time += started.elapsed();
        Ok(())
        // Non-finite predictions are caught by the sampler, after guidance, with the step number.
    }

    fn to_x0(&self, precision: Precision, level: &Level, x: &[f32], out: &mut [f32]) -> Result<()> {
        to_x0(self.model.manifest.denoiser.prediction, precision, level, x, out)
    }
}

impl Feeds {
    /// Converts one call's values into the graph's element types and shapes.
    fn fill(&mut self, m: &Model, x: &[f32], n: usize, time: Option<f64>, cond: &PerSample<'_>) -> Result<()> {
        let w = &m.wiring;
        (self.batch, self.batch_rank2) = ([n], [n, 1]);
        self.fill_sample(m, x, n, cond.extra);
        if let (Some((_, dtype, per_sample)), Some(v)) = (w.time, time) {
            let len = if per_sample { n } else { 1 };
            match dtype {
                DType::F32 | DType::F16 => fill(&mut self.time_f32, len, v as f32),
                // diffusers casts fractional timesteps to integers by truncation (`.long()`).
                DType::I64 => fill(&mut self.time_i64, len, v as i64),
                _ => fill(&mut self.time_i32, len, v as i32),
            }
        }
        match w.class {
            Some((_, DType::I64)) => copy_into(&mut self.class_i64, cond.classes.iter().copied()),
            Some(_) => copy_into(&mut self.class_i32, cond.classes.iter().map(|&c| c as i32)),
            None => {}
        }
        if let Some((_, width)) = w.context {
            self.fill_context(cond.context, n, width)?;
        }
        self.tensor_shapes.resize_with(w.tensors.len(), Vec::new);
        for (k, (_, per)) in w.tensors.iter().enumerate() {
            copy_into(&mut self.tensor_shapes[k], std::iter::once(n).chain(per.iter().copied()));
        }
        Ok(())
    }

    /// The sample input: `x` with its extra channels appended per sample, in the input's type.
    fn fill_sample(&mut self, m: &Model, x: &[f32], n: usize, extra: &[f32]) {
        copy_into(&mut self.sample_shape, std::iter::once(n).chain(m.manifest.sample_shape.iter().copied()));
        let (len, extra_len) = (m.sample_len(), m.extra_len());
        if extra_len > 0 {
            self.sample_shape[1] += m.manifest.denoiser.sample_extra_channels;
            self.sample_cat.clear();
            for (xs, es) in x.chunks(len).zip(extra.chunks(extra_len)) {
                self.sample_cat.extend_from_slice(xs);
                self.sample_cat.extend_from_slice(es);
            }
        }
    }

    /// The context input `[n, tokens, width]`: the width from the graph, or the whole tensor.
    fn fill_context(&mut self, context: &[f32], n: usize, width: Option<usize>) -> Result<()> {
        let per = context.len() / n.max(1);
        let width = width.unwrap_or(per);
        if context.len() != n * per || width == 0 || per == 0 || !per.is_multiple_of(width) {
            return Err(Error::InvalidArgument(format!(
                "context of {} values does not split into {n} samples of [tokens, {width}]",
                context.len()
            )));
        }
        self.context_shape = [n, per / width, width];
        Ok(())
    }

    /// The graph's input list over the filled buffers (and the caller's float32 values where the
    /// graph takes them as they are).
    fn inputs<'a>(&'a self, m: &Model, x: &'a [f32], n: usize, cond: &PerSample<'a>) -> SmallVec<[Input<'a>; 8]> {
        let w = &m.wiring;
        let ins = m.graph.inputs();
        let per_sample = |i: usize| -> &'a [usize] {
            if ins[i].shape.len() == 2 {
                &self.batch_rank2
            } else {
                &self.batch
            }
        };
        // Inline storage: building the input list must not allocate on every step.
        let mut inputs: SmallVec<[Input<'a>; 8]> = SmallVec::new();
        let sample = match m.extra_len() {
            0 => InputData::F32(x),
            _ => InputData::F32(&self.sample_cat),
        };
        inputs.push(Input { index: w.sample, shape: &self.sample_shape, data: sample });
        if let Some((i, dtype, per)) = w.time {
            let data = match dtype {
                DType::F32 | DType::F16 => InputData::F32(&self.time_f32),
                DType::I64 => InputData::I64(&self.time_i64),
                _ => InputData::I32(&self.time_i32),
            };
            inputs.push(Input { index: i, shape: if per { per_sample(i) } else { &[] }, data });
        }
        if let Some((i, dtype)) = w.class {
            let data =
                if dtype == DType::I64 { InputData::I64(&self.class_i64) } else { InputData::I32(&self.class_i32) };
            inputs.push(Input { index: i, shape: &self.batch, data });
        }
        for (k, &i) in w.conds.iter().enumerate() {
            let data = InputData::F32(&cond.conds[k * n..(k + 1) * n]);
            inputs.push(Input { index: i, shape: per_sample(i), data });
        }
        if let Some((i, _)) = w.context {
            inputs.push(Input { index: i, shape: &self.context_shape, data: InputData::F32(cond.context) });
        }
        for (k, &(i, _)) in w.tensors.iter().enumerate() {
            inputs.push(Input { index: i, shape: &self.tensor_shapes[k], data: InputData::F32(&cond.tensors[k]) });
        }
        inputs
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
/// sample `x = alpha * x0 + sigma * noise`, in the run's precision.
fn to_x0(pred: Prediction, precision: Precision, l: &Level, x: &[f32], out: &mut [f32]) -> Result<()> {
    let (a, s) = (l.alpha, l.sigma);
    // (cx, co): x0 = cx * x + co * out.
    let (cx, co) = match pred {
        Prediction::Sample => return Ok(()),
        Prediction::Epsilon => {
            if a <= 0.0 {
                return Err(Error::InvalidArgument(
                    "an epsilon-prediction model cannot denoise at alpha = 0 (pure noise); use a schedule that stops short of it".into(),
                ));
            }
            if precision == Precision::Float16 {
                clean_in_place(l, x, out);
                return Ok(());
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
