#!/usr/bin/env bash
# Runs the Java API's JUnit 5 tests on this machine's JVM, with the JVM's own JNI checks on
# (-Xcheck:jni), against target/release/libdiffusion_rt.so (DRT_LIB_DIR names another folder).
# Backends: DRT_JAVA_BACKENDS (e.g. "tract,ort"); by default tract, and ort when .ort/lib has the
# library (scripts/install-onnxruntime.sh). JUnit's console launcher is Debian's junit5 package.
set -euo pipefail
cd "$(dirname "$0")/../.."
junit=${JUNIT_CONSOLE:-/usr/share/java/junit-platform-console-standalone.jar}
lib=${DRT_LIB_DIR:-target/release}/libdiffusion_rt.so
[ -f "$junit" ] || { echo "no JUnit console launcher at $junit (apt-get install junit5)" >&2; exit 1; }
[ -f "$lib" ] || { echo "no $lib: cargo build --release --lib first" >&2; exit 1; }
backends=${DRT_JAVA_BACKENDS:-tract$(ls .ort/lib/libonnxruntime.so* > /dev/null 2>&1 && echo ,ort)}

jar=$(bash bindings/java/build.sh)
classes=target/java/test-classes
rm -rf "$classes"
mkdir -p "$classes"
find bindings/java/src/test/java -name '*.java' -print0 | sort -z \
    | xargs -0 javac -Xlint:all -Werror -encoding UTF-8 -cp "$jar:$junit" -d "$classes"
java -Xcheck:jni \
    "-Ddev.diffusionrt.library=$(realpath --relative-to=. "$lib")" "-Ddiffusionrt.repo=$PWD" "-Ddiffusionrt.backends=$backends" \
    -jar "$junit" --disable-banner --details=tree --fail-if-no-tests \
    --class-path "$jar:$classes" --select-package dev.diffusionrt
