//! `drt`: generate samples from a model directory, benchmark it, or inspect it.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Args, Parser, Subcommand};
use diffusion_rt::backend::{BackendKind, BackendOptions};
use diffusion_rt::bench::BenchOptions;
use diffusion_rt::cache::{CacheMode, CacheOptions};
use diffusion_rt::dump::InputDump;
use diffusion_rt::guidance::GuidanceRules;
use diffusion_rt::request::{model_defaults, ModelDefaults};
use diffusion_rt::schedule::SigmaSpacing;
use diffusion_rt::sd::{SdOptions, StableDiffusion, TextToImage};
use diffusion_rt::{image, npy, Error, GenerateParams, Model, Result, Session};

#[derive(Parser)]
#[command(name = "drt", version, about = "On-device runtime for ONNX diffusion models")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Generate samples and write them as a PNG grid and/or a raw .npy.
    Generate(Box<GenerateArgs>),
    /// Time whole generations (per step, in the backend, overall), peak memory, and optionally
    /// sample quality; print a table and write JSON.
    Bench(Box<BenchArgs>),
    /// Show a model's manifest, graph inputs and outputs, and what the backend makes of them.
    Inspect(InspectArgs),
    /// Run a point-task policy in closed loop with the task's simulator: success rate, the sides
    /// it passes the obstacle on, network passes and the time of each plan (p50, p99).
    PolicyEval(Box<PolicyEvalArgs>),
}

#[derive(Args)]
struct PolicyEvalArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// The task (default: task.json in the model directory).
    #[arg(long)]
    task: Option<PathBuf>,
    #[arg(long, default_value_t = 200)]
    episodes: usize,
    /// Picks the episodes' starts and every plan's noise.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Sampler (default: the model's).
    #[arg(long)]
    sampler: Option<String>,
    /// Steps per plan from noise (default: the model's).
    #[arg(long)]
    steps: Option<u32>,
    #[arg(long)]
    guidance: Option<f32>,
    /// Warm start: plans after an episode's first begin from the previous plan, shifted and
    /// noised, and run this fraction of the schedule.
    #[arg(long, value_name = "FRACTION")]
    warm_start: Option<f32>,
    /// Actions run per plan (default: the task's `execute`).
    #[arg(long)]
    execute: Option<usize>,
    /// Also write the report as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(Args)]
struct ModelArgs {
    /// Model directory (model.json + ONNX files).
    #[arg(long)]
    model: PathBuf,
    /// tract (pure Rust), ort (ONNX Runtime) or auto (ort when its library is found).
    #[arg(long, default_value = "auto")]
    backend: String,
    /// ONNX Runtime shared library (else $DRT_ORT_LIB, $ORT_DYLIB_PATH, .ort/lib of the install script).
    #[arg(long)]
    ort_lib: Option<PathBuf>,
    /// Execution provider for ort: cpu, cuda, tensorrt, coreml, nnapi, xnnpack.
    #[arg(long, default_value = "cpu")]
    ep: String,
    /// Intra-op threads for ort.
    #[arg(long)]
    threads: Option<usize>,
    /// Compute attention in N slices of queries (1 = whole; default 8 on a Stable Diffusion export, else 1)
    #[arg(long, value_name = "N")]
    attention_slices: Option<usize>,
    /// ort: use an external-data graph's weights from the memory-mapped file instead of private copies (slower)
    #[arg(long)]
    mapped_weights: bool,
}

impl ModelArgs {
    fn options(&self) -> Result<BackendOptions> {
        Ok(BackendOptions {
            backend: self.backend.parse::<BackendKind>()?,
            ort_library: self.ort_lib.clone(),
            execution_provider: self.ep.clone(),
            threads: self.threads,
            attention_slices: self.attention_slices,
            mapped_weights: self.mapped_weights,
            segments: None,
        })
    }

    fn load(&self) -> Result<Arc<Model>> {
        Ok(Arc::new(Model::load(&self.model, &self.options()?)?))
    }
}

#[derive(Args)]
struct InspectArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Print JSON (for tools) instead of the summary.
    #[arg(long)]
    json: bool,
    /// Stable Diffusion export: show the plan of a default generation under this budget.
    #[arg(long, value_name = "MB")]
    memory_budget: Option<u64>,
}

#[derive(Args)]
struct GenerateArgs {
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    sampling: SamplingArgs,
    /// Write the final samples as float32 .npy.
    #[arg(long)]
    save_raw: Option<PathBuf>,
    /// Write the samples as a PNG grid.
    #[arg(long)]
    out: Option<PathBuf>,
    /// No progress bar or summary.
    #[arg(long)]
    quiet: bool,
    /// Record every network call's inputs here as .npy (calibration data for quantization).
    #[arg(long)]
    dump_inputs: Option<PathBuf>,
    #[command(flatten)]
    limits: LimitArgs,
    #[command(flatten)]
    text: TextArgs,
}

/// Text to image, for a Stable Diffusion export directory (model_index.json, unet/, ...).
#[derive(Args)]
struct TextArgs {
    #[command(flatten)]
    prompt: PromptArgs,
    /// Write the final latents (before the VAE's scaling) as float32 .npy [batch, C, h, w].
    #[arg(long)]
    save_latents: Option<PathBuf>,
}

/// What to generate from a Stable Diffusion export, and how it uses memory.
#[derive(Args)]
struct PromptArgs {
    /// Prompt: once for all images or once per image.
    #[arg(long = "prompt")]
    prompts: Vec<String>,
    /// Negative prompt (the unconditional branch of guidance): once for all images or once per image.
    #[arg(long = "negative-prompt")]
    negative_prompts: Vec<String>,
    /// Image width in pixels (default: an --init PNG's without --mask, else the UNet's training size).
    #[arg(long)]
    width: Option<usize>,
    /// Image height in pixels.
    #[arg(long)]
    height: Option<usize>,
    /// Inpainting with --init: a PNG, white (at least half grey) where to repaint; resized to the
    /// image size as diffusers resizes it.
    #[arg(long)]
    mask: Option<PathBuf>,
    /// Load text encoder, UNet and VAE decoder one at a time, each freed before the next.
    #[arg(long)]
    low_memory: bool,
    /// Decode the latents in overlapping tiles of N latents per side (bounded decoder memory).
    #[arg(long, value_name = "N")]
    vae_tile: Option<usize>,
    /// Plan every generation to stay under MB megabytes of resident memory (parts loaded in turn,
    /// attention slices, UNet segments, VAE tiles); an error names the smallest budget it could meet.
    #[arg(long, value_name = "MB")]
    memory_budget: Option<u64>,
}

#[derive(Args)]
struct LimitArgs {
    /// Refuse generations whose buffers would need more than this many MiB (default 2048).
    #[arg(long)]
    memory_limit: Option<usize>,
}

impl LimitArgs {
    fn bytes(&self) -> Option<usize> {
        self.memory_limit.map(|mb| mb.saturating_mul(1 << 20))
    }
}

#[derive(Args)]
struct BenchArgs {
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    sampling: SamplingArgs,
    /// Classifier directory (e.g. models/digits-classifier): report class accuracy and Fréchet
    /// distance of the measured samples.
    #[arg(long)]
    classifier: Option<PathBuf>,
    /// Measured generations.
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Generations run before measuring.
    #[arg(long, default_value_t = 1)]
    warmup: usize,
    /// Also write the report as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    #[command(flatten)]
    limits: LimitArgs,
    #[command(flatten)]
    prompt: PromptArgs,
}

/// What a generation is: sampler, schedule, conditioning, noise.
#[derive(Args)]
struct SamplingArgs {
    /// ddim, ddpm, euler, euler-a, heun, dpmpp-2m, dpmpp-2m-sde, lcm, flow-euler (default: the model's).
    #[arg(long)]
    sampler: Option<String>,
    /// Sigma spacing: default, karras or exponential.
    #[arg(long, default_value = "default")]
    schedule: String,
    /// Explicit sigma table, comma-separated, last entry included (replaces --steps and --schedule).
    #[arg(long, value_delimiter = ',')]
    sigmas: Option<Vec<f64>>,
    #[arg(long)]
    steps: Option<u32>,
    /// Classifier-free guidance scale (1 = conditional pass only).
    #[arg(long)]
    guidance: Option<f32>,
    /// Adaptive guidance: stop guiding once the conditional and guided predictions' cosine
    /// similarity reaches GAMMA (e.g. 0.999).
    #[arg(long, value_name = "GAMMA")]
    adaptive_guidance: Option<f32>,
    /// Guide only where the noise level sigma (k-diffusion's, sigma/alpha) is in [LO, HI].
    #[arg(long, value_name = "LO,HI", value_delimiter = ',')]
    guidance_interval: Option<Vec<f64>>,
    /// Output-level step caching: skip (reuse the last prediction) or ab (Adams-Bashforth
    /// extrapolation) on steps where the trajectory is stable.
    #[arg(long, value_name = "skip|ab")]
    step_cache: Option<String>,
    /// Step cache: largest |third difference| / |first difference| of the trajectory to skip at.
    #[arg(long, default_value_t = CacheOptions::DEFAULT_THRESHOLD)]
    cache_threshold: f32,
    /// Step cache: most steps skipped in a row.
    #[arg(long, default_value_t = CacheOptions::DEFAULT_MAX_SKIPS)]
    cache_max_skips: u32,
    /// DDIM eta (0 = deterministic).
    #[arg(long, default_value_t = 0.0)]
    eta: f64,
    /// Class label: once for all samples or once per sample (also comma-separated).
    #[arg(long = "class", value_delimiter = ',')]
    classes: Vec<i64>,
    /// NAME=VALUE conditioning: once for all samples or once per sample.
    #[arg(long = "cond")]
    conds: Vec<String>,
    /// NAME=FILE.npy: a tensor input's value, shaped as the graph's per-sample input (one for all
    /// samples) or [batch, ...] (one per sample).
    #[arg(long = "tensor")]
    tensors: Vec<String>,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Number of samples (default: the number of classes given, else 1).
    #[arg(long)]
    batch: Option<usize>,
    /// img2img: the starting sample(s), float .npy [batch or 1, *sample_shape]; on a Stable
    /// Diffusion export, an RGB PNG (which also gives the image size).
    #[arg(long)]
    init: Option<PathBuf>,
    /// img2img: fraction of the schedule run on the starting sample.
    #[arg(long)]
    strength: Option<f32>,
    /// Initial standard-normal noise, float .npy [batch, *sample_shape].
    #[arg(long)]
    noise: Option<PathBuf>,
}

/// Log lines to stderr at the level `DRT_LOG` names (error, warn, info, debug, trace); none without it.
struct StderrLog;

impl log::Log for StderrLog {
    fn enabled(&self, m: &log::Metadata<'_>) -> bool {
        m.level() <= log::max_level()
    }

    fn log(&self, r: &log::Record<'_>) {
        if self.enabled(r.metadata()) {
            eprintln!("[{} {}] {}", r.level(), r.target(), r.args());
        }
    }

    fn flush(&self) {}
}

fn init_log() {
    static LOG: StderrLog = StderrLog;
    let Some(level) = std::env::var("DRT_LOG").ok().and_then(|l| l.parse::<log::LevelFilter>().ok()) else { return };
    if log::set_logger(&LOG).is_ok() {
        log::set_max_level(level);
    }
}

fn main() -> ExitCode {
    init_log();
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Generate(a) => generate(a),
        Command::Bench(a) => bench(a),
        Command::Inspect(a) => inspect(a),
        Command::PolicyEval(a) => policy_eval(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn parse_conds(items: &[String]) -> Result<Vec<(String, Vec<f32>)>> {
    let mut out: Vec<(String, Vec<f32>)> = Vec::new();
    for item in items {
        let (name, value) = item
            .split_once('=')
            .ok_or_else(|| Error::InvalidArgument(format!("--cond `{item}`: expected NAME=VALUE")))?;
        let v: f32 = value
            .trim()
            .parse()
            .map_err(|_| Error::InvalidArgument(format!("--cond `{item}`: `{value}` is not a number")))?;
        match out.iter_mut().find(|(n, _)| n == name) {
            Some((_, vals)) => vals.push(v),
            None => out.push((name.to_string(), vec![v])),
        }
    }
    Ok(out)
}

impl SamplingArgs {
    /// The generation's parameters for `model`.
    fn params(&self, model: &Model) -> Result<GenerateParams> {
        let mut p = self.params_with(model.sample_len(), true)?;
        p.tensors = self.tensors(model, p.batch)?;
        Ok(p)
    }

    /// The `--tensor` files, each checked against its input's per-sample shape.
    fn tensors(&self, model: &Model, batch: usize) -> Result<Vec<(String, Vec<f32>)>> {
        let mut out = Vec::new();
        for item in &self.tensors {
            let (name, file) = item
                .split_once('=')
                .ok_or_else(|| Error::InvalidArgument(format!("--tensor `{item}`: expected NAME=FILE.npy")))?;
            let known: Vec<&str> = model.tensor_inputs().map(|(n, _, _)| n).collect();
            let Some((_, shape, _)) = model.tensor_inputs().find(|(n, _, _)| *n == name) else {
                let known = if known.is_empty() { "none".to_string() } else { known.join(", ") };
                let m = &model.manifest().name;
                return Err(Error::InvalidArgument(format!(
                    "--tensor `{item}`: model `{m}` has no tensor input `{name}` (it has: {known})"
                )));
            };
            let arr = read_npy(&format!("--tensor {name}:"), std::path::Path::new(file))?;
            let fits = arr.shape == shape || (arr.shape.len() == shape.len() + 1 && arr.shape[1..] == *shape);
            if !fits || (arr.shape.len() > shape.len() && ![1, batch].contains(&arr.shape[0])) {
                return Err(Error::InvalidArgument(format!(
                    "--tensor {name}: {file} has shape {:?}; the input takes {shape:?}, [1, ...] or [batch {batch}, ...]",
                    arr.shape
                )));
            }
            out.push((name.to_string(), arr.data));
        }
        Ok(out)
    }

    /// As `params`; without `read_init`, `--init` is left to the caller (a Stable Diffusion
    /// export's init is an image, not latents).
    fn params_with(&self, sample_len: usize, read_init: bool) -> Result<GenerateParams> {
        let noise = self.noise.as_deref().map(|p| read_npy("--noise", p)).transpose()?;
        let batch = match (self.batch, &noise) {
            (Some(b), _) => b,
            (None, Some(n)) => n.data.len() / sample_len.max(1),
            (None, None) => self.classes.len().max(1),
        };
        let init = match read_init {
            true => self.init.as_deref().map(|p| read_npy("--init", p)).transpose()?.map(|arr| arr.data),
            false => None,
        };
        Ok(GenerateParams {
            sampler: self.sampler.clone(),
            spacing: SigmaSpacing::from_name(&self.schedule)?,
            sigmas: self.sigmas.clone(),
            steps: self.steps,
            guidance: self.guidance,
            guidance_rules: GuidanceRules {
                adaptive: self.adaptive_guidance,
                interval: match self.guidance_interval.as_deref() {
                    None => None,
                    Some(&[lo, hi]) => Some((lo, hi)),
                    Some(v) => {
                        return Err(Error::InvalidArgument(format!(
                            "--guidance-interval takes LO,HI; got {} values",
                            v.len()
                        )))
                    }
                },
            },
            step_cache: self
                .step_cache
                .as_deref()
                .map(|m| -> Result<CacheOptions> {
                    Ok(CacheOptions {
                        mode: CacheMode::from_name(m)?,
                        threshold: self.cache_threshold,
                        max_skips: self.cache_max_skips,
                    })
                })
                .transpose()?,
            eta: self.eta,
            batch,
            seed: self.seed,
            classes: self.classes.clone(),
            conds: parse_conds(&self.conds)?,
            noise: noise.map(|n| n.data),
            step_noise: None,
            init,
            strength: self.strength,
            ..GenerateParams::default()
        })
    }
}

/// Refuses an output `path` whose directory does not exist, or (with `ext`) that is named for
/// another format than the one written there.
fn check_output(flag: &str, path: Option<&std::path::Path>, ext: Option<&str>) -> Result<()> {
    let Some(path) = path else { return Ok(()) };
    if let Some(ext) = ext {
        if !path.extension().is_some_and(|e| e.eq_ignore_ascii_case(ext)) {
            return Err(Error::InvalidArgument(format!(
                "{flag} {}: drt writes {} files; give a name ending in .{ext}",
                path.display(),
                ext.to_uppercase()
            )));
        }
    }
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(std::path::Path::new("."));
    if !dir.is_dir() {
        return Err(Error::io(path, format!("{flag}: directory {} does not exist", dir.display())));
    }
    Ok(())
}

/// Reads the `.npy` given to `flag`, saying which flag a bad file came from.
fn read_npy(flag: &str, path: &std::path::Path) -> Result<npy::Array> {
    npy::read(path).map_err(|e| match e {
        Error::InvalidArgument(msg) => Error::InvalidArgument(format!("{flag} {msg}")),
        other => other,
    })
}

fn generate(a: &GenerateArgs) -> Result<()> {
    if a.out.is_none() && a.save_raw.is_none() && a.text.save_latents.is_none() {
        return Err(Error::InvalidArgument("nothing to write: give --out FILE.png and/or --save-raw FILE.npy".into()));
    }
    // Before any work: a path that cannot be written would otherwise fail only after the generation.
    check_output("--out", a.out.as_deref(), Some("png"))?;
    check_output("--save-raw", a.save_raw.as_deref(), None)?;
    check_output("--save-latents", a.text.save_latents.as_deref(), None)?;
    if StableDiffusion::is_export(&a.model.model) {
        return text_to_image(a);
    }
    a.text.prompt.refuse_unless_export(&a.model.model, a.text.save_latents.is_some())?;
    let model = a.model.load()?;
    let m = model.manifest();
    let params = a.sampling.params(&model)?;
    let batch = params.batch;
    let mut session = Session::new(&model)?;
    if let Some(limit) = a.limits.bytes() {
        session.set_memory_limit(limit);
    }
    if let Some(dir) = &a.dump_inputs {
        session.set_dump(Some(InputDump::new(dir)?));
    }
    let bar = progress_bar(a.quiet);
    let start = std::time::Instant::now();
    let gen = session.generate(&params, &mut |done, total| bar.show(done, total))?;
    bar.finish();
    let mut shape = vec![batch];
    shape.extend_from_slice(&m.sample_shape);
    if let Some(p) = &a.save_raw {
        npy::write(p, &shape, &gen.samples)?;
    }
    if let Some(p) = &a.out {
        let cols = (batch as f64).sqrt().ceil() as usize;
        let cols = if batch <= 10 { batch } else { cols };
        let pic = image::grid(&gen.samples, batch, &m.sample_shape, m.output.value_range, cols)?;
        image::write_png(p, &pic)?;
    }
    if !a.quiet {
        eprintln!(
            "{} × {} with {} ({} steps, {} network passes per sample) on {} [{}] in {:.2} s",
            batch,
            m.name,
            gen.sampler.name(),
            gen.steps,
            gen.nfe,
            model.graph().backend_name(),
            model.graph().execution_provider(),
            start.elapsed().as_secs_f64()
        );
    }
    Ok(())
}

/// `generate` on a Stable Diffusion export: PNG per image, raw NHWC pixels in [0, 1], latents.
fn text_to_image(a: &GenerateArgs) -> Result<()> {
    if a.dump_inputs.is_some() {
        return Err(Error::InvalidArgument("--dump-inputs is for model.json directories".into()));
    }
    let start = std::time::Instant::now();
    let t = &a.text;
    let sd = StableDiffusion::load(&a.model.model, &a.model.options()?, t.prompt.sd_options())?;
    let bar = progress_bar(a.quiet);
    let images = sd.generate_with(&t.prompt.request(&sd, &a.sampling)?, &mut |done, total| bar.show(done, total))?;
    bar.finish();
    let (n, ih, iw) = (images.batch, images.height, images.width);
    if let Some(p) = &a.save_raw {
        npy::write(p, &[n, ih, iw, 3], &images.pixels)?;
    }
    if let Some(p) = &t.save_latents {
        let [lc, lh, lw] = images.latent_shape;
        npy::write(p, &[n, lc, lh, lw], &images.latents)?;
    }
    if let Some(p) = &a.out {
        for (i, px) in images.rgb8().chunks(ih * iw * 3).enumerate() {
            let pic = image::Picture { width: iw, height: ih, channels: 3, pixels: px.to_vec() };
            let path = if n == 1 { p.clone() } else { numbered(p, i) };
            image::write_png(&path, &pic)?;
        }
    }
    if !a.quiet {
        eprintln!(
            "{n} image(s) of {iw}×{ih} with {} ({} steps, guidance {}, {} UNet passes per image) in {:.2} s",
            images.sampler,
            images.steps,
            images.guidance,
            images.nfe,
            start.elapsed().as_secs_f64()
        );
    }
    Ok(())
}

/// `values` in [0, 1] of an 8-bit `iw × ih` image with `channels`, resized to `w × h` as diffusers'
/// image processor resizes (Pillow's Lanczos filter), or as they are at that size already.
fn resized(values: Vec<f32>, iw: usize, ih: usize, channels: usize, w: usize, h: usize) -> Result<Vec<f32>> {
    if (iw, ih) == (w, h) {
        return Ok(values);
    }
    let bytes: Vec<u8> = values.iter().map(|&v| (v * 255.0).round() as u8).collect();
    let out = diffusion_rt::sd::resize::lanczos_resize(&bytes, iw, ih, channels, w, h)?;
    Ok(out.into_iter().map(|b| b as f32 / 255.0).collect())
}

impl PromptArgs {
    /// The text-to-image request these options and the sampling options ask of `sd`.
    fn request(&self, sd: &StableDiffusion, sampling: &SamplingArgs) -> Result<TextToImage> {
        let is_png = |p: &std::path::Path| p.extension().is_some_and(|e| e.eq_ignore_ascii_case("png"));
        let init_png = match sampling.init.as_deref() {
            Some(p) if is_png(p) => Some(image::read_png(p)?),
            _ => None,
        };
        let mask_png = self.mask.as_deref().map(image::read_png).transpose()?;
        let f = sd.vae_factor();
        // diffusers' sizes: inpainting makes the UNet's size unless told; img2img the start image's,
        // rounded down to the VAE's factor. Images of another size are resized as diffusers does.
        let (width, height) = match (&init_png, &mask_png, self.width, self.height) {
            (Some((iw, ih, _)), None, None, None) => (Some(iw - iw % f), Some(ih - ih % f)),
            _ => (self.width, self.height),
        };
        let [c, h, w] = sd.latent_shape(width, height)?;
        if !sampling.tensors.is_empty() {
            return Err(Error::InvalidArgument(
                "--tensor is for models whose model.json has denoiser.tensor_inputs, not Stable Diffusion exports"
                    .into(),
            ));
        }
        let mut params = sampling.params_with(c * h * w, false)?;
        let (w, h) = (w * f, h * f);
        let init_image = match (sampling.init.as_deref(), init_png) {
            (None, _) => None,
            (Some(_), Some((iw, ih, rgb))) => Some(resized(rgb, iw, ih, 3, w, h)?),
            (Some(p), None) => Some(read_npy("--init", p)?.data),
        };
        let mask_image = match mask_png {
            Some((iw, ih, rgb)) => {
                // PIL's "L" conversion, which diffusers' mask processor applies before resizing.
                let byte = |v: f32| (v * 255.0).round() as u32;
                let grey = rgb
                    .chunks(3)
                    .map(|c| {
                        ((byte(c[0]) * 19595 + byte(c[1]) * 38470 + byte(c[2]) * 7471 + 0x8000) >> 16) as f32 / 255.0
                    })
                    .collect();
                Some(resized(grey, iw, ih, 1, w, h)?)
            }
            None => None,
        };
        if sampling.batch.is_none() && sampling.noise.is_none() {
            params.batch = self.prompts.len().max(self.negative_prompts.len()).max(1);
        }
        Ok(TextToImage {
            prompts: self.prompts.clone(),
            negative_prompts: self.negative_prompts.clone(),
            width,
            height,
            vae_tile: self.vae_tile,
            init_image,
            encoder_noise: None,
            mask_image,
            params,
        })
    }

    fn sd_options(&self) -> SdOptions {
        SdOptions { low_memory: self.low_memory, memory_budget_mb: self.memory_budget }
    }

    /// Refuses these options (and `--save-latents`, when `save_latents`) on a model.json directory.
    fn refuse_unless_export(&self, dir: &std::path::Path, save_latents: bool) -> Result<()> {
        let given = !self.prompts.is_empty()
            || !self.negative_prompts.is_empty()
            || self.width.is_some()
            || self.height.is_some()
            || self.low_memory
            || self.vae_tile.is_some()
            || self.memory_budget.is_some()
            || self.mask.is_some()
            || save_latents;
        if !given {
            return Ok(());
        }
        Err(Error::InvalidArgument(format!(
            "--prompt, --negative-prompt, --width, --height, --mask, --save-latents, --low-memory, --vae-tile and \
             --memory-budget are for Stable Diffusion exports; {} is a model.json directory",
            dir.display()
        )))
    }
}

/// A step counter on a terminal's stderr; nothing otherwise.
struct Bar(Option<indicatif::ProgressBar>);

fn progress_bar(quiet: bool) -> Bar {
    Bar((!quiet && std::io::stderr().is_terminal()).then(|| {
        let b = indicatif::ProgressBar::new(0);
        b.set_style(
            indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} steps  {elapsed_precise} ETA {eta}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        b
    }))
}

impl Bar {
    /// Shows `done` of `total` steps; always lets the generation go on.
    fn show(&self, done: usize, total: usize) -> bool {
        if let Some(b) = &self.0 {
            b.set_length(total as u64);
            b.set_position(done as u64);
        }
        true
    }

    fn finish(&self) {
        if let Some(b) = &self.0 {
            b.finish_and_clear();
        }
    }
}

/// `dir/name.png` → `dir/name-i.png`.
fn numbered(path: &std::path::Path, i: usize) -> PathBuf {
    let stem = path.file_stem().map_or("image".into(), |s| s.to_string_lossy().into_owned());
    let ext = path.extension().map_or("png".into(), |e| e.to_string_lossy().into_owned());
    path.with_file_name(format!("{stem}-{i}.{ext}"))
}

fn bench(a: &BenchArgs) -> Result<()> {
    check_output("--json", a.json.as_deref(), None)?;
    if StableDiffusion::is_export(&a.model.model) {
        if a.classifier.is_some() {
            return Err(Error::InvalidArgument(
                "--classifier judges model.json directories, not Stable Diffusion exports".into(),
            ));
        }
        let opts = a.prompt.sd_options();
        let make = |sd: &StableDiffusion| a.prompt.request(sd, &a.sampling);
        let report = diffusion_rt::sd::bench::run(&a.model.model, &a.model.options()?, opts, make, a.runs, a.warmup)?;
        return print_report(&report.table(), report.to_json(), a.json.as_deref());
    }
    a.prompt.refuse_unless_export(&a.model.model, false)?;
    let opts = BenchOptions {
        runs: a.runs,
        warmup: a.warmup,
        classifier: a.classifier.clone(),
        memory_limit: a.limits.bytes(),
    };
    let params = |m: &Model| a.sampling.params(m);
    let report = diffusion_rt::bench::run_with(&a.model.model, &a.model.options()?, params, &opts)?;
    print_report(&report.table(), report.to_json(), a.json.as_deref())
}

fn policy_eval(a: &PolicyEvalArgs) -> Result<()> {
    use diffusion_rt::policy::{evaluate, EvalOptions, PointTask};
    check_output("--json", a.json.as_deref(), None)?;
    let task = PointTask::load(&a.task.clone().unwrap_or_else(|| a.model.model.join("task.json")))?;
    let model = a.model.load()?;
    let mut session = Session::new(&model)?;
    let opts = EvalOptions {
        episodes: a.episodes,
        seed: a.seed,
        params: GenerateParams {
            sampler: a.sampler.clone(),
            steps: a.steps,
            guidance: a.guidance,
            ..GenerateParams::default()
        },
        warm_start: a.warm_start,
        execute: a.execute,
    };
    let report = evaluate(&mut session, &task, &opts)?;
    print_report(&report.table(), report.to_json(), a.json.as_deref())
}

/// Prints a benchmark's table and writes its JSON to `json`, if given.
fn print_report(table: &str, report: String, json: Option<&std::path::Path>) -> Result<()> {
    print!("{table}");
    match json {
        Some(path) => std::fs::write(path, report + "\n").map_err(|e| Error::io(path, e)),
        None => Ok(()),
    }
}

fn inspect(a: &InspectArgs) -> Result<()> {
    let (text, json) = if StableDiffusion::is_export(&a.model.model) {
        let opts = SdOptions { memory_budget_mb: a.memory_budget, ..SdOptions::default() };
        let sd = StableDiffusion::load(&a.model.model, &a.model.options()?, opts)?;
        (sd.describe()?, describe_sd_json(&sd)?)
    } else {
        if a.memory_budget.is_some() {
            return Err(Error::InvalidArgument("--memory-budget is planned for Stable Diffusion exports".into()));
        }
        let model = a.model.load()?;
        let defaults = model_defaults(&model)?;
        (describe(&model, &defaults), describe_json(&model, &defaults))
    };
    if a.json {
        println!("{}", serde_json::to_string_pretty(&json).map_err(|e| Error::Internal(e.to_string()))?);
    } else {
        print!("{text}");
    }
    Ok(())
}

/// A manifest value's name as model.json spells it (`epsilon`, `c_noise`, ...).
fn spelled<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_value(v).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default()
}

/// `drt inspect` for a model.json directory: what the manifest says, what a request without
/// sampling options runs, and the graph as the backend loaded it.
fn describe(model: &Model, defaults: &ModelDefaults) -> String {
    use std::fmt::Write as _;
    let m = model.manifest();
    let d = &m.denoiser;
    let mut out = String::new();
    let mut line = |key: &str, value: String| {
        let _ = writeln!(out, "{key:<11} {value}");
    };
    line("model", format!("{} ({})", m.name, model.dir().display()));
    let shape: Vec<String> = m.sample_shape.iter().map(|s| s.to_string()).collect();
    line("sample", format!("{} ({} values)", shape.join(" × "), model.sample_len()));
    line("prediction", spelled(&d.prediction));
    match &d.time_input {
        Some(t) => line("time input", format!("`{}`, {} × {}", t.name, spelled(&t.kind), t.scale)),
        None => line("time input", "none".into()),
    }
    match &d.class_input {
        Some(c) => line(
            "classes",
            format!(
                "{} via `{}`, {}",
                c.num_classes,
                c.name,
                c.null_class.map_or("no null class (no guidance)".into(), |n| format!("null class {n}"))
            ),
        ),
        None => line("classes", "none".into()),
    }
    for c in &d.cond_inputs {
        line("condition", format!("`{}`, default {}", c.name, c.default));
    }
    if let Some(c) = &d.context_input {
        line("context", format!("`{}`", c.name));
    }
    for ((name, shape, _), t) in model.tensor_inputs().zip(&d.tensor_inputs) {
        let null = t.null.map_or("no null (no guidance)".into(), |v| format!("null {v}"));
        line("tensor", format!("`{name}` {shape:?} per sample, {null}"));
    }
    line("schedule", model.noise_schedule().to_string());
    line("defaults", defaults.to_string());
    let g = model.graph();
    line("backend", format!("{} [{}]", g.backend_name(), g.execution_provider()));
    for i in g.inputs() {
        line("  input", i.to_string());
    }
    for o in g.outputs() {
        line("  output", o.to_string());
    }
    out
}

fn io_json(infos: &[diffusion_rt::backend::IoInfo]) -> serde_json::Value {
    infos.iter().map(|i| serde_json::json!({"name": i.name, "dtype": i.dtype.name(), "shape": i.shape})).collect()
}

/// `drt inspect --json` for a model.json directory: the manifest as parsed, the defaults a request
/// gets, and the graph's inputs and outputs (`null` for a symbolic dimension).
fn describe_json(model: &Model, d: &ModelDefaults) -> serde_json::Value {
    let g = model.graph();
    serde_json::json!({
        "kind": "model.json",
        "dir": model.dir(),
        "sample_len": model.sample_len(),
        "manifest": model.manifest(),
        "schedule": model.noise_schedule().to_string(),
        "defaults": {"sampler": d.sampler.name(), "steps": d.steps, "guidance": d.guidance,
                     "guidance_interval": d.guidance_interval, "sigmas": d.sigmas},
        "backend": g.backend_name(),
        "execution_provider": g.execution_provider(),
        "inputs": io_json(g.inputs()),
        "outputs": io_json(g.outputs()),
    })
}

/// `drt inspect --json` for a Stable Diffusion export: its settings and each part's graph.
fn describe_sd_json(sd: &StableDiffusion) -> Result<serde_json::Value> {
    let d = sd.description()?;
    let parts: serde_json::Map<String, serde_json::Value> = d
        .parts
        .iter()
        .map(|p| {
            let v = serde_json::json!({"backend": p.backend, "execution_provider": p.execution_provider,
                                       "inputs": io_json(&p.inputs), "outputs": io_json(&p.outputs)});
            (p.name.to_string(), v)
        })
        .collect();
    Ok(serde_json::json!({
        "kind": "stable-diffusion",
        "dir": d.dir,
        "sampler": d.sampler,
        "sigma_spacing": d.spacing.name(),
        "prediction": d.prediction,
        "noise_schedule": d.noise_schedule,
        "latent_channels": d.channels,
        "extra_channels": d.extra_channels,
        "default_size": [d.default_size, d.default_size],
        "vae_factor": d.vae_factor,
        "vae_scaling_factor": d.vae_scaling_factor,
        "tokens": d.tokens,
        "defaults": {"steps": d.default_steps, "guidance": d.default_guidance},
        "parts": parts,
        "plan": d.plan,
    }))
}
