//! Text to image through the C API: a Stable Diffusion export as an opaque `drt_sd`, generated
//! with a drt_generate_params (the sampling settings every model has) and a drt_sd_params (what
//! only text to image has: prompts, size, VAE tiling, start image, mask) into a caller's RGB8 or
//! float buffer.

use std::ffi::{c_char, c_void};
use std::sync::Arc;

use super::generate::{
    array, drt_generate_params, drt_generate_params_default, drt_progress_fn, generate_params, progress, write_out,
};
use super::model::{backend_options, drt_model_params};
use super::{boundary, drt_status, invalid, opt_str, put, read_params};
use crate::error::Error;
use crate::limits::{self, MAX_BATCH};
use crate::sd::image_input::{self, Pixels};
use crate::sd::pipeline::rgb8;
use crate::sd::{Images, SdOptions, StableDiffusion, TextToImage};

/// A loaded Stable Diffusion export. Thread-safe: generations on one `drt_sd` may run on several
/// threads at once.
pub struct drt_sd {
    pub(super) sd: Arc<StableDiffusion>,
}

/// How a Stable Diffusion export is held in memory. Initialise with drt_sd_load_params_default().
#[repr(C)]
#[derive(Clone, Copy)]
pub struct drt_sd_load_params {
    /// sizeof(drt_sd_load_params), set by drt_sd_load_params_default().
    pub struct_size: u32,
    /// Nonzero: load the text encoder, UNet and VAE decoder only while each runs, freeing each
    /// before the next (peak memory of the largest part, at the cost of loading them every time).
    pub low_memory: u32,
    /// Megabytes of resident memory every generation must stay under: the runtime plans stages,
    /// attention slices, UNet segments and VAE tiles to fit, and a budget it cannot meet is
    /// DRT_ERR_OUT_OF_MEMORY naming the smallest it could. 0 = none.
    pub memory_budget_mb: u32,
}

super::params_layout!(drt_sd_load_params: struct_size, low_memory, memory_budget_mb);

/// Defaults: every part stays loaded, no budget.
#[no_mangle]
pub extern "C" fn drt_sd_load_params_default() -> drt_sd_load_params {
    drt_sd_load_params {
        struct_size: std::mem::size_of::<drt_sd_load_params>() as u32,
        low_memory: 0,
        memory_budget_mb: 0,
    }
}

/// 8-bit pixels as an app holds them, rows top to bottom, channels interleaved.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct drt_image {
    /// `pixels_len` bytes: width × height × channels. NULL with 0 = no image.
    pub pixels: *const u8,
    /// The number of bytes at `pixels`.
    pub pixels_len: usize,
    /// Pixels per row.
    pub width: u32,
    /// Rows.
    pub height: u32,
    /// 1 (grey), 3 (RGB) or 4 (RGBA; alpha is dropped).
    pub channels: u32,
    /// Zero, as drt_sd_params.reserved.
    pub reserved: u32,
}

const NO_IMAGE: drt_image =
    drt_image { pixels: std::ptr::null(), pixels_len: 0, width: 0, height: 0, channels: 0, reserved: 0 };

/// What only text-to-image has, beside a drt_generate_params (seed, steps, guidance, sampler,
/// batch, initial latents as `noise`, progress). Initialise with drt_sd_params_default().
#[repr(C)]
#[derive(Clone, Copy)]
pub struct drt_sd_params {
    /// sizeof(drt_sd_params), set by drt_sd_params_default().
    pub struct_size: u32,
    /// Image size in pixels; 0 = the UNet's training size.
    pub width: u32,
    /// See width.
    pub height: u32,
    /// Decode in overlapping tiles of this many latents per side (bounded decoder memory); 0 = whole.
    pub vae_tile: u32,
    /// `prompts_len` UTF-8 prompts: one for all images, or one per image (with batch 0, one image
    /// per prompt).
    pub prompts: *const *const c_char,
    /// The number of values at `prompts`.
    pub prompts_len: usize,
    /// Negative prompts (guidance's unconditional branch): none (the empty prompt), one for all
    /// images or one per image.
    pub negative_prompts: *const *const c_char,
    /// The number of values at `negative_prompts`.
    pub negative_prompts_len: usize,
    /// img2img: the starting image as an app holds it, any size, converted to RGB and resized as
    /// diffusers' image processor does; with width and height 0, the images are its size rounded
    /// down to a multiple of 8 (with a mask, the UNet's size). Pixels 0 = none.
    pub start_image: drt_image,
    /// Inpainting with `start_image`: white = repaint, black = keep, any size and channels,
    /// converted to grey and resized as diffusers' mask processor does. Pixels 0 = none.
    pub mask_image: drt_image,
    /// img2img with values instead of `start_image`: `init_image_len` floats in [0, 1], height ×
    /// width × 3 at the images' size (one for all images, or one per image), rows top to bottom.
    /// NULL with 0 = none.
    pub init_image: *const f32,
    /// The number of values at `init_image`.
    pub init_image_len: usize,
    /// img2img: the fraction of the schedule run on `init_image`, in (0, 1]; 0 = 0.8, or 1 with a
    /// mask (diffusers' defaults).
    pub strength: f32,
    /// Zero. Fills what would be padding, so the struct has none.
    pub reserved: u32,
    /// Inpainting with `init_image`: `mask_len` floats, height × width at the images' size (one
    /// mask for all images, or one per image), at least 0.5 = repaint, below = keep. NULL with 0 =
    /// none.
    pub mask: *const f32,
    /// The number of values at `mask`.
    pub mask_len: usize,
}

super::params_layout!(drt_sd_params: struct_size, width, height, vae_tile, prompts, prompts_len, negative_prompts,
    negative_prompts_len, start_image, mask_image, init_image, init_image_len, strength, reserved, mask, mask_len);

/// Defaults: the UNet's size, no prompt (the empty one), no tiling, text to image.
#[no_mangle]
pub extern "C" fn drt_sd_params_default() -> drt_sd_params {
    drt_sd_params {
        struct_size: std::mem::size_of::<drt_sd_params>() as u32,
        width: 0,
        height: 0,
        vae_tile: 0,
        prompts: std::ptr::null(),
        prompts_len: 0,
        negative_prompts: std::ptr::null(),
        negative_prompts_len: 0,
        start_image: NO_IMAGE,
        mask_image: NO_IMAGE,
        init_image: std::ptr::null(),
        init_image_len: 0,
        strength: 0.0,
        reserved: 0,
        mask: std::ptr::null(),
        mask_len: 0,
    }
}

/// Loads the Stable Diffusion export in `dir` (the directory `optimum-cli export onnx --task
/// text-to-image` writes: model_index.json, tokenizer/, text_encoder/, unet/, vae_decoder/).
/// `params` and `load_params` may be NULL for the defaults. On success `*out` owns it (free with
/// drt_sd_free).
///
/// # Safety
/// `dir` a NUL-terminated string; `params` and `load_params` NULL or valid; `out` valid.
#[no_mangle]
pub unsafe extern "C" fn drt_sd_load(
    dir: *const c_char,
    params: *const drt_model_params,
    load_params: *const drt_sd_load_params,
    out: *mut *mut drt_sd,
) -> drt_status {
    boundary(|| {
        if out.is_null() {
            return Err(invalid("out is NULL"));
        }
        let dir = opt_str(dir, "dir")?.ok_or_else(|| invalid("dir is NULL"))?;
        let backend = backend_options(params)?;
        let lp = read_params(load_params, drt_sd_load_params_default())?;
        let opts = SdOptions {
            low_memory: lp.low_memory != 0,
            memory_budget_mb: (lp.memory_budget_mb > 0).then_some(u64::from(lp.memory_budget_mb)),
        };
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

/// The pixels of a caller's image; `None` for none.
unsafe fn pixels<'a>(img: &drt_image, what: &str) -> Result<Option<Pixels<'a>>, Error> {
    let Some(data) = array(img.pixels, img.pixels_len, limits::MAX_TENSOR_VALUES, &format!("{what}.pixels"))? else {
        return Ok(None);
    };
    Ok(Some(Pixels { width: img.width as usize, height: img.height as usize, channels: img.channels as usize, data }))
}

/// What [`request`] does with a caller's start image and mask pixels.
pub(super) enum PixelUse {
    /// Converted and resized into the request, for a generation.
    Prepare,
    /// Checked only, for the size of what a generation would make.
    CheckOnly,
}

/// A caller's request, the size of the images it makes, and its progress callback.
pub(super) struct Request {
    pub(super) request: TextToImage,
    /// Images, and pixels per image side: (width, height).
    pub(super) batch: usize,
    pub(super) size: (usize, usize),
    pub(super) progress: drt_progress_fn,
    pub(super) user_data: *mut c_void,
}

/// `pixels` as 8-bit RGB ([`rgb8`]) into `out`, which [`check_out`] found long enough.
pub(super) unsafe fn copy_rgb8(pixels: &[f32], out: *mut u8) {
    let rgb = rgb8(pixels);
    std::ptr::copy_nonoverlapping(rgb.as_ptr(), out, rgb.len());
}

/// Refuses a buffer of `out_len` `unit`s that cannot hold `batch` RGB images of `(w, h)` pixels.
pub(super) fn check_out(out_len: usize, batch: usize, (w, h): (usize, usize), unit: &str) -> Result<(), Error> {
    let needed = batch * w * h * 3;
    match out_len < needed {
        true => Err(invalid(&format!("out holds {out_len} {unit}; {batch} images of {w}×{h} RGB need {needed}"))),
        false => Ok(()),
    }
}

/// The request a caller's params make of `sd`.
pub(super) unsafe fn request(
    pixels_use: PixelUse,
    sd: &StableDiffusion,
    params: *const drt_generate_params,
    sd_params: *const drt_sd_params,
) -> Result<Request, Error> {
    let p = read_params(params, drt_generate_params_default())?;
    let q = read_params(sd_params, drt_sd_params_default())?;
    let prompts = strings(q.prompts, q.prompts_len, "prompts")?;
    let negative_prompts = strings(q.negative_prompts, q.negative_prompts_len, "negative_prompts")?;
    let size = |v: u32| (v > 0).then_some(v as usize);
    let start_px = pixels(&q.start_image, "start_image")?;
    let mask_px = pixels(&q.mask_image, "mask_image")?;
    let (width, height) = match (size(q.width), size(q.height)) {
        (None, None) => {
            image_input::default_size(start_px.map(|p| (p.width, p.height)), mask_px.is_some(), sd.vae_factor())
        }
        given => given,
    };
    let [c, h, w] = sd.latent_shape(width, height)?;
    let (mut params, _) = generate_params(&p, c * h * w)?;
    if !params.classes.is_empty() || !params.conds.is_empty() || !params.tensors.is_empty() {
        return Err(invalid(
            "a Stable Diffusion export takes prompts: class_label, classes, conditioning and tensors must be unset",
        ));
    }
    if params.init.is_some() {
        return Err(invalid("a Stable Diffusion start image is drt_sd_params.init_image; leave params.init NULL"));
    }
    let init_image = array(q.init_image, q.init_image_len, limits::MAX_TENSOR_VALUES, "init_image")?;
    let mask_image = array(q.mask, q.mask_len, limits::MAX_TENSOR_VALUES, "mask")?;
    params.strength = (q.strength != 0.0).then_some(q.strength);
    let mut request = TextToImage {
        prompts,
        negative_prompts,
        width,
        height,
        vae_tile: size(q.vae_tile),
        init_image: init_image.map(<[f32]>::to_vec),
        encoder_noise: None,
        mask_image: mask_image.map(<[f32]>::to_vec),
        params,
    };
    // Sizing a buffer needs the size alone: the pixels are checked, not converted and resized.
    match pixels_use {
        PixelUse::Prepare => sd.set_images(&mut request, start_px, mask_px)?,
        PixelUse::CheckOnly => image_input::check_images(&request, start_px, mask_px)?,
    }
    let f = sd.vae_factor();
    let batch = request.batch_size(c * h * w)?;
    Ok(Request { request, batch, size: (w * f, h * f), progress: p.progress, user_data: p.user_data })
}

/// Sets `*width`, `*height` (pixels) and `*batch` (images) of what drt_sd_generate_rgb8 would make
/// with `params` and `sd_params`, so a caller can size its buffer: width × height × 3 bytes per
/// image. Any pointer may be NULL.
///
/// # Safety
/// `sd` live; `params` and `sd_params` NULL or valid; the out pointers NULL or valid.
#[no_mangle]
pub unsafe extern "C" fn drt_sd_image_size(
    sd: *const drt_sd,
    params: *const drt_generate_params,
    sd_params: *const drt_sd_params,
    width: *mut u32,
    height: *mut u32,
    batch: *mut u32,
) -> drt_status {
    boundary(|| {
        let sd = sd.as_ref().ok_or_else(|| invalid("sd is NULL"))?;
        let req = request(PixelUse::CheckOnly, &sd.sd, params, sd_params)?;
        put(width, req.size.0);
        put(height, req.size.1);
        put(batch, req.batch);
        Ok(())
    })
}

/// Runs the request the params make, once `out_len` values of `unit` are known to hold its images.
unsafe fn generate(
    sd: *const drt_sd,
    params: *const drt_generate_params,
    sd_params: *const drt_sd_params,
    out_len: usize,
    unit: &str,
) -> Result<Images, Error> {
    let sd = sd.as_ref().ok_or_else(|| invalid("sd is NULL"))?;
    let req = request(PixelUse::Prepare, &sd.sd, params, sd_params)?;
    check_out(out_len, req.batch, req.size, unit)?;
    sd.sd.generate_with(&req.request, &mut progress(req.progress, req.user_data))
}

/// Generates images from `sd_params` (prompts, negative prompts, size, start image, mask) and
/// `params` (sampler, steps, guidance, seed, batch, initial latents as `noise`) into `out`: 8-bit RGB, rows top to bottom, images one
/// after another (`out_len` bytes; drt_sd_image_size tells how many are needed). `progress` is
/// called after every sampling step; returning false cancels (DRT_ERR_CANCELLED). On any error
/// `out` is untouched.
///
/// # Safety
/// `sd` live; `params` and `sd_params` NULL or valid; `out` valid for `out_len` bytes.
#[no_mangle]
pub unsafe extern "C" fn drt_sd_generate_rgb8(
    sd: *const drt_sd,
    params: *const drt_generate_params,
    sd_params: *const drt_sd_params,
    out: *mut u8,
    out_len: usize,
) -> drt_status {
    boundary(|| {
        if out.is_null() {
            return Err(invalid("out is NULL"));
        }
        copy_rgb8(&generate(sd, params, sd_params, out_len, "bytes")?.pixels, out);
        Ok(())
    })
}

/// As drt_sd_generate_rgb8, into floats in [0, 1] (diffusers' `output_type="np"`), `out_len` floats.
///
/// # Safety
/// `sd` live; `params` and `sd_params` NULL or valid; `out` valid for `out_len` floats.
#[no_mangle]
pub unsafe extern "C" fn drt_sd_generate(
    sd: *const drt_sd,
    params: *const drt_generate_params,
    sd_params: *const drt_sd_params,
    out: *mut f32,
    out_len: usize,
) -> drt_status {
    boundary(|| {
        if out.is_null() {
            return Err(invalid("out is NULL"));
        }
        write_out(&generate(sd, params, sd_params, out_len, "floats")?.pixels, out, out_len)
    })
}
