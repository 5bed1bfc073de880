//! The golden references of `tests/fixtures/make_golden.py`: diffusers' schedulers driving the shipped
//! ONNX denoisers through onnxruntime's Python API. Each case is rebuilt the way a user would: a
//! `model.json` carrying the scheduler's config, then a generation fed the fixture's initial and
//! per-step noise (and, for img2img cases, the start image and strength). The final samples must match to relative L2 <= 1e-4 on every backend.

mod common;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use common::{backends, options, rel_l2, repo, TempDir};
use diffusion_rt::backend::{self, BackendKind};
use diffusion_rt::schedule::SigmaSpacing;
use diffusion_rt::{npy, GenerateParams, Model, Session};
use serde_json::{json, Value};

const TOLERANCE: f64 = 1e-4;

fn golden_dir() -> PathBuf {
    repo().join("tests/fixtures/golden")
}

fn index() -> Value {
    let path = golden_dir().join("index.json");
    serde_json::from_str(&std::fs::read_to_string(&path).expect("read index.json")).expect("index.json is JSON")
}

fn load_npy(name: &str) -> npy::Array {
    npy::read(&golden_dir().join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// The scheduler config keys that belong in `model.json`'s `noise_schedule`; the others select the
/// sampler (`algorithm_type`, `solver_order`), the sigma spacing (`use_karras_sigmas`), or restate
/// behaviour the samplers always have (`clip_sample: false`, `variance_type: fixed_small`).
fn noise_schedule(case: &Value) -> (Value, SigmaSpacing) {
    let cfg = case["config"].as_object().expect("config");
    let mut spacing = SigmaSpacing::Default;
    let mut out = serde_json::Map::new();
    let flow = case["scheduler"] == "FlowMatchEulerDiscreteScheduler";
    out.insert("type".into(), json!(if flow { "flow" } else { "discrete" }));
    for (k, v) in cfg {
        match k.as_str() {
            "num_train_timesteps"
            | "beta_schedule"
            | "beta_start"
            | "beta_end"
            | "timestep_spacing"
            | "steps_offset"
            | "set_alpha_to_one"
            | "original_inference_steps"
            | "shift" => {
                out.insert(k.clone(), v.clone());
            }
            "use_karras_sigmas" if v == true => spacing = SigmaSpacing::Karras,
            "clip_sample" | "use_karras_sigmas" => assert_eq!(v, false, "{k}"),
            "variance_type" => assert_eq!(v, "fixed_small"),
            "algorithm_type" => {
                let sde = case["sampler"] == "dpmpp-2m-sde";
                assert_eq!(v, if sde { "sde-dpmsolver++" } else { "dpmsolver++" });
            }
            "solver_order" => assert_eq!(v, 2),
            other => panic!("case {}: config key {other} has no mapping", case["name"]),
        }
    }
    (Value::Object(out), spacing)
}

/// A model directory for `case`: the shipped manifest with the case's noise schedule.
fn model_for(case: &Value, tmp: &TempDir) -> (PathBuf, SigmaSpacing) {
    let shipped = repo().join("models").join(case["model"].as_str().expect("model"));
    let mut manifest: Value =
        serde_json::from_str(&std::fs::read_to_string(shipped.join("model.json")).expect("model.json")).expect("JSON");
    let (schedule, spacing) = noise_schedule(case);
    manifest["noise_schedule"] = schedule;
    manifest["denoiser"]["onnx"] = json!(shipped.join("denoiser.onnx"));
    let dir = tmp.path().join(case["name"].as_str().expect("name"));
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::write(dir.join("model.json"), serde_json::to_string_pretty(&manifest).expect("json")).expect("write");
    (dir, spacing)
}

fn params(index: &Value, case: &Value, spacing: SigmaSpacing) -> GenerateParams {
    let init = load_npy(index["init_noise"].as_str().expect("init_noise"));
    let batch = index["batch"].as_u64().expect("batch") as usize;
    let steps = case["steps"].as_u64().expect("steps") as usize;
    let step_noise = case.get("step_noise").map(|f| {
        let arr = load_npy(f.as_str().expect("step_noise"));
        let per = arr.data.len() / arr.shape[0];
        let mut draws = vec![Vec::new(); steps];
        for (k, s) in case["step_noise_steps"].as_array().expect("steps").iter().enumerate() {
            draws[s.as_u64().expect("step") as usize] = arr.data[k * per..(k + 1) * per].to_vec();
        }
        draws
    });
    GenerateParams {
        sampler: Some(case["sampler"].as_str().expect("sampler").to_string()),
        spacing,
        steps: Some(steps as u32),
        guidance: Some(index["guidance"].as_f64().expect("guidance") as f32),
        batch,
        classes: index["classes"].as_array().expect("classes").iter().map(|c| c.as_i64().expect("class")).collect(),
        noise: Some(init.data),
        step_noise,
        init: case.get("init").map(|f| load_npy(f.as_str().expect("init")).data),
        strength: case.get("strength").map(|v| v.as_f64().expect("strength") as f32),
        ..GenerateParams::default()
    }
}

fn run_all(backend: BackendKind) -> Vec<(String, Vec<f32>)> {
    let index = index();
    let tmp = TempDir::new("golden");
    let mut failures = Vec::new();
    let mut outputs = Vec::new();
    let mut graphs = HashMap::new();
    // Under emulation (scripts/cross.sh) the suite is bounded: DRT_GOLDEN_CASES names the cases to run.
    let only = std::env::var("DRT_GOLDEN_CASES").ok().filter(|v| !v.is_empty());
    let only: Option<Vec<&str>> = only.as_deref().map(|v| v.split(',').collect());
    for case in index["cases"].as_array().expect("cases") {
        let name = case["name"].as_str().expect("name").to_string();
        if only.as_ref().is_some_and(|o| !o.contains(&name.as_str())) {
            continue;
        }
        let (dir, spacing) = model_for(case, &tmp);
        // One graph per network, whatever the case's schedule (loading is most of the time under emulation).
        let onnx = repo().join("models").join(case["model"].as_str().expect("model")).join("denoiser.onnx");
        let graph = graphs.entry(onnx.clone()).or_insert_with(|| {
            backend::load_graph(&onnx, &options(backend)).unwrap_or_else(|e| panic!("{}: {e}", onnx.display()))
        });
        let model = Arc::new(Model::from_graph(&dir, Arc::clone(graph)).unwrap_or_else(|e| panic!("{name}: {e}")));
        let mut session = Session::new(&model).expect("session");
        let gen = session
            .generate(&params(&index, case, spacing), &mut |_, _| true)
            .unwrap_or_else(|e| panic!("{name} on {backend:?}: {e}"));
        let want = load_npy(case["output"].as_str().expect("output"));
        let err = rel_l2(&gen.samples, &want.data);
        println!("{backend:?} {name}: rel L2 {err:.2e}");
        if err.is_nan() || err > TOLERANCE {
            failures.push(format!("{name}: {err:.3e}"));
        }
        outputs.push((name, gen.samples));
    }
    assert!(failures.is_empty(), "{backend:?}: cases over {TOLERANCE}: {failures:?}");
    outputs
}

#[test]
fn fixtures_load_and_are_consistent() {
    let index = index();
    let cases = index["cases"].as_array().expect("cases");
    let batch = index["batch"].as_u64().expect("batch") as usize;
    assert_eq!(index["classes"].as_array().expect("classes").len(), batch);
    assert_eq!(load_npy(index["init_noise"].as_str().expect("init")).shape, vec![batch, 1, 16, 16]);
    let samplers: std::collections::BTreeSet<&str> = cases.iter().map(|c| c["sampler"].as_str().expect("s")).collect();
    for s in ["ddim", "ddpm", "euler", "euler-a", "heun", "dpmpp-2m", "dpmpp-2m-sde", "lcm", "flow-euler"] {
        assert!(samplers.contains(s), "no golden case for {s}");
        diffusion_rt::sampler::sampler_by_name(s).expect("sampler known");
    }
    for case in cases {
        let name = case["name"].as_str().expect("name");
        assert_eq!(load_npy(case["output"].as_str().expect("output")).shape, vec![batch, 1, 16, 16], "{name}");
        if case["scheduler"] != "FlowMatchEulerDiscreteScheduler" {
            assert!(case["config"]["timestep_spacing"].is_string(), "{name}: timestep_spacing must be explicit");
        }
        if let Some(f) = case.get("init") {
            assert_eq!(load_npy(f.as_str().expect("init")).shape, vec![batch, 1, 16, 16], "{name}");
            assert!(case["strength"].as_f64().is_some_and(|s| s > 0.0 && s < 1.0), "{name}");
        }
        if let Some(f) = case.get("step_noise") {
            let arr = load_npy(f.as_str().expect("file"));
            assert_eq!(arr.shape[0], case["step_noise_steps"].as_array().expect("steps").len(), "{name}");
        }
        noise_schedule(case);
    }
}

/// The fixtures were made from the committed graphs: a retrained model without regenerated fixtures
/// (or the reverse) fails here rather than as a puzzling numeric mismatch.
#[test]
fn fixtures_are_current_for_the_shipped_models() {
    use sha2::{Digest, Sha256};
    let index = index();
    let hashes = index["model_sha256"].as_object().expect("model_sha256");
    assert!(!hashes.is_empty());
    for (model, want) in hashes {
        let bytes = std::fs::read(repo().join("models").join(model).join("denoiser.onnx")).expect("read model");
        let got: String = Sha256::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            &got, want,
            "models/{model}/denoiser.onnx changed since tests/fixtures/golden was made; \
            rerun tests/fixtures/make_golden.py"
        );
    }
}

#[test]
fn samplers_match_diffusers_and_backends_agree() {
    let mut per_backend = Vec::new();
    for backend in backends() {
        per_backend.push((backend, run_all(backend)));
    }
    if let [(_, tract), (_, ort)] = &per_backend[..] {
        for ((name, a), (_, b)) in tract.iter().zip(ort) {
            let err = rel_l2(a, b);
            assert!(err <= TOLERANCE, "{name}: tract and ort differ by {err:.3e}");
        }
    }
}
