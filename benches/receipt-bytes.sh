#!/usr/bin/env bash
# What the disk sees per receipt: bytes the server writes (/proc/PID/io
# write_bytes: the WAL, the database, files) per 1 KiB unsigned message at
# concurrency 64, beside msgs/s and latency from the shared load generator.
# Unlike msgs/s on a shared machine this hardly moves from run to run, so it
# is the figure to compare store changes by.
#
#   bash benches/receipt-bytes.sh                      # the release build
#   ATOMS="/tmp/atom-before /tmp/atom-after" ROUNDS=2 bash benches/receipt-bytes.sh
#
# ATOMS: binaries to compare, run interleaved for ROUNDS rounds (default:
# target/release/atom, built here). Needs wrk and the pyas2lib venv (as
# benches/limit.sh). No figure is asserted.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SHARED=${ATOM_SHARED_DIR:-$ROOT/../shared}
LOADGEN=$SHARED/bench
DURATION=${DURATION:-10}
ROUNDS=${ROUNDS:-1}
cd "$ROOT"
bash .ci/setup-peers >/dev/null
PY=${ATOM_PEER_VENV:-$ROOT/target/peer-venv}/bin/python
source "$ROOT/benches/lib.sh"
bench_init
ATOMS=${ATOMS:-$ATOM}
bench_messages "$WORK" >/dev/null
for round in $(seq "$ROUNDS"); do
  for atom in $ATOMS; do
    rm -rf "$WORK/atom"
    bench_site "$WORK/atom" "start:
  as2:
    as2_from: { id: BENCH-PLAIN }
    as2_to: { id: BENCH-ORG }"
    start_atom "$atom" "$WORK/atom"
    url=http://127.0.0.1:$HTTP/as2
    WARMUP=2 bash "$LOADGEN/as2load.sh" "$url" "$WORK/plain.hdr" "$WORK/plain.body" 64 2 "$PID" >/dev/null
    before=$(awk '/^write_bytes/ { print $2 }' "/proc/$PID/io")
    out=$(WARMUP=0 bash "$LOADGEN/as2load.sh" "$url" "$WORK/plain.hdr" "$WORK/plain.body" 64 "$DURATION" "$PID")
    after=$(awk '/^write_bytes/ { print $2 }' "/proc/$PID/io")
    ok=$(echo "$out" | grep -o 'ok=[0-9]*' | cut -d= -f2)
    echo "$atom (round $round): $(echo "$out" | grep -o 'msgs/s=[0-9.]* p50=[0-9.]*ms p99=[0-9.]*ms') bytes written per message=$(( (after - before) / (ok > 0 ? ok : 1) ))"
    kill "$PID"; wait "$PID" 2>/dev/null || true; PID=""
  done
done
