//! Models and sessions: loading, sharing across threads, freeing, and cancelling a session's run.

use std::ffi::c_char;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use super::{boundary, drt_status, invalid, opt_str, read_params};
use crate::backend::{BackendKind, BackendOptions, ExecutionProvider};
use crate::error::Error;
use crate::panic::catch;
use crate::pipeline::Session;
use crate::Model;

/// A loaded model: immutable, shareable by any number of threads and sessions.
pub struct drt_model {
    model: Arc<Model>,
}

/// One generation at a time over a model; owns the backend state and scratch buffers.
pub struct drt_session {
    pub(super) session: Mutex<Session>,
    cancel: Arc<AtomicBool>,
}

impl drt_session {
    /// Floats of one sample of the session's model, and of the samples of the generation in
    /// progress (0 with none): the lengths bindings size output arrays by. 0 and 0 for a session a
    /// panic poisoned, whose calls then fail anyway.
    #[cfg_attr(not(feature = "jni"), allow(dead_code))]
    pub(crate) fn lengths(&self) -> (usize, usize) {
        self.session.lock().map_or((0, 0), |s| (s.model().sample_len(), s.current_sample().map_or(0, <[f32]>::len)))
    }
}

/// How a model is loaded. Initialise with drt_model_params_default().
#[repr(C)]
#[derive(Clone, Copy)]
pub struct drt_model_params {
    /// sizeof(drt_model_params), set by drt_model_params_default().
    pub struct_size: u32,
    /// "tract", "ort", or NULL for automatic (ONNX Runtime when its library is found).
    pub backend: *const c_char,
    /// ONNX Runtime shared library (a file, a folder holding it, or a bare name for the system
    /// loader); NULL: $DRT_ORT_LIB, then $ORT_DYLIB_PATH, then the system loader's search for
    /// libonnxruntime. Never a path relative to the working directory unless given here.
    pub ort_library_path: *const c_char,
    /// "cpu" (NULL), "cuda", "tensorrt", "coreml", "nnapi" or "xnnpack".
    pub execution_provider: *const c_char,
    /// Intra-op threads for ONNX Runtime; 0 = the number of physical cores, at most 8. A value
    /// given here is not capped. (tract runs on one thread whatever this says.)
    pub threads: u32,
    /// Attention computed in this many slices of queries (same result, smaller attention maps);
    /// 0 = the model's default (8 for a Stable Diffusion export, else whole), 1 = whole. (This
    /// field was `reserved`, always 0.)
    pub attention_slices: u32,
    /// Nonzero: ONNX Runtime reads the weights of a graph with external data from the mapped
    /// file instead of private copies (less private memory, somewhat slower).
    pub mapped_weights: u32,
    /// Zero. Fills what would be tail padding, so fields added later never overlap it.
    pub reserved: u32,
}

super::params_layout!(drt_model_params: struct_size, backend, ort_library_path, execution_provider, threads,
    attention_slices, mapped_weights, reserved);

/// Defaults: automatic backend, CPU, default threads.
#[no_mangle]
pub extern "C" fn drt_model_params_default() -> drt_model_params {
    drt_model_params {
        struct_size: std::mem::size_of::<drt_model_params>() as u32,
        backend: std::ptr::null(),
        ort_library_path: std::ptr::null(),
        execution_provider: std::ptr::null(),
        threads: 0,
        attention_slices: 0,
        mapped_weights: 0,
        reserved: 0,
    }
}

/// The backend options a caller's model params (NULL: the defaults) ask for.
pub(super) unsafe fn backend_options(params: *const drt_model_params) -> Result<BackendOptions, Error> {
    let p = read_params(params, drt_model_params_default())?;
    let opts = BackendOptions {
        backend: match opt_str(p.backend, "params.backend")? {
            None => BackendKind::Auto,
            Some(s) => s.parse()?,
        },
        ort_library: opt_str(p.ort_library_path, "params.ort_library_path")?.map(PathBuf::from),
        execution_provider: match opt_str(p.execution_provider, "params.execution_provider")? {
            None => ExecutionProvider::Cpu,
            Some(s) => s.parse()?,
        },
        threads: (p.threads > 0).then_some(p.threads as usize),
        attention_slices: (p.attention_slices > 0).then_some(p.attention_slices as usize),
        mapped_weights: p.mapped_weights != 0,
        segments: None,
    };
    Ok(opts)
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
        let opts = backend_options(params)?;
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
        let _ = catch(|| drop(Box::from_raw(m)));
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
    catch(|| (*m).model.sample_len()).unwrap_or(0)
}

/// Session options. Initialise with drt_session_params_default().
#[repr(C)]
#[derive(Clone, Copy)]
pub struct drt_session_params {
    /// sizeof(drt_session_params), set by drt_session_params_default().
    pub struct_size: u32,
    /// Cap, in MiB, on the buffers one generation needs (the runtime's own, not the backend's
    /// activations): larger requests fail up front with DRT_ERR_OUT_OF_MEMORY. 0 = the default,
    /// 2048 MiB; UINT32_MAX = no cap.
    pub memory_limit_mb: u32,
}

super::params_layout!(drt_session_params: struct_size, memory_limit_mb);

/// Defaults for drt_session_create (which also takes NULL for them).
#[no_mangle]
pub extern "C" fn drt_session_params_default() -> drt_session_params {
    drt_session_params { struct_size: std::mem::size_of::<drt_session_params>() as u32, memory_limit_mb: 0 }
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
        let p = read_params(params, drt_session_params_default())?;
        let mut session = Session::new(&(*m).model)?;
        match p.memory_limit_mb {
            0 => {}
            u32::MAX => session.set_memory_limit(usize::MAX),
            mb => session.set_memory_limit((mb as usize).saturating_mul(1 << 20)),
        }
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
        let _ = catch(|| drop(Box::from_raw(s)));
    }
}

/// Asks the running generation on `s` to stop: drt_generate returns DRT_ERR_CANCELLED once the step
/// in flight ends, and in a caller-driven run the next drt_generate_step returns it without
/// stepping. Safe from any thread (it does not wait for the session's lock); NULL is a no-op. The
/// session stays usable: the next generation begun on `s` clears the request.
///
/// # Safety
/// `s` must be NULL or a live session.
#[no_mangle]
pub unsafe extern "C" fn drt_session_cancel(s: *const drt_session) {
    if !s.is_null() {
        (*s).cancel.store(true, Ordering::SeqCst);
    }
}
