//! Text to image driven by the caller, one sampling step per call, as a UI drives it: a preview
//! between steps, a progress callback per session, and a cancel that any thread may ask for.
//! The same code as [`StableDiffusion::generate_with`], so both give the same images, bit for bit.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use super::pipeline::Prepared;
use super::{Images, StableDiffusion, TextToImage};
use crate::error::{Error, Result};
use crate::pipeline::Session;

/// One text-to-image generation at a time over a shared export.
pub struct SdSession {
    sd: Arc<StableDiffusion>,
    cancel: Arc<AtomicBool>,
    run: Option<Run>,
}

/// A generation between steps: its prepared request and the UNet's sampling session.
struct Run {
    prepared: Prepared,
    session: Session,
}

impl SdSession {
    pub fn new(sd: Arc<StableDiffusion>) -> SdSession {
        SdSession { sd, cancel: Arc::new(AtomicBool::new(false)), run: None }
    }

    pub fn export(&self) -> &Arc<StableDiffusion> {
        &self.sd
    }

    /// A flag that cancels this session's generation when set, from any thread: the step in flight
    /// ends, the next one is not taken (`Error::Cancelled`). Cleared when a generation begins.
    pub fn cancel_flag(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.cancel)
    }

    /// Runs a whole request; `progress(done, total)` after every step, `false` cancels.
    pub fn generate(&mut self, req: &TextToImage, progress: &mut dyn FnMut(usize, usize) -> bool) -> Result<Images> {
        let total = self.begin(req)?;
        for _ in 0..total {
            let done = self.step()?;
            if self.cancel.load(Ordering::SeqCst) || !progress(done, total) {
                self.run = None;
                return Err(Error::Cancelled { step: done });
            }
        }
        self.finish()
    }

    /// Encodes the prompts and the start, loads the UNet and draws the initial latents; returns
    /// the number of steps. A generation already in progress is dropped.
    pub fn begin(&mut self, req: &TextToImage) -> Result<usize> {
        self.run = None;
        self.cancel.store(false, Ordering::SeqCst);
        let prepared = self.sd.prepare(req)?;
        let mut session = Session::new(&prepared.model)?;
        let total = session.begin(&prepared.params)?;
        if self.cancel.load(Ordering::SeqCst) {
            return Err(Error::Cancelled { step: 0 });
        }
        self.run = Some(Run { prepared, session });
        Ok(total)
    }

    /// Takes the next sampling step; returns the steps done. A cancel asked for, or a failing
    /// step, ends the generation with that error.
    pub fn step(&mut self) -> Result<usize> {
        let run = self.run.as_mut().ok_or_else(none)?;
        if self.cancel.load(Ordering::SeqCst) {
            let step = run.session.progress().map_or(0, |(done, _)| done);
            self.run = None;
            return Err(Error::Cancelled { step });
        }
        let done = run.session.step();
        // A failed step ends the UNet's run (a step past the last does not); this one ends with it.
        if run.session.progress().is_none() {
            self.run = None;
        }
        done
    }

    /// `(steps done, steps in all)` of the generation in progress.
    pub fn progress(&self) -> Option<(usize, usize)> {
        self.run.as_ref().and_then(|r| r.session.progress())
    }

    /// Images the generation in progress makes, and pixels per side `(width, height)`.
    pub fn image_size(&self) -> Option<(usize, (usize, usize))> {
        let f = self.sd.vae_factor();
        self.run.as_ref().map(|r| (r.prepared.batch, (r.prepared.shape[2] * f, r.prepared.shape[1] * f)))
    }

    /// The latents as they stand, `batch × channels × h × w` (noisy until the last step; unscaled,
    /// as the UNet samples them).
    pub fn current_latents(&self) -> Option<&[f32]> {
        self.run.as_ref().and_then(|r| r.session.current_sample())
    }

    /// The clean latents the last step predicted; `None` before the first step.
    pub fn current_prediction(&self) -> Option<&[f32]> {
        self.run.as_ref().and_then(|r| r.session.current_prediction())
    }

    /// The last step's prediction decoded by the VAE, as the result's pixels are (`batch × height ×
    /// width × 3` values in [0, 1]): a preview that costs one VAE decode.
    pub fn preview(&self) -> Result<Vec<f32>> {
        let run = self.run.as_ref().ok_or_else(none)?;
        let latents = run
            .session
            .current_prediction()
            .ok_or_else(|| Error::InvalidArgument("no prediction before the first step".into()))?;
        self.sd.decode_prepared(&run.prepared, latents)
    }

    /// Ends the generation whose steps are all done and decodes its images. Before the last
    /// step it is an error and the generation stays in progress.
    pub fn finish(&mut self) -> Result<Images> {
        let run = self.run.as_mut().ok_or_else(none)?;
        let gen = run.session.finish()?;
        let Some(Run { prepared, session }) = self.run.take() else { return Err(none()) };
        // The UNet is freed before the decoder loads (what low-memory mode is for).
        drop(session);
        self.sd.decoded(prepared, gen)
    }

    /// Drops the generation in progress, if any.
    pub fn abandon(&mut self) {
        self.run = None;
    }
}

fn none() -> Error {
    Error::InvalidArgument("no generation in progress: begin one first".into())
}
