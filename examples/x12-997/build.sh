#!/usr/bin/env bash
# Builds the x12-997 guest into a deployable bundle folder: OUT_DIR gets
# x12-997.wasm and a copy of process.yaml, so that `atom deploy OUT_DIR`
# works as is (the folder's name becomes the process name).
#
#   examples/x12-997/build.sh [OUT_DIR]
#   # default OUT_DIR: examples/x12-997/target/x12-997
#
# Needs a rustc with the WebAssembly WASI standard library (Debian:
# apt-get install rustc libstd-rust-dev-wasm32; rustup: rustup target add
# wasm32-wasip1). Exit status: 0 built; 3 no such rustc; else the build
# failed. See ../build-rust-guest.sh.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
exec bash "$here/../build-rust-guest.sh" "$here" x12-997 "$@"
