//! `drt bench` on a Stable Diffusion export: whole text-to-image generations (text encoding,
//! sampling, VAE decoding) after warm-up, with the process's peak memory, so low-memory mode and
//! tiled decoding can be compared run against run.

use std::path::Path;
use std::time::Instant;

use serde::Serialize;

use super::budget::Plan;
use super::pipeline::{SdOptions, StableDiffusion, TextToImage};
use crate::backend::BackendOptions;
use crate::bench::{quantile, MAX_RUNS};
use crate::error::{Error, Result};
use crate::sysinfo::{self, Device};

#[derive(Clone, Debug, Serialize)]
pub struct SdBenchReport {
    pub device: Device,
    pub version: &'static str,
    pub model: String,
    pub batch: usize,
    pub width: usize,
    pub height: usize,
    pub sampler: &'static str,
    pub steps: usize,
    pub guidance: f32,
    /// UNet passes per image.
    pub nfe: usize,
    pub low_memory: bool,
    /// Latents per tile side of the VAE decoding, when tiled.
    pub vae_tile: Option<usize>,
    pub runs: usize,
    pub warmup: usize,
    /// Reading the export and loading its graphs (in low-memory mode, only checking them).
    pub load_ms: f64,
    pub total_ms_p50: f64,
    pub total_ms_p90: f64,
    /// Attention slices of the graphs (1 = whole).
    pub attention_slices: usize,
    /// ONNX Runtime read the weights from the mapped files.
    pub mapped_weights: bool,
    /// Peak resident memory of the process over loading and all generations.
    pub peak_rss_mb: Option<f64>,
    /// Peak anonymous (private) resident memory over the same, sampled every 2 ms: what counts
    /// against a phone app's limit (file-backed weight pages do not).
    pub peak_anon_mb: Option<f64>,
    /// The plan of the generations under `--memory-budget`.
    pub plan: Option<Plan>,
}

/// Loads the export in `dir` and times `runs` generations of the request `make_req` makes for it.
pub fn run(
    dir: &Path,
    backend: &BackendOptions,
    opts: SdOptions,
    make_req: impl FnOnce(&StableDiffusion) -> Result<TextToImage>,
    runs: usize,
    warmup: usize,
) -> Result<SdBenchReport> {
    if runs == 0 || runs.saturating_add(warmup) > MAX_RUNS {
        return Err(Error::InvalidArgument(format!(
            "runs must be at least 1 and runs + warmup at most {MAX_RUNS}, got {runs} + {warmup}"
        )));
    }
    let anon = sysinfo::AnonPeak::start();
    let started = Instant::now();
    let sd = StableDiffusion::load(dir, backend, opts)?;
    let load_ms = started.elapsed().as_secs_f64() * 1e3;
    let req = &make_req(&sd)?;
    let plan = sd.plan(req)?;
    let mut totals = Vec::with_capacity(runs);
    let mut last = None;
    for k in 0..warmup + runs {
        let t0 = Instant::now();
        let images = sd.generate(req)?;
        if k >= warmup {
            totals.push(t0.elapsed().as_secs_f64() * 1e3);
        }
        last = Some(images);
    }
    let mb = |b: u64| b as f64 / (1024.0 * 1024.0);
    let peak_rss_mb = sysinfo::peak_rss_bytes().map(mb);
    let peak_anon_mb = anon.and_then(sysinfo::AnonPeak::finish).map(mb);
    let images = last.ok_or_else(|| Error::Internal("no generation ran".into()))?;
    Ok(SdBenchReport {
        device: Device::this(),
        version: env!("CARGO_PKG_VERSION"),
        model: dir.file_name().map_or_else(|| dir.display().to_string(), |n| n.to_string_lossy().into_owned()),
        batch: images.batch,
        width: images.width,
        height: images.height,
        sampler: images.sampler,
        steps: images.steps,
        guidance: images.guidance,
        nfe: images.nfe,
        low_memory: opts.low_memory || plan.as_ref().is_some_and(|p| !p.resident),
        vae_tile: plan.as_ref().map_or(req.vae_tile, |p| p.vae_tile),
        runs,
        warmup,
        load_ms,
        total_ms_p50: quantile(&totals, 0.5),
        total_ms_p90: quantile(&totals, 0.9),
        attention_slices: plan.as_ref().map_or(sd.options().attention_slices.unwrap_or(1), |p| p.attention_slices),
        mapped_weights: plan.is_some() || sd.options().mapped_weights,
        peak_rss_mb,
        peak_anon_mb,
        plan,
    })
}

impl SdBenchReport {
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
    }

    pub fn table(&self) -> String {
        let rows = [
            ("device", format!("{} ({} cores, {})", self.device.cpu, self.device.cores, self.device.os)),
            ("model", self.model.clone()),
            ("images", format!("{} of {}×{}", self.batch, self.width, self.height)),
            (
                "sampling",
                format!(
                    "{} × {} steps, guidance {}, {} UNet passes per image",
                    self.sampler, self.steps, self.guidance, self.nfe
                ),
            ),
            (
                "memory",
                format!(
                    "low-memory {}, VAE tile {}, attention in {} slice{}, weights {}",
                    if self.low_memory { "on" } else { "off" },
                    self.vae_tile.map_or("off".to_string(), |t| format!("{t} latents")),
                    self.attention_slices,
                    if self.attention_slices == 1 { "" } else { "s" },
                    if self.mapped_weights { "mapped" } else { "copied" }
                ),
            ),
            ("runs", format!("{} measured after {} warm-up", self.runs, self.warmup)),
            ("load", format!("{:.1} ms", self.load_ms)),
            ("generation p50 / p90", format!("{:.1} / {:.1} ms", self.total_ms_p50, self.total_ms_p90)),
            ("peak RSS", self.peak_rss_mb.map_or("-".to_string(), |m| format!("{m:.1} MB"))),
            ("peak anonymous RSS", self.peak_anon_mb.map_or("-".to_string(), |m| format!("{m:.1} MB"))),
        ];
        let mut table: String = rows.iter().map(|(k, v)| format!("{k:<21} {v}\n")).collect();
        if let Some(plan) = &self.plan {
            table += &format!("{:<21} {plan}\n", "plan");
        }
        table
    }
}
