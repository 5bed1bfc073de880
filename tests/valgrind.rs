//! The C examples under valgrind memcheck: no memory errors and nothing definitely lost, on the
//! success paths and the error paths (bad model directory, missing ONNX Runtime, cancelled run), on
//! both backends; and the threads example under helgrind, which must find no data race (with
//! tests/helgrind.supp, whose one entry says why it is not one). Few steps and small batches keep each run under a minute. valgrind must be
//! installed (scripts/test.sh installs it); without it these tests are skipped with a note unless
//! `DRT_REQUIRE_VALGRIND` is set. Suppressions, each for code outside this project, are in
//! tests/valgrind.supp with the reason for each.

mod common;

use std::path::Path;
use std::process::Command;

use common::c::build_example;
use common::{model_dir, repo, TempDir};

fn valgrind_available() -> bool {
    let found = Command::new("valgrind").arg("--version").output().is_ok_and(|o| o.status.success());
    if !found && std::env::var_os("DRT_REQUIRE_VALGRIND").is_some() {
        panic!("DRT_REQUIRE_VALGRIND is set but valgrind is not installed");
    }
    if !found {
        use std::io::Write;
        let _ = writeln!(std::io::stderr(), "note: skipping the valgrind tests (valgrind not found)");
    }
    found
}

/// Runs `exe args` under memcheck and checks that it exits with `code` and that memcheck found
/// nothing; returns the program's stdout.
fn memcheck(exe: &Path, args: &[&str], env: &[(&str, &str)], code: i32) -> String {
    const MEMCHECK_FAILED: i32 = 99;
    let mut cmd = Command::new("valgrind");
    cmd.args([
        "--error-exitcode=99",
        "--leak-check=full",
        "--errors-for-leak-kinds=definite",
        "--show-leak-kinds=definite",
    ])
    .arg(format!("--suppressions={}", repo().join("tests/valgrind.supp").display()))
    .arg(exe)
    .args(args)
    .envs(env.iter().copied());
    let o = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    let (out, err) = (String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert_ne!(o.status.code(), Some(MEMCHECK_FAILED), "memcheck found errors in {cmd:?}:\n{err}");
    assert_eq!(o.status.code(), Some(code), "{cmd:?}:\n{out}\n{err}");
    assert!(err.contains("ERROR SUMMARY: 0 errors"), "{err}");
    assert!(err.contains("definitely lost: 0 bytes") || err.contains("All heap blocks were freed"), "{err}");
    out.into_owned()
}

fn digits() -> String {
    model_dir("digits").to_str().expect("utf8 path").to_string()
}

#[test]
fn generate_is_clean_on_tract() {
    if !valgrind_available() {
        return;
    }
    let tmp = TempDir::new("vg-generate");
    let exe = build_example("generate", tmp.path());
    let (pgm, raw) = (tmp.path().join("d.pgm"), tmp.path().join("d.f32"));
    let out =
        memcheck(&exe, &[&digits(), "tract", pgm.to_str().expect("utf8"), raw.to_str().expect("utf8"), "1"], &[], 0);
    assert!(out.contains("wrote") && raw.is_file(), "{out}");
}

/// The C++ example: RAII handles, a progress lambda that throws, exceptions for bad calls.
#[test]
fn cxx_example_is_clean_on_tract() {
    if !valgrind_available() {
        return;
    }
    let tmp = TempDir::new("vg-cxx");
    let exe = build_example("digits", tmp.path());
    let out = memcheck(&exe, &[&digits(), "tract", "/dev/null", "1", "2"], &[], 0);
    assert!(out.contains("progress threw") && out.contains("missing model: DRT_ERR_IO"), "{out}");
}

#[test]
fn bad_model_directory_is_clean() {
    if !valgrind_available() {
        return;
    }
    let tmp = TempDir::new("vg-bad-dir");
    let exe = build_example("generate", tmp.path());
    let missing = tmp.path().join("no-model");
    memcheck(&exe, &[missing.to_str().expect("utf8"), "tract"], &[], 1);
}

#[test]
fn cancelled_run_is_clean_on_tract() {
    if !valgrind_available() {
        return;
    }
    let tmp = TempDir::new("vg-cancel");
    let exe = build_example("steps", tmp.path());
    let raw = tmp.path().join("s.f32");
    let out = memcheck(&exe, &[&digits(), "tract", "3", "3", raw.to_str().expect("utf8"), "1"], &[], 2);
    assert!(out.contains("cancelled after 1 of 3 steps"), "{out}");
}

#[test]
fn caller_driven_run_is_clean_on_ort() {
    if !valgrind_available() || !common::ort_available() {
        return;
    }
    let tmp = TempDir::new("vg-ort");
    let exe = build_example("steps", tmp.path());
    let raw = tmp.path().join("s.f32");
    let out = memcheck(&exe, &[&digits(), "ort", "3", "2", raw.to_str().expect("utf8")], &[], 0);
    assert!(out.contains("digit 3 done in 2 steps") && raw.is_file(), "{out}");
}

#[test]
fn missing_onnx_runtime_is_clean() {
    if !valgrind_available() {
        return;
    }
    let tmp = TempDir::new("vg-no-ort");
    let exe = build_example("steps", tmp.path());
    memcheck(&exe, &[&digits(), "ort", "3", "2"], &[("DRT_ORT_LIB", "/nonexistent/libonnxruntime.so")], 1);
}

#[test]
fn threads_sharing_a_model_are_clean_on_tract() {
    if !valgrind_available() {
        return;
    }
    let tmp = TempDir::new("vg-threads");
    let exe = build_example("threads", tmp.path());
    let out = memcheck(&exe, &[&digits(), "tract", "2", "2"], &[], 0);
    assert!(out.contains("every result equals the sequential one"), "{out}");
}

#[test]
fn threads_sharing_a_model_have_no_data_race_on_tract() {
    if !valgrind_available() {
        return;
    }
    let tmp = TempDir::new("helgrind-threads");
    let exe = build_example("threads", tmp.path());
    let o = Command::new("valgrind")
        .args(["--tool=helgrind", "--error-exitcode=99"])
        .arg(format!("--suppressions={}", repo().join("tests/helgrind.supp").display()))
        .arg(&exe)
        .args([&digits(), "tract", "3", "1"])
        .output()
        .expect("run helgrind");
    let (out, err) = (String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert_eq!(o.status.code(), Some(0), "helgrind:\n{err}");
    assert!(
        err.contains("ERROR SUMMARY: 0 errors") && out.contains("every result equals the sequential one"),
        "{out}\n{err}"
    );
}

/// Text to image through the C API (drt_sd_*): a Stable Diffusion export on tract, then a bad
/// request (a width the VAE cannot make), both without memory errors or leaks.
#[test]
fn stable_diffusion_txt2img_is_clean_on_tract() {
    if !valgrind_available() {
        return;
    }
    let tmp = TempDir::new("vg-txt2img");
    let exe = build_example("txt2img", tmp.path());
    let export = repo().join("tests/fixtures/sd-tiny/export");
    let ppm = tmp.path().join("i.ppm");
    let out = memcheck(
        &exe,
        &[export.to_str().expect("utf8"), "a red cat", ppm.to_str().expect("utf8"), "2", "tract"],
        &[],
        0,
    );
    assert!(out.contains("32 x 32") && ppm.is_file(), "{out}");
    let missing = tmp.path().join("no-export");
    memcheck(&exe, &[missing.to_str().expect("utf8"), "a red cat", ppm.to_str().expect("utf8"), "2", "tract"], &[], 1);
}
