#!/usr/bin/env bash
# Outbound AS2 throughput: documents/s that `as2` steps send signed
# (sha256) and encrypted (aes256-cbc) with a signed sync MDN, against a
# local receiver, beside the RSA bound of the same run.
#
# Two release `atom run` on loopback: the SENDER runs a bundle whose every
# received document (a 10 KiB X12 file POSTed plainly, the trigger) goes
# to an `as2` step; the RECEIVER is another Atom with a bundle requiring
# signed and encrypted messages (no steps). COUNT triggers are posted with
# CONCURRENCY in flight (`atom send` load mode, unsigned, sync MDN); the
# clock runs from the first trigger until every outbox row is acknowledged
# (polled every 200 ms with `atom outbox --status acknowledged`).
#
# Per document the two Atoms do three RSA-2048 private-key operations
# (the sender signs, the receiver decrypts the content key and signs the
# receipt); the bound is `openssl speed -multi 2 rsa2048` signs/s divided
# by three (both Atoms share the machine's cores).
#
#   bash benches/outbound.sh
#   COUNT=2000 CONCURRENCY=32 WORKERS=16 bash benches/outbound.sh
#
# Knobs: COUNT (default 1000), CONCURRENCY of the triggers (default 16),
# WORKERS (the sender's quotas.general_workers and the bundle's
# max_concurrent_executions, default 8). Prints how long the triggers took
# and one table line for the notes; asserts nothing.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
COUNT=${COUNT:-1000}
CONCURRENCY=${CONCURRENCY:-16}
WORKERS=${WORKERS:-8}
HZ=$(getconf CLK_TCK)
cd "$ROOT"
source "$ROOT/benches/lib.sh"
cargo build --release --quiet
ATOM=$ROOT/target/release/atom
WORK=$(mktemp -d)
SENDER_PID="" RECEIVER_PID=""
trap 'kill $SENDER_PID $RECEIVER_PID 2>/dev/null || true; rm -rf "$WORK"' EXIT

site() { # DIR HTTP ADMIN EXTRA_YAML
  mkdir -p "$1/processes/bench" "$1/partners"
  cat > "$1/atom.yaml" <<YAML
atom: { name: $(basename "$1"), account_id: bench }
data_dir: data
processes_dir: processes
partners_dir: partners
shared_web_server: { bind_address: 127.0.0.1, http_port: $2 }
admin: { address: "127.0.0.1:$3" }
console: { enabled: false }
$4
YAML
}
start() { # DIR -> pid
  "$ATOM" -c "$1/atom.yaml" run > "$1/ready" 2> "$1/atom.log" &
  local pid=$!
  for _ in $(seq 150); do grep -q "atom ready" "$1/ready" 2>/dev/null && { echo $pid; return 0; }; sleep 0.1; done
  echo "atom in $1 did not start; see $1/atom.log" >&2
  return 1
}
cpu() { awk '{print $14 + $15}' "/proc/$1/stat"; }

R=$WORK/receiver S=$WORK/sender
R_HTTP=$(port) R_ADMIN=$(port) S_HTTP=$(port) S_ADMIN=$(port)
site "$R" "$R_HTTP" "$R_ADMIN" ""
site "$S" "$S_HTTP" "$S_ADMIN" "quotas: { general_workers: $WORKERS }"
"$ATOM" -c "$R/atom.yaml" certs generate receiver --cn "bench receiver" > /dev/null
"$ATOM" -c "$S/atom.yaml" certs generate sender --cn "bench sender" > /dev/null
"$ATOM" -c "$R/atom.yaml" certs export receiver --out "$WORK/receiver.cert.pem" > /dev/null
"$ATOM" -c "$S/atom.yaml" certs export sender --out "$WORK/sender.cert.pem" > /dev/null
"$ATOM" -c "$R/atom.yaml" certs import sender "$WORK/sender.cert.pem" > /dev/null
"$ATOM" -c "$S/atom.yaml" certs import receiver "$WORK/receiver.cert.pem" > /dev/null
cat > "$R/processes/bench/process.yaml" <<YAML
start:
  as2:
    as2_from: { id: BENCH-SENDER, signing_certificate: "keystore:sender", reject_duplicates: true }
    as2_to: { id: BENCH-RECEIVER, decryption_key: "keystore:receiver", mdn_signing_key: "keystore:receiver" }
    security: { require_signed: true, require_encrypted: true }
YAML
cat > "$S/partners/receiver.yaml" <<YAML
url: http://127.0.0.1:$R_HTTP/as2
as2_from: BENCH-SENDER
as2_to: BENCH-RECEIVER
content_type: application/edi-x12
sign: { key: "keystore:sender", digest: sha256 }
encrypt: { certificate: "keystore:receiver", cipher: aes256-cbc }
mdn: { mode: sync, signed: true }
YAML
cat > "$S/processes/bench/process.yaml" <<YAML
start:
  as2:
    as2_from: { id: BENCH-ERP }
    as2_to: { id: BENCH-SENDER }
limits: { max_concurrent_executions: $WORKERS }
steps:
  - as2: { partner: receiver }
YAML
python3 - "$WORK/order-10k.edi" <<'PY'
import sys
seg = b"PO1*1*10*EA*9.95**VP*WIDGET-1~\n"
body = b"ISA*00*          *00*          *ZZ*BENCHERP       *ZZ*BENCHSENDER    *261128*1200*U*00401*000000001*0*P*>~\n"
while len(body) < 10240:
    body += seg
open(sys.argv[1], "wb").write(body[:10240])
PY
RECEIVER_PID=$(start "$R")
SENDER_PID=$(start "$S")

echo "== openssl speed -multi 2 rsa2048 (the RSA bound of this run)"
SIGNS=$(openssl speed -multi 2 -seconds 3 rsa2048 2>/dev/null | awk '/^rsa 2048 bits/ {print $(NF-1)}' | tail -1)
BOUND=$(python3 -c "print(round(float('$SIGNS') / 3))")

echo "== $COUNT triggers, $CONCURRENCY at a time; $WORKERS sender workers"
S_CPU0=$(cpu "$SENDER_PID") R_CPU0=$(cpu "$RECEIVER_PID")
T0=$(date +%s.%N)
"$ATOM" -c "$S/atom.yaml" send "$WORK/order-10k.edi" --url "http://127.0.0.1:$S_HTTP/as2" \
  --from BENCH-ERP --to BENCH-SENDER --mdn sync --count "$COUNT" --concurrency "$CONCURRENCY" \
  --json > "$WORK/triggers.json"
T_TRIGGERS=$(date +%s.%N)
while :; do
  DONE=$("$ATOM" -c "$S/atom.yaml" outbox --status acknowledged --limit "$COUNT" --json | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))')
  [ "$DONE" -ge "$COUNT" ] && break
  FAILED=$("$ATOM" -c "$S/atom.yaml" outbox --status failed --limit 10 --json | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))')
  if [ "$FAILED" -gt 0 ]; then
    "$ATOM" -c "$S/atom.yaml" outbox --status failed --limit 3 >&2
    exit 1
  fi
  sleep 0.2
done
T1=$(date +%s.%N)
S_CPU1=$(cpu "$SENDER_PID") R_CPU1=$(cpu "$RECEIVER_PID")
S_RSS=$(awk '/VmHWM/ {print int($2/1024)}' "/proc/$SENDER_PID/status")
RECEIVED=$("$ATOM" -c "$R/atom.yaml" messages --limit "$((COUNT * 2))" --json | python3 -c 'import json,sys; print(sum(1 for m in json.load(sys.stdin) if m["disposition"] == "processed"))')
python3 - "$T0" "$T1" "$COUNT" "$BOUND" "$S_CPU0" "$S_CPU1" "$R_CPU0" "$R_CPU1" "$HZ" "$S_RSS" "$RECEIVED" "$SIGNS" "$T_TRIGGERS" <<'PY'
import sys
t0, t1, n, bound, s0, s1, r0, r1, hz, rss, received, signs, tt = sys.argv[1:]
print(f"triggers posted in {float(tt) - float(t0):.2f} s; the last document acknowledged {float(t1) - float(tt):.2f} s later")
secs = float(t1) - float(t0)
n = int(n)
rate = n / secs
print(f"documents: {n} acknowledged, {received} stored by the receiver")
print(f"| outbound docs/s | RSA bound (openssl {float(signs):.0f} signs/s / 3) | of the bound | sender CPU/doc | receiver CPU/doc | sender peak RSS |")
print(f"| {rate:.0f} | {bound} | {100 * rate / float(bound):.0f} % | "
      f"{(float(s1) - float(s0)) / float(hz) / n * 1000:.2f} ms | {(float(r1) - float(r0)) / float(hz) / n * 1000:.2f} ms | {rss} MiB |")
PY
