//! The C ABI (`include/diffusion_rt.h`, generated from this file by cbindgen in build.rs).
//!
//! Conventions: opaque handles with create/free pairs (freeing NULL is a no-op); every fallible call
//! returns a `drt_status` and leaves a thread-local message for `drt_last_error`; parameter structs
//! start with `struct_size` so later fields never break old callers; outputs go into caller buffers;
//! every entry point checks its pointers and catches panics, so no unwinding crosses into C.
#![allow(non_camel_case_types)]

use std::cell::RefCell;
use std::ffi::{c_char, CStr, CString};

use crate::error::Error;

// Declaration order is the header's order (rustfmt.toml keeps it).
mod model;
mod generate;
mod bench;
mod log;
mod sd;
mod sd_session;
pub use self::bench::*;
pub use self::generate::*;
pub use self::log::*;
pub use self::model::*;
pub use self::sd::*;
pub use self::sd_session::*;

/// Result of every fallible call; drt_last_error() says more.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum drt_status {
    DRT_OK = 0,
    /// A NULL or malformed argument, an out-of-range value, a short output buffer, or a call out of
    /// sequence (e.g. drt_generate_step before drt_generate_begin).
    DRT_ERR_INVALID_ARGUMENT = 1,
    /// A file or directory could not be read or written.
    DRT_ERR_IO = 2,
    /// The ONNX graph is invalid, unsupported by the backend, or failed while running.
    DRT_ERR_MODEL = 3,
    /// model.json is malformed or disagrees with the graph.
    DRT_ERR_MANIFEST = 4,
    /// The requested backend or execution provider is not available (e.g. no ONNX Runtime library).
    DRT_ERR_BACKEND_UNAVAILABLE = 5,
    /// The run was cancelled by drt_session_cancel or the progress callback.
    DRT_ERR_CANCELLED = 6,
    /// The network produced NaN or infinity.
    DRT_ERR_NON_FINITE = 7,
    /// The request needs more memory than allowed or available.
    DRT_ERR_OUT_OF_MEMORY = 8,
    /// A bug in diffusion-rt (a caught panic); the message says where.
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

/// Runs a fallible call behind the panic boundary, turning errors and panics into a status and a
/// message for drt_last_error.
fn boundary(f: impl FnOnce() -> Result<(), Error>) -> drt_status {
    set_last_error("");
    match crate::panic::catch(f) {
        Ok(Ok(())) => drt_status::DRT_OK,
        Ok(Err(e)) => {
            set_last_error(&e.to_string());
            drt_status::from(&e)
        }
        Err(msg) => {
            set_last_error(&format!("internal error (panic): {msg}"));
            drt_status::DRT_ERR_INTERNAL
        }
    }
}

fn invalid(msg: &str) -> Error {
    Error::InvalidArgument(msg.to_string())
}

/// Writes `v` to an optional out parameter (NULL: the caller does not want it).
///
/// # Safety
/// `ptr` NULL or valid for a write.
unsafe fn put(ptr: *mut u32, v: usize) {
    if !ptr.is_null() {
        *ptr = v as u32;
    }
}

/// A NUL-terminated UTF-8 string argument; NULL gives `None`.
unsafe fn opt_str<'a>(p: *const c_char, what: &str) -> Result<Option<&'a str>, Error> {
    if p.is_null() {
        return Ok(None);
    }
    CStr::from_ptr(p).to_str().map(Some).map_err(|_| invalid(&format!("{what} is not valid UTF-8")))
}

/// A parameter struct of the C API: `struct_size` first, then fields that are only ever appended,
/// with no tail padding (an explicit reserved field fills it), so every older version of the struct
/// ends exactly where one of today's fields ends.
pub(super) trait Params: Copy {
    const NAME: &'static str;
    /// Where each field ends, in declaration order: the sizes an older caller's struct can have.
    fn field_ends() -> Vec<usize>;
}

fn size_of_field<T, F>(_: fn(&T) -> &F) -> usize {
    std::mem::size_of::<F>()
}

macro_rules! params_layout {
    ($t:ident: $($field:ident),+) => {
        impl $crate::ffi::Params for $t {
            const NAME: &'static str = stringify!($t);
            fn field_ends() -> Vec<usize> {
                vec![$(std::mem::offset_of!($t, $field) + $crate::ffi::size_of_field(|p: &$t| &p.$field)),+]
            }
        }
    };
}
pub(crate) use params_layout;

/// Copies a caller's params struct of `struct_size` bytes over the defaults, so a caller built
/// against an older, shorter struct keeps working; a newer, longer one is read up to the fields
/// this library knows. A size that does not end at a field (which would tear a pointer in two) is
/// refused.
unsafe fn read_params<T: Params>(p: *const T, defaults: T) -> Result<T, Error> {
    if p.is_null() {
        return Ok(defaults);
    }
    let size = std::ptr::read_unaligned(p as *const u32) as usize;
    let full = std::mem::size_of::<T>();
    if size < full && !T::field_ends().contains(&size) {
        return Err(invalid(&format!(
            "{}.struct_size is {size}, which does not end at one of its fields; initialise params with the *_default() function",
            T::NAME
        )));
    }
    let mut out = defaults;
    std::ptr::copy_nonoverlapping(p as *const u8, &mut out as *mut T as *mut u8, size.min(full));
    Ok(out)
}

/// Version of the library these declarations come from (drt_version() gives the loaded one's).
pub const DRT_VERSION_MAJOR: u32 = 0;
/// See DRT_VERSION_MAJOR.
pub const DRT_VERSION_MINOR: u32 = 1;
/// See DRT_VERSION_MAJOR.
pub const DRT_VERSION_PATCH: u32 = 0;
/// Bumped on every incompatible change of this header (CHANGELOG.md says what each changed). An app
/// compares it with drt_abi_version() at start-up to catch a mismatched shared library before
/// calling anything else.
pub const DRT_ABI_VERSION: u32 = 3;

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

/// A static name for a status code, e.g. "DRT_ERR_IO"; "DRT_UNKNOWN_STATUS" for a value that is
/// no drt_status. Never NULL.
#[no_mangle]
pub extern "C" fn drt_status_string(status: u32) -> *const c_char {
    let name: &'static CStr = match status {
        0 => c"DRT_OK",
        1 => c"DRT_ERR_INVALID_ARGUMENT",
        2 => c"DRT_ERR_IO",
        3 => c"DRT_ERR_MODEL",
        4 => c"DRT_ERR_MANIFEST",
        5 => c"DRT_ERR_BACKEND_UNAVAILABLE",
        6 => c"DRT_ERR_CANCELLED",
        7 => c"DRT_ERR_NON_FINITE",
        8 => c"DRT_ERR_OUT_OF_MEMORY",
        9 => c"DRT_ERR_INTERNAL",
        _ => c"DRT_UNKNOWN_STATUS",
    };
    name.as_ptr()
}

#[cfg(test)]
mod tests {
    use std::ffi::{c_void, CStr};
    use std::sync::Mutex;

    use super::*;

    static RECORDS: Mutex<Vec<String>> = Mutex::new(Vec::new());

    unsafe extern "C" fn collect(level: drt_log_level, target: *const c_char, message: *const c_char, _: *mut c_void) {
        let (t, m) = (CStr::from_ptr(target).to_string_lossy(), CStr::from_ptr(message).to_string_lossy());
        RECORDS.lock().unwrap_or_else(|e| e.into_inner()).push(format!("{level:?} {t} {m}"));
    }

    /// Every params struct ends with its last field (no tail padding for a later field to land in).
    #[test]
    fn params_structs_have_no_tail_padding() {
        fn check<T: Params>() {
            let ends = T::field_ends();
            assert_eq!(ends.first(), Some(&4), "{}: struct_size comes first", T::NAME);
            assert_eq!(ends.last(), Some(&std::mem::size_of::<T>()), "{}: tail padding", T::NAME);
            assert!(ends.windows(2).all(|w| w[0] < w[1]), "{}: fields in order", T::NAME);
        }
        check::<drt_model_params>();
        check::<drt_session_params>();
        check::<drt_generate_params>();
        check::<drt_bench_params>();
    }

    /// A struct_size that cuts through a field is refused instead of read as a torn pointer.
    #[test]
    fn torn_struct_sizes_are_refused() {
        let mut p = drt_generate_params_default();
        for size in [0u32, 3, 6, 28, 100] {
            p.struct_size = size;
            assert!(unsafe { read_params(&p, drt_generate_params_default()) }.is_err(), "size {size}");
        }
        for size in [4u32, 16, 32, 120, 4096] {
            p.struct_size = size;
            assert!(unsafe { read_params(&p, drt_generate_params_default()) }.is_ok(), "size {size}");
        }
    }

    /// A panic inside a call is DRT_ERR_INTERNAL with its message, reported to the log callback
    /// (not stderr); a panic outside any call still goes to the previous hook, not the callback.
    #[test]
    fn panics_become_internal_errors_and_log_records() {
        assert_eq!(
            unsafe { drt_set_log_callback(Some(collect), drt_log_level::DRT_LOG_ERROR as u32, std::ptr::null_mut()) },
            drt_status::DRT_OK
        );
        let status = boundary(|| panic!("boom {}", 42));
        assert_eq!(status, drt_status::DRT_ERR_INTERNAL);
        let msg = unsafe { CStr::from_ptr(drt_last_error()) }.to_string_lossy().into_owned();
        assert_eq!(msg, "internal error (panic): boom 42");
        assert_eq!(boundary(|| Ok(())), drt_status::DRT_OK);
        assert_eq!(unsafe { CStr::from_ptr(drt_last_error()) }.to_bytes(), b"", "cleared by a successful call");

        assert!(std::panic::catch_unwind(|| panic!("outside")).is_err());
        assert_eq!(
            unsafe { drt_set_log_callback(None, drt_log_level::DRT_LOG_OFF as u32, std::ptr::null_mut()) },
            drt_status::DRT_OK
        );
        let records = RECORDS.lock().unwrap_or_else(|e| e.into_inner()).clone();
        assert_eq!(records.len(), 1, "{records:?}");
        assert!(records[0].starts_with("DRT_LOG_ERROR diffusion_rt::panic panicked at src/ffi/mod.rs"), "{records:?}");
        assert!(records[0].ends_with("boom 42"), "{records:?}");
    }
}
