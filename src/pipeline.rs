//! One generation, end to end: seed → initial noise → sampler loop over the guided network → final
//! sample. A [`Session`] owns the per-generation state (backend runner, scratch) of one shared [`Model`].

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::cache::StepCache;
use crate::denoiser::{Denoiser, Level, NoiseSource};
use crate::dump::InputDump;
use crate::error::{Error, Result};
use crate::guidance::Guidance;
use crate::model::{Model, Network};
use crate::request::{GenerateParams, Plan, DEFAULT_MEMORY_LIMIT};
use crate::rng::{PhiloxNoise, RecordedNoise};
use crate::sampler::{check_run, SamplerKind, Stepper};

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

    /// Caps the buffers a generation may need ([`crate::request::generation_bytes`]): larger requests are refused
    /// up front with [`Error::OutOfMemory`] instead of being attempted. `usize::MAX` lifts the cap.
    pub fn set_memory_limit(&mut self, bytes: usize) {
        self.memory_limit = bytes;
    }

    /// Records the inputs of every network call of later generations into `dump` (calibration
    /// data for quantization); `None` stops recording.
    pub fn set_dump(&mut self, dump: Option<InputDump>) {
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

    /// Checks `p` (`request::Plan::new`), draws the initial sample and makes the generation ready to step;
    /// returns the number of steps. A generation already in progress is dropped.
    pub fn begin(&mut self, p: &GenerateParams) -> Result<usize> {
        self.run = None;
        self.cancel.store(false, Ordering::SeqCst);
        self.net.take_backend_time();
        let model = Arc::clone(self.net.model());
        let plan = Plan::new(&model, p, self.memory_limit)?;
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
        let o = &plan.options;
        let mut guidance = Guidance::new(
            plan.batch,
            model.sample_len(),
            plan.guidance,
            plan.rules,
            o.precision,
            plan.cond,
            plan.uncond,
        );
        self.net.reserve(2 * plan.batch);
        check_run(&guidance.over(&mut self.net), levels, &x)?;
        let stepper = plan.sampler.stepper(levels, n, o)?;
        let cache = plan.cache.map(|opts| StepCache::new(opts, n));
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
        // The arena the steps grew goes back to the system with the last one, not kept while the
        // session waits (or a Stable Diffusion export decodes the result).
        self.net.release_after_calls(run.done + 1 == run.total());
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
