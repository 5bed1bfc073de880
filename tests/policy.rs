//! The shipped point-task policy in closed loop with the task's simulator, on both backends: it
//! reaches the goal passing the obstacle on both sides where the regression baseline trained on
//! the same demonstrations drives into it, warm starts keep it succeeding with fewer network
//! passes, and the evaluation refuses what it cannot run. The figures of record come from
//! `drt policy-eval` (docs/policies.md); these runs are small.

mod common;

use common::{backends, load, model_dir, repo};
use diffusion_rt::policy::{evaluate, EvalOptions, PointTask, PolicyReport};
use diffusion_rt::{BackendKind, Error, Session};
use sha2::{Digest, Sha256};

fn task() -> PointTask {
    PointTask::load(&model_dir("point-policy").join("task.json")).expect("task.json")
}

fn eval(model: &str, backend: BackendKind, episodes: usize, warm_start: Option<f32>) -> PolicyReport {
    let model = load(&model_dir(model), backend);
    let mut session = Session::new(&model).expect("session");
    let opts = EvalOptions { episodes, seed: 1, warm_start, ..EvalOptions::default() };
    evaluate(&mut session, &task(), &opts).expect("evaluate")
}

#[test]
fn the_policies_were_trained_on_this_task() {
    let task = std::fs::read(model_dir("point-policy").join("task.json")).expect("task.json");
    let sha: String = Sha256::digest(&task).iter().map(|b| format!("{b:02x}")).collect();
    for model in ["point-policy", "point-policy-regression"] {
        let training: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(model_dir(model).join("training.json")).expect("training"))
                .expect("json");
        assert_eq!(training["task_sha256"].as_str(), Some(sha.as_str()), "{model}: retrain it (train_policy.py)");
    }
}

#[test]
fn the_diffusion_policy_uses_both_ways_round_where_regression_collides() {
    for backend in backends() {
        let diffusion = eval("point-policy", backend, 40, None);
        assert!(diffusion.success_rate >= 0.85, "{backend:?}: {}", diffusion.table());
        assert!(diffusion.left_share >= 0.25 && diffusion.right_share >= 0.25, "{}", diffusion.table());
        assert_eq!((diffusion.steps, diffusion.passes_per_plan), (10, 10.0), "the model's defaults");
        let regression = eval("point-policy-regression", backend, 40, None);
        assert!(regression.success_rate <= 0.5, "{backend:?}: {}", regression.table());
        assert!(regression.collisions >= 20, "{}", regression.table());
    }
}

#[test]
fn warm_starts_keep_succeeding_with_fewer_passes() {
    for backend in backends() {
        let warm = eval("point-policy", backend, 40, Some(0.3));
        assert!(warm.success_rate >= 0.85, "{backend:?}: {}", warm.table());
        // Every plan after an episode's first runs 3 of the 10 steps.
        assert!(warm.passes_per_plan < 5.0 && warm.passes_per_plan > 3.0, "{}", warm.table());
    }
}

#[test]
fn what_the_evaluation_cannot_run_is_refused() {
    let digits = load(&model_dir("digits"), BackendKind::Tract);
    let err = evaluate(
        &mut Session::new(&digits).expect("session"),
        &task(),
        &EvalOptions { episodes: 1, ..Default::default() },
    )
    .expect_err("digits is no policy");
    assert!(err.to_string().contains("not a point-task policy"), "{err}");
    let policy = load(&model_dir("point-policy"), BackendKind::Tract);
    let mut s = Session::new(&policy).expect("session");
    for (opts, needle) in [
        (EvalOptions { episodes: 0, ..Default::default() }, "episodes must be at least 1"),
        (EvalOptions { episodes: 1, execute: Some(17), ..Default::default() }, "execute must be between 1 and 16"),
        (EvalOptions { episodes: 1, warm_start: Some(0.01), ..Default::default() }, "leaves no step to run"),
    ] {
        let err = evaluate(&mut s, &task(), &opts).expect_err(needle);
        assert!(matches!(&err, Error::InvalidArgument(m) if m.contains(needle)), "{err}");
    }
    let mut short = task();
    short.horizon = 8;
    let err = evaluate(&mut s, &short, &EvalOptions { episodes: 1, ..Default::default() }).expect_err("horizon");
    assert!(err.to_string().contains("the task needs [horizon 8, 2]"), "{err}");
}

#[test]
fn the_cli_prints_the_report_and_writes_json() {
    let tmp = common::TempDir::new("policy-cli");
    let json = tmp.path().join("report.json");
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_drt"))
        .args(["policy-eval", "--model"])
        .arg(model_dir("point-policy"))
        .args(["--backend", "tract", "--episodes", "3", "--warm-start", "0.5", "--json"])
        .arg(&json)
        .output()
        .expect("drt");
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success() && out.contains("plan time  p50"), "{out}{}", String::from_utf8_lossy(&o.stderr));
    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).expect("json")).expect("json");
    assert_eq!((report["episodes"].as_u64(), report["warm_start"].as_f64()), (Some(3), Some(0.5)));
    let missing = std::process::Command::new(env!("CARGO_BIN_EXE_drt"))
        .args(["policy-eval", "--model"])
        .arg(repo().join("models/digits"))
        .output()
        .expect("drt");
    assert!(String::from_utf8_lossy(&missing.stderr).contains("task.json"), "the task file is named");
}
