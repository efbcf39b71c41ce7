#!/usr/bin/env bash
# Instructions per unwrap of captured partner messages (shared/interop),
# counted by valgrind's callgrind: the same count every run, whatever else
# the machine is doing, so before/after comparisons need no quiet machine.
#
#   bash benches/unwrap-count.sh
#
# Each vector is opened 10 and 30 times; the difference divided by 20 is one
# unwrap without the set-up (loading keys, the first parse).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
command -v valgrind >/dev/null || { echo "needs valgrind (apt-get install valgrind)" >&2; exit 1; }
bin=$(cargo bench -p atom-connectors --bench unwrap_count --no-run --message-format=json 2>/dev/null |
  python3 -c 'import json,sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "unwrap_count" and m.get("executable"):
        print(m["executable"])')
count() {  # vector n -> instructions
  UNWRAP_VECTOR=$1 UNWRAP_COUNT=$2 valgrind --tool=callgrind --callgrind-out-file=/dev/null "$bin" 2>&1 |
    awk '/Collected/ { print $4 }'
}
printf '%-36s %16s\n' vector "instructions/unwrap"
for vector in mecas2_signed.as2 mecas2_signed_encrypted.as2 mecas2_compressed_signed_encrypted.as2; do
  a=$(count "$vector" 10); b=$(count "$vector" 30)
  printf '%-36s %16d\n' "$vector" $(( (b - a) / 20 ))
done
