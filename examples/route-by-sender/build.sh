#!/usr/bin/env bash
# Builds the route-by-sender guest into a deployable bundle folder: OUT_DIR gets
# route-by-sender.wasm and a copy of process.yaml, so that `atom deploy OUT_DIR`
# works as is (the folder's name becomes the process name).
#
#   examples/route-by-sender/build.sh [OUT_DIR]
#   # default OUT_DIR: examples/route-by-sender/target/route-by-sender
#
# Needs a rustc with the WebAssembly WASI standard library (Debian:
# apt-get install rustc libstd-rust-dev-wasm32; rustup: rustup target add
# wasm32-wasip1). Exit status: 0 built; 3 no such rustc; else the build
# failed. See ../build-rust-guest.sh.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
exec bash "$here/../build-rust-guest.sh" "$here" route-by-sender "$@"
