#!/usr/bin/env bash
# The process engine, in both worker modes (general, low_latency_debug):
# per-execution engine overhead, receipt-to-completion latency and
# execution throughput, beside a receive-only baseline in the same run.
#
#   bash benches/processes.sh                 # COUNT=1000 messages per run
#   COUNT=300 CONCURRENCIES="1 8" bash benches/processes.sh
#
# One `atom run` serves three listeners (one bundle each, told apart by AS2-To):
#   bench    no steps (receive only: the baseline)
#   general  mode: general            steps: [ wasm: ok.wat ]
#   lld      mode: low_latency_debug  steps: [ wasm: ok.wat ]
# ok.wat is a trivial WASI guest: _start writes "ok" to stdout, nothing else.
# Each run sends COUNT unsigned 1 KiB messages (unsigned synchronous MDN)
# with `atom send --count --concurrency`; runs at each concurrency go
# base, general, lld. After each run the script waits until every
# execution of the run has a final status, refuses any ERROR, and reads
# the history (`atom executions --json`):
#   engine_us       instantiate + run + collect, measured inside the runtime
#   instantiate_us  instantiation alone
#   e2e             finished_at_us - queued_at_us (queued_at_us is taken
#                   when the receipt's execution record is built, just
#                   before the durable commit of the receipt)
#   pickup          started_at - queued_at_us (commit and hand-over to a worker)
#   exec/s          executions / (last finished - first queued)
# The sender runs on the same machine and shares its cores.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
COUNT=${COUNT:-1000}
CONCURRENCIES=${CONCURRENCIES:-"1 8"}
WARMUP=${WARMUP:-50}
WAIT_S=${WAIT_S:-120}
cd "$ROOT"
BUILD_START=$(date +%s)
source "$ROOT/benches/lib.sh"
bench_init
BUILD_S=$(( $(date +%s) - BUILD_START ))

# The receive-only listener is the `bench` bundle lib.sh writes; the two
# process bundles sit beside it.
bench_site "$WORK" "start:
  as2:
    as2_from: { id: BENCH-PARTNER }
    as2_to: { id: BENCH-BASE }"
# Quotas at their documented defaults, written out so the figures say what they ran with.
cat >> "$WORK/atom.yaml" <<'YAML'
quotas:
  default_as2_workload: general
  general_workers: 8
  low_latency_debug:
    max_running_executions: 20
    max_queued_executions: 10
    queued_execution_timeout_seconds: 10
    max_execution_time_seconds: 30
YAML
cat > "$WORK/ok.wat" <<'WAT'
;; Writes "ok" to stdout and returns: the smallest useful guest.
(module
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "ok")
  (func (export "_start")
    (i32.store (i32.const 0) (i32.const 16))   ;; iovec.buf
    (i32.store (i32.const 4) (i32.const 2))    ;; iovec.len
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))
WAT
for pair in general:BENCH-GENERAL lld:BENCH-LLD; do
  name=${pair%%:*} to=${pair#*:}
  mode=$([ "$name" = lld ] && echo low_latency_debug || echo general)
  mkdir -p "$WORK/processes/$name"
  cp "$WORK/ok.wat" "$WORK/processes/$name/ok.wat"
  cat > "$WORK/processes/$name/process.yaml" <<YAML
start:
  as2:
    as2_from: { id: BENCH-PARTNER }
    as2_to: { id: $to }
mode: $mode
steps:
  - wasm: ok.wat
YAML
done
head -c 1024 /dev/urandom | base64 -w 76 | head -c 1024 > "$WORK/payload.edi"
A() { "$ATOM" -c "$WORK/atom.yaml" "$@"; }
now_us() { python3 -c 'import time; print(time.time_ns() // 1000)'; }
send() { # TO CONCURRENCY COUNT OUT
  "$ATOM" --data-dir "$WORK/sender" send "$WORK/payload.edi" --url "http://127.0.0.1:$HTTP/as2/bench" \
    --from BENCH-PARTNER --to "$1" --mdn sync --concurrency "$2" --count "$3" --json > "$4" || true
}

cat > "$WORK/stats.py" <<'PY'
# check HISTORY T0 N          exit 0 when N executions queued at/after T0 are all final
# row HISTORY T0 SEND LABEL C RSS RESULTS   append one result row (JSON) to RESULTS
# table RESULTS                print the table
import json, sys, re, calendar, collections
FINAL = {"COMPLETE", "COMPLETE_WARN", "ERROR", "ABORTED"}

def pct(values, p):
    if not values:
        return float("nan")
    v = sorted(values)
    return v[min(len(v) - 1, max(0, -(-len(v) * p // 100) - 1))]  # nearest rank

def rfc3339_us(text):
    m = re.match(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)$", text)
    secs = calendar.timegm(tuple(int(x) for x in re.split(r"[-T:]", m.group(1))) + (0, 0, 0))
    if m.group(3) != "Z":
        sign = 1 if m.group(3)[0] == "+" else -1
        secs -= sign * (int(m.group(3)[1:3]) * 3600 + int(m.group(3)[4:6]) * 60)
    return secs * 1_000_000 + int(((m.group(2) or "0") + "000000")[:6])

def window(path, t0):
    return [r for r in json.load(open(path)) if r["queued_at_us"] >= t0]

cmd = sys.argv[1]
if cmd == "check":
    rows = window(sys.argv[2], int(sys.argv[3]))
    n = int(sys.argv[4])
    counts = collections.Counter(r["status"] for r in rows)
    print(" ".join(f"{k}={v}" for k, v in sorted(counts.items())) or "none yet")
    sys.exit(0 if len(rows) >= n and all(r["status"] in FINAL for r in rows) else 1)

if cmd == "row":
    _, _, history, t0, send, label, conc, rss, results = sys.argv
    s = json.load(open(send))
    row = {"label": label, "c": int(conc), "rss": float(rss), "sent": s["sent"], "ok": s["ok"],
           "failed": s["failed"], "send_per_s": s["ok_per_s"], "send_p50": s["latency_ms"]["p50"],
           "send_p99": s["latency_ms"]["p99"], "failures": s.get("failures", [])}
    if history != "-":
        rows = window(history, int(t0))
        bad = [r for r in rows if r["status"] not in ("COMPLETE", "COMPLETE_WARN")]
        modes = collections.Counter(r["mode"] for r in rows)
        if set(modes) != {label}:
            sys.exit(f"{label} c={conc}: executions ran in modes {dict(modes)}, expected {label}")
        if bad:
            for r in bad[:5]:
                print(f"  {r['id']} {r['status']}: {r.get('error')}", file=sys.stderr)
            sys.exit(f"{label} c={conc}: {len(bad)} of {len(rows)} executions did not complete")
        e2e = [r["finished_at_us"] - r["queued_at_us"] for r in rows]
        pickup = [rfc3339_us(r["started_at"]) - r["queued_at_us"] for r in rows]
        span = max(r["finished_at_us"] for r in rows) - min(r["queued_at_us"] for r in rows)
        row.update({
            "n": len(rows), "modes": dict(modes), "exec_per_s": len(rows) / (span / 1e6),
            "e2e_p50": pct(e2e, 50) / 1000, "e2e_p99": pct(e2e, 99) / 1000, "e2e_max": max(e2e) / 1000,
            "pickup_p50": pct(pickup, 50) / 1000, "pickup_p99": pct(pickup, 99) / 1000,
            "eng_p50": pct([r["engine_us"] for r in rows], 50), "eng_p99": pct([r["engine_us"] for r in rows], 99),
            "ins_p50": pct([r["instantiate_us"] for r in rows], 50), "ins_p99": pct([r["instantiate_us"] for r in rows], 99),
        })
    with open(results, "a") as f:
        f.write(json.dumps(row) + "\n")
    extra = f", {row['n']} executions {row['modes']}" if "n" in row else ""
    print(f"  {label} c={conc}: sent {row['sent']}, ok {row['ok']}, failed {row['failed']}{extra}")
    for fl in row["failures"][:3]:
        print(f"    failure {fl['count']}x: {fl['reason']}")

if cmd == "table":
    rows = [json.loads(l) for l in open(sys.argv[2])]
    print("times: send latency and e2e/pickup in ms, engine/instantiate in µs (p50/p99 nearest rank)")
    head = (f"{'listener':<18}{'C':>3}{'send/s':>8}{'send p50':>9}{'exec/s':>8}{'e2e p50':>9}{'p99':>8}{'max':>8}"
            f"{'pickup p50':>11}{'p99':>7}{'engine p50':>11}{'p99':>7}{'inst p50':>9}{'p99':>7}{'fail':>5}{'RSS MiB':>8}")
    print(head); print("-" * len(head))
    for r in rows:
        if "n" in r:
            rest = (f"{r['exec_per_s']:>8.0f}{r['e2e_p50']:>9.2f}{r['e2e_p99']:>8.2f}{r['e2e_max']:>8.1f}"
                    f"{r['pickup_p50']:>11.2f}{r['pickup_p99']:>7.2f}{r['eng_p50']:>11}{r['eng_p99']:>7}"
                    f"{r['ins_p50']:>9}{r['ins_p99']:>7}")
        else:
            rest = f"{'-':>8}{'-':>9}{'-':>8}{'-':>8}{'-':>11}{'-':>7}{'-':>11}{'-':>7}{'-':>9}{'-':>7}"
        print(f"{r['label']:<18}{r['c']:>3}{r['send_per_s']:>8.0f}{r['send_p50']:>9.2f}{rest}{r['failed']:>5}{r['rss']:>8.0f}")
    base = {r["c"]: r["send_per_s"] for r in rows if "n" not in r}
    for r in rows:
        if "n" in r and base.get(r["c"]):
            print(f"{r['label']} c={r['c']}: send {r['send_per_s']:.0f}/s vs receive-only {base[r['c']]:.0f}/s "
                  f"({100 * (r['send_per_s'] / base[r['c']] - 1):+.0f}%); executions {r['exec_per_s']:.0f}/s")
PY

start_atom "$ATOM" "$WORK"
A processes | sed 's/^/  /'
rss() { awk '/VmHWM/{printf "%.1f\n", $2/1024}' "/proc/$PID/status"; }
wait_done() { # PROCESS T0 N
  local deadline=$(( $(date +%s) + WAIT_S )) state
  while :; do
    A executions --process "$1" --json --limit $(( $3 * 2 + 100 )) > "$WORK/history.json"
    if state=$(python3 "$WORK/stats.py" check "$WORK/history.json" "$2" "$3"); then return 0; fi
    if [ "$(date +%s)" -ge "$deadline" ]; then
      echo "executions of $1 not final after ${WAIT_S}s: $state" >&2
      tail -20 "$WORK/atom.log" >&2
      return 1
    fi
    sleep 0.2
  done
}

echo "== build ${BUILD_S}s; $(nproc) cores, shared with other work (and with the sender): figures are indicative"
echo "== warm-up: $WARMUP messages per listener (not counted)"
for to in BENCH-BASE BENCH-GENERAL BENCH-LLD; do send "$to" 4 "$WARMUP" "$WORK/warm.json"; done
wait_done general 0 "$WARMUP"; wait_done lld 0 "$WARMUP"
echo "== runs: $COUNT x 1 KiB unsigned, unsigned sync MDN, concurrency $CONCURRENCIES"
for C in $CONCURRENCIES; do
  for run in bench:BENCH-BASE:- general:BENCH-GENERAL:general lld:BENCH-LLD:low_latency_debug; do
    IFS=: read -r proc to mode <<<"$run"
    label=$([ "$mode" = - ] && echo receive-only || echo "$mode")
    T0=$(now_us)
    send "$to" "$C" "$COUNT" "$WORK/send.json"
    [ -s "$WORK/send.json" ] || { echo "atom send produced no summary" >&2; exit 1; }
    OK=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["ok"])' "$WORK/send.json")
    if [ "$mode" = - ]; then
      python3 "$WORK/stats.py" row - "$T0" "$WORK/send.json" "$label" "$C" "$(rss)" "$WORK/results"
    else
      wait_done "$proc" "$T0" "$OK"
      python3 "$WORK/stats.py" row "$WORK/history.json" "$T0" "$WORK/send.json" "$label" "$C" "$(rss)" "$WORK/results"
    fi
  done
done
# No ERROR anywhere, warm-up included.
ERRORS=$(A executions --status ERROR --json --limit 100 | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))')
[ "$ERRORS" = 0 ] || { echo "$ERRORS executions in ERROR" >&2; A executions --status ERROR --limit 5 >&2; exit 1; }
SERVER_CPU=$(awk '{print ($14+$15)/100}' "/proc/$PID/stat")
echo
python3 "$WORK/stats.py" table "$WORK/results"
echo "server CPU $SERVER_CPU s, server peak RSS $(rss) MiB (RSS column: peak so far, after each run); executions in ERROR: 0"
