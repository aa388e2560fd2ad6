#!/usr/bin/env bash
# One sitting, side by side: quic-chat with both bench clients (ours, plain),
# the minimal quinn relay (examples/minimal_relay.rs: the floor) and the NATS
# peer (request/reply over TLS, ../shared/peers/nats), in the same shapes,
# interleaved round by round so that the machine's noise falls on all alike.
# docs/BENCHMARKS.md records its output.
#
#   scripts/bench-vs-nats.sh [ROUNDS]       (default 3)
#
# env: NATS_PEER (default ../shared/peers/nats), OUT (default target/bench-vs-nats.jsonl),
#      GEN_THREADS (default 1): worker threads of both load generators, ours
#      (bench --threads) and natsload (a tokio program: TOKIO_WORKER_THREADS),
#      so that each server has the same share of the machine
# Builds the release binary and the relay, provisions nats-server with
# scripts/nats-server.sh, and needs openssl (for compare.sh's certificates).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
rounds=${1:-3}
gen_threads=${GEN_THREADS:-1}
peer=${NATS_PEER:-$root/../shared/peers/nats}
out=${OUT:-$root/target/bench-vs-nats.jsonl}
cd "$root"
cargo build --release -q --bin quic-chat --example minimal_relay
PATH="$(dirname "$(scripts/nats-server.sh)"):$PATH"
export PATH
bin=$root/target/release/quic-chat
work=$(mktemp -d)
relay=""
trap '[ -n "$relay" ] && kill "$relay" 2>/dev/null; rm -rf "$work"' EXIT
"$root/target/release/examples/minimal_relay" 127.0.0.1:4500 "$work/certs" >"$work/relay.log" 2>&1 &
relay=$!
for _ in $(seq 100); do grep -q "minimal relay on" "$work/relay.log" && break; sleep 0.05; done
: >"$out"

# The shapes of compare.sh, in quic-chat bench's words.
shapes=("pairs64|-w pairs -n 50 --in-flight 32 -b 64"
        "pairs4k|-w pairs -n 50 --in-flight 32 -b 4096"
        "window1|-w pairs -n 1 --in-flight 1 -b 64"
        "full|-w connect -n 32 --no-resume"
        "resumed|-w connect -n 32")
row() { echo "{\"round\":$1,\"system\":\"$2\",\"shape\":\"$3\",\"run\":$4}" | tee -a "$out"; }
for round in $(seq "$rounds"); do
  TOKIO_WORKER_THREADS=$gen_threads bash "$peer/compare.sh" 1 | grep '^{' | while read -r line; do
    case "$line" in
      *'"mode":"handshake"'*) shape=full ;;
      *'"size":4096'*) shape=pairs4k ;;
      *'"window":1,'*) shape=window1 ;;
      *) shape=pairs64 ;;
    esac
    row "$round" nats "$shape" "$line"
  done
  for entry in "${shapes[@]}"; do
    shape=${entry%%|*}; args=${entry#*|}
    for client in ours plain; do
      # shellcheck disable=SC2086
      row "$round" "quic-chat-$client" "$shape" \
        "$("$bin" bench $args -d 5 --warmup 1 --json --client "$client" --threads "$gen_threads")"
    done
    if [ "$shape" != resumed ]; then
      # shellcheck disable=SC2086
      row "$round" relay "$shape" "$("$bin" bench 127.0.0.1:4500 --ca "$work/certs/ca.pem" \
        --server-pid "$relay" $args -d 5 --warmup 1 --json --threads "$gen_threads")"
    fi
  done
done

python3 - "$out" <<'PY'
import json, sys, statistics as S
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
def figures(r):
    run = r["run"]
    if r["system"] == "nats":
        rate = run.get("handshakes_per_s") if run["mode"] == "handshake" else run.get("msgs_per_s")
        return rate, run.get("server_cpu_us_per_msg"), run.get("reply_p50_us")
    return run["per_second"], run.get("server_cpu_us_per_op"), (run.get("receipt_latency_us") or {}).get("p50")
systems = ["relay", "quic-chat-ours", "quic-chat-plain", "nats"]
shapes = ["pairs64", "pairs4k", "window1", "full", "resumed"]
print("| shape | " + " | ".join(f"{s}: rate, server µs/op" for s in systems) + " | ours / nats CPU | plain / nats CPU |")
print("| --- " * (len(systems) + 3) + "|")
for shape in shapes:
    cells, ratios = [], {"quic-chat-ours": [], "quic-chat-plain": []}
    for system in systems:
        got = [figures(r) for r in rows if r["system"] == system and r["shape"] == shape]
        cells.append(" / ".join(f"{rate:,.0f} ({cpu:.1f})" + (f" p50 {p50} µs" if shape == "window1" else "")
                                for rate, cpu, p50 in got) or "—")
    for round_ in sorted({r["round"] for r in rows}):
        nats = [figures(r) for r in rows if r["system"] == "nats" and r["shape"] == shape and r["round"] == round_]
        for system in ratios:
            ours = [figures(r) for r in rows if r["system"] == system and r["shape"] == shape and r["round"] == round_]
            if nats and ours and nats[0][1]:
                ratios[system].append(ours[0][1] / nats[0][1])
    fmt = lambda v: " / ".join(f"{x:.2f}" for x in v) + (f" (median {S.median(v):.2f})" if v else "—")
    print(f"| {shape} | " + " | ".join(cells) + f" | {fmt(ratios['quic-chat-ours'])} | {fmt(ratios['quic-chat-plain'])} |")
PY
