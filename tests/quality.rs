//! The quality judge: the Fréchet distance against closed forms, and the shipped classifier with
//! its reference statistics against numpy/scipy on the 355 held-out digits
//! (tests/fixtures/quality/, written by models/train/reference_stats.py).

mod common;

use common::{backends, model_dir, options, repo};
use diffusion_rt::npy;
use diffusion_rt::quality::{frechet_distance, mean_cov, Judge};
use nalgebra::{DMatrix, DVector};

/// A deterministic orthogonal matrix: the Q of a QR decomposition of a fixed pseudo-random matrix.
fn rotation(d: usize) -> DMatrix<f64> {
    let mut state = 0x9e3779b97f4a7c15u64;
    let a = DMatrix::from_fn(d, d, |_, _| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 11) as f64 / (1u64 << 53) as f64 - 0.5
    });
    a.qr().q()
}

/// For diagonal covariances the distance is `|m1 - m2|² + Σ (√a - √b)²`; rotating both Gaussians
/// by the same orthogonal matrix must not change it, singular covariances included.
#[test]
fn frechet_distance_matches_the_closed_form() {
    let d = 12;
    let m1 = DVector::from_fn(d, |i, _| i as f64 * 0.1);
    let m2 = DVector::from_fn(d, |i, _| 1.0 - i as f64 * 0.05);
    let a: Vec<f64> = (0..d).map(|i| if i < 3 { 0.0 } else { 0.5 + i as f64 }).collect();
    let b: Vec<f64> = (0..d).map(|i| 2.0 + (i as f64).sin()).collect();
    let expected =
        (&m1 - &m2).norm_squared() + a.iter().zip(&b).map(|(a, b)| (a.sqrt() - b.sqrt()).powi(2)).sum::<f64>();
    let (c1, c2) = (DMatrix::from_diagonal(&DVector::from_vec(a)), DMatrix::from_diagonal(&DVector::from_vec(b)));
    let fd = frechet_distance(&m1, &c1, &m2, &c2);
    assert!((fd - expected).abs() < 1e-9 * expected, "{fd} vs {expected}");
    let q = rotation(d);
    let (r1, r2) = (&q * &c1 * q.transpose(), &q * &c2 * q.transpose());
    let rotated = frechet_distance(&(&q * &m1), &r1, &(&q * &m2), &r2);
    assert!((rotated - expected).abs() < 1e-8 * expected, "{rotated} vs {expected}");
    assert!(frechet_distance(&m1, &r1, &m1, &r1).abs() < 1e-8, "a distribution is at distance 0 from itself");
}

#[test]
fn mean_and_covariance_are_numpys() {
    // np.cov([[1, 2], [3, 5], [5, 11]], rowvar=False) == [[4, 9], [9, 21]]
    let (mean, cov) = mean_cov(&[1.0, 2.0, 3.0, 5.0, 5.0, 11.0], 2);
    assert_eq!(mean.as_slice(), &[3.0, 6.0]);
    assert_eq!(cov.as_slice(), &[4.0, 9.0, 9.0, 21.0]);
}

fn json(path: &str) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(repo().join(path)).expect(path)).expect("json")
}

/// The held-out digits score what numpy/scipy computed from the same classifier and statistics.
#[test]
fn heldout_digits_score_what_scipy_computed() {
    let expected = json("tests/fixtures/quality/expected.json");
    let images = npy::read(&repo().join("tests/fixtures/quality/heldout_images.npy")).expect("images").data;
    let labels: Vec<i64> = {
        let bytes = std::fs::read(repo().join("tests/fixtures/quality/heldout_labels.npy")).expect("labels");
        npyz::NpyFile::new(&bytes[..]).expect("npy").into_vec::<i64>().expect("int64")
    };
    for backend in backends() {
        let mut judge = Judge::load(&model_dir("digits-classifier"), &options(backend)).expect("judge");
        let q = judge.judge(&images, &labels).expect("judge");
        assert_eq!(q.samples, 355);
        assert_eq!(q.class_accuracy, expected["class_accuracy"].as_f64(), "{backend:?}");
        let want = expected["frechet_distance"].as_f64().expect("fd");
        assert!(
            (q.frechet_distance - want).abs() < 1e-4 * want,
            "{backend:?}: {} vs scipy's {want}",
            q.frechet_distance
        );
    }
}

/// The reference statistics and the fixture were made from the classifier that is shipped.
#[test]
fn reference_statistics_are_current() {
    use sha2::Digest;
    let sha = format!(
        "{:x}",
        sha2::Sha256::digest(std::fs::read(model_dir("digits-classifier").join("classifier.onnx")).expect("onnx"))
    );
    for path in ["models/digits-classifier/reference.json", "tests/fixtures/quality/expected.json"] {
        assert_eq!(
            json(path)["classifier_sha256"].as_str(),
            Some(sha.as_str()),
            "{path} is stale: run models/train/reference_stats.py"
        );
    }
}
