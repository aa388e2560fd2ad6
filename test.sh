#!/usr/bin/env bash
# The whole test suite, from a fresh clone: the Rust tests (unit, integration,
# end-to-end through the binary), then the independent Python (aioquic)
# interoperability check against the binary those tests built. Sets up what
# it needs itself (the Python virtual environment for aioquic, from PyPI).
#
# usage: ./test.sh [extra cargo test arguments]
# env:   QUIC_CHAT_SOAK_SECS (soak length, default 3), see docs/RELIABILITY.md
set -euo pipefail
cd "$(dirname "$0")"

cargo test "$@"
# This build speaks protocol v2: its checks must run, never be skipped.
QUIC_CHAT_EXPECT_V2=1 bash interop/run.sh target/debug/quic-chat
