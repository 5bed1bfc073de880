//! Backend layer against the shipped digits denoiser and a reference computed by onnxruntime's Python
//! API (`tests/fixtures/backend/make_backend_ref.py`).
//!
//! The ort tests need the ONNX Runtime library (`bash scripts/install-onnxruntime.sh`). Without it they
//! print a note and pass, unless `DRT_REQUIRE_ORT` is set, which CI does. Built with both backends
//! only: half the point is comparing them.
#![cfg(all(feature = "tract", feature = "ort"))]

mod common;

use std::path::PathBuf;
use std::sync::Arc;

use common::{backends, ort_available, rel_l2, repo};
use diffusion_rt::backend::{
    load_graph, ort_lib, BackendKind, BackendOptions, DType, ExecutionProvider, Graph, Input, InputData, IoInfo,
};
use diffusion_rt::error::Error;

fn denoiser_path() -> PathBuf {
    repo().join("models/digits/denoiser.onnx")
}

fn fixture(name: &str) -> PathBuf {
    repo().join("tests/fixtures/backend").join(name)
}

fn opts(backend: BackendKind) -> BackendOptions {
    BackendOptions { backend, threads: Some(2), ..BackendOptions::default() }
}

fn load(kind: BackendKind) -> Arc<dyn Graph> {
    let path = denoiser_path();
    load_graph(&path, &opts(kind)).unwrap_or_else(|e| panic!("loading {} with {kind:?}: {e}", path.display()))
}

struct Case {
    sample_shape: Vec<usize>,
    sample: Vec<f32>,
    timestep: Vec<f32>,
    class_labels: Vec<i64>,
    out_shape: Vec<usize>,
    out: Vec<f32>,
}

fn reference(batch: usize) -> Case {
    let path = fixture("digits_ref.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let json: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
    let case = &json[format!("batch{batch}")];
    let f32s = |k: &str| case[k].as_array().expect(k).iter().map(|v| v.as_f64().expect(k) as f32).collect::<Vec<_>>();
    let usizes =
        |k: &str| case[k].as_array().expect(k).iter().map(|v| v.as_u64().expect(k) as usize).collect::<Vec<_>>();
    Case {
        sample_shape: usizes("sample_shape"),
        sample: f32s("sample"),
        timestep: f32s("timestep"),
        class_labels: case["class_labels"]
            .as_array()
            .expect("labels")
            .iter()
            .map(|v| v.as_i64().expect("label"))
            .collect(),
        out_shape: usizes("out_shape"),
        out: f32s("out"),
    }
}

/// Inputs in the order the graph declares them, looked up by name so the test does not assume it.
fn inputs<'a>(graph: &dyn Graph, case: &'a Case, batch_shape: &'a [usize]) -> Vec<Input<'a>> {
    let index =
        |name: &str| graph.inputs().iter().position(|i| i.name == name).unwrap_or_else(|| panic!("no input {name}"));
    vec![
        Input { index: index("sample"), shape: &case.sample_shape, data: InputData::F32(&case.sample) },
        Input { index: index("timestep"), shape: batch_shape, data: InputData::F32(&case.timestep) },
        Input { index: index("class_labels"), shape: batch_shape, data: InputData::I64(&case.class_labels) },
    ]
}

fn check_io(graph: &dyn Graph) {
    let info = |name: &str, dtype, shape: &[Option<usize>]| IoInfo { name: name.into(), dtype, shape: shape.to_vec() };
    let mut inputs = graph.inputs().to_vec();
    inputs.sort_by(|a, b| a.name.cmp(&b.name));
    assert_eq!(
        inputs,
        vec![
            info("class_labels", DType::I64, &[None]),
            info("sample", DType::F32, &[None, Some(1), Some(16), Some(16)]),
            info("timestep", DType::F32, &[None]),
        ],
        "{} inputs",
        graph.backend_name()
    );
    assert_eq!(graph.outputs(), &[info("out_sample", DType::F32, &[None, Some(1), Some(16), Some(16)])]);
    assert_eq!(graph.execution_provider(), ExecutionProvider::Cpu);
}

/// Batch 1, then 3, then 1 again on one runner: the batch symbol must re-resolve on every call.
fn run_reference(graph: &dyn Graph) -> Vec<f32> {
    check_io(graph);
    let mut runner = graph.runner().expect("runner");
    let mut batch3 = Vec::new();
    for batch in [1, 3, 1] {
        let case = reference(batch);
        let batch_shape = [batch];
        let mut out = vec![f32::NAN; case.out.len()];
        let shape = runner.run(&inputs(graph, &case, &batch_shape), 0, &mut out).expect("run");
        assert_eq!(shape, case.out_shape);
        let err = rel_l2(&out, &case.out);
        eprintln!("{} batch {batch}: rel L2 vs onnxruntime (Python) = {err:.2e}", graph.backend_name());
        assert!(
            err <= 1e-4,
            "{} batch {batch}: rel L2 {err:e} (if denoiser.onnx was retrained, rerun \
             tests/fixtures/backend/make_backend_ref.py)",
            graph.backend_name()
        );
        if batch == 3 {
            batch3 = out;
        }
    }
    batch3
}

#[test]
fn tract_matches_onnxruntime_reference() {
    let graph = load(BackendKind::Tract);
    assert_eq!(graph.backend_name(), "tract");
    run_reference(graph.as_ref());
}

#[test]
fn ort_matches_onnxruntime_reference() {
    if !ort_available() {
        return;
    }
    let graph = load(BackendKind::Ort);
    assert_eq!(graph.backend_name(), "ort");
    run_reference(graph.as_ref());
}

#[test]
fn tract_and_ort_agree() {
    if !ort_available() {
        return;
    }
    let tract = run_reference(load(BackendKind::Tract).as_ref());
    let ort = run_reference(load(BackendKind::Ort).as_ref());
    let err = rel_l2(&tract, &ort);
    eprintln!("tract vs ort, batch 3: rel L2 = {err:.2e}");
    assert!(err <= 1e-4, "tract vs ort: rel L2 {err:e}");
}

#[test]
fn auto_prefers_ort_when_its_library_is_found() {
    let expected = if ort_lib::available() { "ort" } else { "tract" };
    assert_eq!(load(BackendKind::Auto).backend_name(), expected);
}

/// One graph, a runner per thread, as the C ABI's sessions use it.
#[test]
fn runners_on_several_threads() {
    let mut kinds = vec![BackendKind::Tract];
    if ort_available() {
        kinds.push(BackendKind::Ort);
    }
    for kind in kinds {
        let graph = load(kind);
        std::thread::scope(|s| {
            for _ in 0..2 {
                s.spawn(|| {
                    let mut runner = graph.runner().expect("runner");
                    let case = reference(3);
                    let mut out = vec![0.0; case.out.len()];
                    runner.run(&inputs(graph.as_ref(), &case, &[3]), 0, &mut out).expect("run");
                    assert!(rel_l2(&out, &case.out) <= 1e-4);
                });
            }
        });
    }
}

#[test]
fn missing_model_file_is_an_io_error_naming_it() {
    for kind in [BackendKind::Tract, BackendKind::Ort] {
        let path = repo().join("no/such/denoiser.onnx");
        let err = load_graph(&path, &opts(kind)).err().expect("must fail");
        assert!(matches!(err, Error::Io(_)), "{kind:?}: {err}");
        assert!(err.to_string().contains("no/such/denoiser.onnx"), "{err}");
    }
}

#[test]
fn corrupt_model_is_a_model_error_naming_it() {
    let path = std::env::temp_dir().join(format!("drt-corrupt-{}.onnx", std::process::id()));
    std::fs::write(&path, b"this is not a protobuf").expect("write temp file");
    for kind in backends() {
        let err = load_graph(&path, &opts(kind)).err().expect("must fail");
        assert!(matches!(err, Error::Model(_)), "{kind:?}: {err}");
        assert!(err.to_string().contains("drt-corrupt-"), "{err}");
    }
    let _ = std::fs::remove_file(&path);
}

#[test]
fn bad_inputs_are_invalid_arguments_naming_the_input() {
    let case = reference(1);
    let labels_f32: Vec<f32> = case.class_labels.iter().map(|&c| c as f32).collect();
    let timestep_i64 = [999_i64];
    for kind in backends() {
        let graph = load(kind);
        let mut runner = graph.runner().expect("runner");
        let mut out = vec![0.0; case.out.len()];
        let good = inputs(graph.as_ref(), &case, &[1]);
        let expect_invalid = |inputs: &[Input<'_>],
                              out: &mut [f32],
                              needle: &str,
                              runner: &mut Box<dyn diffusion_rt::backend::Runner>| {
            let err = runner.run(inputs, 0, out).expect_err("must fail");
            assert!(matches!(err, Error::InvalidArgument(_)), "{kind:?}: {err}");
            assert!(err.to_string().contains(needle), "{kind:?}: `{err}` should mention `{needle}`");
        };

        let mut wrong = good.clone();
        wrong[1].data = InputData::I64(&timestep_i64);
        expect_invalid(&wrong, &mut out, "timestep", &mut runner);

        let mut wrong = good.clone();
        wrong[2].data = InputData::F32(&labels_f32);
        expect_invalid(&wrong, &mut out, "class_labels", &mut runner);

        let mut wrong = good.clone();
        wrong[0].shape = &[1, 1, 8, 32];
        expect_invalid(&wrong, &mut out, "sample", &mut runner);

        let mut wrong = good.clone();
        wrong[0].shape = &[2, 1, 16, 16];
        expect_invalid(&wrong, &mut out, "sample", &mut runner);

        expect_invalid(&good[..2], &mut out, "class_labels", &mut runner);

        let mut wrong = good.clone();
        wrong[2].index = wrong[1].index;
        expect_invalid(&wrong, &mut out, "twice", &mut runner);

        expect_invalid(&good, &mut out[..10], "out_sample", &mut runner);

        let err = runner.run(&good, 1, &mut out).expect_err("no output 1");
        assert!(matches!(err, Error::InvalidArgument(_)), "{err}");

        let no_batch = Case {
            sample_shape: vec![0, 1, 16, 16],
            sample: vec![],
            timestep: vec![],
            class_labels: vec![],
            out_shape: vec![],
            out: vec![],
        };
        let empty = inputs(graph.as_ref(), &no_batch, &[0]);
        expect_invalid(&empty, &mut [], "empty", &mut runner);

        // Values are the model layer's business, but a bad one must come back as an error, never a
        // crash: tract panics on an out-of-range Gather index, ORT reports it.
        let label_99 = [99_i64];
        let mut wrong = good.clone();
        wrong[2].data = InputData::I64(&label_99);
        let err = runner.run(&wrong, 0, &mut out).expect_err("class 99 of 11");
        assert!(matches!(err, Error::Model(_)), "{kind:?}: {err}");
        assert!(err.to_string().contains("denoiser.onnx"), "{err}");

        // The runner is still usable after rejected calls.
        runner.run(&good, 0, &mut out).expect("run after errors");
        assert!(rel_l2(&out, &case.out) <= 1e-4);
    }
}

#[test]
fn float16_and_int32_io() {
    let path = fixture("io_types.onnx");
    let x: Vec<half::f16> = [0.5f32, -1.25, 3.0].iter().map(|&v| half::f16::from_f32(v)).collect();
    let k = [1i32, 2, -7];
    for kind in backends() {
        let graph = load_graph(&path, &opts(kind)).unwrap_or_else(|e| panic!("{kind:?}: {e}"));
        assert_eq!(graph.inputs()[0].dtype, DType::F16);
        assert_eq!(graph.inputs()[1].dtype, DType::I32);
        assert_eq!(graph.outputs()[0].dtype, DType::F16);
        let mut runner = graph.runner().expect("runner");
        let inputs = [
            Input { index: 1, shape: &[3], data: InputData::I32(&k) },
            Input { index: 0, shape: &[3], data: InputData::F16(&x) },
        ];
        let mut y = [0.0f32; 3];
        assert_eq!(runner.run(&inputs, 0, &mut y).expect("y"), vec![3]);
        assert_eq!(y, [1.0, -2.5, 6.0], "{kind:?}");
        let mut z = [0.0f32; 3];
        runner.run(&inputs, 1, &mut z).expect("z");
        assert_eq!(z, [1.5, 0.75, -4.0], "{kind:?}");
        // float32 values for the float16 input are rounded to float16 by the runner, once: 0.1
        // becomes 0.0999755859375, so the graph doubles exactly that.
        let wide = [0.1f32, -1.25, 3.0];
        let narrowed = [
            Input { index: 1, shape: &[3], data: InputData::I32(&k) },
            Input { index: 0, shape: &[3], data: InputData::F32(&wide) },
        ];
        runner.run(&narrowed, 0, &mut y).expect("narrowed");
        assert_eq!(y, [2.0 * half::f16::from_f32(0.1).to_f32(), -2.5, 6.0], "{kind:?}");
    }
}

#[test]
fn missing_ort_library_names_the_install_script() {
    let opts = BackendOptions {
        backend: BackendKind::Ort,
        ort_library: Some(PathBuf::from("/nonexistent/libonnxruntime.so")),
        ..BackendOptions::default()
    };
    let err = load_graph(&denoiser_path(), &opts).err().expect("must fail");
    assert!(matches!(err, Error::BackendUnavailable(_)), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("bash scripts/install-onnxruntime.sh") && msg.contains("/nonexistent/libonnxruntime.so"),
        "{msg}"
    );
}

#[test]
fn execution_provider_requests() {
    let with_ep = |backend, ep: &str| BackendOptions {
        backend,
        execution_provider: ep.parse().expect("a provider"),
        ..BackendOptions::default()
    };
    let err = "warp-drive".parse::<ExecutionProvider>().expect_err("unknown EP");
    assert!(matches!(err, Error::InvalidArgument(_)) && err.to_string().contains("cpu, cuda, tensorrt"), "{err}");
    let err = load_graph(&denoiser_path(), &with_ep(BackendKind::Tract, "cuda")).err().expect("tract has no EPs");
    assert!(matches!(err, Error::InvalidArgument(_)), "{err}");
    // Without the cargo feature the provider is not compiled in: unavailable, never a silent CPU
    // fallback. (With the feature, whether it registers depends on the library and the machine.)
    if cfg!(feature = "cuda") || !ort_available() {
        return;
    }
    let err = load_graph(&denoiser_path(), &with_ep(BackendKind::Ort, "cuda")).err().expect("no CUDA here");
    assert!(matches!(err, Error::BackendUnavailable(_)), "{err}");
    assert!(err.to_string().contains("cuda"), "{err}");
}
