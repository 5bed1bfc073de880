//! The benchmark through the C API, for devices where only the library is deployed: the same
//! figures and JSON as `drt bench`.

use std::ffi::{c_char, CString};
use std::path::PathBuf;

use super::generate::{drt_generate_params, drt_generate_params_default, generate_params};
use super::model::{backend_options, drt_model_params};
use super::{boundary, drt_status, invalid, opt_str, read_params};
use crate::bench::{self, BenchOptions};
use crate::panic::catch;

/// How drt_bench_run measures. Initialise with drt_bench_params_default().
#[repr(C)]
#[derive(Clone, Copy)]
pub struct drt_bench_params {
    /// sizeof(drt_bench_params), set by drt_bench_params_default().
    pub struct_size: u32,
    /// Measured generations (at least 1).
    pub runs: u32,
    /// Generations run before measuring.
    pub warmup: u32,
    /// A classifier directory (classifier.onnx and reference statistics) to judge the measured
    /// samples with: class accuracy and Fréchet distance. NULL = no judging.
    pub classifier_dir: *const c_char,
}

super::params_layout!(drt_bench_params: struct_size, runs, warmup, classifier_dir);

/// Defaults: 5 measured runs after 1 warm-up, no classifier.
#[no_mangle]
pub extern "C" fn drt_bench_params_default() -> drt_bench_params {
    drt_bench_params {
        struct_size: std::mem::size_of::<drt_bench_params>() as u32,
        runs: 5,
        warmup: 1,
        classifier_dir: std::ptr::null(),
    }
}

/// The result of drt_bench_run: read it with drt_bench_report_json, free it with
/// drt_bench_report_free.
pub struct drt_bench_report {
    json: CString,
}

/// Loads the model in `model_dir` with `model_params` and benchmarks generations with
/// `params` (its progress callback is not called) as `bench_params` says; any params
/// pointer may be NULL for the defaults. On success `*out` owns the report. Takes as long as the
/// generations do; runs on the calling thread.
///
/// # Safety
/// `model_dir` a NUL-terminated string; params NULL or valid; `out` valid.
#[no_mangle]
pub unsafe extern "C" fn drt_bench_run(
    model_dir: *const c_char,
    model_params: *const drt_model_params,
    params: *const drt_generate_params,
    bench_params: *const drt_bench_params,
    out: *mut *mut drt_bench_report,
) -> drt_status {
    boundary(|| {
        if out.is_null() {
            return Err(invalid("out is NULL"));
        }
        let dir = PathBuf::from(opt_str(model_dir, "model_dir")?.ok_or_else(|| invalid("model_dir is NULL"))?);
        let backend = backend_options(model_params)?;
        let gp = read_params(params, drt_generate_params_default())?;
        let bp = read_params(bench_params, drt_bench_params_default())?;
        let opts = BenchOptions {
            runs: bp.runs as usize,
            warmup: bp.warmup as usize,
            classifier: opt_str(bp.classifier_dir, "bench_params.classifier_dir")?.map(PathBuf::from),
            memory_limit: None,
        };
        let request = |m: &crate::Model| generate_params(&gp, m.sample_len()).map(|(p, _)| p);
        let report = bench::run_with(&dir, &backend, request, &opts)?;
        let json = CString::new(report.to_json()).map_err(|_| invalid("report holds a NUL byte"))?;
        *out = Box::into_raw(Box::new(drt_bench_report { json }));
        Ok(())
    })
}

/// Copies the report as NUL-terminated JSON (the keys of `drt bench --json`) into `out`.
/// `*needed` (may be NULL) receives the buffer size the JSON needs, NUL included; with `out` NULL
/// and `out_len` 0 only the size is reported. A short buffer is DRT_ERR_INVALID_ARGUMENT and
/// nothing is written to `out`.
///
/// # Safety
/// `report` a live report; `out` NULL or valid for `out_len` bytes; `needed` NULL or valid.
#[no_mangle]
pub unsafe extern "C" fn drt_bench_report_json(
    report: *const drt_bench_report,
    out: *mut c_char,
    out_len: usize,
    needed: *mut usize,
) -> drt_status {
    boundary(|| {
        if report.is_null() {
            return Err(invalid("report is NULL"));
        }
        let bytes = (*report).json.as_bytes_with_nul();
        if !needed.is_null() {
            *needed = bytes.len();
        }
        if out.is_null() && out_len == 0 {
            return Ok(());
        }
        if out.is_null() || out_len < bytes.len() {
            return Err(invalid(&format!("out holds {out_len} bytes; the report needs {}", bytes.len())));
        }
        std::ptr::copy_nonoverlapping(bytes.as_ptr() as *const c_char, out, bytes.len());
        Ok(())
    })
}

/// Frees a report. NULL is a no-op.
///
/// # Safety
/// `report` NULL or a report from drt_bench_run, not freed before.
#[no_mangle]
pub unsafe extern "C" fn drt_bench_report_free(report: *mut drt_bench_report) {
    if !report.is_null() {
        let _ = catch(|| drop(Box::from_raw(report)));
    }
}
