#!/usr/bin/env bash
# The whole test suite on both backends: installs the ONNX Runtime library (PyPI wheel, into .ort/)
# and the tools the binding tests use (valgrind, pkg-config, clang for the Swift module map, a JDK
# and JUnit 5 for the Java API: Debian packages), then runs every test. DRT_REQUIRE_ORT,
# DRT_REQUIRE_VALGRIND, DRT_REQUIRE_CLANG and DRT_REQUIRE_JAVA turn a missing library or tool into
# a failure instead of a skip.
set -euo pipefail
cd "$(dirname "$0")/.."
# The library never looks in the checkout by itself: the tests (and the programs they run) are
# pointed at it.
DRT_ORT_LIB="$(bash scripts/install-onnxruntime.sh)"
export DRT_ORT_LIB

missing=()
command -v valgrind > /dev/null || missing+=(valgrind)
command -v pkg-config > /dev/null || missing+=(pkg-config)
command -v clang > /dev/null || missing+=(clang)
command -v javac > /dev/null || missing+=(openjdk-17-jdk-headless)
[ -f /usr/share/java/junit-platform-console-standalone.jar ] || missing+=(junit5)
if [ ${#missing[@]} -gt 0 ]; then
    echo "installing ${missing[*]} with apt-get" >&2
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" > /dev/null
fi
export DRT_REQUIRE_ORT=1 DRT_REQUIRE_VALGRIND=1 DRT_REQUIRE_CLANG=1 DRT_REQUIRE_JAVA=1

# The C examples link the shared library, which `cargo test` does not rebuild.
cargo build --release --locked --lib
cargo test --release --locked "$@"

# The quality-per-NFE study's plot and docs/quality.md tables are drawn from docs/nfe_study.json, and a few
# of its points still measure what it says (docs/quality.md).
cargo bench --locked --bench nfe_study -- --check

# 64-bit ARM: cross-built, and the portability tests run under qemu (docs/devices.md).
# DRT_SKIP_CROSS=1 leaves it out of a local run (it takes about 20 minutes on 2 cores the first time).
if [ -z "${DRT_SKIP_CROSS:-}" ]; then
    bash scripts/cross.sh aarch64 test
fi
