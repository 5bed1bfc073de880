//! A generation request checked against a model, in one place: every entry point (the CLI, the
//! Rust API, the C API, Stable Diffusion exports) goes through here, so each limit exists once and
//! each mistake has one message.

use crate::error::Result;
use crate::model::Model;
use crate::sampler::{sampler_by_name, SamplerKind};

/// The sampler a request gets when neither it nor the model names one.
pub const DEFAULT_SAMPLER: SamplerKind = SamplerKind::DpmPp2m;
/// The step count a request gets when neither it nor the model gives one.
pub const DEFAULT_STEPS: u32 = 20;

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
        sampler: d.sampler.as_deref().map(sampler_by_name).transpose()?.unwrap_or(DEFAULT_SAMPLER),
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
