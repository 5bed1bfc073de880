//! The ONNX Runtime backend (ort 2.0.0-rc.15, library loaded at run time).
//!
//! One ORT session per runner. ORT's `Run` is not thread-safe (ort makes `run` take `&mut self`), so
//! a shared session would need a lock that serialises every denoiser call of every generation; a
//! session per runner costs its own copy of the optimised graph and activation arena instead. The
//! prepacked weight buffers (the large part for conv/matmul-heavy UNets) are shared across those
//! sessions through one `PrepackedWeights` container. A runner hands its session back when dropped
//! and the next runner takes it, so runners made one after another (one generation at a time, a
//! VAE decoding tile by tile) share the session built at load time and pay for exactly one.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use half::slice::HalfFloatSliceExt;
use ort::environment::Environment;
use ort::logging::LogLevel;
use ort::memory::Allocator;
use ort::session::builder::{GraphOptimizationLevel, PrepackedWeights, SessionBuilder};
use ort::session::{HasSelectedOutputs, OutputSelector, RunOptions, Session, SessionInputValue};
use ort::value::{DynValue, Tensor, TensorElementType, ValueType};
use smallvec::SmallVec;

use super::{
    call_batch, check_inputs, check_out_len, check_output, default_threads, ort_lib, BackendKind, BackendOptions,
    DType, ExecutionProvider, Graph, Input, InputData, IoInfo, Runner,
};
use crate::error::{Error, Result};

/// The process-wide environment and the library it came from. A process can load only one ONNX
/// Runtime; asking for a second, different one is an error rather than a silent mix-up.
static ENVIRONMENT: Mutex<Option<(PathBuf, Environment)>> = Mutex::new(None);

pub(super) fn environment(library: &Path) -> Result<Environment> {
    let mut guard = ENVIRONMENT.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some((loaded, env)) = guard.as_ref() {
        if loaded != library {
            return Err(Error::BackendUnavailable(format!(
                "ONNX Runtime is already loaded from {} in this process; cannot also load {}",
                loaded.display(),
                library.display()
            )));
        }
        return Ok(env.clone());
    }
    let unavailable = |e: &dyn std::fmt::Display| {
        // ort's message names the library it tried; say it once.
        let (e, path) = (e.to_string(), library.display().to_string());
        let from = if e.contains(&path) { String::new() } else { format!(" from {path}") };
        Error::BackendUnavailable(format!("cannot load ONNX Runtime{from}: {e}; {}", ort_lib::INSTALL_HINT))
    };
    let env = ort::init_from(library)
        .map_err(|e| unavailable(&e))?
        .with_name("diffusion-rt")
        .with_telemetry(false)
        .with_logger(Arc::new(forward_log))
        .build()
        .map_err(|e| unavailable(&e))?;
    // ORT hands a custom logger everything down to VERBOSE; only format what `log` would keep.
    env.set_log_level(match log::max_level() {
        log::LevelFilter::Trace => LogLevel::Verbose,
        log::LevelFilter::Debug => LogLevel::Info,
        log::LevelFilter::Off => LogLevel::Fatal,
        _ => LogLevel::Warning,
    });
    log::info!("ONNX Runtime loaded from {}", library.display());
    *guard = Some((library.to_path_buf(), env.clone()));
    Ok(env)
}

/// Routes ONNX Runtime's own log lines (otherwise printed to stderr) through `log`, so the CLI's
/// `--quiet` and the C ABI's log callback see them. ORT's errors go out as warnings: every ORT error
/// that matters also comes back to the caller as an `Err`, and the CLI should not print it twice.
fn forward_log(level: LogLevel, category: &str, _id: &str, location: &str, message: &str) {
    let level = match level {
        LogLevel::Verbose => log::Level::Trace,
        LogLevel::Info => log::Level::Debug,
        LogLevel::Warning | LogLevel::Error => log::Level::Warn,
        LogLevel::Fatal => log::Level::Error,
    };
    log::log!(target: "onnxruntime", level, "[{category}] {message} ({location})");
}

struct Shared {
    path: PathBuf,
    inputs: Vec<IoInfo>,
    outputs: Vec<IoInfo>,
}

/// What every session of a graph is built from.
struct Source {
    path: PathBuf,
    /// Attention slices ([`super::attention`]): above 1, each session is built from the graph
    /// rewritten in memory (its external data stays beside `path`). Not kept between sessions:
    /// for a graph with its weights inside, the rewrite is as large as the file.
    attention_slices: usize,
    /// [`BackendOptions::mapped_weights`].
    mapped_weights: bool,
}

pub(crate) struct OrtGraph {
    shared: Arc<Shared>,
    env: Environment,
    source: Source,
    ep: ExecutionProvider,
    threads: usize,
    prepacked: PrepackedWeights,
    /// Sessions no runner holds: the one built while loading, and those dropped runners gave back.
    idle: Arc<Mutex<Vec<Session>>>,
}

impl OrtGraph {
    pub(crate) fn load(path: &Path, opts: &BackendOptions, attention_slices: usize) -> Result<Self> {
        let library = ort_lib::find(opts.ort_library.as_deref())?;
        let env = environment(library.path())?;
        let threads = opts.threads.unwrap_or_else(default_threads);
        let ep = opts.execution_provider;
        let prepacked = PrepackedWeights::new();
        let source = Source { path: path.to_path_buf(), attention_slices, mapped_weights: opts.mapped_weights };
        let session = build_session(&env, &source, ep, threads, &prepacked)?;
        let inputs = session.inputs().iter().map(|o| io_info(o.name(), o.dtype())).collect();
        let outputs = session.outputs().iter().map(|o| io_info(o.name(), o.dtype())).collect();
        log::debug!("ort loaded {} on {ep} with {threads} threads", path.display());
        Ok(OrtGraph {
            shared: Arc::new(Shared { path: path.to_path_buf(), inputs, outputs }),
            env,
            source,
            ep,
            threads,
            prepacked,
            idle: Arc::new(Mutex::new(vec![session])),
        })
    }
}

/// The graph with its attention in `slices` slices (`None`: nothing to rewrite, load the file).
#[cfg(feature = "tract")]
fn rewrite(path: &Path, slices: usize) -> Result<Option<Vec<u8>>> {
    use prost::Message;
    if slices <= 1 {
        return Ok(None);
    }
    let (model, sliced) = super::attention::read_sliced(path, slices)?;
    Ok((sliced > 0).then(|| model.encode_to_vec()))
}

#[cfg(not(feature = "tract"))]
fn rewrite(_: &Path, _: usize) -> Result<Option<Vec<u8>>> {
    Ok(None) // refused before loading (backend::check_attention_slices)
}

fn build_session(
    env: &Environment,
    source: &Source,
    ep: ExecutionProvider,
    threads: usize,
    prepacked: &PrepackedWeights,
) -> Result<Session> {
    let prepacked = (!source.mapped_weights).then_some(prepacked);
    let mut builder = session_builder(env, ep, threads, prepacked)?;
    let rewritten = rewrite(&source.path, source.attention_slices)?;
    if rewritten.is_some() {
        builder = with_external_data_beside(builder, &source.path)?;
    }
    let committed = match &rewritten {
        Some(bytes) => builder.commit_from_memory(bytes),
        None => builder.commit_from_file(&source.path),
    };
    committed.map_err(|e| commit_error(&source.path, ep, e))
}

fn options_error(e: impl std::fmt::Display) -> Error {
    Error::Internal(format!("ONNX Runtime session options: {e}"))
}

/// Session options for `ep` and `threads`. Without `prepacked` (shared prepacked weights), the
/// weights stay where they are: prepacking and the layout optimisations (level 3) copy them into
/// new buffers, and without them ONNX Runtime reads an external-data file's weights where the file
/// is mapped.
pub(super) fn session_builder(
    env: &Environment,
    ep: ExecutionProvider,
    threads: usize,
    prepacked: Option<&PrepackedWeights>,
) -> Result<SessionBuilder> {
    let opt = |e: ort::Error<SessionBuilder>| options_error(e);
    let level = if prepacked.is_some() { GraphOptimizationLevel::All } else { GraphOptimizationLevel::Level2 };
    let mut builder = Session::builder(env)
        .map_err(options_error)?
        .with_optimization_level(level)
        .map_err(opt)?
        .with_intra_threads(threads)
        .map_err(opt)?
        .with_inter_threads(1)
        .map_err(opt)?;
    builder = match prepacked {
        Some(prepacked) => builder.with_prepacked_weights(prepacked).map_err(opt)?,
        None => builder.with_config_entry("session.disable_prepacking", "1").map_err(opt)?,
    };
    if ep != ExecutionProvider::Cpu {
        // error_on_failure: without it ORT falls back to the CPU silently and we would report a
        // provider that is not running.
        builder = builder
            .with_execution_providers([execution_provider(ep)?.error_on_failure()])
            .map_err(|e| ep_unavailable(ep, &e))?;
    }
    Ok(builder)
}

/// A graph committed from memory finds its external data in `path`'s folder, as from the file.
pub(super) fn with_external_data_beside(builder: SessionBuilder, path: &Path) -> Result<SessionBuilder> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let dir = dir.to_str().ok_or_else(|| Error::io(dir, "the model's folder is not UTF-8"))?;
    builder.with_config_entry("session.model_external_initializers_file_folder_path", dir).map_err(options_error)
}

pub(super) fn commit_error(path: &Path, ep: ExecutionProvider, e: impl std::fmt::Display) -> Error {
    if ep != ExecutionProvider::Cpu && e.to_string().contains("xecution provider") {
        ep_unavailable(ep, &e)
    } else {
        Error::Model(format!("{}: {e}", path.display()))
    }
}

fn ep_unavailable(ep: ExecutionProvider, e: &dyn std::fmt::Display) -> Error {
    Error::BackendUnavailable(format!("execution provider `{ep}` could not be registered with ONNX Runtime: {e}"))
}

fn execution_provider(ep: ExecutionProvider) -> Result<ort::ep::ExecutionProviderDispatch> {
    match ep {
        #[cfg(feature = "cuda")]
        ExecutionProvider::Cuda => Ok(ort::ep::CUDA::default().build()),
        #[cfg(feature = "tensorrt")]
        ExecutionProvider::TensorRt => Ok(ort::ep::TensorRT::default().build()),
        #[cfg(feature = "coreml")]
        ExecutionProvider::CoreMl => Ok(ort::ep::CoreML::default().build()),
        #[cfg(feature = "nnapi")]
        ExecutionProvider::Nnapi => Ok(ort::ep::NNAPI::default().build()),
        #[cfg(feature = "xnnpack")]
        ExecutionProvider::Xnnpack => Ok(ort::ep::XNNPACK::default().build()),
        // The CPU needs no provider registered (the caller does not ask for one).
        _ => Err(Error::BackendUnavailable(format!(
            "execution provider `{ep}` is not compiled in; rebuild diffusion-rt with `--features {ep}`"
        ))),
    }
}

fn io_info(name: &str, ty: &ValueType) -> IoInfo {
    let (dtype, shape) = match ty {
        ValueType::Tensor { ty, shape, .. } => {
            (dtype_of(*ty), shape.iter().map(|&d| usize::try_from(d).ok()).collect())
        }
        _ => (DType::Other, Vec::new()),
    };
    IoInfo { name: name.to_string(), dtype, shape }
}

fn dtype_of(ty: TensorElementType) -> DType {
    match ty {
        TensorElementType::Float32 => DType::F32,
        TensorElementType::Float16 => DType::F16,
        TensorElementType::Bfloat16 => DType::BF16,
        TensorElementType::Float64 => DType::F64,
        TensorElementType::Int64 => DType::I64,
        TensorElementType::Int32 => DType::I32,
        TensorElementType::Int16 => DType::I16,
        TensorElementType::Int8 => DType::I8,
        TensorElementType::Uint8 => DType::U8,
        TensorElementType::Bool => DType::Bool,
        _ => DType::Other,
    }
}

impl Graph for OrtGraph {
    fn inputs(&self) -> &[IoInfo] {
        &self.shared.inputs
    }

    fn outputs(&self) -> &[IoInfo] {
        &self.shared.outputs
    }

    fn runner(&self) -> Result<Box<dyn Runner>> {
        let idle = self.idle.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).pop();
        let session = match idle {
            Some(session) => session,
            None => build_session(&self.env, &self.source, self.ep, self.threads, &self.prepacked)?,
        };
        let run_err = |e: ort::Error| Error::Internal(format!("ONNX Runtime run options: {e}"));
        let (mut selected, mut releasing) = (Vec::new(), Vec::new());
        for info in &self.shared.outputs {
            let only = || OutputSelector::no_default().with(info.name.as_str());
            selected.push(RunOptions::new().map_err(run_err)?.with_outputs(only()));
            let mut options = RunOptions::new().map_err(run_err)?.with_outputs(only());
            // ONNX Runtime's arena shrinkage: the memory it grew by during the run goes back.
            options.set("memory.enable_memory_arena_shrinkage", "cpu:0").map_err(run_err)?;
            releasing.push(options);
        }
        let n = self.shared.inputs.len();
        Ok(Box::new(OrtRunner {
            shared: self.shared.clone(),
            session: Some(session),
            idle: Arc::clone(&self.idle),
            bound: (0..selected.len()).map(|_| SmallVec::new()).collect(),
            selected,
            releasing,
            release: false,
            values: Vec::with_capacity(n),
            spares: (0..n).map(|_| None).collect(),
        }))
    }

    fn backend(&self) -> BackendKind {
        BackendKind::Ort
    }

    fn execution_provider(&self) -> ExecutionProvider {
        self.ep
    }

    fn threads(&self) -> usize {
        self.threads
    }
}

struct OrtRunner {
    shared: Arc<Shared>,
    /// Always `Some` until the runner is dropped and gives it back to `idle`.
    session: Option<Session>,
    idle: Arc<Mutex<Vec<Session>>>,
    /// Per output: run options asking ORT for that output only, so nothing else is computed or copied.
    selected: Vec<RunOptions<HasSelectedOutputs>>,
    /// As `selected`, releasing the run's activation memory when it ends.
    releasing: Vec<RunOptions<HasSelectedOutputs>>,
    /// [`Runner::release_after_run`].
    release: bool,
    /// Per output, for the last two output shapes seen (batch B and 2B with guidance): run options
    /// that also hand ORT a preallocated output tensor, so a run writes into it instead of
    /// allocating a new one.
    bound: Vec<BoundOutputs>,
    /// Input tensors in graph order, owned by ORT's allocator and refilled in place on every call.
    /// Copying a latent into them costs microseconds; it buys an allocation-free steady state and
    /// lifetime-free storage, where borrowing the caller's slices would need new ORT values per call.
    values: Vec<SessionInputValue<'static>>,
    /// The previous tensor of each input, kept when the shape changes, so alternating between batch
    /// B and 2B (guidance switched on and off) swaps buffers instead of reallocating.
    spares: Vec<Option<DynValue>>,
}

pub(super) fn model_error(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Model(format!("{}: {e}", path.display()))
}

impl OrtRunner {
    fn fill_inputs(&mut self, inputs: &[Input<'_>]) -> Result<()> {
        let path = &self.shared.path;
        for index in 0..self.shared.inputs.len() {
            let input = inputs
                .iter()
                .find(|i| i.index == index)
                .ok_or_else(|| Error::Internal(format!("input {index} vanished after validation")))?;
            if self.values.len() <= index {
                let value = new_tensor(input).map_err(|e| model_error(path, e))?;
                self.values.push(SessionInputValue::Owned(value));
                continue;
            }
            let SessionInputValue::Owned(current) = &mut self.values[index] else {
                return Err(Error::Internal("ort input slot holds a borrowed value".into()));
            };
            if !fits(current, input) {
                let spare = &mut self.spares[index];
                match spare {
                    Some(s) if fits(s, input) => std::mem::swap(current, s),
                    _ => {
                        let fresh = new_tensor(input).map_err(|e| model_error(path, e))?;
                        *spare = Some(std::mem::replace(current, fresh));
                        continue;
                    }
                }
            }
            copy_into(current, input).map_err(|e| model_error(path, e))?;
        }
        Ok(())
    }
}

type Shape = SmallVec<[usize; 6]>;
/// Run options with a preallocated output, by output shape (at most two).
type BoundOutputs = SmallVec<[(Shape, RunOptions<HasSelectedOutputs>); 2]>;

/// The shape output `info` will have for these inputs, when the graph fixes every dimension but a
/// leading batch that the inputs share.
fn expected_shape(shared: &Shared, info: &IoInfo, inputs: &[Input<'_>]) -> Option<Shape> {
    let (first, rest) = info.shape.split_first()?;
    if first.is_some() || rest.iter().any(Option::is_none) {
        return None;
    }
    let batch = call_batch(&shared.inputs, inputs)?;
    Some(std::iter::once(batch).chain(rest.iter().flatten().copied()).collect())
}

/// Run options with a preallocated tensor of `shape` for `output`, made on first use.
fn bound_options<'a>(
    bound: &'a mut [BoundOutputs],
    output: usize,
    info: &IoInfo,
    shape: Shape,
) -> Result<&'a RunOptions<HasSelectedOutputs>> {
    let cache = bound.get_mut(output).ok_or_else(|| Error::Internal(format!("no run options for output {output}")))?;
    let k = match cache.iter().position(|(s, _)| *s == shape) {
        Some(k) => k,
        None => {
            let err = |e: ort::Error| Error::Internal(format!("ONNX Runtime output tensor: {e}"));
            let allocator = Allocator::default();
            let dims: Vec<usize> = shape.to_vec();
            let selector = OutputSelector::no_default().with(info.name.as_str());
            let selector = match info.dtype {
                DType::F16 => {
                    selector.preallocate(info.name.as_str(), Tensor::<half::f16>::new(&allocator, dims).map_err(err)?)
                }
                _ => selector.preallocate(info.name.as_str(), Tensor::<f32>::new(&allocator, dims).map_err(err)?),
            };
            let options = RunOptions::new().map_err(err)?.with_outputs(selector);
            if cache.len() == 2 {
                cache.remove(0);
            }
            cache.push((shape, options));
            cache.len() - 1
        }
    };
    Ok(&cache[k].1)
}

fn fits(value: &DynValue, input: &Input<'_>) -> bool {
    match value.dtype() {
        ValueType::Tensor { ty, shape, .. } => {
            dtype_of(*ty) == input.data.dtype()
                && shape.len() == input.shape.len()
                && shape.iter().zip(input.shape).all(|(&a, &b)| usize::try_from(a).is_ok_and(|a| a == b))
        }
        _ => false,
    }
}

pub(super) fn new_tensor(input: &Input<'_>) -> ort::Result<DynValue> {
    let shape = input.shape.to_vec();
    Ok(match input.data {
        InputData::F32(d) => Tensor::from_array((shape, d.to_vec()))?.into_dyn(),
        InputData::F16(d) => Tensor::from_array((shape, d.to_vec()))?.into_dyn(),
        InputData::I64(d) => Tensor::from_array((shape, d.to_vec()))?.into_dyn(),
        InputData::I32(d) => Tensor::from_array((shape, d.to_vec()))?.into_dyn(),
    })
}

fn copy_into(value: &mut DynValue, input: &Input<'_>) -> ort::Result<()> {
    match input.data {
        InputData::F32(d) => value.try_extract_tensor_mut::<f32>()?.1.copy_from_slice(d),
        InputData::F16(d) => value.try_extract_tensor_mut::<half::f16>()?.1.copy_from_slice(d),
        InputData::I64(d) => value.try_extract_tensor_mut::<i64>()?.1.copy_from_slice(d),
        InputData::I32(d) => value.try_extract_tensor_mut::<i32>()?.1.copy_from_slice(d),
    }
    Ok(())
}

impl Runner for OrtRunner {
    fn run(&mut self, inputs: &[Input<'_>], output: usize, out: &mut [f32]) -> Result<Vec<usize>> {
        // A handle of our own, so `info` does not keep `self` borrowed across the run.
        let shared = self.shared.clone();
        check_inputs(&shared.inputs, inputs)?;
        let info = check_output(&shared.outputs, output)?;
        self.fill_inputs(inputs)?;
        let path = &shared.path;
        let model_error = |e: ort::Error| model_error(path, e);
        let unbound = if self.release { &self.releasing } else { &self.selected };
        let options = match expected_shape(&shared, info, inputs) {
            Some(shape) if !self.release => bound_options(&mut self.bound, output, info, shape)?,
            _ => unbound.get(output).ok_or_else(|| Error::Internal(format!("no run options for output {output}")))?,
        };
        let session = self.session.as_mut().ok_or_else(|| Error::Internal("runner without a session".into()))?;
        let results = session.run_with_options(self.values.as_slice(), options).map_err(model_error)?;
        let value = results
            .get(info.name.as_str())
            .ok_or_else(|| Error::Internal(format!("ONNX Runtime returned no output `{}`", info.name)))?;
        copy_output(path, info, value, out)
    }

    fn release_after_run(&mut self, on: bool) {
        self.release = on;
    }
}

/// Copies float output `info` of a run into `out` and returns its shape.
pub(super) fn copy_output(path: &Path, info: &IoInfo, value: &DynValue, out: &mut [f32]) -> Result<Vec<usize>> {
    let model_error = |e: ort::Error| model_error(path, e);
    let ValueType::Tensor { ty, shape, .. } = value.dtype() else {
        return Err(Error::Model(format!("{}: output `{}` is not a tensor", path.display(), info.name)));
    };
    let shape: Vec<usize> = shape.iter().map(|&d| usize::try_from(d).unwrap_or(0)).collect();
    check_out_len(info, &shape, out)?;
    match ty {
        TensorElementType::Float32 => out.copy_from_slice(value.try_extract_tensor::<f32>().map_err(model_error)?.1),
        TensorElementType::Float16 => {
            value.try_extract_tensor::<half::f16>().map_err(model_error)?.1.convert_to_f32_slice(out)
        }
        other => {
            return Err(Error::Model(format!("{}: output `{}` came back as {other:?}", path.display(), info.name)))
        }
    }
    Ok(shape)
}

impl Drop for OrtRunner {
    fn drop(&mut self) {
        // Outputs bound to this session's tensors go first; the session then waits for the next runner.
        self.bound.clear();
        self.values.clear();
        self.spares.clear();
        if let Some(session) = self.session.take() {
            self.idle.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).push(session);
        }
    }
}
