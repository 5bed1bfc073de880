//! Samples to pictures: a batch of `[C, H, W]` samples becomes one PNG grid, values mapped from the
//! model's `value_range` to 0–255.

use std::path::Path;

use crate::error::{Error, Result};

/// An 8-bit image, row-major, `channels` interleaved (1 = grey, 3 = RGB).
#[derive(Clone, Debug, PartialEq)]
pub struct Picture {
    pub width: usize,
    pub height: usize,
    pub channels: usize,
    pub pixels: Vec<u8>,
}

/// Lays `batch` samples of shape `[C, H, W]` out in a grid of `cols` columns with a 1-pixel gap.
pub fn grid(samples: &[f32], batch: usize, shape: &[usize], range: [f32; 2], cols: usize) -> Result<Picture> {
    let (c, h, w) = match shape {
        [c @ (1 | 3), h, w] => (*c, *h, *w),
        [h, w] => (1, *h, *w),
        _ => {
            return Err(Error::InvalidArgument(format!(
                "sample shape {shape:?} is not an image ([1|3, H, W] or [H, W]); use --save-raw"
            )))
        }
    };
    if samples.len() != batch * c * h * w || batch == 0 {
        return Err(Error::Internal(format!("grid: {} values for {batch} samples of {shape:?}", samples.len())));
    }
    let cols = cols.clamp(1, batch);
    let rows = batch.div_ceil(cols);
    let (width, height) = (cols * (w + 1) - 1, rows * (h + 1) - 1);
    let mut pixels = vec![0u8; width * height * c];
    let [lo, hi] = range;
    for b in 0..batch {
        let (ox, oy) = ((b % cols) * (w + 1), (b / cols) * (h + 1));
        for ch in 0..c {
            for y in 0..h {
                for x in 0..w {
                    let v = samples[((b * c + ch) * h + y) * w + x];
                    let u = ((v - lo) / (hi - lo)).clamp(0.0, 1.0);
                    pixels[((oy + y) * width + ox + x) * c + ch] = (u * 255.0).round() as u8;
                }
            }
        }
    }
    Ok(Picture { width, height, channels: c, pixels })
}

pub fn write_png(path: &Path, pic: &Picture) -> Result<()> {
    let io = |e: &dyn std::fmt::Display| Error::io(path, e);
    let file = std::fs::File::create(path).map_err(|e| io(&e))?;
    let mut enc = png::Encoder::new(std::io::BufWriter::new(file), pic.width as u32, pic.height as u32);
    enc.set_color(if pic.channels == 3 { png::ColorType::Rgb } else { png::ColorType::Grayscale });
    enc.set_depth(png::BitDepth::Eight);
    let mut w = enc.write_header().map_err(|e| io(&e))?;
    w.write_image_data(&pic.pixels).map_err(|e| io(&e))?;
    w.finish().map_err(|e| io(&e))
}

/// Reads a PNG as 8-bit pixels, as Pillow opens it for an image processor: grey (1 channel), RGB
/// (3) or RGBA (4); grey with alpha loses the alpha, 16-bit samples keep their high byte,
/// palettes are expanded. `(width, height, channels, pixels)`.
pub fn read_png_u8(path: &Path) -> Result<(usize, usize, usize, Vec<u8>)> {
    let bad =
        |e: &dyn std::fmt::Display| Error::InvalidArgument(format!("{}: not a readable PNG: {e}", path.display()));
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut decoder = png::Decoder::new(std::io::BufReader::new(file));
    decoder.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
    let mut reader = decoder.read_info().map_err(|e| bad(&e))?;
    let mut buf = vec![0u8; reader.output_buffer_size().ok_or_else(|| bad(&"image too large"))?];
    let info = reader.next_frame(&mut buf).map_err(|e| bad(&e))?;
    buf.truncate(info.buffer_size());
    let (w, h) = (info.width as usize, info.height as usize);
    match info.color_type.samples() {
        2 => Ok((w, h, 1, buf.chunks_exact(2).map(|p| p[0]).collect())),
        n => Ok((w, h, n, buf)),
    }
}

/// Reads an 8-bit or 16-bit PNG as RGB values in [0, 1], `height × width × 3` (grey is repeated
/// over the channels, alpha dropped): `(width, height, values)`.
pub fn read_png(path: &Path) -> Result<(usize, usize, Vec<f32>)> {
    let bad =
        |e: &dyn std::fmt::Display| Error::InvalidArgument(format!("{}: not a readable PNG: {e}", path.display()));
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut decoder = png::Decoder::new(std::io::BufReader::new(file));
    decoder.set_transformations(png::Transformations::EXPAND);
    let mut reader = decoder.read_info().map_err(|e| bad(&e))?;
    let mut buf = vec![0u8; reader.output_buffer_size().ok_or_else(|| bad(&"image too large"))?];
    let info = reader.next_frame(&mut buf).map_err(|e| bad(&e))?;
    let (w, h) = (info.width as usize, info.height as usize);
    let channels = info.color_type.samples();
    let wide = info.bit_depth == png::BitDepth::Sixteen;
    let sample = |i: usize| -> f32 {
        if wide {
            u16::from_be_bytes([buf[2 * i], buf[2 * i + 1]]) as f32 / 65535.0
        } else {
            buf[i] as f32 / 255.0
        }
    };
    let mut rgb = Vec::with_capacity(w * h * 3);
    for p in 0..w * h {
        for c in 0..3 {
            let ch = if channels < 3 { 0 } else { c };
            rgb.push(sample(p * channels + ch));
        }
    }
    Ok((w, h, rgb))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grid_maps_range_and_places_samples() {
        // Two 1x2x2 samples: the first all at the range's low end, the second at its high end.
        let s = [-1.0, -1.0, -1.0, -1.0, 1.0, 1.0, 1.0, 2.0];
        let p = grid(&s, 2, &[1, 2, 2], [-1.0, 1.0], 2).unwrap();
        assert_eq!((p.width, p.height, p.channels), (5, 2, 1));
        assert_eq!(&p.pixels[..5], &[0, 0, 0, 255, 255]);
        assert!(grid(&s, 2, &[4, 1, 1], [-1.0, 1.0], 2).is_err());
    }
}
