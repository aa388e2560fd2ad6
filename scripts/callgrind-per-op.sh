#!/usr/bin/env bash
# Server instructions per operation, by callgrind: a quic-chat server (BIN,
# default the release build) runs under valgrind --tool=callgrind; the native
# bench drives it for SHORT and then LONG seconds, the counters zeroed before
# and dumped after each run (after one uncounted run); the difference in instructions over the
# difference in operations is the marginal cost of one (start-up, handshakes
# and the first connections' set-up cancel out). Repeatable to well under 1%,
# where wall-clock figures on this machine move by 20%.
#
#   scripts/callgrind-per-op.sh [BENCH ARGS...]     e.g. -n 10 --in-flight 8
#
# env: BIN, BENCH (default BIN), SHORT (2), LONG (6), PORT (4620)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bin=${BIN:-$root/target/release/quic-chat}
bench=${BENCH:-$bin}
short=${SHORT:-2}
long=${LONG:-6}
port=${PORT:-4620}
work=$(mktemp -d)
server=""
trap '[ -n "$server" ] && kill "$server" 2>/dev/null; rm -rf "$work"' EXIT
RUST_LOG=warn valgrind --tool=callgrind --callgrind-out-file="$work/cg.%p" \
  "$bin" server --port "$port" --bind 127.0.0.1 --rate-limit 0 --max-connections-per-ip 0 \
  --cert-dir "$work/certs" --data-dir "$work/data" </dev/null >"$work/server.log" 2>&1 &
server=$!
for _ in $(seq 600); do [ -f "$work/certs/ca.pem" ] && grep -q "listening" "$work/server.log" 2>/dev/null && break; sleep 0.1; done
sleep 1
measure() {
  callgrind_control -z "$server" >/dev/null
  count=$("$bench" bench "127.0.0.1:$port" --ca "$work/certs/ca.pem" -d "$1" --warmup 0 --json "${@:2}" \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["count"])')
  rm -f "$work"/cg.*.[0-9]*
  callgrind_control -d "$server" >/dev/null
  # The dump is written by the server's own threads: wait for it.
  for _ in $(seq 300); do
    grep -qs "^totals:" "$work"/cg.*.[0-9]* && break
    sleep 0.1
  done
  ir=$(grep -h "^totals:" "$work"/cg.*.[0-9]* | awk '{s+=$2} END {print s}')
  echo "$count $ir"
}
# A first run, not counted: the first connections initialise what is lazy.
measure 1 "$@" >/dev/null
read -r n1 i1 < <(measure "$short" "$@")
read -r n2 i2 < <(measure "$long" "$@")
python3 - "$n1" "$i1" "$n2" "$i2" <<'PY'
import sys
n1, i1, n2, i2 = map(int, sys.argv[1:])
print(f"short: {n1} ops, {i1:,} instructions; long: {n2} ops, {i2:,} instructions")
print(f"marginal server instructions per op: {(i2 - i1) / (n2 - n1):,.0f}")
PY
