# Shared by the runtime benchmark scripts (sourced, not run): a throw-away
# Atom installation with one bench listener, on free loopback ports.
#
#   bench_init                          # release build (or $ATOM_BIN); sets ATOM, WORK (removed at exit), PID
#   bench_site "$WORK" "$BUNDLE_YAML"   # writes atom.yaml and processes/bench/; sets HTTP, ADMIN
#   start_atom "$ATOM" "$WORK"          # starts `atom run`; sets PID; waits for the ready line
#   bench_messages "$WORK"              # keys in $WORK/keys (sets KEYS), and two messages built by
#                                       # pyas2lib: se.hdr/se.body (10 KiB, sha256 + aes128, signed
#                                       # sync MDN) and plain.hdr/plain.body (1 KiB, sync MDN)

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

bench_init() {
  # ATOM_BIN=path runs an atom built elsewhere (a before/after pair in one session).
  if [ -n "${ATOM_BIN:-}" ]; then
    ATOM=$ATOM_BIN
  else
    cargo build --release --quiet
    ATOM=$ROOT/target/release/atom
  fi
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
console: { enabled: false }
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

bench_messages() {
  local work=$1
  KEYS=$work/keys; mkdir -p "$KEYS"
  for who in org partner; do
    openssl req -x509 -newkey rsa:2048 -nodes -sha256 -days 30 -subj "/CN=bench-$who" \
      -keyout "$KEYS/$who.key" -out "$KEYS/$who.cert.pem" 2>/dev/null
    cat "$KEYS/$who.key" "$KEYS/$who.cert.pem" > "$KEYS/$who.pem"
  done
  "$PY" "$LOADGEN/mkmsg.py" --sender-key "$KEYS/partner.pem" --receiver-cert "$KEYS/org.cert.pem" \
    --from BENCH-PARTNER --to BENCH-ORG --payload "$work/order-10k.edi" --gen-edi 10240 \
    --digest sha256 --cipher aes128 --mdn sync-signed --out-headers "$work/se.hdr" --out-body "$work/se.body"
  "$PY" "$LOADGEN/mkmsg.py" --sender-key "$KEYS/partner.pem" \
    --from BENCH-PLAIN --to BENCH-ORG --payload "$work/order-1k.edi" --gen-edi 1024 \
    --digest none --cipher none --mdn sync --out-headers "$work/plain.hdr" --out-body "$work/plain.body"
}
