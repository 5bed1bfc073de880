//! The native methods of the Java API (`bindings/java`, class `dev.diffusionrt.Native`). Each is one
//! call of the C API ([`crate::ffi`]), so Java gets C's defaults, checks, messages and panic
//! boundary, and nothing here decides anything about a generation. What this layer adds is what
//! Java needs and C takes on trust: arrays copied with their lengths (so a short Java array is an
//! error, never a read past its end), output arrays sized from the session and the request, strings
//! checked for NUL, negative ints refused where C has unsigned fields, and every failed status
//! thrown as a `DiffusionRtException` carrying it.
//!
//! Handles cross as `long`s; the Java classes own them (`NativeHandle`: no call runs on a freed
//! handle, and closing waits for calls in flight).

use std::ffi::{c_char, c_void, CStr, CString};
use std::ptr;

use jni::errors::{Error as JniError, ErrorPolicy};
use jni::objects::{
    JByteArray, JClass, JDoubleArray, JFloatArray, JIntArray, JObject, JObjectArray, JString, JThrowable,
};
use jni::strings::JNIStr;
use jni::sys::{jboolean, jint, jlong};
use jni::{jni_mangle, jni_sig, jni_str, Env, EnvUnowned, JValue};

use crate::ffi::*;

/// Why a native method did not return normally.
#[derive(Debug, thiserror::Error)]
enum Failure {
    /// A C API status other than DRT_OK, with its message.
    #[error("{1}")]
    Status(drt_status, String),
    /// JNI failed; `JavaException` means a Java exception is already pending and goes on as is.
    #[error(transparent)]
    Jni(#[from] JniError),
}

type Result<T> = std::result::Result<T, Failure>;

fn invalid(msg: String) -> Failure {
    Failure::Status(drt_status::DRT_ERR_INVALID_ARGUMENT, msg)
}

/// The outcome of a C call: its status and this thread's drt_last_error().
fn check(status: drt_status) -> Result<()> {
    if status == drt_status::DRT_OK {
        return Ok(());
    }
    // SAFETY: drt_last_error never returns NULL and its string lives until the next call.
    let msg = unsafe { CStr::from_ptr(drt_last_error()) }.to_string_lossy().into_owned();
    Err(Failure::Status(status, msg))
}

/// Throws every failure as a `DiffusionRtException` (a pending Java exception is left as it is),
/// and a panic as one with DRT_ERR_INTERNAL; the method then returns its type's default.
struct Throw;

fn throw(env: &mut Env, status: drt_status, msg: &str) -> jni::errors::Result<()> {
    let msg = env.new_string(msg)?;
    let e = env.new_object(
        jni_str!("dev/diffusionrt/DiffusionRtException"),
        jni_sig!("(ILjava/lang/String;)V"),
        &[JValue::Int(status as jint), JValue::Object(&msg)],
    )?;
    let e = JThrowable::cast_local(env, e)?;
    match env.throw(e) {
        Err(JniError::JavaException) | Ok(()) => Ok(()),
        Err(e) => Err(e),
    }
}

impl<T: Default> ErrorPolicy<T, Failure> for Throw {
    type Captures<'unowned_env_local: 'native_method, 'native_method> = ();

    fn on_error<'unowned_env_local: 'native_method, 'native_method>(
        env: &mut Env<'unowned_env_local>,
        _: &mut (),
        err: Failure,
    ) -> jni::errors::Result<T> {
        match err {
            Failure::Jni(JniError::JavaException) => {}
            Failure::Jni(e) => throw(env, drt_status::DRT_ERR_INTERNAL, &format!("JNI call failed: {e}"))?,
            Failure::Status(status, msg) => throw(env, status, &msg)?,
        }
        Ok(T::default())
    }

    fn on_panic<'unowned_env_local: 'native_method, 'native_method>(
        env: &mut Env<'unowned_env_local>,
        _: &mut (),
        payload: Box<dyn std::any::Any + Send + 'static>,
    ) -> jni::errors::Result<T> {
        let msg = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        throw(env, drt_status::DRT_ERR_INTERNAL, &format!("internal error (panic): {msg}"))?;
        Ok(T::default())
    }
}

/// Runs a native method's body with the JNI environment, throwing what it fails with.
fn native<'l, T: Default>(env: &mut EnvUnowned<'l>, f: impl FnOnce(&mut Env<'l>) -> Result<T>) -> T {
    env.with_env(f).resolve::<Throw>()
}

/// A Java string as a C one; null gives `None`.
fn c_string(env: &Env, s: &JString, what: &str) -> Result<Option<CString>> {
    if s.is_null() {
        return Ok(None);
    }
    let s = s.try_to_string(env)?;
    CString::new(s).map(Some).map_err(|_| invalid(format!("{what} contains a NUL character")))
}

/// The pointer C takes for an optional string: NULL for `None`.
fn c_ptr(s: &Option<CString>) -> *const c_char {
    s.as_ref().map_or(ptr::null(), |s| s.as_ptr())
}

/// A Java `int` where C has an unsigned field.
fn unsigned(v: jint, what: &str) -> Result<u32> {
    u32::try_from(v).map_err(|_| invalid(format!("{what} must be 0 or more, got {v}")))
}

/// A C handle from the `long` Java keeps it in.
fn handle<T>(h: jlong) -> *mut T {
    h as usize as *mut T
}

fn into_handle<T>(p: *mut T) -> jlong {
    p as usize as jlong
}

/// Reads one field of a Java object (`GenerateParams`, `ModelOptions`).
macro_rules! field {
    ($env:ident, $obj:ident, $name:literal, $sig:literal, $get:ident) => {
        $env.get_field(&$obj, jni_str!($name), jni_sig!($sig))?.$get()?
    };
}

/// A `String` field of a Java object as a C string (`None` for null).
fn string_field(env: &mut Env, obj: &JObject, name: &JNIStr, what: &str) -> Result<Option<CString>> {
    let s = env.get_field(obj, name, jni_sig!("Ljava/lang/String;"))?.l()?;
    let s = JString::cast_local(env, s)?;
    let c = c_string(env, &s, what);
    env.delete_local_ref(s);
    c
}

/// Backend options as C takes them, with the strings they point into.
struct ModelOptions {
    params: drt_model_params,
    _strings: [Option<CString>; 3],
}

/// A `dev.diffusionrt.ModelOptions` (its package-private fields, named as C's).
fn model_options(env: &mut Env, obj: &JObject) -> Result<ModelOptions> {
    if obj.is_null() {
        return Err(invalid("options is null".into()));
    }
    let strings = [
        string_field(env, obj, jni_str!("backend"), "backend")?,
        string_field(env, obj, jni_str!("ortLibraryPath"), "ortLibraryPath")?,
        string_field(env, obj, jni_str!("executionProvider"), "executionProvider")?,
    ];
    let mut params = drt_model_params_default();
    params.backend = c_ptr(&strings[0]);
    params.ort_library_path = c_ptr(&strings[1]);
    params.execution_provider = c_ptr(&strings[2]);
    params.threads = unsigned(field!(env, obj, "threads", "I", i), "threads")?;
    params.attention_slices = unsigned(field!(env, obj, "attentionSlices", "I", i), "attentionSlices")?;
    params.mapped_weights = field!(env, obj, "mappedWeights", "Z", z) as u32;
    Ok(ModelOptions { params, _strings: strings })
}

#[jni_mangle("dev.diffusionrt.Native")]
pub fn abi_version<'l>(_: EnvUnowned<'l>, _: JClass<'l>) -> jint {
    DRT_ABI_VERSION as jint
}

#[jni_mangle("dev.diffusionrt.Native")]
pub fn version<'l>(mut env: EnvUnowned<'l>, _: JClass<'l>) -> JString<'l> {
    native(&mut env, |env| Ok(env.new_string(env!("CARGO_PKG_VERSION"))?))
}

#[jni_mangle("dev.diffusionrt.Native")]
pub fn model_load<'l>(mut env: EnvUnowned<'l>, _: JClass<'l>, dir: JString<'l>, options: JObject<'l>) -> jlong {
    native(&mut env, |env| {
        let dir = c_string(env, &dir, "dir")?;
        let opts = model_options(env, &options)?;
        let mut model = ptr::null_mut();
        // SAFETY: every pointer is NULL or points into `dir` and `opts`, which outlive the call.
        check(unsafe { drt_model_load(c_ptr(&dir), &opts.params, &mut model) })?;
        Ok(into_handle(model))
    })
}

#[jni_mangle("dev.diffusionrt.Native")]
pub fn model_free<'l>(_: EnvUnowned<'l>, _: JClass<'l>, model: jlong) {
    // SAFETY: NativeHandle frees a handle once, after every call on it has returned.
    unsafe { drt_model_free(handle(model)) }
}

#[jni_mangle("dev.diffusionrt.Native")]
pub fn model_sample_length<'l>(_: EnvUnowned<'l>, _: JClass<'l>, model: jlong) -> jlong {
    // SAFETY: a live handle (NativeHandle), or 0, for which C returns 0.
    unsafe { drt_model_sample_len(handle(model)) as jlong }
}

#[jni_mangle("dev.diffusionrt.Native")]
pub fn session_create<'l>(mut env: EnvUnowned<'l>, _: JClass<'l>, model: jlong, memory_limit_mb: jint) -> jlong {
    native(&mut env, |_| {
        let mut p = drt_session_params_default();
        p.memory_limit_mb = match memory_limit_mb {
            -1 => u32::MAX,
            mb => unsigned(mb, "memoryLimitMb")?,
        };
        let mut session = ptr::null_mut();
        // SAFETY: a live model handle (NativeHandle); `p` and `session` outlive the call.
        check(unsafe { drt_session_create(handle(model), &p, &mut session) })?;
        Ok(into_handle(session))
    })
}

#[jni_mangle("dev.diffusionrt.Native")]
pub fn session_free<'l>(_: EnvUnowned<'l>, _: JClass<'l>, session: jlong) {
    // SAFETY: NativeHandle frees a handle once, after every call on it has returned.
    unsafe { drt_session_free(handle(session)) }
}

#[jni_mangle("dev.diffusionrt.Native")]
pub fn session_cancel<'l>(_: EnvUnowned<'l>, _: JClass<'l>, session: jlong) {
    // SAFETY: a live handle; drt_session_cancel only sets an atomic flag, so any thread may call it.
    unsafe { drt_session_cancel(handle(session)) }
}

/// A Java `GenerateParams` as C's `drt_generate_params`, with the copies its pointers point into.
/// The vectors are not touched once the pointers are taken, so the pointers stay valid while this
/// value lives (moving a vector does not move its elements).
struct Params {
    c: drt_generate_params,
    _sampler: Option<CString>,
    _classes: Vec<i32>,
    _noise: Vec<f32>,
    _cond_names: Strings,
    _cond_values: Vec<f32>,
    _tensor_names: Strings,
    _tensor_values: Vec<Vec<f32>>,
    _tensor_ptrs: Vec<*const f32>,
    _tensor_lens: Vec<usize>,
    _init: Vec<f32>,
    _sigmas: Vec<f64>,
}

/// A Java `String[]` as C's array of NUL-terminated strings (a null element stays NULL, which
/// C reports by index).
#[derive(Default)]
struct Strings {
    _owned: Vec<Option<CString>>,
    ptrs: Vec<*const c_char>,
}

/// The elements of a Java primitive array field, or `None` for null; an empty array is refused,
/// as C could not tell it from a missing one.
macro_rules! array_field {
    ($env:ident, $obj:ident, $name:literal, $sig:literal, $ty:ty, $zero:expr) => {{
        let object = field!($env, $obj, $name, $sig, l);
        let array = <$ty>::cast_local($env, object)?;
        if array.is_null() {
            None
        } else {
            let mut v = vec![$zero; array.len($env)?];
            if v.is_empty() {
                return Err(invalid(format!("{} is empty: leave it unset instead", $name)));
            }
            array.get_region($env, 0, &mut v)?;
            $env.delete_local_ref(array);
            Some(v)
        }
    }};
}

fn strings(env: &mut Env, name: &str, array: JObject) -> Result<Strings> {
    if array.is_null() {
        return Ok(Strings::default());
    }
    let array = JObjectArray::<JString>::cast_local(env, array)?;
    let mut owned = Vec::new();
    for i in 0..array.len(env)? {
        let s = array.get_element(env, i)?;
        owned.push(c_string(env, &s, &format!("{name}[{i}]"))?);
        env.delete_local_ref(s);
    }
    let ptrs = owned.iter().map(c_ptr).collect();
    Ok(Strings { _owned: owned, ptrs })
}

/// A Java `float[][]`'s elements (a null array is none; a null element is refused by index).
fn float_arrays(env: &mut Env, name: &str, array: JObject) -> Result<Vec<Vec<f32>>> {
    if array.is_null() {
        return Ok(Vec::new());
    }
    let array = JObjectArray::<JFloatArray>::cast_local(env, array)?;
    let mut out = Vec::new();
    for i in 0..array.len(env)? {
        let element = array.get_element(env, i)?;
        if element.is_null() {
            return Err(invalid(format!("{name}[{i}] is null")));
        }
        let mut v = vec![0f32; element.len(env)?];
        element.get_region(env, 0, &mut v)?;
        env.delete_local_ref(element);
        out.push(v);
    }
    Ok(out)
}

/// Reads a `dev.diffusionrt.GenerateParams` (its package-private fields, named as C's).
fn params(env: &mut Env, obj: &JObject) -> Result<Params> {
    if obj.is_null() {
        return Err(invalid("params is null".into()));
    }
    let mut c = drt_generate_params_default();
    c.seed = field!(env, obj, "seed", "J", j) as u64;
    c.steps = unsigned(field!(env, obj, "steps", "I", i), "steps")?;
    c.guidance = field!(env, obj, "guidance", "F", f);
    let sampler = string_field(env, obj, jni_str!("sampler"), "sampler")?;
    c.sampler = c_ptr(&sampler);
    c.class_label = field!(env, obj, "classLabel", "I", i);
    c.batch = unsigned(field!(env, obj, "batch", "I", i), "batch")?;
    let classes = array_field!(env, obj, "classes", "[I", JIntArray, 0i32).unwrap_or_default();
    (c.classes, c.classes_len) = (nonempty_ptr(&classes), classes.len());
    let noise = array_field!(env, obj, "noise", "[F", JFloatArray, 0f32).unwrap_or_default();
    (c.noise, c.noise_len) = (nonempty_ptr(&noise), noise.len());

    let names = field!(env, obj, "condNames", "[Ljava/lang/String;", l);
    let cond_names = strings(env, "condNames", names)?;
    let cond_values = array_field!(env, obj, "condValues", "[F", JFloatArray, 0f32).unwrap_or_default();
    if cond_names.ptrs.len() != cond_values.len() {
        return Err(invalid(format!("{} cond names but {} values", cond_names.ptrs.len(), cond_values.len())));
    }
    (c.cond_names, c.cond_values) = (nonempty_ptr(&cond_names.ptrs), nonempty_ptr(&cond_values));
    c.cond_count = u32::try_from(cond_values.len()).map_err(|_| invalid("too many conds".into()))?;

    let names = field!(env, obj, "tensorNames", "[Ljava/lang/String;", l);
    let tensor_names = strings(env, "tensorNames", names)?;
    let values = field!(env, obj, "tensorValues", "[[F", l);
    let tensor_values = float_arrays(env, "tensorValues", values)?;
    if tensor_names.ptrs.len() != tensor_values.len() {
        return Err(invalid(format!("{} tensor names but {} tensors", tensor_names.ptrs.len(), tensor_values.len())));
    }
    let tensor_ptrs: Vec<*const f32> = tensor_values.iter().map(|v| nonempty_ptr(v)).collect();
    let tensor_lens: Vec<usize> = tensor_values.iter().map(Vec::len).collect();
    (c.tensor_names, c.tensor_values, c.tensor_lens) =
        (nonempty_ptr(&tensor_names.ptrs), nonempty_ptr(&tensor_ptrs), nonempty_ptr(&tensor_lens));
    c.tensor_count = tensor_values.len();

    let init = array_field!(env, obj, "init", "[F", JFloatArray, 0f32).unwrap_or_default();
    (c.init, c.init_len) = (nonempty_ptr(&init), init.len());
    c.strength = field!(env, obj, "strength", "F", f);
    c.adaptive_guidance = field!(env, obj, "adaptiveGuidance", "F", f);
    c.guidance_interval_lo = field!(env, obj, "guidanceIntervalLo", "F", f);
    c.guidance_interval_hi = field!(env, obj, "guidanceIntervalHi", "F", f);
    let sigmas = array_field!(env, obj, "sigmas", "[D", JDoubleArray, 0f64).unwrap_or_default();
    (c.sigmas, c.sigmas_len) = (nonempty_ptr(&sigmas), sigmas.len());
    c.step_cache = unsigned(field!(env, obj, "stepCache", "I", i), "stepCache")?;
    c.cache_threshold = field!(env, obj, "cacheThreshold", "F", f);
    c.cache_max_skips = unsigned(field!(env, obj, "cacheMaxSkips", "I", i), "cacheMaxSkips")?;
    Ok(Params {
        c,
        _sampler: sampler,
        _classes: classes,
        _noise: noise,
        _cond_names: cond_names,
        _cond_values: cond_values,
        _tensor_names: tensor_names,
        _tensor_values: tensor_values,
        _tensor_ptrs: tensor_ptrs,
        _tensor_lens: tensor_lens,
        _init: init,
        _sigmas: sigmas,
    })
}

/// A Java `SdParams` as C's `drt_sd_params`, with the copies its pointers point into (as
/// [`Params`]).
struct SdParams {
    c: drt_sd_params,
    _prompts: Strings,
    _negative_prompts: Strings,
    _init_image: Vec<f32>,
    _mask: Vec<f32>,
    _start_pixels: Vec<i8>,
    _mask_pixels: Vec<i8>,
}

/// Reads a `dev.diffusionrt.SdParams` (its package-private fields, named as C's).
fn sd_params(env: &mut Env, obj: &JObject) -> Result<SdParams> {
    if obj.is_null() {
        return Err(invalid("sdParams is null".into()));
    }
    let mut c = drt_sd_params_default();
    let array = field!(env, obj, "prompts", "[Ljava/lang/String;", l);
    let prompts = strings(env, "prompts", array)?;
    (c.prompts, c.prompts_len) = (nonempty_ptr(&prompts.ptrs), prompts.ptrs.len());
    let array = field!(env, obj, "negativePrompts", "[Ljava/lang/String;", l);
    let negative_prompts = strings(env, "negativePrompts", array)?;
    (c.negative_prompts, c.negative_prompts_len) = (nonempty_ptr(&negative_prompts.ptrs), negative_prompts.ptrs.len());
    c.width = unsigned(field!(env, obj, "width", "I", i), "width")?;
    c.height = unsigned(field!(env, obj, "height", "I", i), "height")?;
    c.vae_tile = unsigned(field!(env, obj, "vaeTile", "I", i), "vaeTile")?;
    let init_image = array_field!(env, obj, "initImage", "[F", JFloatArray, 0f32).unwrap_or_default();
    (c.init_image, c.init_image_len) = (nonempty_ptr(&init_image), init_image.len());
    c.strength = field!(env, obj, "strength", "F", f);
    let mask = array_field!(env, obj, "mask", "[F", JFloatArray, 0f32).unwrap_or_default();
    (c.mask, c.mask_len) = (nonempty_ptr(&mask), mask.len());
    let start_pixels = array_field!(env, obj, "startPixels", "[B", JByteArray, 0i8).unwrap_or_default();
    c.start_image = image(
        &start_pixels,
        [
            unsigned(field!(env, obj, "startWidth", "I", i), "startImage width")?,
            unsigned(field!(env, obj, "startHeight", "I", i), "startImage height")?,
            unsigned(field!(env, obj, "startChannels", "I", i), "startImage channels")?,
        ],
    );
    let mask_pixels = array_field!(env, obj, "maskPixels", "[B", JByteArray, 0i8).unwrap_or_default();
    c.mask_image = image(
        &mask_pixels,
        [
            unsigned(field!(env, obj, "maskWidth", "I", i), "maskImage width")?,
            unsigned(field!(env, obj, "maskHeight", "I", i), "maskImage height")?,
            unsigned(field!(env, obj, "maskChannels", "I", i), "maskImage channels")?,
        ],
    );
    Ok(SdParams {
        c,
        _prompts: prompts,
        _negative_prompts: negative_prompts,
        _init_image: init_image,
        _mask: mask,
        _start_pixels: start_pixels,
        _mask_pixels: mask_pixels,
    })
}

/// Java's bytes as C's image of `[width, height, channels]`.
fn image(pixels: &[i8], [width, height, channels]: [u32; 3]) -> drt_image {
    drt_image { pixels: nonempty_ptr(pixels).cast(), pixels_len: pixels.len(), width, height, channels, reserved: 0 }
}

/// A vector's elements for C: NULL when there are none.
fn nonempty_ptr<T>(v: &[T]) -> *const T {
    if v.is_empty() {
        ptr::null()
    } else {
        v.as_ptr()
    }
}

/// A `ProgressListener` called from C's progress callback, on the thread of the native method
/// that passed it (the only thread its `Env` is valid on).
struct Listener<'a, 'l> {
    env: &'a mut Env<'l>,
    listener: &'a JObject<'l>,
    /// The listener threw: its exception is pending, and the generation was cancelled for it.
    threw: bool,
}

unsafe extern "C" fn on_step(done: u32, total: u32, user_data: *mut c_void) -> bool {
    // SAFETY: `user_data` is the Listener `with_listener` passed, alive for the whole C call.
    let l = unsafe { &mut *(user_data as *mut Listener) };
    if l.threw {
        return false;
    }
    let args = [JValue::Int(done as jint), JValue::Int(total as jint)];
    let call = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        l.env.call_method(l.listener, jni_str!("onStep"), jni_sig!("(II)Z"), &args).and_then(|v| v.z())
    }));
    match call {
        Ok(Ok(go)) => go,
        // A Java exception (pending now), a JNI failure or a panic: stop the generation.
        _ => {
            l.threw = l.env.exception_check();
            false
        }
    }
}

/// Runs `call` with `params` wired to `listener` (null: none); the listener's exception, if it
/// threw one, is what the native method then throws.
fn with_listener<'l>(
    env: &mut Env<'l>,
    listener: &JObject<'l>,
    params: &mut Params,
    call: impl FnOnce(&drt_generate_params) -> drt_status,
) -> Result<()> {
    if listener.is_null() {
        return check(call(&params.c));
    }
    let mut l = Listener { env, listener, threw: false };
    params.c.progress = Some(on_step);
    params.c.user_data = &mut l as *mut Listener as *mut c_void;
    let status = call(&params.c);
    params.c.progress = None;
    params.c.user_data = ptr::null_mut();
    if l.threw {
        return Err(Failure::Jni(JniError::JavaException));
    }
    check(status)
}

fn float_array<'l>(env: &mut Env<'l>, v: &[f32]) -> Result<JFloatArray<'l>> {
    let array = JFloatArray::new(env, v.len())?;
    array.set_region(env, 0, v)?;
    Ok(array)
}

/// An output buffer of `len` values, which must fit a Java array.
fn buffer<T: Default + Clone>(len: usize) -> Result<Vec<T>> {
    if len > i32::MAX as usize {
        return Err(invalid(format!("output of {len} values is larger than a Java array")));
    }
    Ok(vec![T::default(); len])
}

#[jni_mangle("dev.diffusionrt.Native")]
pub fn generate<'l>(
    mut env: EnvUnowned<'l>,
    _: JClass<'l>,
    session: jlong,
    params_obj: JObject<'l>,
    listener: JObject<'l>,
) -> JFloatArray<'l> {
    native(&mut env, |env| {
        let mut p = params(env, &params_obj)?;
        let s = handle::<drt_session>(session);
        // SAFETY: a live session (NativeHandle).
        let (sample_len, _) = unsafe { s.as_ref() }.map_or((0, 0), drt_session::lengths);
        // The library's batch rule, checked before it sizes anything.
        let mut batch = 0u32;
        // SAFETY: a live session; params point into `p`; `batch` is a local.
        check(unsafe { drt_generate_batch(s, &p.c, &mut batch) })?;
        let mut out = buffer::<f32>(batch as usize * sample_len)?;
        // SAFETY: a live session; params point into `p`; `out` holds out.len() floats.
        with_listener(env, &listener, &mut p, |c| unsafe { drt_generate(s, c, out.as_mut_ptr(), out.len()) })?;
        float_array(env, &out)
    })
}

#[jni_mangle("dev.diffusionrt.Native")]
pub fn begin<'l>(mut env: EnvUnowned<'l>, _: JClass<'l>, session: jlong, params_obj: JObject<'l>) -> jint {
    native(&mut env, |env| {
        let p = params(env, &params_obj)?;
        let mut total = 0u32;
        // SAFETY: a live session; params point into `p`.
        check(unsafe { drt_generate_begin(handle(session), &p.c, &mut total) })?;
        Ok(total as jint)
    })
}

#[jni_mangle("dev.diffusionrt.Native")]
pub fn step<'l>(mut env: EnvUnowned<'l>, _: JClass<'l>, session: jlong) -> jint {
    native(&mut env, |_| {
        let mut done = 0u32;
        // SAFETY: a live session.
        check(unsafe { drt_generate_step(handle(session), &mut done) })?;
        Ok(done as jint)
    })
}

/// Floats of the samples of the generation in progress on `session` (0 with none, which C then
/// reports).
fn run_len(session: jlong) -> usize {
    // SAFETY: a live session (NativeHandle).
    unsafe { handle::<drt_session>(session).as_ref() }.map_or(0, |s| s.lengths().1)
}

#[jni_mangle("dev.diffusionrt.Native")]
pub fn read<'l>(mut env: EnvUnowned<'l>, _: JClass<'l>, session: jlong, prediction: jboolean) -> JFloatArray<'l> {
    native(&mut env, |env| {
        let what = if prediction { DRT_READ_PREDICTION } else { DRT_READ_SAMPLE };
        let mut out = vec![0f32; run_len(session)];
        // SAFETY: a live session; `out` holds out.len() floats.
        check(unsafe { drt_generate_read(handle(session), what, out.as_mut_ptr(), out.len()) })?;
        float_array(env, &out)
    })
}

#[jni_mangle("dev.diffusionrt.Native")]
pub fn finish<'l>(mut env: EnvUnowned<'l>, _: JClass<'l>, session: jlong) -> JFloatArray<'l> {
    native(&mut env, |env| {
        let mut out = vec![0f32; run_len(session)];
        // SAFETY: a live session; `out` holds out.len() floats.
        check(unsafe { drt_generate_finish(handle(session), out.as_mut_ptr(), out.len()) })?;
        float_array(env, &out)
    })
}

#[jni_mangle("dev.diffusionrt.Native")]
pub fn abandon<'l>(_: EnvUnowned<'l>, _: JClass<'l>, session: jlong) {
    // SAFETY: a live session (NativeHandle).
    unsafe { drt_generate_abandon(handle(session)) }
}

#[jni_mangle("dev.diffusionrt.Native")]
pub fn sd_load<'l>(
    mut env: EnvUnowned<'l>,
    _: JClass<'l>,
    dir: JString<'l>,
    options: JObject<'l>,
    low_memory: jboolean,
    memory_budget_mb: jint,
) -> jlong {
    native(&mut env, |env| {
        let dir = c_string(env, &dir, "dir")?;
        let opts = model_options(env, &options)?;
        let mut load = drt_sd_load_params_default();
        load.low_memory = low_memory as u32;
        load.memory_budget_mb = unsigned(memory_budget_mb, "memoryBudgetMb")?;
        let mut sd = ptr::null_mut();
        // SAFETY: every pointer is NULL or points into `dir`, `opts` and `load`, which outlive the call.
        check(unsafe { drt_sd_load(c_ptr(&dir), &opts.params, &load, &mut sd) })?;
        Ok(into_handle(sd))
    })
}

#[jni_mangle("dev.diffusionrt.Native")]
pub fn sd_free<'l>(_: EnvUnowned<'l>, _: JClass<'l>, sd: jlong) {
    // SAFETY: NativeHandle frees a handle once, after every call on it has returned.
    unsafe { drt_sd_free(handle(sd)) }
}

/// `[width, height, batch]` of what `p` and `q` make on `sd`.
fn image_size(sd: jlong, p: &Params, q: &SdParams) -> Result<[u32; 3]> {
    let [mut w, mut h, mut n] = [0u32; 3];
    // SAFETY: a live export handle; params point into `p` and `q`; the outputs are locals.
    check(unsafe { drt_sd_image_size(handle(sd), &p.c, &q.c, &mut w, &mut h, &mut n) })?;
    Ok([w, h, n])
}

#[jni_mangle("dev.diffusionrt.Native")]
pub fn sd_image_size<'l>(
    mut env: EnvUnowned<'l>,
    _: JClass<'l>,
    sd: jlong,
    sd_params_obj: JObject<'l>,
    params_obj: JObject<'l>,
) -> JIntArray<'l> {
    native(&mut env, |env| {
        let q = sd_params(env, &sd_params_obj)?;
        let size = image_size(sd, &params(env, &params_obj)?, &q)?.map(|v| v as jint);
        let array = JIntArray::new(env, 3)?;
        array.set_region(env, 0, &size)?;
        Ok(array)
    })
}

/// The images `params_obj` make on `sd`, generated by `generate` (drt_sd_generate_rgb8 or
/// drt_sd_generate) into a buffer of three values per pixel.
fn sd_images<'l, T: Default + Clone>(
    env: &mut Env<'l>,
    sd: jlong,
    (sd_params_obj, params_obj): (&JObject<'l>, &JObject<'l>),
    listener: &JObject<'l>,
    generate: SdGenerate<T>,
) -> Result<Vec<T>> {
    let q = sd_params(env, sd_params_obj)?;
    let mut p = params(env, params_obj)?;
    let [w, h, n] = image_size(sd, &p, &q)?;
    let mut out = buffer::<T>(w as usize * h as usize * n as usize * 3)?;
    // SAFETY: a live export; params point into `p` and `q`; `out` holds out.len() values.
    with_listener(env, listener, &mut p, |c| unsafe { generate(handle(sd), c, &q.c, out.as_mut_ptr(), out.len()) })?;
    Ok(out)
}

/// drt_sd_generate_rgb8 or drt_sd_generate.
type SdGenerate<T> =
    unsafe extern "C" fn(*const drt_sd, *const drt_generate_params, *const drt_sd_params, *mut T, usize) -> drt_status;

#[jni_mangle("dev.diffusionrt.Native")]
pub fn sd_generate_rgb8<'l>(
    mut env: EnvUnowned<'l>,
    _: JClass<'l>,
    sd: jlong,
    sd_params_obj: JObject<'l>,
    params_obj: JObject<'l>,
    listener: JObject<'l>,
) -> JByteArray<'l> {
    native(&mut env, |env| {
        let rgb = sd_images(env, sd, (&sd_params_obj, &params_obj), &listener, drt_sd_generate_rgb8)?;
        Ok(env.byte_array_from_slice(&rgb)?)
    })
}

#[jni_mangle("dev.diffusionrt.Native")]
pub fn sd_generate<'l>(
    mut env: EnvUnowned<'l>,
    _: JClass<'l>,
    sd: jlong,
    sd_params_obj: JObject<'l>,
    params_obj: JObject<'l>,
    listener: JObject<'l>,
) -> JFloatArray<'l> {
    native(&mut env, |env| {
        let pixels = sd_images(env, sd, (&sd_params_obj, &params_obj), &listener, drt_sd_generate)?;
        float_array(env, &pixels)
    })
}

#[jni_mangle("dev.diffusionrt.Native")]
pub fn sd_session_create<'l>(mut env: EnvUnowned<'l>, _: JClass<'l>, sd: jlong) -> jlong {
    native(&mut env, |_| {
        let mut s = ptr::null_mut();
        // SAFETY: a live export handle (NativeHandle); `s` is a local.
        check(unsafe { drt_sd_session_create(handle(sd), &mut s) })?;
        Ok(into_handle(s))
    })
}

#[jni_mangle("dev.diffusionrt.Native")]
pub fn sd_session_free<'l>(_: EnvUnowned<'l>, _: JClass<'l>, session: jlong) {
    // SAFETY: NativeHandle frees a handle once, after every call on it has returned.
    unsafe { drt_sd_session_free(handle(session)) }
}

#[jni_mangle("dev.diffusionrt.Native")]
pub fn sd_session_cancel<'l>(_: EnvUnowned<'l>, _: JClass<'l>, session: jlong) {
    // SAFETY: a live session (NativeHandle); the C call takes no lock.
    unsafe { drt_sd_session_cancel(handle(session)) }
}

/// Latent floats and RGB bytes of the generation in progress on `session` (0 with none, which C
/// then reports).
fn sd_run_lengths(session: jlong) -> (usize, usize) {
    // SAFETY: a live session (NativeHandle).
    unsafe { handle::<drt_sd_session>(session).as_ref() }.map_or((0, 0), drt_sd_session::lengths)
}

#[jni_mangle("dev.diffusionrt.Native")]
pub fn sd_session_begin<'l>(
    mut env: EnvUnowned<'l>,
    _: JClass<'l>,
    session: jlong,
    sd_params_obj: JObject<'l>,
    params_obj: JObject<'l>,
) -> jint {
    native(&mut env, |env| {
        let q = sd_params(env, &sd_params_obj)?;
        let p = params(env, &params_obj)?;
        let mut total = 0u32;
        // SAFETY: a live session; params point into `p` and `q`.
        check(unsafe { drt_sd_session_begin(handle(session), &p.c, &q.c, &mut total) })?;
        Ok(total as jint)
    })
}

#[jni_mangle("dev.diffusionrt.Native")]
pub fn sd_session_step<'l>(mut env: EnvUnowned<'l>, _: JClass<'l>, session: jlong) -> jint {
    native(&mut env, |_| {
        let mut done = 0u32;
        // SAFETY: a live session.
        check(unsafe { drt_sd_session_step(handle(session), &mut done) })?;
        Ok(done as jint)
    })
}

#[jni_mangle("dev.diffusionrt.Native")]
pub fn sd_session_read<'l>(
    mut env: EnvUnowned<'l>,
    _: JClass<'l>,
    session: jlong,
    prediction: jboolean,
) -> JFloatArray<'l> {
    native(&mut env, |env| {
        let what = if prediction { DRT_READ_PREDICTION } else { DRT_READ_SAMPLE };
        let mut out = vec![0f32; sd_run_lengths(session).0];
        // SAFETY: a live session; `out` holds out.len() floats.
        check(unsafe { drt_sd_session_read(handle(session), what, out.as_mut_ptr(), out.len()) })?;
        float_array(env, &out)
    })
}

/// What `call` (drt_sd_session_preview_rgb8 or drt_sd_session_finish_rgb8 on `session`) writes
/// into a buffer sized by the session.
fn sd_session_rgb8<'l>(
    env: &mut Env<'l>,
    session: jlong,
    call: impl FnOnce(*mut u8, usize) -> drt_status,
) -> Result<JByteArray<'l>> {
    let mut out = vec![0u8; sd_run_lengths(session).1];
    check(call(out.as_mut_ptr(), out.len()))?;
    Ok(env.byte_array_from_slice(&out)?)
}

#[jni_mangle("dev.diffusionrt.Native")]
pub fn sd_session_preview_rgb8<'l>(mut env: EnvUnowned<'l>, _: JClass<'l>, session: jlong) -> JByteArray<'l> {
    // SAFETY: a live session; `out` holds `len` bytes.
    native(&mut env, |env| {
        sd_session_rgb8(env, session, |out, len| unsafe { drt_sd_session_preview_rgb8(handle(session), out, len) })
    })
}

#[jni_mangle("dev.diffusionrt.Native")]
pub fn sd_session_finish_rgb8<'l>(mut env: EnvUnowned<'l>, _: JClass<'l>, session: jlong) -> JByteArray<'l> {
    // SAFETY: a live session; `out` holds `len` bytes.
    native(&mut env, |env| {
        sd_session_rgb8(env, session, |out, len| unsafe { drt_sd_session_finish_rgb8(handle(session), out, len) })
    })
}

#[jni_mangle("dev.diffusionrt.Native")]
pub fn sd_session_abandon<'l>(_: EnvUnowned<'l>, _: JClass<'l>, session: jlong) {
    // SAFETY: a live session (NativeHandle).
    unsafe { drt_sd_session_abandon(handle(session)) }
}

/// Sets one field of a Java object to a C default.
macro_rules! set_field {
    ($env:ident, $obj:ident, $name:literal, $sig:literal, $value:expr) => {
        $env.set_field(&$obj, jni_str!($name), jni_sig!($sig), $value)?
    };
}

/// Fills a new `GenerateParams` with drt_generate_params_default()'s values, so Java keeps no copy
/// of C's defaults (the class calls this once, for the template every instance starts from).
#[jni_mangle("dev.diffusionrt.Native")]
pub fn fill_generate_defaults<'l>(mut env: EnvUnowned<'l>, _: JClass<'l>, obj: JObject<'l>) {
    native(&mut env, |env| {
        let d = drt_generate_params_default();
        set_field!(env, obj, "seed", "J", JValue::Long(d.seed as jlong));
        set_field!(env, obj, "steps", "I", JValue::Int(d.steps as jint));
        set_field!(env, obj, "guidance", "F", JValue::Float(d.guidance));
        set_field!(env, obj, "classLabel", "I", JValue::Int(d.class_label));
        set_field!(env, obj, "batch", "I", JValue::Int(d.batch as jint));
        set_field!(env, obj, "strength", "F", JValue::Float(d.strength));
        set_field!(env, obj, "adaptiveGuidance", "F", JValue::Float(d.adaptive_guidance));
        set_field!(env, obj, "guidanceIntervalLo", "F", JValue::Float(d.guidance_interval_lo));
        set_field!(env, obj, "guidanceIntervalHi", "F", JValue::Float(d.guidance_interval_hi));
        set_field!(env, obj, "stepCache", "I", JValue::Int(d.step_cache as jint));
        set_field!(env, obj, "cacheThreshold", "F", JValue::Float(d.cache_threshold));
        set_field!(env, obj, "cacheMaxSkips", "I", JValue::Int(d.cache_max_skips as jint));
        Ok(())
    })
}

/// As [`fill_generate_defaults`], for `SdParams` from drt_sd_params_default().
#[jni_mangle("dev.diffusionrt.Native")]
pub fn fill_sd_defaults<'l>(mut env: EnvUnowned<'l>, _: JClass<'l>, obj: JObject<'l>) {
    native(&mut env, |env| {
        let d = drt_sd_params_default();
        set_field!(env, obj, "width", "I", JValue::Int(d.width as jint));
        set_field!(env, obj, "height", "I", JValue::Int(d.height as jint));
        set_field!(env, obj, "vaeTile", "I", JValue::Int(d.vae_tile as jint));
        set_field!(env, obj, "strength", "F", JValue::Float(d.strength));
        Ok(())
    })
}

/// As [`fill_generate_defaults`], for `ModelOptions` from drt_model_params_default().
#[jni_mangle("dev.diffusionrt.Native")]
pub fn fill_model_defaults<'l>(mut env: EnvUnowned<'l>, _: JClass<'l>, obj: JObject<'l>) {
    native(&mut env, |env| {
        let d = drt_model_params_default();
        set_field!(env, obj, "threads", "I", JValue::Int(d.threads as jint));
        set_field!(env, obj, "attentionSlices", "I", JValue::Int(d.attention_slices as jint));
        set_field!(env, obj, "mappedWeights", "Z", JValue::Bool(d.mapped_weights != 0));
        Ok(())
    })
}
