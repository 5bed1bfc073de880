//! Text to image step by step through the C API, as a UI drives it: a `drt_sd_session` over a
//! loaded `drt_sd`, begun, stepped, read (latents, or a decoded preview) and finished, cancellable
//! from any thread. The same shape as drt_session's caller-driven generation.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use super::generate::{drt_generate_params, progress, write_out, DRT_READ_PREDICTION, DRT_READ_SAMPLE};
use super::sd::{check_out, copy_rgb8, drt_sd, drt_sd_params, request, PixelUse};
use super::{boundary, drt_status, invalid, put};
use crate::error::Error;
use crate::panic::catch;
use crate::sd::SdSession;

/// One text-to-image generation at a time over a `drt_sd`; calls on one session wait for each
/// other, different sessions may run on different threads.
pub struct drt_sd_session {
    session: Mutex<SdSession>,
    cancel: Arc<AtomicBool>,
}

impl drt_sd_session {
    /// Floats of the latents and bytes of the RGB images of the generation in progress (0 and 0
    /// with none, or for a session a panic poisoned, whose calls then fail anyway): the lengths
    /// bindings size output arrays by.
    #[cfg_attr(not(feature = "jni"), allow(dead_code))]
    pub(crate) fn lengths(&self) -> (usize, usize) {
        self.session.lock().map_or((0, 0), |s| {
            let latents = s.current_latents().map_or(0, <[f32]>::len);
            (latents, s.image_size().map_or(0, |(n, (w, h))| n * w * h * 3))
        })
    }
}

/// Creates a session over `sd` (which it keeps alive: drt_sd_free may come first). Free with
/// drt_sd_session_free.
///
/// # Safety
/// `sd` a live export; `out` valid.
#[no_mangle]
pub unsafe extern "C" fn drt_sd_session_create(sd: *const drt_sd, out: *mut *mut drt_sd_session) -> drt_status {
    boundary(|| {
        let sd = sd.as_ref().ok_or_else(|| invalid("sd is NULL"))?;
        if out.is_null() {
            return Err(invalid("out is NULL"));
        }
        let session = SdSession::new(Arc::clone(&sd.sd));
        let cancel = session.cancel_flag();
        *out = Box::into_raw(Box::new(drt_sd_session { session: Mutex::new(session), cancel }));
        Ok(())
    })
}

/// Frees a session. NULL is a no-op. Must not run concurrently with a call on the same session.
///
/// # Safety
/// `s` NULL or from drt_sd_session_create, not freed before.
#[no_mangle]
pub unsafe extern "C" fn drt_sd_session_free(s: *mut drt_sd_session) {
    if !s.is_null() {
        let _ = catch(|| drop(Box::from_raw(s)));
    }
}

/// Asks the generation on `s` to stop: drt_sd_session_generate_rgb8 returns DRT_ERR_CANCELLED once
/// the step in flight ends, and the next drt_sd_session_step returns it without stepping. Safe
/// from any thread (it does not wait for the session); NULL is a no-op. The next generation begun
/// clears the request.
///
/// # Safety
/// `s` NULL or a live session.
#[no_mangle]
pub unsafe extern "C" fn drt_sd_session_cancel(s: *const drt_sd_session) {
    if !s.is_null() {
        (*s).cancel.store(true, Ordering::SeqCst);
    }
}

unsafe fn lock<'a>(s: *const drt_sd_session) -> Result<MutexGuard<'a, SdSession>, Error> {
    let s = s.as_ref().ok_or_else(|| invalid("session is NULL"))?;
    s.session.lock().map_err(|_| Error::Internal("session poisoned by an earlier panic".into()))
}

/// As drt_sd_generate_rgb8, on this session: `params->progress` after every step, and
/// drt_sd_session_cancel from any thread.
///
/// # Safety
/// `s` live; `params` and `sd_params` NULL or valid; `out` valid for `out_len` bytes.
#[no_mangle]
pub unsafe extern "C" fn drt_sd_session_generate_rgb8(
    s: *mut drt_sd_session,
    params: *const drt_generate_params,
    sd_params: *const drt_sd_params,
    out: *mut u8,
    out_len: usize,
) -> drt_status {
    boundary(|| {
        if out.is_null() {
            return Err(invalid("out is NULL"));
        }
        let mut session = lock(s)?;
        let req = request(PixelUse::Prepare, session.export(), params, sd_params)?;
        check_out(out_len, req.batch, req.size, "bytes")?;
        let images = session.generate(&req.request, &mut progress(req.progress, req.user_data))?;
        copy_rgb8(&images.pixels, out);
        Ok(())
    })
}

/// Begins a caller-driven generation: encodes the prompts and the start image, loads the UNet and
/// draws the initial latents (the work before the first step), and sets `*total_steps` (may be
/// NULL). `params->progress` is not called; the caller sees every step. A generation in progress
/// on `s` is dropped.
///
/// # Safety
/// `s` live; `params` and `sd_params` NULL or valid; `total_steps` NULL or valid.
#[no_mangle]
pub unsafe extern "C" fn drt_sd_session_begin(
    s: *mut drt_sd_session,
    params: *const drt_generate_params,
    sd_params: *const drt_sd_params,
    total_steps: *mut u32,
) -> drt_status {
    boundary(|| {
        let mut session = lock(s)?;
        let req = request(PixelUse::Prepare, session.export(), params, sd_params)?;
        let total = session.begin(&req.request)?;
        put(total_steps, total);
        Ok(())
    })
}

/// Takes the next sampling step; `*steps_done` (may be NULL) is set to the steps done. After
/// drt_sd_session_cancel it is DRT_ERR_CANCELLED without stepping; any error ends the generation.
///
/// # Safety
/// `s` live; `steps_done` NULL or valid.
#[no_mangle]
pub unsafe extern "C" fn drt_sd_session_step(s: *mut drt_sd_session, steps_done: *mut u32) -> drt_status {
    boundary(|| {
        let done = lock(s)?.step()?;
        put(steps_done, done);
        Ok(())
    })
}

/// Sets `*width`, `*height` (pixels) and `*batch` (images) of the generation in progress, so a
/// caller can size the buffers of drt_sd_session_preview_rgb8 and drt_sd_session_finish_rgb8:
/// width × height × 3 bytes per image. Any pointer may be NULL; with no generation in progress it
/// is DRT_ERR_INVALID_ARGUMENT.
///
/// # Safety
/// `s` live; the out pointers NULL or valid.
#[no_mangle]
pub unsafe extern "C" fn drt_sd_session_image_size(
    s: *const drt_sd_session,
    width: *mut u32,
    height: *mut u32,
    batch: *mut u32,
) -> drt_status {
    boundary(|| {
        let (n, (w, h)) = lock(s)?.image_size().ok_or_else(no_generation)?;
        put(width, w);
        put(height, h);
        put(batch, n);
        Ok(())
    })
}

/// Copies the latents of the generation in progress (`what` = DRT_READ_SAMPLE: as they stand;
/// DRT_READ_PREDICTION: the clean latents the last step predicted) into `out`: batch × 4 ×
/// height/8 × width/8 floats for SD 1.x/2.x, unscaled. Another `what`, a short buffer, no
/// generation, or a prediction before the first step is DRT_ERR_INVALID_ARGUMENT.
///
/// # Safety
/// `s` live; `out` valid for `out_len` floats.
#[no_mangle]
pub unsafe extern "C" fn drt_sd_session_read(
    s: *const drt_sd_session,
    what: u32,
    out: *mut f32,
    out_len: usize,
) -> drt_status {
    boundary(|| {
        if what > DRT_READ_PREDICTION {
            return Err(invalid(&format!("what {what} is neither DRT_READ_SAMPLE nor DRT_READ_PREDICTION")));
        }
        let session = lock(s)?;
        let latents = session.current_latents().ok_or_else(no_generation)?;
        let src = match what {
            DRT_READ_SAMPLE => latents,
            _ => session.current_prediction().ok_or_else(|| invalid("no prediction before the first step"))?,
        };
        write_out(src, out, out_len)
    })
}

/// Decodes the last step's prediction with the VAE into `out` as 8-bit RGB images (what the
/// result will look like; one VAE decode, so a UI calls it every few steps). Sized as the result.
///
/// # Safety
/// `s` live; `out` valid for `out_len` bytes.
#[no_mangle]
pub unsafe extern "C" fn drt_sd_session_preview_rgb8(
    s: *const drt_sd_session,
    out: *mut u8,
    out_len: usize,
) -> drt_status {
    boundary(|| {
        if out.is_null() {
            return Err(invalid("out is NULL"));
        }
        let session = lock(s)?;
        let (batch, size) = session.image_size().ok_or_else(no_generation)?;
        check_out(out_len, batch, size, "bytes")?;
        copy_rgb8(&session.preview()?, out);
        Ok(())
    })
}

/// Ends the generation whose steps are all done and decodes its images into `out` (8-bit RGB, as
/// drt_sd_generate_rgb8). Before the last step, or with a short buffer, it is
/// DRT_ERR_INVALID_ARGUMENT, nothing is written, and the generation stays in progress.
///
/// # Safety
/// `s` live; `out` valid for `out_len` bytes.
#[no_mangle]
pub unsafe extern "C" fn drt_sd_session_finish_rgb8(
    s: *mut drt_sd_session,
    out: *mut u8,
    out_len: usize,
) -> drt_status {
    boundary(|| {
        if out.is_null() {
            return Err(invalid("out is NULL"));
        }
        let mut session = lock(s)?;
        let (batch, size) = session.image_size().ok_or_else(no_generation)?;
        check_out(out_len, batch, size, "bytes")?;
        copy_rgb8(&session.finish()?.pixels, out);
        Ok(())
    })
}

/// Drops the generation in progress on `s`, if any. NULL is a no-op.
///
/// # Safety
/// `s` NULL or a live session.
#[no_mangle]
pub unsafe extern "C" fn drt_sd_session_abandon(s: *mut drt_sd_session) {
    if !s.is_null() {
        let _ = catch(|| lock(s).map(|mut g| g.abandon()));
    }
}

fn no_generation() -> Error {
    invalid("no generation in progress: call drt_sd_session_begin first")
}
