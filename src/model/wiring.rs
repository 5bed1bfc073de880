//! The manifest checked against the graph: where each manifest role sits among the graph's inputs,
//! and how it is fed. Every error names the manifest key at fault.

use crate::backend::{DType, Graph, IoInfo};
use crate::error::{Error, Result};
use crate::manifest::{ClassInput, CondInput, ContextInput, Manifest, TensorInput, TimeInput, TimeKind};
use crate::schedule::NoiseSchedule;

/// Where each manifest role sits among the graph's inputs, and how it is fed.
#[derive(Clone, Debug)]
pub(super) struct Wiring {
    pub sample: usize,
    /// Input index, element type, and whether it is per-sample (`[B]`) rather than a scalar.
    pub time: Option<(usize, DType, bool)>,
    pub class: Option<(usize, DType)>,
    /// Input index of each float input (float32 or float16: the runner narrows, so the type is
    /// not needed past the check here).
    pub conds: Vec<usize>,
    /// Input index and width (last dimension) of the context input.
    pub context: Option<(usize, Option<usize>)>,
    /// Per tensor input (the manifest's order): input index, per-sample shape.
    pub tensors: Vec<(usize, Vec<usize>)>,
    pub output: usize,
    /// A batch dimension fixed in the graph (`None` = symbolic).
    pub fixed_batch: Option<usize>,
}

fn find(infos: &[IoInfo], name: &str, key: &str, what: &str) -> Result<usize> {
    infos.iter().position(|i| i.name == name).ok_or_else(|| {
        let names: Vec<&str> = infos.iter().map(|i| i.name.as_str()).collect();
        Error::Manifest(format!("key `{key}`: the graph has no {what} `{name}` (it has: {})", names.join(", ")))
    })
}

/// Checks the manifest against the graph: names, element types, ranks and static dimensions.
pub(super) fn wire(m: &Manifest, g: &dyn Graph, schedule: &NoiseSchedule) -> Result<Wiring> {
    let d = &m.denoiser;
    let ins = g.inputs();
    let sample = find(ins, &d.sample_input, "denoiser.sample_input", "input")?;
    let output = find(g.outputs(), &d.output, "denoiser.output", "output")?;
    let fixed_batch = wire_sample(m, &ins[sample], &g.outputs()[output])?;
    let time = d.time_input.as_ref().map(|t| wire_time(t, ins, schedule)).transpose()?;
    let class = d.class_input.as_ref().map(|c| wire_class(c, ins)).transpose()?;
    let conds = d.cond_inputs.iter().map(|c| wire_cond(c, ins)).collect::<Result<Vec<_>>>()?;
    let context = d.context_input.as_ref().map(|c| wire_context(c, ins)).transpose()?;
    let tensors = d.tensor_inputs.iter().map(|t| wire_tensor(t, ins)).collect::<Result<Vec<_>>>()?;
    let mut used: Vec<usize> = vec![sample];
    used.extend(context.map(|c| c.0));
    used.extend(time.map(|t| t.0));
    used.extend(class.map(|c| c.0));
    used.extend(conds.iter().copied());
    used.extend(tensors.iter().map(|t| t.0));
    if let Some(extra) = ins.iter().enumerate().find(|(i, _)| !used.contains(i)) {
        return bad("denoiser", format!("graph input `{}` is not described in model.json", extra.1));
    }
    Ok(Wiring { sample, time, class, conds, context, tensors, output, fixed_batch })
}

fn bad<T>(key: &str, msg: String) -> Result<T> {
    Err(Error::Manifest(format!("key `{key}`: {msg}")))
}

/// The sample input and the output against `sample_shape` (the input with its extra channels);
/// returns the batch either fixes, if any.
fn wire_sample(m: &Manifest, input: &IoInfo, output: &IoInfo) -> Result<Option<usize>> {
    let mut fixed_batch = None;
    let extra = m.denoiser.sample_extra_channels;
    for (key, info, extra) in [("denoiser.sample_input", input, extra), ("denoiser.output", output, 0)] {
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
            let dims: Vec<String> = m.sample_shape.iter().map(|s| s.to_string()).collect();
            return bad(
                key,
                format!(
                    "`{info}` contradicts sample_shape {:?} (expected [batch, {}])",
                    m.sample_shape,
                    dims.join(", ")
                ),
            );
        }
        if let Some(b) = info.shape[0] {
            fixed_batch = Some(fixed_batch.map_or(b, |f: usize| f.min(b)));
        }
    }
    // Mixed-precision graphs (float16 in, float32 out or the reverse) exist: both ends are
    // converted independently, so nothing more to check.
    Ok(fixed_batch)
}

fn wire_time(t: &TimeInput, ins: &[IoInfo], schedule: &NoiseSchedule) -> Result<(usize, DType, bool)> {
    if matches!(schedule, NoiseSchedule::Vp(_)) && t.kind == TimeKind::Index {
        return bad("denoiser.time_input.kind", "a vp schedule has no timestep index; feed it `t`".into());
    }
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
    Ok((i, info.dtype, per_sample))
}

fn wire_class(c: &ClassInput, ins: &[IoInfo]) -> Result<(usize, DType)> {
    let i = find(ins, &c.name, "denoiser.class_input.name", "input")?;
    let info = &ins[i];
    if !matches!(info.dtype, DType::I64 | DType::I32) || info.shape.len() != 1 {
        return bad("denoiser.class_input", format!("`{info}` must be int64 or int32 of shape [batch]"));
    }
    if let Some(n) = c.null_class {
        if n < c.num_classes as i64 {
            return bad(
                "denoiser.class_input.null_class",
                format!("{n} is one of the {} real classes; the null class must be >= num_classes", c.num_classes),
            );
        }
    }
    Ok((i, info.dtype))
}

fn wire_cond(c: &CondInput, ins: &[IoInfo]) -> Result<usize> {
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
    Ok(i)
}

fn wire_context(c: &ContextInput, ins: &[IoInfo]) -> Result<(usize, Option<usize>)> {
    let i = find(ins, &c.name, "denoiser.context_input.name", "input")?;
    let info = &ins[i];
    if !matches!(info.dtype, DType::F32 | DType::F16) || info.shape.len() != 3 {
        return bad("denoiser.context_input", format!("`{info}` must be float32 or float16 [batch, tokens, width]"));
    }
    Ok((i, info.shape[2]))
}

fn wire_tensor(t: &TensorInput, ins: &[IoInfo]) -> Result<(usize, Vec<usize>)> {
    let i = find(ins, &t.name, "denoiser.tensor_inputs.name", "input")?;
    let info = &ins[i];
    if !matches!(info.dtype, DType::F32 | DType::F16) || info.shape.is_empty() {
        return bad("denoiser.tensor_inputs", format!("`{info}` must be a float32 or float16 tensor [batch, ...]"));
    }
    // The caller passes values without a shape (C gives a pointer and a length), so the graph must
    // say what one sample's tensor is.
    let per: Option<Vec<usize>> = info.shape[1..].iter().map(|d| d.filter(|&d| d > 0)).collect();
    match per {
        Some(per)
            if per
                .iter()
                .try_fold(1usize, |a, &d| a.checked_mul(d))
                .is_some_and(|n| n <= crate::limits::MAX_TENSOR_VALUES) =>
        {
            Ok((i, per))
        }
        Some(_) => bad("denoiser.tensor_inputs", format!("`{info}` is too large")),
        None => bad("denoiser.tensor_inputs", format!("`{info}` needs fixed dimensions after the batch")),
    }
}
