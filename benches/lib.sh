# Shared by the runtime benchmark scripts (sourced, not run): a throw-away
# Atom installation with one bench listener, on free loopback ports.
#
#   bench_init                          # release build; sets ATOM, WORK (removed at exit), PID
#   bench_site "$WORK" "$BUNDLE_YAML"   # writes atom.yaml and processes/bench/; sets HTTP, ADMIN
#   start_atom "$ATOM" "$WORK"          # starts `atom run`; sets PID; waits for the ready line

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

bench_init() {
  cargo build --release --quiet
  ATOM=$ROOT/target/release/atom
  WORK=$(mktemp -d)
  PID=""
  # At exit: stop the Atom this script started, remove the work folder.
  trap 'if [ -n "$PID" ]; then kill "$PID" 2>/dev/null || true; fi; rm -rf "$WORK"' EXIT
}

bench_site() {
  local work=$1 bundle=$2
  HTTP=$(port); ADMIN=$(port)
  mkdir -p "$work/processes/bench"
  cat > "$work/atom.yaml" <<YAML
atom: { name: bench, account_id: bench }
data_dir: data
processes_dir: processes
shared_web_server: { bind_address: 127.0.0.1, http_port: $HTTP }
admin: { address: "127.0.0.1:$ADMIN" }
YAML
  printf '%s\n' "$bundle" > "$work/processes/bench/process.yaml"
}

start_atom() {
  local atom=$1 work=$2
  "$atom" -c "$work/atom.yaml" run > "$work/ready" 2> "$work/atom.log" &
  PID=$!
  for _ in $(seq 100); do grep -q "atom ready" "$work/ready" 2>/dev/null && return 0; sleep 0.1; done
  echo "atom did not start; see $work/atom.log" >&2
  return 1
}
