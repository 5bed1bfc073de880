//! Portable, counter-based Gaussian noise: Philox4x32-10 (Salmon et al., "Parallel random numbers:
//! as easy as 1, 2, 3", SC'11; Random123's constants) and the Box–Muller transform.
//!
//! Mapping from a seed to numbers (stable; changing it changes every seeded output):
//! - key = `[seed as u32, (seed >> 32) as u32]`;
//! - normal number `j` of stream `s` comes from the Philox block with counter
//!   `[b as u32, (b >> 32) as u32, s as u32, (s >> 32) as u32]`, `b = j / 4`, lane `j % 4`;
//! - a block's words `(w0, w1)` give normals 0 and 1, `(w2, w3)` normals 2 and 3:
//!   `u = (w + 0.5) / 2^32`, `r = sqrt(-2 ln u_a)`, `(r cos 2 pi u_b, r sin 2 pi u_b)` in f64,
//!   rounded to f32;
//! - stream 0 is the initial noise, stream `step + 1` the noise a sampler draws at `step`
//!   ([`PhiloxNoise`]).
//!
//! Because a number depends only on `(seed, stream, j)`, a step's noise does not depend on how many
//! draws came before, and the first `L` values of a stream are the same whatever length is filled,
//! so item `k` of a batch (values `k L .. (k + 1) L`) is the same for any batch size. Only integer
//! operations, IEEE-exact `sqrt` and the pure-Rust `libm` log/sin/cos are used, so one seed gives
//! bit-identical noise on every platform.

use crate::denoiser::NoiseSource;
use crate::error::{Error, Result};

const M0: u32 = 0xD251_1F53;
const M1: u32 = 0xCD9E_8D57;
const W0: u32 = 0x9E37_79B9;
const W1: u32 = 0xBB67_AE85;

fn mulhilo(a: u32, b: u32) -> (u32, u32) {
    let p = a as u64 * b as u64;
    ((p >> 32) as u32, p as u32)
}

/// Philox4x32 with `rounds` rounds (10 is the standard, crush-resistant choice).
pub fn philox4x32(ctr: [u32; 4], key: [u32; 2], rounds: usize) -> [u32; 4] {
    let (mut c, mut k) = (ctr, key);
    for r in 0..rounds {
        if r > 0 {
            k = [k[0].wrapping_add(W0), k[1].wrapping_add(W1)];
        }
        let (hi0, lo0) = mulhilo(M0, c[0]);
        let (hi1, lo1) = mulhilo(M1, c[2]);
        c = [hi1 ^ c[1] ^ k[0], lo1, hi0 ^ c[3] ^ k[1], lo0];
    }
    c
}

fn to_open_unit(w: u32) -> f64 {
    (w as f64 + 0.5) * (1.0 / 4_294_967_296.0)
}

fn box_muller(a: u32, b: u32) -> (f32, f32) {
    let r = libm::sqrt(-2.0 * libm::log(to_open_unit(a)));
    let theta = 2.0 * std::f64::consts::PI * to_open_unit(b);
    ((r * libm::cos(theta)) as f32, (r * libm::sin(theta)) as f32)
}

/// Standard normals addressed by `(stream, index)` under one seed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Philox {
    key: [u32; 2],
}

impl Philox {
    pub fn new(seed: u64) -> Self {
        Philox { key: [seed as u32, (seed >> 32) as u32] }
    }

    /// The raw Philox4x32-10 block `index` of `stream`.
    pub fn block(&self, stream: u64, index: u64) -> [u32; 4] {
        philox4x32([index as u32, (index >> 32) as u32, stream as u32, (stream >> 32) as u32], self.key, 10)
    }

    /// Writes normals `first .. first + out.len()` of `stream` into `out`.
    pub fn fill_normal(&self, stream: u64, first: u64, out: &mut [f32]) {
        let mut j = first;
        let mut i = 0;
        while i < out.len() {
            let w = self.block(stream, j / 4);
            let (z0, z1) = box_muller(w[0], w[1]);
            let (z2, z3) = box_muller(w[2], w[3]);
            let lanes = [z0, z1, z2, z3];
            let lane = (j % 4) as usize;
            let take = (4 - lane).min(out.len() - i);
            out[i..i + take].copy_from_slice(&lanes[lane..lane + take]);
            i += take;
            j += take as u64;
        }
    }
}

/// Seeded noise for a whole generation: stream 0 for the initial sample, `step + 1` for each step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PhiloxNoise {
    rng: Philox,
}

impl PhiloxNoise {
    pub fn new(seed: u64) -> Self {
        PhiloxNoise { rng: Philox::new(seed) }
    }

    /// The unit noise the initial sample is made from.
    pub fn initial(&self, out: &mut [f32]) {
        self.rng.fill_normal(0, 0, out);
    }
}

impl NoiseSource for PhiloxNoise {
    fn fill(&mut self, step: usize, out: &mut [f32]) -> Result<()> {
        self.rng.fill_normal(step as u64 + 1, 0, out);
        Ok(())
    }
}

/// Noise replayed from a recording (e.g. the draws a diffusers scheduler made): entry `step` is
/// returned when the sampler asks at `step`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RecordedNoise {
    draws: Vec<Vec<f32>>,
}

impl RecordedNoise {
    pub fn new(draws: Vec<Vec<f32>>) -> Self {
        RecordedNoise { draws }
    }
}

impl NoiseSource for RecordedNoise {
    fn fill(&mut self, step: usize, out: &mut [f32]) -> Result<()> {
        let draw = self.draws.get(step).ok_or_else(|| {
            Error::InvalidArgument(format!("recorded noise has {} draws, step {step} asked for one", self.draws.len()))
        })?;
        if draw.len() != out.len() {
            return Err(Error::InvalidArgument(format!(
                "recorded noise for step {step} has {} values, the sample {}",
                draw.len(),
                out.len()
            )));
        }
        out.copy_from_slice(draw);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// rounds, counter, key -> expected
    type Kat = (usize, [u32; 4], [u32; 2], [u32; 4]);

    /// Random123 `tests/kat_vectors` (DEShawResearch/random123), its philox4x32 lines.
    const KAT: [Kat; 6] = [
        (7, [0, 0, 0, 0], [0, 0], [0x5f6fb709, 0x0d893f64, 0x4f121f81, 0x4f730a48]),
        (7, [u32::MAX; 4], [u32::MAX; 2], [0x5207ddc2, 0x45165e59, 0x4d8ee751, 0x8c52f662]),
        (
            7,
            [0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344],
            [0xa4093822, 0x299f31d0],
            [0x4dfccaba, 0x190a87f0, 0xc47362ba, 0xb6b5242a],
        ),
        (10, [0, 0, 0, 0], [0, 0], [0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8]),
        (10, [u32::MAX; 4], [u32::MAX; 2], [0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd]),
        (
            10,
            [0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344],
            [0xa4093822, 0x299f31d0],
            [0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1],
        ),
    ];

    #[test]
    fn random123_known_answers() {
        for (rounds, ctr, key, want) in KAT {
            assert_eq!(philox4x32(ctr, key, rounds), want, "rounds {rounds} ctr {ctr:x?}");
        }
    }

    #[test]
    fn seed_and_counters_map_as_documented() {
        let seed = 0x0123_4567_89ab_cdefu64;
        let rng = Philox::new(seed);
        let want = philox4x32([5, 0, 7, 0], [0x89ab_cdef, 0x0123_4567], 10);
        assert_eq!(rng.block(7, 5), want);
        let big = (3u64 << 32) | 9;
        assert_eq!(rng.block(big, big), philox4x32([9, 3, 9, 3], [0x89ab_cdef, 0x0123_4567], 10));
    }

    #[test]
    fn normals_do_not_depend_on_fill_length_or_offset() {
        let rng = Philox::new(42);
        let mut long = vec![0.0f32; 103];
        rng.fill_normal(3, 0, &mut long);
        let mut short = vec![0.0f32; 10];
        rng.fill_normal(3, 0, &mut short);
        assert_eq!(&long[..10], &short[..]);
        let mut mid = vec![0.0f32; 37];
        rng.fill_normal(3, 61, &mut mid);
        assert_eq!(&long[61..98], &mid[..]);
        let mut other = vec![0.0f32; 10];
        rng.fill_normal(4, 0, &mut other);
        assert_ne!(short, other);
    }

    #[test]
    fn step_noise_is_keyed_by_step() {
        let mut a = PhiloxNoise::new(7);
        let mut b = PhiloxNoise::new(7);
        let (mut x, mut y) = (vec![0.0f32; 16], vec![0.0f32; 16]);
        a.fill(0, &mut x).unwrap();
        a.fill(3, &mut x).unwrap();
        b.fill(3, &mut y).unwrap();
        assert_eq!(x, y);
        let mut init = vec![0.0f32; 16];
        a.initial(&mut init);
        a.fill(0, &mut y).unwrap();
        assert_ne!(init, y);
    }

    #[test]
    fn normals_have_unit_moments() {
        let n = 1_000_000usize;
        let mut z = vec![0.0f32; n];
        Philox::new(2024).fill_normal(0, 0, &mut z);
        let mean = z.iter().map(|&v| v as f64).sum::<f64>() / n as f64;
        let var = z.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n as f64;
        let kurt = z.iter().map(|&v| (v as f64 - mean).powi(4)).sum::<f64>() / n as f64 / (var * var);
        let tail = z.iter().filter(|v| v.abs() > 1.959964).count() as f64 / n as f64;
        // Standard errors: mean 1e-3, variance 1.4e-3, kurtosis 4.9e-3, tail 2.2e-4; allow 5 of them.
        assert!(mean.abs() < 5e-3, "mean {mean}");
        assert!((var - 1.0).abs() < 7e-3, "variance {var}");
        assert!((kurt - 3.0).abs() < 0.05, "kurtosis {kurt}");
        assert!((tail - 0.05).abs() < 1.1e-3, "two-sided 5% tail {tail}");
        assert!(z.iter().all(|v| v.is_finite()));
    }

    #[test]
    fn recorded_noise_replays_by_step_and_checks_sizes() {
        let mut r = RecordedNoise::new(vec![vec![1.0, 2.0], vec![3.0, 4.0]]);
        let mut out = [0.0f32; 2];
        r.fill(1, &mut out).unwrap();
        assert_eq!(out, [3.0, 4.0]);
        assert!(r.fill(2, &mut out).is_err());
        assert!(r.fill(0, &mut [0.0f32; 3]).is_err());
    }
}
