//! The C ABI's contract, called from Rust as C would: statuses, messages, NULL handling, buffers
//! left untouched on error, old (shorter) parameter structs, cancellation from callbacks and threads.

mod common;

use std::ffi::{c_char, c_void, CStr, CString};
use std::ptr::{null, null_mut};

use common::{backends, model_dir};
use diffusion_rt::backend::BackendKind;
use diffusion_rt::ffi::*;

fn last_error() -> String {
    unsafe { CStr::from_ptr(drt_last_error()) }.to_string_lossy().into_owned()
}

fn load() -> *mut drt_model {
    load_on(BackendKind::Tract)
}

fn load_on(backend: BackendKind) -> *mut drt_model {
    let dir = CString::new(model_dir("digits").to_str().expect("utf8")).expect("cstr");
    let mut p = drt_model_params_default();
    p.backend = common::c::backend_cname(backend).as_ptr();
    let mut m = null_mut();
    assert_eq!(unsafe { drt_model_load(dir.as_ptr(), &p, &mut m) }, drt_status::DRT_OK, "{}", last_error());
    m
}

#[test]
fn errors_are_statuses_with_messages() {
    unsafe {
        let mut m = null_mut();
        assert_eq!(drt_model_load(null(), null(), &mut m), drt_status::DRT_ERR_INVALID_ARGUMENT);
        assert!(last_error().contains("model_dir"));
        let missing = CString::new("/no/such/model").expect("cstr");
        assert_eq!(drt_model_load(missing.as_ptr(), null(), &mut m), drt_status::DRT_ERR_IO);
        assert!(last_error().contains("/no/such/model") && m.is_null(), "out untouched on error");
        assert_eq!(drt_model_load(missing.as_ptr(), null(), null_mut()), drt_status::DRT_ERR_INVALID_ARGUMENT);
        let bad_backend = CString::new("gpu").expect("cstr");
        let mut p = drt_model_params_default();
        p.backend = bad_backend.as_ptr();
        let dir = CString::new(model_dir("digits").to_str().expect("utf8")).expect("cstr");
        assert_eq!(drt_model_load(dir.as_ptr(), &p, &mut m), drt_status::DRT_ERR_INVALID_ARGUMENT);
        p.struct_size = 2;
        assert_eq!(drt_model_load(dir.as_ptr(), &p, &mut m), drt_status::DRT_ERR_INVALID_ARGUMENT);
        assert!(last_error().contains("struct_size"));
        drt_model_free(null_mut());
        drt_session_free(null_mut());
        drt_session_cancel(null());
        assert_eq!(drt_model_sample_len(null()), 0);
        assert_eq!(
            CStr::from_ptr(drt_status_string(drt_status::DRT_ERR_CANCELLED as u32)).to_str(),
            Ok("DRT_ERR_CANCELLED")
        );
        // Enum-like arguments are plain integers, so a value outside the enum is checked, not UB.
        assert_eq!(CStr::from_ptr(drt_status_string(10)).to_str(), Ok("DRT_UNKNOWN_STATUS"));
        assert_eq!(CStr::from_ptr(drt_status_string(u32::MAX)).to_str(), Ok("DRT_UNKNOWN_STATUS"));
        assert_eq!(drt_set_log_callback(None, 6, null_mut()), drt_status::DRT_ERR_INVALID_ARGUMENT);
        assert!(last_error().contains("max_level 6"), "{}", last_error());
        assert_eq!(CStr::from_ptr(drt_version()).to_str(), Ok(env!("CARGO_PKG_VERSION")));
    }
}

static SHORT_NOISE: [f32; 511] = [0.0; 511];
static THREE_CLASSES: [i32; 3] = [1, 2, 3];

#[test]
fn generate_checks_buffers_and_parameters() {
    unsafe {
        let m = load();
        assert_eq!(drt_model_sample_len(m), 256);
        let mut s = null_mut();
        assert_eq!(drt_session_create(m, null(), &mut s), drt_status::DRT_OK);
        let mut p = drt_generate_params_default();
        p.steps = 4;
        p.batch = 2;
        p.class_label = 5;
        let mut out = vec![7.0f32; 512];
        assert_eq!(drt_generate(s, &p, out.as_mut_ptr(), 511), drt_status::DRT_ERR_INVALID_ARGUMENT);
        assert!(out.iter().all(|&v| v == 7.0), "nothing written on a short buffer");
        assert!(last_error().contains("511"));
        for (edit, needle) in [
            (&|p: &mut drt_generate_params| p.steps = 20_000, "steps must be between 1 and 10000"),
            (&|p: &mut drt_generate_params| p.class_label = 99, "class 99"),
            (&|p: &mut drt_generate_params| p.class_label = -2, "class_label"),
            (&|p: &mut drt_generate_params| p.guidance = f32::NAN, "guidance"),
            (&|p: &mut drt_generate_params| p.sampler = c"no-such-sampler".as_ptr(), "no-such-sampler"),
            (&|p: &mut drt_generate_params| p.cond_count = 1, "cond_count"),
            // The lengths bindings pass: checked before the arrays are read.
            (
                &|p: &mut drt_generate_params| {
                    p.noise = SHORT_NOISE.as_ptr();
                    p.noise_len = 511;
                },
                "noise has 511 values, expected batch 2 × 256",
            ),
            (&|p: &mut drt_generate_params| p.classes_len = 3, "classes is NULL with classes_len 3"),
            (
                &|p: &mut drt_generate_params| {
                    p.classes = THREE_CLASSES.as_ptr();
                    p.classes_len = 3;
                },
                "3 classes for a batch of 2",
            ),
        ] as [(&dyn Fn(&mut drt_generate_params), &str); 9]
        {
            let mut bad = p;
            edit(&mut bad);
            assert_eq!(drt_generate(s, &bad, out.as_mut_ptr(), 512), drt_status::DRT_ERR_INVALID_ARGUMENT);
            assert!(last_error().contains(needle), "`{}` should mention {needle}", last_error());
        }
        let (noise, classes) = (vec![0.5f32; 512], [5, 5]);
        let mut given = p;
        (given.noise, given.noise_len, given.classes, given.classes_len) = (noise.as_ptr(), 512, classes.as_ptr(), 2);
        let mut with_lengths = vec![0f32; 512];
        assert_eq!(drt_generate(s, &given, with_lengths.as_mut_ptr(), 512), drt_status::DRT_OK, "{}", last_error());
        // ABI 3: a pointer without its length is refused, never read on trust.
        given.noise_len = 0;
        assert_eq!(drt_generate(s, &given, out.as_mut_ptr(), 512), drt_status::DRT_ERR_INVALID_ARGUMENT);
        assert!(last_error().contains("noise is set with noise_len 0"), "{}", last_error());
        // Without an explicit batch, the lists make it (the batch rule).
        (given.noise_len, given.batch) = (512, 0);
        let mut by_rule = vec![1f32; 512];
        assert_eq!(drt_generate(s, &given, by_rule.as_mut_ptr(), 512), drt_status::DRT_OK, "{}", last_error());
        assert_eq!(with_lengths, by_rule, "the batch rule reads the same batch 2");
        assert_eq!(drt_generate(s, &p, out.as_mut_ptr(), 512), drt_status::DRT_OK, "{}", last_error());
        assert_eq!(last_error(), "", "success clears the message");
        assert!(out.iter().all(|v| v.is_finite() && *v != 7.0));

        // A caller compiled against a struct that ended before `class_label` gets the defaults of the
        // fields it does not know: no class, batch 1.
        let mut old = p;
        old.struct_size = std::mem::offset_of!(drt_generate_params, class_label) as u32;
        let mut unconditional = vec![0f32; 512];
        assert_eq!(drt_generate(s, &old, unconditional.as_mut_ptr(), 512), drt_status::DRT_OK, "{}", last_error());
        let mut none = p;
        none.class_label = -1;
        none.batch = 1;
        let mut want = vec![0f32; 512];
        assert_eq!(drt_generate(s, &none, want.as_mut_ptr(), 512), drt_status::DRT_OK);
        assert!(unconditional == want && want[256..].iter().all(|&v| v == 0.0));
        drt_session_free(s);
        drt_model_free(m);
    }
}

unsafe extern "C" fn stop_at_two(step: u32, _total: u32, user_data: *mut c_void) -> bool {
    *(user_data as *mut u32) = step;
    step < 2
}

unsafe extern "C" fn cancel_from_thread(step: u32, _total: u32, user_data: *mut c_void) -> bool {
    if step == 1 {
        let s = user_data as usize;
        std::thread::spawn(move || drt_session_cancel(s as *const drt_session)).join().expect("thread");
    }
    true
}

#[test]
fn progress_callback_and_cancel_stop_the_run() {
    for backend in backends() {
        let m = load_on(backend);
        unsafe { progress_and_cancel_on(m) };
    }
}

unsafe fn progress_and_cancel_on(m: *mut drt_model) {
    {
        let mut s = null_mut();
        assert_eq!(drt_session_create(m, null(), &mut s), drt_status::DRT_OK);
        let mut out = vec![0f32; 256];
        let mut seen = 0u32;
        let mut p = drt_generate_params_default();
        p.steps = 6;
        p.progress = Some(stop_at_two);
        p.user_data = &mut seen as *mut u32 as *mut c_void;
        assert_eq!(drt_generate(s, &p, out.as_mut_ptr(), 256), drt_status::DRT_ERR_CANCELLED);
        assert_eq!(seen, 2);
        p.progress = Some(cancel_from_thread);
        p.user_data = s as *mut c_void;
        assert_eq!(drt_generate(s, &p, out.as_mut_ptr(), 256), drt_status::DRT_ERR_CANCELLED);
        assert!(last_error().contains("step 1"), "stops before the next step: {}", last_error());
        p.progress = None;
        assert_eq!(drt_generate(s, &p, out.as_mut_ptr(), 256), drt_status::DRT_OK, "usable after a cancel");
        drt_session_free(s);
        drt_model_free(m);
    }
}

#[test]
fn version_macros_match_the_library() {
    let v = format!("{DRT_VERSION_MAJOR}.{DRT_VERSION_MINOR}.{DRT_VERSION_PATCH}");
    assert_eq!(v, env!("CARGO_PKG_VERSION"));
    assert_eq!(drt_abi_version(), DRT_ABI_VERSION);
}

/// Per-sample classes, supplied noise and img2img through the C struct give what the Rust API gives.
#[test]
fn extended_parameters_match_the_rust_api() {
    use diffusion_rt::{GenerateParams, Session};
    let model = common::load(&model_dir("digits"), diffusion_rt::BackendKind::Tract);
    let rust =
        |p: GenerateParams| Session::new(&model).expect("session").generate(&p, &mut |_, _| true).expect("gen").samples;
    unsafe {
        let m = load();
        let mut s = null_mut();
        assert_eq!(drt_session_create(m, null(), &mut s), drt_status::DRT_OK);
        let classes = [3i32, 8];
        let noise: Vec<f32> = (0..512).map(|i| ((i as f32) * 0.7).sin()).collect();
        let init: Vec<f32> = (0..256).map(|i| ((i as f32) * 0.1).cos()).collect();
        let mut p = drt_generate_params_default();
        p.steps = 5;
        p.batch = 2;
        p.seed = 9;
        (p.classes, p.classes_len) = (classes.as_ptr(), 2);
        let base =
            GenerateParams { steps: Some(5), batch: 2, seed: 9, classes: vec![3, 8], ..GenerateParams::default() };
        let mut out = vec![0f32; 512];
        assert_eq!(drt_generate(s, &p, out.as_mut_ptr(), 512), drt_status::DRT_OK, "{}", last_error());
        assert_eq!(out, rust(base.clone()), "per-sample classes");
        (p.noise, p.noise_len) = (noise.as_ptr(), noise.len());
        assert_eq!(drt_generate(s, &p, out.as_mut_ptr(), 512), drt_status::DRT_OK, "{}", last_error());
        assert_eq!(out, rust(GenerateParams { noise: Some(noise.clone()), ..base.clone() }), "supplied noise");
        p.init = init.as_ptr();
        p.init_len = init.len();
        p.strength = 0.6;
        assert_eq!(drt_generate(s, &p, out.as_mut_ptr(), 512), drt_status::DRT_OK, "{}", last_error());
        let img2img =
            GenerateParams { noise: Some(noise.clone()), init: Some(init.clone()), strength: Some(0.6), ..base };
        assert_eq!(out, rust(img2img), "img2img");
        p.init_len = 7;
        assert_eq!(drt_generate(s, &p, out.as_mut_ptr(), 512), drt_status::DRT_ERR_INVALID_ARGUMENT);
        assert!(last_error().contains("init has 7 values"), "{}", last_error());
        drt_session_free(s);
        drt_model_free(m);
    }
}

#[test]
fn float_conditioning_by_name() {
    unsafe {
        let dir = CString::new(common::repo().join("tests/fixtures/toy").to_str().expect("utf8")).expect("cstr");
        let mut mp = drt_model_params_default();
        mp.backend = c"tract".as_ptr();
        let mut m = null_mut();
        assert_eq!(drt_model_load(dir.as_ptr(), &mp, &mut m), drt_status::DRT_OK, "{}", last_error());
        let mut s = null_mut();
        assert_eq!(drt_session_create(m, null(), &mut s), drt_status::DRT_OK);
        let name = CString::new("difficulty").expect("cstr");
        let names = [name.as_ptr()];
        let values = [0.375f32];
        let mut p = drt_generate_params_default();
        p.cond_names = names.as_ptr();
        p.cond_values = values.as_ptr();
        p.cond_count = 1;
        let mut out = vec![0f32; 16];
        assert_eq!(drt_generate(s, &p, out.as_mut_ptr(), 16), drt_status::DRT_OK, "{}", last_error());
        assert!(out.iter().all(|&v| (v - 0.375).abs() < 1e-6), "{out:?}");
        let wrong = CString::new("hardness").expect("cstr");
        let names = [wrong.as_ptr()];
        p.cond_names = names.as_ptr();
        assert_eq!(drt_generate(s, &p, out.as_mut_ptr(), 16), drt_status::DRT_ERR_INVALID_ARGUMENT);
        assert!(last_error().contains("hardness"));
        drt_session_free(s);
        drt_model_free(m);
    }
}

/// begin / step / read / finish through the C API gives drt_generate's samples bit for bit, and
/// every misuse is a status, not a crash.
#[test]
fn caller_driven_loop_equals_generate() {
    for backend in backends() {
        let m = load_on(backend);
        unsafe { caller_driven_loop_on(m) };
    }
}

unsafe fn caller_driven_loop_on(m: *mut drt_model) {
    {
        let mut s = null_mut();
        assert_eq!(drt_session_create(m, null(), &mut s), drt_status::DRT_OK);
        let mut p = drt_generate_params_default();
        p.steps = 6;
        p.batch = 2;
        p.seed = 3;
        p.class_label = 6;
        let mut whole = vec![0f32; 512];
        assert_eq!(drt_generate(s, &p, whole.as_mut_ptr(), 512), drt_status::DRT_OK, "{}", last_error());

        let mut buf = vec![5f32; 512];
        let mut done = 0u32;
        assert_eq!(drt_generate_step(s, &mut done), drt_status::DRT_ERR_INVALID_ARGUMENT, "step before begin");
        assert!(last_error().contains("begin"), "{}", last_error());
        assert_eq!(drt_generate_read(s, DRT_READ_SAMPLE, buf.as_mut_ptr(), 512), drt_status::DRT_ERR_INVALID_ARGUMENT);
        assert_eq!(drt_generate_finish(s, buf.as_mut_ptr(), 512), drt_status::DRT_ERR_INVALID_ARGUMENT);
        let mut total = 0u32;
        assert_eq!(drt_generate_begin(s, &p, &mut total), drt_status::DRT_OK, "{}", last_error());
        assert_eq!(total, 6);
        assert_eq!(
            drt_generate_read(s, DRT_READ_PREDICTION, buf.as_mut_ptr(), 512),
            drt_status::DRT_ERR_INVALID_ARGUMENT
        );
        assert!(last_error().contains("first step"), "{}", last_error());
        for what in [2, u32::MAX] {
            assert_eq!(drt_generate_read(s, what, buf.as_mut_ptr(), 512), drt_status::DRT_ERR_INVALID_ARGUMENT);
            assert!(last_error().contains(&format!("what {what}")), "{}", last_error());
        }
        assert!(buf.iter().all(|&v| v == 5.0), "nothing written on error");
        assert_eq!(drt_generate_read(s, DRT_READ_SAMPLE, buf.as_mut_ptr(), 512), drt_status::DRT_OK);
        assert!(buf.iter().all(|v| v.is_finite()) && buf.iter().any(|&v| v != 5.0));
        for k in 1..=total {
            assert_eq!(drt_generate_step(s, &mut done), drt_status::DRT_OK, "{}", last_error());
            assert_eq!(done, k);
            assert_eq!(
                drt_generate_read(s, DRT_READ_PREDICTION, buf.as_mut_ptr(), 511),
                drt_status::DRT_ERR_INVALID_ARGUMENT,
                "short buffer"
            );
            assert_eq!(drt_generate_read(s, DRT_READ_PREDICTION, buf.as_mut_ptr(), 512), drt_status::DRT_OK);
            if k == 3 {
                assert_eq!(drt_generate_finish(s, buf.as_mut_ptr(), 512), drt_status::DRT_ERR_INVALID_ARGUMENT);
                assert!(last_error().contains("3 of 6"), "{}", last_error());
            }
        }
        assert_eq!(drt_generate_step(s, null_mut()), drt_status::DRT_ERR_INVALID_ARGUMENT, "past the last step");
        let mut driven = vec![0f32; 512];
        assert_eq!(
            drt_generate_finish(s, driven.as_mut_ptr(), 100),
            drt_status::DRT_ERR_INVALID_ARGUMENT,
            "short buffer"
        );
        assert_eq!(drt_generate_finish(s, driven.as_mut_ptr(), 512), drt_status::DRT_OK, "{}", last_error());
        assert!(driven == whole, "the caller-driven loop gives drt_generate's samples");
        assert_eq!(
            drt_generate_finish(s, driven.as_mut_ptr(), 512),
            drt_status::DRT_ERR_INVALID_ARGUMENT,
            "finished once"
        );

        // Cancelled between steps: the next step says so and ends the run; abandon is harmless after.
        assert_eq!(drt_generate_begin(s, &p, null_mut()), drt_status::DRT_OK);
        assert_eq!(drt_generate_step(s, null_mut()), drt_status::DRT_OK);
        drt_session_cancel(s);
        assert_eq!(drt_generate_step(s, null_mut()), drt_status::DRT_ERR_CANCELLED);
        assert_eq!(drt_generate_step(s, null_mut()), drt_status::DRT_ERR_INVALID_ARGUMENT, "the run ended");
        drt_generate_abandon(s);
        drt_generate_abandon(null_mut());
        assert_eq!(drt_generate_begin(s, &p, null_mut()), drt_status::DRT_OK);
        drt_generate_abandon(s);
        assert_eq!(drt_generate_step(s, null_mut()), drt_status::DRT_ERR_INVALID_ARGUMENT, "abandoned");
        assert_eq!(drt_generate_begin(null_mut(), &p, null_mut()), drt_status::DRT_ERR_INVALID_ARGUMENT);
        p.steps = 0;
        let mut total = 0;
        assert_eq!(drt_generate_begin(s, &p, &mut total), drt_status::DRT_OK);
        assert_eq!(total, 10, "0 steps: models/digits' own defaults.steps");
        p.steps = 10_001;
        assert_eq!(drt_generate_begin(s, &p, null_mut()), drt_status::DRT_ERR_INVALID_ARGUMENT);
        drt_session_free(s);
        drt_model_free(m);
    }
}

unsafe extern "C" fn collect_log(
    level: drt_log_level,
    target: *const c_char,
    message: *const c_char,
    user_data: *mut c_void,
) {
    let lines = &*(user_data as *const std::sync::Mutex<Vec<String>>);
    let line =
        format!("{level:?} {} {}", CStr::from_ptr(target).to_string_lossy(), CStr::from_ptr(message).to_string_lossy());
    lines.lock().expect("lock").push(line);
}

/// The `log` records reach a C callback up to the level asked for, and stop when it is removed.
#[test]
fn log_records_reach_the_callback() {
    static LINES: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    let ud = &LINES as *const _ as *mut c_void;
    unsafe {
        assert_eq!(drt_set_log_callback(Some(collect_log), drt_log_level::DRT_LOG_INFO as u32, ud), drt_status::DRT_OK);
        drt_model_free(load());
        let seen = LINES.lock().expect("lock").clone();
        assert!(
            seen.iter()
                .any(|l| l.starts_with("DRT_LOG_INFO diffusion_rt::model loaded model `digits`")
                    && l.contains("on tract")),
            "{seen:?}"
        );
        assert!(seen.iter().all(|l| !l.starts_with("DRT_LOG_DEBUG")), "nothing above the level asked for");
        assert_eq!(drt_set_log_callback(None, drt_log_level::DRT_LOG_INFO as u32, null_mut()), drt_status::DRT_OK);
        LINES.lock().expect("lock").clear();
        drt_model_free(load());
        assert!(LINES.lock().expect("lock").is_empty(), "removed callback gets nothing");
    }
}

/// drt_bench_run's report: size query, short buffer refused untouched, JSON that parses.
#[test]
fn bench_report_through_the_c_api() {
    unsafe {
        let dir = CString::new(model_dir("digits").to_str().expect("utf8")).expect("cstr");
        let mut mp = drt_model_params_default();
        mp.backend = c"tract".as_ptr();
        let mut gp = drt_generate_params_default();
        gp.steps = 2;
        let mut bp = drt_bench_params_default();
        bp.runs = 1;
        bp.warmup = 0;
        let mut report = null_mut();
        assert_eq!(drt_bench_run(dir.as_ptr(), &mp, &gp, &bp, null_mut()), drt_status::DRT_ERR_INVALID_ARGUMENT);
        bp.runs = 0;
        assert_eq!(drt_bench_run(dir.as_ptr(), &mp, &gp, &bp, &mut report), drt_status::DRT_ERR_INVALID_ARGUMENT);
        assert!(last_error().contains("runs") && report.is_null(), "{}", last_error());
        bp.runs = 1;
        assert_eq!(drt_bench_run(dir.as_ptr(), &mp, &gp, &bp, &mut report), drt_status::DRT_OK, "{}", last_error());
        let mut needed = 0usize;
        assert_eq!(drt_bench_report_json(report, null_mut(), 0, &mut needed), drt_status::DRT_OK);
        let mut buf = vec![b'x' as c_char; needed];
        assert_eq!(
            drt_bench_report_json(report, buf.as_mut_ptr(), needed - 1, null_mut()),
            drt_status::DRT_ERR_INVALID_ARGUMENT
        );
        assert!(buf.iter().all(|&c| c == b'x' as c_char), "nothing written to a short buffer");
        assert_eq!(drt_bench_report_json(report, buf.as_mut_ptr(), needed, null_mut()), drt_status::DRT_OK);
        let json: serde_json::Value =
            serde_json::from_str(CStr::from_ptr(buf.as_ptr()).to_str().expect("utf8")).expect("json");
        assert_eq!(
            (json["backend"].as_str(), json["steps"].as_u64(), json["runs"].as_u64()),
            (Some("tract"), Some(2), Some(1))
        );
        assert!(json["class_accuracy"].is_null(), "no classifier, no judgement");
        assert_eq!(
            drt_bench_report_json(null(), buf.as_mut_ptr(), needed, null_mut()),
            drt_status::DRT_ERR_INVALID_ARGUMENT
        );
        drt_bench_report_free(report);
        drt_bench_report_free(null_mut());
    }
}

/// `drt_generate_params_default()` with only a seed and a class (or, for a Stable Diffusion export,
/// a prompt) set makes what `drt generate` makes with no sampling options, bit for bit: steps 0 is
/// the model's own step count (10 for models/digits, 50 for the export), as the CLI takes it.
#[test]
fn c_defaults_are_the_clis_defaults() {
    let tmp = common::TempDir::new("c-defaults");
    let export = common::repo().join("tests/fixtures/sd-tiny/export");
    for backend in backends() {
        let cli = common::c::cli_samples(backend, &["--class", "7", "--seed", "42"], tmp.path());
        let m = load_on(backend);
        let mut s = null_mut();
        let mut p = drt_generate_params_default();
        assert_eq!(p.steps, 0, "the default is the model's own");
        p.seed = 42;
        p.class_label = 7;
        let mut out = vec![0f32; 256];
        unsafe {
            assert_eq!(drt_session_create(m, null(), &mut s), drt_status::DRT_OK);
            let mut total = 0;
            assert_eq!(drt_generate_begin(s, &p, &mut total), drt_status::DRT_OK, "{}", last_error());
            assert_eq!(total, 10, "models/digits' defaults.steps");
            assert_eq!(drt_generate(s, &p, out.as_mut_ptr(), out.len()), drt_status::DRT_OK, "{}", last_error());
            drt_session_free(s);
            drt_model_free(m);
        }
        assert!(out == cli, "{backend:?}: C defaults and CLI defaults differ on models/digits");

        let raw = tmp.path().join("sd.npy");
        let name = common::c::backend_name(backend);
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_drt"))
            .args(["generate", "--quiet", "--backend", name, "--prompt", "a red cat", "--seed", "3", "--model"])
            .arg(&export)
            .arg("--save-raw")
            .arg(&raw)
            .output()
            .expect("drt");
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let cli = diffusion_rt::npy::read(&raw).expect("raw").data;
        let dir = CString::new(export.to_str().expect("utf8")).expect("cstr");
        let prompt = [c"a red cat".as_ptr()];
        let mut p = drt_generate_params_default();
        p.seed = 3;
        let mut q = drt_sd_params_default();
        (q.prompts, q.prompts_len) = (prompt.as_ptr(), 1);
        let mut mp = drt_model_params_default();
        mp.backend = common::c::backend_cname(backend).as_ptr();
        let mut sd = null_mut();
        let mut images = vec![0f32; 32 * 32 * 3];
        unsafe {
            assert_eq!(drt_sd_load(dir.as_ptr(), &mp, null(), &mut sd), drt_status::DRT_OK, "{}", last_error());
            let status = drt_sd_generate(sd, &p, &q, images.as_mut_ptr(), images.len());
            assert_eq!(status, drt_status::DRT_OK, "{}", last_error());
            drt_sd_free(sd);
        }
        assert!(images == cli, "{backend:?}: C defaults and CLI defaults differ on the Stable Diffusion export");
    }
}
