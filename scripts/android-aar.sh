#!/usr/bin/env bash
# Lays out the Android library (AAR) target/android/diffusion-rt.aar: the Java API's classes.jar,
# an AndroidManifest.xml, and jni/<abi>/libdiffusion_rt.so for every ABI built. Build the native
# libraries first on a machine with the Android NDK (docs/devices.md), e.g.
#     cargo ndk -t arm64-v8a -t armeabi-v7a -t x86_64 build --release --no-default-features --features tract,ort,jni
# which leaves them in target/<rust target>/release/. DRT_AAR_LIBS="abi=path ..." names the files
# instead (the tests lay out the AAR from the host's library that way). ONNX Runtime is not inside:
# apps add the onnxruntime-android AAR beside this one (README).
set -euo pipefail
cd "$(dirname "$0")/.."
out=target/android
min_sdk=${DRT_MIN_SDK:-24}

declare -A targets=([arm64-v8a]=aarch64-linux-android [armeabi-v7a]=armv7-linux-androideabi
    [x86_64]=x86_64-linux-android [x86]=i686-linux-android)
libs=()
if [ -n "${DRT_AAR_LIBS:-}" ]; then
    read -r -a libs <<< "$DRT_AAR_LIBS"
else
    for abi in arm64-v8a armeabi-v7a x86_64 x86; do
        lib=target/${targets[$abi]}/release/libdiffusion_rt.so
        [ -f "$lib" ] && libs+=("$abi=$lib")
    done
fi
if [ ${#libs[@]} -eq 0 ]; then
    echo "no Android libraries in target/<android target>/release/: build them with cargo ndk (see the header of $0)" >&2
    exit 1
fi

jar=$(bash bindings/java/build.sh)
stage=$out/aar
rm -rf "$stage"
mkdir -p "$stage"
cp "$jar" "$stage/classes.jar"
cat > "$stage/AndroidManifest.xml" <<XML
<?xml version="1.0" encoding="utf-8"?>
<manifest xmlns:android="http://schemas.android.com/apk/res/android" package="dev.diffusionrt">
    <uses-sdk android:minSdkVersion="$min_sdk" />
</manifest>
XML
: > "$stage/R.txt"
for entry in "${libs[@]}"; do
    abi=${entry%%=*}
    lib=${entry#*=}
    [ -n "${targets[$abi]:-}" ] || { echo "unknown Android ABI '$abi' in '$entry'" >&2; exit 1; }
    [ -f "$lib" ] || { echo "no library at '$lib' (for $abi)" >&2; exit 1; }
    mkdir -p "$stage/jni/$abi"
    cp "$lib" "$stage/jni/$abi/libdiffusion_rt.so"
done
rm -f "$out/diffusion-rt.aar"
(cd "$stage" && jar --create --no-manifest --file ../diffusion-rt.aar .)
echo "$out/diffusion-rt.aar"
