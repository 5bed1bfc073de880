//! Generation: the parameters, the whole run into a caller buffer, and the caller-driven loop
//! (begin, step, read, finish) for apps that draw a preview between steps.

use std::ffi::{c_char, c_void};

use super::{boundary, drt_session, drt_status, invalid, opt_str, read_params};
use crate::cache::{CacheMode, CacheOptions};
use crate::error::Error;
use crate::guidance::GuidanceRules;
use crate::limits;
use crate::panic::catch;
use crate::pipeline::Session;
use crate::request::GenerateParams;

/// Progress callback: called after each step; return false to cancel the run.
pub type drt_progress_fn = Option<unsafe extern "C" fn(step: u32, total: u32, user_data: *mut c_void) -> bool>;

/// One generation's settings. Initialise with drt_generate_params_default().
#[repr(C)]
#[derive(Clone, Copy)]
pub struct drt_generate_params {
    /// sizeof(drt_generate_params), set by drt_generate_params_default().
    pub struct_size: u32,
    /// Fixes the initial noise and every stochastic sampler's noise: the same seed and settings give
    /// the same samples, bit for bit, on one backend.
    pub seed: u64,
    /// Sampler steps; 0 = the model's default (its model.json `defaults.steps`, or its
    /// `defaults.sigmas` table; else 20; 50 for a Stable Diffusion export, 4 with an LCM scheduler),
    /// which is what `drt generate` runs without --steps. (ABI 1 had no default: 20 was set here.)
    pub steps: u32,
    /// Classifier-free guidance scale; negative = the model's default.
    pub guidance: f32,
    /// Sampler name ("dpmpp-2m", "euler", ...); NULL = the model's default.
    pub sampler: *const c_char,
    /// Class label for every sample; -1 = none (the null class, or a model without classes).
    pub class_label: i32,
    /// Number of samples; the output holds batch * drt_model_sample_len() floats.
    pub batch: u32,
    /// Optional progress callback, called on the generating thread after each step of drt_generate
    /// (and of drt_sd_generate*); returning false cancels the generation.
    pub progress: drt_progress_fn,
    /// Passed back untouched to `progress`.
    pub user_data: *mut c_void,
    /// Optional per-sample class labels (`batch` of them; say how many in `classes_len`),
    /// overriding class_label; NULL = none.
    pub classes: *const i32,
    /// Optional initial standard-normal noise, `batch * sample_len` floats (say how many in
    /// `noise_len`); NULL = seeded noise.
    pub noise: *const f32,
    /// Optional float conditioning: `cond_count` names of the model's cond_inputs; others keep
    /// their manifest default. NULL when cond_count is 0.
    pub cond_names: *const *const c_char,
    /// One value per name in `cond_names`, for every sample.
    pub cond_values: *const f32,
    /// Number of entries in cond_names and cond_values.
    pub cond_count: u32,
    /// Optional img2img start, `sample_len` (shared) or `batch * sample_len` floats; NULL = none.
    /// For drt_sd_*: the starting image(s), height × width × 3 floats in [0, 1] each.
    pub init: *const f32,
    /// Number of floats at `init`.
    pub init_len: usize,
    /// img2img: the fraction of the schedule run on `init`, in (0, 1].
    pub strength: f32,
    /// Adaptive guidance: once the conditional and guided predictions' cosine similarity reaches
    /// this threshold (e.g. 0.999), the remaining steps run the conditional pass only. 0 = off.
    pub adaptive_guidance: f32,
    /// Guidance interval: guide only where the noise level sigma (sigma/alpha, k-diffusion's) lies
    /// in [guidance_interval_lo, guidance_interval_hi]. Both 0 = none asked for: every step is
    /// guided, except that a negative `guidance` (the model's default scale) also takes the model's
    /// default interval, if it has one (model.json `defaults.guidance_interval`); 0 and INFINITY
    /// guide every step whatever the model says.
    pub guidance_interval_lo: f32,
    pub guidance_interval_hi: f32,
    /// Optional step table: `sigmas_len` noise levels in the model's convention, last one included
    /// (usually 0), replacing the sampler's schedule and `steps` (a table found offline, such as
    /// Align Your Steps). NULL = the sampler's schedule over `steps`.
    pub sigmas: *const f64,
    pub sigmas_len: usize,
    /// Output-level step caching on steps where the trajectory is stable: DRT_STEP_CACHE_OFF,
    /// DRT_STEP_CACHE_SKIP (reuse the last prediction) or DRT_STEP_CACHE_AB (Adams-Bashforth
    /// extrapolation). A plain integer, so any value a caller passes is checked, not undefined.
    pub step_cache: u32,
    /// Largest |third difference| / |first difference| of the trajectory to skip at; 0 = 0.5.
    pub cache_threshold: f32,
    /// Most steps skipped in a row; 0 = 1.
    pub cache_max_skips: u32,
    /// Zero. Fills what would be tail padding, so fields added later never overlap it.
    pub reserved: u32,
    /// Stable Diffusion exports (drt_sd_*): `prompts_len` UTF-8 prompts, one for all images or
    /// one per image (then `batch` 1 means one image per prompt).
    pub prompts: *const *const c_char,
    pub prompts_len: usize,
    /// Negative prompts (guidance's unconditional branch): none (the empty prompt), one for all
    /// images or one per image.
    pub negative_prompts: *const *const c_char,
    pub negative_prompts_len: usize,
    /// Image size in pixels; 0 = the UNet's training size.
    pub width: u32,
    pub height: u32,
    /// Decode in overlapping tiles of this many latents per side (bounded decoder memory); 0 = whole.
    pub vae_tile: u32,
    /// Zero, as `reserved`.
    pub reserved2: u32,
    /// For drt_sd_*, inpainting with `init`: height × width floats (one mask for all images, or
    /// `batch` of them), at least 0.5 = repaint, below = keep; NULL = none.
    pub mask: *const f32,
    pub mask_len: usize,
    /// The number of entries `classes` holds, checked against `batch`; 0 = not given (then
    /// `classes` is read as `batch` entries, as before this field existed). Bindings set it.
    pub classes_len: usize,
    /// The number of floats `noise` holds, checked against what the request needs; 0 = not given
    /// (then `noise` is read as that many floats). Bindings set it.
    pub noise_len: usize,
    /// Tensor inputs (model.json `denoiser.tensor_inputs`, e.g. an observation): `tensor_count`
    /// input names, and for each a pointer to its floats and how many there are: one sample's
    /// tensor (the graph's per-sample shape, row-major) for every sample, or `batch` of them. Every
    /// tensor input of the model must be given; all three arrays NULL when tensor_count is 0.
    pub tensor_names: *const *const c_char,
    pub tensor_values: *const *const f32,
    pub tensor_lens: *const usize,
    pub tensor_count: usize,
}

/// drt_generate_params.step_cache: no step caching.
pub const DRT_STEP_CACHE_OFF: u32 = 0;
/// drt_generate_params.step_cache: a skipped step reuses the last prediction.
pub const DRT_STEP_CACHE_SKIP: u32 = 1;
/// drt_generate_params.step_cache: a skipped step extrapolates the last two predictions.
pub const DRT_STEP_CACHE_AB: u32 = 2;

super::params_layout!(drt_generate_params: struct_size, seed, steps, guidance, sampler, class_label, batch, progress,
    user_data, classes, noise, cond_names, cond_values, cond_count, init, init_len, strength, adaptive_guidance,
    guidance_interval_lo, guidance_interval_hi, sigmas, sigmas_len, step_cache, cache_threshold, cache_max_skips, reserved,
    prompts, prompts_len, negative_prompts, negative_prompts_len, width, height, vae_tile, reserved2, mask, mask_len,
    classes_len, noise_len, tensor_names, tensor_values, tensor_lens, tensor_count);

/// Defaults: seed 0, the model's steps, guidance and sampler, no class, batch 1, no callback: with a
/// seed and a class set, the samples `drt generate` makes with no sampling options, bit for bit.
#[no_mangle]
pub extern "C" fn drt_generate_params_default() -> drt_generate_params {
    drt_generate_params {
        struct_size: std::mem::size_of::<drt_generate_params>() as u32,
        seed: 0,
        steps: 0,
        guidance: -1.0,
        sampler: std::ptr::null(),
        class_label: -1,
        batch: 1,
        progress: None,
        user_data: std::ptr::null_mut(),
        classes: std::ptr::null(),
        noise: std::ptr::null(),
        cond_names: std::ptr::null(),
        cond_values: std::ptr::null(),
        cond_count: 0,
        init: std::ptr::null(),
        init_len: 0,
        strength: 0.8,
        adaptive_guidance: 0.0,
        guidance_interval_lo: 0.0,
        guidance_interval_hi: 0.0,
        sigmas: std::ptr::null(),
        sigmas_len: 0,
        step_cache: DRT_STEP_CACHE_OFF,
        cache_threshold: 0.0,
        cache_max_skips: 0,
        reserved: 0,
        prompts: std::ptr::null(),
        prompts_len: 0,
        negative_prompts: std::ptr::null(),
        negative_prompts_len: 0,
        width: 0,
        height: 0,
        vae_tile: 0,
        reserved2: 0,
        mask: std::ptr::null(),
        mask_len: 0,
        classes_len: 0,
        noise_len: 0,
        tensor_names: std::ptr::null(),
        tensor_values: std::ptr::null(),
        tensor_lens: std::ptr::null(),
        tensor_count: 0,
    }
}

/// The checked Rust form of a caller's params: the generation's settings and the output length
/// (`batch * sample_len` floats) they need.
pub(super) unsafe fn generate_params(
    p: &drt_generate_params,
    sample_len: usize,
) -> Result<(GenerateParams, usize), Error> {
    // Checked before `noise` is read as `batch * sample_len` floats.
    let batch = limits::batch(p.batch as usize)?;
    let needed = batch.checked_mul(sample_len).ok_or_else(|| invalid("batch too large"))?;
    let given =
        [("classes", p.classes.is_null(), p.classes_len, batch), ("noise", p.noise.is_null(), p.noise_len, needed)];
    for (what, null, len, want) in given {
        if len != 0 && null {
            return Err(invalid(&format!("{what} is NULL with {what}_len {len}")));
        }
        if len != 0 && len != want {
            return Err(invalid(&format!("{what} holds {len} values; batch {batch} needs {want}")));
        }
    }
    let classes = if !p.classes.is_null() {
        std::slice::from_raw_parts(p.classes, batch).iter().map(|&c| c as i64).collect()
    } else if p.class_label < -1 {
        return Err(invalid(&format!("class_label must be a class index or -1 (none), got {}", p.class_label)));
    } else if p.class_label == -1 {
        Vec::new()
    } else {
        vec![p.class_label as i64]
    };
    let mut conds = Vec::with_capacity(p.cond_count as usize);
    if p.cond_count > 0 && (p.cond_names.is_null() || p.cond_values.is_null()) {
        return Err(invalid("cond_count > 0 needs cond_names and cond_values"));
    }
    for i in 0..p.cond_count as usize {
        let name =
            opt_str(*p.cond_names.add(i), "params.cond_names")?.ok_or_else(|| invalid("a cond_names entry is NULL"))?;
        conds.push((name.to_string(), vec![*p.cond_values.add(i)]));
    }
    let gp = GenerateParams {
        tensors: tensors(p)?,
        sampler: opt_str(p.sampler, "params.sampler")?.map(str::to_string),
        steps: (p.steps != 0).then_some(p.steps),
        guidance: (p.guidance >= 0.0 || p.guidance.is_nan()).then_some(p.guidance),
        batch,
        seed: p.seed,
        classes,
        conds,
        noise: (!p.noise.is_null()).then(|| std::slice::from_raw_parts(p.noise, needed).to_vec()),
        init: (!p.init.is_null()).then(|| std::slice::from_raw_parts(p.init, p.init_len).to_vec()),
        strength: (!p.init.is_null()).then_some(p.strength),
        sigmas: (!p.sigmas.is_null()).then(|| std::slice::from_raw_parts(p.sigmas, p.sigmas_len).to_vec()),
        step_cache: step_cache(p)?,
        guidance_rules: GuidanceRules {
            adaptive: (p.adaptive_guidance != 0.0).then_some(p.adaptive_guidance),
            interval: (p.guidance_interval_lo != 0.0 || p.guidance_interval_hi != 0.0)
                .then_some((p.guidance_interval_lo as f64, p.guidance_interval_hi as f64)),
        },
        ..GenerateParams::default()
    };
    Ok((gp, needed))
}

/// The caller's tensor inputs, each checked before it is read.
unsafe fn tensors(p: &drt_generate_params) -> Result<Vec<(String, Vec<f32>)>, Error> {
    let n = p.tensor_count;
    if n == 0 {
        return Ok(Vec::new());
    }
    if n > limits::MAX_TENSOR_INPUTS {
        return Err(invalid(&format!("tensor_count {n} is over {}", limits::MAX_TENSOR_INPUTS)));
    }
    if p.tensor_names.is_null() || p.tensor_values.is_null() || p.tensor_lens.is_null() {
        return Err(invalid("tensor_count > 0 needs tensor_names, tensor_values and tensor_lens"));
    }
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let name = opt_str(*p.tensor_names.add(i), "params.tensor_names")?
            .ok_or_else(|| invalid(&format!("tensor_names[{i}] is NULL")))?;
        let (values, len) = (*p.tensor_values.add(i), *p.tensor_lens.add(i));
        if len > limits::MAX_TENSOR_VALUES {
            return Err(invalid(&format!(
                "tensor input `{name}`: tensor_lens[{i}] {len} is over {}",
                limits::MAX_TENSOR_VALUES
            )));
        }
        let data = match (values.is_null(), len) {
            (_, 0) => Vec::new(),
            (true, _) => {
                return Err(invalid(&format!("tensor input `{name}`: tensor_values[{i}] is NULL with {len} values")))
            }
            (false, _) => std::slice::from_raw_parts(values, len).to_vec(),
        };
        out.push((name.to_string(), data));
    }
    Ok(out)
}

/// The step cache a caller's params ask for.
fn step_cache(p: &drt_generate_params) -> Result<Option<CacheOptions>, Error> {
    let mode = match p.step_cache {
        DRT_STEP_CACHE_OFF => return Ok(None),
        DRT_STEP_CACHE_SKIP => CacheMode::Skip,
        DRT_STEP_CACHE_AB => CacheMode::AdamsBashforth,
        other => return Err(invalid(&format!("step_cache {other} is not one of the DRT_STEP_CACHE_* values"))),
    };
    let mut opts = CacheOptions::new(mode);
    if p.cache_threshold != 0.0 {
        opts.threshold = p.cache_threshold;
    }
    if p.cache_max_skips != 0 {
        opts.max_skips = p.cache_max_skips;
    }
    Ok(Some(opts))
}

/// The session behind `s`, locked for one call.
unsafe fn lock<'a>(s: *const drt_session) -> Result<std::sync::MutexGuard<'a, Session>, Error> {
    if s.is_null() {
        return Err(invalid("session is NULL"));
    }
    (*s).session.lock().map_err(|_| Error::Internal("session poisoned by an earlier panic".into()))
}

/// A caller's progress callback as generations call it; without one, they go on.
pub(super) fn progress(cb: drt_progress_fn, user_data: *mut c_void) -> impl FnMut(usize, usize) -> bool {
    move |done, total| match cb {
        // SAFETY: the caller's contract for `progress` and `user_data` (drt_generate_params).
        Some(f) => unsafe { f(done as u32, total as u32, user_data) },
        None => true,
    }
}

/// Copies `src` into the caller's buffer, or refuses a short one without writing anything.
pub(super) unsafe fn write_out(src: &[f32], out: *mut f32, out_len: usize) -> Result<(), Error> {
    if out.is_null() {
        return Err(invalid("out is NULL"));
    }
    if out_len < src.len() {
        return Err(invalid(&format!("out holds {out_len} floats; {} are needed", src.len())));
    }
    std::ptr::copy_nonoverlapping(src.as_ptr(), out, src.len());
    Ok(())
}

/// Generates `params->batch` samples into `out` (`out_len` floats). A short buffer is
/// DRT_ERR_INVALID_ARGUMENT and nothing is written; on any error `out` is untouched. One call at a
/// time per session (concurrent calls on one session wait for each other); different sessions may
/// run on different threads. A generation begun with drt_generate_begin on `s` is dropped.
///
/// # Safety
/// `s` a live session; `params` NULL or valid; `out` valid for `out_len` floats.
#[no_mangle]
pub unsafe extern "C" fn drt_generate(
    s: *mut drt_session,
    params: *const drt_generate_params,
    out: *mut f32,
    out_len: usize,
) -> drt_status {
    boundary(|| {
        if out.is_null() {
            return Err(invalid("out is NULL"));
        }
        let mut session = lock(s)?;
        let p = read_params(params, drt_generate_params_default())?;
        let (gp, needed) = generate_params(&p, session.model().sample_len())?;
        if out_len < needed {
            return Err(invalid(&format!("out holds {out_len} floats; batch {} needs {needed}", p.batch)));
        }
        let gen = session.generate(&gp, &mut progress(p.progress, p.user_data))?;
        write_out(&gen.samples, out, out_len)
    })
}

/// Begins a caller-driven generation on `s` (for UIs that draw a preview between steps): checks
/// `params` as drt_generate does, draws the initial sample, and sets `*total_steps` (may be NULL)
/// to the number of drt_generate_step calls the run takes. `params->progress` is not called; the
/// caller sees every step. A generation already in progress on `s` is dropped.
///
/// # Safety
/// `s` a live session; `params` NULL or valid; `total_steps` NULL or valid.
#[no_mangle]
pub unsafe extern "C" fn drt_generate_begin(
    s: *mut drt_session,
    params: *const drt_generate_params,
    total_steps: *mut u32,
) -> drt_status {
    boundary(|| {
        let mut session = lock(s)?;
        let p = read_params(params, drt_generate_params_default())?;
        let (gp, _) = generate_params(&p, session.model().sample_len())?;
        let total = session.begin(&gp)?;
        if !total_steps.is_null() {
            *total_steps = total as u32;
        }
        Ok(())
    })
}

/// Takes the next step of the generation begun on `s`; `*steps_done` (may be NULL) is set to the
/// steps done so far. After drt_session_cancel, the next call returns DRT_ERR_CANCELLED without
/// stepping. Any error ends the generation (begin a new one to go on); stepping with no generation
/// in progress or past the last step is DRT_ERR_INVALID_ARGUMENT.
///
/// # Safety
/// `s` a live session; `steps_done` NULL or valid.
#[no_mangle]
pub unsafe extern "C" fn drt_generate_step(s: *mut drt_session, steps_done: *mut u32) -> drt_status {
    boundary(|| {
        let done = lock(s)?.step()?;
        if !steps_done.is_null() {
            *steps_done = done as u32;
        }
        Ok(())
    })
}

/// What drt_generate_read copies out.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum drt_read_kind {
    /// The sample as it stands, noisy until the last step (the model's native scaling).
    DRT_READ_SAMPLE = 0,
    /// The clean result the last step predicted: a preview of the final sample. Available after
    /// the first step.
    DRT_READ_PREDICTION = 1,
}

/// Copies the current sample or prediction of the generation in progress on `s` into `out`
/// (`batch * drt_model_sample_len()` floats). A short buffer, no generation in progress, or a
/// prediction asked for before the first step is DRT_ERR_INVALID_ARGUMENT, and nothing is written.
///
/// # Safety
/// `s` a live session; `out` valid for `out_len` floats.
#[no_mangle]
pub unsafe extern "C" fn drt_generate_read(
    s: *const drt_session,
    what: drt_read_kind,
    out: *mut f32,
    out_len: usize,
) -> drt_status {
    boundary(|| {
        let session = lock(s)?;
        let none = || invalid("no generation in progress: call drt_generate_begin first");
        let src = match what {
            drt_read_kind::DRT_READ_SAMPLE => session.current_sample().ok_or_else(none)?,
            drt_read_kind::DRT_READ_PREDICTION => {
                session.progress().ok_or_else(none)?;
                session.current_prediction().ok_or_else(|| invalid("no prediction before the first step"))?
            }
        };
        write_out(src, out, out_len)
    })
}

/// Ends the generation on `s` whose steps are all done and copies the result into `out` (as
/// drt_generate would have). Before the last step, or with a short buffer, it is
/// DRT_ERR_INVALID_ARGUMENT, nothing is written, and the generation stays in progress.
///
/// # Safety
/// `s` a live session; `out` valid for `out_len` floats.
#[no_mangle]
pub unsafe extern "C" fn drt_generate_finish(s: *mut drt_session, out: *mut f32, out_len: usize) -> drt_status {
    boundary(|| {
        let mut session = lock(s)?;
        let (done, total) =
            session.progress().ok_or_else(|| invalid("no generation in progress: call drt_generate_begin first"))?;
        if done < total {
            return Err(invalid(&format!(
                "{done} of {total} steps are done: step to the end, or call drt_generate_abandon"
            )));
        }
        write_out(session.current_sample().unwrap_or_default(), out, out_len)?;
        session.finish()?;
        Ok(())
    })
}

/// Drops the generation in progress on `s`, if any. NULL is a no-op.
///
/// # Safety
/// `s` must be NULL or a live session.
#[no_mangle]
pub unsafe extern "C" fn drt_generate_abandon(s: *mut drt_session) {
    if !s.is_null() {
        let _ = catch(|| lock(s).map(|mut g| g.abandon()));
    }
}
