//! Text to image over a Stable Diffusion export: prompts through the tokenizer and text encoder,
//! the UNet sampled as any model's denoiser (its text embeddings as the context input, negative
//! prompts as the unconditional branch), latents through the VAE decoder to RGB.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde_json::json;

use super::budget::{self, Plan};
use super::config::{read_json, unet_sample_size, SchedulerConfig, VaeConfig};
use super::model_err;
use super::tokenizer::ClipTokenizer;
use super::vae::{self, VaeDecoder};
use crate::backend::{self, BackendKind, BackendOptions, DType, ExecutionProvider, Graph, Input, InputData, IoInfo};
use crate::error::{Error, Result};
use crate::limits;
use crate::manifest::Manifest;
use crate::model::Model;
use crate::pipeline::{Generation, Session};
use crate::request::{GenerateParams, LatentInputs};
use crate::schedule::SigmaSpacing;
use start::Start;

mod start;

/// diffusers' default guidance scale for Stable Diffusion pipelines.
pub const DEFAULT_GUIDANCE: f32 = 7.5;

/// A loaded Stable Diffusion export (the directory `optimum-cli export onnx --task text-to-image`
/// writes).
pub struct StableDiffusion {
    dir: PathBuf,
    tokenizer: ClipTokenizer,
    /// Loaded graphs by part and latent size: tract needs the spatial dimensions fixed before it
    /// can analyse a graph; ONNX Runtime ignores the sizes, so its graphs serve every size.
    /// Empty in low-memory mode.
    graphs: Mutex<HashMap<GraphKey, Arc<dyn Graph>>>,
    opts: BackendOptions,
    low_memory: bool,
    /// [`SdOptions::memory_budget_mb`].
    memory_budget_mb: Option<u64>,
    /// How parts load by default: under a budget, as the plan of a default generation says.
    layout: Layout,
    /// By attention slices and segment counts, the UNet's largest segment of each cut: a property
    /// of the graph file, worked out once instead of on every generation's plan.
    largest_segments: Mutex<HashMap<CutKey, Vec<u64>>>,
    scheduler: SchedulerConfig,
    vae: VaeConfig,
    /// Latent channels the UNet returns (and the sampler walks).
    channels: usize,
    /// Channels the UNet takes beyond those: 0, or an inpainting UNet's mask and masked-image
    /// latents (`channels + 1`).
    extra_channels: usize,
    /// The UNet takes float16 latents: a float16 export, for the memory planner.
    half: bool,
    /// Latents per side when no size is asked for.
    default_latent: usize,
}

/// One text-to-image request. `params` carries the sampling settings (sampler, steps, guidance,
/// seed, batch, initial latents as `noise`, ...), checked as any model's request is; the export fills
/// `params.latent` (prompt embeddings, inpainting) itself, from the fields below.
#[derive(Clone, Debug, Default)]
pub struct TextToImage {
    /// One prompt for all images, or one per image.
    pub prompts: Vec<String>,
    /// None (the empty prompt), one for all images, or one per image.
    pub negative_prompts: Vec<String>,
    /// Pixels; default: the UNet's training size.
    pub width: Option<usize>,
    pub height: Option<usize>,
    /// Decode in tiles of this many latents per side (see [`super::vae`]); `None` decodes whole.
    pub vae_tile: Option<usize>,
    /// img2img: starting images, one for all or one per image, `height × width × 3` values in
    /// [0, 1] each at the request's size (as `--save-raw` writes them), encoded by `vae_encoder/`;
    /// `params.strength` is the share of the schedule run on them (default 0.8).
    pub init_image: Option<Vec<f32>>,
    /// The unit noise that samples the VAE posterior of each encoded image (`batch` latents);
    /// default: drawn from the seed.
    pub encoder_noise: Option<Vec<f32>>,
    /// Inpainting (with `init_image`): `height × width` values, one mask for all images or one
    /// each; at least 0.5 = repaint, below = keep, as diffusers binarises it. The UNet's latents
    /// are blended with the encoded image after every step; `params.strength` defaults to 1
    /// (start from pure noise).
    pub mask_image: Option<Vec<f32>>,
    pub params: GenerateParams,
}

impl TextToImage {
    /// The images this request makes with latents of `latent_len` values, by the batch rule every
    /// entry point follows ([`crate::request::batch_size`]): an explicit batch, else the longest of
    /// the prompts, the negative prompts and the initial latents, else 1.
    pub fn batch_size(&self, latent_len: usize) -> Result<usize> {
        let noise = self.params.noise.as_ref().map_or(0, |n| n.len() / latent_len.max(1));
        crate::request::batch_size(self.params.batch, &[self.prompts.len(), self.negative_prompts.len(), noise])
    }
}

/// How an export is held in memory.
#[derive(Clone, Copy, Debug, Default)]
pub struct SdOptions {
    /// Load the text encoder, the UNet and the VAE decoder only while each runs, and free each
    /// before the next loads: peak memory of the largest part instead of all three, at the cost of
    /// loading them on every generation.
    pub low_memory: bool,
    /// Megabytes of resident memory every generation must stay under ([`super::budget`]): the
    /// parts load just in time, and the attention slices, UNet segments and VAE tiles are
    /// planned to fit. A budget the plan cannot meet is an error naming the smallest it could.
    pub memory_budget_mb: Option<u64>,
}

/// Attention slices and the segment counts of the cuts asked for.
type CutKey = (usize, Vec<usize>);

/// A part and the latent size it was loaded for (0 × 0 for the text encoder).
type GraphKey = (Part, usize, usize);

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Part {
    TextEncoder,
    Unet,
    VaeDecoder,
    VaeEncoder,
}

impl Part {
    fn dir(self) -> &'static str {
        match self {
            Part::TextEncoder => "text_encoder",
            Part::Unet => "unet",
            Part::VaeDecoder => "vae_decoder",
            Part::VaeEncoder => "vae_encoder",
        }
    }
}

/// An export's settings and graphs, as `drt inspect` shows them.
#[derive(Clone, Debug)]
pub struct Description {
    pub dir: PathBuf,
    pub sampler: &'static str,
    pub spacing: SigmaSpacing,
    pub prediction: &'static str,
    /// The `noise_schedule` object the scheduler config maps to (model.json's keys).
    pub noise_schedule: serde_json::Value,
    pub channels: usize,
    pub extra_channels: usize,
    /// Pixels per side when no size is asked for.
    pub default_size: usize,
    pub vae_factor: usize,
    pub vae_scaling_factor: f64,
    pub tokens: usize,
    pub default_steps: u32,
    pub default_guidance: f32,
    pub parts: Vec<PartDescription>,
    /// The plan of a default generation (one image at the default size, guided) under the
    /// export's memory budget.
    pub plan: Option<Plan>,
}

/// One part of an export (`unet`, ...) as its backend loaded it.
#[derive(Clone, Debug)]
pub struct PartDescription {
    pub name: &'static str,
    pub backend: &'static str,
    pub execution_provider: ExecutionProvider,
    pub inputs: Vec<IoInfo>,
    pub outputs: Vec<IoInfo>,
}

/// Generated images and the latents they were decoded from.
#[derive(Clone, Debug)]
pub struct Images {
    pub batch: usize,
    pub width: usize,
    pub height: usize,
    /// `batch × height × width × 3` values in [0, 1] (diffusers' `output_type="np"`).
    pub pixels: Vec<f32>,
    /// The final latents, `batch × channels × height/f × width/f`, before the VAE's scaling.
    pub latents: Vec<f32>,
    pub latent_shape: [usize; 3],
    /// Network passes of the UNet per image.
    pub nfe: usize,
    pub steps: usize,
    pub sampler: &'static str,
    pub guidance: f32,
}

impl Images {
    /// The pixels as 8-bit RGB ([`rgb8`]).
    pub fn rgb8(&self) -> Vec<u8> {
        rgb8(&self.pixels)
    }
}

/// Values in [0, 1] as 8-bit, rounded as diffusers' `numpy_to_pil` rounds them.
pub fn rgb8(pixels: &[f32]) -> Vec<u8> {
    pixels.iter().map(|v| (v * 255.0).round() as u8).collect()
}

impl StableDiffusion {
    /// Whether `dir` looks like a Stable Diffusion export (it has `model_index.json` and `unet/`).
    pub fn is_export(dir: &Path) -> bool {
        dir.join("model_index.json").is_file() && dir.join("unet").is_dir()
    }

    pub fn load(dir: &Path, opts: &BackendOptions, sd: SdOptions) -> Result<StableDiffusion> {
        if sd.memory_budget_mb == Some(0) {
            return Err(Error::InvalidArgument(
                "a memory budget of 0 MB cannot be met: give one in MB, or none".into(),
            ));
        }
        let index = dir.join("model_index.json");
        let index_json = read_json(&index)?;
        let class = index_json.get("_class_name").and_then(|v| v.as_str()).unwrap_or("");
        if !class.starts_with("StableDiffusion") || class.contains("XL") || class.contains('3') {
            return Err(model_err(&index, format!("`{class}` is not a Stable Diffusion 1.x/2.x pipeline")));
        }
        let scheduler = SchedulerConfig::read(&dir.join("scheduler/scheduler_config.json"))?;
        let vae = VaeConfig::read(&dir.join("vae_decoder/config.json"))?;
        let tokenizer = ClipTokenizer::load(&dir.join("tokenizer"))?;
        let default_latent = unet_sample_size(&dir.join("unet/config.json"))?.unwrap_or(64);
        let mut sd = StableDiffusion {
            dir: dir.to_path_buf(),
            tokenizer,
            graphs: Mutex::new(HashMap::new()),
            opts: BackendOptions {
                attention_slices: opts.attention_slices.or(Some(backend::DEFAULT_SD_ATTENTION_SLICES)),
                ..opts.clone()
            },
            low_memory: sd.low_memory || sd.memory_budget_mb.is_some(),
            memory_budget_mb: sd.memory_budget_mb,
            layout: Layout::default(),
            largest_segments: Mutex::new(HashMap::new()),
            scheduler,
            vae,
            channels: 0,
            extra_channels: 0,
            half: false,
            default_latent,
        };
        // Every part loads now, so a broken export fails here rather than mid-generation (in
        // low-memory mode each is dropped again before the next loads); under a budget, as the
        // plan of a default generation (one image, guided) loads it.
        let latent = (default_latent, default_latent);
        // Known before the load-time plan, which counts float16 weights' float32 copies.
        sd.half = backend::input_type(&dir.join("unet/model.onnx"), "sample")? == Some(DType::F16);
        if let Some(budget) = sd.memory_budget_mb {
            let plan = sd.plan_for(budget, latent, 2, None)?;
            sd.low_memory = !plan.resident;
            sd.layout = Layout::of(&plan);
        }
        let unet = sd.graph(Part::Unet, latent)?;
        let unet_path = dir.join("unet/model.onnx");
        let sample = unet
            .inputs()
            .iter()
            .find(|i| i.name == "sample")
            .ok_or_else(|| model_err(&unet_path, "no input `sample`"))?;
        let output = unet
            .outputs()
            .iter()
            .find(|o| o.name == "out_sample")
            .ok_or_else(|| model_err(&unet_path, "no output `out_sample`"))?;
        let (c_in, c_out) = match (sample.shape.as_slice(), output.shape.as_slice()) {
            ([_, Some(i), _, _], [_, Some(o), _, _]) => (*i, *o),
            _ => {
                return Err(model_err(
                    &unet_path,
                    format!("`{sample}` and `{output}` are not [batch, channels, height, width]"),
                ))
            }
        };
        if c_in != c_out && c_in != 2 * c_out + 1 {
            return Err(model_err(&unet_path, format!(
                "the UNet takes {c_in} channels and returns {c_out}: neither a plain nor an inpainting UNet ({}: latents, mask, masked image)",
                2 * c_out + 1)));
        }
        (sd.channels, sd.extra_channels, sd.half) = (c_out, c_in - c_out, sample.dtype == DType::F16);
        drop(unet);
        sd.graph(Part::TextEncoder, (0, 0))?;
        sd.graph(Part::VaeDecoder, latent)?;
        Ok(sd)
    }

    /// The plan of a generation of latents `latent` with `unet_batch` images per UNet call under
    /// `budget` MB ([`budget::plan`]).
    fn plan_for(&self, budget: u64, latent: (usize, usize), unet_batch: usize, tile: Option<usize>) -> Result<Plan> {
        let segments = backend::can_run_in_segments(&self.opts);
        let inputs = budget::Inputs::read(&self.dir, latent, unet_batch, self.vae.factor, segments, self.half)?;
        let unet = self.dir.join("unet/model.onnx");
        let mut largest = |slices: usize, segments: &[usize]| -> Result<Vec<u64>> {
            let mut known = self.largest_segments.lock().unwrap_or_else(|p| p.into_inner());
            let key = (slices, segments.to_vec());
            if let Some(cut) = known.get(&key) {
                return Ok(cut.clone());
            }
            let cut = backend::largest_segments(&unet, slices, segments)?;
            known.insert(key, cut.clone());
            Ok(cut)
        };
        budget::plan(budget, &inputs, tile, &mut largest)
    }

    /// The plan of `req` under the export's memory budget; `None` without one.
    pub fn plan(&self, req: &TextToImage) -> Result<Option<Plan>> {
        let Some(budget) = self.memory_budget_mb else { return Ok(None) };
        let p = &req.params;
        let [c, h, w] = self.latent_shape(req.width, req.height)?;
        let batch = req.batch_size(c * h * w)?;
        let guided = limits::guidance(p.guidance.unwrap_or(DEFAULT_GUIDANCE))? > 1.0;
        self.plan_for(budget, (h, w), if guided { 2 * batch } else { batch }, req.vae_tile).map(Some)
    }

    /// A part's graph for latents of `h × w`, loaded on first use (on every use in low-memory mode).
    fn graph(&self, part: Part, hw: (usize, usize)) -> Result<Arc<dyn Graph>> {
        self.graph_as(part, hw, &self.layout)
    }

    /// As [`StableDiffusion::graph`], loaded as `layout` says; kept only in the export's own layout.
    fn graph_as(&self, part: Part, (h, w): (usize, usize), layout: &Layout) -> Result<Arc<dyn Graph>> {
        // A graph that serves every size (ONNX Runtime's) is kept as (part, 0, 0).
        let any = (part, 0, 0);
        let key = if part == Part::TextEncoder { any } else { (part, h, w) };
        {
            let graphs = self.graphs.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(g) = graphs.get(&key).or_else(|| graphs.get(&any)) {
                return Ok(Arc::clone(g));
            }
        }
        let path = self.dir.join(part.dir()).join("model.onnx");
        if !path.is_file() {
            return Err(model_err(&path, "not found"));
        }
        let tokens = self.tokenizer.max_length();
        let fixed: Vec<backend::FixedDim<'_>> = match part {
            Part::TextEncoder => vec![("input_ids", 1, tokens)],
            Part::Unet => vec![("sample", 2, h), ("sample", 3, w), ("encoder_hidden_states", 1, tokens)],
            Part::VaeDecoder => vec![("latent_sample", 2, h), ("latent_sample", 3, w)],
            Part::VaeEncoder => vec![("sample", 2, h * self.vae.factor), ("sample", 3, w * self.vae.factor)],
        };
        let g = backend::load_graph_fixed(&path, &layout.options(part, &self.opts), &fixed)?;
        if !self.low_memory && *layout == self.layout {
            let key = if g.backend() == BackendKind::Ort { any } else { key };
            self.graphs.lock().unwrap_or_else(|p| p.into_inner()).insert(key, Arc::clone(&g));
        }
        Ok(g)
    }

    /// The backend its graphs run on, and where.
    pub fn backend(&self) -> (BackendKind, ExecutionProvider) {
        (backend::resolve_kind(&self.opts), self.opts.execution_provider)
    }

    /// The backend options its graphs load with (the export's defaults filled in).
    pub fn options(&self) -> &BackendOptions {
        &self.opts
    }

    pub fn tokenizer(&self) -> &ClipTokenizer {
        &self.tokenizer
    }

    /// Pixels per latent along each side.
    pub fn vae_factor(&self) -> usize {
        self.vae.factor
    }

    /// What `drt inspect` shows of the export: its settings and each part's graph.
    pub fn description(&self) -> Result<Description> {
        let mut parts = Vec::new();
        let encoder = self.dir.join(Part::VaeEncoder.dir()).join("model.onnx").is_file();
        let optional = encoder.then_some(Part::VaeEncoder);
        for part in [Part::TextEncoder, Part::Unet, Part::VaeDecoder].into_iter().chain(optional) {
            let g = self.graph(part, (self.default_latent, self.default_latent))?;
            parts.push(PartDescription {
                name: part.dir(),
                backend: g.backend_name(),
                execution_provider: g.execution_provider(),
                inputs: g.inputs().to_vec(),
                outputs: g.outputs().to_vec(),
            });
        }
        Ok(Description {
            dir: self.dir.clone(),
            sampler: self.scheduler.sampler,
            spacing: self.scheduler.spacing,
            prediction: self.scheduler.prediction,
            noise_schedule: self.scheduler.noise_schedule.clone(),
            channels: self.channels,
            extra_channels: self.extra_channels,
            default_size: self.default_latent * self.vae.factor,
            vae_factor: self.vae.factor,
            vae_scaling_factor: self.vae.scaling_factor,
            tokens: self.tokenizer.max_length(),
            default_steps: self.default_steps(),
            default_guidance: DEFAULT_GUIDANCE,
            parts,
            plan: self.plan(&TextToImage::default())?,
        })
    }

    /// [`StableDiffusion::describe`] as JSON (`drt inspect --json`): its settings and each part's
    /// graph.
    pub fn describe_json(&self) -> Result<serde_json::Value> {
        let d = self.description()?;
        let parts: serde_json::Map<String, serde_json::Value> = d
            .parts
            .iter()
            .map(|p| {
                let v = serde_json::json!({"backend": p.backend, "execution_provider": p.execution_provider.name(),
                                           "inputs": crate::inspect::io_json(&p.inputs), "outputs": crate::inspect::io_json(&p.outputs)});
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

    /// [`StableDiffusion::description`] as text, one setting or graph input per line.
    pub fn describe(&self) -> Result<String> {
        use std::fmt::Write as _;
        let d = self.description()?;
        let mut out = String::new();
        let mut line = |key: &str, value: String| {
            let _ = writeln!(out, "{key:<11} {value}");
        };
        line("export", d.dir.display().to_string());
        line("sampler", format!("{} ({} sigma spacing), prediction {}", d.sampler, d.spacing, d.prediction));
        let schedule: crate::manifest::NoiseScheduleSpec = serde_json::from_value(d.noise_schedule.clone())
            .map_err(|e| Error::Internal(format!("the scheduler config's noise schedule: {e}")))?;
        line("schedule", schedule.to_schedule()?.to_string());
        let extra = match d.extra_channels {
            0 => String::new(),
            n => format!(" (+{n} inpainting inputs)"),
        };
        line(
            "latents",
            format!(
                "{} channels{extra}, default {}×{} px, VAE factor {}, scaling {}",
                d.channels, d.default_size, d.default_size, d.vae_factor, d.vae_scaling_factor
            ),
        );
        line("tokens", format!("{} per prompt", d.tokens));
        line("defaults", format!("{} steps, guidance {}", d.default_steps, d.default_guidance));
        if let Some(plan) = &d.plan {
            line("plan", plan.to_string());
        }
        for p in &d.parts {
            line(p.name, format!("{} [{}]", p.backend, p.execution_provider));
            for i in &p.inputs {
                line("  input", i.to_string());
            }
            for o in &p.outputs {
                line("  output", o.to_string());
            }
        }
        Ok(out)
    }

    /// diffusers' pipeline default; LCM exports are made for a few steps.
    fn default_steps(&self) -> u32 {
        if self.scheduler.sampler == "lcm" {
            4
        } else {
            50
        }
    }

    /// `[channels, height, width]` of the latents for an image of `width × height` pixels.
    pub fn latent_shape(&self, width: Option<usize>, height: Option<usize>) -> Result<[usize; 3]> {
        let f = self.vae.factor;
        let side = |v: Option<usize>, what: &str| -> Result<usize> {
            Ok(limits::image_side(what, v.unwrap_or(self.default_latent * f), f)? / f)
        };
        Ok([self.channels, side(height, "height")?, side(width, "width")?])
    }

    /// Embeddings of each list of prompts, `[n, tokens, width]` one after another, one text
    /// encoder call per list (as diffusers encodes prompts and negative prompts apart), the
    /// encoder loaded once for all of them.
    pub fn encode_prompts(&self, lists: &[&[String]]) -> Result<Vec<Vec<f32>>> {
        self.encode_prompts_as(lists, &self.layout)
    }

    fn encode_prompts_as(&self, lists: &[&[String]], layout: &Layout) -> Result<Vec<Vec<f32>>> {
        let path = self.dir.join("text_encoder/model.onnx");
        let text_encoder = self.graph_as(Part::TextEncoder, (0, 0), layout)?;
        let g = text_encoder.as_ref();
        let (input, output) = match (g.inputs(), g.outputs().iter().position(|o| o.name == "last_hidden_state")) {
            ([i], Some(o)) if i.name == "input_ids" => (i, o),
            _ => return Err(model_err(&path, "expected one input `input_ids` and an output `last_hidden_state`")),
        };
        let width = match g.outputs()[output].shape.as_slice() {
            [_, _, Some(w)] => *w,
            _ => return Err(model_err(&path, "`last_hidden_state` must be [batch, tokens, fixed width]")),
        };
        if !matches!(input.dtype, DType::I64 | DType::I32) {
            return Err(model_err(&path, format!("`input_ids` is {}, expected int64 or int32", input.dtype)));
        }
        let len = self.tokenizer.max_length();
        let mut runner = g.runner()?;
        runner.release_after_run(true); // it runs once per generation
        let mut embeddings = Vec::with_capacity(lists.len());
        for prompts in lists {
            let ids: Vec<i64> = prompts.iter().flat_map(|p| self.tokenizer.encode(p)).collect();
            let ids32: Vec<i32>;
            let data = if input.dtype == DType::I64 {
                InputData::I64(&ids)
            } else {
                ids32 = ids.iter().map(|&i| i as i32).collect();
                InputData::I32(&ids32)
            };
            let mut out = vec![0f32; prompts.len() * len * width];
            runner.run(&[Input { index: 0, shape: &[prompts.len(), len], data }], output, &mut out)?;
            embeddings.push(out);
        }
        Ok(embeddings)
    }

    /// The UNet as a model for latents of `shape`.
    fn unet_model(&self, shape: [usize; 3], layout: &Layout) -> Result<Model> {
        let manifest = json!({
            "schema": crate::manifest::SCHEMA,
            "name": self.dir.file_name().map_or("stable-diffusion".into(), |n| n.to_string_lossy().into_owned()),
            "sample_shape": shape,
            "denoiser": {
                "onnx": "unet/model.onnx",
                "sample_input": "sample",
                "time_input": {"name": "timestep", "kind": "index"},
                "context_input": {"name": "encoder_hidden_states"},
                "sample_extra_channels": self.extra_channels,
                "output": "out_sample",
                "prediction": self.scheduler.prediction,
            },
            "noise_schedule": self.scheduler.noise_schedule,
            // diffusers' pipeline default; LCM exports are made for a few steps.
            "defaults": {"sampler": self.scheduler.sampler, "steps": self.default_steps()},
            "output": {"kind": "tensor"},
        });
        let source = self.dir.join("scheduler/scheduler_config.json");
        let manifest = Manifest::parse(&manifest.to_string()).map_err(|e| model_err(&source, e.message()))?;
        Model::from_manifest(
            &self.dir,
            manifest,
            &self.dir.join("unet/model.onnx"),
            self.graph_as(Part::Unet, (shape[1], shape[2]), layout)?,
        )
    }

    /// Decodes `n` latents of `shape` (unscaled, as sampled) to `n × H × W × 3` values in [0, 1],
    /// one image per VAE call (or one tile per call, with `tile`) so memory stays that of one.
    pub fn decode(&self, latents: &[f32], n: usize, shape: [usize; 3], tile: Option<usize>) -> Result<Vec<f32>> {
        self.decode_as(latents, n, shape, tile, &self.layout)
    }

    fn decode_as(
        &self,
        latents: &[f32],
        n: usize,
        shape: [usize; 3],
        tile: Option<usize>,
        layout: &Layout,
    ) -> Result<Vec<f32>> {
        let per = shape.iter().product::<usize>();
        if latents.len() != n * per {
            return Err(Error::Internal(format!("decode: {} latent values for {n} of {shape:?}", latents.len())));
        }
        if tile == Some(0) {
            return Err(Error::InvalidArgument("the VAE tile must be at least 1 latent".into()));
        }
        let graph = self.graph_as(Part::VaeDecoder, vae::call_size(shape, tile), layout)?;
        let path = self.dir.join("vae_decoder/model.onnx");
        let mut vae = VaeDecoder::new(graph.as_ref(), &path, self.vae.scaling_factor, self.vae.factor)?;
        let half_out = vae.half_output();
        let (h, w) = (shape[1] * self.vae.factor, shape[2] * self.vae.factor);
        let mut pixels = Vec::with_capacity(n * h * w * 3);
        for one in latents.chunks(per) {
            let rgb = vae.decode(one, shape, tile)?;
            // diffusers' postprocess: NCHW in [-1, 1] to NHWC in [0, 1], in the decoder's own
            // precision (a float16 decoder's image is rounded to float16 there, as in torch).
            let post = |v: f32| {
                let p = v * 0.5 + 0.5;
                let p = if half_out { half::f16::from_f32(p).to_f32() } else { p };
                p.clamp(0.0, 1.0)
            };
            for y in 0..h {
                for x in 0..w {
                    for c in 0..3 {
                        pixels.push(post(rgb[(c * h + y) * w + x]));
                    }
                }
            }
        }
        Ok(pixels)
    }

    /// Runs a whole text-to-image request.
    pub fn generate(&self, req: &TextToImage) -> Result<Images> {
        self.generate_with(req, &mut |_, _| true)
    }

    /// As [`StableDiffusion::generate`], calling `progress(steps done, steps in all)` after every
    /// sampling step; returning false cancels the generation (`Error::Cancelled`).
    pub fn generate_with(&self, req: &TextToImage, progress: &mut dyn FnMut(usize, usize) -> bool) -> Result<Images> {
        let prepared = self.prepare(req)?;
        let mut session = Session::new(&prepared.model)?;
        let gen = session.generate(&prepared.params, progress)?;
        // The UNet is freed before the decoder loads (what low-memory mode is for).
        drop(session);
        self.decoded(prepared, gen)
    }

    /// Everything before the first sampling step: the request checked, the memory plan, the
    /// prompts encoded, the start encoded, and the UNet loaded as the model to sample.
    pub(super) fn prepare(&self, req: &TextToImage) -> Result<Prepared> {
        let p = &req.params;
        if p.latent.is_some() {
            return Err(Error::InvalidArgument(
                "TextToImage.params.latent is made from the prompts and images; leave it None".into(),
            ));
        }
        // What can be checked before the text encoder runs; the rest is the UNet's request check.
        let shape = self.latent_shape(req.width, req.height)?;
        let batch = req.batch_size(shape.iter().product())?;
        let per_image = |v: &[String], what: &str| -> Result<Vec<String>> {
            match v.len() {
                0 => Ok(vec![String::new(); batch]),
                1 => Ok(vec![v[0].clone(); batch]),
                k if k == batch => Ok(v.to_vec()),
                k => Err(Error::InvalidArgument(format!("{k} {what}s for {batch} images: give one, or one per image"))),
            }
        };
        let prompts = per_image(&req.prompts, "prompt")?;
        let negatives = per_image(&req.negative_prompts, "negative prompt")?;
        // diffusers guides only above 1; at or below it a single conditional pass (SD-Turbo, LCM).
        let guidance = limits::guidance(p.guidance.unwrap_or(DEFAULT_GUIDANCE))?.max(1.0);
        let (layout, vae_tile) = match self.plan(req)? {
            Some(plan) => {
                if !plan.resident {
                    // What stays loaded for other generations would not fit beside this one.
                    self.graphs.lock().unwrap_or_else(|p| p.into_inner()).clear();
                }
                log::info!("{plan}");
                (Layout::of(&plan), plan.vae_tile)
            }
            None => (self.layout.clone(), req.vae_tile),
        };
        let lists: &[&[String]] = if guidance > 1.0 { &[&prompts, &negatives] } else { &[&prompts] };
        let mut embeddings = self.encode_prompts_as(lists, &layout)?.into_iter();
        stage_done("text encoder");
        let context = embeddings.next();
        let uncond_context = embeddings.next();
        let Start { init, inpaint, strength, sample_extra } = self.start(req, batch, shape)?;
        let model = Arc::new(self.unet_model(shape, &layout)?);
        let params = GenerateParams {
            batch,
            init,
            strength,
            guidance: Some(guidance),
            spacing: if p.spacing == SigmaSpacing::Default { self.scheduler.spacing } else { p.spacing },
            latent: Some(LatentInputs { context, uncond_context, inpaint, sample_extra }),
            ..p.clone()
        };
        Ok(Prepared { model, params, layout, vae_tile, shape, batch, guidance })
    }

    /// Decodes the latents a prepared request sampled, with the UNet already freed.
    pub(super) fn decoded(&self, prepared: Prepared, gen: Generation) -> Result<Images> {
        let Prepared { model, layout, vae_tile, shape, batch, guidance, .. } = prepared;
        drop(model);
        stage_done("sampling");
        let pixels = self.decode_as(&gen.samples, batch, shape, vae_tile, &layout)?;
        stage_done("VAE decoder");
        Ok(Images {
            batch,
            width: shape[2] * self.vae.factor,
            height: shape[1] * self.vae.factor,
            pixels,
            latents: gen.samples,
            latent_shape: shape,
            nfe: gen.nfe,
            steps: gen.steps,
            sampler: gen.sampler.name(),
            guidance,
        })
    }

    /// Decodes `latents` of a prepared request as its generation will (a preview of the result).
    pub(super) fn decode_prepared(&self, prepared: &Prepared, latents: &[f32]) -> Result<Vec<f32>> {
        self.decode_as(latents, prepared.batch, prepared.shape, prepared.vae_tile, &prepared.layout)
    }
}

/// A request made ready to sample ([`StableDiffusion::prepare`]).
pub(super) struct Prepared {
    /// The UNet, as the model the sampler walks.
    pub model: Arc<Model>,
    /// The sampling request, its latent inputs (prompt embeddings, start) filled in.
    pub params: GenerateParams,
    layout: Layout,
    vae_tile: Option<usize>,
    pub shape: [usize; 3],
    pub batch: usize,
    guidance: f32,
}

/// After a stage whose part was dropped: hands what the allocator kept of it back to the system,
/// and logs the resident memory and the peak so far (debug level).
fn stage_done(stage: &str) {
    crate::sysinfo::release_freed_memory();
    let mb = |b: Option<u64>| b.map_or(0.0, |b| b as f64 / (1 << 20) as f64);
    let (now, peak) = (mb(crate::sysinfo::rss_bytes()), mb(crate::sysinfo::peak_rss_bytes()));
    log::debug!("{stage} done: resident {now:.0} MB, peak so far {peak:.0} MB");
}

/// How a generation's parts load: the export's options, or what a memory plan chose.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Layout {
    /// A plan's attention slices and UNet segments.
    planned: Option<(usize, usize)>,
}

impl Layout {
    fn of(plan: &Plan) -> Layout {
        Layout { planned: Some((plan.attention_slices, plan.unet_segments)) }
    }

    /// Under a plan, weights stay where the system maps them, the UNet runs in the plan's
    /// segments and slices, and the other parts load as they are: rewriting a graph whose
    /// weights are inside it would copy them (their attentions are small: 77 tokens, or the
    /// VAE's one head, which the planner counts whole).
    fn options(&self, part: Part, base: &BackendOptions) -> BackendOptions {
        let Some((slices, segments)) = self.planned else { return base.clone() };
        let (attention_slices, segments) = if part == Part::Unet { (slices, segments) } else { (1, 1) };
        BackendOptions {
            attention_slices: Some(attention_slices),
            segments: Some(segments),
            mapped_weights: true,
            ..base.clone()
        }
    }
}
