#!/usr/bin/env bash
# Installs the ONNX Runtime shared library that the `ort` backend loads at run time, into <repo>/.ort
# (ignored by git). The library comes from the PyPI `onnxruntime` wheel, because pip is the one package
# channel every supported machine reaches; the wheel ships only `libonnxruntime.so.<version>`, so we add the
# unversioned name that diffusion-rt looks for. Re-running is a no-op that prints the path again.
#
#   bash scripts/install-onnxruntime.sh            # then: export DRT_ORT_LIB=<printed path> (optional)
#   ORT_VERSION=1.31.1 PYTHON=python3 bash scripts/install-onnxruntime.sh
#   bash scripts/install-onnxruntime.sh aarch64    # the 64-bit ARM Linux library, into .ort/aarch64
#                                                  # (for cross builds: scripts/cross.sh)
set -euo pipefail
export PIP_ROOT_USER_ACTION=ignore  # quiet when run as root in containers

version="${ORT_VERSION:-1.31.1}"
python="${PYTHON:-python3}"
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dest="$repo/.ort"
platform=()
case "${1:-}" in
    "") ;;
    # ONNX Runtime publishes no manylinux_2_27 aarch64 wheel; 2_28 needs glibc 2.28 on the board.
    aarch64) dest="$dest/aarch64"; platform=(--platform manylinux_2_28_aarch64) ;;
    *) echo "usage: $0 [aarch64]" >&2; exit 2 ;;
esac
pkg="$dest/pkg-$version"
lib="$dest/lib/libonnxruntime.so"
real="$pkg/onnxruntime/capi/libonnxruntime.so.$version"

if [ ! -f "$real" ]; then
    echo "installing onnxruntime==$version from PyPI into $pkg" >&2
    tmp="$pkg.tmp.$$"
    rm -rf "$tmp"
    trap 'rm -rf "$tmp"' EXIT
    # --no-deps: only the shared library is needed, not numpy/protobuf for the Python bindings.
    "$python" -m pip install --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
        ${platform[@]+"${platform[@]}"} --target "$tmp" "onnxruntime==$version"
    if [ ! -f "$tmp/onnxruntime/capi/libonnxruntime.so.$version" ]; then
        echo "error: the onnxruntime==$version wheel has no capi/libonnxruntime.so.$version" >&2
        ls "$tmp/onnxruntime/capi" >&2 || true
        exit 1
    fi
    rm -rf "$pkg"
    mv "$tmp" "$pkg"
    trap - EXIT
fi

mkdir -p "$dest/lib"
# Relative link, so the .ort folder keeps working if the checkout moves.
target="../pkg-$version/onnxruntime/capi/libonnxruntime.so.$version"
if [ "$(readlink "$lib" 2>/dev/null || true)" != "$target" ]; then
    ln -sfn "$target" "$lib"
fi
echo "$lib"
