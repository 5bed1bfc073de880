//! What `drt inspect` shows of a model.json directory, as text and as JSON, for every entry point
//! that describes a model (a Stable Diffusion export describes itself: [`crate::sd`]).

use crate::backend::IoInfo;
use crate::error::Result;
use crate::model::Model;
use crate::request::model_defaults;

/// A manifest value's name as model.json spells it (`epsilon`, `c_noise`, ...).
fn spelled<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_value(v).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default()
}

/// What `drt inspect` prints for a model.json directory: what the manifest says, what a request
/// without sampling options runs, and the graph as the backend loaded it, one item per line.
pub fn describe(model: &Model) -> Result<String> {
    let defaults = &model_defaults(model)?;
    use std::fmt::Write as _;
    let m = model.manifest();
    let d = &m.denoiser;
    let mut out = String::new();
    let mut line = |key: &str, value: String| {
        let _ = writeln!(out, "{key:<11} {value}");
    };
    line("model", format!("{} ({})", m.name, model.dir().display()));
    let shape: Vec<String> = m.sample_shape.iter().map(|s| s.to_string()).collect();
    line("sample", format!("{} ({} values)", shape.join(" × "), model.sample_len()));
    line("prediction", spelled(&d.prediction));
    match &d.time_input {
        Some(t) => line("time input", format!("`{}`, {} × {}", t.name, spelled(&t.kind), t.scale)),
        None => line("time input", "none".into()),
    }
    match &d.class_input {
        Some(c) => line(
            "classes",
            format!(
                "{} via `{}`, {}",
                c.num_classes,
                c.name,
                c.null_class.map_or("no null class (no guidance)".into(), |n| format!("null class {n}"))
            ),
        ),
        None => line("classes", "none".into()),
    }
    for c in &d.cond_inputs {
        line("condition", format!("`{}`, default {}", c.name, c.default));
    }
    if let Some(c) = &d.context_input {
        line("context", format!("`{}`", c.name));
    }
    for ((name, shape, _), t) in model.tensor_inputs().zip(&d.tensor_inputs) {
        let null = t.null.map_or("no null (no guidance)".into(), |v| format!("null {v}"));
        line("tensor", format!("`{name}` {shape:?} per sample, {null}"));
    }
    line("schedule", model.noise_schedule().to_string());
    line("defaults", defaults.to_string());
    let g = model.graph();
    line("backend", format!("{} [{}]", g.backend_name(), g.execution_provider()));
    for i in g.inputs() {
        line("  input", i.to_string());
    }
    for o in g.outputs() {
        line("  output", o.to_string());
    }
    Ok(out)
}

/// Graph inputs or outputs as JSON: name, element type, shape (`null` for a symbolic dimension).
pub fn io_json(infos: &[IoInfo]) -> serde_json::Value {
    infos.iter().map(|i| serde_json::json!({"name": i.name, "dtype": i.dtype.name(), "shape": i.shape})).collect()
}

/// [`describe`] as JSON (`drt inspect --json`): the manifest as parsed, the defaults a request
/// gets, and the graph's inputs and outputs.
pub fn describe_json(model: &Model) -> Result<serde_json::Value> {
    let d = &model_defaults(model)?;
    let g = model.graph();
    Ok(serde_json::json!({
        "kind": "model.json",
        "dir": model.dir(),
        "sample_len": model.sample_len(),
        "manifest": model.manifest(),
        "schedule": model.noise_schedule().to_string(),
        "defaults": {"sampler": d.sampler.name(), "steps": d.steps, "guidance": d.guidance,
                     "guidance_interval": d.guidance_interval, "sigmas": d.sigmas},
        "backend": g.backend_name(),
        "execution_provider": g.execution_provider().name(),
        "inputs": io_json(g.inputs()),
        "outputs": io_json(g.outputs()),
    }))
}
