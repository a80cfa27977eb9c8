#!/usr/bin/env bash
# Subscriptions' cost (issue "Subscriptions and filtered reads"):
#
# 1. The node on the seed workload (REQUESTS requests, default 1,000,000)
#    with and without 10 live subscriptions that match few events (5 on one
#    aggregate each, 3 on a category of one aggregate, 2 on an event type
#    that never occurs: every append is matched against all 10), run
#    interleaved RUNS times; best wall time of each, and the ratio.
# 2. The library: examples/subscribers.rs (2 writers alone vs with 8
#    subscribers following them, interleaved; and the time from an append
#    to a waiting subscriber's wake-up, p50/p99).
#
#   scripts/bench_subscriptions.sh
#   REQUESTS=200000 RUNS=3 scripts/bench_subscriptions.sh
set -euo pipefail
cd "$(dirname "$0")/.."

REQUESTS=${REQUESTS:-1000000}
RUNS=${RUNS:-5}
NODE=${NODE:-target/release/eventstore}

cargo build --release --quiet --bin eventstore --example workload --example subscribers >&2
tmp=$(mktemp -d "${TMPDIR:-/tmp}/bench_subs.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

target/release/examples/workload --kind seed --requests "$REQUESTS" --seed 1 >"$tmp/plain.jsonl"
{
    for a in 1 2 3 4 5; do
        echo "{\"src\":\"p$a\",\"body\":{\"type\":\"subscribe\",\"aggregate_id\":\"user-$a\"}}"
    done
    for c in 7 42 99; do
        echo "{\"src\":\"q$c\",\"body\":{\"type\":\"subscribe\",\"category\":\"user-$c\"}}"
    done
    for t in 1 2; do
        echo "{\"src\":\"r$t\",\"body\":{\"type\":\"subscribe\",\"event_types\":[\"NeverHappens$t\"]}}"
    done
    cat "$tmp/plain.jsonl"
} >"$tmp/subscribed.jsonl"

declare -A best
for label in plain subscribed; do best[$label]=""; done
for run in $(seq 1 "$RUNS"); do
    for label in plain subscribed; do
        t0=$(date +%s.%N)
        "$NODE" <"$tmp/$label.jsonl" >"$tmp/out.jsonl"
        t1=$(date +%s.%N)
        wall=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')
        echo "bench_subscriptions: run $run $label ${wall}s ($(wc -l <"$tmp/out.jsonl") lines)" >&2
        if [[ -z ${best[$label]} ]] || awk -v w="$wall" -v b="${best[$label]}" 'BEGIN { exit !(w < b) }'; then
            best[$label]=$wall
        fi
    done
done
events=$(grep -c '"type":"event"' "$tmp/out.jsonl" || true)
echo "| node, $REQUESTS seed requests | best wall s (of $RUNS) |"
echo "|---|---:|"
echo "| no subscriptions | ${best[plain]} |"
echo "| 10 subscriptions ($events event messages) | ${best[subscribed]} |"
echo
echo "Speed with subscriptions: $(awk -v a="${best[plain]}" -v b="${best[subscribed]}" 'BEGIN { printf "%.2f", a / b }')× the speed without."
echo
target/release/examples/subscribers
