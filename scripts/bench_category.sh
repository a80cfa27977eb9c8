#!/usr/bin/env bash
# Category reads on a 10k- and a 1M-event log (issue 10: "a category read
# of 100 events from a 1M-event log costs the same as from a 10k-event log,
# within 2×"); see examples/category_read.rs for the log's shape.
#   1. wall time: the two logs measured in turns, median µs per read and the
#      ratio, through the index and through the scan it replaced;
#   2. instructions (callgrind, if installed): the same reads through the
#      index, counted on each log (`measured_reads` only);
#   3. memory: peak RSS of a 1M-event log before and after the first
#      category read, which builds the index.
#
#   scripts/bench_category.sh
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release --quiet --example category_read >&2
bin=${CARGO_TARGET_DIR:-target}/release/examples/category_read

echo "== wall time (interleaved)"
"$bin"

if command -v valgrind >/dev/null; then
    echo "== instructions in measured_reads (10 × all 100 audit events + 10 pages of 100 user events)"
    declare -A counted
    for n in 10000 1000000; do
        out=$(mktemp)
        valgrind --tool=callgrind --callgrind-out-file="$out" --collect-atstart=no \
            --toggle-collect='*measured_reads*' "$bin" count "$n" >/dev/null 2>&1
        counted[$n]=$(callgrind_annotate "$out" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}')
        rm -f "$out"
        echo "  $n events: ${counted[$n]} instructions"
    done
    python3 -c "print(f'  ratio 1M / 10k: {${counted[1000000]} / ${counted[10000]}:.2f}×')"
fi

echo "== memory"
"$bin" memory 1000000
