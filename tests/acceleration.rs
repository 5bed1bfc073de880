//! Guidance rules end to end: adaptive guidance and the guidance interval change how many network
//! passes a run makes, exactly as their rules say, through the Rust API, the CLI and the C API;
//! off, they change nothing.

mod common;

use std::ffi::{CStr, CString};
use std::process::Command;
use std::ptr::null_mut;

use common::{backends, c::backend_name, load, model_dir, ort_available, TempDir};
use diffusion_rt::backend::BackendKind;
use diffusion_rt::ffi::*;
use diffusion_rt::guidance::GuidanceRules;
use diffusion_rt::quality::Judge;
use diffusion_rt::sampler::sampler_by_name;
use diffusion_rt::schedule::SigmaSpacing;
use diffusion_rt::{Error, GenerateParams, Session};

fn params(rules: GuidanceRules) -> GenerateParams {
    GenerateParams {
        steps: Some(10),
        guidance: Some(3.0),
        batch: 2,
        classes: vec![2, 7],
        seed: 4,
        guidance_rules: rules,
        ..GenerateParams::default()
    }
}

/// `drt bench` on the digits model with `args`: the JSON report.
fn cli_bench(args: &[&str]) -> serde_json::Value {
    let tmp = TempDir::new("accel-bench");
    let json = tmp.path().join("report.json");
    let o = Command::new(env!("CARGO_BIN_EXE_drt"))
        .args(["bench", "--runs", "1", "--warmup", "0", "--model"])
        .arg(model_dir("digits"))
        .args(args)
        .arg("--json")
        .arg(&json)
        .output()
        .expect("drt");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_str(&std::fs::read_to_string(&json).expect("json")).expect("json")
}

/// `drt generate` on the digits model (tract) with `args`: its stderr, the run having failed.
fn cli_generate_error(args: &[&str]) -> String {
    let o = Command::new(env!("CARGO_BIN_EXE_drt"))
        .args(["generate", "--backend", "tract", "--save-raw", "/dev/null", "--model"])
        .arg(model_dir("digits"))
        .args(args)
        .output()
        .expect("drt");
    assert!(!o.status.success());
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn digits_cstr() -> CString {
    CString::new(model_dir("digits").to_str().expect("utf8")).expect("cstr")
}

fn tract_params() -> drt_model_params {
    let mut mp = drt_model_params_default();
    mp.backend = c"tract".as_ptr();
    mp
}

/// `drt_bench_run` on the digits model (tract, one measured run) with `gp`: the JSON report.
fn c_bench(gp: &drt_generate_params) -> serde_json::Value {
    let mut bp = drt_bench_params_default();
    bp.runs = 1;
    bp.warmup = 0;
    unsafe {
        let mut report = null_mut();
        assert_eq!(drt_bench_run(digits_cstr().as_ptr(), &tract_params(), gp, &bp, &mut report), drt_status::DRT_OK);
        let mut buf = vec![0 as std::ffi::c_char; 8192];
        assert_eq!(drt_bench_report_json(report, buf.as_mut_ptr(), buf.len(), null_mut()), drt_status::DRT_OK);
        drt_bench_report_free(report);
        serde_json::from_str(CStr::from_ptr(buf.as_ptr()).to_str().expect("utf8")).expect("json")
    }
}

/// `drt_generate` on a fresh digits session (tract) into `out`: the status and drt_last_error().
fn c_generate(gp: &drt_generate_params, out: &mut [f32]) -> (drt_status, String) {
    unsafe {
        let (mut m, mut s) = (null_mut(), null_mut());
        assert_eq!(drt_model_load(digits_cstr().as_ptr(), &tract_params(), &mut m), drt_status::DRT_OK);
        assert_eq!(drt_session_create(m, std::ptr::null(), &mut s), drt_status::DRT_OK);
        let status = drt_generate(s, gp, out.as_mut_ptr(), out.len());
        let msg = CStr::from_ptr(drt_last_error()).to_string_lossy().into_owned();
        drt_session_free(s);
        drt_model_free(m);
        (status, msg)
    }
}

/// 100 guided digits, ten of each (dpmpp-2m, 20 steps, guidance 3), on the fastest backend, judged
/// by the shipped classifier.
struct HundredDigits {
    session: Session,
    judge: Judge,
    classes: Vec<i64>,
}

impl HundredDigits {
    fn new() -> HundredDigits {
        let backend = if ort_available() { BackendKind::Ort } else { BackendKind::Tract };
        HundredDigits {
            session: Session::new(&load(&model_dir("digits"), backend)).expect("session"),
            judge: Judge::load(&model_dir("digits-classifier"), &common::options(backend)).expect("judge"),
            classes: (0..100).map(|i| i % 10).collect(),
        }
    }

    /// Network passes per sample and class accuracy of the run `edit` makes of the base one.
    fn nfe_and_accuracy(&mut self, edit: impl FnOnce(&mut GenerateParams)) -> (usize, f64) {
        let mut p = GenerateParams {
            steps: Some(20),
            guidance: Some(3.0),
            batch: 100,
            classes: self.classes.clone(),
            seed: 21,
            ..GenerateParams::default()
        };
        edit(&mut p);
        let gen = self.session.generate(&p, &mut |_, _| true).expect("generate");
        let accuracy =
            self.judge.judge(&gen.samples, &self.classes).expect("judge").class_accuracy.expect("classes given");
        (gen.nfe, accuracy)
    }
}

#[test]
fn the_interval_guides_exactly_the_levels_inside_it() {
    for backend in backends() {
        let model = load(&model_dir("digits"), backend);
        let mut session = Session::new(&model).expect("session");
        let plain = session.generate(&params(GuidanceRules::default()), &mut |_, _| true).expect("generate");
        assert_eq!(plain.nfe, 20);
        // dpmpp-2m evaluates once per step, at the step's starting level.
        let schedule = sampler_by_name("dpmpp-2m")
            .expect("sampler")
            .schedule(model.noise_schedule(), 10, SigmaSpacing::Default)
            .expect("schedule");
        let sigma: Vec<f64> = schedule.levels().iter().map(|l| l.ve_sigma()).collect();
        for (interval, guided) in
            [((sigma[3], sigma[1]), 3), ((0.0, f64::INFINITY), 10), ((1e6, 1e7), 0), ((sigma[9] * 0.5, sigma[7]), 3)]
        {
            let rules = GuidanceRules { interval: Some(interval), ..GuidanceRules::default() };
            let gen = session.generate(&params(rules), &mut |_, _| true).expect("generate");
            assert_eq!(gen.nfe, 10 + guided, "{backend:?} {interval:?}");
            if guided == 10 {
                assert!(gen.samples == plain.samples, "an interval holding every level changes nothing");
            }
        }
    }
}

#[test]
fn adaptive_guidance_stops_guiding_once_the_predictions_agree() {
    for backend in backends() {
        let model = load(&model_dir("digits"), backend);
        let mut session = Session::new(&model).expect("session");
        let plain = session.generate(&params(GuidanceRules::default()), &mut |_, _| true).expect("generate");
        let run = |gamma: f32, session: &mut Session| {
            let rules = GuidanceRules { adaptive: Some(gamma), ..GuidanceRules::default() };
            session.generate(&params(rules), &mut |_, _| true).expect("generate")
        };
        // Predictions never agree exactly: guided throughout, the same samples.
        let never = run(1.0, &mut session);
        assert_eq!(never.nfe, 20);
        assert!(never.samples == plain.samples);
        // Any agreement at all: only the first step is guided.
        assert_eq!(run(0.01, &mut session).nfe, 2 + 9);
        // In between, a prefix of guided steps: each guided step costs one pass more.
        let some = run(0.9, &mut session);
        assert!(some.nfe > 11 && some.nfe < 20, "{backend:?}: {}", some.nfe);
        assert!(some.samples != plain.samples);
    }
}

/// The design target on the shipped model: adaptive guidance at γ 0.9 saves at least a fifth of
/// the passes and keeps the class (measured over 100 samples; `drt bench` reports the same).
#[test]
fn adaptive_guidance_keeps_the_class_with_fewer_passes() {
    let mut digits = HundredDigits::new();
    let (n0, a0) = digits.nfe_and_accuracy(|_| {});
    let (n1, a1) = digits.nfe_and_accuracy(|p| p.guidance_rules.adaptive = Some(0.9));
    println!("nfe {n0} -> {n1}, accuracy {a0} -> {a1}");
    assert!(n1 as f64 <= 0.8 * n0 as f64, "{n1} passes against {n0}");
    assert!(a1 >= a0 - 0.02, "accuracy {a1} against {a0}");
}

#[test]
fn rules_through_the_cli_and_the_c_api() {
    for backend in backends() {
        let r = cli_bench(&[
            "--backend",
            backend_name(backend),
            "--steps",
            "4",
            "--class",
            "3",
            "--guidance-interval",
            "1e6,1e7",
        ]);
        assert_eq!(r["nfe"].as_u64(), Some(4), "no level inside: conditional passes only");
        assert_eq!(r["guidance_interval"], serde_json::json!([1e6, 1e7]));
        assert!(r["rel_l2_to_baseline"].as_f64().is_some_and(|d| d > 0.0));
    }
    for (args, needle) in [(["--adaptive-guidance", "1.5"], "adaptive"), (["--guidance-interval", "5,1"], "interval")] {
        let err = cli_generate_error(&args);
        assert!(err.contains("invalid argument") && err.contains(needle), "{err}");
    }

    let mut gp = drt_generate_params_default();
    gp.steps = 4;
    gp.guidance_interval_lo = 1e6;
    gp.guidance_interval_hi = 1e7;
    assert_eq!(c_bench(&gp)["nfe"].as_u64(), Some(4));
    gp.guidance_interval_lo = 0.0;
    gp.guidance_interval_hi = 0.0;
    gp.adaptive_guidance = 1.5;
    let (status, msg) = c_generate(&gp, &mut [0f32; 256]);
    assert_eq!(status, drt_status::DRT_ERR_INVALID_ARGUMENT);
    assert!(msg.contains("adaptive"));
    let err = Session::new(&load(&model_dir("digits"), BackendKind::Tract))
        .expect("session")
        .generate(&params(GuidanceRules { interval: Some((2.0, 1.0)), ..GuidanceRules::default() }), &mut |_, _| true)
        .expect_err("bad interval");
    assert!(matches!(err, Error::InvalidArgument(_)), "{err}");
}

/// A step table (sigmas chosen offline) runs the same through the three APIs, replaces the
/// schedule, and sets the number of steps.
#[test]
fn step_tables_through_the_three_apis() {
    let digits = model_dir("digits");
    let table = [60.0f64, 14.0, 4.0, 1.2, 0.3, 0.0];
    let model = load(&digits, BackendKind::Tract);
    let rust = Session::new(&model)
        .expect("session")
        .generate(
            &GenerateParams {
                sigmas: Some(table.to_vec()),
                guidance: Some(3.0),
                batch: 1,
                classes: vec![5],
                seed: 2,
                ..GenerateParams::default()
            },
            &mut |_, _| true,
        )
        .expect("generate");
    assert_eq!((rust.steps, rust.nfe), (5, 10), "five steps from a six-entry table, guided");

    let raw = std::env::temp_dir().join(format!("drt-table-{}.npy", std::process::id()));
    let o = Command::new(env!("CARGO_BIN_EXE_drt"))
        .args([
            "generate",
            "--backend",
            "tract",
            "--class",
            "5",
            "--seed",
            "2",
            "--quiet",
            "--guidance",
            "3",
            "--sigmas",
            "60,14,4,1.2,0.3,0",
            "--model",
        ])
        .arg(&digits)
        .arg("--save-raw")
        .arg(&raw)
        .output()
        .expect("drt");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let cli = diffusion_rt::npy::read(&raw).expect("npy").data;
    std::fs::remove_file(&raw).ok();
    assert!(cli == rust.samples, "CLI and Rust API differ");

    let mut p = drt_generate_params_default();
    p.class_label = 5;
    p.seed = 2;
    p.guidance = 3.0;
    p.sigmas = table.as_ptr();
    p.sigmas_len = table.len();
    let mut out = [0f32; 256];
    let (status, msg) = c_generate(&p, &mut out);
    assert_eq!(status, drt_status::DRT_OK, "{msg}");
    assert!(out[..] == rust.samples[..], "C API and Rust API differ");
    p.sigmas_len = 1;
    let (status, msg) = c_generate(&p, &mut out);
    assert_eq!(status, drt_status::DRT_ERR_INVALID_ARGUMENT);
    assert!(msg.contains("sigma table"));
}

/// Step caching end to end: fewer passes (each skipped step saves the guided pair), the same
/// samples when nothing is stable enough to skip, through the three APIs.
#[test]
fn step_cache_skips_steps_through_the_three_apis() {
    use diffusion_rt::cache::{CacheMode, CacheOptions};
    let digits = model_dir("digits");
    for backend in backends() {
        let model = load(&digits, backend);
        let mut session = Session::new(&model).expect("session");
        let p = |cache| GenerateParams { step_cache: cache, ..params(GuidanceRules::default()) };
        let plain = session.generate(&p(None), &mut |_, _| true).expect("generate");
        for mode in [CacheMode::Skip, CacheMode::AdamsBashforth] {
            let never = CacheOptions { mode, threshold: 0.0, max_skips: 1 };
            let gen = session.generate(&p(Some(never)), &mut |_, _| true).expect("generate");
            assert!(
                gen.nfe == plain.nfe && gen.samples == plain.samples,
                "{backend:?} {mode:?}: threshold 0 skips nothing"
            );
            let loose = CacheOptions { mode, threshold: 1e9, max_skips: 1 };
            let gen = session.generate(&p(Some(loose)), &mut |_, _| true).expect("generate");
            // dpmpp-2m's ten calls, all at noisy levels: the first three run, then every other
            // one is skipped (3, 5, 7, 9): 6 guided calls.
            assert_eq!(gen.nfe, 2 * 6, "{backend:?} {mode:?}");
            assert!(gen.samples.iter().all(|v| v.is_finite()));
        }
    }

    let r = cli_bench(&[
        "--backend",
        "tract",
        "--steps",
        "10",
        "--guidance",
        "3",
        "--class",
        "3",
        "--step-cache",
        "ab",
        "--cache-threshold",
        "1e9",
    ]);
    assert_eq!(r["nfe"].as_u64(), Some(12));
    assert_eq!(r["step_cache"]["mode"], "ab");
    assert!(r["rel_l2_to_baseline"].as_f64().is_some_and(|d| d > 0.0));
    assert!(cli_generate_error(&["--step-cache", "often"]).contains("unknown step cache `often`"));

    let mut gp = drt_generate_params_default();
    gp.steps = 10;
    gp.guidance = 3.0;
    gp.class_label = 3;
    gp.step_cache = DRT_STEP_CACHE_SKIP;
    gp.cache_threshold = 1e9;
    let r = c_bench(&gp);
    assert_eq!((r["nfe"].as_u64(), r["step_cache"]["mode"].as_str()), (Some(12), Some("skip")));
    gp.step_cache = 7;
    let (status, msg) = c_generate(&gp, &mut [0f32; 256]);
    assert_eq!(status, drt_status::DRT_ERR_INVALID_ARGUMENT);
    assert!(msg.contains("step_cache 7"));
}

/// The design target on the shipped model: the step cache at its defaults needs at most two
/// thirds of the passes and keeps the class (100 samples; `drt bench` reports the same).
#[test]
fn step_cache_keeps_the_class_with_fewer_passes() {
    use diffusion_rt::cache::{CacheMode, CacheOptions};
    let mut digits = HundredDigits::new();
    let (n0, a0) = digits.nfe_and_accuracy(|_| {});
    for mode in [CacheMode::Skip, CacheMode::AdamsBashforth] {
        let (n1, a1) = digits.nfe_and_accuracy(|p| p.step_cache = Some(CacheOptions::new(mode)));
        println!("{mode:?}: nfe {n0} -> {n1}, accuracy {a0} -> {a1}");
        assert!(n1 as f64 * 1.5 <= n0 as f64, "{mode:?}: {n1} passes against {n0}");
        assert!(a1 >= a0 - 0.02, "{mode:?}: accuracy {a1} against {a0}");
    }
}

/// models/digits' default recipe (guidance 1.5 within σ ∈ [0, 5]) applies with the default scale
/// only: a caller's own scale guides every step unless it asks for an interval.
#[test]
fn default_guidance_interval_goes_with_the_default_scale() {
    let model = load(&model_dir("digits"), BackendKind::Tract);
    let mut session = Session::new(&model).expect("session");
    let run = |session: &mut Session, guidance: Option<f32>, rules: GuidanceRules| {
        let p = GenerateParams {
            guidance,
            guidance_rules: rules,
            batch: 1,
            classes: vec![4],
            seed: 3,
            ..GenerateParams::default()
        };
        session.generate(&p, &mut |_, _| true).expect("generate")
    };
    let defaults = run(&mut session, None, GuidanceRules::default());
    let interval = GuidanceRules { interval: Some((0.0, 5.0)), ..GuidanceRules::default() };
    let explicit = run(&mut session, Some(1.5), interval);
    assert_eq!(defaults.guidance, 1.5);
    assert_eq!(defaults.steps, 10);
    assert!(defaults.nfe > 10 && defaults.nfe < 20, "{} passes: some steps guided, not all", defaults.nfe);
    assert!(defaults.nfe == explicit.nfe && defaults.samples == explicit.samples, "the default is that interval");
    let plain = run(&mut session, Some(1.5), GuidanceRules::default());
    assert_eq!(plain.nfe, 20, "an explicit scale guides every step");
    let all = GuidanceRules { interval: Some((0.0, f64::INFINITY)), ..GuidanceRules::default() };
    assert_eq!(run(&mut session, None, all).nfe, 20, "an interval of everything turns the default off");

    let r = cli_bench(&["--backend", "tract", "--class", "4", "--seed", "3"]);
    assert_eq!(r["guidance_interval"], serde_json::json!([0.0, 5.0]));
    assert_eq!(r["nfe"].as_u64(), Some(defaults.nfe as u64));
    assert!(r["rel_l2_to_baseline"].as_f64().is_some_and(|d| d > 0.0), "compared with guidance at every step");
}
