#!/usr/bin/env bash
# End-to-end receive throughput of `atom run`, driven by `atom send`, beside
# `openssl speed rsa2048` measured in the same run.
#
#   bash benches/runtime.sh                  # 2000 messages, concurrency 32, 10 KiB
#   COUNT=500 CONCURRENCY=8 SIZE=1024 bash benches/runtime.sh
#   PROFILE=1 bash benches/runtime.sh        # also: perf profile of the server
#
# Each message is signed (sha256) and encrypted (aes256-cbc) with a signed
# synchronous MDN: two RSA-2048 private-key operations on the receiver
# (unwrap the content key, sign the MDN), so the receiver's bound is
# rsa2048 private ops/s / 2 per core. The sender builds the message once and
# varies only the Message-ID; its own CPU time is printed. Both run on this
# machine, so they share its cores.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
COUNT=${COUNT:-2000}
CONCURRENCY=${CONCURRENCY:-32}
SIZE=${SIZE:-10240}
cd "$ROOT"
source "$ROOT/benches/lib.sh"
bench_init
bench_site "$WORK" "start:
  as2:
    as2_from: { id: BENCH-PARTNER, signing_certificate: keystore:partner }
    as2_to: { id: BENCH-ATOM, decryption_key: keystore:ours, mdn_signing_key: keystore:ours }
    security: { require_signed: true, require_encrypted: true }"
mkdir -p "$WORK/sender"
A() { "$ATOM" -c "$WORK/atom.yaml" "$@"; }
S() { "$ATOM" --data-dir "$WORK/sender" "$@"; }
A certs generate ours >/dev/null
S certs generate partner >/dev/null
A certs export ours --out "$WORK/ours.pem"
S certs export partner --out "$WORK/partner.pem"
A certs import partner "$WORK/partner.pem" >/dev/null
S certs import ours "$WORK/ours.pem" >/dev/null
head -c "$SIZE" /dev/urandom | base64 -w 79 | head -c "$SIZE" > "$WORK/payload.edi"

echo "== openssl speed rsa2048 (this machine, this run)"
openssl speed -seconds 3 rsa2048 2>/dev/null | grep -E '^rsa 2048' | tee "$WORK/speed"
PRIV=$(awk '{print $6}' "$WORK/speed")
CORES=$(nproc)

start_atom "$ATOM" "$WORK"
echo "== atom send: $COUNT x $SIZE B, signed+encrypted, signed sync MDN, concurrency $CONCURRENCY"
if [ "${PROFILE:-0}" = 1 ]; then
  # Software clock sampling: works where hardware counters are not exposed.
  perf record -q -e cpu-clock -F 999 -g -p "$PID" -o "$WORK/perf.data" 2>/dev/null &
  PERF=$!
  sleep 1 # attached before the load starts
fi
S send "$WORK/payload.edi" --url "http://127.0.0.1:$HTTP/as2/bench" --from BENCH-PARTNER --to BENCH-ATOM \
  --sign partner --encrypt ours --count "$COUNT" --concurrency "$CONCURRENCY" --json > "$WORK/summary.json"
cat "$WORK/summary.json"; echo
if [ -n "${PERF:-}" ]; then
  kill -INT "$PERF"; wait "$PERF" 2>/dev/null || true
  echo "== server profile: share of samples by library, then the top functions (self time)"
  perf report -i "$WORK/perf.data" --no-children --sort dso --stdio -g none 2>/dev/null | grep -E '^ +[0-9]' | head -8 || true
  perf report -i "$WORK/perf.data" --no-children --sort dso,sym --stdio -g none 2>/dev/null | grep -E '^ +[0-9]' | head -25 || true
  echo "== inclusive time of our own functions (where the samples above were called from)"
  perf report -i "$WORK/perf.data" --children --sort sym --stdio -g none 2>/dev/null \
    | grep -E '^ +[0-9].*(atom|openssl|rusqlite)::' | head -30 || true
fi
SERVER_CPU=$(awk '{print ($14+$15)/100}' "/proc/$PID/stat")
PEAK=$(awk '/VmHWM/{print $2/1024}' "/proc/$PID/status")
python3 - "$WORK/summary.json" "$PRIV" "$CORES" "$SERVER_CPU" "$PEAK" <<'PY'
import json, sys
s = json.load(open(sys.argv[1])); priv = float(sys.argv[2]); cores = int(sys.argv[3])
rate = s["ok_per_s"]
bound = priv * cores / 2
print(f"receiver bound (rsa2048 private ops/s {priv:.0f} x {cores} cores / 2 per message): {bound:.0f} msg/s")
print(f"measured: {rate:.0f} msg/s = {100*rate/bound:.0f}% of the bound (sender shares the same cores)")
print(f"server CPU {float(sys.argv[4]):.1f} s, server peak RSS {float(sys.argv[5]):.0f} MiB")
PY
