//! The reduced-precision variants of the digits model (models/train/quantize.py): they run, their
//! samples are recognised as their class, they are current with the float32 model they derive
//! from, and the benchmark names their precision. Figures are in each MODEL_CARD.md.
//! digits-int4's 4-bit matrix products (ONNX Runtime's MatMulNBits) run on tract too, widened
//! to float32 at load, with ONNX Runtime's numbers.

mod common;

use common::{backends, load, model_dir, ort_available, rel_l2};
use diffusion_rt::backend::BackendKind;
use diffusion_rt::bench::{self, BenchOptions};
use diffusion_rt::quality::Judge;
use diffusion_rt::{GenerateParams, Session};

/// Guided dpmpp-2m at 20 steps, `per_class` samples of each digit: (samples, requested classes).
fn digits(name: &str, backend: BackendKind, per_class: usize) -> (Vec<f32>, Vec<i64>) {
    let model = load(&model_dir(name), backend);
    let classes: Vec<i64> = (0..10).flat_map(|c| std::iter::repeat_n(c, per_class)).collect();
    let params = GenerateParams {
        steps: Some(20),
        guidance: Some(3.0),
        batch: classes.len(),
        classes: classes.clone(),
        seed: 11,
        ..GenerateParams::default()
    };
    let gen = Session::new(&model).expect("session").generate(&params, &mut |_, _| true).expect("generate");
    (gen.samples, classes)
}

fn accuracy(samples: &[f32], classes: &[i64], backend: BackendKind) -> f64 {
    let mut judge = Judge::load(&model_dir("digits-classifier"), &common::options(backend)).expect("judge");
    judge.judge(samples, classes).expect("judge").class_accuracy.expect("classes given")
}

#[test]
fn reduced_precisions_keep_the_class_on_onnx_runtime() {
    if !ort_available() {
        return;
    }
    let ort = BackendKind::Ort;
    let (f32_samples, classes) = digits("digits", ort, 20);
    let base = accuracy(&f32_samples, &classes, ort);
    let (int8, _) = digits("digits-int8", ort, 20);
    let (fp16, _) = digits("digits-fp16", ort, 20);
    let (int4, _) = digits("digits-int4", ort, 20);
    let (a8, a16, a4) =
        (accuracy(&int8, &classes, ort), accuracy(&fp16, &classes, ort), accuracy(&int4, &classes, ort));
    println!(
        "accuracy: f32 {base:.3}, int8 {a8:.3}, fp16 {a16:.3}, int4 {a4:.3}; rel. L2 to f32: int8 {:.4}, fp16 {:.4}, \
         int4 {:.4}",
        rel_l2(&int8, &f32_samples),
        rel_l2(&fp16, &f32_samples),
        rel_l2(&int4, &f32_samples)
    );
    assert!(a8 >= 0.88, "int8 accuracy {a8}");
    assert!(a16 >= base - 0.01, "fp16 accuracy {a16} vs f32 {base}");
    assert!(a4 >= base - 0.01, "int4 accuracy {a4} vs f32 {base}");
    assert!(rel_l2(&fp16, &f32_samples) < 0.05, "fp16 follows the f32 trajectory");
}

/// int8 and float16 on tract too (its float16 Gemm is rewritten as MatMul + Add on load, and off
/// aarch64 the graph runs in float32): one sample per digit at 8 steps, the same trajectory as
/// float32 and as ONNX Runtime's float16 within float16 rounding (0.9e-3 and 1.5e-3 here).
#[test]
fn int8_and_fp16_run_on_tract() {
    let tract = BackendKind::Tract;
    let (int8, classes) = digits("digits-int8", tract, 10);
    assert!(accuracy(&int8, &classes, tract) >= 0.88);
    let short = |name: &str, backend: BackendKind| {
        let model = load(&model_dir(name), backend);
        let params = GenerateParams {
            steps: Some(8),
            guidance: Some(3.0),
            batch: 10,
            classes: (0..10).collect(),
            seed: 5,
            ..GenerateParams::default()
        };
        Session::new(&model).expect("session").generate(&params, &mut |_, _| true).expect("generate").samples
    };
    let (f32_samples, fp16) = (short("digits", tract), short("digits-fp16", tract));
    let d = rel_l2(&fp16, &f32_samples);
    println!("tract: rel. L2 fp16 to f32 {d:.4}");
    assert!(d < 5e-3, "fp16 follows the f32 trajectory: {d}");
    if ort_available() {
        let d = rel_l2(&fp16, &short("digits-fp16", BackendKind::Ort));
        println!("tract fp16 vs ONNX Runtime fp16: rel. L2 {d:.4}");
        assert!(d < 5e-3, "the two backends run the same float16 graph: {d}");
    }
}

/// tract widens MatMulNBits' 4-bit weights to float32 at load: the same samples as ONNX Runtime's
/// MatMulNBits kernel, which computes in float32 from the same dequantized weights.
#[test]
fn int4_runs_on_tract_as_on_onnx_runtime() {
    let (tract, classes) = digits("digits-int4", BackendKind::Tract, 2);
    assert!(accuracy(&tract, &classes, BackendKind::Tract) >= 0.95);
    if ort_available() {
        let (ort, _) = digits("digits-int4", BackendKind::Ort, 2);
        let d = rel_l2(&tract, &ort);
        println!("int4: tract vs ONNX Runtime rel. L2 {d:.2e}");
        assert!(d < 1e-4, "tract's widened weights are ONNX Runtime's: {d}");
    }
}

/// The MatMulNBits layouts tract's widening reads (tests/fixtures/nbits: 4-bit with zero points,
/// 4-bit and 8-bit symmetric, a padded second block): tract's product equals ONNX Runtime's.
#[test]
fn matmul_nbits_layouts_widen_to_onnx_runtime_s_numbers() {
    use diffusion_rt::backend::{load_graph, BackendOptions, Input, InputData};
    let x: Vec<f32> = (0..3 * 40).map(|i| ((i * 37 % 101) as f32 / 50.0) - 1.0).collect();
    let product = |name: &str, backend: BackendKind| {
        let path = common::repo().join("tests/fixtures/nbits").join(format!("{name}.onnx"));
        let opts = BackendOptions { backend, ..BackendOptions::default() };
        let graph = load_graph(&path, &opts).unwrap_or_else(|e| panic!("{name} on {backend:?}: {e}"));
        let mut out = vec![0f32; 3 * 6];
        let input = Input { index: 0, shape: &[3, 40], data: InputData::F32(&x) };
        graph.runner().expect("runner").run(&[input], 0, &mut out).expect("run");
        out
    };
    for name in ["int4_zero_points", "int4", "int8"] {
        let tract = product(name, BackendKind::Tract);
        assert!(tract.iter().any(|v| *v != 0.0) && tract.iter().all(|v| v.is_finite()), "{name}: {tract:?}");
        if ort_available() {
            let d = rel_l2(&tract, &product(name, BackendKind::Ort));
            println!("{name}: tract vs ONNX Runtime rel. L2 {d:.1e}");
            assert!(d < 1e-6, "{name}: tract's widened weights differ from ONNX Runtime's by {d}");
        }
    }
}

#[test]
fn derived_models_are_current() {
    use sha2::Digest;
    let sha =
        format!("{:x}", sha2::Sha256::digest(std::fs::read(model_dir("digits").join("denoiser.onnx")).expect("onnx")));
    for name in ["digits-int8", "digits-fp16", "digits-int4"] {
        let derived: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(model_dir(name).join("derived.json")).expect("derived.json"))
                .expect("json");
        assert_eq!(
            derived["source_sha256"].as_str(),
            Some(sha.as_str()),
            "{name} is stale: run models/train/quantize.py"
        );
    }
}

#[test]
fn bench_names_the_precision() {
    for backend in backends() {
        let models = [("digits", "fp32"), ("digits-int8", "int8"), ("digits-fp16", "fp16"), ("digits-int4", "int4")];
        for (name, precision) in models {
            let params = GenerateParams { steps: Some(2), batch: 1, ..GenerateParams::default() };
            let opts = BenchOptions { runs: 1, warmup: 0, ..BenchOptions::default() };
            let report = bench::run(&model_dir(name), &common::options(backend), &params, &opts).expect("bench");
            assert_eq!(report.precision, precision, "{name} on {backend:?}");
        }
    }
}
