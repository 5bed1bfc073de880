//! Building and running C programs against the shared library, and the `drt` CLI they are compared
//! with. Needs `target/<profile>/libdiffusion_rt.so` from `cargo build --lib` (scripts/test.sh builds
//! it before the tests, since `cargo test` does not).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use diffusion_rt::backend::BackendKind;

use super::{model_dir, repo};

/// The folder of the library this test binary was built with: target/<profile>.
pub fn lib_dir() -> PathBuf {
    // target/<profile>/deps/<test>-<hash> -> target/<profile>
    let exe = std::env::current_exe().expect("test path");
    exe.parent().and_then(Path::parent).expect("target dir").to_path_buf()
}

/// Runs `cmd` and fails the test, with its output, unless it succeeds.
pub fn run(cmd: &mut Command) -> Output {
    let o = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        o.status.success(),
        "{cmd:?} failed:\n{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

/// Compiles `c_examples/NAME.c` (or, when there is one, the C++ program `NAME.cpp`) against the
/// shared library into `dir`.
pub fn build_example(name: &str, dir: &Path) -> PathBuf {
    let cpp = repo().join("c_examples").join(format!("{name}.cpp"));
    if cpp.is_file() {
        return build_with("c++", "-std=c++17", &cpp, &dir.join(name));
    }
    build_c(&repo().join("c_examples").join(format!("{name}.c")), &dir.join(name))
}

/// Compiles the C program `src` against the header and the shared library into `exe`.
pub fn build_c(src: &Path, exe: &Path) -> PathBuf {
    build_with("cc", "-std=c99", src, exe)
}

fn build_with(compiler: &str, standard: &str, src: &Path, exe: &Path) -> PathBuf {
    let lib = lib_dir();
    assert!(lib.join("libdiffusion_rt.so").is_file(), "build the library first: cargo build --release --lib");
    run(Command::new(compiler)
        .args([standard, "-g", "-Wall", "-Wextra", "-Werror", "-I"])
        .arg(repo().join("include"))
        .arg(src)
        .arg("-L")
        .arg(&lib)
        .arg(format!("-Wl,-rpath,{}", lib.display()))
        .args(["-ldiffusion_rt", "-lpthread", "-o"])
        .arg(exe));
    exe.to_path_buf()
}

/// The backend's name as the C examples and the CLI take it.
pub fn backend_name(b: BackendKind) -> &'static str {
    match b {
        BackendKind::Ort => "ort",
        _ => "tract",
    }
}

/// The backend's name as the C API's `drt_model_params.backend` takes it.
pub fn backend_cname(b: BackendKind) -> &'static std::ffi::CStr {
    match b {
        BackendKind::Ort => c"ort",
        _ => c"tract",
    }
}

/// `drt generate` on the shipped digits model with `args`, returning the raw samples it saved.
pub fn cli_samples(backend: BackendKind, args: &[&str], scratch: &Path) -> Vec<f32> {
    let raw = scratch.join(format!("cli-{}.npy", backend_name(backend)));
    run(Command::new(env!("CARGO_BIN_EXE_drt"))
        .args(["generate", "--quiet", "--backend", backend_name(backend), "--model"])
        .arg(model_dir("digits"))
        .args(args)
        .arg("--save-raw")
        .arg(&raw));
    diffusion_rt::npy::read(&raw).expect("CLI wrote --save-raw").data
}

/// Native-endian float32 values written by a C example.
pub fn read_f32(path: &Path) -> Vec<f32> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    bytes.chunks_exact(4).map(|b| f32::from_ne_bytes([b[0], b[1], b[2], b[3]])).collect()
}
