//! Every limit a generation request is held to, each checked by one function with one message.
//! The request check (`crate::request`) applies them to whatever entry point a request came
//! through (the CLI, Rust, C, a Stable Diffusion export), and the manifest applies the same ones to
//! its `defaults`, which are a request too.

use crate::error::{Error, Result};

/// The most samples one generation may hold.
pub const MAX_BATCH: usize = 4096;
/// The most sampler steps (and, plus one, the most entries of a step table).
pub const MAX_STEPS: usize = 10_000;
/// The largest classifier-free guidance scale.
pub const MAX_GUIDANCE: f32 = 100.0;
/// The most train timesteps of a schedule: far above any real model, low enough that a typo in a
/// manifest is an error rather than a multi-gigabyte table.
pub const MAX_TRAIN_TIMESTEPS: usize = 100_000;
/// The most pixels per image side (a 4096 × 4096 image).
pub const MAX_IMAGE_SIDE: usize = 4096;
/// The most tensor inputs one request may name (a C caller's count is checked before it is read).
pub const MAX_TENSOR_INPUTS: usize = 64;
/// The most values one tensor input may be given (1 GiB of floats), as for a sample.
pub const MAX_TENSOR_VALUES: usize = 1 << 28;

fn invalid<T>(msg: String) -> Result<T> {
    Err(Error::InvalidArgument(msg))
}

pub fn batch(n: usize) -> Result<usize> {
    match n {
        1..=MAX_BATCH => Ok(n),
        _ => invalid(format!("batch must be between 1 and {MAX_BATCH}, got {n}")),
    }
}

pub fn steps(n: usize) -> Result<usize> {
    match n {
        1..=MAX_STEPS => Ok(n),
        _ => invalid(format!("steps must be between 1 and {MAX_STEPS}, got {n}")),
    }
}

pub fn guidance(g: f32) -> Result<f32> {
    match (0.0..=MAX_GUIDANCE).contains(&g) {
        true => Ok(g),
        false => invalid(format!("guidance must be a finite number in [0, {MAX_GUIDANCE}], got {g}")),
    }
}

/// DDIM's eta: 0 is deterministic, 1 is DDPM's variance.
pub fn eta(e: f64) -> Result<f64> {
    match (0.0..=1.0).contains(&e) {
        true => Ok(e),
        false => invalid(format!("eta must be in [0, 1], got {e}")),
    }
}

/// img2img's share of the schedule run on the start sample.
pub fn strength(s: f32) -> Result<f32> {
    match s > 0.0 && s <= 1.0 {
        true => Ok(s),
        false => invalid(format!("strength must be in (0, 1], got {s}")),
    }
}

/// Adaptive guidance's threshold on the cosine similarity.
pub fn adaptive_guidance(g: f32) -> Result<f32> {
    match g > 0.0 && g <= 1.0 {
        true => Ok(g),
        false => invalid(format!("adaptive guidance threshold must be in (0, 1], got {g}")),
    }
}

/// A guidance interval in σ/α.
pub fn guidance_interval(lo: f64, hi: f64) -> Result<(f64, f64)> {
    match lo >= 0.0 && hi > lo {
        true => Ok((lo, hi)),
        false => invalid(format!("guidance interval must be LO,HI with 0 <= LO < HI (in sigma), got {lo},{hi}")),
    }
}

pub fn cache_threshold(t: f32) -> Result<f32> {
    match t.is_finite() && t >= 0.0 {
        true => Ok(t),
        false => invalid(format!("step cache threshold must be a finite number >= 0, got {t}")),
    }
}

pub fn cache_max_skips(n: u32) -> Result<u32> {
    match n {
        0 => invalid("step cache max skips must be at least 1, got 0".into()),
        _ => Ok(n),
    }
}

/// A step table: from 2 to `MAX_STEPS + 1` finite, non-negative noise levels, strictly
/// decreasing (a repeated level would be a step that goes nowhere).
pub fn sigma_table(s: &[f64]) -> Result<&[f64]> {
    if !(2..=MAX_STEPS + 1).contains(&s.len()) {
        return invalid(format!("a sigma table needs 2 to {} entries, got {}", MAX_STEPS + 1, s.len()));
    }
    if let Some(v) = s.iter().find(|v| !(v.is_finite() && **v >= 0.0)) {
        return invalid(format!("a sigma table's entries must be finite and >= 0, got {v}"));
    }
    if let Some(w) = s.windows(2).find(|w| w[1] >= w[0]) {
        return invalid(format!("a sigma table must be strictly decreasing, got {} then {}", w[0], w[1]));
    }
    Ok(s)
}

/// An image side of `px` pixels for a VAE that maps `factor` pixels to one latent.
pub fn image_side(what: &str, px: usize, factor: usize) -> Result<usize> {
    match px > 0 && px <= MAX_IMAGE_SIDE && px.is_multiple_of(factor) {
        true => Ok(px),
        false => invalid(format!(
            "{what} {px} must be a multiple of {factor} (the VAE's factor) between {factor} and {MAX_IMAGE_SIDE}"
        )),
    }
}

/// Every value of `v` finite.
pub fn finite<'a>(what: &str, v: &'a [f32]) -> Result<&'a [f32]> {
    match v.iter().all(|x| x.is_finite()) {
        true => Ok(v),
        false => invalid(format!("{what} contains NaN or infinity")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_limit_takes_its_range_and_refuses_the_rest() {
        assert!(batch(1).is_ok() && batch(MAX_BATCH).is_ok() && batch(0).is_err() && batch(MAX_BATCH + 1).is_err());
        assert!(steps(MAX_STEPS).is_ok() && steps(MAX_STEPS + 1).is_err() && steps(0).is_err());
        for g in [0.0, 7.5, MAX_GUIDANCE] {
            assert!(guidance(g).is_ok(), "{g}");
        }
        for g in [-0.1, f32::NAN, f32::INFINITY, MAX_GUIDANCE + 1.0] {
            assert!(guidance(g).is_err(), "{g}");
        }
        assert!(eta(1.0).is_ok() && eta(-0.0).is_ok() && eta(1.5).is_err() && eta(f64::NAN).is_err());
        assert!(strength(1.0).is_ok() && strength(0.0).is_err() && strength(f32::NAN).is_err());
        assert!(adaptive_guidance(1.0).is_ok() && adaptive_guidance(0.0).is_err() && adaptive_guidance(1.5).is_err());
        assert!(guidance_interval(0.0, f64::INFINITY).is_ok() && guidance_interval(2.0, 1.0).is_err());
        assert!(guidance_interval(f64::NAN, 1.0).is_err());
        assert!(cache_threshold(0.0).is_ok() && cache_threshold(-1.0).is_err() && cache_max_skips(0).is_err());
        assert!(sigma_table(&[14.6, 1.0, 0.0]).is_ok());
        for bad in [&[1.0][..], &[1.0, 1.0, 0.0], &[0.0, 1.0], &[f64::NAN, 0.0], &[1.0, -1.0]] {
            assert!(sigma_table(bad).is_err(), "{bad:?}");
        }
        assert!(image_side("width", 512, 8).is_ok() && image_side("width", 33, 8).is_err());
        assert!(image_side("width", 0, 8).is_err() && image_side("width", MAX_IMAGE_SIDE + 8, 8).is_err());
        assert!(finite("noise", &[1.0, -2.0]).is_ok() && finite("noise", &[f32::NAN]).is_err());
    }
}
