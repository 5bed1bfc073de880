//! The C ABI (`include/diffusion_rt.h`, generated from this file by cbindgen in build.rs).
//!
//! Conventions: opaque handles with create/free pairs (freeing NULL is a no-op); every fallible call
//! returns a `drt_status` and leaves a thread-local message for `drt_last_error`; parameter structs
//! start with `struct_size` so later fields never break old callers; outputs go into caller buffers;
//! every entry point checks its pointers and catches panics, so no unwinding crosses into C.
#![allow(non_camel_case_types)]

use std::cell::RefCell;
use std::ffi::{c_char, CStr, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};

use crate::error::Error;

mod generate;
mod log;
mod model;
pub use self::generate::*;
pub use self::log::*;
pub use self::model::*;

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

