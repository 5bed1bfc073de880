//! Start images and masks as apps hold them (8-bit grey, RGB or RGBA pixels of any size) made into
//! what a text-to-image request takes, as diffusers' image processors make them from a PIL image:
//! converted first (RGB for the image, Pillow's "L" for the mask), then resized with Pillow's
//! Lanczos filter to the generation's size. The CLI, C and Java all come through here.

use super::resize::lanczos_resize;
use super::{StableDiffusion, TextToImage};
use crate::error::{Error, Result};

/// 8-bit pixels, rows top to bottom, channels interleaved: 1 (grey), 3 (RGB) or 4 (RGBA).
#[derive(Clone, Copy, Debug)]
pub struct Pixels<'a> {
    pub width: usize,
    pub height: usize,
    pub channels: usize,
    pub data: &'a [u8],
}

impl Pixels<'_> {
    fn check(&self, what: &str) -> Result<()> {
        let bad = |msg: String| Err(Error::InvalidArgument(format!("{what}: {msg}")));
        if !matches!(self.channels, 1 | 3 | 4) {
            return bad(format!("{} channels; expected 1 (grey), 3 (RGB) or 4 (RGBA)", self.channels));
        }
        if self.width == 0 || self.height == 0 {
            return bad(format!("{}×{} pixels is empty", self.width, self.height));
        }
        let needed = self.width.checked_mul(self.height).and_then(|n| n.checked_mul(self.channels));
        if needed != Some(self.data.len()) {
            return bad(format!(
                "{} bytes for {}×{} pixels of {} channels",
                self.data.len(),
                self.width,
                self.height,
                self.channels
            ));
        }
        Ok(())
    }
}

/// A start image as RGB values in [0, 1] at `width × height` (`height × width × 3`): grey repeated
/// over the channels, alpha dropped (Pillow's `convert("RGB")`), then resized.
pub fn start_image(img: Pixels<'_>, width: usize, height: usize) -> Result<Vec<f32>> {
    img.check("the start image")?;
    let rgb: Vec<u8> = match img.channels {
        3 => img.data.to_vec(),
        1 => img.data.iter().flat_map(|&v| [v, v, v]).collect(),
        _ => img.data.chunks_exact(4).flat_map(|p| [p[0], p[1], p[2]]).collect(),
    };
    resized(rgb, img.width, img.height, 3, width, height)
}

/// A mask as values in [0, 1] at `width × height`: Pillow's "L" conversion (ITU-R 601 luma, alpha
/// dropped), then resized. The pipeline binarises it (at least 0.5 = repaint) as diffusers does.
pub fn mask_image(img: Pixels<'_>, width: usize, height: usize) -> Result<Vec<f32>> {
    img.check("the mask")?;
    let grey: Vec<u8> = match img.channels {
        1 => img.data.to_vec(),
        n => img.data.chunks_exact(n).map(|p| luma(p[0], p[1], p[2])).collect(),
    };
    resized(grey, img.width, img.height, 1, width, height)
}

/// Pillow's `L = R·299/1000 + G·587/1000 + B·114/1000`, in its fixed-point form.
fn luma(r: u8, g: u8, b: u8) -> u8 {
    ((u32::from(r) * 19595 + u32::from(g) * 38470 + u32::from(b) * 7471 + 0x8000) >> 16) as u8
}

fn resized(bytes: Vec<u8>, iw: usize, ih: usize, channels: usize, w: usize, h: usize) -> Result<Vec<f32>> {
    let bytes = if (iw, ih) == (w, h) { bytes } else { lanczos_resize(&bytes, iw, ih, channels, w, h)? };
    Ok(bytes.into_iter().map(|b| f32::from(b) / 255.0).collect())
}

impl StableDiffusion {
    /// Fills `req`'s start image and mask from pixels as an app holds them: the image size, when
    /// the request asks for none, is diffusers' ([`default_size`]), and both are converted and
    /// resized to it. A request that already holds a start image or mask as values is refused.
    pub fn set_images(&self, req: &mut TextToImage, start: Option<Pixels<'_>>, mask: Option<Pixels<'_>>) -> Result<()> {
        if start.is_none() && mask.is_none() {
            return Ok(());
        }
        check_images(req, start, mask)?;
        if (req.width, req.height) == (None, None) {
            let f = self.vae_factor();
            (req.width, req.height) = default_size(start.map(|p| (p.width, p.height)), mask.is_some(), f);
        }
        let [_, h, w] = self.latent_shape(req.width, req.height)?;
        let (w, h) = (w * self.vae_factor(), h * self.vae_factor());
        req.init_image = start.map(|p| start_image(p, w, h)).transpose()?;
        req.mask_image = mask.map(|p| mask_image(p, w, h)).transpose()?;
        Ok(())
    }
}

/// What [`StableDiffusion::set_images`] refuses, checked without converting anything (for a caller
/// that needs only the request's size).
pub fn check_images(req: &TextToImage, start: Option<Pixels<'_>>, mask: Option<Pixels<'_>>) -> Result<()> {
    if start.is_none() && mask.is_none() {
        return Ok(());
    }
    if req.init_image.is_some() || req.mask_image.is_some() {
        return Err(Error::InvalidArgument(
            "the start image and mask are given both as values and as pixels: give one of each".into(),
        ));
    }
    start.map(|p| p.check("the start image")).transpose()?;
    mask.map(|p| p.check("the mask")).transpose()?;
    Ok(())
}

/// The image size diffusers' pipelines make when none is asked for: img2img the start image's,
/// rounded down to the VAE's `factor`; inpainting (a mask given) and text to image the UNet's
/// (`None` leaves it to the export).
pub fn default_size(start: Option<(usize, usize)>, masked: bool, factor: usize) -> (Option<usize>, Option<usize>) {
    match start {
        Some((w, h)) if !masked => (Some(w - w % factor), Some(h - h % factor)),
        _ => (None, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channels_convert_as_pillow_does() {
        let rgba = [10u8, 200, 30, 7, 255, 255, 255, 0];
        let img = Pixels { width: 2, height: 1, channels: 4, data: &rgba };
        let to = |v: &[u8]| v.iter().map(|&b| f32::from(b) / 255.0).collect::<Vec<_>>();
        assert_eq!(start_image(img, 2, 1).unwrap(), to(&[10, 200, 30, 255, 255, 255]));
        // Pillow: Image.new("RGB", (1, 1), (10, 200, 30)).convert("L").getpixel((0, 0)) == 124, also from RGBA.
        assert_eq!(mask_image(img, 2, 1).unwrap(), to(&[124, 255]));
        let grey = Pixels { width: 1, height: 1, channels: 1, data: &[9] };
        assert_eq!(start_image(grey, 1, 1).unwrap(), to(&[9, 9, 9]));
    }

    #[test]
    fn bad_pixels_name_the_problem() {
        let short = Pixels { width: 2, height: 2, channels: 3, data: &[0; 11] };
        let e = start_image(short, 2, 2).unwrap_err().to_string();
        assert!(e.contains("the start image: 11 bytes for 2×2 pixels of 3 channels"), "{e}");
        let two = Pixels { width: 1, height: 1, channels: 2, data: &[0; 2] };
        assert!(mask_image(two, 1, 1).unwrap_err().to_string().contains("the mask: 2 channels"));
    }

    #[test]
    fn the_default_size_follows_the_start_image_unless_inpainting() {
        assert_eq!(default_size(Some((70, 41)), false, 8), (Some(64), Some(40)));
        assert_eq!(default_size(Some((70, 41)), true, 8), (None, None));
        assert_eq!(default_size(None, false, 8), (None, None));
    }
}
