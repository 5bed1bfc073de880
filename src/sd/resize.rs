//! Pillow's Lanczos resize of 8-bit images (`Image.resize(size, Image.LANCZOS)`), which diffusers'
//! image processor applies to start images and masks of another size: reproduced to the byte, so a
//! resized start image is the one diffusers would encode. Pillow resamples in two separable passes,
//! each rounding to 8 bits, with filter weights in 22-bit fixed point. (Pillow computes the first
//! pass only on the rows or columns the second reads; that saves work, not changes values.)

use std::f64::consts::PI;

use crate::error::{Error, Result};

/// Fixed-point bits of the weights: 8 bits of result and 2 of headroom in an `i32`.
const PRECISION_BITS: u32 = 32 - 8 - 2;
const SUPPORT: f64 = 3.0;

fn sinc(x: f64) -> f64 {
    if x == 0.0 {
        1.0
    } else {
        let x = x * PI;
        x.sin() / x
    }
}

fn lanczos(x: f64) -> f64 {
    if (-SUPPORT..SUPPORT).contains(&x) {
        sinc(x) * sinc(x / SUPPORT)
    } else {
        0.0
    }
}

/// One pass's filter: for each output position, the first input index, the number of inputs, and
/// the weights (`ksize` slots each).
struct Pass {
    ksize: usize,
    bounds: Vec<(usize, usize)>,
    weights: Vec<i32>,
}

impl Pass {
    fn new(in_size: usize, out_size: usize) -> Pass {
        let scale = in_size as f64 / out_size as f64;
        let filterscale = scale.max(1.0);
        let support = SUPPORT * filterscale;
        let ksize = support.ceil() as usize * 2 + 1;
        let mut bounds = Vec::with_capacity(out_size);
        let mut weights = vec![0i32; out_size * ksize];
        let mut k = vec![0f64; ksize];
        for xx in 0..out_size {
            let center = (xx as f64 + 0.5) * scale;
            // Truncation toward zero, as C's (int) cast.
            let xmin = ((center - support + 0.5) as i64).max(0) as usize;
            let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize - xmin;
            let (mut total, ss) = (0.0, 1.0 / filterscale);
            for (x, w) in k.iter_mut().enumerate().take(xmax) {
                *w = lanczos(((x + xmin) as f64 - center + 0.5) * ss);
                total += *w;
            }
            for (w, fixed) in k.iter().zip(&mut weights[xx * ksize..]).take(xmax) {
                let w = if total != 0.0 { w / total } else { *w };
                let scaled = w * (1u32 << PRECISION_BITS) as f64;
                *fixed = if w < 0.0 { (scaled - 0.5) as i32 } else { (scaled + 0.5) as i32 };
            }
            bounds.push((xmin, xmax));
        }
        Pass { ksize, bounds, weights }
    }

    /// Output value `o` from the inputs `at(first)`, `at(first + 1)`, ...
    fn apply(&self, o: usize, at: impl Fn(usize) -> u8) -> u8 {
        let (first, n) = self.bounds[o];
        let k = &self.weights[o * self.ksize..o * self.ksize + n];
        let mut acc = 1i32 << (PRECISION_BITS - 1);
        for (i, &w) in k.iter().enumerate() {
            acc += at(first + i) as i32 * w;
        }
        (acc >> PRECISION_BITS).clamp(0, 255) as u8
    }
}

/// `pixels` (`height × width × channels`, row-major, interleaved) resized to `out_w × out_h` as
/// Pillow's Lanczos filter resizes it. Pillow 13 takes the vertical pass first when the height
/// shrinks by more than twice as many rows as the width loses columns (earlier versions always
/// went horizontal first, which can move a pixel by a level); this follows Pillow 13.
pub fn lanczos_resize(
    pixels: &[u8],
    width: usize,
    height: usize,
    channels: usize,
    out_w: usize,
    out_h: usize,
) -> Result<Vec<u8>> {
    if pixels.len() != width * height * channels || width == 0 || height == 0 || out_w == 0 || out_h == 0 {
        return Err(Error::InvalidArgument(format!(
            "cannot resize {} values as a {width}×{height}×{channels} image to {out_w}×{out_h}",
            pixels.len()
        )));
    }
    let image = Image { pixels: pixels.to_vec(), width, height, channels };
    let vertical_first = out_h < height && (height - out_h) as i64 > 2 * (width as i64 - out_w as i64);
    Ok(if vertical_first { image.rows(out_h).columns(out_w) } else { image.columns(out_w).rows(out_h) }.pixels)
}

struct Image {
    pixels: Vec<u8>,
    width: usize,
    height: usize,
    channels: usize,
}

impl Image {
    /// The horizontal pass, to `out_w` columns (none when the width stays).
    fn columns(self, out_w: usize) -> Image {
        if out_w == self.width {
            return self;
        }
        let (pass, c) = (Pass::new(self.width, out_w), self.channels);
        let mut out = vec![0u8; self.height * out_w * c];
        for (row, dst) in self.pixels.chunks(self.width * c).zip(out.chunks_mut(out_w * c)) {
            for (x, px) in dst.chunks_mut(c).enumerate() {
                for (ch, v) in px.iter_mut().enumerate() {
                    *v = pass.apply(x, |i| row[i * c + ch]);
                }
            }
        }
        Image { pixels: out, width: out_w, ..self }
    }

    /// The vertical pass, to `out_h` rows (none when the height stays).
    fn rows(self, out_h: usize) -> Image {
        if out_h == self.height {
            return self;
        }
        let (pass, stride) = (Pass::new(self.height, out_h), self.width * self.channels);
        let mut out = vec![0u8; out_h * stride];
        for (y, dst) in out.chunks_mut(stride).enumerate() {
            for (i, v) in dst.iter_mut().enumerate() {
                *v = pass.apply(y, |r| self.pixels[r * stride + i]);
            }
        }
        Image { pixels: out, height: out_h, ..self }
    }
}
