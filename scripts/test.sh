#!/usr/bin/env bash
# The whole test suite on both backends: installs the ONNX Runtime library (PyPI wheel, into .ort/)
# and runs every test; DRT_REQUIRE_ORT turns a missing library into a failure instead of a skip.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-onnxruntime.sh > /dev/null
export DRT_REQUIRE_ORT=1
# The C examples link the shared library, which `cargo test` does not rebuild.
cargo build --release --locked --lib
cargo test --release --locked "$@"
