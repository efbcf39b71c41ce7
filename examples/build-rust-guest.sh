#!/usr/bin/env bash
# Builds a Rust guest example into a deployable bundle folder: OUT_DIR
# gets NAME.wasm and a copy of the example's process.yaml, so that
# `atom deploy OUT_DIR` works as is (the folder's name becomes the process name).
# Each example's build.sh calls this with its own folder and name:
#
#   examples/build-rust-guest.sh EXAMPLE_DIR NAME [OUT_DIR]
#   # default OUT_DIR: EXAMPLE_DIR/target/NAME
#
# Needs a rustc with the WebAssembly WASI standard library, without Cargo:
#   Debian/Ubuntu:  apt-get install rustc libstd-rust-dev-wasm32   (target wasm32-wasi)
#   rustup:         rustup target add wasm32-wasip1
# (with rustup, `cargo build --release --target wasm32-wasip1` works too).
# Set RUSTC to choose a compiler; otherwise /usr/bin/rustc, then rustc on PATH.
# Exit status: 0 built; 3 no rustc with that standard library; else the build failed.
set -euo pipefail

here="$(cd "${1:?usage: build-rust-guest.sh EXAMPLE_DIR NAME [OUT_DIR]}" && pwd)"
name="${2:?usage: build-rust-guest.sh EXAMPLE_DIR NAME [OUT_DIR]}"
out="${3:-$here/target/$name}"

# The same ABI has two target names: wasm32-wasi (Debian's package, rustc
# up to 1.83) and wasm32-wasip1 (rustc 1.78 and later). Use whichever the
# compiler has the standard library for.
find_target() {
    local rustc="$1" sysroot target
    sysroot="$("$rustc" --print sysroot 2>/dev/null)" || return 1
    for target in wasm32-wasi wasm32-wasip1; do
        if compgen -G "$sysroot/lib/rustlib/$target/lib/libstd-*.rlib" >/dev/null; then
            echo "$target"
            return 0
        fi
    done
    return 1
}

candidates=()
if [ -n "${RUSTC:-}" ]; then
    candidates+=("$RUSTC")
fi
if [ -x /usr/bin/rustc ]; then
    candidates+=(/usr/bin/rustc)
fi
on_path="$(command -v rustc 2>/dev/null || true)"
if [ -n "$on_path" ] && [ "$on_path" != /usr/bin/rustc ]; then
    candidates+=("$on_path")
fi

rustc="" target=""
for candidate in ${candidates[@]+"${candidates[@]}"}; do
    if target="$(find_target "$candidate")"; then
        rustc="$candidate"
        break
    fi
done
if [ -z "$rustc" ]; then
    {
        echo "build.sh: no rustc with the wasm32-wasi standard library found"
        echo "  tried: ${candidates[*]:-(no rustc at /usr/bin/rustc or on PATH)}"
        echo "  Debian/Ubuntu: apt-get install rustc libstd-rust-dev-wasm32"
        echo "  rustup:        rustup target add wasm32-wasip1"
    } >&2
    exit 3
fi

mkdir -p "$out"
# Debug info of the standard library would make the module ~50 times
# larger; the name section stays, so traps still name the function.
"$rustc" --edition 2021 -O -C strip=debuginfo --target "$target" \
    "$here/src/main.rs" -o "$out/$name.wasm"
cp "$here/process.yaml" "$out/process.yaml"
echo "built $out/$name.wasm ($("$rustc" --version), $target)"
