//! The C ABI (`include/diffusion_rt.h`, generated from this file by cbindgen in build.rs).
//!
//! Conventions: opaque handles with create/free pairs (freeing NULL is a no-op); every fallible call
//! returns a `drt_status` and leaves a thread-local message for `drt_last_error`; parameter structs
//! start with `struct_size` so later fields never break old callers; outputs go into caller buffers;
//! every entry point checks its pointers and catches panics, so no unwinding crosses into C.
#![allow(non_camel_case_types)]

use std::cell::RefCell;
use std::ffi::{c_char, c_void, CStr, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use crate::backend::{BackendKind, BackendOptions};
use crate::error::Error;
use crate::pipeline::{GenerateParams, Session};
use crate::Model;

/// Result of every fallible call.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum drt_status {
    DRT_OK = 0,
    DRT_ERR_INVALID_ARGUMENT = 1,
    DRT_ERR_IO = 2,
    DRT_ERR_MODEL = 3,
    DRT_ERR_MANIFEST = 4,
    DRT_ERR_BACKEND_UNAVAILABLE = 5,
    DRT_ERR_CANCELLED = 6,
    DRT_ERR_NON_FINITE = 7,
    DRT_ERR_OUT_OF_MEMORY = 8,
    DRT_ERR_INTERNAL = 9,
}

impl From<&Error> for drt_status {
    fn from(e: &Error) -> Self {
        match e {
            Error::InvalidArgument(_) => drt_status::DRT_ERR_INVALID_ARGUMENT,
            Error::Io(_) => drt_status::DRT_ERR_IO,
            Error::Model(_) => drt_status::DRT_ERR_MODEL,
            Error::Manifest(_) => drt_status::DRT_ERR_MANIFEST,
            Error::BackendUnavailable(_) => drt_status::DRT_ERR_BACKEND_UNAVAILABLE,
            Error::Cancelled { .. } => drt_status::DRT_ERR_CANCELLED,
            Error::NonFinite { .. } => drt_status::DRT_ERR_NON_FINITE,
            Error::OutOfMemory(_) => drt_status::DRT_ERR_OUT_OF_MEMORY,
            Error::Internal(_) => drt_status::DRT_ERR_INTERNAL,
        }
    }
}

thread_local! {
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

fn set_last_error(msg: &str) {
    let c = CString::new(msg.replace('\0', " ")).unwrap_or_default();
    LAST_ERROR.with(|e| *e.borrow_mut() = c);
}

/// Runs `f` behind the panic boundary, turning errors and panics into a status and a message.
fn boundary(f: impl FnOnce() -> Result<(), Error>) -> drt_status {
    set_last_error("");
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(())) => drt_status::DRT_OK,
        Ok(Err(e)) => {
            set_last_error(&e.to_string());
            drt_status::from(&e)
        }
        Err(payload) => {
            let msg = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            set_last_error(&format!("internal error (panic): {msg}"));
            drt_status::DRT_ERR_INTERNAL
        }
    }
}

fn invalid(msg: &str) -> Error {
    Error::InvalidArgument(msg.to_string())
}

/// A NUL-terminated UTF-8 string argument; NULL gives `None`.
unsafe fn opt_str<'a>(p: *const c_char, what: &str) -> Result<Option<&'a str>, Error> {
    if p.is_null() {
        return Ok(None);
    }
    CStr::from_ptr(p).to_str().map(Some).map_err(|_| invalid(&format!("{what} is not valid UTF-8")))
}

/// Copies a caller's params struct of `struct_size` bytes over the defaults, so a caller built
/// against an older, shorter struct keeps working. Every params struct starts with `struct_size`.
unsafe fn read_params<T: Copy>(p: *const T, defaults: T) -> Result<T, Error> {
    if p.is_null() {
        return Ok(defaults);
    }
    let size = std::ptr::read_unaligned(p as *const u32) as usize;
    if size < std::mem::size_of::<u32>() {
        return Err(invalid("params.struct_size is too small; initialise params with the *_default() function"));
    }
    let mut out = defaults;
    let n = size.min(std::mem::size_of::<T>());
    std::ptr::copy_nonoverlapping(p as *const u8, &mut out as *mut T as *mut u8, n);
    Ok(out)
}

/// Version of the library these declarations come from.
pub const DRT_VERSION_MAJOR: u32 = 0;
pub const DRT_VERSION_MINOR: u32 = 1;
pub const DRT_VERSION_PATCH: u32 = 0;
/// Bumped on every incompatible change of this header. An app compares it with drt_abi_version() at
/// start-up to catch a mismatched shared library before calling anything else.
pub const DRT_ABI_VERSION: u32 = 1;

/// The ABI version of the loaded library (see DRT_ABI_VERSION).
#[no_mangle]
pub extern "C" fn drt_abi_version() -> u32 {
    DRT_ABI_VERSION
}

/// The library version, e.g. "0.1.0". Static storage; never NULL.
#[no_mangle]
pub extern "C" fn drt_version() -> *const c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr() as *const c_char
}

/// The message of the last failed call on this thread ("" when it succeeded). Valid until the next
/// drt_ call on this thread; never NULL.
#[no_mangle]
pub extern "C" fn drt_last_error() -> *const c_char {
    LAST_ERROR.with(|e| e.borrow().as_ptr())
}

/// A static name for a status code, e.g. "DRT_ERR_IO"; never NULL.
#[no_mangle]
pub extern "C" fn drt_status_string(s: drt_status) -> *const c_char {
    let name: &'static str = match s {
        drt_status::DRT_OK => "DRT_OK\0",
        drt_status::DRT_ERR_INVALID_ARGUMENT => "DRT_ERR_INVALID_ARGUMENT\0",
        drt_status::DRT_ERR_IO => "DRT_ERR_IO\0",
        drt_status::DRT_ERR_MODEL => "DRT_ERR_MODEL\0",
        drt_status::DRT_ERR_MANIFEST => "DRT_ERR_MANIFEST\0",
        drt_status::DRT_ERR_BACKEND_UNAVAILABLE => "DRT_ERR_BACKEND_UNAVAILABLE\0",
        drt_status::DRT_ERR_CANCELLED => "DRT_ERR_CANCELLED\0",
        drt_status::DRT_ERR_NON_FINITE => "DRT_ERR_NON_FINITE\0",
        drt_status::DRT_ERR_OUT_OF_MEMORY => "DRT_ERR_OUT_OF_MEMORY\0",
        drt_status::DRT_ERR_INTERNAL => "DRT_ERR_INTERNAL\0",
    };
    name.as_ptr() as *const c_char
}

/// A loaded model: immutable, shareable by any number of threads and sessions.
pub struct drt_model {
    model: Arc<Model>,
}

/// One generation at a time over a model; owns the backend state and scratch buffers.
pub struct drt_session {
    session: Mutex<Session>,
    cancel: Arc<AtomicBool>,
}

/// How a model is loaded. Initialise with drt_model_params_default().
#[repr(C)]
#[derive(Clone, Copy)]
pub struct drt_model_params {
    /// sizeof(drt_model_params), set by drt_model_params_default().
    pub struct_size: u32,
    /// "tract", "ort", or NULL for automatic (ONNX Runtime when its library is found).
    pub backend: *const c_char,
    /// ONNX Runtime shared library; NULL: $DRT_ORT_LIB, $ORT_DYLIB_PATH, then .ort/lib.
    pub ort_library_path: *const c_char,
    /// "cpu" (NULL), "cuda", "tensorrt", "coreml", "nnapi" or "xnnpack".
    pub execution_provider: *const c_char,
    /// Intra-op threads for ONNX Runtime; 0 = number of physical cores.
    pub threads: u32,
}

/// Defaults: automatic backend, CPU, default threads.
#[no_mangle]
pub extern "C" fn drt_model_params_default() -> drt_model_params {
    drt_model_params {
        struct_size: std::mem::size_of::<drt_model_params>() as u32,
        backend: std::ptr::null(),
        ort_library_path: std::ptr::null(),
        execution_provider: std::ptr::null(),
        threads: 0,
    }
}

/// Loads the model directory `model_dir` (model.json + ONNX files). `params` may be NULL for the
/// defaults. On success `*out` owns the model (free with drt_model_free); on error it is untouched.
///
/// # Safety
/// `model_dir` must be a NUL-terminated string; `params` NULL or a valid params struct; `out` valid.
#[no_mangle]
pub unsafe extern "C" fn drt_model_load(
    model_dir: *const c_char,
    params: *const drt_model_params,
    out: *mut *mut drt_model,
) -> drt_status {
    boundary(|| {
        if out.is_null() {
            return Err(invalid("out is NULL"));
        }
        let dir = opt_str(model_dir, "model_dir")?.ok_or_else(|| invalid("model_dir is NULL"))?;
        let p = read_params(params, drt_model_params_default())?;
        let opts = BackendOptions {
            backend: match opt_str(p.backend, "params.backend")? {
                None => BackendKind::Auto,
                Some(s) => s.parse()?,
            },
            ort_library: opt_str(p.ort_library_path, "params.ort_library_path")?.map(PathBuf::from),
            execution_provider: opt_str(p.execution_provider, "params.execution_provider")?.unwrap_or("cpu").to_string(),
            threads: (p.threads > 0).then_some(p.threads as usize),
        };
        let model = Model::load(dir.as_ref(), &opts)?;
        *out = Box::into_raw(Box::new(drt_model { model: Arc::new(model) }));
        Ok(())
    })
}

/// Frees a model. NULL is a no-op. Sessions created from it keep what they need alive.
///
/// # Safety
/// `m` must be NULL or a model from drt_model_load, not freed before.
#[no_mangle]
pub unsafe extern "C" fn drt_model_free(m: *mut drt_model) {
    if !m.is_null() {
        let _ = catch_unwind(AssertUnwindSafe(|| drop(Box::from_raw(m))));
    }
}

/// Floats per sample (the product of the manifest's sample_shape); 0 for NULL.
///
/// # Safety
/// `m` must be NULL or a live model.
#[no_mangle]
pub unsafe extern "C" fn drt_model_sample_len(m: *const drt_model) -> usize {
    if m.is_null() {
        return 0;
    }
    catch_unwind(AssertUnwindSafe(|| (*m).model.sample_len())).unwrap_or(0)
}

/// Session options (none yet besides the size; reserved for later fields).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct drt_session_params {
    /// sizeof(drt_session_params), set by drt_session_params_default().
    pub struct_size: u32,
}

#[no_mangle]
pub extern "C" fn drt_session_params_default() -> drt_session_params {
    drt_session_params { struct_size: std::mem::size_of::<drt_session_params>() as u32 }
}

/// Creates a session over `m`. `params` may be NULL. Free with drt_session_free.
///
/// # Safety
/// `m` must be a live model; `params` NULL or valid; `out` valid.
#[no_mangle]
pub unsafe extern "C" fn drt_session_create(
    m: *const drt_model,
    params: *const drt_session_params,
    out: *mut *mut drt_session,
) -> drt_status {
    boundary(|| {
        if m.is_null() || out.is_null() {
            return Err(invalid("model or out is NULL"));
        }
        read_params(params, drt_session_params_default())?;
        let session = Session::new(&(*m).model)?;
        let cancel = session.cancel_flag();
        *out = Box::into_raw(Box::new(drt_session { session: Mutex::new(session), cancel }));
        Ok(())
    })
}

/// Frees a session. NULL is a no-op. Must not run concurrently with a call on the same session.
///
/// # Safety
/// `s` must be NULL or a session from drt_session_create, not freed before.
#[no_mangle]
pub unsafe extern "C" fn drt_session_free(s: *mut drt_session) {
    if !s.is_null() {
        let _ = catch_unwind(AssertUnwindSafe(|| drop(Box::from_raw(s))));
    }
}

/// Progress callback: called after each step; return false to cancel the run.
pub type drt_progress_fn = Option<unsafe extern "C" fn(step: u32, total: u32, user_data: *mut c_void) -> bool>;

/// One generation's settings. Initialise with drt_generate_params_default().
#[repr(C)]
#[derive(Clone, Copy)]
pub struct drt_generate_params {
    /// sizeof(drt_generate_params), set by drt_generate_params_default().
    pub struct_size: u32,
    pub seed: u64,
    /// Sampler steps; 0 is invalid.
    pub steps: u32,
    /// Classifier-free guidance scale; negative = the model's default.
    pub guidance: f32,
    /// Sampler name ("dpmpp-2m", "euler", ...); NULL = the model's default.
    pub sampler: *const c_char,
    /// Class label for every sample; -1 = none (the null class, or a model without classes).
    pub class_label: i32,
    /// Number of samples; the output holds batch * drt_model_sample_len() floats.
    pub batch: u32,
    /// Optional progress callback and its user data.
    pub progress: drt_progress_fn,
    pub user_data: *mut c_void,
    /// Optional per-sample class labels (`batch` of them), overriding class_label; NULL = none.
    pub classes: *const i32,
    /// Optional initial standard-normal noise, `batch * sample_len` floats; NULL = seeded noise.
    pub noise: *const f32,
    /// Optional float conditioning: `cond_count` input names and one value each for all samples.
    pub cond_names: *const *const c_char,
    pub cond_values: *const f32,
    pub cond_count: u32,
    /// Optional img2img start, `sample_len` (shared) or `batch * sample_len` floats; NULL = none.
    pub init: *const f32,
    pub init_len: usize,
    /// img2img: the fraction of the schedule run on `init`, in (0, 1].
    pub strength: f32,
}

/// Defaults: seed 0, 20 steps, the model's guidance and sampler, no class, batch 1, no callback.
#[no_mangle]
pub extern "C" fn drt_generate_params_default() -> drt_generate_params {
    drt_generate_params {
        struct_size: std::mem::size_of::<drt_generate_params>() as u32,
        seed: 0,
        steps: 20,
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
    }
}

/// Generates `params->batch` samples into `out` (`out_len` floats). A short buffer is
/// DRT_ERR_INVALID_ARGUMENT and nothing is written; on any error `out` is untouched. One call at a
/// time per session; different sessions may run on different threads.
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
        if s.is_null() || out.is_null() {
            return Err(invalid("session or out is NULL"));
        }
        let p = read_params(params, drt_generate_params_default())?;
        if p.steps == 0 {
            return Err(invalid("steps must be at least 1"));
        }
        let session = &*s;
        let mut guard = session.session.lock().map_err(|_| Error::Internal("session poisoned by an earlier panic".into()))?;
        let needed = (p.batch as usize).checked_mul(guard.model().sample_len()).ok_or_else(|| invalid("batch too large"))?;
        if out_len < needed {
            return Err(invalid(&format!("out holds {out_len} floats; batch {} needs {needed}", p.batch)));
        }
        let batch = p.batch as usize;
        if batch == 0 || batch > crate::pipeline::MAX_BATCH {
            return Err(invalid(&format!("batch must be between 1 and {}, got {batch}", crate::pipeline::MAX_BATCH)));
        }
        let classes = if !p.classes.is_null() {
            std::slice::from_raw_parts(p.classes, batch).iter().map(|&c| c as i64).collect()
        } else if p.class_label < 0 {
            Vec::new()
        } else {
            vec![p.class_label as i64]
        };
        let mut conds = Vec::with_capacity(p.cond_count as usize);
        if p.cond_count > 0 && (p.cond_names.is_null() || p.cond_values.is_null()) {
            return Err(invalid("cond_count > 0 needs cond_names and cond_values"));
        }
        for i in 0..p.cond_count as usize {
            let name = opt_str(*p.cond_names.add(i), "params.cond_names")?.ok_or_else(|| invalid("a cond_names entry is NULL"))?;
            conds.push((name.to_string(), vec![*p.cond_values.add(i)]));
        }
        let gp = GenerateParams {
            sampler: opt_str(p.sampler, "params.sampler")?.map(str::to_string),
            steps: Some(p.steps),
            guidance: (p.guidance >= 0.0 || p.guidance.is_nan()).then_some(p.guidance),
            batch,
            seed: p.seed,
            classes,
            conds,
            noise: (!p.noise.is_null()).then(|| std::slice::from_raw_parts(p.noise, needed).to_vec()),
            init: (!p.init.is_null()).then(|| std::slice::from_raw_parts(p.init, p.init_len).to_vec()),
            strength: (!p.init.is_null()).then_some(p.strength),
            ..GenerateParams::default()
        };
        let (cb, ud) = (p.progress, p.user_data);
        let gen = guard.generate(&gp, &mut |done, total| match cb {
            Some(f) => f(done as u32, total as u32, ud),
            None => true,
        })?;
        std::ptr::copy_nonoverlapping(gen.samples.as_ptr(), out, gen.samples.len());
        Ok(())
    })
}

/// Asks the running generation on `s` to stop after its current step (it returns
/// DRT_ERR_CANCELLED). Safe from any thread; NULL is a no-op.
///
/// # Safety
/// `s` must be NULL or a live session.
#[no_mangle]
pub unsafe extern "C" fn drt_session_cancel(s: *const drt_session) {
    if !s.is_null() {
        (*s).cancel.store(true, Ordering::SeqCst);
    }
}
