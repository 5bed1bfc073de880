//! `drt bench` as a user runs it: the report's keys, counts that follow from the settings, quality
//! judged on the samples really generated, and errors for impossible requests. Timings are only
//! checked for being measured (positive and consistent), never against a speed.

mod common;

use std::process::Command;

use common::{backends, c::backend_name, model_dir, TempDir};

fn drt(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_drt")).args(args).output().expect("run drt")
}

#[test]
fn bench_reports_every_key_on_every_backend() {
    let tmp = TempDir::new("bench");
    for backend in backends() {
        let json = tmp.path().join(format!("{}.json", backend_name(backend)));
        let o = drt(&[
            "bench",
            "--model",
            model_dir("digits").to_str().expect("utf8"),
            "--backend",
            backend_name(backend),
            "--threads",
            "1",
            "--batch",
            "10",
            "--steps",
            "12",
            "--guidance",
            "3",
            "--runs",
            "2",
            "--warmup",
            "1",
            "--classifier",
            model_dir("digits-classifier").to_str().expect("utf8"),
            "--json",
            json.to_str().expect("utf8"),
        ]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let table = String::from_utf8_lossy(&o.stdout);
        assert!(table.contains("overhead ratio") && table.contains("class accuracy"), "{table}");
        assert!(table.contains("(1 thread)") && table.contains("12 steps"), "singular and plural: {table}");
        let r: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&json).expect("json written")).expect("json");
        for key in [
            "device",
            "version",
            "backend",
            "execution_provider",
            "model",
            "precision",
            "batch",
            "sampler",
            "steps",
            "threads",
            "nfe",
            "load_ms",
            "first_step_ms",
            "step_ms_p50",
            "step_ms_p90",
            "total_ms_p50",
            "backend_ms_p50",
            "overhead_ratio",
            "peak_rss_mb",
            "class_accuracy",
            "frechet_distance",
        ] {
            assert!(!r[key].is_null(), "{key} missing: {r}");
        }
        assert_eq!(r["backend"], backend_name(backend));
        assert_eq!(
            (r["model"].as_str(), r["precision"].as_str(), r["sampler"].as_str()),
            (Some("digits"), Some("fp32"), Some("dpmpp-2m"))
        );
        assert_eq!((r["batch"].as_u64(), r["steps"].as_u64(), r["threads"].as_u64()), (Some(10), Some(12), Some(1)));
        assert_eq!(r["nfe"].as_u64(), Some(24), "guidance 3: a conditional and an unconditional pass per step");
        assert_eq!(r["judged_samples"].as_u64(), Some(20), "two measured runs of 10");
        assert!(
            r["device"]["cores"].as_u64().is_some_and(|c| c >= 1)
                && !r["device"]["cpu"].as_str().unwrap_or("").is_empty()
        );
        let f = |k: &str| r[k].as_f64().unwrap_or_else(|| panic!("{k} is a number"));
        assert!(f("step_ms_p50") > 0.0 && f("step_ms_p90") >= f("step_ms_p50"));
        assert!(f("total_ms_p50") >= f("backend_ms_p50") && f("backend_ms_p50") > 0.0);
        assert!(f("overhead_ratio") >= 1.0 && f("peak_rss_mb") > 1.0 && f("load_ms") > 0.0);
        // The batch cycles through the classes when none is given; the shipped model gets them right.
        assert!(f("class_accuracy") >= 0.9, "{r}");
        assert!(f("frechet_distance") > 0.0);
    }
}

/// Without a classifier, a class or a rule of its own: no quality figures shown as percentages of
/// nothing, and the model's default interval named as such.
#[test]
fn bench_table_says_what_it_did_not_measure() {
    let o = drt(&[
        "bench",
        "--model",
        model_dir("digits").to_str().expect("utf8"),
        "--backend",
        "tract",
        "--runs",
        "1",
        "--warmup",
        "0",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let table = String::from_utf8_lossy(&o.stdout);
    let row = |key: &str| {
        table.lines().find(|l| l.starts_with(key)).unwrap_or_else(|| panic!("no `{key}` row: {table}")).to_string()
    };
    assert_eq!(row("class accuracy").split_whitespace().collect::<Vec<_>>(), ["class", "accuracy", "-"]);
    assert!(row("acceleration").contains("[0, 5] (the model's default)"), "{table}");
    assert!(row("acceleration").ends_with("0 (the same samples)"), "{table}");
    assert!(row("sampling").contains("no class given"), "{table}");
}

#[test]
fn bench_refuses_impossible_requests() {
    let model = model_dir("digits");
    let model = model.to_str().expect("utf8");
    for (args, needle) in [
        (vec!["--runs", "0"], "runs must be at least 1"),
        (vec!["--steps", "0"], "steps must be between 1"),
        (vec!["--batch", "0"], "batch must be between 1"),
        (vec!["--classifier", "/no/such/classifier"], "/no/such/classifier"),
    ] {
        let mut all = vec!["bench", "--model", model, "--backend", "tract"];
        all.extend(args);
        let o = drt(&all);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success() && err.contains(needle), "{all:?}: {err}");
    }
}
