//! The C ABI from C: the committed header is current and compiles as C99 and C++11; every example
//! in `c_examples/` builds against the shared library and gives the CLI's samples bit for bit on every
//! backend; the Makefile and pkg-config file build and link (shared and static); the README's program
//! runs as printed. Needs `target/<profile>/libdiffusion_rt.so` (scripts/test.sh builds it).

mod common;

use std::process::Command;

use common::c::{backend_name, build_c, build_example, cli_samples, lib_dir, read_f32, run};
use common::{model_dir, repo, TempDir};

const GENERATED: &str = include_str!(concat!(env!("OUT_DIR"), "/diffusion_rt.h"));

#[test]
fn committed_header_is_current() {
    let committed = std::fs::read_to_string(repo().join("include/diffusion_rt.h")).expect("include/diffusion_rt.h");
    assert!(
        committed == GENERATED,
        "include/diffusion_rt.h is stale: run `DRT_UPDATE_HEADER=1 cargo build` and commit it"
    );
}

#[test]
fn header_compiles_as_c99_and_cxx11() {
    let tmp = TempDir::new("header");
    let c = tmp.path().join("h.c");
    std::fs::write(&c, "#include \"diffusion_rt.h\"\nint main(void) { return drt_version() == 0; }\n").expect("write");
    let inc = repo().join("include");
    run(Command::new("cc")
        .args(["-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic", "-fsyntax-only", "-I"])
        .arg(&inc)
        .arg(&c));
    run(Command::new("c++")
        .args(["-x", "c++", "-std=c++11", "-Wall", "-Wextra", "-Werror", "-pedantic", "-fsyntax-only", "-I"])
        .arg(&inc)
        .arg(&c));
    let cpp = tmp.path().join("h.cpp");
    std::fs::write(&cpp, "#include \"diffusion_rt.hpp\"\nint main() { return drt::version().empty(); }\n")
        .expect("write");
    run(Command::new("c++")
        .args(["-std=c++17", "-Wall", "-Wextra", "-Werror", "-pedantic", "-Wconversion", "-fsyntax-only", "-I"])
        .arg(&inc)
        .arg(&cpp));
}

/// The Swift package's module map (bindings/swift/module) makes the header a Clang module that
/// Swift can import: checked with clang's modules, as Swift's importer reads it (no Swift compiler
/// here). Skipped without clang unless `DRT_REQUIRE_CLANG` is set (scripts/test.sh installs it).
#[test]
fn swift_module_map_is_a_clang_module() {
    if Command::new("clang").arg("--version").output().is_err() {
        assert!(std::env::var_os("DRT_REQUIRE_CLANG").is_none(), "DRT_REQUIRE_CLANG is set but clang is missing");
        eprintln!("note: skipping the module map check (clang not found)");
        return;
    }
    let tmp = TempDir::new("modulemap");
    let headers = tmp.path().join("Headers");
    std::fs::create_dir(&headers).expect("mkdir");
    std::fs::copy(repo().join("include/diffusion_rt.h"), headers.join("diffusion_rt.h")).expect("copy");
    std::fs::copy(repo().join("bindings/swift/module/module.modulemap"), headers.join("module.modulemap"))
        .expect("copy");
    let src = tmp.path().join("use.m");
    std::fs::write(
        &src,
        "@import CDiffusionRT;\nint main(void) {\n    drt_generate_params p = drt_generate_params_default();\n    \
         return (int)p.steps + (drt_abi_version() != DRT_ABI_VERSION);\n}\n",
    )
    .expect("write");
    run(Command::new("clang")
        .args(["-fmodules", "-x", "objective-c", "-fsyntax-only", "-Wall", "-Werror", "-I"])
        .arg(&headers)
        .arg(format!("-fmodules-cache-path={}", tmp.path().join("cache").display()))
        .arg(&src));
}

/// `digits.cpp` through the C++ header: the CLI's samples bit for bit, the caller-driven loop's
/// result equal to them, and each error (a throwing progress lambda, a bad class, a moved-from
/// handle, a missing model) an exception with its status.
#[test]
fn cxx_example_equals_the_cli_on_every_backend() {
    let tmp = TempDir::new("cxx-digits");
    let exe = build_example("digits", tmp.path());
    for backend in common::backends() {
        let name = backend_name(backend);
        let raw = tmp.path().join(format!("{name}.f32"));
        let o = run(Command::new(&exe).arg(model_dir("digits")).arg(name).arg(&raw));
        let out = String::from_utf8_lossy(&o.stdout);
        for needle in [
            "2560 values in 10 steps",
            "progress threw: stop at step 1",
            "class 42: DRT_ERR_INVALID_ARGUMENT: invalid argument: class 42",
            "moved-from session: DRT_ERR_INVALID_ARGUMENT",
            "missing model: DRT_ERR_IO",
        ] {
            assert!(out.contains(needle), "{name}: `{needle}` missing from:\n{out}");
        }
        let cli = cli_samples(backend, &["--class", "0,1,2,3,4,5,6,7,8,9", "--seed", "42"], tmp.path());
        assert!(read_f32(&raw) == cli, "{name}: the C++ API must give the CLI's samples bit for bit");
    }
}

/// `generate.c` draws the ten digits in one batch: a PGM strip, and raw samples equal to the CLI's
/// for the same seed and settings, bit for bit.
#[test]
fn generate_example_equals_the_cli_on_every_backend() {
    let tmp = TempDir::new("c-generate");
    let exe = build_example("generate", tmp.path());
    for backend in common::backends() {
        let name = backend_name(backend);
        let (pgm, raw) = (tmp.path().join(format!("{name}.pgm")), tmp.path().join(format!("{name}.f32")));
        run(Command::new(&exe).arg(model_dir("digits")).arg(name).arg(&pgm).arg(&raw));
        let bytes = std::fs::read(&pgm).expect("pgm written");
        assert!(bytes.starts_with(b"P5\n160 16\n255\n") && bytes.len() == 14 + 160 * 16, "{name}");
        // No sampling options on either side: the model's defaults, the same ones.
        let cli = cli_samples(backend, &["--class", "0,1,2,3,4,5,6,7,8,9", "--seed", "42"], tmp.path());
        assert!(read_f32(&raw) == cli, "{name}: the C API must give the CLI's samples bit for bit");
    }

    // A bad model directory is a status and a message, not a crash.
    let o = Command::new(&exe).arg(tmp.path().join("no-model")).arg("tract").output().expect("run");
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("DRT_ERR_IO") && err.contains("no-model"), "{err}");
}

/// `steps.c` drives the loop one step at a time: the result equals the CLI's bit for bit, and a
/// cancel pressed after step 2 stops the run there.
#[test]
fn steps_example_equals_the_cli_and_cancels() {
    let tmp = TempDir::new("c-steps");
    let exe = build_example("steps", tmp.path());
    for backend in common::backends() {
        let name = backend_name(backend);
        let raw = tmp.path().join(format!("{name}.f32"));
        let o = run(Command::new(&exe).arg(model_dir("digits")).args([name, "3", "8"]).arg(&raw));
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(out.contains(" 8/8 ") && out.contains("digit 3 done in 8 steps"), "{out}");
        let cli = cli_samples(backend, &["--class", "3", "--seed", "7", "--steps", "8"], tmp.path());
        assert!(read_f32(&raw) == cli, "{name}: the caller-driven loop must give the CLI's samples bit for bit");

        let cancelled = tmp.path().join("cancelled.f32");
        let o = Command::new(&exe)
            .arg(model_dir("digits"))
            .args([name, "3", "8"])
            .arg(&cancelled)
            .arg("2")
            .output()
            .expect("run");
        let out = String::from_utf8_lossy(&o.stdout);
        assert_eq!(o.status.code(), Some(2), "{out}");
        assert!(out.contains("cancelled after 2 of 8 steps") && !cancelled.exists(), "{out}");
    }
}

#[test]
fn threads_example_equals_sequential_runs_on_every_backend() {
    let tmp = TempDir::new("c-threads");
    let exe = build_example("threads", tmp.path());
    for backend in common::backends() {
        let name = backend_name(backend);
        let o = run(Command::new(&exe).arg(model_dir("digits")).arg(name).arg("8"));
        assert!(String::from_utf8_lossy(&o.stdout).contains("every result equals the sequential one"), "{name}");
    }
}

/// The numbers of `policy.c`'s summary line: plans, cut short, missed deadlines, goals reached.
fn policy_summary(out: &str) -> [u64; 4] {
    let line = out.lines().last().unwrap_or_default();
    let after = |word: &str| -> u64 {
        let head = &line[..line.find(word).unwrap_or_else(|| panic!("`{word}` in `{line}`"))];
        head.split_whitespace().last().and_then(|n| n.parse().ok()).unwrap_or_else(|| panic!("a count before `{word}`"))
    };
    [after(" plans"), after(" cut short"), after(" missed deadlines"), after(" reached the goal")]
}

/// `policy.c` runs a fixed-rate control loop: with a period every plan fits in, none is cut short
/// or late; with a 1 µs period every plan stops after its first step, takes that step's
/// prediction, and is counted late, and the loop goes on.
#[test]
fn policy_example_meets_or_reports_its_deadlines() {
    let tmp = TempDir::new("c-policy");
    let exe = build_example("policy", tmp.path());
    for backend in common::backends() {
        let name = backend_name(backend);
        let o = run(Command::new(&exe).arg(model_dir("point-policy")).args([name, "50000", "2"]));
        let out = String::from_utf8_lossy(&o.stdout);
        let [plans, cut, missed, reached] = policy_summary(&out);
        assert!(plans >= 2 && cut == 0 && missed == 0 && reached >= 1, "{name}: {out}");
        let o = run(Command::new(&exe).arg(model_dir("point-policy")).args([name, "1", "2"]));
        let out = String::from_utf8_lossy(&o.stdout);
        let [plans, cut, missed, _] = policy_summary(&out);
        assert!(plans >= 2 && cut == plans && missed == plans, "{name}: {out}");
    }
}

/// `bench.c` prints the report `drt bench --json` writes: the same keys, the same settings.
#[test]
fn bench_example_reports_what_the_cli_reports() {
    let tmp = TempDir::new("c-bench");
    let exe = build_example("bench", tmp.path());
    let classifier = model_dir("digits-classifier");
    for backend in common::backends() {
        let name = backend_name(backend);
        let o = run(Command::new(&exe).arg(model_dir("digits")).args([name, "4", "10", "2"]).arg(&classifier).arg("1"));
        let from_c: serde_json::Value = serde_json::from_slice(&o.stdout).expect("bench.c prints JSON");
        let json = tmp.path().join("cli.json");
        run(Command::new(env!("CARGO_BIN_EXE_drt"))
            .args([
                "bench",
                "--backend",
                name,
                "--steps",
                "4",
                "--batch",
                "10",
                "--runs",
                "2",
                "--threads",
                "1",
                "--model",
            ])
            .arg(model_dir("digits"))
            .arg("--classifier")
            .arg(&classifier)
            .arg("--json")
            .arg(&json));
        let from_cli: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&json).expect("json")).expect("json");
        let keys = |v: &serde_json::Value| v.as_object().expect("object").keys().cloned().collect::<Vec<_>>();
        assert_eq!(keys(&from_c), keys(&from_cli), "{name}");
        for key in [
            "backend",
            "model",
            "precision",
            "batch",
            "sampler",
            "steps",
            "guidance",
            "threads",
            "nfe",
            "runs",
            "judged_samples",
            "device",
        ] {
            assert_eq!(from_c[key], from_cli[key], "{name}: {key}");
        }
        assert!(
            from_c["class_accuracy"].as_f64().is_some() && from_c["overhead_ratio"].as_f64().is_some_and(|r| r >= 1.0)
        );
    }
    let o = Command::new(&exe).arg(tmp.path().join("no-model")).output().expect("run");
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("DRT_ERR_IO"));
}

/// The Makefile builds every example through the build tree's pkg-config file, and `make install`
/// gives pkg-config users a working header, shared library and static library.
#[test]
fn makefile_and_pkg_config_build_and_link() {
    let tmp = TempDir::new("c-make");
    let src = tmp.path().join("c_examples");
    std::fs::create_dir(&src).expect("mkdir");
    for f in [
        "Makefile",
        "diffusion_rt.pc.in",
        "generate.c",
        "steps.c",
        "threads.c",
        "bench.c",
        "txt2img.c",
        "policy.c",
        "digits.cpp",
        "sd_preview.cpp",
    ] {
        std::fs::copy(repo().join("c_examples").join(f), src.join(f)).expect("copy");
    }
    let (root, lib) = (format!("ROOT={}", repo().display()), format!("LIBDIR={}", lib_dir().display()));
    run(Command::new("make").arg("-C").arg(&src).args([&root, &lib]));
    for exe in ["generate", "steps", "threads", "bench", "txt2img", "policy", "digits", "sd_preview"] {
        assert!(src.join(exe).is_file(), "make built {exe}");
    }
    let prefix = tmp.path().join("prefix");
    run(Command::new("make")
        .arg("-C")
        .arg(&src)
        .args([&root, &lib, "install"])
        .arg(format!("PREFIX={}", prefix.display())));
    let pc_path = prefix.join("lib/pkgconfig");
    let pkg = |args: &[&str]| {
        let o = run(Command::new("pkg-config").env("PKG_CONFIG_PATH", &pc_path).args(args).arg("diffusion_rt"));
        String::from_utf8(o.stdout).expect("utf8").split_whitespace().map(str::to_string).collect::<Vec<_>>()
    };
    assert_eq!(pkg(&["--modversion"]), [env!("CARGO_PKG_VERSION")]);

    let hello = tmp.path().join("hello.c");
    std::fs::write(&hello, readme_c_program()).expect("write");
    // Linked against the installed shared library.
    let shared = tmp.path().join("hello-shared");
    let rpath = format!("-Wl,-rpath,{}", prefix.join("lib").display());
    run(Command::new("cc").arg(&hello).args(pkg(&["--cflags", "--libs"])).arg(&rpath).arg("-o").arg(&shared));
    // Linked statically: with only the archive installed, Libs.private must name every system library it needs.
    std::fs::remove_file(prefix.join("lib/libdiffusion_rt.so")).expect("rm .so");
    let fixed = tmp.path().join("hello-static");
    run(Command::new("cc").arg(&hello).args(pkg(&["--static", "--cflags", "--libs"])).arg("-o").arg(&fixed));
    for exe in [&shared, &fixed] {
        std::fs::remove_file(prefix.join("lib/libdiffusion_rt.so")).ok();
        std::fs::copy(lib_dir().join("libdiffusion_rt.so"), prefix.join("lib/libdiffusion_rt.so"))
            .expect("restore .so");
        let o = run(Command::new(exe).current_dir(repo()).env("DRT_ORT_LIB", "/nonexistent/libonnxruntime.so"));
        assert!(String::from_utf8_lossy(&o.stdout).contains("pixel (8, 8) of a seven is"), "{exe:?}");
    }
    let needed = run(Command::new("readelf").arg("-d").arg(&fixed));
    assert!(
        !String::from_utf8_lossy(&needed.stdout).contains("libdiffusion_rt"),
        "the static build needs no libdiffusion_rt.so"
    );
}

/// The C program of the README's "Use from C" section.
fn readme_c_program() -> String {
    let readme = std::fs::read_to_string(repo().join("README.md")).expect("README");
    let section = readme.split("## Use from C").nth(1).expect("a Use from C section");
    section.split("```c\n").nth(1).and_then(|s| s.split("```").next()).expect("a C block").to_string()
}

/// The README's "Use from C" program compiles and runs as printed.
#[test]
fn readme_c_program_runs_as_printed() {
    let tmp = TempDir::new("readme-c");
    let (src, exe) = (tmp.path().join("hello.c"), tmp.path().join("hello"));
    std::fs::write(&src, readme_c_program()).expect("write");
    build_c(&src, &exe);
    let o = run(Command::new(&exe).current_dir(repo()).env("DRT_ORT_LIB", "/nonexistent/libonnxruntime.so"));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("pixel (8, 8) of a seven is"), "{out}");
}
