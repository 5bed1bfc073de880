//! Backends run ONNX graphs and nothing else: no schedules, no samplers, no notion of a timestep.
//!
//! A [`Graph`] is loaded once and shared by threads; each generation session takes its own [`Runner`]
//! from it, which keeps whatever per-call state the backend needs so that a sampling loop does not
//! allocate on our side of the boundary.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use crate::error::{Error, Result};

#[cfg(feature = "tract")]
pub mod attention;
#[cfg(feature = "tract")]
mod input_types;
mod narrow;
#[cfg(feature = "ort")]
mod ort;
pub mod ort_lib;
#[cfg(all(feature = "ort", feature = "tract"))]
mod ort_segments;
#[cfg(feature = "tract")]
pub mod segments;
#[cfg(feature = "tract")]
mod tract;
#[cfg(feature = "tract")]
mod tract_gemm;
#[cfg(feature = "tract")]
mod tract_nbits;

/// Element type of a graph input or output.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DType {
    F32,
    F16,
    BF16,
    F64,
    I64,
    I32,
    I16,
    I8,
    U8,
    Bool,
    /// Anything this runtime cannot feed or read (strings, complex numbers, unsigned wide ints...).
    Other,
}

impl DType {
    /// The ONNX spelling, used in messages and by `drt inspect`.
    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "float32",
            DType::F16 => "float16",
            DType::BF16 => "bfloat16",
            DType::F64 => "float64",
            DType::I64 => "int64",
            DType::I32 => "int32",
            DType::I16 => "int16",
            DType::I8 => "int8",
            DType::U8 => "uint8",
            DType::Bool => "bool",
            DType::Other => "unsupported type",
        }
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Name, element type and shape of one graph input or output, as the graph declares it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IoInfo {
    pub name: String,
    pub dtype: DType,
    /// `None` marks a symbolic or dynamic dimension (typically the batch).
    pub shape: Vec<Option<usize>>,
}

impl fmt::Display for IoInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}[", self.name, self.dtype)?;
        for (i, d) in self.shape.iter().enumerate() {
            let sep = if i == 0 { "" } else { ", " };
            match d {
                Some(d) => write!(f, "{sep}{d}")?,
                None => write!(f, "{sep}?")?,
            }
        }
        f.write_str("]")
    }
}

/// Borrowed element data of one input tensor.
#[derive(Clone, Copy, Debug)]
pub enum InputData<'a> {
    F32(&'a [f32]),
    F16(&'a [half::f16]),
    I64(&'a [i64]),
    I32(&'a [i32]),
}

impl InputData<'_> {
    pub fn dtype(&self) -> DType {
        match self {
            InputData::F32(_) => DType::F32,
            InputData::F16(_) => DType::F16,
            InputData::I64(_) => DType::I64,
            InputData::I32(_) => DType::I32,
        }
    }

    pub fn len(&self) -> usize {
        match self {
            InputData::F32(d) => d.len(),
            InputData::F16(d) => d.len(),
            InputData::I64(d) => d.len(),
            InputData::I32(d) => d.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One input of a [`Runner::run`] call. Every graph input must be given exactly once, in any order.
#[derive(Clone, Copy, Debug)]
pub struct Input<'a> {
    /// Index into [`Graph::inputs`].
    pub index: usize,
    pub shape: &'a [usize],
    pub data: InputData<'a>,
}

/// A loaded, optimised graph. Immutable and shared by every session using the model.
pub trait Graph: Send + Sync {
    fn inputs(&self) -> &[IoInfo];
    fn outputs(&self) -> &[IoInfo];
    /// Per-session execution state; creating one may be expensive (ORT builds a session), running is not.
    fn runner(&self) -> Result<Box<dyn Runner>>;
    /// [`BackendKind::Tract`] or [`BackendKind::Ort`].
    fn backend(&self) -> BackendKind;
    /// `"tract"` or `"ort"`, as reports print it.
    fn backend_name(&self) -> &'static str {
        self.backend().name()
    }
    /// The execution provider that runs the graph.
    fn execution_provider(&self) -> ExecutionProvider;
    /// Intra-op threads a runner computes with.
    fn threads(&self) -> usize {
        1
    }
}

/// Runs one graph for one session; not shared between threads, so it can hold scratch buffers.
pub trait Runner: Send {
    /// Runs the graph and copies output `output` (an index into [`Graph::outputs`], which must be
    /// float32 or float16) as f32 into `out`, whose length must equal the output's element count.
    /// Returns the output's shape. Nothing is written to `out` on error.
    fn run(&mut self, inputs: &[Input<'_>], output: usize, out: &mut [f32]) -> Result<Vec<usize>>;

    /// From now on (until switched off), every run hands the memory of its activations back to
    /// the system when it ends, instead of keeping it for the next run: for graphs that run once
    /// per generation, and for a generation's last step. Kept between the steps, it saves
    /// allocating it again (releasing after every UNet step made a 3-step Stable Diffusion 1.5
    /// generation about 8 % slower); kept by parts that run one after another, it adds up. A no-op
    /// where the backend keeps nothing (tract).
    fn release_after_run(&mut self, _on: bool) {}
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum BackendKind {
    Tract,
    Ort,
    /// ONNX Runtime when it is compiled in and its library can be found, tract otherwise.
    #[default]
    Auto,
}

impl BackendKind {
    pub fn name(self) -> &'static str {
        match self {
            BackendKind::Tract => "tract",
            BackendKind::Ort => "ort",
            BackendKind::Auto => "auto",
        }
    }
}

impl FromStr for BackendKind {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "tract" => Ok(BackendKind::Tract),
            "ort" => Ok(BackendKind::Ort),
            "auto" => Ok(BackendKind::Auto),
            _ => Err(Error::InvalidArgument(format!("unknown backend `{s}` (expected tract, ort or auto)"))),
        }
    }
}

/// Attention slices of a Stable Diffusion export's graphs unless asked otherwise: SD 1.5's
/// 512 × 512 attention maps (1 GiB each in float32) shrink to an eighth, at no measurable cost in
/// speed (docs/stable-diffusion.md).
pub const DEFAULT_SD_ATTENTION_SLICES: usize = 8;

/// Where ONNX Runtime runs a graph; anything but the CPU needs the ort backend and its build
/// feature (`--features cuda`, ...).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum ExecutionProvider {
    #[default]
    Cpu,
    Cuda,
    TensorRt,
    CoreMl,
    Nnapi,
    Xnnpack,
}

impl ExecutionProvider {
    pub const ALL: [ExecutionProvider; 6] = [
        ExecutionProvider::Cpu,
        ExecutionProvider::Cuda,
        ExecutionProvider::TensorRt,
        ExecutionProvider::CoreMl,
        ExecutionProvider::Nnapi,
        ExecutionProvider::Xnnpack,
    ];

    /// The name the CLI, C and Java take, which is also its cargo feature (but for `cpu`).
    pub fn name(self) -> &'static str {
        match self {
            ExecutionProvider::Cpu => "cpu",
            ExecutionProvider::Cuda => "cuda",
            ExecutionProvider::TensorRt => "tensorrt",
            ExecutionProvider::CoreMl => "coreml",
            ExecutionProvider::Nnapi => "nnapi",
            ExecutionProvider::Xnnpack => "xnnpack",
        }
    }
}

impl FromStr for ExecutionProvider {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        ExecutionProvider::ALL.into_iter().find(|ep| ep.name() == s).ok_or_else(|| {
            let names: Vec<&str> = ExecutionProvider::ALL.iter().map(|ep| ep.name()).collect();
            Error::InvalidArgument(format!("unknown execution provider `{s}` (expected one of {})", names.join(", ")))
        })
    }
}

impl std::fmt::Display for ExecutionProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Clone, Debug)]
pub struct BackendOptions {
    pub backend: BackendKind,
    /// Explicit ONNX Runtime library (`--ort-lib`); see [`ort_lib::find`] for the fallbacks.
    pub ort_library: Option<PathBuf>,
    pub execution_provider: ExecutionProvider,
    /// Intra-op threads for ORT (default: [`default_threads`]). tract runs single-threaded.
    pub threads: Option<usize>,
    /// Attention computed in this many slices of queries ([`attention`]); 1 = whole; `None` = the
    /// default of the kind of model (whole for model.json models,
    /// [`DEFAULT_SD_ATTENTION_SLICES`] for Stable Diffusion exports).
    pub attention_slices: Option<usize>,
    /// ONNX Runtime keeps the weights of a graph with external data in the file, memory-mapped,
    /// instead of copying them into private memory: weight prepacking off, and only the graph
    /// optimisations that leave weights as they are. Pages the system can drop and re-read, at some
    /// speed (docs/stable-diffusion.md). tract always copies.
    pub mapped_weights: bool,
    /// The graph runs as this many segments of about equal weights, each loaded just before it
    /// runs and dropped after ([`segments`]): the weights of one segment in memory at a time, at
    /// the cost of setting each up on every run. ONNX Runtime on the CPU only; `None` or 1 =
    /// whole.
    pub segments: Option<usize>,
}

impl Default for BackendOptions {
    fn default() -> Self {
        BackendOptions {
            backend: BackendKind::Auto,
            ort_library: None,
            execution_provider: ExecutionProvider::Cpu,
            threads: None,
            attention_slices: None,
            mapped_weights: false,
            segments: None,
        }
    }
}

/// Loads `path` with the backend `opts` selects.
pub fn load_graph(path: &Path, opts: &BackendOptions) -> Result<Arc<dyn Graph>> {
    load_graph_fixed(path, opts, &[])
}

/// A dimension of an input known before any call: `(input name, axis, size)`.
pub type FixedDim<'a> = (&'a str, usize, usize);

/// As [`load_graph`], with input dimensions the caller will always feed at one size (a text
/// encoder's 77 tokens): tract's analysis cannot reason about some products of two free
/// dimensions, so it gets them fixed; ONNX Runtime needs no help and keeps the graph as it is.
pub fn load_graph_fixed(path: &Path, opts: &BackendOptions, fixed: &[FixedDim<'_>]) -> Result<Arc<dyn Graph>> {
    if opts.threads == Some(0) {
        return Err(Error::InvalidArgument("threads must be at least 1".into()));
    }
    let slices = opts.attention_slices.unwrap_or(1);
    check_attention_slices(slices)?;
    // Checked here so both backends report a missing or unreadable model the same way.
    let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    if !meta.is_file() {
        return Err(Error::io(path, "not a file"));
    }
    let segments = opts.segments.unwrap_or(1);
    let graph = match resolve_kind(opts) {
        BackendKind::Tract if segments > 1 => Err(Error::InvalidArgument(
            "a graph in segments needs the ort backend (tract keeps a graph's weights in its own form)".into(),
        )),
        BackendKind::Tract => load_tract(path, opts, fixed, slices),
        _ if segments > 1 => load_ort_segments(path, opts, slices, segments),
        _ => load_ort(path, opts, slices),
    }?;
    Ok(Arc::new(narrow::Narrowing(graph)))
}

#[cfg(all(feature = "ort", feature = "tract"))]
fn load_ort_segments(path: &Path, opts: &BackendOptions, slices: usize, segments: usize) -> Result<Arc<dyn Graph>> {
    Ok(Arc::new(ort_segments::OrtSegmentedGraph::load(path, opts, slices, segments)?))
}

#[cfg(not(all(feature = "ort", feature = "tract")))]
fn load_ort_segments(_: &Path, _: &BackendOptions, _: usize, _: usize) -> Result<Arc<dyn Graph>> {
    Err(Error::BackendUnavailable(
        "a graph in segments needs the `ort` and `tract` features (tract-onnx reads the graph to cut it)".into(),
    ))
}

/// For each count in `segments`, the weight bytes of the largest segment of `path`'s graph cut
/// into that many, as a load with those options would cut it (see [`segments::split`]).
#[cfg(feature = "tract")]
pub fn largest_segments(path: &Path, attention_slices: usize, segments: &[usize]) -> Result<Vec<u64>> {
    segments::largest_segments(path, attention_slices, segments)
}

/// The element type of the input `name` of the graph at `path`, read without loading the graph
/// (see [`input_types`]); `None` for an input it cannot tell.
#[cfg(feature = "tract")]
pub fn input_type(path: &Path, name: &str) -> Result<Option<DType>> {
    input_types::input_type(path, name)
}

#[cfg(not(feature = "tract"))]
pub fn input_type(_: &Path, _: &str) -> Result<Option<DType>> {
    Ok(None)
}

#[cfg(not(feature = "tract"))]
pub fn largest_segments(_: &Path, _: usize, _: &[usize]) -> Result<Vec<u64>> {
    Err(Error::BackendUnavailable("cutting a graph into segments needs the `tract` feature".into()))
}

/// The rewrite reads graphs with tract-onnx's ONNX types, so it comes with the `tract` feature.
fn check_attention_slices(slices: usize) -> Result<()> {
    if slices == 0 {
        return Err(Error::InvalidArgument("attention slices must be at least 1".into()));
    }
    #[cfg(feature = "tract")]
    if slices > attention::MAX_SLICES {
        return Err(Error::InvalidArgument(format!(
            "attention slices must be at most {}, got {slices}",
            attention::MAX_SLICES
        )));
    }
    #[cfg(not(feature = "tract"))]
    if slices > 1 {
        return Err(Error::BackendUnavailable(
            "attention slicing rewrites graphs with tract-onnx's ONNX reader: rebuild with the `tract` feature".into(),
        ));
    }
    Ok(())
}

/// Whether graphs loaded with `opts` can run in segments: ONNX Runtime on the CPU, in a build
/// with both backends (tract-onnx reads the graph to cut it).
pub fn can_run_in_segments(opts: &BackendOptions) -> bool {
    cfg!(all(feature = "ort", feature = "tract"))
        && opts.execution_provider == ExecutionProvider::Cpu
        && resolve_kind(opts) == BackendKind::Ort
}

/// The backend `opts` loads graphs on: [`BackendKind::Auto`] resolved.
pub fn resolve_kind(opts: &BackendOptions) -> BackendKind {
    match opts.backend {
        BackendKind::Auto => {
            // An explicit library or a non-CPU provider is a request for ORT: failing loudly beats
            // silently running something else.
            let wants_ort = opts.ort_library.is_some() || opts.execution_provider != ExecutionProvider::Cpu;
            if wants_ort || (cfg!(feature = "ort") && ort_lib::available()) || !cfg!(feature = "tract") {
                BackendKind::Ort
            } else {
                BackendKind::Tract
            }
        }
        kind => kind,
    }
}

#[cfg(feature = "tract")]
fn load_tract(path: &Path, opts: &BackendOptions, fixed: &[FixedDim<'_>], slices: usize) -> Result<Arc<dyn Graph>> {
    if opts.execution_provider != ExecutionProvider::Cpu {
        return Err(Error::InvalidArgument(format!(
            "execution provider `{}` needs the ort backend; tract runs on the CPU only",
            opts.execution_provider
        )));
    }
    Ok(Arc::new(tract::TractGraph::load(path, fixed, slices)?))
}

#[cfg(not(feature = "tract"))]
fn load_tract(_: &Path, _: &BackendOptions, _: &[FixedDim<'_>], _: usize) -> Result<Arc<dyn Graph>> {
    Err(Error::BackendUnavailable("this build has no tract backend (cargo feature `tract`)".into()))
}

#[cfg(feature = "ort")]
fn load_ort(path: &Path, opts: &BackendOptions, slices: usize) -> Result<Arc<dyn Graph>> {
    Ok(Arc::new(ort::OrtGraph::load(path, opts, slices)?))
}

#[cfg(not(feature = "ort"))]
fn load_ort(_: &Path, _: &BackendOptions, _: usize) -> Result<Arc<dyn Graph>> {
    Err(Error::BackendUnavailable("this build has no ONNX Runtime backend (cargo feature `ort`)".into()))
}

/// Default intra-op thread count: the physical cores available to this process, at most 8 (small
/// denoisers stop scaling well before that, and SMT siblings only add contention).
pub fn default_threads() -> usize {
    let logical = std::thread::available_parallelism().map_or(1, |n| n.get());
    (logical / smt_ways()).clamp(1, 8)
}

#[cfg(target_os = "linux")]
fn smt_ways() -> usize {
    // /proc/cpuinfo's `siblings` (logical per package) over `cpu cores` (physical per package).
    let Ok(info) = std::fs::read_to_string("/proc/cpuinfo") else {
        return 1;
    };
    let field = |key: &str| crate::sysinfo::cpuinfo_field(&info, key).and_then(|v| v.parse::<usize>().ok());
    match (field("siblings"), field("cpu cores")) {
        (Some(s), Some(c)) if c > 0 && s >= c => s / c,
        _ => 1,
    }
}

#[cfg(not(target_os = "linux"))]
fn smt_ways() -> usize {
    1
}

/// Checks `inputs` against the graph's declared inputs: each given once, right dtype, rank, fixed
/// dimensions and element count. Allocation-free, so runners can call it on every step.
#[cfg_attr(not(any(feature = "tract", feature = "ort")), allow(dead_code))]
pub(crate) fn check_inputs(infos: &[IoInfo], inputs: &[Input<'_>]) -> Result<()> {
    if inputs.len() != infos.len() {
        let missing = infos
            .iter()
            .enumerate()
            .filter(|(i, _)| !inputs.iter().any(|inp| inp.index == *i))
            .map(|(_, info)| info.name.as_str())
            .collect::<Vec<_>>();
        return Err(Error::InvalidArgument(format!(
            "graph takes {} inputs, {} given{}",
            infos.len(),
            inputs.len(),
            if missing.is_empty() { String::new() } else { format!(" (missing: {})", missing.join(", ")) }
        )));
    }
    for (k, input) in inputs.iter().enumerate() {
        let Some(info) = infos.get(input.index) else {
            return Err(Error::InvalidArgument(format!(
                "input index {} out of range (graph has {} inputs)",
                input.index,
                infos.len()
            )));
        };
        if inputs[..k].iter().any(|other| other.index == input.index) {
            return Err(Error::InvalidArgument(format!("input `{}` given twice", info.name)));
        }
        // float32 values for a float16 input are narrowed by the runner (`narrow`).
        let narrowed = input.data.dtype() == DType::F32 && info.dtype == DType::F16;
        if input.data.dtype() != info.dtype && !narrowed {
            return Err(Error::InvalidArgument(format!(
                "input `{}` is {} in the graph, got {}",
                info.name,
                info.dtype,
                input.data.dtype()
            )));
        }
        let fits = input.shape.len() == info.shape.len()
            && input.shape.iter().zip(&info.shape).all(|(&d, want)| want.is_none_or(|w| w == d));
        if !fits {
            return Err(Error::InvalidArgument(format!("input shape {:?} does not fit {info}", input.shape)));
        }
        if input.shape.contains(&0) {
            return Err(Error::InvalidArgument(format!(
                "input `{}` has an empty dimension: {:?}",
                info.name, input.shape
            )));
        }
        match element_count(input.shape) {
            Some(n) if n == input.data.len() => {}
            _ => {
                return Err(Error::InvalidArgument(format!(
                    "input `{}` has shape {:?} but {} elements",
                    info.name,
                    input.shape,
                    input.data.len()
                )))
            }
        }
    }
    Ok(())
}

/// Whether input `info` has a symbolic leading (batch) dimension.
pub(crate) fn is_batched(info: &IoInfo) -> bool {
    matches!(info.shape.first(), Some(None))
}

/// The batch of a call: the leading dimension of the first given input whose graph declares a
/// symbolic one.
#[cfg_attr(not(any(feature = "tract", feature = "ort")), allow(dead_code))]
pub(crate) fn call_batch(infos: &[IoInfo], inputs: &[Input<'_>]) -> Option<usize> {
    inputs.iter().find(|i| is_batched(&infos[i.index])).and_then(|i| i.shape.first().copied())
}

#[cfg_attr(not(any(feature = "tract", feature = "ort")), allow(dead_code))]
pub(crate) fn element_count(shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d))
}

/// Validates the output index and that it is a float output we can hand back as f32.
#[cfg_attr(not(any(feature = "tract", feature = "ort")), allow(dead_code))]
pub(crate) fn check_output(infos: &[IoInfo], output: usize) -> Result<&IoInfo> {
    let info = infos.get(output).ok_or_else(|| {
        Error::InvalidArgument(format!("output index {output} out of range (graph has {} outputs)", infos.len()))
    })?;
    match info.dtype {
        DType::F32 | DType::F16 => Ok(info),
        dt => Err(Error::InvalidArgument(format!(
            "output `{}` is {dt}; only float32/float16 outputs can be read",
            info.name
        ))),
    }
}

/// Checks that `out` can take an output of `shape` before anything is copied into it.
#[cfg_attr(not(any(feature = "tract", feature = "ort")), allow(dead_code))]
pub(crate) fn check_out_len(info: &IoInfo, shape: &[usize], out: &[f32]) -> Result<()> {
    match element_count(shape) {
        Some(n) if n == out.len() => Ok(()),
        _ => Err(Error::InvalidArgument(format!(
            "output `{}` has shape {shape:?} but the output buffer holds {} values",
            info.name,
            out.len()
        ))),
    }
}
