//! A generation request, and its check against a model in one place: every entry point (the CLI,
//! the Rust API, the C API, Stable Diffusion exports) builds a [`GenerateParams`] and every
//! generation begins with `Plan::new`, so each limit (`crate::limits`) is applied once and each
//! mistake has one message.

use crate::cache::CacheOptions;
use crate::denoiser::Precision;
use crate::error::{Error, Result};
use crate::guidance::{Conditioning, GuidanceRules};
use crate::limits;
use crate::model::Model;
use crate::sampler::{sampler_by_name, ConsistencyBoundary, SamplerKind, SamplerOptions};
use crate::schedule::{NoiseSchedule, Schedule, SigmaSpacing};

/// Everything one generation needs besides the model. `Default` + the model's defaults give a
/// sensible run; every field is checked by `Plan::new` before any work starts.
#[derive(Clone, Debug, Default)]
pub struct GenerateParams {
    /// Sampler name (`None` = the model's default, else `dpmpp-2m`).
    pub sampler: Option<String>,
    pub spacing: SigmaSpacing,
    /// A custom sigma table (model convention, last entry included), replacing the schedule.
    pub sigmas: Option<Vec<f64>>,
    /// `None` = the model's default (else 20).
    pub steps: Option<u32>,
    /// `None` = the model's default (else 1, no guidance).
    pub guidance: Option<f32>,
    /// When guidance runs: adaptive guidance and a guidance interval (both off by default).
    pub guidance_rules: GuidanceRules,
    /// Output-level step caching (off by default).
    pub step_cache: Option<CacheOptions>,
    /// DDIM's eta.
    pub eta: f64,
    /// Number of samples; 0 = by [`batch_size`]'s rule (as many as the per-sample lists hold,
    /// else 1).
    pub batch: usize,
    pub seed: u64,
    /// One label for all samples, or one per sample; empty = the null class / no class input.
    pub classes: Vec<i64>,
    /// Conditioning values by input name: one value for all samples or one per sample.
    pub conds: Vec<(String, Vec<f32>)>,
    /// Tensors by input name (`denoiser.tensor_inputs`): one sample's tensor (in the graph's
    /// per-sample shape, row-major) for all samples, or one per sample one after another.
    pub tensors: Vec<(String, Vec<f32>)>,
    /// Initial unit noise `[batch, *sample_shape]` instead of the seeded one.
    pub noise: Option<Vec<f32>>,
    /// Per-step noise for stochastic samplers, indexed by step, instead of the seeded one.
    pub step_noise: Option<Vec<Vec<f32>>>,
    /// img2img: a starting sample `[batch, *sample_shape]` (or one sample for all) and how much of the
    /// schedule to run on it (1 = all of it, i.e. ignore the image; default 0.8).
    pub init: Option<Vec<f32>>,
    pub strength: Option<f32>,
    /// The inputs of latent models conditioned on embeddings, which a Stable Diffusion export fills
    /// from its prompts and images (a model.json with `context_input` or `sample_extra_channels`
    /// takes them too).
    pub latent: Option<LatentInputs>,
}

/// What a latent model's UNet takes besides the sample: text embeddings, and for inpainting the
/// image to keep or the extra channels an inpainting UNet sees.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LatentInputs {
    /// One context tensor per sample, one after another (`[tokens, width]` each, e.g. prompt
    /// embeddings), for a model with a context input.
    pub context: Option<Vec<f32>>,
    /// Guidance's unconditional branch, shaped as `context` (e.g. negative-prompt embeddings).
    pub uncond_context: Option<Vec<f32>>,
    /// Inpainting by blending: after every step the sample keeps `known` where `mask` is 0.
    pub inpaint: Option<Inpaint>,
    /// For a model whose sample input takes extra channels (`denoiser.sample_extra_channels`):
    /// their values, appended to every call's sample, one block for all samples or one per sample.
    pub sample_extra: Option<Vec<f32>>,
}

/// What inpainting keeps: after each step, `x = mask·x + (1 − mask)·known_t`, where `known_t` is
/// `known` noised to the level the step reached with the generation's initial noise, and `known`
/// itself after the last step (diffusers' latent blending for ordinary UNets).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Inpaint {
    /// Clean samples, `batch × sample_len` (or one for all).
    pub known: Vec<f32>,
    /// Per value, 1 = generate, 0 = keep; `batch × sample_len` (or one for all).
    pub mask: Vec<f32>,
}

/// The sampler a request gets when neither it nor the model names one.
pub const DEFAULT_SAMPLER: SamplerKind = SamplerKind::DpmPp2m;
/// The step count a request gets when neither it nor the model gives one.
pub const DEFAULT_STEPS: u32 = 20;
/// The default cap on a generation's own buffers (see [`generation_bytes`]).
pub const DEFAULT_MEMORY_LIMIT: usize = 2 << 30;
/// img2img's default strength, diffusers' own.
pub const DEFAULT_STRENGTH: f32 = 0.8;

/// Sample-sized float buffers a generation may hold at once: the sample, its initial noise, the
/// caller's noise or start image, up to three sampler scratch buffers, guidance's doubled input and
/// output (four), the network adapters' converted copy, and the result handed back.
const BUFFERS_PER_SAMPLE: usize = 12;

/// Bytes of the runtime's own buffers for a generation of `n` sample values (not the backend's
/// activations, which only the backend knows).
pub fn generation_bytes(n: usize) -> usize {
    n.saturating_mul(BUFFERS_PER_SAMPLE * std::mem::size_of::<f32>())
}

/// The batch rule every entry point follows (the CLI, Rust, C, Java, text-to-image): an explicit
/// batch (nonzero) wins; else as many samples as the longest per-sample list holds (`lists`: class
/// labels, initial noise in whole samples, prompts, negative prompts); else 1. Whether each list
/// then holds one entry or one per sample is checked where it is used, naming it.
pub fn batch_size(explicit: usize, lists: &[usize]) -> Result<usize> {
    let n = match explicit {
        0 => lists.iter().copied().max().unwrap_or(0).max(1),
        n => n,
    };
    limits::batch(n)
}

/// Checks `p` against `model` as a generation would, before any work: the error a generation
/// would fail with, without running the network.
pub fn check(model: &Model, p: &GenerateParams, memory_limit: Option<usize>) -> Result<()> {
    Plan::new(model, p, memory_limit.unwrap_or(DEFAULT_MEMORY_LIMIT)).map(drop)
}

impl GenerateParams {
    /// The number of samples this request makes of a model with `sample_len` values per sample,
    /// by [`batch_size`]'s rule.
    pub fn batch_size(&self, sample_len: usize) -> Result<usize> {
        let noise = self.noise.as_ref().map_or(0, |n| n.len() / sample_len.max(1));
        batch_size(self.batch, &[self.classes.len(), noise])
    }
}

/// A request checked against a model and resolved: what the generation will do.
pub(crate) struct Plan {
    pub(crate) sampler: SamplerKind,
    pub(crate) options: SamplerOptions,
    pub(crate) schedule: Schedule,
    pub(crate) batch: usize,
    pub(crate) guidance: f32,
    pub(crate) rules: GuidanceRules,
    pub(crate) cond: Conditioning,
    /// Guidance's unconditional branch; `None` at scale 1.
    pub(crate) uncond: Option<Conditioning>,
    pub(crate) cache: Option<CacheOptions>,
    /// img2img: the start sample (whole batch) and the index of the level to start from.
    pub(crate) init: Option<(Vec<f32>, usize)>,
    /// Inpainting: known samples and mask, both for the whole batch.
    pub(crate) inpaint: Option<(Vec<f32>, Vec<f32>)>,
}

impl Plan {
    /// Checks `p` against `model`, refusing a generation whose own buffers would need more than
    /// `memory_limit` bytes, and resolves every default.
    pub(crate) fn new(model: &Model, p: &GenerateParams, memory_limit: usize) -> Result<Plan> {
        let batch = p.batch_size(model.sample_len())?;
        // Before anything copies the caller's buffers for every sample.
        check_memory(model, batch, memory_limit)?;
        let (sampler, schedule, eta) = sampling(model, p)?;
        let (guidance, rules) = guidance(model, p)?;
        let cache = p.step_cache.map(check_cache).transpose()?;
        let cond = conditioning(model, p, batch)?;
        let uncond = if guidance == 1.0 { None } else { Some(unconditional(model, &cond, p, guidance, batch)?) };
        check_noise(model, p, batch)?;
        let init = start(model, p, batch, &schedule)?;
        let inpaint = inpaint(model, p, batch)?;
        // A float16 network is run as diffusers runs it, where that arithmetic is defined: not
        // under the step cache or adaptive guidance, which diffusers does not have.
        let float16 =
            model.float16_epsilon() && sampler.has_float16_steps(eta) && cache.is_none() && rules.adaptive.is_none();
        let discrete = matches!(model.noise_schedule(), NoiseSchedule::Discrete(_));
        let options = SamplerOptions {
            eta,
            lcm_boundary: discrete.then(ConsistencyBoundary::default),
            precision: if float16 { Precision::Float16 } else { Precision::Float32 },
        };
        Ok(Plan { sampler, options, schedule, batch, guidance, rules, cond, uncond, cache, init, inpaint })
    }
}

fn invalid<T>(msg: String) -> Result<T> {
    Err(Error::InvalidArgument(msg))
}

fn check_memory(model: &Model, batch: usize, limit: usize) -> Result<()> {
    let needed = generation_bytes(batch.saturating_mul(model.sample_len()));
    if needed <= limit {
        return Ok(());
    }
    let mb = |b: usize| b as f64 / (1 << 20) as f64;
    Err(Error::OutOfMemory(format!(
        "batch {batch} of {} values needs about {:.0} MB of buffers, over the limit of {:.0} MB; \
         lower the batch or raise the limit",
        model.sample_len(),
        mb(needed),
        mb(limit)
    )))
}

/// The sampler a model's `defaults.sampler` names, or an error naming the file and the key.
fn manifest_sampler(model: &Model, name: &str) -> Result<SamplerKind> {
    sampler_by_name(name).map_err(|e| {
        let path = model.dir().join("model.json");
        Error::Manifest(format!("{}: key `defaults.sampler`: {}", path.display(), e.message()))
    })
}

/// The sampler, the schedule it walks, and DDIM's eta.
fn sampling(model: &Model, p: &GenerateParams) -> Result<(SamplerKind, Schedule, f64)> {
    let d = &model.manifest().defaults;
    let sampler = match (p.sampler.as_deref(), d.sampler.as_deref()) {
        (Some(name), _) => sampler_by_name(name)?,
        (None, Some(name)) => manifest_sampler(model, name)?,
        (None, None) => DEFAULT_SAMPLER,
    };
    let eta = limits::eta(p.eta)?;
    // The caller's table, or the model's when the caller asks for no step count of its own.
    let table = p.sigmas.as_ref().or(d.sigmas.as_ref().filter(|_| p.steps.is_none()));
    let schedule = match table {
        Some(sigmas) => Schedule::from_sigmas(model.noise_schedule(), limits::sigma_table(sigmas)?)?,
        None => {
            let steps = limits::steps(p.steps.or(d.steps).unwrap_or(DEFAULT_STEPS) as usize)?;
            sampler.schedule(model.noise_schedule(), steps, p.spacing)?
        }
    };
    Ok((sampler, schedule, eta))
}

/// The guidance scale and the rules it runs under, each within its limits.
fn guidance(model: &Model, p: &GenerateParams) -> Result<(f32, GuidanceRules)> {
    let scale = limits::guidance(p.guidance.or(model.manifest().defaults.guidance).unwrap_or(1.0))?;
    let rules = guidance_rules(model, p);
    if let Some(g) = rules.adaptive {
        limits::adaptive_guidance(g)?;
    }
    if let Some((lo, hi)) = rules.interval {
        limits::guidance_interval(lo, hi)?;
    }
    Ok((scale, rules))
}

/// The guidance rules a generation runs with: the request's, and the model's default interval when
/// the request takes the model's default guidance scale and sets no interval of its own (the
/// interval belongs to that scale; a caller's own scale gets plain guidance unless it asks).
pub fn guidance_rules(model: &Model, p: &GenerateParams) -> GuidanceRules {
    let mut rules = p.guidance_rules;
    if p.guidance.is_none() && rules.interval.is_none() {
        rules.interval = model.manifest().defaults.guidance_interval.map(|[lo, hi]| (lo, hi));
    }
    rules
}

fn check_cache(c: CacheOptions) -> Result<CacheOptions> {
    limits::cache_threshold(c.threshold)?;
    limits::cache_max_skips(c.max_skips)?;
    Ok(c)
}

/// `v` for every sample of a batch: `per` values shared by all, or `batch × per` values, finite.
fn whole_batch(v: &[f32], per: usize, batch: usize, what: &str) -> Result<Vec<f32>> {
    let full = if v.len() == per {
        v.repeat(batch)
    } else if v.len() == batch * per {
        v.to_vec()
    } else {
        return invalid(format!("{what} has {} values, expected {per} or batch {batch} × {per}", v.len()));
    };
    limits::finite(what, &full)?;
    Ok(full)
}

fn check_noise(model: &Model, p: &GenerateParams, batch: usize) -> Result<()> {
    let n = batch * model.sample_len();
    if let Some(v) = &p.noise {
        if v.len() != n {
            return invalid(format!("noise has {} values, expected batch {batch} × {}", v.len(), model.sample_len()));
        }
        limits::finite("noise", v)?;
    }
    if let Some(d) = p.step_noise.iter().flatten().find(|d| d.len() != n && !d.is_empty()) {
        return invalid(format!("step noise has a draw of {} values, expected {n}", d.len()));
    }
    Ok(())
}

/// img2img's start sample for the whole batch and the level it starts from.
fn start(model: &Model, p: &GenerateParams, batch: usize, schedule: &Schedule) -> Result<Option<(Vec<f32>, usize)>> {
    let init = match (&p.init, p.strength) {
        (None, None) => return Ok(None),
        (None, Some(_)) => return invalid("strength needs an initial sample (init)".into()),
        (Some(init), _) => init,
    };
    let strength = limits::strength(p.strength.unwrap_or(DEFAULT_STRENGTH))?;
    let full = whole_batch(init, model.sample_len(), batch, "init")?;
    // diffusers: init_timestep = min(int(steps * strength), steps); start at steps - init_timestep.
    let total = schedule.steps();
    let run = ((total as f64 * strength as f64) as usize).min(total);
    if run == 0 {
        return invalid(format!("strength {strength} with {total} steps leaves no step to run"));
    }
    Ok(Some((full, total - run)))
}

fn inpaint(model: &Model, p: &GenerateParams, batch: usize) -> Result<Option<(Vec<f32>, Vec<f32>)>> {
    let Some(ip) = p.latent.as_ref().and_then(|l| l.inpaint.as_ref()) else { return Ok(None) };
    let len = model.sample_len();
    let mask = whole_batch(&ip.mask, len, batch, "the inpainting mask")?;
    if mask.iter().any(|m| !(0.0..=1.0).contains(m)) {
        return invalid("the inpainting mask must lie in [0, 1]".into());
    }
    Ok(Some((whole_batch(&ip.known, len, batch, "the inpainting known sample")?, mask)))
}

/// The conditional branch: every input the model takes, for every sample.
fn conditioning(model: &Model, p: &GenerateParams, batch: usize) -> Result<Conditioning> {
    let none = LatentInputs::default();
    let latent = p.latent.as_ref().unwrap_or(&none);
    let m = model.manifest();
    let context = match (&m.denoiser.context_input, &latent.context) {
        (None, None) => Vec::new(),
        (None, Some(_)) => return invalid(format!("model `{}` has no context input, but a context was given", m.name)),
        (Some(c), None) => return invalid(format!("model `{}` needs a context for its input `{}`", m.name, c.name)),
        (Some(_), Some(v)) => per_sample_tensors(v, batch, "context")?,
    };
    if latent.uncond_context.is_some() && m.denoiser.context_input.is_none() {
        return invalid(format!("model `{}` has no context input, but an unconditional context was given", m.name));
    }
    let el = model.extra_len();
    let extra = match (&latent.sample_extra, el) {
        (None, 0) => Vec::new(),
        (Some(_), 0) => {
            return invalid(format!("model `{}` takes no extra sample channels, but some were given", m.name))
        }
        (None, _) => {
            let n = m.denoiser.sample_extra_channels;
            return invalid(format!("model `{}` needs its {n} extra sample channels", m.name));
        }
        (Some(v), _) => whole_batch(v, el, batch, "sample_extra")?,
    };
    Ok(Conditioning {
        classes: classes(model, p, batch)?,
        conds: conds(model, p, batch)?,
        context,
        extra,
        tensors: tensors(model, p, batch)?,
    })
}

/// The tensor input `name` of `model`: its per-sample shape and values, or an error naming the
/// inputs it has.
fn tensor_input<'m>(model: &'m Model, name: &str) -> Result<(&'m [usize], usize)> {
    if let Some((_, shape, per)) = model.tensor_inputs().find(|(n, _, _)| *n == name) {
        return Ok((shape, per));
    }
    let names: Vec<&str> = model.tensor_inputs().map(|(n, _, _)| n).collect();
    let known = if names.is_empty() { "none".to_string() } else { names.join(", ") };
    invalid(format!("model `{}` has no tensor input `{name}` (it has: {known})", model.manifest().name))
}

/// Checks a tensor given with a shape (an `.npy` file's) for the input `name`: one sample's shape
/// (one for all samples), or that shape after a leading 1 or `batch`.
pub fn check_tensor_shape(model: &Model, name: &str, shape: &[usize], batch: usize) -> Result<()> {
    let (want, _) = tensor_input(model, name)?;
    let fits =
        shape == want || (shape.len() == want.len() + 1 && shape[1..] == *want && [1, batch].contains(&shape[0]));
    match fits {
        true => Ok(()),
        false => invalid(format!(
            "shape {shape:?} for tensor input `{name}`, which takes {want:?}, [1, ...] or [batch {batch}, ...]"
        )),
    }
}

/// Every tensor input's values for the whole batch, in the model's order; each must be given.
fn tensors(model: &Model, p: &GenerateParams, batch: usize) -> Result<Vec<Vec<f32>>> {
    let m = model.manifest();
    for (name, _) in &p.tensors {
        tensor_input(model, name)?;
    }
    let mut out = Vec::new();
    for (name, shape, per) in model.tensor_inputs() {
        let given: Vec<&Vec<f32>> = p.tensors.iter().filter(|(n, _)| n == name).map(|(_, v)| v).collect();
        let v = match given.as_slice() {
            [v] => v,
            [] => return invalid(format!("model `{}` needs its tensor input `{name}` {shape:?}", m.name)),
            _ => return invalid(format!("tensor input `{name}` given twice")),
        };
        if v.len() != per && v.len() != batch * per {
            return invalid(format!(
                "tensor input `{name}` has {} values; its shape {shape:?} needs {per} (one for all samples) or \
                 batch {batch} × {per}",
                v.len()
            ));
        }
        out.push(whole_batch(v, per, batch, &format!("tensor input `{name}`"))?);
    }
    Ok(out)
}

/// `batch` tensors one after another, as a context is given.
fn per_sample_tensors(v: &[f32], batch: usize, what: &str) -> Result<Vec<f32>> {
    if v.is_empty() || v.iter().any(|x| !x.is_finite()) {
        return invalid(format!("the {what} is empty or not finite"));
    }
    if !v.len().is_multiple_of(batch) {
        return invalid(format!("the {what} has {} values, not one tensor per sample of a batch of {batch}", v.len()));
    }
    Ok(v.to_vec())
}

fn classes(model: &Model, p: &GenerateParams, batch: usize) -> Result<Vec<i64>> {
    let m = model.manifest();
    let Some(ci) = &m.denoiser.class_input else {
        if !p.classes.is_empty() {
            return invalid(format!("model `{}` has no class input, but classes were given", m.name));
        }
        return Ok(Vec::new());
    };
    let labels: Vec<i64> = match p.classes.len() {
        0 => match ci.null_class {
            Some(n) => vec![n; batch],
            None => {
                return invalid(format!(
                    "model `{}` needs a class (0..{}) and has no null class",
                    m.name, ci.num_classes
                ))
            }
        },
        1 => vec![p.classes[0]; batch],
        k if k == batch => p.classes.clone(),
        k => return invalid(format!("{k} classes for a batch of {batch}: give one, or one per sample")),
    };
    if let Some(c) = labels.iter().find(|&&c| !(0..ci.num_classes as i64).contains(&c) && Some(c) != ci.null_class) {
        return invalid(format!("class {c} is out of range 0..{} for model `{}`", ci.num_classes, m.name));
    }
    Ok(labels)
}

/// `batch` values per conditioning input, input-major, the manifest's default where none is given.
fn conds(model: &Model, p: &GenerateParams, batch: usize) -> Result<Vec<f32>> {
    let m = model.manifest();
    if let Some((name, _)) = p.conds.iter().find(|(name, _)| !m.denoiser.cond_inputs.iter().any(|c| &c.name == name)) {
        let known: Vec<&str> = model.cond_names().collect();
        let known = if known.is_empty() { "none".to_string() } else { known.join(", ") };
        return invalid(format!("model `{}` has no conditioning input `{name}` (it has: {known})", m.name));
    }
    let mut conds = Vec::with_capacity(batch * m.denoiser.cond_inputs.len());
    for c in &m.denoiser.cond_inputs {
        let given: Vec<&[f32]> = p.conds.iter().filter(|(n, _)| *n == c.name).map(|(_, v)| v.as_slice()).collect();
        match given.as_slice() {
            [] => conds.extend(std::iter::repeat_n(c.default, batch)),
            [[v]] => conds.extend(std::iter::repeat_n(*v, batch)),
            [v] if v.len() == batch => conds.extend_from_slice(v),
            [v] => return invalid(format!("conditioning `{}` has {} values for a batch of {batch}", c.name, v.len())),
            _ => return invalid(format!("conditioning `{}` given twice", c.name)),
        }
    }
    if let Some(v) = conds.iter().find(|v| !v.is_finite()) {
        return invalid(format!("conditioning value {v} is not finite"));
    }
    Ok(conds)
}

/// Guidance's unconditional branch: the null class and the unconditional context in place of the
/// conditional ones, everything else as in `cond`.
fn unconditional(
    model: &Model,
    cond: &Conditioning,
    p: &GenerateParams,
    scale: f32,
    batch: usize,
) -> Result<Conditioning> {
    let m = model.manifest();
    let d = &m.denoiser;
    let no_uncond = |what: &str| {
        invalid(format!(
            "guidance {scale} needs an unconditional prediction, but model `{}` has {what}; use guidance 1",
            m.name
        ))
    };
    let classes = match (&d.class_input, m.null_class()) {
        (Some(_), Some(null)) => vec![null; cond.classes.len()],
        (Some(_), None) => return no_uncond("no null class (denoiser.class_input.null_class)"),
        (None, _) if d.context_input.is_none() && d.tensor_inputs.is_empty() => {
            return no_uncond("no null class (no class input), no context input and no tensor input")
        }
        (None, _) => Vec::new(),
    };
    let context = match &d.context_input {
        None => Vec::new(),
        Some(_) => {
            let given = p.latent.as_ref().and_then(|l| l.uncond_context.as_deref());
            let v = given.map(|v| per_sample_tensors(v, batch, "unconditional context"));
            let v = v.transpose()?.unwrap_or_default();
            if v.len() != cond.context.len() {
                return invalid(format!(
                    "guidance needs an unconditional context as large as the context ({} values), got {}",
                    cond.context.len(),
                    v.len()
                ));
            }
            v
        }
    };
    let mut tensors = Vec::with_capacity(d.tensor_inputs.len());
    for (t, given) in d.tensor_inputs.iter().zip(&cond.tensors) {
        let Some(null) = t.null else {
            return no_uncond(&format!("no null for its tensor input `{}` (denoiser.tensor_inputs.null)", t.name));
        };
        tensors.push(vec![null; given.len()]);
    }
    Ok(Conditioning { classes, context, tensors, ..cond.clone() })
}

/// What a request that sets no sampling option runs on a model: its manifest's `defaults`, and the
/// runtime's own where the manifest is silent.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelDefaults {
    pub sampler: SamplerKind,
    pub steps: u32,
    pub guidance: f32,
    /// `[lo, hi]` in σ/α where the default guidance scale applies.
    pub guidance_interval: Option<[f64; 2]>,
    /// A step table that replaces the schedule (and the step count).
    pub sigmas: Option<Vec<f64>>,
}

/// The defaults of `model`; an unknown default sampler is an error naming it.
pub fn model_defaults(model: &Model) -> Result<ModelDefaults> {
    let d = &model.manifest().defaults;
    Ok(ModelDefaults {
        sampler: d.sampler.as_deref().map(|s| manifest_sampler(model, s)).transpose()?.unwrap_or(DEFAULT_SAMPLER),
        steps: d.steps.unwrap_or(DEFAULT_STEPS),
        guidance: d.guidance.unwrap_or(1.0),
        guidance_interval: d.guidance_interval,
        sigmas: d.sigmas.clone(),
    })
}

impl std::fmt::Display for ModelDefaults {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.sigmas {
            Some(s) => write!(f, "{}, a table of {} noise levels", self.sampler.name(), s.len())?,
            None => write!(f, "{}, {} steps", self.sampler.name(), self.steps)?,
        }
        write!(f, ", guidance {}", self.guidance)?;
        if let Some([lo, hi]) = self.guidance_interval {
            write!(f, " where σ is in [{lo}, {hi}]")?;
        }
        Ok(())
    }
}
