//! Text to image through the C API: a Stable Diffusion export as an opaque `drt_sd`, generated
//! with the same drt_generate_params (prompts, negative prompts, size and VAE tiling among them)
//! into a caller's RGB8 or float buffer.

use std::ffi::{c_char, c_void};
use std::sync::Arc;

use super::generate::{
    drt_generate_params, drt_generate_params_default, drt_progress_fn, generate_params, progress, write_out,
};
use super::model::{backend_options, drt_model_params};
use super::{boundary, drt_status, invalid, opt_str, read_params};
use crate::error::Error;
use crate::limits::MAX_BATCH;
use crate::sd::{Images, SdOptions, StableDiffusion, TextToImage};

/// A loaded Stable Diffusion export. Thread-safe: generations on one `drt_sd` may run on several
/// threads at once.
pub struct drt_sd {
    sd: Arc<StableDiffusion>,
}

/// drt_sd_load flag: load text encoder, UNet and VAE decoder only while each runs, freeing each
/// before the next (peak memory of the largest part, at the cost of loading them every time).
pub const DRT_SD_LOW_MEMORY: u32 = 1;

/// Loads the Stable Diffusion export in `dir` (the directory `optimum-cli export onnx --task
/// text-to-image` writes: model_index.json, tokenizer/, text_encoder/, unet/, vae_decoder/).
/// `params` may be NULL for the defaults; `flags` is 0 or DRT_SD_LOW_MEMORY. On success `*out`
/// owns it (free with drt_sd_free).
///
/// # Safety
/// `dir` a NUL-terminated string; `params` NULL or valid; `out` valid.
#[no_mangle]
pub unsafe extern "C" fn drt_sd_load(
    dir: *const c_char,
    params: *const drt_model_params,
    flags: u32,
    out: *mut *mut drt_sd,
) -> drt_status {
    boundary(|| {
        if out.is_null() {
            return Err(invalid("out is NULL"));
        }
        if flags & !DRT_SD_LOW_MEMORY != 0 {
            return Err(invalid(&format!("flags {flags:#x} has bits other than DRT_SD_LOW_MEMORY")));
        }
        let dir = opt_str(dir, "dir")?.ok_or_else(|| invalid("dir is NULL"))?;
        let (backend, memory_budget_mb) = backend_options(params)?;
        let opts = SdOptions { low_memory: flags & DRT_SD_LOW_MEMORY != 0, memory_budget_mb };
        let sd = StableDiffusion::load(dir.as_ref(), &backend, opts)?;
        *out = Box::into_raw(Box::new(drt_sd { sd: Arc::new(sd) }));
        Ok(())
    })
}

/// Frees an export. NULL is a no-op.
///
/// # Safety
/// `sd` NULL or from drt_sd_load, not freed before, with no generation running on it.
#[no_mangle]
pub unsafe extern "C" fn drt_sd_free(sd: *mut drt_sd) {
    if !sd.is_null() {
        let _ = crate::panic::catch(|| drop(Box::from_raw(sd)));
    }
}

/// UTF-8 strings from a C array of `len` pointers (NULL with 0 is none).
unsafe fn strings(p: *const *const c_char, len: usize, what: &str) -> Result<Vec<String>, Error> {
    if len == 0 {
        return Ok(Vec::new());
    }
    if p.is_null() {
        return Err(invalid(&format!("{what} is NULL with {what}_len {len}")));
    }
    if len > MAX_BATCH {
        return Err(invalid(&format!("{what}_len {len} is over {MAX_BATCH}")));
    }
    (0..len)
        .map(|i| opt_str(*p.add(i), what)?.map(str::to_string).ok_or_else(|| invalid(&format!("{what}[{i}] is NULL"))))
        .collect()
}

/// A caller's request, the size of the images it makes, and its progress callback.
struct Request {
    request: TextToImage,
    /// Pixels per image side: (width, height).
    size: (usize, usize),
    progress: drt_progress_fn,
    user_data: *mut c_void,
}

impl Request {
    /// Values the output holds: RGB for every pixel of every image.
    fn out_len(&self) -> usize {
        self.request.params.batch * self.size.0 * self.size.1 * 3
    }
}

/// The request a caller's params make of `sd`.
unsafe fn request(sd: &StableDiffusion, params: *const drt_generate_params) -> Result<Request, Error> {
    let mut p = read_params(params, drt_generate_params_default())?;
    let prompts = strings(p.prompts, p.prompts_len, "prompts")?;
    let negative_prompts = strings(p.negative_prompts, p.negative_prompts_len, "negative_prompts")?;
    if p.batch == 1 {
        p.batch = prompts.len().max(negative_prompts.len()).max(1) as u32;
    }
    let size = |v: u32| (v > 0).then_some(v as usize);
    let (width, height) = (size(p.width), size(p.height));
    let [c, h, w] = sd.latent_shape(width, height)?;
    let (mut params, _) = generate_params(&p, c * h * w)?;
    if !params.classes.is_empty() || !params.conds.is_empty() {
        return Err(invalid(
            "a Stable Diffusion export takes prompts: class_label, classes and conditioning must be unset",
        ));
    }
    // img2img: `init` holds the starting image(s), height × width × 3 floats in [0, 1] each.
    let init_image = params.init.take();
    let mask_image = match (p.mask.is_null(), p.mask_len) {
        (true, 0) => None,
        (true, _) => return Err(invalid("mask is NULL with mask_len > 0")),
        (false, len) => Some(std::slice::from_raw_parts(p.mask, len).to_vec()),
    };
    let request = TextToImage {
        prompts,
        negative_prompts,
        width,
        height,
        vae_tile: size(p.vae_tile),
        init_image,
        encoder_noise: None,
        mask_image,
        params,
    };
    let f = sd.vae_factor();
    Ok(Request { request, size: (w * f, h * f), progress: p.progress, user_data: p.user_data })
}

/// Sets `*width`, `*height` (pixels) and `*batch` (images) of what drt_sd_generate_rgb8 would make
/// with `params`, so a caller can size its buffer: width × height × 3 bytes per image. Any pointer
/// may be NULL.
///
/// # Safety
/// `sd` live; `params` NULL or valid; the out pointers NULL or valid.
#[no_mangle]
pub unsafe extern "C" fn drt_sd_image_size(
    sd: *const drt_sd,
    params: *const drt_generate_params,
    width: *mut u32,
    height: *mut u32,
    batch: *mut u32,
) -> drt_status {
    boundary(|| {
        let sd = sd.as_ref().ok_or_else(|| invalid("sd is NULL"))?;
        let req = request(&sd.sd, params)?;
        for (ptr, v) in [(width, req.size.0), (height, req.size.1), (batch, req.request.params.batch)] {
            if !ptr.is_null() {
                *ptr = v as u32;
            }
        }
        Ok(())
    })
}

/// Runs the request `params` make, once `out_len` values of `unit` are known to hold its images.
unsafe fn generate(
    sd: *const drt_sd,
    params: *const drt_generate_params,
    out_len: usize,
    unit: &str,
) -> Result<Images, Error> {
    let sd = sd.as_ref().ok_or_else(|| invalid("sd is NULL"))?;
    let req = request(&sd.sd, params)?;
    let needed = req.out_len();
    if out_len < needed {
        let ((w, h), n) = (req.size, req.request.params.batch);
        return Err(invalid(&format!("out holds {out_len} {unit}; {n} images of {w}×{h} RGB need {needed}")));
    }
    sd.sd.generate_with(&req.request, &mut progress(req.progress, req.user_data))
}

/// Generates images from `params` (prompts, negative prompts, size, sampler, steps, guidance,
/// seed, batch, initial latents as `noise`) into `out`: 8-bit RGB, rows top to bottom, images one
/// after another (`out_len` bytes; drt_sd_image_size tells how many are needed). `progress` is
/// called after every sampling step; returning false cancels (DRT_ERR_CANCELLED). On any error
/// `out` is untouched.
///
/// # Safety
/// `sd` live; `params` NULL or valid; `out` valid for `out_len` bytes.
#[no_mangle]
pub unsafe extern "C" fn drt_sd_generate_rgb8(
    sd: *const drt_sd,
    params: *const drt_generate_params,
    out: *mut u8,
    out_len: usize,
) -> drt_status {
    boundary(|| {
        if out.is_null() {
            return Err(invalid("out is NULL"));
        }
        let rgb = generate(sd, params, out_len, "bytes")?.rgb8();
        std::ptr::copy_nonoverlapping(rgb.as_ptr(), out, rgb.len());
        Ok(())
    })
}

/// As drt_sd_generate_rgb8, into floats in [0, 1] (diffusers' `output_type="np"`), `out_len` floats.
///
/// # Safety
/// `sd` live; `params` NULL or valid; `out` valid for `out_len` floats.
#[no_mangle]
pub unsafe extern "C" fn drt_sd_generate(
    sd: *const drt_sd,
    params: *const drt_generate_params,
    out: *mut f32,
    out_len: usize,
) -> drt_status {
    boundary(|| {
        if out.is_null() {
            return Err(invalid("out is NULL"));
        }
        write_out(&generate(sd, params, out_len, "floats")?.pixels, out, out_len)
    })
}
