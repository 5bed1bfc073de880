//! The pure-Rust backend: tract-onnx, always available, CPU only, single-threaded.
//!
//! The graph keeps its own symbolic batch dimension. Pinning input facts to a concrete batch looks
//! tempting (more constant folding) but contradicts the `value_info` many exporters write and makes
//! analysis fail; a symbolic batch also lets one runner serve both batch B and 2B (guidance).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use half::slice::HalfFloatSliceExt;
use smallvec::SmallVec;
use tract_onnx::prelude::*;
use tract_onnx::tract_core::floats::FloatPrecisionTranslator;
use tract_onnx::tract_core::transform::ModelTransform;

use super::{
    call_batch, check_inputs, check_out_len, check_output, is_batched, BackendKind, DType, ExecutionProvider, Graph,
    Input, InputData, IoInfo, Runner,
};
use crate::error::{Error, Result};

struct Shared {
    path: PathBuf,
    inputs: Vec<IoInfo>,
    outputs: Vec<IoInfo>,
    /// Run one batch item at a time (see [`needs_item_by_item`]).
    item_by_item: bool,
    /// A float16 graph runs in float32 ([`WIDEN_FLOAT16`]): its float16 inputs are widened on the way
    /// in and its outputs rounded to float16 on the way out.
    widened: bool,
}

/// Whether float16 graphs run in float32. tract has float16 kernels only on aarch64; elsewhere its
/// float16 operators are slow generic code that also rounds differently from ONNX Runtime, which
/// (on x86 CPUs) itself runs most float16 operators in float32 between casts.
const WIDEN_FLOAT16: bool = !cfg!(target_arch = "aarch64");

impl Shared {
    fn model_error(&self, e: TractError) -> Error {
        // `{:#}` prints anyhow's whole context chain, which is where tract says which node failed.
        Error::Model(format!("{}: {e:#}", self.path.display()))
    }
}

pub(crate) struct TractGraph {
    shared: Arc<Shared>,
    plan: Arc<TypedSimplePlan>,
}

impl TractGraph {
    pub(crate) fn load(path: &Path, fixed: &[super::FixedDim<'_>], attention_slices: usize) -> Result<Self> {
        // tract's analysis has panicking paths on malformed graphs; a bad file must stay an error.
        crate::panic::catch(|| Self::load_inner(path, fixed, attention_slices))
            .unwrap_or_else(|what| Err(Error::Model(format!("{}: tract failed while loading: {what}", path.display()))))
    }

    fn load_inner(path: &Path, fixed: &[super::FixedDim<'_>], attention_slices: usize) -> Result<Self> {
        let err = |e: TractError| {
            let msg = format!("{e:#}");
            if msg.contains("F16") {
                // tract 0.23.9 translates some float16 operators (Gemm among them) into float32 ones.
                Error::Model(format!(
                    "{}: tract cannot run this float16 graph ({msg}); run it on ONNX Runtime (backend `ort`) \
                     or use a float32 export",
                    path.display()
                ))
            } else {
                Error::Model(format!("{}: {msg}", path.display()))
            }
        };
        let onnx = tract_onnx::onnx();
        let mut proto = onnx.proto_model_for_path(path).map_err(err)?;
        let rewritten = super::tract_gemm::rewrite_float16_gemms(&mut proto);
        if rewritten > 0 {
            log::debug!("{}: {rewritten} float16 Gemm nodes run as MatMul + Add", path.display());
        }
        let widened = super::tract_nbits::widen_matmul_nbits(&mut proto)
            .map_err(|e| e.map_message(|m| format!("{}: {m}", path.display())))?;
        if widened > 0 {
            log::debug!("{}: {widened} MatMulNBits nodes run as float32 MatMul", path.display());
        }
        let sliced = super::attention::slice_attention(&mut proto, attention_slices);
        if sliced > 0 {
            log::debug!("{}: {sliced} attentions in {attention_slices} slices", path.display());
        }
        let parsed = onnx.parse(&proto, path.parent().and_then(|d| d.to_str())).map_err(err)?;
        if !parsed.unresolved_inputs.is_empty() {
            return Err(Error::Model(format!("{}: unresolved inputs {:?}", path.display(), parsed.unresolved_inputs)));
        }
        let mut model = parsed.model;
        for &(name, axis, size) in fixed {
            let i = model
                .inputs
                .iter()
                .position(|o| model.node(o.node).name == name)
                .ok_or_else(|| Error::Model(format!("{}: no input `{name}`", path.display())))?;
            let fact = model.input_fact_mut(i).map_err(err)?;
            if !fact.shape.set_dim(axis, TDim::from(size as i64)) {
                return Err(Error::Model(format!(
                    "{}: input `{name}` has no axis {axis} of size {size}",
                    path.display()
                )));
            }
        }
        // Names come from the graph as parsed: optimisation may fold an input's first op into it and
        // relabel the outlet (a `timestep` feeding a Cast came out as `/Cast_output_0`).
        let input_names = model.inputs.iter().map(|o| model.node(o.node).name.clone()).collect::<Vec<_>>();
        let output_names = model
            .outputs
            .iter()
            .map(|&o| model.outlet_label(o).unwrap_or(&model.node(o.node).name).to_string())
            .collect::<Vec<_>>();
        let mut model = model.into_typed().map_err(err)?.into_decluttered().map_err(err)?;
        // The graph's own types, which callers see and feed, even where it runs widened.
        let inputs = io_infos(input_names, |i| model.input_fact(i)).map_err(err)?;
        let outputs = io_infos(output_names, |i| model.output_fact(i)).map_err(err)?;
        let widened = WIDEN_FLOAT16 && [&inputs, &outputs].iter().any(|io| io.iter().any(|i| i.dtype == DType::F16));
        if widened {
            FloatPrecisionTranslator::new(DatumType::F16, DatumType::F32).transform(&mut model).map_err(err)?;
        }
        let model = model.into_optimized().map_err(err)?;
        let plan = TypedSimplePlan::new(model).map_err(err)?;
        log::debug!("tract loaded {}: inputs {inputs:?}, outputs {outputs:?}", path.display());
        let item_by_item = needs_item_by_item(&inputs);
        Ok(TractGraph {
            shared: Arc::new(Shared { path: path.to_path_buf(), inputs, outputs, item_by_item, widened }),
            plan,
        })
    }
}

/// tract 0.23.9's declutter folds `x * ones(batch)` in int64 down to `x`, losing the broadcast, so a
/// graph that broadcasts a rank-0 integer input (a diffusers UNet exported with a scalar int64
/// timestep) fails at batch >= 2. Such a graph is exact one batch item at a time, and the scalar is
/// shared by the whole batch anyway.
fn needs_item_by_item(inputs: &[IoInfo]) -> bool {
    let scalar_int = inputs.iter().any(|i| i.shape.is_empty() && matches!(i.dtype, DType::I64 | DType::I32));
    let batched = inputs.iter().any(is_batched);
    scalar_int && batched
}

fn io_infos<'m>(names: Vec<String>, fact: impl Fn(usize) -> TractResult<&'m TypedFact>) -> TractResult<Vec<IoInfo>> {
    let mut infos = Vec::with_capacity(names.len());
    for (i, name) in names.into_iter().enumerate() {
        let fact = fact(i)?;
        let shape = fact.shape.iter().map(|d| d.as_i64().and_then(|v| usize::try_from(v).ok())).collect();
        infos.push(IoInfo { name, dtype: dtype_of(fact.datum_type), shape });
    }
    Ok(infos)
}

fn dtype_of(dt: DatumType) -> DType {
    match dt {
        DatumType::F32 => DType::F32,
        DatumType::F16 => DType::F16,
        DatumType::F64 => DType::F64,
        DatumType::I64 => DType::I64,
        DatumType::I32 => DType::I32,
        DatumType::I16 => DType::I16,
        DatumType::I8 => DType::I8,
        DatumType::U8 => DType::U8,
        DatumType::Bool => DType::Bool,
        _ => DType::Other,
    }
}

impl Graph for TractGraph {
    fn inputs(&self) -> &[IoInfo] {
        &self.shared.inputs
    }

    fn outputs(&self) -> &[IoInfo] {
        &self.shared.outputs
    }

    fn runner(&self) -> Result<Box<dyn Runner>> {
        let state = self.plan.spawn().map_err(|e| self.shared.model_error(e))?;
        let slots = vec![None; self.shared.inputs.len()];
        Ok(Box::new(TractRunner { shared: self.shared.clone(), plan: self.plan.clone(), state, slots }))
    }

    fn backend(&self) -> BackendKind {
        BackendKind::Tract
    }

    fn execution_provider(&self) -> ExecutionProvider {
        ExecutionProvider::Cpu
    }
}

struct TractRunner {
    shared: Arc<Shared>,
    plan: Arc<TypedSimplePlan>,
    state: TypedSimpleState,
    /// Input tensors kept between calls: tract drops its references at the end of a run, so the
    /// next call with the same shape refills these in place instead of allocating.
    slots: Vec<Option<Arc<Tensor>>>,
}

impl Runner for TractRunner {
    fn run(&mut self, inputs: &[Input<'_>], output: usize, out: &mut [f32]) -> Result<Vec<usize>> {
        check_inputs(&self.shared.inputs, inputs)?;
        let batch = call_batch(&self.shared.inputs, inputs).unwrap_or(1);
        if !self.shared.item_by_item || batch <= 1 {
            return self.run_checked(inputs, output, out);
        }
        let per_out = out.len() / batch;
        let shared = Arc::clone(&self.shared);
        let is_batched = |i: &Input<'_>| is_batched(&shared.inputs[i.index]);
        // Batched inputs get a batch of one; the rest keep their shapes.
        let shapes: SmallVec<[SmallVec<[usize; 6]>; 8]> = inputs
            .iter()
            .map(|i| {
                let mut s: SmallVec<[usize; 6]> = SmallVec::from_slice(i.shape);
                if is_batched(i) {
                    s[0] = 1;
                }
                s
            })
            .collect();
        let mut shape = Vec::new();
        for b in 0..batch {
            let item: SmallVec<[Input<'_>; 8]> = inputs
                .iter()
                .zip(&shapes)
                .map(|(i, s)| if is_batched(i) { batch_item(i, s, batch, b) } else { *i })
                .collect();
            shape = self.run_checked(&item, output, &mut out[b * per_out..(b + 1) * per_out])?;
        }
        if let Some(first) = shape.first_mut() {
            *first = batch;
        }
        Ok(shape)
    }
}

/// Item `b` of a batched input, with `shape` its batch-of-one shape.
fn batch_item<'a>(input: &Input<'a>, shape: &'a [usize], batch: usize, b: usize) -> Input<'a> {
    let per = input.data.len() / batch;
    let range = b * per..(b + 1) * per;
    let data = match input.data {
        InputData::F32(d) => InputData::F32(&d[range]),
        InputData::F16(d) => InputData::F16(&d[range]),
        InputData::I64(d) => InputData::I64(&d[range]),
        InputData::I32(d) => InputData::I32(&d[range]),
    };
    Input { index: input.index, shape, data }
}

impl TractRunner {
    /// One run of the plan on already-checked inputs.
    fn run_checked(&mut self, inputs: &[Input<'_>], output: usize, out: &mut [f32]) -> Result<Vec<usize>> {
        let info = check_output(&self.shared.outputs, output)?;
        let mut values: TVec<TValue> = TVec::with_capacity(inputs.len());
        for (index, slot) in self.slots.iter_mut().enumerate() {
            let input = inputs
                .iter()
                .find(|i| i.index == index)
                .ok_or_else(|| Error::Internal(format!("input {index} vanished after validation")))?;
            fill(slot, input, self.shared.widened).map_err(|e| self.shared.model_error(e))?;
            if let Some(tensor) = slot {
                values.push(TValue::from_const(tensor.clone()));
            }
        }
        // Some tract kernels index with input values unchecked and panic (a Gather fed an out-of-range
        // class label does). The process must survive any input, so a panic becomes an error and the
        // state, possibly half-updated, is replaced.
        let state = &mut self.state;
        let results = match crate::panic::catch(|| state.run(values)) {
            Ok(run) => run.map_err(|e| self.shared.model_error(e))?,
            Err(what) => {
                self.state = self.plan.spawn().map_err(|e| self.shared.model_error(e))?;
                self.slots.iter_mut().for_each(|s| *s = None);
                return Err(Error::Model(format!(
                    "{}: tract failed on these inputs (out-of-range index?): {what}",
                    self.shared.path.display()
                )));
            }
        };
        let value = results.get(output).ok_or_else(|| Error::Internal(format!("tract returned no output {output}")))?;
        let shape = value.shape();
        check_out_len(info, shape, out)?;
        let view = value.try_as_plain_ram().map_err(|e| self.shared.model_error(e))?;
        match value.datum_type() {
            DatumType::F32 => {
                let v = view.as_slice::<f32>().map_err(|e| self.shared.model_error(e))?;
                if info.dtype == DType::F16 {
                    for (o, &v) in out.iter_mut().zip(v) {
                        *o = f16::from_f32(v).to_f32();
                    }
                } else {
                    out.copy_from_slice(v);
                }
            }
            DatumType::F16 => view.as_slice::<f16>().map_err(|e| self.shared.model_error(e))?.convert_to_f32_slice(out),
            dt => {
                return Err(Error::Model(format!(
                    "{}: output `{}` came back as {dt:?}",
                    self.shared.path.display(),
                    info.name
                )))
            }
        }
        Ok(shape.to_vec())
    }
}

/// Puts `input` into `slot`, reusing the tensor there when tract no longer holds it and the shape and
/// type match; float16 data goes in as float32 when the graph runs `widened`.
fn fill(slot: &mut Option<Arc<Tensor>>, input: &Input<'_>, widened: bool) -> TractResult<()> {
    let dtype = match input.data {
        InputData::F16(_) if widened => DType::F32,
        d => d.dtype(),
    };
    if let Some(tensor) = slot.as_mut().and_then(Arc::get_mut) {
        if tensor.shape() == input.shape && dtype_of(tensor.datum_type()) == dtype {
            let mut view = tensor.try_as_plain_ram_mut()?;
            match input.data {
                InputData::F32(d) => view.as_slice_mut::<f32>()?.copy_from_slice(d),
                InputData::F16(d) if widened => d.convert_to_f32_slice(view.as_slice_mut::<f32>()?),
                InputData::F16(d) => view.as_slice_mut::<f16>()?.copy_from_slice(d),
                InputData::I64(d) => view.as_slice_mut::<i64>()?.copy_from_slice(d),
                InputData::I32(d) => view.as_slice_mut::<i32>()?.copy_from_slice(d),
            }
            return Ok(());
        }
    }
    let tensor = match input.data {
        InputData::F32(d) => Tensor::from_shape(input.shape, d)?,
        InputData::F16(d) if widened => Tensor::from_shape(input.shape, &d.to_f32_vec())?,
        InputData::F16(d) => Tensor::from_shape(input.shape, d)?,
        InputData::I64(d) => Tensor::from_shape(input.shape, d)?,
        InputData::I32(d) => Tensor::from_shape(input.shape, d)?,
    };
    *slot = Some(Arc::new(tensor));
    Ok(())
}
