//! Float conditioning inputs (per call, per sample, defaults) and a graph without a time input, on
//! the toy model of `tests/fixtures/toy/make_toy.py`, which predicts `x0 = difficulty` everywhere.

mod common;

use common::{backends, load, repo};
use diffusion_rt::{Error, GenerateParams, Session};

#[test]
fn conditioning_values_reach_the_graph() {
    for backend in backends() {
        let model = load(&repo().join("tests/fixtures/toy"), backend);
        assert!(model.manifest().denoiser.time_input.is_none());
        let mut s = Session::new(&model).expect("session");
        let run = |s: &mut Session, conds: Vec<(String, Vec<f32>)>, batch: usize| {
            let p = GenerateParams { batch, conds, seed: 1, ..GenerateParams::default() };
            s.generate(&p, &mut |_, _| true)
        };
        // Euler ends on clean data, where the sample is the last prediction: the conditioning value.
        let per_sample = run(&mut s, vec![("difficulty".into(), vec![0.25, -0.75])], 2).expect("per sample").samples;
        assert!(per_sample[..16].iter().all(|&v| (v - 0.25).abs() < 1e-6), "{backend:?}: {:?}", &per_sample[..16]);
        assert!(per_sample[16..].iter().all(|&v| (v + 0.75).abs() < 1e-6), "{backend:?}");
        let shared = run(&mut s, vec![("difficulty".into(), vec![0.125])], 3).expect("one for all").samples;
        assert!(shared.iter().all(|&v| (v - 0.125).abs() < 1e-6));
        let default = run(&mut s, vec![], 1).expect("manifest default").samples;
        assert!(default.iter().all(|&v| (v - 0.5).abs() < 1e-6), "default 0.5 from model.json");

        for (conds, needle) in [
            (vec![("difficulty".to_string(), vec![1.0, 2.0])], "2 values for a batch of 3"),
            (vec![("difficulty".to_string(), vec![f32::NAN])], "not finite"),
            (vec![("difficulty".to_string(), vec![1.0]), ("difficulty".to_string(), vec![1.0])], "given twice"),
            (vec![("hardness".to_string(), vec![1.0])], "no conditioning input `hardness`"),
        ] {
            let err = run(&mut s, conds, 3).expect_err(needle);
            assert!(matches!(&err, Error::InvalidArgument(m) if m.contains(needle)), "{err}");
        }
        let guided = GenerateParams { batch: 1, guidance: Some(2.0), ..GenerateParams::default() };
        let err = s.generate(&guided, &mut |_, _| true).expect_err("no null class");
        assert!(err.to_string().contains("null class"), "{err}");
    }
}
