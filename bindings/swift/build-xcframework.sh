#!/usr/bin/env bash
# Builds bindings/swift/DiffusionRT.xcframework on a Mac (Xcode and rustup): the static library for
# iOS devices, the iOS simulator (arm64 and x86_64 in one with lipo) and macOS, each with the C
# header and the module map Swift imports as CDiffusionRT. It cannot run on Linux; what is checked
# off a Mac is the module map (tests/c_api.rs compiles against it with clang's modules).
#
# The library is built on tract (pure Rust), which needs nothing else on the device. ONNX Runtime
# (and with it the CoreML provider) is not in it: on iOS ONNX Runtime must be linked statically,
# since apps may not load libraries at run time (bindings/swift/README.md).
set -euo pipefail
cd "$(dirname "$0")/../.."
[ "$(uname)" = Darwin ] || { echo "build-xcframework.sh needs macOS with Xcode" >&2; exit 1; }

targets=(aarch64-apple-ios aarch64-apple-ios-sim x86_64-apple-ios aarch64-apple-darwin)
rustup target add "${targets[@]}"
for t in "${targets[@]}"; do
    cargo build --release --locked --lib --no-default-features --features tract --target "$t"
done

out=bindings/swift/build
rm -rf "$out" bindings/swift/DiffusionRT.xcframework
mkdir -p "$out/headers" "$out/ios-sim"
cp include/diffusion_rt.h bindings/swift/module/module.modulemap "$out/headers/"
lipo -create target/aarch64-apple-ios-sim/release/libdiffusion_rt.a target/x86_64-apple-ios/release/libdiffusion_rt.a \
    -output "$out/ios-sim/libdiffusion_rt.a"
xcodebuild -create-xcframework \
    -library target/aarch64-apple-ios/release/libdiffusion_rt.a -headers "$out/headers" \
    -library "$out/ios-sim/libdiffusion_rt.a" -headers "$out/headers" \
    -library target/aarch64-apple-darwin/release/libdiffusion_rt.a -headers "$out/headers" \
    -output bindings/swift/DiffusionRT.xcframework
echo "bindings/swift/DiffusionRT.xcframework: add bindings/swift as a Swift package and import DiffusionRT"
