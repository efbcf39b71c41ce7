#!/usr/bin/env bash
# The receive path against its physical limit, measured with the independent
# load generator in ../shared/bench (wrk + as2replay.lua replaying a message
# that pyas2lib built, a fresh Message-ID per request; as2load.sh reports
# throughput, latency, server CPU and peak RSS), beside `openssl speed` in the
# same run:
#
#   (a) 10 KiB EDI, signed (sha256) + encrypted (aes128), signed sync MDN, at
#       concurrency 1, 8 and 32: msgs/s against the RSA bound (a receiver
#       does two RSA-2048 private operations per message: decrypt the content
#       key, sign the MDN; bound = openssl speed's private ops/s / 2)
#   (b) 1 KiB EDI, unsigned, unencrypted, unsigned sync MDN, durable, c64
#
#   bash benches/limit.sh                 # about 2 minutes after the build
#   DURATION=30 WARMUP=5 bash benches/limit.sh
#
# Needs wrk (Debian package; installed when missing), the pyas2lib venv of
# .ci/setup-peers (made when missing) and a release build (made here).
# No figure is asserted: this prints a table for the README and the notes.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SHARED=${ATOM_SHARED_DIR:-$ROOT/../shared}
LOADGEN=$SHARED/bench
DURATION=${DURATION:-15}
export WARMUP=${WARMUP:-3}
CORES=$(nproc)
say() { printf '== %s\n' "$*"; }
cd "$ROOT"

[ -x "$LOADGEN/as2load.sh" ] || [ -f "$LOADGEN/as2load.sh" ] || { echo "no load generator at $LOADGEN (set ATOM_SHARED_DIR)" >&2; exit 1; }
if ! command -v wrk >/dev/null; then
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo=sudo
  $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq wrk >/dev/null
fi
bash .ci/setup-peers >/dev/null
PY=${ATOM_PEER_VENV:-$ROOT/target/peer-venv}/bin/python

source "$ROOT/benches/lib.sh"
say "building atom (release)"
bench_init

say "keys, messages (pyas2lib) and the Atom in $WORK"
bench_messages "$WORK"
bench_site "$WORK/atom" "start:
  as2:
    as2_from: { id: BENCH-PARTNER, signing_certificate: $KEYS/partner.cert.pem }
    as2_to: { id: BENCH-ORG, decryption_key: $KEYS/org.pem, mdn_signing_key: $KEYS/org.pem }
    security: { require_signed: true, require_encrypted: true }"
mkdir -p "$WORK/atom/processes/plain"
printf 'start:\n  as2:\n    as2_from: { id: BENCH-PLAIN }\n    as2_to: { id: BENCH-ORG }\n' \
  > "$WORK/atom/processes/plain/process.yaml"
start_atom "$ATOM" "$WORK/atom"
URL=http://127.0.0.1:$HTTP/as2

say "openssl speed -multi $CORES rsa2048 (the RSA bound)"
sign_per_s=$(openssl speed -multi "$CORES" -seconds 5 rsa2048 2>/dev/null |
  awk '/^rsa 2048 bits/ { print $(NF-1) }' | tail -1)
bound=$(awk -v s="$sign_per_s" 'BEGIN { printf "%.0f", s / 2 }')
echo "rsa2048 private ops/s on $CORES cores: $sign_per_s; bound for (a): $bound msg/s"

results=$WORK/results.txt; : > "$results"
load() {  # label headers body concurrency
  say "$1 at c$4 for ${DURATION}s"
  LABEL=$1 bash "$LOADGEN/as2load.sh" "$URL" "$2" "$3" "$4" "$DURATION" "$PID" | tee -a "$results"
}
for c in 1 8 32; do load signed+encrypted "$WORK/se.hdr" "$WORK/se.body" "$c"; done
load unsigned-1k "$WORK/plain.hdr" "$WORK/plain.body" 64

say "table"
printf '| load | msgs/s | share of the RSA bound | p50 | p99 | server CPU | wrk CPU | peak RSS |\n| --- | --- | --- | --- | --- | --- | --- | --- |\n'
awk -v bound="$bound" '
  / c=[0-9]+ / {
    label = $1; for (i = 1; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
    share = (label == "signed+encrypted" && bound > 0) ? sprintf("%.0f %%", 100 * v["msgs/s"] / bound) : "-"
    printf "| %s, %s | %s | %s | %s ms | %s ms | %s | %s | %s |\n", label, "c" v["c"], v["msgs/s"], share, v["p50"] + 0, v["p99"] + 0, v["server_cpu"], v["wrk_cpu"], v["server_peak_rss"]
  }' "$results"

# Where the CPU of one message goes, against what the RSA bound assumes
# (all cores doing nothing but the two private operations). The load
# generator shares the cores, so the highest rate this machine allows with
# it is cores / (RSA + wrk per message), before the server does anything
# else at all.
say "CPU per signed+encrypted message (ms)"
printf '| load | server | of which RSA | wrk | ceiling with wrk on the same cores (share of the bound) |\n| --- | --- | --- | --- | --- |\n'
awk -v ops="$sign_per_s" -v cores="$CORES" -v bound="$bound" '
  /^signed\+encrypted c=[0-9]+ / {
    for (i = 1; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
    rate = v["msgs/s"] + 0; if (rate <= 0 || ops <= 0) next
    server = 10 * (v["server_cpu"] + 0) / rate; wrk = 10 * (v["wrk_cpu"] + 0) / rate
    rsa = 2 * 1000 * cores / ops; ceiling = 1000 * cores / (rsa + wrk)
    printf "| c%s | %.2f | %.2f | %.2f | %.0f msg/s (%.0f %%) |\n", v["c"], server, rsa, wrk, ceiling, 100 * ceiling / bound
  }' "$results"
