#!/usr/bin/env bash
# What PostgreSQL costs per message, measured with the independent load
# generator in ../shared/bench (wrk + as2replay.lua, a fresh Message-ID per
# request, only positive MDNs counted), in one run on this machine:
#
#   (1) one node on SQLite (the default)
#   (2) one node on PostgreSQL (Debian's, started here in a temp dir)
#   (3) three nodes on that PostgreSQL behind HAProxy
#
# for (a) 1 KiB EDI, unsigned, sync MDN, durable, c32, and (b) 10 KiB signed
# (sha256) + encrypted (aes128) with a signed sync MDN, c32. Per load: msgs/s,
# p50/p99, CPU of the Atom nodes and of PostgreSQL per message. A 2-core
# machine cannot show scaling: the per-message costs are the point.
#
#   bash benches/molecule.sh                # about 3 minutes after the build
#   DURATION=30 bash benches/molecule.sh
#
# Needs wrk and haproxy and postgresql (Debian packages; installed when
# missing), the pyas2lib venv of .ci/setup-peers, and a release build.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SHARED=${ATOM_SHARED_DIR:-$ROOT/../shared}
LOADGEN=$SHARED/bench
DURATION=${DURATION:-10}
export WARMUP=${WARMUP:-3}
HZ=$(getconf CLK_TCK)
say() { printf '== %s\n' "$*"; }
cd "$ROOT"

need=()
for cmd in wrk haproxy; do command -v "$cmd" >/dev/null || need+=("$cmd"); done
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
if [ ${#need[@]} -gt 0 ]; then
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo=sudo
  $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
fi
PGBIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
bash .ci/setup-peers >/dev/null
PY=${ATOM_PEER_VENV:-$ROOT/target/peer-venv}/bin/python

source "$ROOT/benches/lib.sh"
say "building atom (release)"
bench_init
PIDS=()
cleanup_all() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  [ -n "${HAPROXY_PID:-}" ] && kill "$HAPROXY_PID" 2>/dev/null || true
  as_pg "$PGBIN/pg_ctl" -D "$WORK/pg" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup_all EXIT

# PostgreSQL refuses to run as root: as user postgres then.
as_pg() { if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }

say "PostgreSQL in $WORK/pg"
chmod 755 "$WORK"
PGPORT=$(port)
PGPASS=$(openssl rand -hex 12)
mkdir -p "$WORK/pg"
[ "$(id -u)" -eq 0 ] && chown postgres "$WORK/pg"
(cd /tmp && as_pg "$PGBIN/initdb" -D "$WORK/pg" -U postgres -A trust >/dev/null)
as_pg "$PGBIN/pg_ctl" -D "$WORK/pg" -l "$WORK/pg/log" -w \
  -o "-p $PGPORT -k $WORK/pg -c listen_addresses=127.0.0.1 -c fsync=on" start >/dev/null
(cd /tmp && as_pg "$PGBIN/psql" -h 127.0.0.1 -p "$PGPORT" -U postgres -qc \
  "CREATE ROLE atom LOGIN PASSWORD '$PGPASS'" -c "CREATE DATABASE atom OWNER atom" >/dev/null)
export ATOM_STORE_PASSWORD=$PGPASS

say "keys and messages (pyas2lib)"
bench_messages "$WORK"

# A node: its folder, config (SQLite, or the PostgreSQL above) and bundles.
make_node() {  # dir node_id store(sqlite|pg)
  local dir=$1 id=$2 store=$3 http admin
  http=$(port); admin=$(port)
  mkdir -p "$dir/processes/secure" "$dir/processes/plain"
  cat > "$dir/atom.yaml" <<YAML
atom: { name: $id, account_id: bench }
data_dir: data
processes_dir: processes
shared_web_server: { bind_address: 127.0.0.1, http_port: $http, trusted_proxies: ["127.0.0.1"] }
admin: { address: "127.0.0.1:$admin" }
console: { enabled: false }
molecule: { node_id: $id }
YAML
  [ "$store" = pg ] && printf 'store:\n  postgres:\n    url: postgres://atom@127.0.0.1:%s/atom\n' "$PGPORT" >> "$dir/atom.yaml"
  cat > "$dir/processes/secure/process.yaml" <<YAML
start:
  as2:
    as2_from: { id: BENCH-PARTNER, signing_certificate: $KEYS/partner.cert.pem }
    as2_to: { id: BENCH-ORG, decryption_key: $KEYS/org.pem, mdn_signing_key: $KEYS/org.pem }
    security: { require_signed: true, require_encrypted: true }
YAML
  printf 'start:\n  as2:\n    as2_from: { id: BENCH-PLAIN }\n    as2_to: { id: BENCH-ORG }\n' \
    > "$dir/processes/plain/process.yaml"
  echo "$http"
}

# The Atom nodes run under one parent, so that as2load.sh samples them all.
start_nodes() {  # dir...
  local script=$WORK/nodes-$RANDOM.sh
  { echo '#!/usr/bin/env bash'
    for d in "$@"; do echo "\"$ATOM\" -c \"$d/atom.yaml\" run > \"$d/ready\" 2> \"$d/atom.log\" &"; done
    echo 'wait'; } > "$script"
  bash "$script" &
  GROUP=$!
  PIDS+=("$GROUP")
  for d in "$@"; do
    for _ in $(seq 150); do grep -q "atom ready" "$d/ready" 2>/dev/null && break; sleep 0.1; done
    grep -q "atom ready" "$d/ready" || { echo "node $d did not start: $(tail -3 "$d/atom.log")" >&2; exit 1; }
  done
}
stop_nodes() { pkill -TERM -P "$GROUP" 2>/dev/null || true; wait "$GROUP" 2>/dev/null || true; }

pg_ticks() {  # CPU ticks of every PostgreSQL process
  local total=0 t
  for p in $(pgrep -u postgres -f "postgres" || true); do
    t=$(awk '{ sub(/^.*\) /, ""); print $12 + $13 }' /proc/"$p"/stat 2>/dev/null || echo 0)
    total=$((total + t))
  done
  echo "$total"
}

results=$WORK/results.txt; : > "$results"
measure() {  # setup url
  local setup=$1 url=$2 label hdr body before after out msgs
  for load in plain se; do
    if [ $load = plain ]; then label="unsigned-1k"; else label="signed+encrypted"; fi
    hdr=$WORK/$load.hdr; body=$WORK/$load.body
    say "$setup: $label at c32 for ${DURATION}s"
    before=$(pg_ticks)
    out=$(LABEL="$setup|$label" bash "$LOADGEN/as2load.sh" "$url" "$hdr" "$body" 32 "$DURATION" "$GROUP")
    after=$(pg_ticks)
    echo "$out"
    echo "$out" | grep ' c=' | sed "s/\$/ pg_cpu_s=$(awk -v a="$after" -v b="$before" -v hz="$HZ" 'BEGIN { printf "%.2f", (a - b) / hz }')/" >> "$results"
  done
}

say "(1) one node on SQLite"
h=$(make_node "$WORK/sqlite" s1 sqlite); start_nodes "$WORK/sqlite"
measure "1-node-SQLite" "http://127.0.0.1:$h/as2"; stop_nodes

say "(2) one node on PostgreSQL"
h=$(make_node "$WORK/pg1" p1 pg); start_nodes "$WORK/pg1"
measure "1-node-PostgreSQL" "http://127.0.0.1:$h/as2"; stop_nodes

say "(3) three nodes on PostgreSQL behind HAProxy"
ports=()
for n in 1 2 3; do ports+=("$(make_node "$WORK/m$n" "m$n" pg)"); done
start_nodes "$WORK/m1" "$WORK/m2" "$WORK/m3"
FRONT=$(port)
cat > "$WORK/haproxy.cfg" <<CFG
defaults
    mode http
    option forwardfor
    retries 0
    timeout connect 5s
    timeout client 60s
    timeout server 300s
frontend as2
    bind 127.0.0.1:$FRONT
    default_backend atoms
backend atoms
    balance roundrobin
    option httpchk GET /health
    http-check expect status 200
    server m1 127.0.0.1:${ports[0]} check
    server m2 127.0.0.1:${ports[1]} check
    server m3 127.0.0.1:${ports[2]} check
CFG
haproxy -db -f "$WORK/haproxy.cfg" > "$WORK/haproxy.log" 2>&1 &
HAPROXY_PID=$!
for _ in $(seq 50); do curl -s "http://127.0.0.1:$FRONT/health" | grep -q ok && break; sleep 0.2; done
measure "3-nodes-PostgreSQL-HAProxy" "http://127.0.0.1:$FRONT/as2"; stop_nodes

say "table"
printf '| setup | load | msgs/s | p50 | p99 | Atom CPU per message | PostgreSQL CPU per message |\n| --- | --- | --- | --- | --- | --- | --- |\n'
awk -v dur="$DURATION" '
  / c=[0-9]+ / {
    split($1, parts, "|")
    for (i = 2; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
    rate = v["msgs/s"] + 0; pct = v["server_cpu"]; sub(/%/, "", pct)
    atom_ms = (rate > 0) ? 10 * pct / rate : 0
    pg_ms = (rate > 0) ? 1000 * v["pg_cpu_s"] / (rate * dur) : 0
    printf "| %s | %s | %s | %s | %s | %.2f ms | %.2f ms |\n", parts[1], parts[2], v["msgs/s"], v["p50"], v["p99"], atom_ms, pg_ms
  }' "$results"
