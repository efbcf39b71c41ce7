#!/usr/bin/env bash
# Durable receipts per second: 1 KiB unsigned messages with synchronous
# (unsigned) MDNs at concurrency 1, 8 and 64, and how many fsync-family
# calls the server made per message (strace, attached to the server).
#
#   bash benches/receipts.sh              # COUNT=2000 per concurrency level
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
COUNT=${COUNT:-2000}
cd "$ROOT"
command -v strace >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq strace; }
source "$ROOT/benches/lib.sh"
bench_init
bench_site "$WORK" "start:
  as2:
    as2_from: { id: BENCH-PARTNER }
    as2_to: { id: BENCH-ATOM }"
head -c 1024 /dev/urandom | base64 -w 76 | head -c 1024 > "$WORK/payload.edi"
start_atom "$ATOM" "$WORK"
df -h "$WORK" | tail -1 | awk '{print "filesystem: " $1 " (" $6 ")"}'
printf '%-12s %10s %10s %10s %10s %14s\n' concurrency msg/s p50_ms p99_ms failed fsyncs/msg
for C in 1 8 64; do
  strace -f -c -e trace=fsync,fdatasync,syncfs,sync_file_range -p "$PID" -o "$WORK/strace.$C" 2>/dev/null &
  TRACER=$!
  sleep 0.5
  "$ATOM" --data-dir "$WORK/sender" send "$WORK/payload.edi" --url "http://127.0.0.1:$HTTP/as2/bench" \
    --from BENCH-PARTNER --to BENCH-ATOM --mdn sync --count "$COUNT" --concurrency "$C" --json > "$WORK/out.$C"
  kill -INT "$TRACER"; wait "$TRACER" 2>/dev/null || true
  python3 - "$WORK/out.$C" "$WORK/strace.$C" "$C" "$COUNT" <<'PY'
import json, sys, re
s = json.load(open(sys.argv[1])); calls = 0
for line in open(sys.argv[2]):
    m = re.match(r'\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(?:\d+\s+)?(fsync|fdatasync|syncfs|sync_file_range)\s*$', line)
    if m: calls += int(m.group(1))
print(f"{sys.argv[3]:<12} {s['ok_per_s']:>10.0f} {s['latency_ms']['p50']:>10.2f} {s['latency_ms']['p99']:>10.2f} {s['failed']:>10} {calls/int(sys.argv[4]):>14.2f}")
PY
done
