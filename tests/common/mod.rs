//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use diffusion_rt::backend::{ort_lib, BackendKind, BackendOptions};
use diffusion_rt::Model;

pub mod c;
// Builds graphs with tract-onnx's ONNX types (tests/attention.rs, tests/segments.rs).
#[cfg(feature = "tract")]
pub mod unet;

pub fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

pub fn model_dir(name: &str) -> PathBuf {
    repo().join("models").join(name)
}

/// Whether the ONNX Runtime tests run: the library must be found, or the test fails when
/// `DRT_REQUIRE_ORT` is set (CI), or is skipped with a note otherwise.
pub fn ort_available() -> bool {
    let found = match ort_lib::find(None) {
        Ok(_) if ort_lib::available() => Ok(()),
        Ok(_) => Err(format!("the system loader does not find {}; set DRT_ORT_LIB", ort_lib::default_name())),
        Err(e) => Err(e.to_string()),
    };
    match found {
        Ok(()) => true,
        Err(e) if std::env::var_os("DRT_REQUIRE_ORT").is_none() => {
            // Straight to stderr, past the test harness's capture, once per run: a skip must be seen.
            static NOTE: std::sync::Once = std::sync::Once::new();
            NOTE.call_once(|| {
                use std::io::Write;
                let _ = writeln!(std::io::stderr(), "note: skipping the ONNX Runtime tests ({e})");
            });
            false
        }
        Err(e) => panic!("DRT_REQUIRE_ORT is set but ONNX Runtime is unavailable: {e}"),
    }
}

/// The backends compiled in: tract, and ort when its library is available.
pub fn backends() -> Vec<BackendKind> {
    let mut kinds = Vec::new();
    if cfg!(feature = "tract") {
        kinds.push(BackendKind::Tract);
    }
    if cfg!(feature = "ort") && ort_available() {
        kinds.push(BackendKind::Ort);
    }
    kinds
}

pub fn options(backend: BackendKind) -> BackendOptions {
    BackendOptions { backend, threads: Some(1), ..BackendOptions::default() }
}

pub fn load(dir: &Path, backend: BackendKind) -> Arc<Model> {
    Arc::new(
        Model::load(dir, &options(backend)).unwrap_or_else(|e| panic!("loading {} on {backend:?}: {e}", dir.display())),
    )
}

/// Relative L2 distance `|a - b| / |b|`.
pub fn rel_l2(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    let num: f64 = a.iter().zip(b).map(|(x, y)| (*x as f64 - *y as f64).powi(2)).sum();
    let den: f64 = b.iter().map(|y| (*y as f64).powi(2)).sum();
    (num / den.max(1e-30)).sqrt()
}

/// A scratch directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static N: AtomicUsize = AtomicUsize::new(0);
        let p =
            std::env::temp_dir().join(format!("drt-{tag}-{}-{}", std::process::id(), N.fetch_add(1, Ordering::SeqCst)));
        std::fs::create_dir_all(&p).expect("create temp dir");
        TempDir(p)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        std::fs::remove_dir_all(&self.0).ok();
    }
}
