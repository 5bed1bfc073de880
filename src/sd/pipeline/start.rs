//! Where a Stable Diffusion generation starts: plain noise, an encoded init image (img2img), or an
//! image and a mask (inpainting, by latent blending or through an inpainting UNet's extra channels).

use super::{Part, StableDiffusion, TextToImage};
use crate::backend::{Input, InputData};
use crate::error::{Error, Result};
use crate::request::Inpaint;
use crate::rng::PhiloxNoise;
use crate::sd::model_err;

/// Mixed into the seed for the VAE posterior's noise of the init image.
const ENCODER_NOISE_STREAM: u64 = 0x5EED_E4C0_DE00_0001;
/// Mixed into the seed for the masked image's posterior noise (inpainting UNets).
const MASKED_NOISE_STREAM: u64 = 0x5EED_E4C0_DE00_0002;

/// The start of a generation, as the sampling parameters take it.
pub(super) struct Start {
    pub init: Option<Vec<f32>>,
    pub inpaint: Option<Inpaint>,
    pub strength: Option<f32>,
    pub sample_extra: Option<Vec<f32>>,
}

impl StableDiffusion {
    pub(super) fn start(&self, req: &TextToImage, batch: usize, shape: [usize; 3]) -> Result<Start> {
        let p = &req.params;
        let arg = |msg: &str| Err(Error::InvalidArgument(msg.into()));
        if p.init.is_some() {
            return arg(
                "a Stable Diffusion request starts from an init_image (and mask_image), not from latents in params",
            );
        }
        let n = batch * shape.iter().product::<usize>();
        let noise = |stream: u64| match &req.encoder_noise {
            Some(v) => v.clone(),
            None => {
                // Streams of their own, so the initial latents' noise stays that of the seed.
                let mut v = vec![0f32; n];
                PhiloxNoise::new(p.seed ^ stream).initial(&mut v);
                v
            }
        };
        let plain = Start { init: None, inpaint: None, strength: p.strength, sample_extra: None };
        match (&req.init_image, &req.mask_image) {
            (None, None) if req.encoder_noise.is_some() => arg("encoder noise without an init image"),
            (None, None) if self.extra_channels > 0 => {
                arg("this export's UNet is an inpainting UNet: give an init image and a mask")
            }
            (None, None) => Ok(plain),
            (None, Some(_)) => arg("a mask image needs an init image to inpaint"),
            (Some(_), None) if self.extra_channels > 0 => {
                arg("this export's UNet is an inpainting UNet: give a mask too")
            }
            (Some(images), None) => Ok(Start {
                init: Some(self.encode_images(images, batch, shape, &noise(ENCODER_NOISE_STREAM))?),
                ..plain
            }),
            (Some(images), Some(mask)) => {
                // diffusers starts inpainting from pure noise at strength 1, not from the noised image.
                let strength = p.strength.unwrap_or(1.0);
                let partial = strength < 1.0;
                if self.extra_channels > 0 {
                    // The UNet sees the mask and the masked image's latents; nothing is blended.
                    let masked = self.masked_images(images, mask, batch, shape)?;
                    let masked_latents = self.encode_images(&masked, batch, shape, &noise(MASKED_NOISE_STREAM))?;
                    let mask_latents = self.latent_mask(mask, batch, [1, shape[1], shape[2]])?;
                    let (m, l) = (shape[1] * shape[2], shape.iter().product::<usize>());
                    let mut extra = Vec::with_capacity(batch * (m + l));
                    for k in 0..batch {
                        extra.extend_from_slice(&mask_latents[k * m..(k + 1) * m]);
                        extra.extend_from_slice(&masked_latents[k * l..(k + 1) * l]);
                    }
                    let init = match partial {
                        true => Some(self.encode_images(images, batch, shape, &noise(ENCODER_NOISE_STREAM))?),
                        false => None,
                    };
                    return Ok(Start {
                        init,
                        inpaint: None,
                        strength: partial.then_some(strength),
                        sample_extra: Some(extra),
                    });
                }
                let known = self.encode_images(images, batch, shape, &noise(ENCODER_NOISE_STREAM))?;
                let mask = self.latent_mask(mask, batch, shape)?;
                let init = partial.then(|| known.clone());
                Ok(Start {
                    init,
                    inpaint: Some(Inpaint { known, mask }),
                    strength: partial.then_some(strength),
                    sample_extra: None,
                })
            }
        }
    }

    /// Encodes `n` images (`H × W × 3` in [0, 1] each) to latents of `shape` as diffusers' img2img
    /// does: the posterior's mean plus its standard deviation times `noise`, times the scaling factor.
    pub fn encode_images(&self, images: &[f32], n: usize, shape: [usize; 3], noise: &[f32]) -> Result<Vec<f32>> {
        let [c, h, w] = shape;
        let (ph, pw) = (h * self.vae.factor, w * self.vae.factor);
        let per = ph * pw * 3;
        if images.len() != per && images.len() != n * per {
            return Err(Error::InvalidArgument(format!(
                "the init image has {} values; a {pw}×{ph} RGB image has {per} (one for all, or {n} of them)",
                images.len()
            )));
        }
        if images.iter().any(|v| !v.is_finite()) {
            return Err(Error::InvalidArgument("the init image contains NaN or infinity".into()));
        }
        if noise.len() != n * c * h * w {
            return Err(Error::InvalidArgument(format!(
                "encoder noise has {} values, expected {}",
                noise.len(),
                n * c * h * w
            )));
        }
        let path = self.dir.join("vae_encoder/model.onnx");
        let graph = self.graph(Part::VaeEncoder, (h, w))?;
        let g = graph.as_ref();
        let (Some(input), Some(output)) = (
            g.inputs().iter().position(|i| i.name == "sample"),
            g.outputs().iter().position(|o| o.name == "latent_parameters"),
        ) else {
            return Err(model_err(&path, "expected an input `sample` and an output `latent_parameters`"));
        };
        let mut runner = g.runner()?;
        runner.release_after_run(true); // it runs once per generation
        let mut params = vec![0f32; 2 * c * h * w];
        let mut latents = Vec::with_capacity(n * c * h * w);
        let scale = self.vae.scaling_factor as f32;
        for k in 0..n {
            let img = if images.len() == per { images } else { &images[k * per..(k + 1) * per] };
            // NHWC in [0, 1] to NCHW in [-1, 1], as diffusers' VaeImageProcessor.
            let mut chw = vec![0f32; per];
            for y in 0..ph {
                for x in 0..pw {
                    for ch in 0..3 {
                        chw[(ch * ph + y) * pw + x] = 2.0 * img[(y * pw + x) * 3 + ch] - 1.0;
                    }
                }
            }
            let data = InputData::F32(&chw);
            let got = runner.run(&[Input { index: input, shape: &[1, 3, ph, pw], data }], output, &mut params)?;
            if got != [1, 2 * c, h, w] {
                return Err(model_err(&path, format!("encoded to {got:?}, expected [1, {}, {h}, {w}]", 2 * c)));
            }
            let (mean, logvar) = params.split_at(c * h * w);
            let eps = &noise[k * c * h * w..(k + 1) * c * h * w];
            for ((&m, &lv), &e) in mean.iter().zip(logvar).zip(eps) {
                let std = (0.5 * lv.clamp(-30.0, 20.0)).exp();
                latents.push((m + std * e) * scale);
            }
        }
        Ok(latents)
    }

    /// The mask of `n` images (`H × W` values each, or one for all) at latent resolution, over
    /// every channel: binarised at 0.5, then nearest-neighbour downsampled, as diffusers does.
    fn latent_mask(&self, mask: &[f32], n: usize, [c, h, w]: [usize; 3]) -> Result<Vec<f32>> {
        let f = self.vae.factor;
        let (ph, pw) = (h * f, w * f);
        let per = ph * pw;
        if mask.len() != per && mask.len() != n * per {
            return Err(Error::InvalidArgument(format!(
                "the mask has {} values; a {pw}×{ph} mask has {per} (one for all, or {n} of them)",
                mask.len()
            )));
        }
        if mask.iter().any(|v| !v.is_finite()) {
            return Err(Error::InvalidArgument("the mask contains NaN or infinity".into()));
        }
        let mut out = Vec::with_capacity(n * c * h * w);
        for k in 0..n {
            let m = if mask.len() == per { mask } else { &mask[k * per..(k + 1) * per] };
            for _ in 0..c {
                for y in 0..h {
                    for x in 0..w {
                        out.push(if m[y * f * pw + x * f] >= 0.5 { 1.0 } else { 0.0 });
                    }
                }
            }
        }
        Ok(out)
    }

    /// The init images with the pixels to repaint set to grey (0 in the VAE's [-1, 1]), as diffusers
    /// masks the image an inpainting UNet sees.
    fn masked_images(&self, images: &[f32], mask: &[f32], n: usize, [_, h, w]: [usize; 3]) -> Result<Vec<f32>> {
        let per = h * self.vae.factor * w * self.vae.factor;
        if (images.len() != 3 * per && images.len() != 3 * n * per) || (mask.len() != per && mask.len() != n * per) {
            return Err(Error::InvalidArgument(format!(
                "init image ({} values) and mask ({} values) do not match {n} images of {per} pixels",
                images.len(),
                mask.len()
            )));
        }
        let mut out = Vec::with_capacity(3 * n * per);
        for k in 0..n {
            let img = if images.len() == 3 * per { images } else { &images[3 * k * per..3 * (k + 1) * per] };
            let m = if mask.len() == per { mask } else { &mask[k * per..(k + 1) * per] };
            for (px, &mv) in img.chunks(3).zip(m) {
                out.extend(px.iter().map(|&v| if mv >= 0.5 { 0.5 } else { v }));
            }
        }
        Ok(out)
    }
}
