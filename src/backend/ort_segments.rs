//! A graph run by ONNX Runtime as a sequence of segments ([`super::segments`]), each loaded just
//! before it runs and dropped right after: the process holds one segment's weights at a time.
//!
//! A segment's session reads its weights from the external-data file where the system mapped it
//! (no prepacking, no level-3 layouts, as with mapped weights), so loading one costs the graph's
//! setup and page-cache reads rather than copies, and dropping it unmaps them. Its activations
//! live in its own arena, which goes with it; the tensors handed to later segments are copied out
//! first, since a tensor of the arena would keep the whole arena alive.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ort::environment::Environment;
use ort::session::SessionInputValue;
use ort::value::{DynValue, Tensor, TensorElementType, ValueType};
use prost::Message;
use tract_onnx::pb::tensor_shape_proto::dimension;
use tract_onnx::pb::type_proto::Value;
use tract_onnx::pb::{tensor_proto::DataType, ValueInfoProto};

use super::ort::{
    commit_error, copy_output, environment, model_error, new_tensor, session_builder, with_external_data_beside,
};
use super::segments::split;
use super::{
    check_inputs, check_output, default_threads, ort_lib, BackendKind, BackendOptions, DType, ExecutionProvider, Graph,
    Input, IoInfo, Runner,
};
use crate::error::{Error, Result};

/// One segment, encoded, with what it exchanges.
struct Part {
    bytes: Vec<u8>,
    inputs: Vec<String>,
    outputs: Vec<String>,
    /// Tensors no later segment reads, dropped once this one has run.
    last_read_here: Vec<String>,
}

struct Inner {
    path: PathBuf,
    env: Environment,
    ep: ExecutionProvider,
    threads: usize,
    inputs: Vec<IoInfo>,
    outputs: Vec<IoInfo>,
    parts: Vec<Part>,
}

pub(crate) struct OrtSegmentedGraph {
    inner: Arc<Inner>,
}

impl OrtSegmentedGraph {
    pub(crate) fn load(path: &Path, opts: &BackendOptions, attention_slices: usize, segments: usize) -> Result<Self> {
        if opts.execution_provider != ExecutionProvider::Cpu {
            return Err(Error::InvalidArgument(format!(
                "a graph in segments runs on the CPU provider; `{}` would set up the device on every segment",
                opts.execution_provider
            )));
        }
        let library = ort_lib::find(opts.ort_library.as_deref())?;
        let env = environment(library.path())?;
        let (model, _) = super::attention::read_sliced(path, attention_slices)?;
        let graph = model.graph.as_ref().ok_or_else(|| model_error(path, "the model has no graph"))?;
        let initializers: std::collections::HashSet<&str> = graph.initializer.iter().map(|t| t.name.as_str()).collect();
        let inputs: Vec<IoInfo> =
            graph.input.iter().filter(|i| !initializers.contains(i.name.as_str())).map(io_info).collect();
        let outputs: Vec<IoInfo> = graph.output.iter().map(io_info).collect();
        let cut = split(&model, segments).map_err(|e| model_error(path, e))?;
        drop(model);
        let mut parts: Vec<Part> = cut
            .into_iter()
            .map(|s| Part {
                bytes: s.model.encode_to_vec(),
                inputs: s.inputs,
                outputs: s.outputs,
                last_read_here: vec![],
            })
            .collect();
        // A tensor goes once the last segment reading it has run; the graph's outputs stay.
        let mut seen = std::collections::HashSet::<String>::new();
        seen.extend(outputs.iter().map(|o| o.name.clone()));
        for part in parts.iter_mut().rev() {
            part.last_read_here = part.inputs.iter().filter(|i| seen.insert((*i).clone())).cloned().collect();
        }
        log::debug!("{}: {} segments", path.display(), parts.len());
        let threads = opts.threads.unwrap_or_else(default_threads);
        let inner =
            Inner { path: path.to_path_buf(), env, ep: opts.execution_provider, threads, inputs, outputs, parts };
        Ok(OrtSegmentedGraph { inner: Arc::new(inner) })
    }
}

fn io_info(v: &ValueInfoProto) -> IoInfo {
    let (dtype, shape) = match v.r#type.as_ref().and_then(|t| t.value.as_ref()) {
        Some(Value::TensorType(t)) => {
            let dims = t.shape.as_ref().map_or(&[][..], |s| s.dim.as_slice());
            let dim = |d: &tract_onnx::pb::tensor_shape_proto::Dimension| match d.value {
                Some(dimension::Value::DimValue(v)) if v > 0 => Some(v as usize),
                _ => None,
            };
            (dtype(t.elem_type), dims.iter().map(dim).collect())
        }
        _ => (DType::Other, Vec::new()),
    };
    IoInfo { name: v.name.clone(), dtype, shape }
}

fn dtype(elem_type: i32) -> DType {
    match DataType::try_from(elem_type) {
        Ok(DataType::Float) => DType::F32,
        Ok(DataType::Float16) => DType::F16,
        Ok(DataType::Bfloat16) => DType::BF16,
        Ok(DataType::Double) => DType::F64,
        Ok(DataType::Int64) => DType::I64,
        Ok(DataType::Int32) => DType::I32,
        Ok(DataType::Int16) => DType::I16,
        Ok(DataType::Int8) => DType::I8,
        Ok(DataType::Uint8) => DType::U8,
        Ok(DataType::Bool) => DType::Bool,
        _ => DType::Other,
    }
}

impl Graph for OrtSegmentedGraph {
    fn inputs(&self) -> &[IoInfo] {
        &self.inner.inputs
    }

    fn outputs(&self) -> &[IoInfo] {
        &self.inner.outputs
    }

    fn runner(&self) -> Result<Box<dyn Runner>> {
        Ok(Box::new(SegmentedRunner { inner: Arc::clone(&self.inner) }))
    }

    fn backend(&self) -> BackendKind {
        BackendKind::Ort
    }

    fn execution_provider(&self) -> ExecutionProvider {
        self.inner.ep
    }

    fn threads(&self) -> usize {
        self.inner.threads
    }
}

/// Holds nothing between runs: every run loads and drops each segment.
struct SegmentedRunner {
    inner: Arc<Inner>,
}

impl SegmentedRunner {
    fn run_part(&self, part: &Part, values: &HashMap<String, DynValue>) -> Result<Vec<(String, DynValue)>> {
        let inner = &*self.inner;
        let path = &inner.path;
        let builder = session_builder(&inner.env, inner.ep, inner.threads, None)?;
        let mut builder = with_external_data_beside(builder, path)?;
        let started = std::time::Instant::now();
        let mut session = builder.commit_from_memory(&part.bytes).map_err(|e| commit_error(path, inner.ep, e))?;
        let set_up = started.elapsed();
        let mut feed: Vec<(&str, SessionInputValue<'_>)> = Vec::with_capacity(part.inputs.len());
        for name in &part.inputs {
            let value =
                values.get(name).ok_or_else(|| Error::Internal(format!("segment input `{name}` was not computed")))?;
            feed.push((name.as_str(), value.into()));
        }
        let results = session.run(feed).map_err(|e| model_error(path, e))?;
        log::debug!(
            "{}: segment set up in {:.0} ms, ran in {:.0} ms, resident {:.0} MB ({:.0} MB anonymous, peak {:.0} MB)",
            path.display(),
            set_up.as_secs_f64() * 1e3,
            (started.elapsed() - set_up).as_secs_f64() * 1e3,
            crate::sysinfo::rss_bytes().unwrap_or(0) as f64 / (1 << 20) as f64,
            crate::sysinfo::anon_rss_bytes().unwrap_or(0) as f64 / (1 << 20) as f64,
            crate::sysinfo::peak_rss_bytes().unwrap_or(0) as f64 / (1 << 20) as f64
        );
        part.outputs
            .iter()
            .map(|name| {
                let value = results
                    .get(name.as_str())
                    .ok_or_else(|| Error::Internal(format!("ONNX Runtime returned no segment output `{name}`")))?;
                Ok((
                    name.clone(),
                    owned_copy(value).map_err(|e| model_error(path, format!("segment output `{name}`: {e}")))?,
                ))
            })
            .collect()
    }
}

/// A copy of `value` in memory of its own: a tensor from the session's arena would keep the
/// whole arena alive after the session is gone.
fn owned_copy(value: &DynValue) -> ort::Result<DynValue> {
    fn copy<T: ort::value::PrimitiveTensorElementType + Clone + std::fmt::Debug + 'static>(
        value: &DynValue,
    ) -> ort::Result<DynValue> {
        let (shape, data) = value.try_extract_tensor::<T>()?;
        Ok(Tensor::from_array((shape.to_vec(), data.to_vec()))?.into_dyn())
    }
    match value.dtype() {
        ValueType::Tensor { ty, .. } => match ty {
            TensorElementType::Float32 => copy::<f32>(value),
            TensorElementType::Float16 => copy::<half::f16>(value),
            TensorElementType::Float64 => copy::<f64>(value),
            TensorElementType::Int64 => copy::<i64>(value),
            TensorElementType::Int32 => copy::<i32>(value),
            TensorElementType::Int8 => copy::<i8>(value),
            TensorElementType::Uint8 => copy::<u8>(value),
            TensorElementType::Bool => copy::<bool>(value),
            other => Err(ort::Error::new(format!("a {other:?} tensor cannot cross a segment cut"))),
        },
        other => Err(ort::Error::new(format!("a {other:?} cannot cross a segment cut"))),
    }
}

impl Runner for SegmentedRunner {
    fn run(&mut self, inputs: &[Input<'_>], output: usize, out: &mut [f32]) -> Result<Vec<usize>> {
        let inner = Arc::clone(&self.inner);
        check_inputs(&inner.inputs, inputs)?;
        let info = check_output(&inner.outputs, output)?;
        let mut values = HashMap::with_capacity(inputs.len());
        for input in inputs {
            let value = new_tensor(input).map_err(|e| model_error(&inner.path, e))?;
            values.insert(inner.inputs[input.index].name.clone(), value);
        }
        for part in &inner.parts {
            let made = self.run_part(part, &values)?;
            for name in &part.last_read_here {
                values.remove(name);
            }
            values.extend(made);
            // The segment's arena and graph are gone; what the allocator kept of them goes too.
            crate::sysinfo::release_freed_memory();
        }
        let value = values
            .get(&info.name)
            .ok_or_else(|| Error::Internal(format!("no segment computed output `{}`", info.name)))?;
        copy_output(&inner.path, info, value, out)
    }
}
