//! A `model.json` that contradicts its graph is refused at load time with an error naming the key,
//! the manifest file and the graph, on every backend.

mod common;

use common::{backends, model_dir, options, TempDir};
use diffusion_rt::{Error, Model};
use serde_json::{json, Value};

fn digits_manifest() -> Value {
    serde_json::from_str(&std::fs::read_to_string(model_dir("digits").join("model.json")).expect("read")).expect("json")
}

fn load_with(edit: impl Fn(&mut Value), tmp: &TempDir) -> Result<Model, Error> {
    let mut m = digits_manifest();
    m["denoiser"]["onnx"] = json!(model_dir("digits").join("denoiser.onnx"));
    edit(&mut m);
    std::fs::write(tmp.path().join("model.json"), serde_json::to_string(&m).expect("json")).expect("write");
    let mut last = None;
    for backend in backends() {
        let r = Model::load(tmp.path(), &options(backend));
        if let (Some(Err(a)), Err(b)) = (&last, &r) {
            assert_eq!(std::mem::discriminant(a), std::mem::discriminant(b), "backends disagree: {a} / {b}");
        }
        last = Some(r);
    }
    last.expect("at least tract")
}

#[test]
fn manifest_graph_mismatches_name_key_and_files() {
    let tmp = TempDir::new("model-errors");
    type Edit = Box<dyn Fn(&mut Value)>;
    let cases: Vec<(Edit, &str)> = vec![
        (Box::new(|m| m["denoiser"]["sample_input"] = json!("latents")), "denoiser.sample_input"),
        (Box::new(|m| m["denoiser"]["output"] = json!("noise_pred")), "denoiser.output"),
        (Box::new(|m| m["denoiser"]["time_input"]["name"] = json!("t")), "denoiser.time_input.name"),
        (Box::new(|m| m["denoiser"]["class_input"]["name"] = json!("y")), "denoiser.class_input.name"),
        (Box::new(|m| m["sample_shape"] = json!([3, 16, 16])), "sample_shape"),
        (Box::new(|m| m["sample_shape"] = json!([1, 16])), "sample_shape"),
        (Box::new(|m| m["denoiser"]["class_input"]["null_class"] = json!(5)), "null_class"),
        (
            Box::new(|m| {
                m["denoiser"].as_object_mut().expect("obj").remove("class_input");
            }),
            "class_labels",
        ),
        (Box::new(|m| m["denoiser"]["cond_inputs"] = json!([{"name": "difficulty", "default": 0.5}])), "difficulty"),
    ];
    for (i, (edit, needle)) in cases.into_iter().enumerate() {
        match load_with(edit, &tmp) {
            Err(Error::Manifest(msg)) => {
                assert!(msg.contains(needle), "case {i}: `{msg}` should mention `{needle}`");
                assert!(!msg.contains("manifest error"), "case {i}: `{msg}` repeats the kind");
                assert!(
                    msg.contains("model.json") && msg.contains("denoiser.onnx"),
                    "case {i}: `{msg}` names both files"
                );
            }
            other => panic!("case {i} ({needle}): expected a manifest error, got {other:?}"),
        }
    }
}

#[test]
fn missing_files_are_errors_naming_them() {
    let tmp = TempDir::new("model-missing");
    match load_with(|m| m["denoiser"]["onnx"] = json!("nowhere.onnx"), &tmp) {
        Err(Error::Manifest(msg)) => assert!(msg.contains("nowhere.onnx") && msg.contains("denoiser.onnx"), "{msg}"),
        other => panic!("{other:?}"),
    }
    match Model::load(&tmp.path().join("no-such-model"), &options(diffusion_rt::BackendKind::Tract)) {
        Err(Error::Io(msg)) => assert!(msg.contains("no-such-model"), "{msg}"),
        other => panic!("{other:?}"),
    }
    std::fs::write(tmp.path().join("garbage.onnx"), b"\x08\x07not a protobuf at all").expect("write");
    match load_with(|m| m["denoiser"]["onnx"] = json!("garbage.onnx"), &tmp) {
        Err(Error::Model(msg)) => assert!(msg.contains("garbage.onnx"), "{msg}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn guidance_without_a_null_class_is_refused() {
    let tmp = TempDir::new("model-nonull");
    let model = std::sync::Arc::new(
        load_with(
            |m| {
                m["denoiser"]["class_input"].as_object_mut().expect("obj").remove("null_class");
            },
            &tmp,
        )
        .expect("valid without a null class"),
    );
    let mut s = diffusion_rt::Session::new(&model).expect("session");
    let p = diffusion_rt::GenerateParams {
        steps: Some(2),
        batch: 1,
        classes: vec![3],
        guidance: Some(3.0),
        ..Default::default()
    };
    let err = s.generate(&p, &mut |_, _| true).expect_err("no null class");
    assert!(matches!(&err, Error::InvalidArgument(m) if m.contains("null class")), "{err}");
    let unguided = diffusion_rt::GenerateParams { guidance: Some(1.0), ..p };
    let gen = s.generate(&unguided, &mut |_, _| true).expect("guidance 1 runs the conditional pass only");
    assert_eq!(gen.nfe, 2);
}
