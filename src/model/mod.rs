//! A loaded model: the manifest checked against the ONNX graph ([`wiring`]), and per session the
//! network evaluator that feeds it and turns its output into `D(x, level) -> x0` ([`network`]).

mod network;
mod wiring;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use crate::backend::{self, BackendOptions, DType, Graph};
use crate::error::{Error, Result};
use crate::manifest::{Manifest, Prediction};
use crate::schedule::NoiseSchedule;
use wiring::{wire, Wiring};

pub use network::{Network, PerSample, Predictor};

/// A loaded, validated, immutable model; share it between sessions with `Arc`.
pub struct Model {
    manifest: Manifest,
    dir: PathBuf,
    schedule: NoiseSchedule,
    graph: Arc<dyn Graph>,
    wiring: Wiring,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model").field("name", &self.manifest.name).field("dir", &self.dir).finish()
    }
}

impl Model {
    /// Loads `dir/model.json` and the graph it names.
    pub fn load(dir: &Path, opts: &BackendOptions) -> Result<Model> {
        let started = Instant::now();
        let (manifest, json) = Manifest::load(dir)?;
        let schedule = manifest.noise_schedule.to_schedule().map_err(|e| in_file(e, &json))?;
        let onnx = dir.join(&manifest.denoiser.onnx);
        if !onnx.is_file() {
            return Err(Error::Manifest(format!(
                "{}: key `denoiser.onnx`: file {} not found",
                json.display(),
                onnx.display()
            )));
        }
        let graph = backend::load_graph(&onnx, opts)?;
        let model = Self::wired(dir, manifest, &json, schedule, graph)?;
        log::info!(
            "loaded model `{}` from {} on {} ({}) in {:.1} ms",
            model.manifest.name,
            dir.display(),
            model.graph.backend_name(),
            model.graph.execution_provider(),
            started.elapsed().as_secs_f64() * 1e3
        );
        Ok(model)
    }

    /// A model from `dir/model.json` over a graph the caller loaded or wrapped (a custom backend,
    /// or one instrumented for measurement); the manifest is checked against it as in [`Model::load`].
    pub fn from_graph(dir: &Path, graph: Arc<dyn Graph>) -> Result<Model> {
        let (manifest, json) = Manifest::load(dir)?;
        let schedule = manifest.noise_schedule.to_schedule().map_err(|e| in_file(e, &json))?;
        Self::wired(dir, manifest, &json, schedule, graph)
    }

    /// A model from a manifest made in code (a Stable Diffusion export's UNet, say) over a loaded
    /// graph; checked as [`Model::load`] checks model.json. Errors name `source`.
    pub fn from_manifest(dir: &Path, manifest: Manifest, source: &Path, graph: Arc<dyn Graph>) -> Result<Model> {
        let schedule = manifest.noise_schedule.to_schedule().map_err(|e| in_file(e, source))?;
        Self::wired(dir, manifest, source, schedule, graph)
    }

    fn wired(
        dir: &Path,
        manifest: Manifest,
        json: &Path,
        schedule: NoiseSchedule,
        graph: Arc<dyn Graph>,
    ) -> Result<Model> {
        let onnx = dir.join(&manifest.denoiser.onnx);
        let wiring = wire(&manifest, graph.as_ref(), &schedule)
            .map_err(|e| e.map_message(|m| format!("{}: {m} (graph {})", json.display(), onnx.display())))?;
        Ok(Model { manifest, dir: dir.to_path_buf(), schedule, graph, wiring })
    }

    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// Whether the network's output is float16 (its values, widened to f32, are exact halves).
    pub fn half_output(&self) -> bool {
        self.graph.outputs()[self.wiring.output].dtype == DType::F16
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
    pub fn noise_schedule(&self) -> &NoiseSchedule {
        &self.schedule
    }
    pub fn graph(&self) -> &dyn Graph {
        self.graph.as_ref()
    }
    pub fn sample_len(&self) -> usize {
        self.manifest.sample_len()
    }
    /// Values of the sample input's extra channels per sample.
    pub fn extra_len(&self) -> usize {
        let c = self.manifest.sample_shape.first().copied().unwrap_or(1).max(1);
        self.manifest.denoiser.sample_extra_channels * (self.sample_len() / c)
    }
    pub fn cond_names(&self) -> impl Iterator<Item = &str> {
        self.manifest.denoiser.cond_inputs.iter().map(|c| c.name.as_str())
    }
    /// Each tensor input's name, per-sample shape and value count (the manifest's order).
    pub fn tensor_inputs(&self) -> impl Iterator<Item = (&str, &[usize], usize)> {
        let specs = self.manifest.denoiser.tensor_inputs.iter();
        specs
            .zip(&self.wiring.tensors)
            .map(|(t, (_, shape))| (t.name.as_str(), shape.as_slice(), shape.iter().product()))
    }
    /// The largest batch one network call may take (a graph exported with a fixed batch).
    pub fn max_network_batch(&self) -> Option<usize> {
        self.wiring.fixed_batch
    }

    /// Whether the network is a float16 epsilon network on a discrete schedule: the models whose
    /// float16 arithmetic diffusers' schedulers define (see `Precision::Float16`).
    pub fn float16_epsilon(&self) -> bool {
        self.half_output()
            && self.manifest.denoiser.prediction == Prediction::Epsilon
            && matches!(self.schedule, NoiseSchedule::Discrete(_))
    }

    /// A per-session evaluator of the network.
    pub fn network(self: &Arc<Self>) -> Result<Network> {
        Network::new(self)
    }
}

fn in_file(e: Error, path: &Path) -> Error {
    match e {
        Error::Manifest(m) => Error::Manifest(format!("{}: {m}", path.display())),
        other => other,
    }
}
