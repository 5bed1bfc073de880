//! `drt`: generate samples from a model directory, or inspect one.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Args, Parser, Subcommand};
use diffusion_rt::backend::{BackendKind, BackendOptions};
use diffusion_rt::schedule::SigmaSpacing;
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
    /// Show a model's manifest, graph inputs and outputs, and what the backend makes of them.
    Inspect(ModelArgs),
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
}

impl ModelArgs {
    fn load(&self) -> Result<Arc<Model>> {
        let opts = BackendOptions {
            backend: self.backend.parse::<BackendKind>()?,
            ort_library: self.ort_lib.clone(),
            execution_provider: self.ep.clone(),
            threads: self.threads,
        };
        Ok(Arc::new(Model::load(&self.model, &opts)?))
    }
}

#[derive(Args)]
struct GenerateArgs {
    #[command(flatten)]
    model: ModelArgs,
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
    /// DDIM eta (0 = deterministic).
    #[arg(long, default_value_t = 0.0)]
    eta: f64,
    /// Class label: once for all samples or once per sample (also comma-separated).
    #[arg(long = "class", value_delimiter = ',')]
    classes: Vec<i64>,
    /// NAME=VALUE conditioning: once for all samples or once per sample.
    #[arg(long = "cond")]
    conds: Vec<String>,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Number of samples (default: the number of classes given, else 1).
    #[arg(long)]
    batch: Option<usize>,
    /// img2img: the starting sample(s), float .npy [batch or 1, *sample_shape].
    #[arg(long)]
    init: Option<PathBuf>,
    /// img2img: fraction of the schedule run on the starting sample.
    #[arg(long)]
    strength: Option<f32>,
    /// Initial standard-normal noise, float .npy [batch, *sample_shape].
    #[arg(long)]
    noise: Option<PathBuf>,
    /// Write the final samples as float32 .npy.
    #[arg(long)]
    save_raw: Option<PathBuf>,
    /// Write the samples as a PNG grid.
    #[arg(long)]
    out: Option<PathBuf>,
    /// No progress bar or summary.
    #[arg(long)]
    quiet: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Generate(a) => generate(a),
        Command::Inspect(a) => inspect(a),
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

fn generate(a: &GenerateArgs) -> Result<()> {
    if a.out.is_none() && a.save_raw.is_none() {
        return Err(Error::InvalidArgument("nothing to write: give --out FILE.png and/or --save-raw FILE.npy".into()));
    }
    let model = a.model.load()?;
    let m = model.manifest();
    let len = model.sample_len();
    let noise = a.noise.as_deref().map(npy::read).transpose()?;
    let batch = match (a.batch, &noise) {
        (Some(b), _) => b,
        (None, Some(n)) => n.data.len() / len.max(1),
        (None, None) => a.classes.len().max(1),
    };
    let init = a.init.as_deref().map(npy::read).transpose()?.map(|arr| arr.data);
    let params = GenerateParams {
        sampler: a.sampler.clone(),
        spacing: SigmaSpacing::from_name(&a.schedule)?,
        sigmas: a.sigmas.clone(),
        steps: a.steps,
        guidance: a.guidance,
        eta: a.eta,
        batch,
        seed: a.seed,
        classes: a.classes.clone(),
        conds: parse_conds(&a.conds)?,
        noise: noise.map(|n| n.data),
        step_noise: None,
        init,
        strength: a.strength,
    };
    let mut session = Session::new(&model)?;
    let bar = (!a.quiet && std::io::stderr().is_terminal()).then(|| {
        let b = indicatif::ProgressBar::new(0);
        b.set_style(
            indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} steps  {elapsed_precise} ETA {eta}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        b
    });
    let start = std::time::Instant::now();
    let gen = session.generate(&params, &mut |done, total| {
        if let Some(b) = &bar {
            b.set_length(total as u64);
            b.set_position(done as u64);
        }
        true
    })?;
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
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
            batch, m.name, gen.sampler.name(), gen.steps, gen.nfe,
            model.graph().backend_name(), model.graph().execution_provider(), start.elapsed().as_secs_f64()
        );
    }
    Ok(())
}

fn inspect(a: &ModelArgs) -> Result<()> {
    let model = a.load()?;
    let m = model.manifest();
    let g = model.graph();
    println!("model       {} ({})", m.name, model.dir().display());
    println!("sample      {:?} ({} values)", m.sample_shape, model.sample_len());
    println!("prediction  {:?}", m.denoiser.prediction);
    if let Some(t) = &m.denoiser.time_input {
        println!("time input  {} ({:?} × {})", t.name, t.kind, t.scale);
    }
    if let Some(c) = &m.denoiser.class_input {
        println!("classes     {} via `{}`, null class {:?}", c.num_classes, c.name, c.null_class);
    }
    for c in &m.denoiser.cond_inputs {
        println!("condition   {} (default {})", c.name, c.default);
    }
    println!("schedule    {:?}", model.noise_schedule());
    println!("defaults    {:?}", m.defaults);
    println!("backend     {} [{}]", g.backend_name(), g.execution_provider());
    for i in g.inputs() {
        println!("  input     {i}");
    }
    for o in g.outputs() {
        println!("  output    {o}");
    }
    Ok(())
}
