//! Generation: the parameters, the whole run into a caller buffer, and the caller-driven loop
//! (begin, step, read, finish) for apps that draw a preview between steps.

use std::ffi::{c_char, c_void};

use super::{boundary, drt_session, drt_status, invalid, opt_str, put, read_params};
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
    /// which is what `drt generate` runs without --steps.
    pub steps: u32,
    /// Classifier-free guidance scale; negative = the model's default.
    pub guidance: f32,
    /// Sampler name ("dpmpp-2m", "euler", ...); NULL = the model's default.
    pub sampler: *const c_char,
    /// Class label for every sample; -1 = none (the null class, or a model without classes).
    pub class_label: i32,
    /// Number of samples; 0 = as many as the longest per-sample list holds (`classes`, `noise` in
    /// whole samples, and for drt_sd_* the prompts and negative prompts), else 1. The output holds
    /// batch × drt_model_sample_len() floats.
    pub batch: u32,
    /// Optional progress callback, called on the generating thread after each step of drt_generate
    /// (and of drt_sd_generate*); returning false cancels the generation.
    pub progress: drt_progress_fn,
    /// Passed back untouched to `progress`.
    pub user_data: *mut c_void,
    /// Optional per-sample class labels overriding class_label: `classes_len` of them, one for all
    /// samples or one per sample. NULL with 0 = none.
    pub classes: *const i32,
    /// The number of values at `classes`.
    pub classes_len: usize,
    /// Optional initial standard-normal noise instead of seeded noise: `noise_len` floats,
    /// batch × sample_len. NULL with 0 = seeded noise.
    pub noise: *const f32,
    /// The number of values at `noise`.
    pub noise_len: usize,
    /// Optional float conditioning: `cond_count` names of the model's cond_inputs and one value per
    /// name, for every sample; others keep their manifest default. Both NULL when cond_count is 0.
    pub cond_names: *const *const c_char,
    /// One value per entry of `cond_names`.
    pub cond_values: *const f32,
    /// The number of entries in cond_names and cond_values.
    pub cond_count: u32,
    /// Zero. Fills what would be padding, so the struct has none.
    pub reserved: u32,
    /// Optional img2img start for model.json models: `init_len` floats, sample_len (one for all)
    /// or batch × sample_len. NULL with 0 = none. (Stable Diffusion's start image is
    /// drt_sd_params.init_image.)
    pub init: *const f32,
    /// The number of values at `init`.
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
    /// See guidance_interval_lo.
    pub guidance_interval_hi: f32,
    /// Optional step table: `sigmas_len` noise levels in the model's convention, last one included
    /// (usually 0), replacing the sampler's schedule and `steps` (a table found offline, such as
    /// Align Your Steps). NULL = the sampler's schedule over `steps`.
    pub sigmas: *const f64,
    /// The number of values at `sigmas`.
    pub sigmas_len: usize,
    /// Output-level step caching on steps where the trajectory is stable: DRT_STEP_CACHE_OFF,
    /// DRT_STEP_CACHE_SKIP (reuse the last prediction) or DRT_STEP_CACHE_AB (Adams-Bashforth
    /// extrapolation); any other value is DRT_ERR_INVALID_ARGUMENT.
    pub step_cache: u32,
    /// Largest |third difference| / |first difference| of the trajectory to skip at; 0 = 0.5.
    pub cache_threshold: f32,
    /// Most steps skipped in a row; 0 = 1.
    pub cache_max_skips: u32,
    /// Zero, as `reserved`.
    pub reserved2: u32,
    /// Tensor inputs (model.json `denoiser.tensor_inputs`, e.g. an observation): `tensor_count`
    /// input names, and for each a pointer to its floats and how many there are: one sample's
    /// tensor (the graph's per-sample shape, row-major) for every sample, or `batch` of them. Every
    /// tensor input of the model must be given; all three arrays NULL when tensor_count is 0.
    pub tensor_names: *const *const c_char,
    /// For each name, its floats.
    pub tensor_values: *const *const f32,
    /// For each name, the number of floats at its `tensor_values` entry.
    pub tensor_lens: *const usize,
    /// The number of entries in the three arrays.
    pub tensor_count: usize,
}

/// drt_generate_params.step_cache: no step caching.
pub const DRT_STEP_CACHE_OFF: u32 = 0;
/// drt_generate_params.step_cache: a skipped step reuses the last prediction.
pub const DRT_STEP_CACHE_SKIP: u32 = 1;
/// drt_generate_params.step_cache: a skipped step extrapolates the last two predictions.
pub const DRT_STEP_CACHE_AB: u32 = 2;

super::params_layout!(drt_generate_params: struct_size, seed, steps, guidance, sampler, class_label, batch, progress,
    user_data, classes, classes_len, noise, noise_len, cond_names, cond_values, cond_count, reserved, init, init_len,
    strength, adaptive_guidance, guidance_interval_lo, guidance_interval_hi, sigmas, sigmas_len, step_cache,
    cache_threshold, cache_max_skips, reserved2, tensor_names, tensor_values, tensor_lens, tensor_count);

/// Defaults: seed 0, the model's steps, guidance and sampler, no class, the batch the lists give
/// (1 without any), no callback: with a seed and a class set, the samples `drt generate` makes with
/// no sampling options, bit for bit.
#[no_mangle]
pub extern "C" fn drt_generate_params_default() -> drt_generate_params {
    drt_generate_params {
        struct_size: std::mem::size_of::<drt_generate_params>() as u32,
        seed: 0,
        steps: 0,
        guidance: -1.0,
        sampler: std::ptr::null(),
        class_label: -1,
        batch: 0,
        progress: None,
        user_data: std::ptr::null_mut(),
        classes: std::ptr::null(),
        classes_len: 0,
        noise: std::ptr::null(),
        noise_len: 0,
        cond_names: std::ptr::null(),
        cond_values: std::ptr::null(),
        cond_count: 0,
        reserved: 0,
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
        reserved2: 0,
        tensor_names: std::ptr::null(),
        tensor_values: std::ptr::null(),
        tensor_lens: std::ptr::null(),
        tensor_count: 0,
    }
}

/// `len` values at `p`: NULL with 0 is none, NULL with more is an error, and a length over
/// `limit` is refused before anything is read.
pub(super) unsafe fn array<'a, T>(p: *const T, len: usize, limit: usize, what: &str) -> Result<Option<&'a [T]>, Error> {
    match (p.is_null(), len) {
        (true, 0) => Ok(None),
        (true, _) => Err(invalid(&format!("{what} is NULL with {what}_len {len}"))),
        (false, 0) => Err(invalid(&format!("{what} is set with {what}_len 0: say how many values it holds"))),
        (false, n) if n > limit => Err(invalid(&format!("{what}_len {n} is over {limit}"))),
        (false, n) => Ok(Some(std::slice::from_raw_parts(p, n))),
    }
}

/// The checked Rust form of a caller's params: the generation's settings and the output length
/// (`batch * sample_len` floats) they need.
pub(super) unsafe fn generate_params(
    p: &drt_generate_params,
    sample_len: usize,
) -> Result<(GenerateParams, usize), Error> {
    let classes = array(p.classes, p.classes_len, limits::MAX_BATCH, "classes")?;
    let noise = array(p.noise, p.noise_len, limits::MAX_TENSOR_VALUES, "noise")?;
    let init = array(p.init, p.init_len, limits::MAX_TENSOR_VALUES, "init")?;
    let sigmas = array(p.sigmas, p.sigmas_len, limits::MAX_STEPS + 1, "sigmas")?;
    let classes: Vec<i64> = match classes {
        Some(c) => c.iter().map(|&c| c as i64).collect(),
        None if p.class_label < -1 => {
            return Err(invalid(&format!("class_label must be a class index or -1 (none), got {}", p.class_label)))
        }
        None if p.class_label == -1 => Vec::new(),
        None => vec![p.class_label as i64],
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
        batch: p.batch as usize,
        seed: p.seed,
        classes,
        conds,
        noise: noise.map(<[f32]>::to_vec),
        init: init.map(<[f32]>::to_vec),
        strength: init.is_some().then_some(p.strength),
        sigmas: sigmas.map(<[f64]>::to_vec),
        step_cache: step_cache(p)?,
        guidance_rules: GuidanceRules {
            adaptive: (p.adaptive_guidance != 0.0).then_some(p.adaptive_guidance),
            interval: (p.guidance_interval_lo != 0.0 || p.guidance_interval_hi != 0.0)
                .then_some((p.guidance_interval_lo as f64, p.guidance_interval_hi as f64)),
        },
        ..GenerateParams::default()
    };
    let batch = gp.batch_size(sample_len)?;
    let needed = batch.checked_mul(sample_len).ok_or_else(|| invalid("batch too large"))?;
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

/// Sets `*batch` to the number of samples `params` make on the model of `s` (its `batch`, or the
/// library's batch rule for batch 0), so a caller can size its output: batch ×
/// drt_model_sample_len() floats.
///
/// # Safety
/// `s` a live session; `params` NULL or valid; `batch` valid.
#[no_mangle]
pub unsafe extern "C" fn drt_generate_batch(
    s: *const drt_session,
    params: *const drt_generate_params,
    batch: *mut u32,
) -> drt_status {
    boundary(|| {
        if batch.is_null() {
            return Err(invalid("batch is NULL"));
        }
        let sample_len = lock(s)?.model().sample_len();
        let p = read_params(params, drt_generate_params_default())?;
        let (_, needed) = generate_params(&p, sample_len)?;
        *batch = (needed / sample_len.max(1)) as u32;
        Ok(())
    })
}

/// Generates the batch drt_generate_batch tells of into `out` (`out_len` floats). A short buffer is
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
        let sample_len = session.model().sample_len();
        let (gp, needed) = generate_params(&p, sample_len)?;
        if out_len < needed {
            let batch = needed / sample_len.max(1);
            return Err(invalid(&format!("out holds {out_len} floats; batch {batch} needs {needed}")));
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
        put(total_steps, total);
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
        put(steps_done, done);
        Ok(())
    })
}

/// drt_generate_read: the sample as it stands, noisy until the last step (the model's native
/// scaling).
pub const DRT_READ_SAMPLE: u32 = 0;
/// drt_generate_read: the clean result the last step predicted, a preview of the final sample.
/// Available after the first step.
pub const DRT_READ_PREDICTION: u32 = 1;

/// Copies the current sample (`what` = DRT_READ_SAMPLE) or prediction (DRT_READ_PREDICTION) of the
/// generation in progress on `s` into `out` (`batch * drt_model_sample_len()` floats). Another
/// `what`, a short buffer, no generation in progress, or a prediction asked for before the first
/// step is DRT_ERR_INVALID_ARGUMENT, and nothing is written.
///
/// # Safety
/// `s` a live session; `out` valid for `out_len` floats.
#[no_mangle]
pub unsafe extern "C" fn drt_generate_read(
    s: *const drt_session,
    what: u32,
    out: *mut f32,
    out_len: usize,
) -> drt_status {
    boundary(|| {
        if what > DRT_READ_PREDICTION {
            return Err(invalid(&format!("what {what} is neither DRT_READ_SAMPLE nor DRT_READ_PREDICTION")));
        }
        let session = lock(s)?;
        let none = || invalid("no generation in progress: call drt_generate_begin first");
        let src = if what == DRT_READ_SAMPLE {
            session.current_sample().ok_or_else(none)?
        } else {
            session.progress().ok_or_else(none)?;
            session.current_prediction().ok_or_else(|| invalid("no prediction before the first step"))?
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
