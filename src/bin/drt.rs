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
use diffusion_rt::manifest::OutputKind;
use diffusion_rt::schedule::SigmaSpacing;
use diffusion_rt::sd::image_input::Pixels;
use diffusion_rt::sd::{SdOptions, StableDiffusion, TextToImage};
use diffusion_rt::{image, inspect, npy, Error, GenerateParams, Model, Result, Session};

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
    /// Episodes run, each from its own start.
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
    /// Classifier-free guidance scale (default: the model's; 1 = conditional pass only).
    #[arg(long, allow_negative_numbers = true)]
    guidance: Option<f32>,
    /// Warm start: plans after an episode's first begin from the previous plan, shifted and
    /// noised, and run this fraction of the schedule.
    #[arg(long, value_name = "FRACTION", allow_negative_numbers = true)]
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
    /// Model directory: model.json + ONNX files, or a Stable Diffusion export as optimum writes it
    /// (model_index.json, unet/, ...). Its model.json or model_index.json names it too.
    #[arg(long)]
    model: PathBuf,
    /// tract (pure Rust), ort (ONNX Runtime) or auto (ort when its library is found).
    #[arg(long, default_value = "auto")]
    backend: String,
    /// ONNX Runtime shared library, or a folder holding it (else $DRT_ORT_LIB, then
    /// $ORT_DYLIB_PATH, then the system loader's search for libonnxruntime).
    #[arg(long)]
    ort_lib: Option<PathBuf>,
    /// Execution provider for ort: cpu, cuda, tensorrt, coreml, nnapi, xnnpack. All but cpu need
    /// diffusion-rt built with the cargo feature of that name (e.g. --features cuda).
    #[arg(long, default_value = "cpu")]
    ep: String,
    /// Intra-op threads for ort (default: the physical cores, at most 8). tract runs one thread.
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
            execution_provider: self.ep.parse()?,
            threads: self.threads,
            attention_slices: self.attention_slices,
            mapped_weights: self.mapped_weights,
            segments: None,
        })
    }

    fn load(&self) -> Result<Arc<Model>> {
        let model = Model::load(&self.dir(), &self.options()?)?;
        self.warn_threads(model.graph().backend());
        Ok(Arc::new(model))
    }

    /// The model directory: `--model`, or the folder of the model.json or model_index.json it names.
    fn dir(&self) -> PathBuf {
        let is_manifest = |n: &std::ffi::OsStr| n == "model.json" || n == "model_index.json";
        match self.model.file_name() {
            Some(n) if is_manifest(n) && self.model.is_file() => {
                self.model.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(std::path::Path::new(".")).into()
            }
            _ => self.model.clone(),
        }
    }

    /// A thread count tract would ignore is said so, not ignored silently.
    fn warn_threads(&self, backend: BackendKind) {
        if self.threads.is_some() && backend == BackendKind::Tract {
            eprintln!("warning: --threads is ignored on tract, which runs one thread");
        }
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
    #[arg(long, value_name = "MIB")]
    memory_limit: Option<usize>,
}

impl LimitArgs {
    fn bytes(&self) -> Result<Option<usize>> {
        match self.memory_limit {
            Some(0) => Err(Error::InvalidArgument("--memory-limit must be at least 1 MiB".into())),
            mb => Ok(mb.map(|mb| mb.saturating_mul(1 << 20))),
        }
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
    #[arg(long, value_delimiter = ',', allow_negative_numbers = true)]
    sigmas: Option<Vec<f64>>,
    /// Sampler steps (default: the model's).
    #[arg(long)]
    steps: Option<u32>,
    /// Classifier-free guidance scale (default: the model's; 1 or less = conditional pass only).
    #[arg(long, allow_negative_numbers = true)]
    guidance: Option<f32>,
    /// Adaptive guidance: stop guiding once the conditional and guided predictions' cosine
    /// similarity reaches GAMMA (e.g. 0.999).
    #[arg(long, value_name = "GAMMA", allow_negative_numbers = true)]
    adaptive_guidance: Option<f32>,
    /// Guide only where the noise level sigma (k-diffusion's, sigma/alpha) is in [LO, HI].
    #[arg(long, value_name = "LO,HI", value_delimiter = ',', allow_negative_numbers = true)]
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
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    eta: f64,
    /// Class label: once for all samples or once per sample (also comma-separated). The model's
    /// null class (`drt inspect` shows it; 10 on digits) is the unconditional one.
    #[arg(long = "class", value_delimiter = ',', allow_negative_numbers = true)]
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
    /// Diffusion export, a PNG of any size (which also gives the image size), or a float .npy of
    /// [height, width, 3] values in [0, 1] at the image size (as --save-raw writes one).
    #[arg(long)]
    init: Option<PathBuf>,
    /// img2img: fraction of the schedule run on the starting sample.
    #[arg(long, allow_negative_numbers = true)]
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
        let mut p = self.params_with(true)?;
        p.tensors = self.tensors(model, p.batch_size(model.sample_len())?)?;
        Ok(p)
    }

    /// The `--tensor` files, each checked against its input's per-sample shape.
    fn tensors(&self, model: &Model, batch: usize) -> Result<Vec<(String, Vec<f32>)>> {
        let mut out = Vec::new();
        for item in &self.tensors {
            let (name, file) = item
                .split_once('=')
                .ok_or_else(|| Error::InvalidArgument(format!("--tensor `{item}`: expected NAME=FILE.npy")))?;
            let arr = read_npy(&format!("--tensor {name}:"), std::path::Path::new(file))?;
            diffusion_rt::request::check_tensor_shape(model, name, &arr.shape, batch)
                .map_err(|e| Error::InvalidArgument(format!("--tensor {name}: {file}: {}", e.message())))?;
            out.push((name.to_string(), arr.data));
        }
        Ok(out)
    }

    /// As `params`; without `read_init`, `--init` is left to the caller (a Stable Diffusion
    /// export's init is an image, not latents).
    fn params_with(&self, read_init: bool) -> Result<GenerateParams> {
        let noise = self.noise.as_deref().map(|p| read_npy("--noise", p)).transpose()?;
        // Without --batch, the library's batch rule (the classes, the noise, the prompts).
        let batch = self.batch.map(diffusion_rt::limits::batch).transpose()?.unwrap_or(0);
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
/// another format than the one written there. A PNG must be named so; an `.npy` may also go to a
/// name without an extension (`/dev/null`).
fn check_output(flag: &str, path: Option<&std::path::Path>, ext: Option<&str>) -> Result<()> {
    let Some(path) = path else { return Ok(()) };
    if let Some(ext) = ext {
        let named = match path.extension() {
            Some(e) => e.eq_ignore_ascii_case(ext),
            None => ext == "npy",
        };
        if !named {
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

impl GenerateArgs {
    /// Refuses output paths that cannot be written, or are named for another format, or twice.
    fn check_outputs(&self) -> Result<()> {
        // Before any work: a path that cannot be written would otherwise fail only after the generation.
        check_output("--out", self.out.as_deref(), Some("png"))?;
        check_output("--save-raw", self.save_raw.as_deref(), Some("npy"))?;
        check_output("--save-latents", self.text.save_latents.as_deref(), Some("npy"))?;
        let paths = [("--out", &self.out), ("--save-raw", &self.save_raw), ("--save-latents", &self.text.save_latents)];
        for (i, (flag, path)) in paths.iter().enumerate() {
            if let Some((other, _)) = paths[..i].iter().find(|(_, p)| p.is_some() && p == path) {
                return Err(Error::InvalidArgument(format!(
                    "{other} and {flag} name the same file: give each its own"
                )));
            }
        }
        Ok(())
    }

    /// A run that would write nothing is refused, after the request checked out (a real
    /// argument error is the one to report).
    fn check_something_written(&self) -> Result<()> {
        match self.writes_nothing() {
            true => {
                Err(Error::InvalidArgument("nothing to write: give --out FILE.png and/or --save-raw FILE.npy".into()))
            }
            false => Ok(()),
        }
    }

    fn writes_nothing(&self) -> bool {
        self.out.is_none() && self.save_raw.is_none() && self.text.save_latents.is_none()
    }
}

fn generate(a: &GenerateArgs) -> Result<()> {
    a.check_outputs()?;
    if StableDiffusion::is_export(&a.model.dir()) {
        return text_to_image(a);
    }
    a.text.prompt.refuse_unless_export(&a.model.dir(), a.text.save_latents.is_some())?;
    let model = a.model.load()?;
    let m = model.manifest();
    let params = a.sampling.params(&model)?;
    let batch = params.batch_size(model.sample_len())?;
    let limit = a.limits.bytes()?;
    if a.writes_nothing() {
        // Checked here only: with an output, the generation checks the request itself.
        diffusion_rt::request::check(&model, &params, limit)?;
        a.check_something_written()?;
    }
    if a.out.is_some() && m.output.kind != OutputKind::Image {
        return Err(Error::InvalidArgument(format!(
            "--out draws images; {}'s output is a tensor ({:?} per sample): write it with --save-raw FILE.npy",
            m.name, m.sample_shape
        )));
    }
    let mut session = Session::new(&model)?;
    if let Some(limit) = limit {
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
            "{} × {} with {} ({}, {}, {} per sample) on {} [{}] in {:.2} s",
            batch,
            m.name,
            gen.sampler.name(),
            count(gen.steps, "step"),
            guidance_summary(gen.guidance),
            count(gen.nfe, "network pass"),
            model.graph().backend_name(),
            model.graph().execution_provider(),
            start.elapsed().as_secs_f64()
        );
    }
    Ok(())
}

/// `n thing`, or `n things`.
fn count(n: usize, thing: &str) -> String {
    match (n, thing.ends_with('s')) {
        (1, _) => format!("1 {thing}"),
        (_, true) => format!("{n} {thing}es"),
        _ => format!("{n} {thing}s"),
    }
}

/// The guidance a summary reports: at scale 1 the conditional pass runs alone (a Stable Diffusion
/// export reports 1 for any scale up to 1, as diffusers guides only above it).
fn guidance_summary(scale: f32) -> String {
    if scale == 1.0 {
        "no guidance".into()
    } else {
        format!("guidance {scale}")
    }
}

/// `generate` on a Stable Diffusion export: PNG per image, raw NHWC pixels in [0, 1], latents.
fn text_to_image(a: &GenerateArgs) -> Result<()> {
    if a.dump_inputs.is_some() {
        return Err(Error::InvalidArgument("--dump-inputs is for model.json directories".into()));
    }
    let start = std::time::Instant::now();
    let t = &a.text;
    let sd = StableDiffusion::load(&a.model.dir(), &a.model.options()?, t.prompt.sd_options())?;
    let (backend, ep) = sd.backend();
    a.model.warn_threads(backend);
    let req = t.prompt.request(&sd, &a.sampling)?;
    a.check_something_written()?;
    let bar = progress_bar(a.quiet);
    let images = sd.generate_with(&req, &mut |done, total| bar.show(done, total))?;
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
            "{} of {iw}×{ih} with {} ({}, {}, {} per image) on {} [{ep}] in {:.2} s",
            count(n, "image"),
            images.sampler,
            count(images.steps, "step"),
            guidance_summary(images.guidance),
            count(images.nfe, "UNet pass"),
            backend.name(),
            start.elapsed().as_secs_f64()
        );
    }
    Ok(())
}

/// A PNG as [`image::read_png_u8`] read it, as the library takes pixels.
fn pixels((w, h, c, data): &(usize, usize, usize, Vec<u8>)) -> Pixels<'_> {
    Pixels { width: *w, height: *h, channels: *c, data }
}

impl PromptArgs {
    /// The text-to-image request these options and the sampling options ask of `sd`.
    fn request(&self, sd: &StableDiffusion, sampling: &SamplingArgs) -> Result<TextToImage> {
        let is_png = |p: &std::path::Path| p.extension().is_some_and(|e| e.eq_ignore_ascii_case("png"));
        if !sampling.tensors.is_empty() {
            return Err(Error::InvalidArgument(
                "--tensor is for models whose model.json has denoiser.tensor_inputs, not Stable Diffusion exports"
                    .into(),
            ));
        }
        let init_png = match sampling.init.as_deref() {
            Some(p) if is_png(p) => Some(image::read_png_u8(p)?),
            _ => None,
        };
        let mask_png = match self.mask.as_deref() {
            Some(p) if is_png(p) => Some(image::read_png_u8(p)?),
            Some(p) => {
                return Err(Error::InvalidArgument(format!(
                    "--mask takes a PNG image (white = repaint, black = keep); {} is not a .png",
                    p.display()
                )))
            }
            None => None,
        };
        // A start image as values (a float .npy of height × width × 3 in [0, 1], as --save-raw
        // writes an image) is taken as it is, at the size asked for.
        let init_values = match (sampling.init.as_deref(), &init_png) {
            (Some(p), None) => {
                let arr = read_npy("--init", p)?;
                let [_, h, w] = sd.latent_shape(self.width, self.height)?;
                let (h, w) = (h * sd.vae_factor(), w * sd.vae_factor());
                let image = [h, w, 3];
                if arr.shape != image && !(arr.shape.len() == 4 && arr.shape[1..] == image) {
                    return Err(Error::InvalidArgument(format!(
                        "--init {}: a Stable Diffusion export starts from a PNG, or from a float .npy of \
                         [height, width, 3] (or [batch, height, width, 3]) values in [0, 1] at the image size, \
                         here {image:?}; the file holds {:?}",
                        p.display(),
                        arr.shape
                    )));
                }
                Some(arr.data)
            }
            _ => None,
        };
        let mut req = TextToImage {
            prompts: self.prompts.clone(),
            negative_prompts: self.negative_prompts.clone(),
            width: self.width,
            height: self.height,
            vae_tile: self.vae_tile,
            init_image: init_values,
            encoder_noise: None,
            mask_image: None,
            params: sampling.params_with(false)?,
        };
        sd.set_images(&mut req, init_png.as_ref().map(pixels), mask_png.as_ref().map(pixels))?;
        Ok(req)
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
    if StableDiffusion::is_export(&a.model.dir()) {
        if a.classifier.is_some() {
            return Err(Error::InvalidArgument(
                "--classifier judges model.json directories, not Stable Diffusion exports".into(),
            ));
        }
        let opts = a.prompt.sd_options();
        let make = |sd: &StableDiffusion| a.prompt.request(sd, &a.sampling);
        let report = diffusion_rt::sd::bench::run(&a.model.dir(), &a.model.options()?, opts, make, a.runs, a.warmup)?;
        return print_report(&report.table(), report.to_json(), a.json.as_deref());
    }
    a.prompt.refuse_unless_export(&a.model.dir(), false)?;
    let opts = BenchOptions {
        runs: a.runs,
        warmup: a.warmup,
        classifier: a.classifier.clone(),
        memory_limit: a.limits.bytes()?,
    };
    let params = |m: &Model| a.sampling.params(m);
    let report = diffusion_rt::bench::run_with(&a.model.dir(), &a.model.options()?, params, &opts)?;
    print_report(&report.table(), report.to_json(), a.json.as_deref())
}

fn policy_eval(a: &PolicyEvalArgs) -> Result<()> {
    use diffusion_rt::policy::{evaluate, EvalOptions, PointTask};
    check_output("--json", a.json.as_deref(), None)?;
    let beside = a.model.dir().join("task.json");
    if a.task.is_none() && !beside.is_file() {
        return Err(Error::InvalidArgument(format!(
            "{} has no task.json: give the task with --task FILE (the shipped policies' task is \
             models/point-policy/task.json)",
            a.model.dir().display()
        )));
    }
    let task = PointTask::load(a.task.as_deref().unwrap_or(&beside))?;
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
    stdout(table)?;
    match json {
        Some(path) => std::fs::write(path, report + "\n").map_err(|e| Error::io(path, e)),
        None => Ok(()),
    }
}

fn inspect(a: &InspectArgs) -> Result<()> {
    enum Shown {
        Text(String),
        Json(serde_json::Value),
    }
    use Shown::{Json, Text};
    let shown = if StableDiffusion::is_export(&a.model.dir()) {
        let opts = SdOptions { memory_budget_mb: a.memory_budget, ..SdOptions::default() };
        let sd = StableDiffusion::load(&a.model.dir(), &a.model.options()?, opts)?;
        // Only the form printed: each describes the graphs again (an export loads its parts).
        if a.json {
            Json(sd.describe_json()?)
        } else {
            Text(sd.describe()?)
        }
    } else {
        if a.memory_budget.is_some() {
            return Err(Error::InvalidArgument("--memory-budget is planned for Stable Diffusion exports".into()));
        }
        let model = a.model.load()?;
        if a.json {
            Json(inspect::describe_json(&model)?)
        } else {
            Text(inspect::describe(&model)?)
        }
    };
    match shown {
        Json(json) => {
            let json = serde_json::to_string_pretty(&json).map_err(|e| Error::Internal(e.to_string()))?;
            stdout(&(json + "\n"))
        }
        Text(text) => stdout(&text),
    }
}

/// Writes `text` to stdout. A reader that went away (`drt inspect --json | head`) ends the output
/// quietly, as for any Unix tool, instead of failing.
fn stdout(text: &str) -> Result<()> {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(Error::io(std::path::Path::new("stdout"), e)),
        _ => Ok(()),
    }
}
