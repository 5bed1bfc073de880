//! VAE decoding of latents to RGB, whole or in overlapping tiles.
//!
//! Tiled decoding bounds the decoder's activations by the tile instead of the image: tiles of
//! `tile × tile` latents overlapping by a quarter, the last tile of a row or column flush with the
//! image's edge, each decoded on its own and blended with weights that ramp linearly across the
//! overlaps. The decoder's global parts (GroupNorm statistics, the mid-block's attention) then see
//! one tile at a time, so a tiled image differs slightly from a whole one; tiles at least as large
//! as the image decode exactly as the whole image does.

use std::path::Path;

use super::model_err;
use crate::backend::{DType, Graph, Input, InputData, Runner};
use crate::error::{Error, Result};

/// Latents per side of each decoder call for latents `[C, h, w]`: the tile, or the whole image
/// when there is no tile or it covers the image. The decoder graph must take this size.
pub fn call_size([_, h, w]: [usize; 3], tile: Option<usize>) -> (usize, usize) {
    match tile {
        Some(t) if t < h.max(w) => (t.min(h), t.min(w)),
        _ => (h, w),
    }
}

/// Where tiles of `tile` start along a side of `len`, overlapping by at least `overlap`.
pub fn tile_starts(len: usize, tile: usize, overlap: usize) -> Vec<usize> {
    if tile >= len {
        return vec![0];
    }
    let stride = (tile - overlap.min(tile - 1)).max(1);
    let mut starts: Vec<usize> = (0..).map(|k| k * stride).take_while(|&s| s + tile < len).collect();
    starts.push(len - tile);
    starts
}

/// Blend weight at offset `i` (pixels) of a tile of `size` pixels that overlaps its neighbours by
/// `before` and `after` pixels (0: no neighbour on that side).
fn weight(i: usize, size: usize, before: usize, after: usize) -> f32 {
    let mut w = 1.0f32;
    if i < before {
        w = w.min((i as f32 + 0.5) / before as f32);
    }
    if size - i <= after {
        w = w.min(((size - i) as f32 - 0.5) / after as f32);
    }
    w
}

/// A decoder graph, checked once, with the runner all its calls share.
pub struct VaeDecoder<'a> {
    path: &'a Path,
    scaling_factor: f64,
    /// Pixels per latent along each side.
    factor: usize,
    input: usize,
    half_output: bool,
    output_info: String,
    runner: Box<dyn Runner>,
}

impl<'a> VaeDecoder<'a> {
    pub fn new(graph: &dyn Graph, path: &'a Path, scaling_factor: f64, factor: usize) -> Result<VaeDecoder<'a>> {
        let input = graph.inputs().iter().position(|i| i.name == "latent_sample");
        let (Some(input), [out]) = (input, graph.outputs()) else {
            return Err(model_err(path, "expected an input `latent_sample` and one output"));
        };
        Ok(VaeDecoder {
            path,
            scaling_factor,
            factor,
            input,
            half_output: out.dtype == DType::F16,
            output_info: out.to_string(),
            runner: {
                let mut runner = graph.runner()?;
                runner.release_after_run(true); // it runs once (or once per tile) per generation
                runner
            },
        })
    }

    /// Whether the decoder returns float16, whose image diffusers post-processes in float16.
    pub fn half_output(&self) -> bool {
        self.half_output
    }

    /// Decodes one image's latents `[C, h, w]` (unscaled, as sampled) to `3 × h·f × w·f` values
    /// in the decoder's [-1, 1] range; `tile` (latents per side) decodes in tiles.
    pub fn decode(&mut self, latents: &[f32], shape: [usize; 3], tile: Option<usize>) -> Result<Vec<f32>> {
        let [c, h, w] = shape;
        if latents.len() != c * h * w {
            return Err(Error::Internal(format!("decode: {} latent values for {shape:?}", latents.len())));
        }
        let scale = self.scaling_factor as f32;
        let scaled: Vec<f32> = latents.iter().map(|&v| v / scale).collect();
        let (th, tw) = call_size(shape, tile);
        if (th, tw) == (h, w) {
            return self.run(&scaled, shape);
        }
        let overlap = th.max(tw) / 4;
        let (ys, xs) = (tile_starts(h, th, overlap), tile_starts(w, tw, overlap));
        let f = self.factor;
        let (ph, pw) = (h * f, w * f);
        let mut acc = vec![0f32; 3 * ph * pw];
        let mut total = vec![0f32; ph * pw];
        let mut part = vec![0f32; c * th * tw];
        for (iy, &y0) in ys.iter().enumerate() {
            for (ix, &x0) in xs.iter().enumerate() {
                for ch in 0..c {
                    for y in 0..th {
                        let src = (ch * h + y0 + y) * w + x0;
                        part[(ch * th + y) * tw..][..tw].copy_from_slice(&scaled[src..src + tw]);
                    }
                }
                let rgb = self.run(&part, [c, th, tw])?;
                let (qh, qw) = (th * f, tw * f);
                // Ramps as wide as the overlap with each neighbour.
                let overlap_px =
                    |starts: &[usize], k: usize, len: usize| (starts[k] + len).saturating_sub(starts[k + 1]) * f;
                let (top, bottom) = (
                    if iy > 0 { overlap_px(&ys, iy - 1, th) } else { 0 },
                    if iy + 1 < ys.len() { overlap_px(&ys, iy, th) } else { 0 },
                );
                let (left, right) = (
                    if ix > 0 { overlap_px(&xs, ix - 1, tw) } else { 0 },
                    if ix + 1 < xs.len() { overlap_px(&xs, ix, tw) } else { 0 },
                );
                for y in 0..qh {
                    let wy = weight(y, qh, top, bottom);
                    for x in 0..qw {
                        let wx = weight(x, qw, left, right);
                        let wgt = wy * wx;
                        let (py, px) = (y0 * f + y, x0 * f + x);
                        total[py * pw + px] += wgt;
                        for ch in 0..3 {
                            acc[(ch * ph + py) * pw + px] += wgt * rgb[(ch * qh + y) * qw + x];
                        }
                    }
                }
            }
        }
        for ch in 0..3 {
            for (a, t) in acc[ch * ph * pw..(ch + 1) * ph * pw].iter_mut().zip(&total) {
                *a /= t;
            }
        }
        Ok(acc)
    }

    /// One decoder call on scaled latents `[C, h, w]`.
    fn run(&mut self, scaled: &[f32], [c, h, w]: [usize; 3]) -> Result<Vec<f32>> {
        let (ph, pw) = (h * self.factor, w * self.factor);
        let data = InputData::F32(scaled);
        let mut rgb = vec![0f32; 3 * ph * pw];
        let input = Input { index: self.input, shape: &[1, c, h, w], data };
        let got = self.runner.run(&[input], 0, &mut rgb).map_err(|e| match e {
            Error::InvalidArgument(m) => model_err(self.path, format!("`{}`: {m}", self.output_info)),
            e => e,
        })?;
        if got != [1, 3, ph, pw] {
            return Err(model_err(self.path, format!("decoded to {got:?}, expected [1, 3, {ph}, {pw}]")));
        }
        Ok(rgb)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiles_cover_the_side_and_overlap() {
        assert_eq!(tile_starts(16, 32, 8), vec![0]);
        assert_eq!(tile_starts(16, 16, 4), vec![0]);
        assert_eq!(tile_starts(16, 8, 2), vec![0, 6, 8]);
        assert_eq!(tile_starts(100, 32, 8), vec![0, 24, 48, 68]);
        for (len, tile, overlap) in [(16, 8, 2), (100, 32, 8), (64, 20, 5), (9, 8, 0)] {
            let s = tile_starts(len, tile, overlap);
            assert_eq!(*s.last().unwrap() + tile, len, "flush with the end");
            for p in s.windows(2) {
                assert!(p[1] > p[0] && p[0] + tile >= p[1] + overlap, "overlap at least {overlap}: {s:?}");
            }
        }
    }

    #[test]
    fn weights_ramp_only_towards_neighbours() {
        assert_eq!(weight(0, 10, 0, 0), 1.0);
        assert!(weight(0, 10, 4, 0) < weight(3, 10, 4, 0));
        assert_eq!(weight(5, 10, 4, 4), 1.0);
        assert!(weight(9, 10, 0, 4) < 0.2);
        // Two ramps over one overlap sum to one at every pixel.
        for i in 0..4 {
            let a = weight(6 + i, 10, 0, 4);
            let b = weight(i, 10, 4, 0);
            assert!((a + b - 1.0).abs() < 1e-6, "{i}: {a} + {b}");
        }
    }
}
