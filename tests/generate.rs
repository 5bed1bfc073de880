//! End-to-end generation on the shipped models: sample quality judged by the shipped classifier,
//! bit-for-bit reproducibility, and the Rust API's conditioning and img2img paths.

mod common;

use std::sync::Arc;

use common::{backends, load, model_dir, options, rel_l2};
use diffusion_rt::backend::{load_graph, BackendKind, Input, InputData};
use diffusion_rt::{Error, GenerateParams, Session};

/// The classifier's predicted labels for `n` samples of [1,16,16].
fn classify(images: &[f32], backend: BackendKind) -> Vec<usize> {
    let graph =
        load_graph(&model_dir("digits-classifier").join("classifier.onnx"), &options(backend)).expect("classifier");
    let logits_idx = graph.outputs().iter().position(|o| o.name == "logits").expect("logits output");
    let mut runner = graph.runner().expect("runner");
    let mut labels = Vec::new();
    for chunk in images.chunks(250 * 256) {
        let n = chunk.len() / 256;
        let clipped: Vec<f32> = chunk.iter().map(|v| v.clamp(-1.0, 1.0)).collect();
        let mut logits = vec![0f32; n * 10];
        let shape = [n, 1, 16, 16];
        runner
            .run(&[Input { index: 0, shape: &shape, data: InputData::F32(&clipped) }], logits_idx, &mut logits)
            .expect("classify");
        labels.extend(
            logits
                .chunks(10)
                .map(|l| l.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map(|(i, _)| i).expect("10 logits")),
        );
    }
    labels
}

fn fastest_backend() -> BackendKind {
    *common::backends().last().expect("a backend compiled in")
}

/// The design target: 100 samples per class at dpmpp-2m, 20 steps, guidance 3 are recognised ≥ 90 %.
#[test]
fn generated_digits_are_recognised_as_their_class() {
    let backend = fastest_backend();
    let model = load(&model_dir("digits"), backend);
    let mut session = Session::new(&model).expect("session");
    let classes: Vec<i64> = (0..10).flat_map(|c| std::iter::repeat_n(c, 100)).collect();
    let params = GenerateParams {
        sampler: Some("dpmpp-2m".into()),
        steps: Some(20),
        guidance: Some(3.0),
        batch: classes.len(),
        classes: classes.clone(),
        seed: 7,
        ..GenerateParams::default()
    };
    let gen = session.generate(&params, &mut |_, _| true).expect("generate");
    assert_eq!(gen.nfe, 40, "20 steps of guided dpmpp-2m: 20 conditional + 20 unconditional passes");
    let predicted = classify(&gen.samples, backend);
    let correct = predicted.iter().zip(&classes).filter(|(p, c)| **p as i64 == **c).count();
    let accuracy = correct as f64 / classes.len() as f64;
    println!("class accuracy {accuracy:.3} on {backend:?}");
    assert!(accuracy >= 0.90, "only {accuracy:.3} of the samples show their class");

    // The same judge must be able to say no: unguided samples of the null class are not all "3".
    let threes = predicted.iter().filter(|p| **p == 3).count();
    assert!(threes < classes.len() / 2);
}

#[test]
fn same_seed_gives_bit_identical_samples() {
    for backend in backends() {
        let model = load(&model_dir("digits"), backend);
        for sampler in ["dpmpp-2m", "euler-a", "dpmpp-2m-sde"] {
            let params = GenerateParams {
                sampler: Some(sampler.into()),
                steps: Some(8),
                batch: 3,
                classes: vec![1, 5, 9],
                seed: 1234,
                ..GenerateParams::default()
            };
            let mut a = Session::new(&model).expect("session");
            let first = a.generate(&params, &mut |_, _| true).expect("first").samples;
            let second = a.generate(&params, &mut |_, _| true).expect("second, same session").samples;
            let third =
                Session::new(&model).expect("session").generate(&params, &mut |_, _| true).expect("third").samples;
            assert!(first == second && first == third, "{sampler} on {backend:?} is not reproducible");
            let other = GenerateParams { seed: 1235, ..params };
            let different = a.generate(&other, &mut |_, _| true).expect("other seed").samples;
            assert!(rel_l2(&different, &first) > 0.1, "{sampler}: another seed must give other samples");
        }
    }
}

#[test]
fn flow_model_generates_recognisable_digits() {
    let backend = fastest_backend();
    let model = load(&model_dir("digits-flow"), backend);
    let classes: Vec<i64> = (0..10).flat_map(|c| std::iter::repeat_n(c, 5)).collect();
    let params =
        GenerateParams { batch: classes.len(), classes: classes.clone(), seed: 3, ..GenerateParams::default() };
    let gen = Session::new(&model).expect("session").generate(&params, &mut |_, _| true).expect("generate");
    assert_eq!(gen.sampler.name(), "flow-euler", "the manifest's default sampler");
    let predicted = classify(&gen.samples, backend);
    let correct = predicted.iter().zip(&classes).filter(|(p, c)| **p as i64 == **c).count();
    assert!(correct >= 45, "{correct}/50 flow samples recognised");
}

#[test]
fn progress_reports_every_step_and_cancels() {
    let model = load(&model_dir("digits"), BackendKind::Tract);
    let mut session = Session::new(&model).expect("session");
    let params = GenerateParams { steps: Some(6), batch: 1, classes: vec![2], ..GenerateParams::default() };
    let mut seen = Vec::new();
    session
        .generate(&params, &mut |done, total| {
            seen.push((done, total));
            true
        })
        .expect("generate");
    assert_eq!(seen, (1..=6).map(|d| (d, 6)).collect::<Vec<_>>());

    let err = session.generate(&params, &mut |done, _| done < 3).expect_err("cancelled");
    assert!(matches!(err, Error::Cancelled { step: 3 }), "{err}");
    // The session is usable afterwards and gives what a fresh one gives.
    let again = session.generate(&params, &mut |_, _| true).expect("after cancel").samples;
    let fresh = Session::new(&model).expect("session").generate(&params, &mut |_, _| true).expect("fresh").samples;
    assert_eq!(again, fresh);

    let flag = session.cancel_flag();
    let err = session
        .generate(&params, &mut |done, _| {
            if done == 2 {
                flag.store(true, std::sync::atomic::Ordering::SeqCst);
            }
            true
        })
        .expect_err("cancelled by flag");
    assert!(matches!(err, Error::Cancelled { step: 2 }), "the flag stops the run before the next step: {err}");
}

/// begin / step / read / finish gives generate's samples bit for bit, with a preview after each step.
#[test]
fn caller_driven_loop_equals_generate() {
    let model = load(&model_dir("digits"), BackendKind::Tract);
    let mut session = Session::new(&model).expect("session");
    for sampler in ["dpmpp-2m-sde", "heun", "lcm"] {
        let params = GenerateParams {
            sampler: Some(sampler.into()),
            steps: Some(5),
            guidance: Some(2.0),
            batch: 2,
            classes: vec![4, 9],
            seed: 11,
            ..GenerateParams::default()
        };
        let whole = session.generate(&params, &mut |_, _| true).expect("generate");

        assert!(matches!(session.step(), Err(Error::InvalidArgument(_))), "no step before begin");
        let total = session.begin(&params).expect("begin");
        assert_eq!(total, 5);
        assert!(session.current_prediction().is_none(), "no preview before the first step");
        let start = session.current_sample().expect("initial sample").to_vec();
        let err = session.finish().expect_err("finish before the last step");
        assert!(err.to_string().contains("0 of 5"), "{err}");
        let mut previews = Vec::new();
        for k in 1..=total {
            assert_eq!(session.step().expect("step"), k);
            assert_eq!(session.progress(), Some((k, total)));
            previews.push(session.current_prediction().expect("preview").to_vec());
        }
        assert!(matches!(session.step(), Err(Error::InvalidArgument(_))), "no step past the end");
        assert_ne!(session.current_sample().expect("sample"), start.as_slice());
        let last = session.current_sample().expect("sample").to_vec();
        let driven = session.finish().expect("finish");
        assert_eq!(driven.samples, whole.samples, "{sampler}: caller-driven equals generate");
        assert_eq!(driven.samples, last, "{sampler}: the last read is the result");
        assert_eq!((driven.nfe, driven.steps), (whole.nfe, whole.steps));
        // The previews sharpen towards the result.
        let (first, final_preview) = (&previews[0], &previews[total - 1]);
        assert!(rel_l2(final_preview, &driven.samples) < rel_l2(first, &driven.samples), "{sampler}");
        assert!(session.progress().is_none() && session.current_sample().is_none(), "finish ends the run");
    }

    // A cancel between steps ends the run; the session starts afresh afterwards.
    let params = GenerateParams { steps: Some(4), batch: 1, classes: vec![1], ..GenerateParams::default() };
    session.begin(&params).expect("begin");
    session.step().expect("step");
    session.cancel_flag().store(true, std::sync::atomic::Ordering::SeqCst);
    assert!(matches!(session.step(), Err(Error::Cancelled { step: 1 })));
    assert!(session.progress().is_none());
    let again = session.generate(&params, &mut |_, _| true).expect("after cancel").samples;
    let fresh = Session::new(&model).expect("session").generate(&params, &mut |_, _| true).expect("fresh").samples;
    assert_eq!(again, fresh);
}

#[test]
fn img2img_keeps_the_start_at_low_strength() {
    let model = load(&model_dir("digits"), BackendKind::Tract);
    let mut session = Session::new(&model).expect("session");
    let base = GenerateParams { steps: Some(20), batch: 1, classes: vec![8], seed: 11, ..GenerateParams::default() };
    let eight = session.generate(&base, &mut |_, _| true).expect("an eight").samples;
    // Re-generate towards class 1 from the 8: the lower the strength, the more of the 8 survives.
    let towards_one = |strength: f32, session: &mut Session| {
        let p = GenerateParams {
            classes: vec![1],
            init: Some(eight.clone()),
            strength: Some(strength),
            seed: 5,
            ..base.clone()
        };
        session.generate(&p, &mut |_, _| true).expect("img2img").samples
    };
    let dist: Vec<f64> = [0.05, 0.3, 1.0].iter().map(|&s| rel_l2(&towards_one(s, &mut session), &eight)).collect();
    println!("distance to the start at strength 0.05, 0.3, 1.0: {dist:?}");
    assert!(dist[0] < 0.2 && dist[0] < dist[1] && dist[1] < dist[2], "{dist:?}");
    assert_eq!(classify(&towards_one(0.05, &mut session), BackendKind::Tract), vec![8], "a light touch keeps the 8");
    assert_eq!(classify(&towards_one(1.0, &mut session), BackendKind::Tract), vec![1], "full strength ignores it");
    let bad = GenerateParams { init: Some(eight.clone()), strength: Some(1.5), ..base.clone() };
    assert!(matches!(session.generate(&bad, &mut |_, _| true), Err(Error::InvalidArgument(_))));
}

#[test]
fn bad_generation_parameters_are_refused_with_a_reason() {
    let model = load(&model_dir("digits"), BackendKind::Tract);
    let mut s = Session::new(&model).expect("session");
    let ok = GenerateParams { steps: Some(2), batch: 2, classes: vec![1], ..GenerateParams::default() };
    let cases: Vec<(GenerateParams, &str)> = vec![
        (GenerateParams { steps: Some(0), ..ok.clone() }, "steps"),
        (GenerateParams { batch: 3, classes: vec![1, 2], ..ok.clone() }, "2 classes for a batch of 3"),
        (GenerateParams { batch: 1_000_000, ..ok.clone() }, "batch"),
        (GenerateParams { guidance: Some(f32::NAN), ..ok.clone() }, "guidance"),
        (GenerateParams { guidance: Some(-1.0), ..ok.clone() }, "guidance"),
        (GenerateParams { classes: vec![10 + 1], ..ok.clone() }, "class 11"),
        (GenerateParams { classes: vec![1, 2, 3], ..ok.clone() }, "3 classes"),
        (GenerateParams { sampler: Some("eulr".into()), ..ok.clone() }, "unknown sampler 'eulr'"),
        (
            GenerateParams { conds: vec![("difficulty".into(), vec![0.5])], ..ok.clone() },
            "no conditioning input `difficulty`",
        ),
        (GenerateParams { noise: Some(vec![0.0; 3]), ..ok.clone() }, "noise has 3 values"),
        (GenerateParams { strength: Some(0.5), ..ok.clone() }, "strength needs"),
    ];
    for (params, needle) in cases {
        let err = s.generate(&params, &mut |_, _| true).expect_err(needle);
        assert!(matches!(err, Error::InvalidArgument(_)), "{needle}: {err:?}");
        assert!(err.to_string().contains(needle), "`{err}` should mention `{needle}`");
    }
    // Still works after all that.
    s.generate(&ok, &mut |_, _| true).expect("valid parameters");
}

#[test]
fn model_shared_by_threads() {
    let model = load(&model_dir("digits"), BackendKind::Tract);
    let params =
        GenerateParams { steps: Some(4), batch: 2, classes: vec![4, 7], seed: 99, ..GenerateParams::default() };
    let want = Session::new(&model).expect("session").generate(&params, &mut |_, _| true).expect("gen").samples;
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let (model, params) = (Arc::clone(&model), params.clone());
            std::thread::spawn(move || {
                Session::new(&model).expect("session").generate(&params, &mut |_, _| true).expect("gen").samples
            })
        })
        .collect();
    for h in handles {
        assert_eq!(h.join().expect("thread"), want);
    }
}
