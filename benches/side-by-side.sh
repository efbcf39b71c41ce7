#!/usr/bin/env bash
# Atom beside django-pyas2 (PyPI django-pyas2, served by gunicorn), both on
# loopback on this machine, driven by the same load from `atom send`:
#
#   (a) 10 KiB EDI, signed (sha256) + encrypted (aes256-cbc), signed sync MDN
#   (b) 1 KiB EDI, unsigned and unencrypted, unsigned sync MDN
#       (a) and (b) at concurrency 1, 8 and 64
#   (c) one 100 MiB EDI file, compressed + signed + encrypted, signed sync MDN
#
# with `openssl speed rsa2048` measured in the same run (the RSA bound of (a)),
# peak memory of each server's process tree and its CPU time per load.
#
#   bash benches/side-by-side.sh
#
# Installs what it needs on a fresh machine: Debian packages when missing
# (openssl, python3-venv), a venv with django-pyas2 and gunicorn under
# target/bench-venv (BENCH_VENV to move it), and the release build of atom.
# Takes about 3 minutes on an idle 2-core machine (longer when the machine is
# shared: see QUIET_WAIT). Knobs (environment):
#   ATOM_COUNT_MIN=1000 ATOM_COUNT_PER_C=40   atom: count = max(MIN, PER_C * C)
#   PEER_COUNT_MIN=200  PEER_COUNT_PER_C=20   django-pyas2 (slower): same rule
#   CONCURRENCY="1 8 64"   BIG_MIB=100   KEEP=1 (keep the work directory)
#   QUIET_WAIT=20   seconds to wait, before each run, for other work on the
#                   machine to quieten down (see wait_quiet)
#
# Equivalent set-ups: both servers are organization BENCH-ORG with the same
# RSA-2048 key pair (decrypts, signs MDNs) and know two partners:
# BENCH-PARTNER (signed + encrypted required, its certificate verifies the
# signatures; loads a and c) and BENCH-PLAIN (no security; load b). Atom:
# two process bundles without steps (receive, store, answer), its default
# durable store. django-pyas2: a minimal Django project (benches/peer/
# pyas2_bench), SQLite, payloads stored under MEDIA_ROOT, DEBUG off,
# gunicorn sync workers = cores.
set -euo pipefail
START=$SECONDS
LOADAVG_START=$(cut -d' ' -f1-3 /proc/loadavg)
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PEER_SRC=$ROOT/benches/peer
VENV=${BENCH_VENV:-$ROOT/target/bench-venv}
CORES=$(nproc)
CONCURRENCY=${CONCURRENCY:-1 8 64}
ATOM_COUNT_MIN=${ATOM_COUNT_MIN:-1000}
ATOM_COUNT_PER_C=${ATOM_COUNT_PER_C:-40}
PEER_COUNT_MIN=${PEER_COUNT_MIN:-200}
PEER_COUNT_PER_C=${PEER_COUNT_PER_C:-20}
BIG_MIB=${BIG_MIB:-100}
ORG=BENCH-ORG PARTNER=BENCH-PARTNER PLAIN=BENCH-PLAIN
# Pinned so that a fresh machine runs what was measured. Django >= 5.1 for
# the SQLite "transaction_mode" option used in pyas2_bench/settings.py.
PEER_PACKAGES=("django-pyas2==1.2.3" "Django==5.2.19" "gunicorn==27.0.1")

say() { printf '== %s\n' "$*"; }
cd "$ROOT"

# ---- 1. what this needs ------------------------------------------------------
apt_install() {
  local sudo=""; [ "$(id -u)" -eq 0 ] || sudo=sudo
  $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$@" >/dev/null
}
command -v openssl >/dev/null || apt_install openssl
command -v python3 >/dev/null || apt_install python3 python3-venv
command -v cargo >/dev/null || { echo "side-by-side: cargo is needed (see README, Quick start)" >&2; exit 1; }

peer_ready() {
  [ -x "$VENV/bin/python" ] && "$VENV/bin/python" - "${PEER_PACKAGES[@]}" <<'PY' >/dev/null 2>&1
import sys
from importlib.metadata import version
for pin in sys.argv[1:]:
    name, want = pin.split("==")
    assert version(name) == want, (name, version(name), want)
from oscrypto import asymmetric  # LibraryNotFoundError until patched (below)
import pyas2lib.as2  # noqa: F401
PY
}
if ! peer_ready; then
  say "installing django-pyas2 and gunicorn into $VENV"
  if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV" 2>/dev/null || { apt_install python3-venv && rm -rf "$VENV" && python3 -m venv "$VENV"; }
  fi
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "${PEER_PACKAGES[@]}"
  # Known snag, patched the same way as the interop venv (.ci/setup-peers):
  # oscrypto 1.3.0 (pyas2lib -> django-pyas2) reads libcrypto's version with
  # a one-digit-per-part regex, so OpenSSL 3.0.1x is "not found" and
  # pyas2lib cannot be imported. patch_oscrypto.py widens the regex in the
  # venv's installed copy.
  "$VENV/bin/python" "$PEER_SRC/patch_oscrypto.py"
  peer_ready || { echo "side-by-side: django-pyas2 does not import in $VENV:" >&2
                  "$VENV/bin/python" -c 'from oscrypto import asymmetric; import pyas2' >&2; exit 1; }
fi
PY=$VENV/bin/python

say "building atom (release)"
cargo build --release --quiet
ATOM=$ROOT/target/release/atom

# ---- work directory, clean-up -------------------------------------------------
WORK=$(mktemp -d "${TMPDIR:-/tmp}/side-by-side.XXXXXX")
RES=$WORK/results KEYS=$WORK/keys
mkdir -p "$RES" "$KEYS" "$WORK/sender" "$WORK/peer/media"
PID="" GPID="" SAMPLER=""
cleanup() {
  local t=$SECONDS
  [ -n "$SAMPLER" ] && kill "$SAMPLER" 2>/dev/null || true
  [ -n "$PID" ] && kill "$PID" 2>/dev/null || true
  [ -n "$GPID" ] && kill "$GPID" 2>/dev/null || true  # gunicorn's master stops its workers
  wait 2>/dev/null || true
  [ $((SECONDS - t)) -gt 3 ] && echo "cleanup: the servers took $((SECONDS - t)) s to stop"
  t=$SECONDS
  if [ "${KEEP:-0}" = 1 ]; then echo "work directory kept: $WORK"; else rm -rf "$WORK"; fi
  [ $((SECONDS - t)) -gt 3 ] && echo "cleanup: removing $WORK took $((SECONDS - t)) s"
  return 0
}
trap cleanup EXIT
source "$ROOT/benches/lib.sh"

# ---- keys and payloads -------------------------------------------------------
say "keys (RSA-2048, self-signed) and payloads in $WORK"
for who in org partner; do
  id=$ORG; [ "$who" = partner ] && id=$PARTNER
  openssl req -x509 -newkey rsa:2048 -nodes -sha256 -days 30 -subj "/CN=$id" \
    -keyout "$KEYS/$who.key" -out "$KEYS/$who.cert.pem" 2>/dev/null
  cat "$KEYS/$who.key" "$KEYS/$who.cert.pem" > "$KEYS/$who.pem"  # key + certificate
done
python3 "$PEER_SRC/edi_payload.py" 10240 "$WORK/order-10k.edi"
python3 "$PEER_SRC/edi_payload.py" 1024 "$WORK/order-1k.edi"
python3 "$PEER_SRC/edi_payload.py" $((BIG_MIB << 20)) "$WORK/order-big.edi"

# ---- Atom --------------------------------------------------------------------
# Two bundles: "bench" (from lib.sh) for BENCH-PARTNER, "plain" for BENCH-PLAIN.
bench_site "$WORK/atom" "start:
  as2:
    as2_from: { id: $PARTNER, signing_certificate: $KEYS/partner.cert.pem }
    as2_to: { id: $ORG, decryption_key: $KEYS/org.pem, mdn_signing_key: $KEYS/org.pem }
    security: { require_signed: true, require_encrypted: true }"
mkdir -p "$WORK/atom/processes/plain"
cat > "$WORK/atom/processes/plain/process.yaml" <<YAML
start:
  as2:
    as2_from: { id: $PLAIN }
    as2_to: { id: $ORG }
YAML
ATOM_URL=http://127.0.0.1:$HTTP/as2/bench
start_atom "$ATOM" "$WORK/atom"
"$ATOM" -c "$WORK/atom/atom.yaml" listeners

# ---- django-pyas2 ------------------------------------------------------------
export PYAS2_BENCH_DIR=$WORK/peer DJANGO_SETTINGS_MODULE=pyas2_bench.settings PYTHONPATH=$PEER_SRC
"$PY" -m django migrate --verbosity 0
"$PY" "$PEER_SRC/setup_partners.py" "$ORG" "$KEYS/org.pem" "$PARTNER" "$KEYS/partner.cert.pem" "$PLAIN"
PEER_PORT=$(port)
# --timeout: the 100 MiB message keeps a sync worker busy longer than the
# default 30 s would allow on slow machines.
"$VENV/bin/gunicorn" --workers "$CORES" --bind "127.0.0.1:$PEER_PORT" --timeout 900 \
  --no-control-socket --chdir "$WORK/peer" pyas2_bench.wsgi:application \
  > "$WORK/peer/gunicorn.out" 2> "$WORK/peer/gunicorn.log" &
GPID=$!
PEER_URL=http://127.0.0.1:$PEER_PORT/pyas2/as2receive
for i in $(seq 100); do
  python3 -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=2)' "$PEER_URL" 2>/dev/null && break
  [ "$i" = 100 ] && { echo "gunicorn did not start; see $WORK/peer/gunicorn.log" >&2; cat "$WORK/peer/gunicorn.log" >&2; exit 1; }
  sleep 0.2
done
say "atom run on $ATOM_URL (pid $PID); django-pyas2 on $PEER_URL (gunicorn pid $GPID, $CORES workers)"

# ---- the loads ----------------------------------------------------------------
cd "$WORK"  # no atom.yaml here: `atom send` uses only its arguments
send() { "$ATOM" --data-dir "$WORK/sender" send "$@"; }
SECURE=(--from "$PARTNER" --to "$ORG" --sign "$KEYS/partner.pem" --encrypt "$KEYS/org.cert.pem")
PLAINARGS=(--from "$PLAIN" --to "$ORG" --mdn sync)

# On a shared machine other work distorts msg/s: before each measured run,
# wait (up to QUIET_WAIT seconds, default 20) for a second in which other
# processes use less than 15 % of the machine. The column "others" in the
# table shows what they used during each run anyway.
QUIET_WAIT=${QUIET_WAIT:-20}
wait_quiet() {
  local deadline=$((SECONDS + QUIET_WAIT))
  while :; do
    python3 - <<'PYQ' && return 0
import os, sys, time
def busy():
    f = [int(x) for x in open("/proc/stat").readline().split()[1:]]
    return sum(f[:8]) - f[3] - f[4]
b0, t0 = busy(), os.times(); time.sleep(1); b1, t1 = busy(), os.times()
own = (t1.user + t1.system - t0.user - t0.system) * os.sysconf("SC_CLK_TCK")
sys.exit(0 if (b1 - b0 - own) / os.sysconf("SC_CLK_TCK") / os.cpu_count() < 0.15 else 1)
PYQ
    [ $SECONDS -ge $deadline ] && { echo "   (machine still busy with other work after ${QUIET_WAIT} s; measuring anyway)"; return 0; }
    sleep 2
  done
}

# One measured run: sample the server's process tree while `atom send` runs.
# measure LABEL SERVER_PID COUNT C send-arguments...
declare -A COUNTS
measure() {
  local label=$1 pid=$2 count=$3 c=$4; shift 4
  COUNTS[$label]=$count
  wait_quiet
  python3 "$PEER_SRC/treestat.py" "$pid" "$RES/$label.mem" 0.1 &
  SAMPLER=$!
  sleep 0.3
  send "$@" --count "$count" --concurrency "$c" --json > "$RES/$label.json" 2> "$RES/$label.err" || true
  kill -TERM "$SAMPLER"; wait "$SAMPLER" || true; SAMPLER=""
  python3 - "$RES/$label.json" "$RES/$label.mem" "$label" <<'PYX'
import json, sys
try:
    s = json.load(open(sys.argv[1]))
except ValueError:
    print(f"   {sys.argv[3]:<14} no summary: see {sys.argv[1][:-5]}.err"); sys.exit()
m = json.load(open(sys.argv[2]))
print(f"   {sys.argv[3]:<14} ok {s['ok']}/{s['sent']} failed {s['failed']}  {s['ok_per_s']:.1f} msg/s  "
      f"p50 {s['latency_ms']['p50']:.1f} ms  p99 {s['latency_ms']['p99']:.1f} ms  peak {m['peak_rss_mib']:.0f} MiB")
for f in s.get("failures", [])[:3]:
    print(f"      failure: {f}")
PYX
}

say "warm-up (not measured): 5 messages of (a) and (b) to each server"
for url in "$ATOM_URL" "$PEER_URL"; do
  send order-10k.edi --url "$url" "${SECURE[@]}" --count 5 --json > /dev/null
  send order-1k.edi --url "$url" "${PLAINARGS[@]}" --count 5 --json > /dev/null
done

say "openssl speed -seconds 3 rsa2048 (this machine, this run, servers idle)"
openssl speed -seconds 3 rsa2048 2>/dev/null | grep -E '^rsa 2048' | tee "$RES/speed"
RSA_PRIV=$(awk '{print $6}' "$RES/speed")

count_for() { local min=$1 per=$2 c=$3; echo $(( per * c > min ? per * c : min )); }
for load in a b; do
  if [ $load = a ]; then file=order-10k.edi; args=("${SECURE[@]}"); what="10 KiB signed+encrypted, signed sync MDN"
  else file=order-1k.edi; args=("${PLAINARGS[@]}"); what="1 KiB plain, unsigned sync MDN"; fi
  for c in $CONCURRENCY; do
    say "($load) $what, concurrency $c"
    measure "$load-$c-atom" "$PID" "$(count_for "$ATOM_COUNT_MIN" "$ATOM_COUNT_PER_C" "$c")" "$c" \
      "$file" --url "$ATOM_URL" "${args[@]}"
    measure "$load-$c-peer" "$GPID" "$(count_for "$PEER_COUNT_MIN" "$PEER_COUNT_PER_C" "$c")" "$c" \
      "$file" --url "$PEER_URL" "${args[@]}"
  done
done

say "(c) one $BIG_MIB MiB file, compressed (before signing) + signed + encrypted, signed sync MDN"
measure c-atom "$PID" 1 1 order-big.edi --url "$ATOM_URL" "${SECURE[@]}" --compress before-signing --timeout 900
measure c-peer "$GPID" 1 1 order-big.edi --url "$PEER_URL" "${SECURE[@]}" --compress before-signing --timeout 900

# ---- report -------------------------------------------------------------------
counts_json=$(for k in "${!COUNTS[@]}"; do printf '"%s": %s,' "$k" "${COUNTS[$k]}"; done)
python3 - "$RES/env.json" <<PYX
import json, sys
json.dump({
    "cores": $CORES,
    "rsa_private_per_s": float("$RSA_PRIV"),
    "concurrency": [int(c) for c in "$CONCURRENCY".split()],
    "counts": {${counts_json%,}},
    "big_bytes": $((BIG_MIB << 20)),
    "cpu_model": """$(lscpu | sed -n 's/^Model name: *//p' | head -1)""",
    "mem_total": "$(awk '/MemTotal/{printf "%.0f GiB RAM", $2/1048576}' /proc/meminfo)",
    "openssl": "$(openssl version)",
    "peer_versions": "$("$PY" -c 'from importlib.metadata import version as v; print(", ".join(f"{p} {v(p)}" for p in ("django-pyas2", "pyas2lib", "Django", "gunicorn")))'), Python $("$PY" -c 'import platform; print(platform.python_version())')",
    "workers": $CORES,
    "loadavg_start": "$LOADAVG_START",
    "loadavg_end": "$(cut -d' ' -f1-3 /proc/loadavg)",
}, open(sys.argv[1], "w"))
PYX
python3 "$PEER_SRC/report.py" "$RES"
echo "atom errors logged: $(grep -c -E ' ERROR ' "$WORK/atom/atom.log" || true); django-pyas2 errors logged: $(grep -c -E 'Error|Traceback' "$WORK/peer/gunicorn.log" || true)"
echo "total time: $(( (SECONDS - START) / 60 )) min $(( (SECONDS - START) % 60 )) s"
