//! The Java API (bindings/java) on this machine's JVM: its JUnit 5 tests run by
//! `bindings/java/test.sh` against the shared library this test binary was built with, on the
//! backends the Rust tests use, with the JVM's JNI checks on; and the Android AAR laid out from
//! that library. Skipped without a JDK or JUnit unless `DRT_REQUIRE_JAVA` is set (scripts/test.sh
//! installs both).

mod common;

use std::path::Path;
use std::process::Command;
use std::sync::Mutex;

use common::c::{lib_dir, run};
use common::{ort_available, repo};

/// Both tests build into target/java; one at a time.
static TARGET_JAVA: Mutex<()> = Mutex::new(());

const JUNIT: &str = "/usr/share/java/junit-platform-console-standalone.jar";

fn java_available() -> bool {
    let found =
        Command::new("javac").arg("-version").output().is_ok_and(|o| o.status.success()) && Path::new(JUNIT).is_file();
    if !found {
        assert!(
            std::env::var_os("DRT_REQUIRE_JAVA").is_none(),
            "DRT_REQUIRE_JAVA is set but javac or {JUNIT} is missing"
        );
        eprintln!("note: skipping the Java API tests (no javac or {JUNIT})");
    }
    found
}

#[test]
fn java_api_tests_pass_on_the_host_jvm() {
    if !java_available() {
        return;
    }
    let _one = TARGET_JAVA.lock().unwrap_or_else(|e| e.into_inner());
    let backends = if ort_available() { "tract,ort" } else { "tract" };
    let o = run(Command::new("bash")
        .arg(repo().join("bindings/java/test.sh"))
        .env("DRT_LIB_DIR", lib_dir())
        .env("DRT_JAVA_BACKENDS", backends));
    let out = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    // -Xcheck:jni reports misuse (a JNI call with an exception pending, a leaked local frame) as
    // warnings and goes on; here they fail the test.
    assert!(!out.contains("WARNING in native method") && !out.contains("FATAL ERROR"), "{out}");
    assert!(out.contains(" 0 tests failed") && !out.contains(" 0 tests successful"), "{out}");
    for backend in backends.split(',') {
        assert!(out.contains(&format!("dpmpp_2m_10 on {backend}: relative L2")), "{backend} did not run:\n{out}");
    }
}

#[test]
fn the_aar_holds_the_classes_the_manifest_and_the_library() {
    if !java_available() {
        return;
    }
    let _one = TARGET_JAVA.lock().unwrap_or_else(|e| e.into_inner());
    let lib = lib_dir().join("libdiffusion_rt.so");
    run(Command::new("bash")
        .arg(repo().join("scripts/android-aar.sh"))
        .env("DRT_AAR_LIBS", format!("x86_64={} arm64-v8a={}", lib.display(), lib.display())));
    let aar = repo().join("target/android/diffusion-rt.aar");
    let list = |file: &Path| {
        let o = run(Command::new("jar").arg("tf").arg(file));
        String::from_utf8_lossy(&o.stdout).lines().map(str::to_string).collect::<Vec<_>>()
    };
    let entries = list(&aar);
    for want in [
        "AndroidManifest.xml",
        "classes.jar",
        "R.txt",
        "jni/x86_64/libdiffusion_rt.so",
        "jni/arm64-v8a/libdiffusion_rt.so",
    ] {
        assert!(entries.iter().any(|e| e == want), "{want} missing from the AAR: {entries:?}");
    }
    let classes = list(&repo().join("target/android/aar/classes.jar"));
    for class in ["Model", "Session", "GenerateParams", "StableDiffusion", "Native", "DiffusionRtException", "Status"] {
        let want = format!("dev/diffusionrt/{class}.class");
        assert!(classes.contains(&want), "{want} missing from classes.jar: {classes:?}");
    }
    let size = |p: &Path| std::fs::metadata(p).expect("stat").len();
    assert_eq!(size(&repo().join("target/android/aar/jni/x86_64/libdiffusion_rt.so")), size(&lib));
    let manifest =
        std::fs::read_to_string(repo().join("target/android/aar/AndroidManifest.xml")).expect("the manifest");
    assert!(manifest.contains("package=\"dev.diffusionrt\"") && manifest.contains("minSdkVersion"), "{manifest}");

    let o = Command::new("bash")
        .arg(repo().join("scripts/android-aar.sh"))
        .env("DRT_AAR_LIBS", "mips=/nonexistent.so")
        .output()
        .expect("run");
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("unknown Android ABI 'mips'"));
}
