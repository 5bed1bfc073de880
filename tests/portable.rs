//! What must not depend on the machine. Seeded noise is the same bit for bit everywhere (it is
//! pure integer and libm arithmetic, `src/rng.rs`); samples land within rounding of the x86-64
//! results committed in `tests/fixtures/portable/`, on every backend. Run on x86-64 by the test
//! suite, and on aarch64 under emulation by `scripts/cross.sh aarch64 test`, where each case prints
//! how far it lands from x86-64.
//!
//! `DRT_UPDATE_FIXTURES=1` rewrites the references from this machine's results; they are made on
//! x86-64.

mod common;

use std::path::PathBuf;

use common::{backends, load, model_dir, rel_l2, repo};
use diffusion_rt::backend::BackendKind;
use diffusion_rt::denoiser::NoiseSource;
use diffusion_rt::rng::PhiloxNoise;
use diffusion_rt::{npy, GenerateParams, Session};

const SEEDS: [u64; 3] = [0, 42, 0xDEAD_BEEF_CAFE_F00D];
/// Initial noise and three steps' draws per seed.
const INITIAL: usize = 512;
const DRAW: usize = 256;
const STEPS: usize = 3;

fn fixture(name: &str) -> PathBuf {
    repo().join("tests/fixtures/portable").join(name)
}

fn update() -> bool {
    std::env::var_os("DRT_UPDATE_FIXTURES").is_some()
}

#[test]
fn seeded_noise_is_the_same_on_every_machine() {
    let per_seed = INITIAL + STEPS * DRAW;
    let mut noise = vec![0f32; SEEDS.len() * per_seed];
    for (seed, out) in SEEDS.iter().zip(noise.chunks_mut(per_seed)) {
        let mut source = PhiloxNoise::new(*seed);
        let (initial, draws) = out.split_at_mut(INITIAL);
        source.initial(initial);
        for (step, draw) in draws.chunks_mut(DRAW).enumerate() {
            source.fill(step, draw).expect("draw");
        }
    }
    let path = fixture("noise.npy");
    if update() {
        npy::write(&path, &[SEEDS.len(), per_seed], &noise).expect("write");
    }
    let want = npy::read(&path).expect("tests/fixtures/portable/noise.npy");
    let same = want.data.iter().zip(&noise).all(|(a, b)| a.to_bits() == b.to_bits());
    assert!(same && want.data.len() == noise.len(), "seeded noise differs from x86-64's bit for bit");
    eprintln!("portable ({}): seeded noise equals x86-64's bit for bit", std::env::consts::ARCH);
}

/// `model` on each backend, two classes, six DPM-Solver++ steps with guidance: within `bound`
/// (relative L2) of the x86-64 samples.
fn samples_match(model: &str, bound: f64) {
    for backend in backends() {
        let name = match backend {
            BackendKind::Tract => "tract",
            _ => "ort",
        };
        let m = load(&model_dir(model), backend);
        let mut session = Session::new(&m).expect("session");
        let p = GenerateParams {
            batch: 2,
            classes: vec![3, 7],
            seed: 5,
            steps: Some(6),
            guidance: Some(2.0),
            sampler: Some("dpmpp-2m".into()),
            ..GenerateParams::default()
        };
        let got = session.generate(&p, &mut |_, _| true).expect("generate").samples;
        let path = fixture(&format!("{model}_{name}.npy"));
        if update() {
            npy::write(&path, &[2, 1, 16, 16], &got).expect("write");
        }
        let want = npy::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).data;
        let d = rel_l2(&got, &want);
        eprintln!("portable ({}): {model} on {name}: relative L2 {d:.2e} from x86-64", std::env::consts::ARCH);
        assert!(d <= bound, "{model} on {name}: {d:e} from the x86-64 samples (bound {bound:e})");
    }
}

#[test]
fn float32_samples_match_x86_64() {
    samples_match("digits", 1e-5);
}

/// Quantized kernels may differ between machines in how they round when they requantize: tract's
/// aarch64 kernels land 4e-2 away after six steps (ONNX Runtime's give x86-64's bits), measured
/// under emulation, so the bound only catches a broken model.
#[test]
fn int8_samples_match_x86_64() {
    samples_match("digits-int8", 1e-1);
}

/// tract has float16 kernels on aarch64 and runs float16 graphs in float32 elsewhere, so the
/// float16 model moves more between machines than the float32 one (4.4e-3 on tract, 7e-4 on ONNX
/// Runtime, measured under emulation).
#[test]
fn float16_samples_match_x86_64() {
    samples_match("digits-fp16", 1e-2);
}
