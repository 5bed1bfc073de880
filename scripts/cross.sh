#!/usr/bin/env bash
# Builds diffusion-rt for 64-bit ARM Linux (Raspberry Pi 4/5, Jetson, ARM servers) on an x86-64
# Debian 12 machine, and with `test` runs its portability tests there under user-mode emulation.
#
#   bash scripts/cross.sh aarch64        # drt, libdiffusion_rt.so and .a in target/aarch64-unknown-linux-gnu/release/
#   bash scripts/cross.sh aarch64 test   # and the tests under qemu (tract and ONNX Runtime's aarch64 build)
#
# rustup cannot add targets everywhere, so the compiler is Debian's: rustc-web with the aarch64 standard
# library packaged as libstd-rust-web-dev:arm64, and Debian's cross gcc as linker. ONNX Runtime's aarch64
# library comes from its PyPI wheel (scripts/install-onnxruntime.sh aarch64). qemu 10 (bookworm-backports)
# is needed for ONNX Runtime, which reads the CPU's features at start-up and crashes under qemu 7.2.
# Missing Debian packages are installed with apt-get (through sudo when not root). Times under emulation
# mean nothing; run `drt bench` on the board itself (docs/devices.md).
set -euo pipefail
cd "$(dirname "$0")/.."

arch="${1:-}"
mode="${2:-build}"
if [ "$arch" != aarch64 ] || { [ "$mode" != build ] && [ "$mode" != test ]; }; then
    echo "usage: $0 aarch64 [build|test]" >&2
    exit 2
fi
target=aarch64-unknown-linux-gnu
out="target/$target/release"

sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
apt_install() {
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$@" > /dev/null
}
need=()
dpkg --print-foreign-architectures | grep -qx arm64 || $sudo dpkg --add-architecture arm64
for p in rustc-web libstd-rust-web-dev:arm64 gcc-aarch64-linux-gnu libc6-dev-arm64-cross libstdc++6:arm64; do
    dpkg -s "$p" > /dev/null 2>&1 || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
    echo "installing ${need[*]} with apt-get" >&2
    $sudo apt-get update -qq
    apt_install "${need[@]}"
fi
if [ "$mode" = test ] && ! qemu-aarch64 --version 2> /dev/null | grep -qE "version (9|[1-9][0-9])\."; then
    echo "installing qemu-user from bookworm-backports with apt-get" >&2
    list=/etc/apt/sources.list.d/bookworm-backports.sources
    if [ ! -f "$list" ]; then
        printf 'Types: deb\nURIs: http://deb.debian.org/debian\nSuites: bookworm-backports\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
            | $sudo tee "$list" > /dev/null
    fi
    $sudo apt-get update -qq
    apt_install -t bookworm-backports qemu-user
fi

export RUSTC=/usr/bin/rustc
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
export CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc
export CXX_aarch64_unknown_linux_gnu=aarch64-linux-gnu-g++
export AR_aarch64_unknown_linux_gnu=aarch64-linux-gnu-ar
# `-L /`: the target's libraries from Debian's multiarch folders (with -L /usr/aarch64-linux-gnu the
# cross toolchain's libc mixes in and thread starts hang). cortex-a72 (a Raspberry Pi 4) emulates
# many times faster than qemu's default `max` model.
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="qemu-aarch64 -L / -cpu cortex-a72"

cargo build --release --locked --target "$target" --lib --bin drt
echo "built $out/drt, $out/libdiffusion_rt.so and $out/libdiffusion_rt.a" >&2
[ "$mode" = test ] || exit 0

ort="$(bash scripts/install-onnxruntime.sh aarch64)"
export DRT_ORT_LIB="$ort" DRT_REQUIRE_ORT=1
# Emulation runs tract's NEON kernels some hundred times slower than a board, so the golden suite is
# bounded to four cases (deterministic and stochastic, Karras sigmas, the flow model): a few minutes
# instead of an hour. DRT_GOLDEN_CASES chooses others (set but empty: every case).
export DRT_GOLDEN_CASES="${DRT_GOLDEN_CASES-ddim_10,euler_a_10,dpmpp_2m_karras_10,flow_euler_10}"
cargo test --release --locked --target "$target" --lib --test golden
# Each case says how far aarch64 lands from x86-64.
cargo test --release --locked --target "$target" --test portable -- --nocapture

# The C example, built with the cross compiler against the aarch64 library, gives the aarch64 CLI's
# samples bit for bit (two steps: the comparison, not the sampling, is the point here).
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
aarch64-linux-gnu-gcc -std=c99 -Wall -Wextra -Werror -Iinclude c_examples/generate.c -L"$out" -ldiffusion_rt \
    -Wl,-rpath,"$PWD/$out" -o "$tmp/generate"
run="qemu-aarch64 -L / -cpu cortex-a72"
for backend in tract ort; do
    $run "$tmp/generate" models/digits "$backend" "$tmp/$backend.pgm" "$tmp/$backend.f32" 2
    $run "$out/drt" generate --quiet --model models/digits --backend "$backend" --class 0,1,2,3,4,5,6,7,8,9 \
        --seed 42 --steps 2 --save-raw "$tmp/$backend.npy"
    python3 - "$tmp/$backend.npy" "$tmp/$backend.f32" "$backend" <<'EOF'
import struct, sys
npy, raw, backend = open(sys.argv[1], "rb").read(), open(sys.argv[2], "rb").read(), sys.argv[3]
header = struct.unpack("<H", npy[8:10])[0]  # .npy version 1: header length after a 10-byte preamble
if npy[10 + header:] != raw:
    sys.exit(f"aarch64, {backend}: c_examples/generate.c and drt generate differ")
print(f"aarch64, {backend}: c_examples/generate.c gives the CLI's {len(raw) // 4} values bit for bit")
EOF
done
