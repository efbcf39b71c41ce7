#!/usr/bin/env bash
# The receive path of ONE large AS2 message: an EDI file of SIZE_MIB MiB,
# compressed (before signing) + signed (sha256) + encrypted (aes256-cbc),
# signed sync MDN, sent once by Atom's own client (`atom send`) to a freshly
# started `atom run` (release build, default SQLite store, one process bundle
# that requires signed and encrypted messages, no steps). Measured on the
# server process only (`atom send` is the load generator and may use a lot
# of memory building a 1 GiB message; that is not counted):
#
#   - seconds: the request, from its start to the verified MDN (the client's
#     latency; building the message before it is reported apart; a
#     negative MDN is timed too, the checks say so)
#   - MB/s: payload bytes / seconds (MB = 10^6 bytes)
#   - server CPU: utime + stime of `atom run` (/proc/PID/stat) around the send
#   - server peak RSS: VmHWM of the freshly started server, the split
#     RssAnon / RssFile at the highest VmRSS seen by a sampler reading
#     /proc/PID/status every 50 ms, and the highest RssAnon (the heap) on
#     its own, which need not be at the same moment (the time line is kept
#     in results/rss.tsv when KEEP=1)
#   - checks: the MDN is "processed" with a verified MIC and signature, and
#     the stored payload (`atom messages download ID payload`) has the size
#     and sha256 of the original
#
#   bash benches/large.sh                       # 1 GiB
#   SIZE_MIB=100 bash benches/large.sh
#
# Knobs (environment): SIZE_MIB (default 1024); STORE=postgres stores the
# message in a PostgreSQL started here (Debian's; installed when missing)
# instead of the default SQLite store and files; PROFILE=1 records the
# server with perf during the send and prints its hottest symbols; KEEP=1 keeps the work
# directory (under target/, disk-backed: the payload, the message Atom
# stores and the downloaded copy take up to about 3.5 x SIZE_MIB); MAX_RSS_MIB
# (default 6144): the sampler kills the server above it; TIMEOUT (default
# 900): the client's HTTP timeout in seconds. Needs python3, openssl and
# cargo. Past 511 MiB the bundle's security.max_decompressed_size (default
# 512 MiB) is raised to fit the message, past 960 MiB the request limit too.
# No figure is asserted: this prints a table line for the notes.
set -euo pipefail
START=$SECONDS
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SIZE_MIB=${SIZE_MIB:-1024}
MAX_RSS_MIB=${MAX_RSS_MIB:-6144}
TIMEOUT=${TIMEOUT:-900}
SIZE=$((SIZE_MIB << 20))
ORG=BENCH-ORG PARTNER=BENCH-PARTNER
HZ=$(getconf CLK_TCK)
say() { printf '== %s\n' "$*"; }
cd "$ROOT"

source "$ROOT/benches/lib.sh"
say "building atom (release)"
cargo build --release --quiet
ATOM=$ROOT/target/release/atom

# ---- work directory, clean-up -------------------------------------------------
mkdir -p "$ROOT/target"
WORK=$(mktemp -d "$ROOT/target/large.XXXXXX")
KEYS=$WORK/keys RES=$WORK/results
mkdir -p "$KEYS" "$RES" "$WORK/sender"
PID="" SAMPLER="" PGBIN=""
# PostgreSQL refuses to run as root: as user postgres then.
as_pg() { if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
cleanup() {
  [ -n "$SAMPLER" ] && kill "$SAMPLER" 2>/dev/null || true
  [ -n "$PID" ] && kill "$PID" 2>/dev/null || true
  wait 2>/dev/null || true
  [ -n "$PGBIN" ] && as_pg "$PGBIN/pg_ctl" -D "$WORK/pg" -m immediate stop >/dev/null 2>&1 || true
  if [ "${KEEP:-0}" = 1 ]; then echo "work directory kept: $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

# ---- keys and payload ---------------------------------------------------------
say "keys (RSA-2048, self-signed) and a $SIZE_MIB MiB EDI payload in $WORK"
for who in org partner; do
  id=$ORG; [ "$who" = partner ] && id=$PARTNER
  openssl req -x509 -newkey rsa:2048 -nodes -sha256 -days 30 -subj "/CN=$id" \
    -keyout "$KEYS/$who.key" -out "$KEYS/$who.cert.pem" 2>/dev/null
  cat "$KEYS/$who.key" "$KEYS/$who.cert.pem" > "$KEYS/$who.pem"  # key + certificate
done
# One X12 850 of exactly SIZE bytes: PO1/PID line items with random
# quantities, prices, part numbers and descriptions (like
# benches/peer/edi_payload.py, which takes minutes for 1 GiB). Fast: one
# block of 12,000 line items is made once, then written again and again with
# its digits permuted anew for each copy (bytes.translate), so no two copies
# are equal; deflate's 32 KiB window sees fresh line items throughout and
# the file compresses like the slow generator's (about 3.3:1 with gzip).
t=$SECONDS
python3 - "$SIZE" "$WORK/payload.edi" <<'PY'
import random, sys
size, out = int(sys.argv[1]), sys.argv[2]
rng = random.Random(850)
words = ["WIDGET", "BRACKET", "BOLT", "NUT", "WASHER", "PANEL", "HINGE", "SPRING", "GASKET", "VALVE"]
head = (b"ISA*00*          *00*          *ZZ*BENCH-PARTNER  *ZZ*BENCH-ORG      "
        b"*261123*1200*U*00401*000000850*0*P*>~\n"
        b"GS*PO*BENCH-PARTNER*BENCH-ORG*20261123*1200*850*X*004010~\n"
        b"ST*850*0001~\nBEG*00*SA*PO-4711**20261123~\n")
tail = "CTT*{n}~\nSE*{segs}*0001~\nGE*1*850~\nIEA*1*000000850~\n"
# "#" stands for the 1 of PO1: the digit permutation leaves it alone.
block = "".join(
    f"PO#*{n}*{rng.randint(1, 9999)}*EA*{rng.randint(1, 99999) / 100:.2f}**BP*"
    f"{rng.randint(100000, 999999)}-{rng.choice('ABCDEFGH')}*VP*V{rng.randint(10000, 99999)}~\n"
    f"PID*F****{rng.choice(words)} {rng.choice(words)} {rng.randint(1, 500)}MM~\n"
    for n in range(1, 12001)).encode()
digits = list(b"0123456789")
left = size - len(head) - len(tail.format(n=10**12, segs=10**12))
assert left > 0, "SIZE too small"
items = 0
with open(out, "wb") as f:
    f.write(head)
    while left > 0:
        rng.shuffle(digits)
        chunk = block.translate(bytes.maketrans(b"0123456789#", bytes(digits) + b"1"))
        if len(chunk) > left:  # the last copy: whole line items (PO1 + PID) that fit
            cut = chunk.rfind(b"\nPO1", 0, left)
            chunk = chunk[: cut + 1] if cut >= 0 else b""
        f.write(chunk)
        items += chunk.count(b"PO1*")
        left -= len(chunk)
        if len(chunk) == 0:
            break
    end = tail.format(n=items, segs=2 * items + 4).encode()
    f.write(end)
    written = f.tell()
    f.write(b"\n" * (size - written))  # pad to the exact size (trailing newlines)
PY
[ "$(stat -c %s "$WORK/payload.edi")" = "$SIZE" ] || { echo "payload is not $SIZE bytes" >&2; exit 1; }
SHA=$(sha256sum "$WORK/payload.edi" | cut -d' ' -f1)
echo "payload: $SIZE bytes in $((SECONDS - t)) s (with its sha256), sha256 $SHA"

# ---- Atom, freshly started: VmHWM is this message's -------------------------
# The default limits stay unless this message exceeds them: the request
# size (1 GiB, shared_web_server.max_request_size) and the inflated size
# (512 MiB, the bundle's security.max_decompressed_size; past it Atom
# answers a negative MDN, decompression-failed). What is inflated is the
# MIME entity, its headers and the payload: the limit is SIZE + 1 MiB.
inflate=""
if [ "$SIZE" -gt $(((512 - 1) << 20)) ]; then
  inflate=", max_decompressed_size: $((SIZE + (1 << 20)))"
  echo "security.max_decompressed_size raised to $((SIZE + (1 << 20))) bytes (default 512 MiB)"
fi
bench_site "$WORK/atom" "start:
  as2:
    as2_from: { id: $PARTNER, signing_certificate: $KEYS/partner.cert.pem }
    as2_to: { id: $ORG, decryption_key: $KEYS/org.pem, mdn_signing_key: $KEYS/org.pem }
    security: { require_signed: true, require_encrypted: true$inflate }"
limit=$((SIZE + (64 << 20)))
if [ "$limit" -gt $((1 << 30)) ]; then
  sed -i "s/^shared_web_server: { /&max_request_size: $limit, /" "$WORK/atom/atom.yaml"
  echo "shared_web_server.max_request_size raised to $limit bytes (default 1 GiB)"
fi
if [ "${STORE:-sqlite}" = postgres ]; then
  # Debian's PostgreSQL in a temp dir; the message's documents go into it.
  if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
    sudo=""; [ "$(id -u)" -eq 0 ] || sudo=sudo
    $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq postgresql >/dev/null
  fi
  PGBIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
  PGPORT=$(port) PGPASS=$(openssl rand -hex 12)
  chmod 755 "$WORK"; mkdir -p "$WORK/pg"
  [ "$(id -u)" -eq 0 ] && chown postgres "$WORK/pg"
  (cd /tmp && as_pg "$PGBIN/initdb" -D "$WORK/pg" -U postgres -A trust >/dev/null)
  as_pg "$PGBIN/pg_ctl" -D "$WORK/pg" -l "$WORK/pg/log" -w \
    -o "-p $PGPORT -k $WORK/pg -c listen_addresses=127.0.0.1 -c fsync=on" start >/dev/null
  (cd /tmp && as_pg "$PGBIN/psql" -h 127.0.0.1 -p "$PGPORT" -U postgres -qc \
    "CREATE ROLE atom LOGIN PASSWORD '$PGPASS'" -c "CREATE DATABASE atom OWNER atom" >/dev/null)
  export ATOM_STORE_PASSWORD=$PGPASS
  printf 'store:\n  postgres:\n    url: postgres://atom@127.0.0.1:%s/atom\n' "$PGPORT" >> "$WORK/atom/atom.yaml"
  echo "store: PostgreSQL $("$PGBIN/postgres" --version | awk '{print $3}') on port $PGPORT (documents in 1 MiB chunks)"
fi
URL=http://127.0.0.1:$HTTP/as2/bench
start_atom "$ATOM" "$WORK/atom"
say "atom run on $URL (pid $PID), started fresh: $(grep VmHWM /proc/$PID/status | tr -s ' \t' ' ')"

# Samples /proc/PID/status every 50 ms until SIGTERM (or the process ends):
# the time line to rss.tsv; to rss.json the split at the highest VmRSS, and
# each figure's own highest sample (the heap, RssAnon, may peak at another
# moment than RssFile, the mapped spool files).
# Kills the server (SIGKILL) above MAX_RSS_MIB.
python3 - "$PID" "$RES" "$MAX_RSS_MIB" <<'PY' &
import json, os, signal, sys, time
pid, res, cap = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]) << 10
stop = False
def on_term(*_):
    global stop
    stop = True
signal.signal(signal.SIGTERM, on_term)
keys = ("VmRSS", "RssAnon", "RssFile", "RssShmem", "VmHWM")
peak, killed, t0 = None, False, time.monotonic()
highest = {}  # key -> (KiB, t_s): each figure's own highest sample
with open(f"{res}/rss.tsv", "w") as tsv:
    tsv.write("t_s\t" + "\t".join(k + "_kib" for k in keys) + "\n")
    while not stop:
        try:
            with open(f"/proc/{pid}/status") as f:
                st = {l.split(":")[0]: int(l.split()[1]) for l in f if l.split(":")[0] in keys}
        except (OSError, ValueError, IndexError):
            break
        t = time.monotonic() - t0
        tsv.write(f"{t:.2f}\t" + "\t".join(str(st.get(k, 0)) for k in keys) + "\n")
        for k, v in st.items():
            if v > highest.get(k, (-1, 0))[0]:
                highest[k] = (v, round(t, 2))
        if peak is None or st["VmRSS"] > peak["VmRSS"]:
            peak = dict(st, t_s=round(t, 2))
        if st["VmRSS"] > cap and not killed:
            os.kill(pid, signal.SIGKILL)
            killed = True
        time.sleep(0.05)
json.dump({"peak": peak, "highest": highest, "killed_over_kib": cap if killed else None},
          open(f"{res}/rss.json", "w"))
PY
SAMPLER=$!
cpu() { awk '{ print $14 + $15 }' "/proc/$PID/stat" 2>/dev/null || echo 0; }

# ---- the message ----------------------------------------------------------------
say "sending: $SIZE_MIB MiB, compressed before signing + signed + encrypted, signed sync MDN"
cd "$WORK"  # no atom.yaml here: `atom send` uses only its arguments
cpu0=$(cpu)
PERF=""
if [ "${PROFILE:-0}" = 1 ]; then
  # The server only: idle while the client builds the message.
  perf record -F 499 -g -p "$PID" -o "$RES/perf.data" 2> "$RES/perf.err" & PERF=$!
fi
t0=$(date +%s.%N)
send_rc=0
"$ATOM" --data-dir "$WORK/sender" send payload.edi --url "$URL" --from "$PARTNER" --to "$ORG" \
  --sign "$KEYS/partner.pem" --encrypt "$KEYS/org.cert.pem" --compress before-signing \
  --timeout "$TIMEOUT" --json > "$RES/send.json" 2> "$RES/send.err" || send_rc=$?
t1=$(date +%s.%N)
sleep 1  # anything the server does right after the MDN
cpu1=$(cpu)
if [ -n "$PERF" ]; then
  kill -INT "$PERF" 2>/dev/null || true; wait "$PERF" 2>/dev/null || true
  perf report -i "$RES/perf.data" --no-children --sort dso,symbol --stdio 2>/dev/null \
    | grep -v '^#' | grep -v '^$' | head -40 > "$RES/perf.txt" || true
  say "profile (perf, server only, self time):"; cat "$RES/perf.txt"
fi
HWM_KIB=$(awk '/^VmHWM/ { print $2 }' "/proc/$PID/status" 2>/dev/null || echo 0)
kill -TERM "$SAMPLER"; wait "$SAMPLER" || true; SAMPLER=""
cd "$ROOT"
[ "$send_rc" = 0 ] || { echo "atom send exited with $send_rc:"; tail -5 "$RES/send.err"; }

# ---- checks -----------------------------------------------------------------------
LOG_JSON=$RES/messages.json
STORED_SIZE="-" STORED_SHA="-"
if kill -0 "$PID" 2>/dev/null; then
  "$ATOM" -c "$WORK/atom/atom.yaml" messages --json --limit 5 > "$LOG_JSON" 2> "$RES/messages.err" || echo '[]' > "$LOG_JSON"
  ID=$(python3 -c 'import json, sys; m = json.load(open(sys.argv[1])); print(m[0]["id"] if m else "")' "$LOG_JSON")
  if [ -n "$ID" ]; then
    t=$SECONDS
    if "$ATOM" -c "$WORK/atom/atom.yaml" messages download "$ID" payload --out "$WORK/stored.edi"; then
      STORED_SIZE=$(stat -c %s "$WORK/stored.edi")
      STORED_SHA=$(sha256sum "$WORK/stored.edi" | cut -d' ' -f1)
      echo "stored payload of message $ID downloaded and hashed in $((SECONDS - t)) s"
    fi
    rm -f "$WORK/stored.edi"
  fi
else
  echo '[]' > "$LOG_JSON"
  echo "the server is gone (killed over $MAX_RSS_MIB MiB, or crashed): see $WORK/atom/atom.log"
fi

# ---- report -------------------------------------------------------------------------
say "result"
python3 - "$RES" "$SIZE" "$SHA" "$STORED_SIZE" "$STORED_SHA" "$t0" "$t1" "$cpu0" "$cpu1" "$HZ" "$HWM_KIB" <<'PY'
import json, sys
res, size, sha, stored_size, stored_sha = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
t0, t1, cpu0, cpu1, hz, hwm = float(sys.argv[6]), float(sys.argv[7]), int(sys.argv[8]), int(sys.argv[9]), int(sys.argv[10]), int(sys.argv[11])
try:
    s = json.load(open(f"{res}/send.json"))
except ValueError:
    s = {}
log = json.load(open(f"{res}/messages.json"))
m = log[0] if log else {}
rss = json.load(open(f"{res}/rss.json"))
peak = rss["peak"] or {}
msg = s.get("message") or {}
failures = s.get("failures") or []
mib = lambda kib: f"{kib / 1024:.0f}"
# The request: the client's latency (start of the request to the verified
# MDN); without a summary, the whole `atom send` (build included).
req_s = s["latency_ms"]["max"] / 1000 if s.get("sent") and s.get("latency_ms") else None
seconds = req_s if req_s else t1 - t0
request_bytes = m.get("request_size") or s.get("wire_bytes") or "-"
checks = []
first = (failures[0].get("reason") if isinstance(failures[0], dict) else failures[0]) if failures else None
disp = msg.get("disposition") or (str(first)[:200] if first else "no MDN")
checks.append(f"MDN {disp}" + (", MIC and signature verified" if msg.get("mic_verified") and msg.get("mdn_signed") else ""))
if stored_size != "-":
    checks.append(f"stored size {'=' if int(stored_size) == size else '!='} original")
    checks.append(f"sha256 {'=' if stored_sha == sha else '!='} original")
else:
    checks.append("stored payload not found")
if rss.get("killed_over_kib"):
    checks.append(f"server KILLED over {rss['killed_over_kib'] >> 10} MiB")
cpu_s = f"{(cpu1 - cpu0) / hz:.1f}" if cpu1 >= cpu0 > 0 else "-"
hi = rss.get("highest") or {}
anon_hi = hi.get("RssAnon", (0, 0))[0]
# VmHWM read at the end; the kernel's counters lag a little behind (per
# thread caches), so a sample may be a few hundred KiB higher.
hwm = max(hwm, hi.get("VmHWM", (0, 0))[0], hi.get("VmRSS", (0, 0))[0])
ok = disp == "processed" and stored_size != "-" and int(stored_size) == size and stored_sha == sha
print(f"client: build {s.get('build_ms', 0) / 1000:.1f} s (compress, sign, encrypt; not in 'seconds'), "
      f"request {seconds:.1f} s, whole `atom send` {t1 - t0:.1f} s, wire bytes {s.get('wire_bytes', '-')}")
print(f"server: VmHWM {mib(hwm)} MiB; at the highest VmRSS sampled ({mib(peak.get('VmRSS', 0))} MiB, "
      f"{peak.get('t_s', 0):.1f} s after the server start): RssAnon {mib(peak.get('RssAnon', 0))} MiB, "
      f"RssFile {mib(peak.get('RssFile', 0))} MiB, RssShmem {mib(peak.get('RssShmem', 0))} MiB")
print("server: highest samples on their own: " + ", ".join(
    f"{k} {mib(hi[k][0])} MiB at {hi[k][1]:.1f} s" for k in ("RssAnon", "RssFile") if k in hi)
    + " (VmHWM also catches what falls between two samples)")
print()
print("| payload | compressed request bytes | seconds | MB/s of payload | server CPU s | peak RSS MiB | checks |")
print("| --- | --- | --- | --- | --- | --- | --- |")
print(f"| {size >> 20} MiB ({size} B) | {request_bytes} | {seconds:.1f} | {size / seconds / 1e6:.1f} "
      f"| {cpu_s} | {mib(hwm)} (at the sampled peak anon {mib(peak.get('RssAnon', 0))} + file {mib(peak.get('RssFile', 0))}; "
      f"anon alone up to {mib(anon_hi)}) "
      f"| {'OK' if ok else 'FAILED'}: {'; '.join(checks)} |")
PY
echo "atom errors logged: $(grep -c -E ' ERROR ' "$WORK/atom/atom.log" || true); load average now: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "total time: $(( (SECONDS - START) / 60 )) min $(( (SECONDS - START) % 60 )) s"
