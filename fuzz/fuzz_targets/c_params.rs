//! The C API's parameter validation: generation parameters with arbitrary values (pointers either
//! NULL or valid for the lengths they are given with), and arbitrary integers where C has an
//! enum-like argument (drt_status_string, drt_generate_read, drt_set_log_callback), give a status,
//! never a crash, and an error never writes to the output.
#![no_main]
use std::ffi::CString;
use std::ptr::{null, null_mut};
use std::sync::OnceLock;

use arbitrary::Arbitrary;
use diffusion_rt::ffi::*;
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Params {
    struct_size: u32,
    seed: u64,
    steps: u8,
    guidance: f32,
    sampler: Option<String>,
    class_label: i32,
    batch: u8,
    classes: Option<Vec<i32>>,
    /// A length given with `classes` other than its own (the pointer is valid for its own).
    classes_len_short: u8,
    noise: bool,
    noise_len_short: u8,
    read_kind: u32,
    log_level: u32,
    status: u32,
    cond: Option<(String, f32)>,
    init: Option<(u16, f32)>,
    strength: f32,
    out_len: u16,
    caller_driven: bool,
}

/// The one session every input runs on (its model stays alive with it).
struct Handle(*mut drt_session);
unsafe impl Send for Handle {}
unsafe impl Sync for Handle {}

fn session() -> *mut drt_session {
    static H: OnceLock<Handle> = OnceLock::new();
    H.get_or_init(|| {
        // The toy model: no time input, one float condition, x0 = condition; tiny and fast.
        let dir = CString::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/toy")).expect("path");
        let mut p = drt_model_params_default();
        p.backend = c"tract".as_ptr();
        let (mut m, mut s) = (null_mut(), null_mut());
        unsafe {
            assert_eq!(drt_model_load(dir.as_ptr(), &p, &mut m), drt_status::DRT_OK);
            assert_eq!(drt_session_create(m, null(), &mut s), drt_status::DRT_OK);
            drt_model_free(m);
        }
        Handle(s)
    })
    .0
}

fuzz_target!(|f: Params| {
    let s = session();
    let batch = (f.batch % 6) as usize;
    let sampler = f.sampler.as_deref().and_then(|v| CString::new(v).ok());
    let classes: Option<Vec<i32>> = f.classes.map(|mut c| {
        c.truncate(8);
        c
    });
    let noise = vec![0.5f32; batch.max(1) * 16];
    let cond = f.cond.as_ref().and_then(|(n, v)| CString::new(n.as_str()).ok().map(|n| (n, *v)));
    let cond_names = cond.as_ref().map(|(n, _)| [n.as_ptr()]);
    let cond_values = cond.as_ref().map(|(_, v)| [*v]);
    let init = f.init.map(|(len, v)| vec![v; (len % 100) as usize]);
    let mut p = drt_generate_params_default();
    p.struct_size = if f.struct_size % 4 == 0 { f.struct_size % 256 } else { p.struct_size };
    p.seed = f.seed;
    p.steps = (f.steps % 8) as u32;
    p.guidance = f.guidance;
    p.sampler = sampler.as_ref().map_or(null(), |c| c.as_ptr());
    p.class_label = f.class_label;
    p.batch = batch as u32;
    // Lengths never exceed what the pointers hold: the contract a caller keeps.
    if let Some(c) = &classes {
        p.classes = c.as_ptr();
        p.classes_len = c.len().saturating_sub(f.classes_len_short as usize % 3);
    }
    if f.noise {
        p.noise = noise.as_ptr();
        p.noise_len = noise.len().saturating_sub(f.noise_len_short as usize % 20);
    }
    if let (Some(n), Some(v)) = (&cond_names, &cond_values) {
        p.cond_names = n.as_ptr();
        p.cond_values = v.as_ptr();
        p.cond_count = 1;
    }
    if let Some(i) = &init {
        p.init = if i.is_empty() { null() } else { i.as_ptr() };
        p.init_len = i.len();
    }
    p.strength = f.strength;
    let out_len = f.out_len as usize % 200;
    let mut out = vec![7.0f32; out_len];
    unsafe {
        assert!(!drt_status_string(f.status).is_null());
        let logged = drt_set_log_callback(None, f.log_level, null_mut());
        assert_eq!(logged == drt_status::DRT_OK, f.log_level <= 5, "log level {}", f.log_level);
    }
    let status = unsafe {
        if f.caller_driven {
            let mut total = 0u32;
            let mut st = drt_generate_begin(s, &p, &mut total);
            while st == drt_status::DRT_OK {
                let mut done = 0u32;
                st = drt_generate_step(s, &mut done);
                if st != drt_status::DRT_OK || done == total {
                    break;
                }
                let mut preview = vec![7.0f32; out_len];
                let read = drt_generate_read(s, f.read_kind, preview.as_mut_ptr(), out_len);
                assert!(read != drt_status::DRT_OK || f.read_kind <= DRT_READ_PREDICTION, "read kind {}", f.read_kind);
                if read != drt_status::DRT_OK {
                    assert!(preview.iter().all(|&v| v == 7.0), "a failed read wrote to the output");
                }
            }
            if st == drt_status::DRT_OK {
                st = drt_generate_finish(s, out.as_mut_ptr(), out_len);
            }
            drt_generate_abandon(s);
            st
        } else {
            drt_generate(s, &p, out.as_mut_ptr(), out_len)
        }
    };
    assert_ne!(status, drt_status::DRT_ERR_INTERNAL, "a caught panic is still a bug");
    if status != drt_status::DRT_OK {
        assert!(out.iter().all(|&v| v == 7.0), "an error wrote to the output");
    }
});
