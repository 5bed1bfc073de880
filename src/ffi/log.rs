//! The `log` crate's records delivered to a C callback, so an app sees the runtime's (and ONNX
//! Runtime's) messages in its own log instead of on stderr.

use std::ffi::{c_char, c_void, CString};
use std::sync::Mutex;

use super::{boundary, drt_status};
use crate::error::Error;

/// Message severities, most severe first; a callback receives records up to its `max_level`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum drt_log_level {
    DRT_LOG_OFF = 0,
    DRT_LOG_ERROR = 1,
    DRT_LOG_WARN = 2,
    DRT_LOG_INFO = 3,
    DRT_LOG_DEBUG = 4,
    DRT_LOG_TRACE = 5,
}

/// Log callback: `target` names the module that logged ("diffusion_rt::model", "onnxruntime", ...);
/// both strings are valid only during the call. Called from whichever thread logged.
pub type drt_log_fn = Option<
    unsafe extern "C" fn(level: drt_log_level, target: *const c_char, message: *const c_char, user_data: *mut c_void),
>;

struct Sink {
    callback: unsafe extern "C" fn(drt_log_level, *const c_char, *const c_char, *mut c_void),
    user_data: usize,
}

static SINK: Mutex<Option<Sink>> = Mutex::new(None);

struct CLogger;

impl log::Log for CLogger {
    fn enabled(&self, _: &log::Metadata) -> bool {
        true
    }

    fn log(&self, record: &log::Record) {
        // Copy the callback out so it runs unlocked: it may log again or replace itself.
        let Some((f, ud)) = SINK.lock().ok().and_then(|s| s.as_ref().map(|s| (s.callback, s.user_data))) else {
            return;
        };
        let level = match record.level() {
            log::Level::Error => drt_log_level::DRT_LOG_ERROR,
            log::Level::Warn => drt_log_level::DRT_LOG_WARN,
            log::Level::Info => drt_log_level::DRT_LOG_INFO,
            log::Level::Debug => drt_log_level::DRT_LOG_DEBUG,
            log::Level::Trace => drt_log_level::DRT_LOG_TRACE,
        };
        let text = |s: String| CString::new(s.replace('\0', " ")).unwrap_or_default();
        let (target, message) = (text(record.target().to_string()), text(record.args().to_string()));
        unsafe { f(level, target.as_ptr(), message.as_ptr(), ud as *mut c_void) };
    }

    fn flush(&self) {}
}

static LOGGER: CLogger = CLogger;

/// Sends the library's log records up to `max_level` to `callback`, process-wide (logging in Rust
/// is global); NULL `callback` or DRT_LOG_OFF stops it. `max_level` is a drt_log_level value; any
/// other is DRT_ERR_INVALID_ARGUMENT and changes nothing. Replaces an earlier callback. Fails with
/// DRT_ERR_INVALID_ARGUMENT when the host process installed its own Rust logger, which then keeps
/// receiving the records. `user_data` is passed back untouched and must stay valid until the
/// callback is replaced; the callback must be callable from any thread.
///
/// # Safety
/// `callback` NULL or a function callable with the documented arguments from any thread.
#[no_mangle]
pub unsafe extern "C" fn drt_set_log_callback(
    callback: drt_log_fn,
    max_level: u32,
    user_data: *mut c_void,
) -> drt_status {
    boundary(|| {
        let level = match max_level {
            0 => log::LevelFilter::Off,
            1 => log::LevelFilter::Error,
            2 => log::LevelFilter::Warn,
            3 => log::LevelFilter::Info,
            4 => log::LevelFilter::Debug,
            5 => log::LevelFilter::Trace,
            other => {
                return Err(Error::InvalidArgument(format!(
                    "max_level {other} is not one of the DRT_LOG_* values (0 to 5)"
                )))
            }
        };
        let mut sink = SINK.lock().map_err(|_| Error::Internal("log callback lock poisoned".into()))?;
        let filter = if callback.is_some() { level } else { log::LevelFilter::Off };
        if filter != log::LevelFilter::Off && log::set_logger(&LOGGER).is_err() && !is_ours() {
            return Err(Error::InvalidArgument(
                "the host process installed its own Rust logger; records go to it".into(),
            ));
        }
        *sink = match callback {
            Some(f) if filter != log::LevelFilter::Off => Some(Sink { callback: f, user_data: user_data as usize }),
            _ => None,
        };
        if is_ours() {
            log::set_max_level(filter);
        }
        Ok(())
    })
}

/// Whether the process-wide logger is this module's.
fn is_ours() -> bool {
    std::ptr::addr_eq(log::logger(), &LOGGER as &dyn log::Log)
}
