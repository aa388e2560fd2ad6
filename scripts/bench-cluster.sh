#!/bin/bash
# Two quic-chat nodes (release build) on one nats-server, measured single-node
# (senders and receivers on n1) and cross-node (senders on n1, receivers on n2),
# interleaved; docs/BENCHMARKS.md records the output. Needs `cargo build --release`
# and `scripts/nats-server.sh` first. Usage: scripts/bench-cluster.sh [ROUNDS]
# (default 2); BIN=path picks another build.
set -u
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${BIN:-$ROOT/target/release/quic-chat}
ROUNDS=${1:-2}
NATS=$ROOT/target/nats-server-venv/bin/nats-server
rm -rf /tmp/cb && mkdir -p /tmp/cb
cd /tmp/cb
$NATS -a 127.0.0.1 -p 14222 -js -sd /tmp/cb/js >/tmp/cb/nats.log 2>&1 &
NATSPID=$!
sleep 1
common="--rate-limit 0 --max-connections-per-ip 0 --bind 127.0.0.1 --cert-dir /tmp/cb/certs"
$BIN server --port 14433 $common --data-dir /tmp/cb/d1 --cluster nats://127.0.0.1:14222 --node-id n1 </dev/null >/tmp/cb/n1.out 2>/tmp/cb/n1.err &
N1=$!
sleep 1
$BIN server --port 14434 $common --data-dir /tmp/cb/d2 --cluster nats://127.0.0.1:14222 --node-id n2 </dev/null >/tmp/cb/n2.out 2>/tmp/cb/n2.err &
N2=$!
sleep 2
cpu() { awk '{print $14+$15}' /proc/$1/stat; }
CA=/tmp/cb/certs/ca.pem
for round in $(seq 1 "$ROUNDS"); do
  for shape in single cross; do
    if [ $shape = single ]; then extra=""; else extra="--receivers-at 127.0.0.1:14434 --receivers-ca $CA"; fi
    a1=$(cpu $N1); a2=$(cpu $N2); an=$(cpu $NATSPID)
    out=$($BIN bench -w pairs -n 50 -d 5 --warmup 2 --json 127.0.0.1:14433 --ca $CA --server-pid $N1 $extra)
    b1=$(cpu $N1); b2=$(cpu $N2); bn=$(cpu $NATSPID)
    echo "$round $shape n1_ticks=$((b1-a1)) n2_ticks=$((b2-a2)) nats_ticks=$((bn-an)) $out"
  done
  for shape in single cross; do
    if [ $shape = single ]; then extra=""; else extra="--receivers-at 127.0.0.1:14434 --receivers-ca $CA"; fi
    out=$($BIN bench -w pairs -n 1 --in-flight 1 -d 5 --warmup 1 --json 127.0.0.1:14433 --ca $CA $extra)
    echo "$round w1-$shape $out"
  done
done
kill $N1 $N2; sleep 2; kill $NATSPID
