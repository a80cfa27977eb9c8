#!/usr/bin/env bash
# Runs every fuzz target for SECONDS each (default 60).
#
#   fuzz/run.sh [SECONDS] [extra libFuzzer flags...]
#
# Seeds come from fuzz/corpus/<target>/ (committed, kept small); inputs the
# fuzzer finds go to fuzz/target/corpus/<target>/ (ignored by git), crashes
# to fuzz/artifacts/<target>/. Reproduce one with
#   RUSTC_BOOTSTRAP=1 cargo fuzz run <target> fuzz/artifacts/<target>/crash-...
# and shrink it with
#   RUSTC_BOOTSTRAP=1 cargo fuzz tmin <target> fuzz/artifacts/<target>/crash-...
# Works on the stable toolchain: RUSTC_BOOTSTRAP=1 lets it take the -Z flags
# that cargo-fuzz passes.
#
# Environment:
#   FUZZ_SANITIZER  none (default) or address. The crate forbids unsafe code,
#                   so ASan mostly watches the dependencies; it costs ~5x in
#                   execs/s (about 140/s against 650/s here).
#   FUZZ_JOBS       worker processes (libFuzzer -fork=N); default 1.
set -euo pipefail

seconds="${1:-60}"
shift || true
case "$seconds" in
    '' | *[!0-9]*) echo "usage: $0 [SECONDS] [libFuzzer flags...]" >&2; exit 2 ;;
esac

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "installing cargo-fuzz..." >&2
    cargo install cargo-fuzz --locked
fi

export RUSTC_BOOTSTRAP=1
sanitizer="${FUZZ_SANITIZER:-none}"
jobs="${FUZZ_JOBS:-1}"

status=0
for target in $(cargo fuzz list); do
    work="fuzz/target/corpus/$target"
    seeds="fuzz/corpus/$target"
    mkdir -p "$work" "$seeds"
    extra=()
    if [ -f "fuzz/$target.dict" ]; then
        extra+=("-dict=fuzz/$target.dict")
    fi
    if [ "$jobs" -gt 1 ]; then
        extra+=("-fork=$jobs")
    fi
    echo "=== $target: ${seconds}s (sanitizer: $sanitizer)" >&2
    if ! cargo fuzz run --sanitizer "$sanitizer" "$target" "$work" "$seeds" -- \
        -max_total_time="$seconds" -timeout=30 -rss_limit_mb=4096 \
        -max_len=16384 -print_final_stats=1 "${extra[@]}" "$@"; then
        echo "=== $target: FAILED (see fuzz/artifacts/$target/)" >&2
        status=1
    fi
done
exit "$status"
