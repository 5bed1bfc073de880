//! Catching panics where they must not escape: at every C entry point, and around tract, whose
//! analysis and kernels panic on some malformed graphs and out-of-range indices. A caught panic
//! becomes an error value; its message goes to the `log` crate (target `diffusion_rt::panic`, so to
//! a C app's log callback) instead of stderr. Panics anywhere else still reach the hook that was
//! installed before ours.

use std::cell::Cell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Once;

thread_local! {
    /// How many `catch` regions this thread is inside (a C callback may call back in).
    static DEPTH: Cell<u32> = const { Cell::new(0) };
}

fn install_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if DEPTH.try_with(Cell::get).unwrap_or(0) > 0 {
                log::error!(target: "diffusion_rt::panic", "{info}");
            } else {
                previous(info);
            }
        }));
    });
}

/// Runs `f`; a panic comes back as its message.
pub(crate) fn catch<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    install_hook();
    DEPTH.with(|d| d.set(d.get() + 1));
    let result = catch_unwind(AssertUnwindSafe(f));
    DEPTH.with(|d| d.set(d.get() - 1));
    result.map_err(|payload| {
        payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".into())
    })
}
