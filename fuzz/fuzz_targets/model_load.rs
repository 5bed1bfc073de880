//! Loading a model whose ONNX bytes are mutated (seed the corpus with real graphs): an error, never
//! a crash, and a model that loads must survive a short generation.
#![no_main]
use std::sync::{Arc, OnceLock};

use diffusion_rt::backend::{BackendKind, BackendOptions};
use diffusion_rt::{GenerateParams, Model, Session};
use libfuzzer_sys::fuzz_target;

const MANIFEST: &str = r#"{
  "schema": "diffusion-rt.model/1", "name": "fuzz", "sample_shape": [1, 4, 4],
  "denoiser": {"onnx": "denoiser.onnx", "sample_input": "sample",
               "time_input": {"name": "timestep", "kind": "index"}, "output": "eps", "prediction": "epsilon"},
  "noise_schedule": {"type": "discrete", "num_train_timesteps": 1000, "beta_schedule": "linear",
                     "beta_start": 0.0001, "beta_end": 0.02},
  "defaults": {"sampler": "ddim", "steps": 2}
}"#;

fn dir() -> &'static std::path::Path {
    static DIR: OnceLock<std::path::PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let d = std::env::temp_dir().join(format!("drt-fuzz-model-{}", std::process::id()));
        std::fs::create_dir_all(&d).expect("temp dir");
        std::fs::write(d.join("model.json"), MANIFEST).expect("manifest");
        d
    })
}

fuzz_target!(|data: &[u8]| {
    let d = dir();
    std::fs::write(d.join("denoiser.onnx"), data).expect("write graph");
    let opts = BackendOptions { backend: BackendKind::Tract, ..BackendOptions::default() };
    if let Ok(model) = Model::load(d, &opts) {
        let model = Arc::new(model);
        if let Ok(mut session) = Session::new(&model) {
            let _ = session.generate(&GenerateParams { batch: 1, ..GenerateParams::default() }, &mut |_, _| true);
        }
    }
});
