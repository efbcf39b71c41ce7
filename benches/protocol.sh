#!/usr/bin/env bash
# AS2 protocol benchmarks beside `openssl speed` on the same machine.
#
#   bash benches/protocol.sh            # everything (about 3 minutes on 2 cores)
#   bash benches/protocol.sh 10MiB      # only benchmarks whose id matches the regex
#
# 1. `openssl speed` for the primitives the AS2 paths use: RSA-2048
#    (private op = sign/decrypt-key, public op = verify/encrypt-key),
#    AES-256-CBC (encrypt and decrypt), SHA-256, and 3DES for reference.
# 2. A memory pass: each benchmark runs once (criterion --test) with glibc's
#    mmap threshold pinned, so every large buffer is mapped and unmapped and
#    the per-operation growth of the peak RSS (VmHWM) is exact.
# 3. `cargo bench -p atom-connectors --bench as2` under /usr/bin/time -v.
# 4. One table: our time, MB/s and ops/s per operation and size, the bound
#    derived from the openssl figures, and measured time as a multiple of it.
#
# MB = 10^6 bytes everywhere (openssl's unit). Criterion's estimates are read
# from $CRITERION_HOME (default target/criterion)/<group>/<size>/new/estimates.json.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
FILTER=${1:-}
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
export CRITERION_HOME=${CRITERION_HOME:-$TARGET_DIR/criterion}
OUT=$TARGET_DIR/as2-bench
mkdir -p "$OUT" "$CRITERION_HOME"

need() { command -v "$1" >/dev/null 2>&1; }
if [[ ! -x /usr/bin/time ]]; then
    echo "== installing GNU time (for peak memory)" >&2
    if [[ $(id -u) -eq 0 ]]; then apt-get install -y -qq time >/dev/null || { apt-get update -qq && apt-get install -y -qq time >/dev/null; }
    else sudo apt-get install -y -qq time >/dev/null; fi
fi
for tool in openssl cargo python3; do
    need "$tool" || { echo "protocol.sh: $tool is required" >&2; exit 1; }
done

echo "== machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), $(openssl version)"

# ---------------------------------------------------------------- openssl speed
SPEED=$OUT/openssl-speed.txt
: >"$SPEED"
speed() { # label, args...
    local label=$1; shift
    echo "== openssl speed -seconds 2 $*" >&2
    openssl speed -mr -seconds 2 "$@" 2>/dev/null | sed "s/^/$label /" >>"$SPEED"
}
speed rsa rsa2048
speed aes_enc -bytes 16384 -evp aes-256-cbc
speed aes_dec -bytes 16384 -evp aes-256-cbc -decrypt
speed sha256 -bytes 16384 -evp sha256
speed des3_dec -bytes 16384 -evp des-ede3-cbc -decrypt

# ------------------------------------------------------------------ cargo bench
echo "== cargo bench -p atom-connectors --bench as2 --no-run (build first; may wait for the cargo lock)" >&2
cargo bench -p atom-connectors --bench as2 --no-run 2>&1 | grep -v '^ *\(Compiling\|Blocking\)' >&2 || true

MEM=$OUT/memory.tsv
: >"$MEM"
echo "== memory pass: each benchmark once, mmap threshold pinned" >&2
MALLOC_MMAP_THRESHOLD_=131072 ATOM_BENCH_META=$MEM \
    cargo bench -q -p atom-connectors --bench as2 -- --test ${FILTER:+"$FILTER"} >"$OUT/memory-pass.log" 2>&1 \
    || { cat "$OUT/memory-pass.log" >&2; exit 1; }

STAMP=$OUT/.stamp
touch "$STAMP"
echo "== cargo bench -p atom-connectors --bench as2 ${FILTER}" >&2
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
start=$(date +%s)
set +e
/usr/bin/time -v -o "$OUT/time.txt" \
    cargo bench -p atom-connectors --bench as2 -- ${FILTER:+"$FILTER"} 2>&1 | tee "$OUT/bench.log" \
    | grep -E '^[a-z_]+/|time:|thrpt:' >&2
status=${PIPESTATUS[0]}
set -e
end=$(date +%s)
load_after=$(cut -d' ' -f1-3 /proc/loadavg)
[[ $status -eq 0 ]] || { echo "cargo bench failed ($status); see $OUT/bench.log" >&2; exit "$status"; }

# ---------------------------------------------------------------------- summary
python3 - "$SPEED" "$CRITERION_HOME" "$MEM" "$OUT/time.txt" "$STAMP" "$((end - start))" "$load_before" "$load_after" <<'PY'
import json, os, sys

speed_file, crit_home, mem_file, time_file, stamp, wall, load_before, load_after = sys.argv[1:9]
stamp_time = os.path.getmtime(stamp)

# openssl speed -mr: "+F2:idx:bits:sign/s:verify/s", "+F:idx:name:bytes/s"
rsa_priv = rsa_pub = None
bulk = {}
for line in open(speed_file):
    label, _, rec = line.strip().partition(" ")
    f = rec.split(":")
    if label == "rsa" and f[0] == "+F2" and f[2] == "2048":
        rsa_priv, rsa_pub = float(f[3]), float(f[4])
    elif f[0] == "+F":
        bulk[label] = float(f[3])  # bytes per second at 16 KiB blocks
missing = [n for n, v in (("rsa2048", rsa_priv), ("aes_enc", bulk.get("aes_enc")), ("aes_dec", bulk.get("aes_dec")), ("sha256", bulk.get("sha256"))) if not v]
if missing:
    sys.exit(f"openssl speed figures missing: {missing}")

# Bound terms: (name, seconds, openssl figure as printed)
def rsa_priv_t(): return ("rsa2048 priv", 1 / rsa_priv, f"{rsa_priv:,.0f} op/s")
def rsa_pub_t(): return ("rsa2048 pub", 1 / rsa_pub, f"{rsa_pub:,.0f} op/s")
def bulk_t(name, label, n, times=1):
    bps = bulk[label]
    return (name if times == 1 else f"{times}x {name}", times * n / bps, f"{bps / 1e6:,.0f} MB/s")
def aes_dec(n): return bulk_t("aes256cbc dec", "aes_dec", n)
def aes_enc(n): return bulk_t("aes256cbc enc", "aes_enc", n)
def sha(n, times=1): return bulk_t("sha256", "sha256", n, times)

# What each operation must do at least, per message (n payload, w wire bytes).
BOUNDS = {
    "unwrap_signed_encrypted": ("recv sign+enc", lambda n, w: [rsa_priv_t(), rsa_pub_t(), aes_dec(w), sha(n, 2)]),
    "unwrap_signed": ("recv sign", lambda n, w: [rsa_pub_t(), sha(n, 2)]),
    "unwrap_encrypted": ("recv enc", lambda n, w: [rsa_priv_t(), aes_dec(w), sha(n)]),
    # Crypto runs over the compressed entity (~ wire size); zlib inflate has no openssl bound.
    "unwrap_compressed_signed_encrypted": ("recv zip+sign+enc*", lambda n, w: [rsa_priv_t(), rsa_pub_t(), aes_dec(w), sha(w, 2)]),
    "build_signed_encrypted": ("send sign+enc", lambda n, w: [rsa_priv_t(), rsa_pub_t(), aes_enc(w), sha(n, 2)]),
    "mic_sha256": ("MIC sha256", lambda n, w: [sha(n)]),
    "mdn_build/signed": ("MDN signed", lambda n, w: [rsa_priv_t(), sha(w, 2)]),
    "mdn_build/unsigned": ("MDN unsigned", lambda n, w: []),
}
SIZES = [("1KiB", 1 << 10), ("100KiB", 100 << 10), ("10MiB", 10 << 20)]

memory = {}
if os.path.exists(mem_file):
    for line in open(mem_file):
        bid, payload, wire, before, peak = line.rstrip("\n").split("\t")
        memory[bid] = (int(payload), int(wire), int(before), int(peak))

def estimate(bid):
    path = os.path.join(crit_home, *bid.split("/"), "new", "estimates.json")
    if not os.path.exists(path) or os.path.getmtime(path) < stamp_time:
        return None
    with open(path) as f:
        e = json.load(f)
    m = e["mean"]
    half = (m["confidence_interval"]["upper_bound"] - m["confidence_interval"]["lower_bound"]) / 2
    return m["point_estimate"] / 1e9, half / m["point_estimate"]

def fmt_t(s):
    return f"{s * 1e6:,.0f} us" if s < 1e-2 else f"{s * 1e3:,.1f} ms"

rows = []
for group, (label, bound) in BOUNDS.items():
    ids = [(group, None, None)] if group.startswith("mdn") else [(f"{group}/{s}", s, n) for s, n in SIZES]
    for bid, size, n in ids:
        est = estimate(bid)
        if est is None:
            continue
        t, ci = est
        payload, wire, before, peak = memory.get(bid, (n or 0, n or 0, 0, 0))
        terms = bound(payload, wire)
        bt = sum(x[1] for x in terms)
        dom = max(terms, key=lambda x: x[1]) if terms else None
        rows.append([
            label, size or "-", fmt_t(t), f"{ci * 100:.0f}%",
            f"{payload / t / 1e6:,.1f}" if payload else "-",
            f"{1 / t:,.0f}",
            f"{dom[0]} {dom[2]}" if dom else "none",
            fmt_t(bt) if terms else "-",
            f"{t / bt:,.1f}x" if terms else "-",
            f"{(peak - before) / 1024:,.1f}" if peak else "?",
        ])

head = ["operation", "size", "time", "±95%", "MB/s", "ops/s", "dominant primitive (openssl)", "bound", "vs bound", "+RSS MiB"]
widths = [max(len(str(r[i])) for r in rows + [head]) for i in range(len(head))]
line = lambda r: "  ".join(str(c).ljust(w) if i in (0, 1, 6) else str(c).rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
print()
print(line(head))
print("  ".join("-" * w for w in widths))
prev = None
for r in rows:
    if prev is not None and r[0] != prev:
        print()
    print(line(r))
    prev = r[0]

peak_kib = wall_str = None
for l in open(time_file):
    if "Maximum resident set size" in l:
        peak_kib = int(l.split(":")[-1])
    if "Elapsed (wall clock)" in l:
        wall_str = l.split(": ", 1)[-1].strip()
print()
print(f"openssl speed (16 KiB blocks): rsa2048 {rsa_priv:,.0f} priv/s, {rsa_pub:,.0f} pub/s; "
      f"aes-256-cbc enc {bulk['aes_enc'] / 1e6:,.0f} MB/s, dec {bulk['aes_dec'] / 1e6:,.0f} MB/s; "
      f"sha256 {bulk['sha256'] / 1e6:,.0f} MB/s"
      + (f"; des-ede3-cbc dec {bulk['des3_dec'] / 1e6:,.0f} MB/s" if "des3_dec" in bulk else ""))
print("bound = sum of the openssl costs of the primitives one operation needs: receive sign+enc = RSA priv (key) + RSA pub (verify)"
      " + AES dec (wire) + 2x SHA-256 (signature digest, MIC); send = RSA priv (sign) + RSA pub (key) + AES enc + 2x SHA-256.")
print("* compressed: crypto over the compressed entity (~wire size); zlib inflate of the payload is not in the bound.")
print("+RSS MiB = growth of the peak RSS over the resident set holding the input, one run with the mmap threshold pinned.")
print(f"bench process peak RSS (/usr/bin/time -v, cargo bench incl. criterion): {peak_kib / 1024:,.1f} MiB; "
      f"cargo bench wall time {wall_str} ({wall} s)" if peak_kib else "")
print(f"load average (1/5/15 min) before the timed run: {load_before}; after: {load_after}"
      " (other work on this machine inflates the figures)")
PY
