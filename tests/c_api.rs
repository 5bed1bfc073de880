//! The C ABI from C: the committed header is current and compiles as C99 and C++11, and
//! `c_examples/generate.c` builds against the shared library, runs, and gives exactly the samples
//! of the Rust API. Needs `target/<profile>/libdiffusion_rt.so` from `cargo build --lib`
//! (scripts/test.sh builds it before the tests).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{load, model_dir, repo, TempDir};
use diffusion_rt::backend::BackendKind;
use diffusion_rt::{GenerateParams, Session};

const GENERATED: &str = include_str!(concat!(env!("OUT_DIR"), "/diffusion_rt.h"));

fn lib_dir() -> PathBuf {
    // target/<profile>/deps/c_api-<hash> -> target/<profile>
    let exe = std::env::current_exe().expect("test path");
    exe.parent().and_then(Path::parent).expect("target dir").to_path_buf()
}

fn run(cmd: &mut Command) -> std::process::Output {
    let o = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(o.status.success(), "{cmd:?} failed:\n{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    o
}

#[test]
fn committed_header_is_current() {
    let committed = std::fs::read_to_string(repo().join("include/diffusion_rt.h")).expect("include/diffusion_rt.h");
    assert!(committed == GENERATED, "include/diffusion_rt.h is stale: run `DRT_UPDATE_HEADER=1 cargo build` and commit it");
}

#[test]
fn header_compiles_as_c99_and_cxx11() {
    let tmp = TempDir::new("header");
    let c = tmp.path().join("h.c");
    std::fs::write(&c, "#include \"diffusion_rt.h\"\nint main(void) { return drt_version() == 0; }\n").expect("write");
    let inc = repo().join("include");
    run(Command::new("cc").args(["-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic", "-fsyntax-only", "-I"]).arg(&inc).arg(&c));
    run(Command::new("c++").args(["-x", "c++", "-std=c++11", "-Wall", "-Wextra", "-Werror", "-fsyntax-only", "-I"]).arg(&inc).arg(&c));
}

/// Compiles `c_examples/NAME.c` against the shared library into `tmp`.
fn build_example(name: &str, tmp: &TempDir) -> PathBuf {
    build_c(&repo().join("c_examples").join(format!("{name}.c")), &tmp.path().join(name))
}

/// Compiles the C program `src` against the header and the shared library into `exe`.
fn build_c(src: &Path, exe: &Path) -> PathBuf {
    let lib = lib_dir();
    assert!(lib.join("libdiffusion_rt.so").is_file(), "build the library first: cargo build --release --lib");
    run(Command::new("cc")
        .args(["-std=c99", "-Wall", "-Wextra", "-Werror", "-I"])
        .arg(repo().join("include"))
        .arg(src)
        .arg("-L")
        .arg(&lib)
        .arg(format!("-Wl,-rpath,{}", lib.display()))
        .args(["-ldiffusion_rt", "-lpthread", "-o"])
        .arg(exe));
    exe.to_path_buf()
}

#[test]
fn threads_example_equals_sequential_runs_on_every_backend() {
    let tmp = TempDir::new("c-threads");
    let exe = build_example("threads", &tmp);
    for backend in common::backends() {
        let name = if backend == BackendKind::Tract { "tract" } else { "ort" };
        let o = run(Command::new(&exe).arg(model_dir("digits")).arg(name).arg("6"));
        assert!(String::from_utf8_lossy(&o.stdout).contains("every result equals the sequential one"), "{name}");
    }
}

#[test]
fn generate_example_matches_the_rust_api() {
    let tmp = TempDir::new("c-generate");
    let exe = build_example("generate", &tmp);
    let (pgm, raw) = (tmp.path().join("d.pgm"), tmp.path().join("d.f32"));
    run(Command::new(&exe).arg(model_dir("digits")).arg("tract").arg(&pgm).arg(&raw));
    let bytes = std::fs::read(&pgm).expect("pgm written");
    assert!(bytes.starts_with(b"P5\n160 16\n255\n") && bytes.len() == 14 + 160 * 16);

    let from_c: Vec<f32> =
        std::fs::read(&raw).expect("raw").chunks(4).map(|b| f32::from_ne_bytes([b[0], b[1], b[2], b[3]])).collect();
    let model = load(&model_dir("digits"), BackendKind::Tract);
    let mut session = Session::new(&model).expect("session");
    let mut from_rust = Vec::new();
    for digit in 0..10 {
        let p = GenerateParams { steps: Some(20), batch: 1, classes: vec![digit], seed: 42, ..GenerateParams::default() };
        from_rust.extend(session.generate(&p, &mut |_, _| true).expect("generate").samples);
    }
    assert!(from_c == from_rust, "the C API must give the Rust API's samples bit for bit");

    // Error path: a bad model directory is a status and a message, not a crash.
    let o = Command::new(&exe).arg(tmp.path().join("no-model")).arg("tract").output().expect("run");
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("DRT_ERR_IO") && err.contains("no-model"), "{err}");
}

/// The README's "Use from C" program compiles and runs as printed.
#[test]
fn readme_c_program_runs_as_printed() {
    let readme = std::fs::read_to_string(repo().join("README.md")).expect("README");
    let section = readme.split("## Use from C").nth(1).expect("a Use from C section");
    let program = section.split("```c\n").nth(1).and_then(|s| s.split("```").next()).expect("a C block");
    let tmp = TempDir::new("readme-c");
    let (src, exe) = (tmp.path().join("hello.c"), tmp.path().join("hello"));
    std::fs::write(&src, program).expect("write");
    build_c(&src, &exe);
    let o = run(Command::new(&exe).current_dir(repo()).env("DRT_ORT_LIB", "/nonexistent/libonnxruntime.so"));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("pixel (8, 8) of a seven is"), "{out}");
}
