#!/usr/bin/env bash
# Builds the Java API into target/java/diffusion-rt.jar: class files for Java 8 and later (what
# Android's toolchain and every desktop JVM load). The native methods are in libdiffusion_rt, built
# by `cargo build --release` (the `jni` feature is on by default).
set -euo pipefail
cd "$(dirname "$0")/../.."
out=target/java
rm -rf "$out/classes"
mkdir -p "$out/classes"
find bindings/java/src/main/java -name '*.java' -print0 | sort -z \
    | xargs -0 javac -Xlint:all -Xlint:-options -Werror --release 8 -encoding UTF-8 -d "$out/classes"
jar --create --file "$out/diffusion-rt.jar" -C "$out/classes" .
echo "$out/diffusion-rt.jar"
