//! Tensor inputs and the continuous variance-preserving schedule, on the observation-conditioned
//! denoiser of `tests/fixtures/vp/make.py`: DDIM, Euler and DPM-Solver++ 2M against that script's
//! independent float64 samplers, on both backends; and every way a tensor input can be given wrong.

mod common;

use common::{backends, load, options, rel_l2, repo, TempDir};
use diffusion_rt::npy;
use diffusion_rt::schedule::SigmaSpacing;
use diffusion_rt::{Error, GenerateParams, Model, Session};
use serde_json::{json, Value};

fn fixture() -> std::path::PathBuf {
    repo().join("tests/fixtures/vp")
}

fn read(name: &str) -> Vec<f32> {
    npy::read(&fixture().join(name)).expect("fixture npy").data
}

fn params(sampler: &str, steps: u32, guidance: f32, obs: Vec<f32>) -> GenerateParams {
    GenerateParams {
        sampler: Some(sampler.into()),
        steps: Some(steps),
        guidance: Some(guidance),
        batch: 2,
        noise: Some(read("noise.npy")),
        tensors: vec![("obs".into(), obs)],
        ..GenerateParams::default()
    }
}

#[test]
fn vp_samplers_match_the_float64_reference() {
    let index: Vec<Value> =
        serde_json::from_str(&std::fs::read_to_string(fixture().join("index.json")).expect("index")).expect("json");
    assert_eq!(index.len(), 8);
    for backend in backends() {
        let model = load(&fixture(), backend);
        let mut s = Session::new(&model).expect("session");
        for case in &index {
            let (sampler, steps) = (case["sampler"].as_str().expect("sampler"), case["steps"].as_u64().expect("steps"));
            let guidance = case["guidance"].as_f64().expect("guidance") as f32;
            let p = params(sampler, steps as u32, guidance, read("obs.npy"));
            let got = s.generate(&p, &mut |_, _| true).expect("generate").samples;
            let want = read(case["file"].as_str().expect("file"));
            let err = rel_l2(&got, &want);
            assert!(err < 1e-4, "{backend:?} {sampler} {steps} steps, guidance {guidance}: rel L2 {err:.2e}");
        }
    }
}

#[test]
fn the_vp_grid_runs_from_t_1_to_t_min_then_clean() {
    let model = load(&fixture(), diffusion_rt::BackendKind::Tract);
    let schedule = model.noise_schedule().schedule(diffusion_rt::schedule::Grid::Ddim, 4, SigmaSpacing::Default);
    let levels = schedule.expect("grid").levels().to_vec();
    let ts: Vec<f64> = levels.iter().map(|l| l.timestep).collect();
    assert_eq!(ts, [1.0, 1.0 - 0.999 / 3.0, 1.0 - 2.0 * 0.999 / 3.0, 1e-3, 0.0]);
    for l in &levels {
        let abar = (-0.5 * l.timestep * l.timestep * 19.9 - 0.1 * l.timestep).exp();
        assert!((l.alpha - abar.sqrt()).abs() < 1e-15 && (l.sigma - (1.0 - abar).sqrt()).abs() < 1e-12, "{l:?}");
    }
    assert_eq!((levels[4].alpha, levels[4].sigma), (1.0, 0.0));
    let karras = model.noise_schedule().schedule(diffusion_rt::schedule::Grid::Euler, 4, SigmaSpacing::Karras);
    assert!(karras.expect_err("karras").to_string().contains("vp schedule"));
}

#[test]
fn one_tensor_serves_the_whole_batch() {
    for backend in backends() {
        let model = load(&fixture(), backend);
        let mut s = Session::new(&model).expect("session");
        let obs = read("obs.npy");
        let first = obs[..3].to_vec();
        let shared = s.generate(&params("euler", 5, 1.0, first.clone()), &mut |_, _| true).expect("shared");
        let repeated = s.generate(&params("euler", 5, 1.0, first.repeat(2)), &mut |_, _| true).expect("repeated");
        assert_eq!(shared.samples, repeated.samples, "{backend:?}");
        let own = s.generate(&params("euler", 5, 1.0, obs), &mut |_, _| true).expect("per sample");
        assert_ne!(own.samples[8..], shared.samples[8..], "{backend:?}: the second observation reaches the graph");
    }
}

#[test]
fn tensors_given_wrong_are_errors_naming_the_input() {
    for backend in backends() {
        let model = load(&fixture(), backend);
        let mut s = Session::new(&model).expect("session");
        let obs = read("obs.npy");
        let with = |tensors: Vec<(String, Vec<f32>)>| GenerateParams { tensors, ..params("ddim", 4, 1.0, vec![]) };
        let cases = [
            (with(vec![]), "needs its tensor input `obs` [3]"),
            (with(vec![("obs".into(), vec![0.0; 5])]), "`obs` has 5 values; its shape [3] needs 3"),
            (with(vec![("obs".into(), vec![f32::NAN; 3])]), "`obs` contains NaN or infinity"),
            (with(vec![("obs".into(), obs.clone()), ("obs".into(), obs.clone())]), "`obs` given twice"),
            (
                with(vec![("obs".into(), obs.clone()), ("goal".into(), obs.clone())]),
                "no tensor input `goal` (it has: obs)",
            ),
        ];
        for (p, needle) in cases {
            let err = s.generate(&p, &mut |_, _| true).expect_err(needle);
            assert!(matches!(&err, Error::InvalidArgument(m) if m.contains(needle)), "{backend:?}: {err}");
        }
        // A model without tensor inputs refuses one.
        let toy = load(&repo().join("tests/fixtures/toy"), backend);
        let p = GenerateParams { batch: 1, tensors: vec![("obs".into(), obs.clone())], ..GenerateParams::default() };
        let err = Session::new(&toy).expect("session").generate(&p, &mut |_, _| true).expect_err("no tensor inputs");
        assert!(err.to_string().contains("no tensor input `obs` (it has: none)"), "{err}");
    }
}

/// The fixture's model.json with `edit` applied, in a scratch directory, loaded on every backend.
fn load_edited(edit: impl Fn(&mut Value), tmp: &TempDir) -> Vec<Result<Model, Error>> {
    let mut m: Value =
        serde_json::from_str(&std::fs::read_to_string(fixture().join("model.json")).expect("read")).expect("json");
    m["denoiser"]["onnx"] = json!(fixture().join("denoiser.onnx"));
    edit(&mut m);
    std::fs::write(tmp.path().join("model.json"), m.to_string()).expect("write");
    backends().into_iter().map(|b| Model::load(tmp.path(), &options(b))).collect()
}

#[test]
fn guidance_needs_a_null_for_every_tensor_input() {
    let tmp = TempDir::new("vp-no-null");
    for model in load_edited(|m| m["denoiser"]["tensor_inputs"] = json!([{"name": "obs"}]), &tmp) {
        let model = std::sync::Arc::new(model.expect("loads without a null"));
        let mut s = Session::new(&model).expect("session");
        let err = s.generate(&params("ddim", 4, 2.0, read("obs.npy")), &mut |_, _| true).expect_err("guided");
        assert!(err.to_string().contains("no null for its tensor input `obs`"), "{err}");
        s.generate(&params("ddim", 4, 1.0, read("obs.npy")), &mut |_, _| true).expect("unguided runs");
    }
}

#[test]
fn graphs_a_tensor_input_cannot_feed_are_refused_at_load() {
    let tmp = TempDir::new("vp-wiring");
    let bad = fixture().join("bad_inputs.onnx");
    type Edit = Box<dyn Fn(&mut Value)>;
    let cases: Vec<(Edit, &str)> = vec![
        (
            Box::new(move |m| {
                m["denoiser"]["onnx"] = json!(bad);
                m["denoiser"]["tensor_inputs"] = json!([{"name": "obs"}, {"name": "labels"}]);
            }),
            "`obs: float32[?, ?]` needs fixed dimensions after the batch",
        ),
        (
            Box::new(move |m| {
                m["denoiser"]["onnx"] = json!(fixture().join("bad_inputs.onnx"));
                m["denoiser"]["tensor_inputs"] = json!([{"name": "labels"}, {"name": "obs"}]);
            }),
            "`labels: int64[?, 3]` must be a float32 or float16 tensor",
        ),
        (Box::new(|m| m["denoiser"]["tensor_inputs"] = json!([{"name": "goal"}])), "no input `goal`"),
        (Box::new(|m| m["denoiser"]["tensor_inputs"] = json!([])), "graph input `obs: float32[?, 3]` is not described"),
        (Box::new(|m| m["denoiser"]["time_input"]["kind"] = json!("index")), "a vp schedule has no timestep index"),
    ];
    for (edit, needle) in cases {
        for r in load_edited(edit, &tmp) {
            let err = r.expect_err(needle);
            assert!(matches!(&err, Error::Manifest(m) if m.contains(needle)), "{err}");
        }
    }
}

#[test]
fn the_cli_takes_tensors_from_npy_files_and_checks_their_shapes() {
    let tmp = TempDir::new("vp-cli");
    let out = tmp.path().join("out.npy");
    let dir = fixture();
    let (obs, noise) = (dir.join("obs.npy"), dir.join("noise.npy"));
    let drt = |extra: &[&str]| {
        let mut args = vec!["generate", "--model", dir.to_str().expect("utf8"), "--sampler", "dpmpp-2m", "--steps"];
        args.extend(["10", "--guidance", "2.5", "--noise", noise.to_str().expect("utf8")]);
        args.extend(["--save-raw", out.to_str().expect("utf8"), "--quiet"]);
        args.extend(extra);
        std::process::Command::new(env!("CARGO_BIN_EXE_drt")).args(&args).output().expect("run drt")
    };
    let given = format!("obs={}", obs.display());
    let ok = drt(&["--tensor", &given]);
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    let got = npy::read(&out).expect("written").data;
    assert!(rel_l2(&got, &read("dpmpp_2m_10_g2.5.npy")) < 1e-4);

    let wrong = tmp.path().join("wrong.npy");
    npy::write(&wrong, &[2, 4], &[0.0; 8]).expect("write");
    for (arg, needle) in [
        (format!("obs={}", wrong.display()), "--tensor obs: ".to_string() + wrong.to_str().expect("utf8")),
        (format!("goal={}", obs.display()), "model `vp-fixture` has no tensor input `goal` (it has: obs)".into()),
        ("obs".into(), "expected NAME=FILE.npy".into()),
        (format!("obs={}", tmp.path().join("absent.npy").display()), "absent.npy".into()),
    ] {
        let r = drt(&["--tensor", &arg]);
        let err = String::from_utf8_lossy(&r.stderr);
        assert!(!r.status.success() && err.contains(&needle), "{arg}: {err}");
    }
    let r = drt(&[]);
    assert!(String::from_utf8_lossy(&r.stderr).contains("needs its tensor input `obs`"));
    let shape = std::process::Command::new(env!("CARGO_BIN_EXE_drt"))
        .args(["inspect", "--model", dir.to_str().expect("utf8")])
        .output()
        .expect("inspect");
    let text = String::from_utf8_lossy(&shape.stdout);
    assert!(text.contains("`obs` [3] per sample, null 0") && text.contains("vp, beta 0.1 to 20"), "{text}");
}

#[test]
fn the_c_api_takes_named_tensors_and_checks_them() {
    use diffusion_rt::ffi::*;
    use std::ffi::{c_char, CStr, CString};
    use std::ptr::{null, null_mut};
    let last = || unsafe { CStr::from_ptr(drt_last_error()) }.to_string_lossy().into_owned();
    for backend in backends() {
        unsafe {
            let dir = CString::new(fixture().to_str().expect("utf8")).expect("cstr");
            let mut mp = drt_model_params_default();
            mp.backend = common::c::backend_cname(backend).as_ptr();
            let (mut m, mut s) = (null_mut(), null_mut());
            assert_eq!(drt_model_load(dir.as_ptr(), &mp, &mut m), drt_status::DRT_OK, "{}", last());
            assert_eq!(drt_session_create(m, null(), &mut s), drt_status::DRT_OK);
            let (noise, obs) = (read("noise.npy"), read("obs.npy"));
            let names: [*const c_char; 1] = [c"obs".as_ptr()];
            let values = [obs.as_ptr()];
            let lens = [obs.len()];
            let mut p = drt_generate_params_default();
            (p.batch, p.steps, p.guidance, p.sampler) = (2, 10, 2.5, c"dpmpp-2m".as_ptr());
            (p.noise, p.noise_len) = (noise.as_ptr(), noise.len());
            (p.tensor_names, p.tensor_values, p.tensor_lens, p.tensor_count) =
                (names.as_ptr(), values.as_ptr(), lens.as_ptr(), 1);
            let mut out = vec![0f32; 16];
            assert_eq!(drt_generate(s, &p, out.as_mut_ptr(), 16), drt_status::DRT_OK, "{}", last());
            assert!(rel_l2(&out, &read("dpmpp_2m_10_g2.5.npy")) < 1e-4, "{backend:?}");

            let (goal, null_name) = ([c"goal".as_ptr()], [null()]);
            let (short, null_values) = ([5usize], [null()]);
            type Edit<'a> = Box<dyn Fn(&mut drt_generate_params) + 'a>;
            let cases: Vec<(Edit, &str)> = vec![
                (Box::new(|p| p.tensor_count = 0), "needs its tensor input `obs`"),
                (Box::new(|p| p.tensor_lens = null()), "needs tensor_names, tensor_values and tensor_lens"),
                (Box::new(|p| p.tensor_count = 65), "tensor_count 65 is over 64"),
                (Box::new(|p| p.tensor_names = goal.as_ptr()), "no tensor input `goal`"),
                (Box::new(|p| p.tensor_names = null_name.as_ptr()), "tensor_names[0] is NULL"),
                (Box::new(|p| p.tensor_lens = short.as_ptr()), "`obs` has 5 values"),
                (Box::new(|p| p.tensor_values = null_values.as_ptr()), "tensor_values[0] is NULL with 6 values"),
            ];
            for (edit, needle) in cases {
                let mut bad = p;
                edit(&mut bad);
                let mut untouched = vec![7f32; 16];
                assert_eq!(drt_generate(s, &bad, untouched.as_mut_ptr(), 16), drt_status::DRT_ERR_INVALID_ARGUMENT);
                assert!(last().contains(needle), "`{}` should mention {needle}", last());
                assert!(untouched.iter().all(|&v| v == 7.0));
            }
            drt_session_free(s);
            drt_model_free(m);
        }
    }
}
