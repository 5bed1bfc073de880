//! Hostile input, case by case, through all three ways in: the CLI, the Rust API and the C API.
//! Every case must fail with its specific error kind (exit status 1 and the kind's prefix, the
//! `Error` variant, the `drt_status`) and a message naming the problem; none may crash.

mod common;

use std::ffi::{CStr, CString};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::ptr::{null, null_mut};

use common::c::{backend_cname, backend_name};
use common::{model_dir, ort_available, repo, TempDir};
use diffusion_rt::backend::{BackendKind, BackendOptions};
use diffusion_rt::cache::{CacheMode, CacheOptions};
use diffusion_rt::ffi::*;
use diffusion_rt::{Error, GenerateParams, Model, Session};
use serde_json::{json, Value};

#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    Io,
    Model,
    Manifest,
    Invalid,
    Backend,
    Memory,
    NonFinite,
}

impl Kind {
    fn of(e: &Error) -> Kind {
        match e {
            Error::Io(_) => Kind::Io,
            Error::Model(_) => Kind::Model,
            Error::Manifest(_) => Kind::Manifest,
            Error::InvalidArgument(_) => Kind::Invalid,
            Error::BackendUnavailable(_) => Kind::Backend,
            Error::OutOfMemory(_) => Kind::Memory,
            Error::NonFinite { .. } => Kind::NonFinite,
            other => panic!("unexpected error kind: {other}"),
        }
    }
    fn status(self) -> drt_status {
        match self {
            Kind::Io => drt_status::DRT_ERR_IO,
            Kind::Model => drt_status::DRT_ERR_MODEL,
            Kind::Manifest => drt_status::DRT_ERR_MANIFEST,
            Kind::Invalid => drt_status::DRT_ERR_INVALID_ARGUMENT,
            Kind::Backend => drt_status::DRT_ERR_BACKEND_UNAVAILABLE,
            Kind::Memory => drt_status::DRT_ERR_OUT_OF_MEMORY,
            Kind::NonFinite => drt_status::DRT_ERR_NON_FINITE,
        }
    }
    /// How the CLI's `error: ...` line starts for this kind.
    fn cli_prefix(self) -> &'static str {
        match self {
            Kind::Io => "error: I/O error",
            Kind::Model => "error: model error",
            Kind::Manifest => "error: manifest error",
            Kind::Invalid => "error: invalid argument",
            Kind::Backend => "error: backend unavailable",
            Kind::Memory => "error: out of memory",
            Kind::NonFinite => "error: non-finite value",
        }
    }
}

fn last_error() -> String {
    unsafe { CStr::from_ptr(drt_last_error()) }.to_string_lossy().into_owned()
}

fn cstr(p: &Path) -> CString {
    CString::new(p.to_str().expect("utf8 path")).expect("no NUL")
}

fn drt(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_drt")).args(args).output().expect("run drt")
}

fn check_cli(case: &str, args: &[&str], kind: Kind, needle: &str) {
    let o = drt(args);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{case}: CLI exit status; stderr: {err}");
    assert!(
        err.starts_with(kind.cli_prefix()) && err.contains(needle),
        "{case}: CLI said `{err}`, wanted {kind:?} naming `{needle}`"
    );
}

fn check_rust(case: &str, r: Result<impl std::fmt::Debug, Error>, kind: Kind, needle: &str) {
    let e = r.expect_err(case);
    assert_eq!(Kind::of(&e), kind, "{case}: Rust error `{e}`");
    assert!(e.to_string().contains(needle), "{case}: Rust error `{e}` should name `{needle}`");
}

fn check_c(case: &str, status: drt_status, kind: Kind, needle: &str) {
    let msg = last_error();
    assert_eq!(status, kind.status(), "{case}: C status, message `{msg}`");
    assert!(msg.contains(needle), "{case}: C message `{msg}` should name `{needle}`");
}

/// A model directory holding the digits manifest, edited, and `onnx` as its graph.
fn model_with(tmp: &Path, name: &str, edit: impl Fn(&mut Value), onnx: Option<&[u8]>) -> PathBuf {
    let dir = tmp.join(name);
    std::fs::create_dir_all(&dir).expect("mkdir");
    let mut m: Value =
        serde_json::from_str(&std::fs::read_to_string(model_dir("digits").join("model.json")).expect("read"))
            .expect("json");
    match onnx {
        Some(bytes) => std::fs::write(dir.join("denoiser.onnx"), bytes).expect("write onnx"),
        None => m["denoiser"]["onnx"] = json!(model_dir("digits").join("denoiser.onnx")),
    }
    edit(&mut m);
    std::fs::write(dir.join("model.json"), serde_json::to_string_pretty(&m).expect("json")).expect("write");
    dir
}

/// Loading: each bad model directory through `drt inspect`, `Model::load` and `drt_model_load`.
#[test]
fn bad_models_are_refused_everywhere() {
    let tmp = TempDir::new("hostile-models");
    let t = tmp.path();
    let onnx = std::fs::read(model_dir("digits").join("denoiser.onnx")).expect("onnx");
    let mut random = vec![0u8; 4096];
    let mut state = 0x2545f4914f6cdd1du64;
    for b in &mut random {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        *b = state as u8;
    }
    let not_json = t.join("not-json");
    std::fs::create_dir_all(&not_json).expect("mkdir");
    std::fs::write(not_json.join("model.json"), "{ \"schema\": \"diffusion-rt.model/1\", ").expect("write");
    let a_file = t.join("a-file");
    std::fs::write(&a_file, "not a directory").expect("write");
    let empty_dir = t.join("empty");
    std::fs::create_dir_all(&empty_dir).expect("mkdir");

    let cases: Vec<(&str, PathBuf, Kind, &str)> = vec![
        ("missing directory", t.join("nowhere"), Kind::Io, "nowhere"),
        ("directory is a file", a_file, Kind::Io, "a-file"),
        ("no model.json", empty_dir, Kind::Io, "model.json"),
        ("model.json not JSON", not_json, Kind::Manifest, "model.json"),
        ("unknown key", model_with(t, "unknown-key", |m| m["colour"] = json!("red"), None), Kind::Manifest, "colour"),
        (
            "misspelt key",
            model_with(
                t,
                "misspelt",
                |m| {
                    let shape = m["sample_shape"].take();
                    m.as_object_mut().expect("obj").remove("sample_shape");
                    m["sampel_shape"] = shape;
                },
                None,
            ),
            Kind::Manifest,
            "sampel_shape",
        ),
        (
            "wrong schema",
            model_with(t, "schema", |m| m["schema"] = json!("diffusion-rt.model/9"), None),
            Kind::Manifest,
            "schema",
        ),
        (
            "input the graph lacks",
            model_with(t, "no-input", |m| m["denoiser"]["sample_input"] = json!("latents"), None),
            Kind::Manifest,
            "latents",
        ),
        (
            "output the graph lacks",
            model_with(t, "no-output", |m| m["denoiser"]["output"] = json!("noise_pred"), None),
            Kind::Manifest,
            "noise_pred",
        ),
        (
            "contradicted sample_shape",
            model_with(t, "shape", |m| m["sample_shape"] = json!([3, 16, 16]), None),
            Kind::Manifest,
            "sample_shape",
        ),
        (
            "null class among the classes",
            model_with(t, "null-class", |m| m["denoiser"]["class_input"]["null_class"] = json!(3), None),
            Kind::Manifest,
            "null_class",
        ),
        ("empty ONNX", model_with(t, "empty-onnx", |_| {}, Some(&[])), Kind::Model, "denoiser.onnx"),
        (
            "truncated ONNX",
            model_with(t, "truncated", |_| {}, Some(&onnx[..onnx.len() / 3])),
            Kind::Model,
            "denoiser.onnx",
        ),
        ("random bytes as ONNX", model_with(t, "random", |_| {}, Some(&random)), Kind::Model, "denoiser.onnx"),
    ];
    for (case, dir, kind, needle) in &cases {
        let path = dir.to_str().expect("utf8");
        check_cli(case, &["inspect", "--model", path, "--backend", "tract"], *kind, needle);
        let opts = BackendOptions { backend: BackendKind::Tract, ..BackendOptions::default() };
        check_rust(case, Model::load(dir, &opts), *kind, needle);
        let mut p = drt_model_params_default();
        p.backend = c"tract".as_ptr();
        let mut m = null_mut();
        let status = unsafe { drt_model_load(cstr(dir).as_ptr(), &p, &mut m) };
        check_c(case, status, *kind, needle);
        assert!(m.is_null(), "{case}: no handle on error");
        if ort_available() && *kind == Kind::Model {
            let opts = BackendOptions { backend: BackendKind::Ort, ..BackendOptions::default() };
            check_rust(&format!("{case} on ort"), Model::load(dir, &opts), *kind, needle);
        }
    }
}

/// A missing ONNX Runtime library or execution provider.
#[test]
fn missing_backends_are_refused_everywhere() {
    let digits = model_dir("digits");
    let dir = digits.to_str().expect("utf8");
    let lib = "/nonexistent/libonnxruntime.so";
    check_cli("missing ORT", &["inspect", "--model", dir, "--backend", "ort", "--ort-lib", lib], Kind::Backend, lib);
    let opts = BackendOptions { backend: BackendKind::Ort, ort_library: Some(lib.into()), ..BackendOptions::default() };
    check_rust("missing ORT", Model::load(&digits, &opts), Kind::Backend, lib);
    let mut p = drt_model_params_default();
    p.backend = c"ort".as_ptr();
    p.ort_library_path = c"/nonexistent/libonnxruntime.so".as_ptr();
    let mut m = null_mut();
    check_c("missing ORT", unsafe { drt_model_load(cstr(&digits).as_ptr(), &p, &mut m) }, Kind::Backend, lib);

    // Execution providers this build does not include (only the CPU is compiled in by default).
    check_cli("missing EP", &["inspect", "--model", dir, "--ep", "coreml"], Kind::Backend, "coreml");
    let opts = BackendOptions {
        execution_provider: diffusion_rt::backend::ExecutionProvider::CoreMl,
        ..BackendOptions::default()
    };
    check_rust("missing EP", Model::load(&digits, &opts), Kind::Backend, "coreml");
    let mut p = drt_model_params_default();
    p.execution_provider = c"coreml".as_ptr();
    check_c("missing EP", unsafe { drt_model_load(cstr(&digits).as_ptr(), &p, &mut m) }, Kind::Backend, "coreml");
    check_cli("unknown EP", &["inspect", "--model", dir, "--ep", "gpu9000"], Kind::Invalid, "gpu9000");
}

/// An edit of the C API's generation parameters.
type CEdit = Option<Box<dyn Fn(&mut drt_generate_params)>>;

/// One bad generation request in the three forms.
struct Call {
    case: &'static str,
    rust: Box<dyn Fn(&mut GenerateParams)>,
    c: CEdit,
    cli: Vec<&'static str>,
    kind: Kind,
    needle: &'static str,
}

fn call(
    case: &'static str,
    rust: impl Fn(&mut GenerateParams) + 'static,
    c: CEdit,
    cli: &[&'static str],
    kind: Kind,
    needle: &'static str,
) -> Call {
    Call { case, rust: Box::new(rust), c, cli: cli.to_vec(), kind, needle }
}

/// A buffer that outlives the test's C calls (they only borrow it).
fn leak<T>(v: Vec<T>) -> *const T {
    Box::leak(v.into_boxed_slice()).as_ptr()
}

fn c_edit(f: impl Fn(&mut drt_generate_params) + 'static) -> CEdit {
    Some(Box::new(f))
}

/// Generation requests on the digits model (tract), each refused before any work or, for the
/// broken network, at the step that failed.
#[test]
fn bad_requests_are_refused_everywhere() {
    let tmp = TempDir::new("hostile-calls");
    let bad_npy = tmp.path().join("bad.npy");
    std::fs::write(&bad_npy, b"\x93NUMPY garbage").expect("write");
    let bad_npy: &'static str = Box::leak(bad_npy.to_str().expect("utf8").to_string().into_boxed_str());
    let unwritable: &'static str = "/nonexistent-dir/out.png";
    let cases = vec![
        // In C, 0 steps means the model's default.
        call("zero steps", |p| p.steps = Some(0), None, &["--steps", "0"], Kind::Invalid, "steps"),
        call(
            "absurd steps",
            |p| p.steps = Some(1_000_000),
            c_edit(|p| p.steps = 1_000_000),
            &["--steps", "1000000"],
            Kind::Invalid,
            "steps must be between",
        ),
        // An explicit batch the per-sample lists disagree with (batch 0 is the batch rule).
        call(
            "batch against classes",
            |p| (p.batch, p.classes) = (3, vec![1, 2]),
            c_edit(|p| (p.batch, p.classes, p.classes_len) = (3, leak(vec![1, 2]), 2)),
            &["--batch", "3", "--class", "1,2"],
            Kind::Invalid,
            "2 classes for a batch of 3",
        ),
        call(
            "absurd batch",
            |p| p.batch = 5_000_000,
            c_edit(|p| p.batch = 5_000_000),
            &["--batch", "5000000"],
            Kind::Invalid,
            "batch must be between",
        ),
        call(
            "NaN guidance",
            |p| p.guidance = Some(f32::NAN),
            c_edit(|p| p.guidance = f32::NAN),
            &["--guidance", "NaN"],
            Kind::Invalid,
            "guidance",
        ),
        // In C a negative guidance means "the model's default"; elsewhere it is an error.
        call("negative guidance", |p| p.guidance = Some(-2.0), None, &["--guidance=-2"], Kind::Invalid, "guidance"),
        call(
            "class out of range",
            |p| p.classes = vec![42],
            c_edit(|p| p.class_label = 42),
            &["--class", "42"],
            Kind::Invalid,
            "class 42",
        ),
        call(
            "unknown sampler",
            |p| p.sampler = Some("warp-drive".into()),
            c_edit(|p| p.sampler = c"warp-drive".as_ptr()),
            &["--sampler", "warp-drive"],
            Kind::Invalid,
            "warp-drive",
        ),
        call(
            "strength above 1",
            |p| {
                p.init = Some(vec![0.0; 256]);
                p.strength = Some(1.5)
            },
            c_edit(|p| {
                p.init = leak(vec![0f32; 256]);
                p.init_len = 256;
                p.strength = 1.5
            }),
            &["--strength", "1.5"],
            Kind::Invalid,
            "strength",
        ),
        call(
            "strength 0",
            |p| {
                p.init = Some(vec![0.0; 256]);
                p.strength = Some(0.0)
            },
            c_edit(|p| {
                p.init = leak(vec![0f32; 256]);
                p.init_len = 256;
                p.strength = 0.0
            }),
            &["--strength", "0"],
            Kind::Invalid,
            "strength",
        ),
        call("malformed .npy", |p| p.noise = Some(vec![0.0; 7]), None, &["--noise", bad_npy], Kind::Invalid, "noise"),
        call(
            "conditioning the model lacks",
            |p| p.conds = vec![("temperature".into(), vec![1.0])],
            c_edit(|p| {
                p.cond_names = leak(vec![c"temperature".as_ptr()]);
                p.cond_values = leak(vec![1.0f32]);
                p.cond_count = 1
            }),
            &["--cond", "temperature=1"],
            Kind::Invalid,
            "temperature",
        ),
        call(
            "guidance above the limit",
            |p| p.guidance = Some(1000.0),
            c_edit(|p| p.guidance = 1000.0),
            &["--guidance", "1000"],
            Kind::Invalid,
            "guidance must be a finite number in [0, 100]",
        ),
        // C has no eta.
        call(
            "eta above 1",
            |p| {
                p.sampler = Some("ddim".into());
                p.eta = 1.5
            },
            None,
            &["--sampler", "ddim", "--eta", "1.5"],
            Kind::Invalid,
            "eta must be in [0, 1]",
        ),
        call(
            "adaptive guidance threshold above 1",
            |p| p.guidance_rules.adaptive = Some(1.5),
            c_edit(|p| p.adaptive_guidance = 1.5),
            &["--adaptive-guidance", "1.5"],
            Kind::Invalid,
            "adaptive guidance threshold must be in (0, 1]",
        ),
        call(
            "inverted guidance interval",
            |p| p.guidance_rules.interval = Some((2.0, 1.0)),
            c_edit(|p| {
                p.guidance_interval_lo = 2.0;
                p.guidance_interval_hi = 1.0
            }),
            &["--guidance-interval", "2,1"],
            Kind::Invalid,
            "guidance interval must be LO,HI with 0 <= LO < HI",
        ),
        call(
            "negative step cache threshold",
            |p| p.step_cache = Some(CacheOptions { threshold: -1.0, ..CacheOptions::new(CacheMode::Skip) }),
            c_edit(|p| {
                p.step_cache = DRT_STEP_CACHE_SKIP;
                p.cache_threshold = -1.0
            }),
            &["--step-cache", "skip", "--cache-threshold=-1"],
            Kind::Invalid,
            "step cache threshold",
        ),
        // In C, 0 skips means the default.
        call(
            "no step cache skips",
            |p| p.step_cache = Some(CacheOptions { max_skips: 0, ..CacheOptions::new(CacheMode::Skip) }),
            None,
            &["--step-cache", "skip", "--cache-max-skips", "0"],
            Kind::Invalid,
            "step cache max skips",
        ),
        call(
            "rising sigma table",
            |p| p.sigmas = Some(vec![1.0, 2.0, 0.0]),
            c_edit(|p| {
                p.sigmas = leak(vec![1.0f64, 2.0, 0.0]);
                p.sigmas_len = 3
            }),
            &["--sigmas", "1,2,0"],
            Kind::Invalid,
            "strictly decreasing",
        ),
        // C reads exactly `batch` labels and `batch * sample_len` noise values: no length to get wrong.
        call(
            "classes for another batch",
            |p| p.classes = vec![1, 2, 3],
            None,
            &["--class", "1,2,3", "--batch", "1"],
            Kind::Invalid,
            "3 classes for a batch of 1",
        ),
        call(
            "init of the wrong size",
            |p| {
                p.init = Some(vec![0.0; 7]);
                p.strength = Some(0.5)
            },
            c_edit(|p| {
                p.init = leak(vec![0f32; 7]);
                p.init_len = 7;
                p.strength = 0.5
            }),
            &[],
            Kind::Invalid,
            "init has 7 values",
        ),
        call(
            "noise of the wrong size",
            |p| p.noise = Some(vec![0.0; 7]),
            None,
            &[],
            Kind::Invalid,
            "noise has 7 values",
        ),
        call(
            "over the memory limit",
            |p| p.batch = 4096,
            None,
            &["--batch", "4096", "--memory-limit", "8"],
            Kind::Memory,
            "limit",
        ),
        call("unwritable output", |_| {}, None, &["--out", unwritable], Kind::Io, unwritable),
    ];
    let digits = model_dir("digits");
    let model = common::load(&digits, BackendKind::Tract);
    let mut session = Session::new(&model).expect("session");
    session.set_memory_limit(8 << 20);
    let mut mp = drt_model_params_default();
    mp.backend = c"tract".as_ptr();
    let mut m = null_mut();
    let mut sp = drt_session_params_default();
    sp.memory_limit_mb = 8;
    let mut s = null_mut();
    unsafe {
        assert_eq!(drt_model_load(cstr(&digits).as_ptr(), &mp, &mut m), drt_status::DRT_OK);
        assert_eq!(drt_session_create(m, &sp, &mut s), drt_status::DRT_OK);
    }
    let mut out = vec![0f32; 4096 * 256];
    for c in &cases {
        let mut args =
            vec!["generate", "--model", digits.to_str().expect("utf8"), "--backend", "tract", "--steps", "2"];
        if !c.cli.contains(&"--out") {
            args.extend(["--save-raw", "/dev/null"]);
        }
        // A later --steps wins over the default of two.
        let mut cli = args.clone();
        if c.cli.first() == Some(&"--steps") {
            cli.retain(|a| *a != "--steps" && *a != "2");
        }
        cli.extend(c.cli.iter().copied());
        // An empty command line: the mistake cannot be made there (the CLI sizes what it reads).
        if !c.cli.is_empty() {
            check_cli(c.case, &cli, c.kind, c.needle);
        }

        let mut p = GenerateParams { steps: Some(2), batch: 1, ..GenerateParams::default() };
        (c.rust)(&mut p);
        if c.case == "unwritable output" {
            let gen = session.generate(&p, &mut |_, _| true).expect("generate");
            check_rust(
                c.case,
                diffusion_rt::npy::write(Path::new(unwritable), &[1, 256], &gen.samples),
                c.kind,
                c.needle,
            );
        } else {
            check_rust(c.case, session.generate(&p, &mut |_, _| true), c.kind, c.needle);
        }
        if let Some(edit) = &c.c {
            let mut p = drt_generate_params_default();
            p.steps = 2;
            edit(&mut p);
            let len = out.len();
            let status = unsafe { drt_generate(s, &p, out.as_mut_ptr(), len) };
            check_c(c.case, status, c.kind, c.needle);
        }
    }
    // The C API's own form of the memory case: a session with the default limit takes the request.
    unsafe {
        let mut p = drt_generate_params_default();
        p.steps = 1;
        p.batch = 4096;
        check_c("over the memory limit", drt_generate(s, &p, out.as_mut_ptr(), out.len()), Kind::Memory, "limit");
        drt_session_free(s);
        drt_model_free(m);
    }
}

/// A network that returns -inf and then NaN from timestep 500 on stops the run at that step.
#[test]
fn a_non_finite_network_stops_the_run_at_its_step() {
    let dir = repo().join("tests/fixtures/nonfinite");
    let path = dir.to_str().expect("utf8");
    for backend in common::backends() {
        let name = backend_name(backend);
        check_cli(
            name,
            &["generate", "--model", path, "--backend", name, "--save-raw", "/dev/null"],
            Kind::NonFinite,
            "at step 4",
        );
        let model = common::load(&dir, backend);
        let mut session = Session::new(&model).expect("session");
        let err = session
            .generate(&GenerateParams { batch: 2, ..GenerateParams::default() }, &mut |_, _| true)
            .expect_err("non-finite");
        assert!(matches!(err, Error::NonFinite { step: 4 }), "{name}: {err}");
        // The session is usable again: the steps above timestep 500 run as before.
        session.begin(&GenerateParams { batch: 1, ..GenerateParams::default() }).expect("begin");
        for k in 1..=4 {
            assert_eq!(session.step().expect("steps above timestep 500"), k);
        }
        assert!(session.current_sample().expect("sample").iter().all(|v| v.is_finite()));
        assert!(matches!(session.step(), Err(Error::NonFinite { step: 4 })));
        let mut mp = drt_model_params_default();
        mp.backend = backend_cname(backend).as_ptr();
        let (mut m, mut s) = (null_mut(), null_mut());
        let mut out = [0f32; 16];
        unsafe {
            assert_eq!(drt_model_load(cstr(&dir).as_ptr(), &mp, &mut m), drt_status::DRT_OK);
            assert_eq!(drt_session_create(m, null(), &mut s), drt_status::DRT_OK);
            let mut p = drt_generate_params_default();
            p.steps = 10;
            check_c(name, drt_generate(s, &p, out.as_mut_ptr(), 16), Kind::NonFinite, "at step 4");
            assert!(out.iter().all(|&v| v == 0.0), "nothing written on error");
            drt_session_free(s);
            drt_model_free(m);
        }
    }
}

/// A manifest claiming more classes than the graph embeds cannot be caught from the graph's
/// interface; the first call with a class the graph lacks fails with a model error naming the graph
/// (ONNX Runtime reports the bad Gather index; tract's panic on it is caught).
#[test]
fn a_class_count_the_graph_lacks_fails_at_generation() {
    let tmp = TempDir::new("hostile-classes");
    let dir = model_with(
        tmp.path(),
        "classes",
        |m| {
            m["denoiser"]["class_input"]["num_classes"] = json!(20);
            m["denoiser"]["class_input"]["null_class"] = json!(20);
        },
        None,
    );
    let path = dir.to_str().expect("utf8");
    for backend in common::backends() {
        let name = backend_name(backend);
        check_cli(
            name,
            &[
                "generate",
                "--model",
                path,
                "--backend",
                name,
                "--class",
                "15",
                "--steps",
                "2",
                "--save-raw",
                "/dev/null",
            ],
            Kind::Model,
            "denoiser.onnx",
        );
        let model = common::load(&dir, backend);
        let mut session = Session::new(&model).expect("session");
        let p = GenerateParams { steps: Some(2), batch: 1, classes: vec![15], ..GenerateParams::default() };
        check_rust(name, session.generate(&p, &mut |_, _| true), Kind::Model, "denoiser.onnx");
        let ok = GenerateParams { classes: vec![3], guidance: Some(1.0), ..p };
        session.generate(&ok, &mut |_, _| true).expect("a class the graph has, unguided, still works");
    }
}

/// The request limits through the Stable Diffusion entry points: `drt generate` on an export,
/// `StableDiffusion::generate`, and `drt_sd_generate_rgb8`, each refused before any image is made
/// with the message the model.json path gives.
#[test]
fn bad_text_to_image_requests_are_refused_everywhere() {
    use diffusion_rt::sd::{SdOptions, StableDiffusion, TextToImage};
    type CEdit = Box<dyn Fn(&mut drt_generate_params, &mut drt_sd_params)>;
    type RustEdit = Box<dyn Fn(&mut TextToImage)>;
    let cases: Vec<(&str, RustEdit, CEdit, &[&str], &str)> = vec![
        (
            "absurd steps",
            Box::new(|r| r.params.steps = Some(20_000)),
            Box::new(|p, _| p.steps = 20_000),
            &["--steps", "20000"],
            "steps must be between 1 and 10000",
        ),
        (
            "absurd batch",
            Box::new(|r| r.params.batch = 5_000),
            Box::new(|p, _| p.batch = 5_000),
            &["--batch", "5000"],
            "batch must be between 1 and 4096",
        ),
        (
            "guidance above the limit",
            Box::new(|r| r.params.guidance = Some(1000.0)),
            Box::new(|p, _| p.guidance = 1000.0),
            &["--guidance", "1000"],
            "guidance must be a finite number in [0, 100]",
        ),
        (
            "a width the VAE cannot make",
            Box::new(|r| r.width = Some(33)),
            Box::new(|_, q| q.width = 33),
            &["--width", "33"],
            "width 33 must be a multiple of 2",
        ),
        (
            "unknown sampler",
            Box::new(|r| r.params.sampler = Some("warp-drive".into())),
            Box::new(|p, _| p.sampler = c"warp-drive".as_ptr()),
            &["--sampler", "warp-drive"],
            "warp-drive",
        ),
    ];
    let export = repo().join("tests/fixtures/sd-tiny/export");
    let sd = StableDiffusion::load(&export, &common::options(BackendKind::Tract), SdOptions::default()).expect("load");
    let dir = cstr(&export);
    let mut mp = drt_model_params_default();
    mp.backend = c"tract".as_ptr();
    let mut handle = null_mut();
    assert_eq!(unsafe { drt_sd_load(dir.as_ptr(), &mp, null(), &mut handle) }, drt_status::DRT_OK);
    let prompt = [c"a red cat".as_ptr()];
    let mut out = vec![0u8; 5_000 * 32 * 32 * 3];
    for (case, rust, c, cli, needle) in &cases {
        let mut args = vec!["generate", "--model", export.to_str().expect("utf8"), "--backend", "tract"];
        args.extend(["--prompt", "a red cat", "--save-raw", "/dev/null"]);
        args.extend(cli.iter().copied());
        check_cli(case, &args, Kind::Invalid, needle);

        let mut req = TextToImage { prompts: vec!["a red cat".into()], ..TextToImage::default() };
        req.params.steps = Some(1);
        rust(&mut req);
        check_rust(case, sd.generate(&req), Kind::Invalid, needle);

        let mut p = drt_generate_params_default();
        p.steps = 1;
        let mut q = drt_sd_params_default();
        (q.prompts, q.prompts_len) = (prompt.as_ptr(), 1);
        c(&mut p, &mut q);
        let status = unsafe { drt_sd_generate_rgb8(handle, &p, &q, out.as_mut_ptr(), out.len()) };
        check_c(case, status, Kind::Invalid, needle);
    }
    unsafe { drt_sd_free(handle) };
}
