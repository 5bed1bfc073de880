//! "A model that is not ours runs unchanged given only a `model.json`."
//!
//! `tests/fixtures/foreign/` holds a diffusers `UNet2DModel` with seeded random weights, exported by
//! `make_foreign.py` with an interface unlike the shipped digits model (3 channels, an int64 `[batch]`
//! `timestep`, no class input, v-prediction, Stable Diffusion's `scaled_linear` betas with `leading`
//! spacing and `steps_offset` 1), the hand-written `model.json` for it, and the final samples diffusers'
//! DDIM, Euler and DPM-Solver++(2M) schedulers reach driving the *PyTorch* module from fixed noise.
//! The folder is loaded exactly as committed; each sampler must land within relative L2 1e-4.
//!
//! A rank-0 int64 timestep (another common export) is covered at the graph level by
//! `scalar_timestep_repro.onnx`: onnxruntime runs it batched, tract 0.23.9's optimiser cannot, so
//! the tract backend runs it one batch item at a time.

mod common;

use std::path::{Path, PathBuf};

use common::{backends, load, rel_l2, repo, TempDir};
use diffusion_rt::backend::{load_graph, BackendKind, DType, Input, InputData};
use diffusion_rt::manifest::{NoiseScheduleSpec, Prediction};
use diffusion_rt::{npy, GenerateParams, Session};
use serde_json::{json, Value};

const TOLERANCE: f64 = 1e-4;
/// A wrong adapter must miss the reference by far more than this.
const MISMATCH: f64 = 1e-2;

fn fixture_dir() -> PathBuf {
    repo().join("tests/fixtures/foreign")
}

fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn index() -> Value {
    read_json(&fixture_dir().join("index.json"))
}

fn load_npy(name: &str) -> npy::Array {
    npy::read(&fixture_dir().join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn cases(index: &Value) -> &Vec<Value> {
    index["cases"].as_array().expect("cases")
}

/// The case's diffusers run, as a generation: its sampler, step count and initial noise, and
/// nothing else (the schedule, spacing, offset and prediction type all come from `model.json`).
fn params(index: &Value, case: &Value) -> GenerateParams {
    GenerateParams {
        sampler: Some(case["sampler"].as_str().expect("sampler").to_string()),
        steps: Some(case["steps"].as_u64().expect("steps") as u32),
        batch: index["batch"].as_u64().expect("batch") as usize,
        noise: Some(load_npy(index["init_noise"].as_str().expect("init_noise")).data),
        ..GenerateParams::default()
    }
}

/// Runs every case on the model in `dir`; returns (case name, rel L2 to the reference, samples).
fn run_cases(dir: &Path, backend: BackendKind) -> Vec<(String, f64, Vec<f32>)> {
    let index = index();
    let model = load(dir, backend);
    let mut session = Session::new(&model).expect("session");
    cases(&index)
        .iter()
        .map(|case| {
            let name = case["name"].as_str().expect("name").to_string();
            let gen = session
                .generate(&params(&index, case), &mut |_, _| true)
                .unwrap_or_else(|e| panic!("{name} on {backend:?}: {e}"));
            assert_eq!(gen.steps, case["steps"].as_u64().expect("steps") as usize, "{name}");
            let want = load_npy(case["output"].as_str().expect("output"));
            (name, rel_l2(&gen.samples, &want.data), gen.samples)
        })
        .collect()
}

#[test]
fn fixture_is_a_foreign_interface_described_by_model_json() {
    let index = index();
    let manifest = read_json(&fixture_dir().join("model.json"));
    let batch = index["batch"].as_u64().expect("batch") as usize;
    let shape: Vec<usize> = manifest["sample_shape"]
        .as_array()
        .expect("sample_shape")
        .iter()
        .map(|v| v.as_u64().expect("dim") as usize)
        .collect();
    let mut full = vec![batch];
    full.extend(&shape);
    assert_eq!(load_npy(index["init_noise"].as_str().expect("init")).shape, full);

    let onnx = fixture_dir().join(manifest["denoiser"]["onnx"].as_str().expect("onnx"));
    let size = std::fs::metadata(&onnx).expect("unet.onnx").len();
    assert!(size < 1 << 20, "{} is {size} bytes; keep it under 1 MiB", onnx.display());

    // model.json restates the diffusers scheduler config every reference was made with.
    let schedule = &manifest["noise_schedule"];
    let samplers: Vec<&str> = cases(&index).iter().map(|c| c["sampler"].as_str().expect("sampler")).collect();
    assert_eq!(samplers, ["ddim", "euler", "dpmpp-2m"]);
    for case in cases(&index) {
        let name = case["name"].as_str().expect("name");
        assert_eq!(load_npy(case["output"].as_str().expect("output")).shape, full, "{name}");
        for (k, v) in case["config"].as_object().expect("config") {
            match k.as_str() {
                "num_train_timesteps"
                | "beta_schedule"
                | "beta_start"
                | "beta_end"
                | "timestep_spacing"
                | "steps_offset"
                | "set_alpha_to_one" => assert_eq!(&schedule[k], v, "{name}: noise_schedule.{k}"),
                "prediction_type" => assert_eq!(&manifest["denoiser"]["prediction"], v, "{name}"),
                "clip_sample" => assert_eq!(v, false, "{name}"),
                "algorithm_type" => assert_eq!(v, "dpmsolver++", "{name}"),
                "solver_order" => assert_eq!(v, 2, "{name}"),
                other => panic!("{name}: config key {other} has no counterpart in model.json"),
            }
        }
    }

    // The interface the adapters must bridge, as each backend reads it from the graph.
    for backend in backends() {
        let model = load(&fixture_dir(), backend);
        let m = model.manifest();
        assert_eq!(m.denoiser.prediction, Prediction::VPrediction);
        assert!(m.denoiser.class_input.is_none() && m.denoiser.cond_inputs.is_empty());
        assert!(matches!(m.noise_schedule, NoiseScheduleSpec::Discrete { .. }));
        let time = m.denoiser.time_input.as_ref().expect("time_input");
        let info = model.graph().inputs().iter().find(|i| i.name == time.name).expect("timestep input");
        assert_eq!(
            (info.dtype, &info.shape[..]),
            (DType::I64, &[None][..]),
            "{backend:?}: `{info}` should be int64 [batch]"
        );
        assert_eq!(model.graph().inputs().len(), 2, "{backend:?}: sample and timestep only");
    }
}

#[test]
fn foreign_unet_matches_diffusers_and_backends_agree() {
    let mut per_backend = Vec::new();
    let mut failures = Vec::new();
    for backend in backends() {
        let results = run_cases(&fixture_dir(), backend);
        for (name, err, _) in &results {
            println!("{backend:?} {name}: rel L2 {err:.2e}");
            if err.is_nan() || *err > TOLERANCE {
                failures.push(format!("{backend:?} {name}: {err:.3e}"));
            }
        }
        per_backend.push(results);
    }
    assert!(failures.is_empty(), "cases over {TOLERANCE}: {failures:?}");
    if let [tract, ort] = &per_backend[..] {
        for ((name, _, a), (_, _, b)) in tract.iter().zip(ort) {
            let err = rel_l2(a, b);
            println!("tract vs ort {name}: rel L2 {err:.2e}");
            assert!(err <= TOLERANCE, "{name}: tract and ort differ by {err:.3e}");
        }
    }
}

/// The comparison can fail: the same graph read as an epsilon predictor misses every reference.
#[test]
fn wrong_prediction_type_is_caught() {
    let tmp = TempDir::new("foreign-eps");
    let mut manifest = read_json(&fixture_dir().join("model.json"));
    manifest["denoiser"]["prediction"] = json!("epsilon");
    let onnx = fixture_dir().join(manifest["denoiser"]["onnx"].as_str().expect("onnx"));
    manifest["denoiser"]["onnx"] = json!(onnx);
    std::fs::write(tmp.path().join("model.json"), serde_json::to_string_pretty(&manifest).expect("json"))
        .expect("write");
    for (name, err, _) in run_cases(tmp.path(), BackendKind::Tract) {
        println!("Tract {name} read as epsilon: rel L2 {err:.2e}");
        assert!(err > MISMATCH, "{name}: an epsilon reading of a v-prediction model still matched ({err:.3e})");
    }
}

/// A diffusers UNet's time-embedding prologue exported with a rank-0 int64 timestep
/// (`timestep * ones(batch)` in int64, then a MatMul), run at batch 2 through the backend alone.
fn scalar_timestep_graph(backend: BackendKind) {
    let repro = &index()["scalar_timestep_repro"];
    let path = fixture_dir().join(repro["onnx"].as_str().expect("onnx"));
    let graph = load_graph(&path, &common::options(backend)).unwrap_or_else(|e| panic!("{backend:?}: {e}"));
    let pos =
        |name: &str| graph.inputs().iter().position(|i| i.name == name).unwrap_or_else(|| panic!("no input {name}"));
    let t = pos("timestep");
    assert_eq!((graph.inputs()[t].dtype, graph.inputs()[t].shape.len()), (DType::I64, 0));
    let batch = repro["batch"].as_u64().expect("batch") as usize;
    let want: Vec<f32> =
        repro["out"].as_array().expect("out").iter().map(|v| v.as_f64().expect("value") as f32).collect();
    let sample = vec![0f32; batch * 3];
    let timestep = [repro["timestep"].as_i64().expect("timestep")];
    let sample_shape = [batch, 3];
    let inputs = [
        Input { index: pos("sample"), shape: &sample_shape, data: InputData::F32(&sample) },
        Input { index: t, shape: &[], data: InputData::I64(&timestep) },
    ];
    let mut out = vec![0f32; want.len()];
    let mut runner = graph.runner().expect("runner");
    let shape = runner.run(&inputs, 0, &mut out).unwrap_or_else(|e| panic!("{backend:?} at batch {batch}: {e}"));
    assert_eq!(shape, [batch, 16], "{backend:?}");
    let err = rel_l2(&out, &want);
    println!("{backend:?} rank-0 int64 timestep graph: rel L2 {err:.2e}");
    assert!(err <= TOLERANCE, "{backend:?}: {err:.3e}");
}

#[test]
fn scalar_int64_timestep_graph_on_ort() {
    if common::ort_available() {
        scalar_timestep_graph(BackendKind::Ort);
    }
}

/// tract 0.23.9 `into_optimized` folds `Mul(timestep, ConstantOfShape([batch]))` (int64, lowered to
/// TDim) to the bare timestep, so the embedding stays `[1, 8]` while its fact says `[batch, 8]`; the
/// optimised MatMul, packed for `batch` rows, then panics (`b_packing.dyn_eq(b.format())` in
/// `ProtoFusedSpec::resolve`). Batch 1 and a float32 timestep are unaffected, so the tract backend
/// runs such graphs one batch item at a time.
#[test]
fn scalar_int64_timestep_graph_on_tract() {
    scalar_timestep_graph(BackendKind::Tract);
}

/// The same UNet exported with a rank-0 int64 timestep (as many diffusers exports are) gives the same
/// samples on every backend: the tract backend runs such graphs one batch item at a time, as its
/// optimiser cannot batch them (see `scalar_int64_timestep_graph_on_tract`).
#[test]
fn scalar_timestep_export_of_the_same_unet_matches() {
    let tmp = TempDir::new("foreign-scalar");
    let mut manifest = read_json(&fixture_dir().join("model.json"));
    manifest["denoiser"]["onnx"] = json!(fixture_dir().join("unet_scalar_timestep.onnx"));
    std::fs::write(tmp.path().join("model.json"), serde_json::to_string_pretty(&manifest).expect("json"))
        .expect("write");
    for backend in backends() {
        let model = load(tmp.path(), backend);
        let info = &model.graph().inputs()[1];
        assert_eq!((info.dtype, info.shape.len()), (DType::I64, 0), "{backend:?}: `{info}` should be a scalar");
        for (name, err, _) in run_cases(tmp.path(), backend) {
            println!("{backend:?} {name} (scalar timestep): rel L2 {err:.2e}");
            assert!(err <= TOLERANCE, "{backend:?} {name}: {err:.3e}");
        }
    }
}
