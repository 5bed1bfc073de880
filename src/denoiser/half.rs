//! torch's float16 rounding, written once: what [`super::Precision::Float16`] means, for guidance,
//! the clean-sample estimate and the float16 steps (`crate::sampler`'s DDIM and Euler).
//!
//! torch computes a 0-dim float32 tensor (a scheduler's coefficient) times a float16 tensor in
//! float16: the coefficient is cast to float16 and the product rounded to float16. Where those
//! products occur, and where a scheduler casts its sample back to float16, depends on the scheduler:
//! - DPMSolverMultistep and LCM: only in the clean-sample estimate `(x - sigma eps) / alpha`; the
//!   rest of their step is float32 arithmetic on that estimate, so the ordinary steppers run on it;
//! - DDIM (eta 0): in that estimate and in the direction term `sigma' eps`;
//! - EulerDiscrete: in variance-exploding coordinates, `x0 = x - sigma eps`, and the sample is cast
//!   to float16 after every step, its scaled network input with it.
//!
//! The guidance combination is float16 too, each operation rounded.

use half::f16;

use super::Level;

/// `v` rounded to the nearest float16.
pub fn round(v: f32) -> f32 {
    f16::from_f32(v).to_f32()
}

/// `c · e` for a float32 scalar `c` and a float16 value `e`, as torch computes it.
pub fn times(c: f64, e: f32) -> f32 {
    round(round(c as f32) * e)
}

/// `u + w (c - u)` for float16 `u` and `c`, as torch computes it (the scale kept in float32, as
/// torch keeps a Python scalar).
pub fn guide(u: f32, c: f32, w: f32) -> f32 {
    round(u + round(w * round(c - u)))
}

/// diffusers' clean-sample estimate `(x - sigma eps) / alpha` of the epsilon output in `out` at
/// `l`, written over it.
pub fn clean_in_place(l: &Level, x: &[f32], out: &mut [f32]) {
    let a = l.alpha as f32;
    for (o, &x) in out.iter_mut().zip(x) {
        *o = (x - times(l.sigma, *o)) / a;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[allow(clippy::excessive_precision)] // exact float16 values, as torch prints them
    fn products_round_as_torch_rounds_them() {
        // torch 2.x: torch.tensor(0.7071234567) * torch.tensor([..], dtype=torch.float16).
        let e = [1.234375f32, -3.140625, 0.09991455078125, 1000.5];
        let want = [0.87255859375f32, -2.220703125, 0.07061767578125, 707.5];
        for (e, want) in e.into_iter().zip(want) {
            assert_eq!(times(0.7071234567, e), want, "{e}");
        }
        // Rounding the product alone (the coefficient kept in float32) gives another value here.
        assert_ne!(round(0.7071234567f32 * 1.234375), 0.87255859375);
    }

    #[test]
    #[allow(clippy::excessive_precision)] // exact float16 values, as torch prints them
    fn guidance_rounds_as_torch() {
        // torch 2.x: u + 7.5 * (c - u) on these float16 tensors (one rounding at the end would
        // give 16.328125 and -6.9453125).
        assert_eq!(guide(-0.537109375, 1.7119140625, 7.5), 16.34375);
        assert_eq!(guide(-0.482177734375, -1.34375, 7.5), -6.94140625);
    }

    #[test]
    fn the_estimate_rounds_the_product_only() {
        let l = Level { alpha: 0.8, sigma: 0.6, timestep: 0.0 };
        let (x, eps) = ([0.3f32, -1.2, 2.5], [0.5f32, 1.25, -0.75]);
        let mut out = eps;
        clean_in_place(&l, &x, &mut out);
        for ((o, x), e) in out.iter().zip(x).zip(eps) {
            assert_eq!(*o, (x - times(0.6, e)) / 0.8f32);
        }
    }
}
