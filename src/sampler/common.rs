//! What every sampler loop shares: argument checks, the checked denoiser call, progress and
//! cancellation, and allocation-free elementwise updates.

use crate::denoiser::{Denoiser, Level};
use crate::error::{Error, Result};
use crate::schedule::validate_levels;

/// Progress/cancel callback: `(completed_steps, total_steps) -> keep_going`.
pub type Progress<'a> = &'a mut dyn FnMut(usize, usize) -> bool;

/// Refuses a run whose levels, sample length or initial values a sampler cannot start from.
pub fn check_run(den: &dyn Denoiser, levels: &[Level], x: &[f32]) -> Result<()> {
    validate_levels(levels)?;
    if x.len() != den.len() {
        return Err(Error::InvalidArgument(format!(
            "sample has {} values but the denoiser takes {}",
            x.len(),
            den.len()
        )));
    }
    if x.iter().any(|v| !v.is_finite()) {
        return Err(Error::InvalidArgument("initial sample contains NaN or infinity".into()));
    }
    Ok(())
}

/// Calls the denoiser and refuses a non-finite prediction, so a broken model stops the run with the
/// step at fault instead of propagating NaN into the output.
pub(super) fn denoise(den: &mut dyn Denoiser, x: &[f32], level: &Level, step: usize, x0: &mut [f32]) -> Result<()> {
    den.denoise(x, level, step, x0)?;
    if x0.iter().any(|v| !v.is_finite()) {
        return Err(Error::NonFinite { step });
    }
    Ok(())
}

/// Reports that step `step` (0-based) finished; a `false` from the callback cancels the run.
pub(super) fn finished(progress: &mut dyn FnMut(usize, usize) -> bool, step: usize, total: usize) -> Result<()> {
    if progress(step + 1, total) {
        Ok(())
    } else {
        Err(Error::Cancelled { step: step + 1 })
    }
}

/// `x = a * x + b * y`, computed in f64.
pub(super) fn axpby(x: &mut [f32], a: f64, b: f64, y: &[f32]) {
    for (x, &y) in x.iter_mut().zip(y) {
        *x = (a * *x as f64 + b * y as f64) as f32;
    }
}

/// `x = a * x + b * y + c * z`, computed in f64.
pub(super) fn axpbypcz(x: &mut [f32], a: f64, b: f64, y: &[f32], c: f64, z: &[f32]) {
    for ((x, &y), &z) in x.iter_mut().zip(y).zip(z) {
        *x = (a * *x as f64 + b * y as f64 + c * z as f64) as f32;
    }
}
