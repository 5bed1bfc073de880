//! One generation, end to end: seed → initial noise → sampler loop over the guided network → final
//! sample. A [`Session`] owns the per-generation state (backend runner, scratch) of one shared [`Model`].

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::cache::{CacheOptions, StepCache};
use crate::error::{Error, Result};
use crate::guidance::{Conditioning, Guidance, GuidanceRules};
use crate::model::{Model, Network};
use crate::rng::{PhiloxNoise, RecordedNoise};
use crate::sampler::{check_run, sampler_by_name, Denoiser, Level, NoiseSource, SamplerKind, SamplerOptions, Stepper};
use crate::schedule::{Schedule, SigmaSpacing};

/// Everything one generation needs besides the model. `Default` + the model's defaults give a
/// sensible run; every field is checked before any work starts.
#[derive(Clone, Debug, Default)]
pub struct GenerateParams {
    /// Sampler name (`None` = the model's default, else `dpmpp-2m`).
    pub sampler: Option<String>,
    pub spacing: SigmaSpacing,
    /// A custom sigma table (model convention, last entry included), replacing the schedule.
    pub sigmas: Option<Vec<f64>>,
    pub steps: Option<u32>,
    pub guidance: Option<f32>,
    /// When guidance runs: adaptive guidance and a guidance interval (both off by default).
    pub guidance_rules: GuidanceRules,
    /// Output-level step caching (off by default).
    pub step_cache: Option<CacheOptions>,
    /// DDIM's eta.
    pub eta: f64,
    pub batch: usize,
    pub seed: u64,
    /// One label for all samples, or one per sample; empty = the null class / no class input.
    pub classes: Vec<i64>,
    /// Conditioning values by input name: one value for all samples or one per sample.
    pub conds: Vec<(String, Vec<f32>)>,
    /// For a model with a context input: one context tensor per sample, one after another
    /// (`[tokens, width]` each, e.g. prompt embeddings), and the unconditional branch's, shaped
    /// alike, for guidance (e.g. negative-prompt embeddings).
    pub context: Option<Vec<f32>>,
    pub uncond_context: Option<Vec<f32>>,
    /// Initial unit noise `[batch, *sample_shape]` instead of the seeded one.
    pub noise: Option<Vec<f32>>,
    /// Per-step noise for stochastic samplers, indexed by step, instead of the seeded one.
    pub step_noise: Option<Vec<Vec<f32>>>,
    /// img2img: a starting sample `[batch, *sample_shape]` (or one sample for all) and how much of the
    /// schedule to run on it (1 = all of it, i.e. ignore the image).
    pub init: Option<Vec<f32>>,
    pub strength: Option<f32>,
    /// Inpainting by blending: after every step the sample keeps `known` where `mask` is 0.
    pub inpaint: Option<Inpaint>,
    /// For a model whose sample input takes extra channels (`denoiser.sample_extra_channels`):
    /// their values, appended to every call's sample, one block for all samples or one per sample.
    pub sample_extra: Option<Vec<f32>>,
}

/// What inpainting keeps: after each step, `x = mask·x + (1 − mask)·known_t`, where `known_t` is
/// `known` noised to the level the step reached with the generation's initial noise, and `known`
/// itself after the last step (diffusers' latent blending for ordinary UNets).
#[derive(Clone, Debug, Default)]
pub struct Inpaint {
    /// Clean samples, `batch × sample_len` (or one for all).
    pub known: Vec<f32>,
    /// Per value, 1 = generate, 0 = keep; `batch × sample_len` (or one for all).
    pub mask: Vec<f32>,
}

/// What a generation produced, with the counts a benchmark needs.
#[derive(Clone, Debug)]
pub struct Generation {
    /// `batch × sample_len` values, the final sample in the model's value range.
    pub samples: Vec<f32>,
    pub sampler: SamplerKind,
    pub steps: usize,
    /// Network forward passes per sample (conditional and unconditional counted separately).
    pub nfe: usize,
    /// The guidance scale applied (1 = conditional pass only).
    pub guidance: f32,
    /// Time spent inside the backend's run calls (the rest of the generation is the runtime's own).
    pub backend_time: Duration,
}

/// The most samples one generation may hold; larger requests are refused up front.
pub const MAX_BATCH: usize = 4096;
pub const MAX_STEPS: u32 = 10_000;

/// One generation at a time over a shared model.
///
/// A generation runs either whole ([`Session::generate`]) or driven by the caller, one step per call
/// ([`Session::begin`], [`Session::step`], [`Session::finish`]), which is how an app shows previews
/// between steps. Both paths run the same code and give the same samples, bit for bit.
pub struct Session {
    net: Network,
    cancel: Arc<AtomicBool>,
    run: Option<Run>,
    memory_limit: usize,
}

/// The default cap on a generation's own buffers (see [`Session::set_memory_limit`]).
pub const DEFAULT_MEMORY_LIMIT: usize = 2 << 30;

/// Sample-sized float buffers a generation may hold at once: the sample, its initial noise, the
/// caller's noise or start image, up to three sampler scratch buffers, guidance's doubled input and
/// output (four), the network adapters' converted copy, and the result handed back.
const BUFFERS_PER_SAMPLE: usize = 12;

/// Bytes of the runtime's own buffers for a generation of `n` sample values (not the backend's
/// activations, which only the backend knows).
pub fn generation_bytes(n: usize) -> usize {
    n.saturating_mul(BUFFERS_PER_SAMPLE * std::mem::size_of::<f32>())
}

/// The state of a generation between steps.
struct Run {
    sampler: SamplerKind,
    /// The levels still to walk (img2img drops the first ones).
    levels: Vec<Level>,
    x: Vec<f32>,
    stepper: Box<dyn Stepper>,
    noise: StepNoise,
    guidance: Guidance,
    cache: Option<StepCache>,
    /// Inpainting: known samples, mask (both batch-sized) and the initial unit noise.
    inpaint: Option<(Vec<f32>, Vec<f32>, Vec<f32>)>,
    done: usize,
}

impl Run {
    /// Inpainting's blend after step `done` (counted from 1).
    fn blend(&mut self) {
        let Some((known, mask, unit)) = &self.inpaint else { return };
        let last = self.done == self.total();
        let l = self.levels[self.done];
        let (a, s) = (l.alpha as f32, l.sigma as f32);
        for (((x, &k), &m), &z) in self.x.iter_mut().zip(known).zip(mask).zip(unit) {
            let kept = if last { k } else { a * k + s * z };
            *x = m * *x + (1.0 - m) * kept;
        }
    }

    fn total(&self) -> usize {
        self.levels.len() - 1
    }
}

enum StepNoise {
    Seeded(PhiloxNoise),
    Recorded(RecordedNoise),
}

impl NoiseSource for StepNoise {
    fn fill(&mut self, step: usize, out: &mut [f32]) -> Result<()> {
        match self {
            StepNoise::Seeded(n) => n.fill(step, out),
            StepNoise::Recorded(n) => n.fill(step, out),
        }
    }
}

impl Session {
    pub fn new(model: &Arc<Model>) -> Result<Session> {
        Ok(Session {
            net: model.network()?,
            cancel: Arc::new(AtomicBool::new(false)),
            run: None,
            memory_limit: DEFAULT_MEMORY_LIMIT,
        })
    }

    pub fn model(&self) -> &Arc<Model> {
        self.net.model()
    }

    /// Caps the buffers a generation may need ([`generation_bytes`]): larger requests are refused
    /// up front with [`Error::OutOfMemory`] instead of being attempted. `usize::MAX` lifts the cap.
    pub fn set_memory_limit(&mut self, bytes: usize) {
        self.memory_limit = bytes;
    }

    /// Records the inputs of every network call of later generations into `dump` (calibration
    /// data for quantization); `None` stops recording.
    pub fn set_dump(&mut self, dump: Option<crate::dump::InputDump>) {
        self.net.set_dump(dump);
    }

    /// A flag that cancels the running generation when set (safe from any thread); cleared when a
    /// generation begins.
    pub fn cancel_flag(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.cancel)
    }

    /// Runs one generation; `progress(done, total)` after every step, `false` cancels.
    pub fn generate(
        &mut self,
        p: &GenerateParams,
        progress: &mut dyn FnMut(usize, usize) -> bool,
    ) -> Result<Generation> {
        let total = self.begin(p)?;
        for _ in 0..total {
            let done = self.step()?;
            if self.cancel.load(Ordering::SeqCst) || !progress(done, total) {
                self.run = None;
                return Err(Error::Cancelled { step: done });
            }
        }
        self.finish()
    }

    /// Checks `p`, draws the initial sample and makes the generation ready to step; returns the
    /// number of steps. A generation already in progress is dropped.
    pub fn begin(&mut self, p: &GenerateParams) -> Result<usize> {
        self.run = None;
        self.cancel.store(false, Ordering::SeqCst);
        self.net.take_backend_time();
        let model = Arc::clone(self.net.model());
        // Before planning, which already copies the caller's start image for every sample.
        let needed = generation_bytes(p.batch.saturating_mul(model.sample_len()));
        if (1..=MAX_BATCH).contains(&p.batch) && needed > self.memory_limit {
            let mb = |b: usize| b as f64 / (1 << 20) as f64;
            return Err(Error::OutOfMemory(format!(
                "batch {} of {} values needs about {:.0} MB of buffers, over the limit of {:.0} MB; \
                 lower the batch or raise the limit",
                p.batch,
                model.sample_len(),
                mb(needed),
                mb(self.memory_limit)
            )));
        }
        let plan = Plan::new(&model, p)?;
        let n = plan.batch * model.sample_len();

        let mut unit = vec![0f32; n];
        match &p.noise {
            Some(v) => unit.copy_from_slice(v),
            None => PhiloxNoise::new(p.seed).initial(&mut unit),
        }
        let levels = plan.schedule.levels();
        let (levels, x) = match &plan.init {
            None => {
                let mut x = vec![0f32; n];
                plan.schedule.initial_sample(&unit, &mut x)?;
                (levels, x)
            }
            Some((init, start)) => {
                // diffusers' img2img: skip the first steps, then noise the image to the level it starts at.
                let l = levels[*start];
                let x =
                    init.iter().zip(&unit).map(|(&i, &z)| (l.alpha * i as f64 + l.sigma * z as f64) as f32).collect();
                (&levels[*start..], x)
            }
        };
        let noise = match &p.step_noise {
            Some(draws) => StepNoise::Recorded(RecordedNoise::new(draws.clone())),
            None => StepNoise::Seeded(PhiloxNoise::new(p.seed)),
        };
        let mut guidance = Guidance::new(&model, plan.batch, plan.guidance, plan.cond, plan.rules)?;
        self.net.reserve(2 * plan.batch);
        check_run(&guidance.over(&mut self.net), levels, &x)?;
        let stepper = plan.sampler.stepper(levels, n, &plan.options)?;
        let cache = p.step_cache.map(|opts| StepCache::new(opts, n)).transpose()?;
        let inpaint = plan.inpaint.map(|(known, mask)| (known, mask, unit));
        let run = Run {
            sampler: plan.sampler,
            levels: levels.to_vec(),
            x,
            stepper,
            noise,
            guidance,
            cache,
            inpaint,
            done: 0,
        };
        let total = run.total();
        self.run = Some(run);
        Ok(total)
    }

    /// Takes the next step of the generation begun with [`Session::begin`]; returns the number of
    /// steps done. A set cancel flag or a failing step ends the generation with that error.
    pub fn step(&mut self) -> Result<usize> {
        let Some(run) = self.run.as_mut() else {
            return Err(Error::InvalidArgument("no generation in progress: begin one first".into()));
        };
        if run.done == run.total() {
            return Err(Error::InvalidArgument(format!("all {} steps are done: finish the generation", run.done)));
        }
        if self.cancel.load(Ordering::SeqCst) {
            let step = run.done;
            self.run = None;
            return Err(Error::Cancelled { step });
        }
        let mut guided = run.guidance.over(&mut self.net);
        let mut cached;
        let den: &mut dyn Denoiser = match &mut run.cache {
            Some(cache) => {
                cached = cache.over(&mut guided);
                &mut cached
            }
            None => &mut guided,
        };
        match run.stepper.step(den, &run.levels, run.done, &mut run.x, &mut run.noise) {
            Ok(()) => {
                run.done += 1;
                run.blend();
                Ok(run.done)
            }
            Err(e) => {
                self.run = None;
                Err(e)
            }
        }
    }

    /// `(steps done, steps in all)` of the generation in progress.
    pub fn progress(&self) -> Option<(usize, usize)> {
        self.run.as_ref().map(|r| (r.done, r.total()))
    }

    /// The current sample of the generation in progress, `batch × sample_len` values in the model's
    /// native scaling (noisy until the last step).
    pub fn current_sample(&self) -> Option<&[f32]> {
        self.run.as_ref().map(|r| r.x.as_slice())
    }

    /// The clean-sample prediction the last step was based on (a preview of the result); `None`
    /// before the first step.
    pub fn current_prediction(&self) -> Option<&[f32]> {
        self.run.as_ref().filter(|r| r.done > 0).map(|r| r.stepper.denoised())
    }

    /// Ends the generation whose steps are all done and hands over its result.
    pub fn finish(&mut self) -> Result<Generation> {
        match self.run.take() {
            None => Err(Error::InvalidArgument("no generation in progress: begin one first".into())),
            Some(run) if run.done < run.total() => {
                let msg = format!(
                    "{} of {} steps are done: step to the end, or abandon the generation",
                    run.done,
                    run.total()
                );
                self.run = Some(run);
                Err(Error::InvalidArgument(msg))
            }
            Some(run) => {
                let steps = run.total();
                let backend_time = self.net.take_backend_time();
                Ok(Generation {
                    samples: run.x,
                    sampler: run.sampler,
                    steps,
                    nfe: run.guidance.evaluations,
                    guidance: run.guidance.scale(),
                    backend_time,
                })
            }
        }
    }

    /// Drops the generation in progress, if any.
    pub fn abandon(&mut self) {
        self.run = None;
    }
}

/// The checked, resolved form of [`GenerateParams`] for one model.
struct Plan {
    sampler: SamplerKind,
    options: SamplerOptions,
    schedule: Schedule,
    batch: usize,
    guidance: f32,
    rules: GuidanceRules,
    cond: Conditioning,
    /// img2img: the start sample (whole batch) and the index of the level to start from.
    init: Option<(Vec<f32>, usize)>,
    /// Inpainting: known samples and mask, both for the whole batch.
    inpaint: Option<(Vec<f32>, Vec<f32>)>,
}

impl Plan {
    fn new(model: &Model, p: &GenerateParams) -> Result<Plan> {
        let m = model.manifest();
        let arg = |msg: String| Err(Error::InvalidArgument(msg));
        let batch = p.batch;
        if batch == 0 || batch > MAX_BATCH {
            return arg(format!("batch must be between 1 and {MAX_BATCH}, got {batch}"));
        }
        let len = model.sample_len();
        let default_sampler = m.defaults.sampler.as_deref().unwrap_or("dpmpp-2m");
        let sampler = sampler_by_name(p.sampler.as_deref().unwrap_or(default_sampler))?;
        let steps = p.steps.or(m.defaults.steps).unwrap_or(20);
        if steps == 0 || steps > MAX_STEPS {
            return arg(format!("steps must be between 1 and {MAX_STEPS}, got {steps}"));
        }
        let guidance = p.guidance.or(m.defaults.guidance).unwrap_or(1.0);
        if !(0.0..=100.0).contains(&guidance) {
            return arg(format!("guidance must be a finite number in [0, 100], got {guidance}"));
        }
        if !(p.eta.is_finite() && (0.0..=1.0).contains(&p.eta)) {
            return arg(format!("eta must be in [0, 1], got {}", p.eta));
        }
        let mut options = SamplerOptions { eta: p.eta, ..SamplerOptions::default() };
        let discrete = matches!(model.noise_schedule(), crate::schedule::NoiseSchedule::Discrete(_));
        if !discrete {
            options.lcm_boundary = None;
        }
        let sigmas = p.sigmas.as_ref().or(m.defaults.sigmas.as_ref());
        let schedule = match sigmas {
            Some(s) if p.steps.is_none() || p.sigmas.is_some() => Schedule::from_sigmas(model.noise_schedule(), s)?,
            _ => sampler.schedule(model.noise_schedule(), steps as usize, p.spacing)?,
        };

        let cond = conditioning(model, p, batch)?;
        for (what, v) in [("noise", &p.noise)] {
            if let Some(v) = v {
                if v.len() != batch * len {
                    return arg(format!("{what} has {} values, expected batch {batch} × {len}", v.len()));
                }
                if v.iter().any(|x| !x.is_finite()) {
                    return arg(format!("{what} contains NaN or infinity"));
                }
            }
        }
        if let Some(draws) = &p.step_noise {
            if let Some(d) = draws.iter().find(|d| d.len() != batch * len && !d.is_empty()) {
                return arg(format!("step noise has a draw of {} values, expected {}", d.len(), batch * len));
            }
        }
        let init = match (&p.init, p.strength) {
            (None, None) => None,
            (None, Some(_)) => return arg("strength needs an initial sample (init)".into()),
            (Some(init), strength) => {
                let strength = strength.unwrap_or(0.8);
                if !(strength > 0.0 && strength <= 1.0) {
                    return arg(format!("strength must be in (0, 1], got {strength}"));
                }
                let full = whole_batch(init, len, batch, "init")?;
                // diffusers: init_timestep = min(int(steps * strength), steps); start at steps - init_timestep.
                let total = schedule.steps();
                let run = ((total as f64 * strength as f64) as usize).min(total);
                if run == 0 {
                    return arg(format!("strength {strength} with {total} steps leaves no step to run"));
                }
                Some((full, total - run))
            }
        };
        let rules = guidance_rules(model, p);
        // A float16 network is run as diffusers runs it, where that arithmetic is defined: not
        // under the step cache or adaptive guidance, which diffusers does not have.
        options.half = model.half_output()
            && discrete
            && m.denoiser.prediction == crate::manifest::Prediction::Epsilon
            && p.step_cache.is_none()
            && rules.adaptive.is_none();
        let inpaint = match &p.inpaint {
            None => None,
            Some(ip) => {
                let mask = whole_batch(&ip.mask, len, batch, "the inpainting mask")?;
                if mask.iter().any(|m| !(0.0..=1.0).contains(m)) {
                    return arg("the inpainting mask must lie in [0, 1]".into());
                }
                Some((whole_batch(&ip.known, len, batch, "the inpainting known sample")?, mask))
            }
        };
        Ok(Plan { sampler, options, schedule, batch, guidance, rules, cond, init, inpaint })
    }
}

/// `v` for every sample of a batch: `per` values shared by all, or `batch × per` values, finite.
fn whole_batch(v: &[f32], per: usize, batch: usize, what: &str) -> Result<Vec<f32>> {
    let full = if v.len() == per {
        v.repeat(batch)
    } else if v.len() == batch * per {
        v.to_vec()
    } else {
        return Err(Error::InvalidArgument(format!(
            "{what} has {} values, expected {per} or batch {batch} × {per}",
            v.len()
        )));
    };
    if full.iter().any(|x| !x.is_finite()) {
        return Err(Error::InvalidArgument(format!("{what} contains NaN or infinity")));
    }
    Ok(full)
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

fn conditioning(model: &Model, p: &GenerateParams, batch: usize) -> Result<Conditioning> {
    let m = model.manifest();
    let arg = |msg: String| Err(Error::InvalidArgument(msg));
    let classes = match &m.denoiser.class_input {
        None => {
            if !p.classes.is_empty() {
                return arg(format!("model `{}` has no class input, but classes were given", m.name));
            }
            Vec::new()
        }
        Some(ci) => {
            let labels: Vec<i64> = match p.classes.len() {
                0 => match ci.null_class {
                    Some(n) => vec![n; batch],
                    None => {
                        return arg(format!(
                            "model `{}` needs a class (0..{}) and has no null class",
                            m.name, ci.num_classes
                        ))
                    }
                },
                1 => vec![p.classes[0]; batch],
                k if k == batch => p.classes.clone(),
                k => return arg(format!("{k} classes for a batch of {batch}: give one, or one per sample")),
            };
            for &c in &labels {
                let ok = (0..ci.num_classes as i64).contains(&c) || Some(c) == ci.null_class;
                if !ok {
                    return arg(format!("class {c} is out of range 0..{} for model `{}`", ci.num_classes, m.name));
                }
            }
            labels
        }
    };
    let mut conds = Vec::with_capacity(batch * m.denoiser.cond_inputs.len());
    for (name, _) in &p.conds {
        if !m.denoiser.cond_inputs.iter().any(|c| &c.name == name) {
            let known: Vec<&str> = model.cond_names().collect();
            return arg(format!(
                "model `{}` has no conditioning input `{name}` (it has: {})",
                m.name,
                if known.is_empty() { "none".to_string() } else { known.join(", ") }
            ));
        }
    }
    for c in &m.denoiser.cond_inputs {
        let given = p.conds.iter().filter(|(n, _)| *n == c.name).collect::<Vec<_>>();
        if given.len() > 1 {
            return arg(format!("conditioning `{}` given twice", c.name));
        }
        match given.first().map(|(_, v)| v.as_slice()) {
            None => conds.extend(std::iter::repeat_n(c.default, batch)),
            Some([v]) => conds.extend(std::iter::repeat_n(*v, batch)),
            Some(v) if v.len() == batch => conds.extend_from_slice(v),
            Some(v) => return arg(format!("conditioning `{}` has {} values for a batch of {batch}", c.name, v.len())),
        }
    }
    if let Some(v) = conds.iter().find(|v| !v.is_finite()) {
        return arg(format!("conditioning value {v} is not finite"));
    }
    let per_sample = |what: &str, v: &Option<Vec<f32>>| -> Result<Vec<f32>> {
        match (&m.denoiser.context_input, v) {
            (None, None) => Ok(Vec::new()),
            (None, Some(_)) => {
                Err(Error::InvalidArgument(format!("model `{}` has no context input, but a {what} was given", m.name)))
            }
            (Some(c), None) if what == "context" => {
                Err(Error::InvalidArgument(format!("model `{}` needs a context for its input `{}`", m.name, c.name)))
            }
            (Some(_), None) => Ok(Vec::new()),
            (Some(_), Some(v)) => {
                if v.is_empty() || v.iter().any(|x| !x.is_finite()) {
                    return Err(Error::InvalidArgument(format!("the {what} is empty or not finite")));
                }
                if v.len() % batch != 0 {
                    return Err(Error::InvalidArgument(format!(
                        "the {what} has {} values, not one tensor per sample of a batch of {batch}",
                        v.len()
                    )));
                }
                Ok(v.clone())
            }
        }
    };
    let context = per_sample("context", &p.context)?;
    let uncond_context = per_sample("unconditional context", &p.uncond_context)?;
    let el = model.extra_len();
    let extra = match (&p.sample_extra, el) {
        (None, 0) => Vec::new(),
        (Some(_), 0) => return arg(format!("model `{}` takes no extra sample channels, but some were given", m.name)),
        (None, _) => {
            return arg(format!(
                "model `{}` needs its {} extra sample channels",
                m.name, m.denoiser.sample_extra_channels
            ))
        }
        (Some(v), _) => whole_batch(v, el, batch, "sample_extra")?,
    };
    Ok(Conditioning { classes, conds, context, uncond_context, extra })
}
