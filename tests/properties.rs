//! Property tests over the surfaces that take untrusted input, with bounded cases so they run on
//! every CI build (the fuzz targets in fuzz/ explore the same surfaces for hours): manifest text,
//! `.npy` bytes, mutated ONNX graphs, and the C API's generation parameters. Each must answer
//! with a value or its own kind of error, never a panic, and an error must not write output.

mod common;

use std::ffi::CString;
use std::ptr::{null, null_mut};

use common::{model_dir, ort_available, repo, TempDir};
use diffusion_rt::backend::{BackendKind, BackendOptions};
use diffusion_rt::ffi::*;
use diffusion_rt::manifest::Manifest;
use diffusion_rt::{npy, Error, Model};
use proptest::prelude::*;
use serde_json::Value;

fn digits_manifest() -> Value {
    serde_json::from_str(&std::fs::read_to_string(model_dir("digits").join("model.json")).expect("read")).expect("json")
}

/// Every key path of a JSON value (objects and arrays), root excluded.
fn paths(v: &Value, prefix: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
    let children: Vec<(String, &Value)> = match v {
        Value::Object(m) => m.iter().map(|(k, v)| (k.clone(), v)).collect(),
        Value::Array(a) => a.iter().enumerate().map(|(i, v)| (i.to_string(), v)).collect(),
        _ => return,
    };
    for (k, child) in children {
        prefix.push(k);
        out.push(prefix.clone());
        paths(child, prefix, out);
        prefix.pop();
    }
}

fn at<'a>(v: &'a mut Value, path: &[String]) -> &'a mut Value {
    path.iter().fold(v, |v, k| match v {
        Value::Array(a) => &mut a[k.parse::<usize>().expect("index")],
        other => &mut other[k.as_str()],
    })
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(Value::from),
        "[a-z_0-9.\\-]{0,12}".prop_map(Value::from),
    ];
    leaf.prop_recursive(2, 8, 3, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..3).prop_map(Value::Array),
            prop::collection::btree_map("[a-z_]{1,8}", inner, 0..3)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    /// Any text is a manifest or a manifest error.
    #[test]
    fn manifest_text_never_panics(text in "\\PC{0,300}") {
        if let Err(e) = Manifest::parse(&text) {
            prop_assert!(matches!(e, Error::Manifest(_)), "{e}");
        }
    }

    /// The shipped manifest with one value replaced anywhere: a manifest whose schedule builds, or
    /// a manifest error that names a key or the JSON problem.
    #[test]
    fn edited_manifest_is_valid_or_a_manifest_error(pick in any::<prop::sample::Index>(), value in json_value()) {
        let mut m = digits_manifest();
        let mut all = Vec::new();
        paths(&m, &mut Vec::new(), &mut all);
        let path = &all[pick.index(all.len())];
        *at(&mut m, path) = value;
        match Manifest::parse(&m.to_string()) {
            Ok(parsed) => { let _ = parsed.noise_schedule.to_schedule(); }
            Err(Error::Manifest(msg)) => prop_assert!(!msg.is_empty()),
            Err(e) => prop_assert!(false, "{path:?}: not a manifest error: {e}"),
        }
    }

    /// Arbitrary bytes, and a valid file with bytes changed, are an array or an invalid-argument error.
    #[test]
    fn npy_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..400), flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..6)) {
        for input in [bytes.clone(), {
            let mut valid = std::fs::read(repo().join("tests/fixtures/quality/heldout_labels.npy")).expect("npy");
            for (i, b) in &flips {
                let k = i.index(valid.len());
                valid[k] = *b;
            }
            valid
        }] {
            match npy::from_bytes(&input) {
                Ok(a) => prop_assert_eq!(a.data.len(), a.shape.iter().product::<usize>()),
                Err(e) => prop_assert!(matches!(e, Error::InvalidArgument(_)), "{e}"),
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, failure_persistence: None, ..ProptestConfig::default() })]

    /// A real graph with bytes changed or cut short loads, or fails with a model error, on every
    /// backend.
    #[test]
    fn mutated_onnx_loads_or_is_a_model_error(cut in any::<prop::sample::Index>(), flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8), truncate in any::<bool>()) {
        let src = repo().join("tests/fixtures/nonfinite");
        let mut bytes = std::fs::read(src.join("nan.onnx")).expect("onnx");
        for (i, b) in &flips {
            let k = i.index(bytes.len());
            bytes[k] = *b;
        }
        if truncate {
            bytes.truncate(cut.index(bytes.len()));
        }
        let tmp = TempDir::new("prop-onnx");
        std::fs::copy(src.join("model.json"), tmp.path().join("model.json")).expect("manifest");
        std::fs::write(tmp.path().join("nan.onnx"), &bytes).expect("graph");
        let mut kinds = vec![BackendKind::Tract];
        if ort_available() {
            kinds.push(BackendKind::Ort);
        }
        for backend in kinds {
            let opts = BackendOptions { backend, threads: Some(1), ..BackendOptions::default() };
            match Model::load(tmp.path(), &opts) {
                Ok(_) => {}
                Err(Error::Model(msg)) | Err(Error::Manifest(msg)) => prop_assert!(msg.contains("nan.onnx"), "{msg}"),
                Err(e) => prop_assert!(false, "{backend:?}: {e}"),
            }
        }
    }
}

/// The toy model's C session, shared by the cases of one test.
struct CSession(*mut drt_session);

impl CSession {
    fn new() -> CSession {
        let dir = CString::new(repo().join("tests/fixtures/toy").to_str().expect("utf8")).expect("cstr");
        let mut p = drt_model_params_default();
        p.backend = c"tract".as_ptr();
        let (mut m, mut s) = (null_mut(), null_mut());
        unsafe {
            assert_eq!(drt_model_load(dir.as_ptr(), &p, &mut m), drt_status::DRT_OK);
            assert_eq!(drt_session_create(m, null(), &mut s), drt_status::DRT_OK);
            drt_model_free(m);
        }
        CSession(s)
    }
}

impl Drop for CSession {
    fn drop(&mut self) {
        unsafe { drt_session_free(self.0) };
    }
}

#[test]
fn c_generate_params_give_a_status_and_never_a_stray_write() {
    let session = CSession::new();
    let fields = (
        (
            any::<u64>(),
            0u32..6,
            prop_oneof![Just(f32::NAN), Just(-1.0f32), -5.0f32..120.0],
            prop::option::of("[a-z0-9\\-]{0,10}"),
        ),
        (-3i32..3, 0u32..6, prop::option::of(prop::collection::vec(-2i32..2, 0..6)), any::<bool>()),
        (
            prop::option::of(("[a-z]{0,12}", any::<f32>())),
            prop::option::of((0usize..40, -2.0f32..2.0)),
            -0.5f32..1.5,
            0usize..120,
        ),
    );
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: 128,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    runner
        .run(
            &fields,
            |(
                (seed, steps, guidance, sampler),
                (class_label, batch, classes, noise),
                (cond, init, strength, out_len),
            )| {
                let sampler = sampler.and_then(|s| CString::new(s).ok());
                let classes = classes.map(|mut c| {
                    c.resize(batch.max(1) as usize, 0);
                    c
                });
                let noise_buf = vec![0.25f32; batch.max(1) as usize * 16];
                let cond = cond.and_then(|(n, v)| CString::new(n).ok().map(|n| (n, v)));
                let names = cond.as_ref().map(|(n, _)| [n.as_ptr()]);
                let values = cond.as_ref().map(|(_, v)| [*v]);
                let init_buf = init.map(|(len, v)| vec![v; len]);
                let mut p = drt_generate_params_default();
                p.seed = seed;
                p.steps = steps;
                p.guidance = guidance;
                p.sampler = sampler.as_ref().map_or(null(), |c| c.as_ptr());
                p.class_label = class_label;
                p.batch = batch;
                (p.classes, p.classes_len) = classes.as_ref().map_or((null(), 0), |c| (c.as_ptr(), c.len()));
                if noise {
                    (p.noise, p.noise_len) = (noise_buf.as_ptr(), noise_buf.len());
                }
                if let (Some(n), Some(v)) = (&names, &values) {
                    p.cond_names = n.as_ptr();
                    p.cond_values = v.as_ptr();
                    p.cond_count = 1;
                }
                if let Some(i) = init_buf.as_ref().filter(|i| !i.is_empty()) {
                    p.init = i.as_ptr();
                    p.init_len = i.len();
                }
                p.strength = strength;
                let mut out = vec![7.0f32; out_len];
                let status = unsafe { drt_generate(session.0, &p, out.as_mut_ptr(), out_len) };
                prop_assert_ne!(status, drt_status::DRT_ERR_INTERNAL);
                if status != drt_status::DRT_OK {
                    prop_assert!(out.iter().all(|&v| v == 7.0), "{status:?} wrote to the output");
                }
                Ok(())
            },
        )
        .unwrap_or_else(|e| panic!("{e}"));
}
