#!/usr/bin/env bash
# Node benchmark: throughput, peak memory and ping-pong latency of the
# `eventstore` binary on the stdin/stdout protocol (docs/protocol.md), against
# `cat` as the do-nothing line-echo baseline.
#
#   scripts/bench_node.sh                       # 1,000,000 seed requests
#   REQUESTS=200000 RUNS=1 PINGS=5000 scripts/bench_node.sh
#
# Environment:
#   REQUESTS  requests in the throughput run (default 1000000)
#   RUNS      throughput runs per target; the best wall time is reported (default 3)
#   PINGS     measured ping-pong round trips per target and round (default 5000, plus 1000 warm-up)
#   ROUNDS    interleaved ping-pong rounds (default 5; the median is reported)
#   KIND      workload kind, seed or mixed (default seed)
#   NODE      the node binary (default target/release/eventstore)
#   BASELINE_NODE  another build of the node (e.g. the last release) to run
#             interleaved with NODE, for before/after ratios (default: none)
#
# Throughput: the whole request file is piped into the process, replies go
# to a file; msgs/s = requests / wall time (process start to exit, so it
# includes startup and the final flush). Peak RSS is /usr/bin/time -v's
# "Maximum resident set size". The reply count must equal the request count,
# and for the seed workload no reply may be an error.
# Latency: examples/pingpong.rs sends one request, waits for its reply,
# sends the next; p50/p99 of the round trips in microseconds.
# Prints markdown tables on stdout; progress goes to stderr. Exits 1 if any
# check failed.
set -euo pipefail
cd "$(dirname "$0")/.."

REQUESTS=${REQUESTS:-1000000}
RUNS=${RUNS:-3}
PINGS=${PINGS:-5000}
ROUNDS=${ROUNDS:-5}
WARMUP=1000
KIND=${KIND:-seed}
NODE=${NODE:-target/release/eventstore}

log() { echo "bench_node: $*" >&2; }

log "building (release)"
cargo build --release --quiet --bin eventstore --example workload --example pingpong --example serde_baseline >&2

tmp=$(mktemp -d "${TMPDIR:-/tmp}/bench_node.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

log "generating $REQUESTS $KIND requests"
target/release/examples/workload --kind "$KIND" --requests "$REQUESTS" --seed 1 >"$tmp/requests.jsonl"
req_lines=$(wc -l <"$tmp/requests.jsonl")
req_mib=$(awk -v b="$(stat -c %s "$tmp/requests.jsonl")" 'BEGIN { printf "%.0f", b / 1048576 }')

failed=0
latency_rows=()

# Throughput targets: labels and command lines, run interleaved (run 1 of
# every target, then run 2 of every target, ...) so that a slow phase of a
# shared machine hits all of them alike; the best wall time of each counts.
labels=()
declare -A cmd best rss_max replies status

target() {
    local label=$1
    shift
    labels+=("$label")
    cmd[$label]=$(printf '%q ' "$@")
    best[$label]=""
    rss_max[$label]=0
    replies[$label]=0
    status[$label]=ok
}

# run_once LABEL: one run of a target, folded into its best / max / status.
run_once() {
    local label=$1 wall rss rc n errors t0 t1
    [[ ${status[$label]} == ok ]] || return 0
    log "throughput: $label (run $run/$RUNS)"
    t0=$(date +%s.%N)
    set +e
    eval "/usr/bin/time -v -o \"$tmp/time.txt\" ${cmd[$label]}" <"$tmp/requests.jsonl" >"$tmp/replies.jsonl" 2>"$tmp/stderr.txt"
    rc=$?
    set -e
    t1=$(date +%s.%N)
    wall=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')
    rss=$(awk -F: '/Maximum resident set size/ { gsub(/ /, "", $2); print $2 }' "$tmp/time.txt")
    rss=${rss:-0}
    n=$(wc -l <"$tmp/replies.jsonl")
    replies[$label]=$n
    if [[ $rc -ne 0 ]]; then
        status[$label]="exit $rc"
        log "$label exited with $rc; stderr tail:"
        tail -n 5 "$tmp/stderr.txt" >&2 || true
    elif [[ $n -ne $req_lines ]]; then
        status[$label]="FAIL: $n replies"
    elif [[ ($label == eventstore* || $label == baseline\ node*) && $KIND == seed ]]; then
        errors=$(grep -c -E '"type": ?"(error|concurrency_error)"' "$tmp/replies.jsonl" || true)
        if [[ $errors -ne 0 ]]; then
            status[$label]="FAIL: $errors error replies"
        fi
    fi
    if [[ -z ${best[$label]} ]] || awk -v w="$wall" -v b="${best[$label]}" 'BEGIN { exit !(w < b) }'; then
        best[$label]=$wall
    fi
    if ((rss > rss_max[$label])); then rss_max[$label]=$rss; fi
}

throughput_row() {
    local label=$1 rate rss_mib
    [[ ${status[$label]} == ok ]] || failed=1
    rate=$(awk -v n="$req_lines" -v w="${best[$label]}" 'BEGIN { printf "%.0f", (w > 0 ? n / w : 0) }')
    rss_mib=$(awk -v k="${rss_max[$label]}" 'BEGIN { printf "%.1f", k / 1024 }')
    echo "| $label | $rate | ${best[$label]} | $rss_mib | ${replies[$label]} / $req_lines | ${status[$label]} |"
}

# Ping-pong latency, in ROUNDS interleaved rounds (each round measures every
# target once, PINGS round trips each): on a VM the wake-up of an idle vCPU
# can add ~50-100 µs to a round trip in one round and nothing in the next,
# whatever the process, so one sequential measurement per target would
# compare machine states rather than programs. Reported: the median of the
# rounds' p50s and p99s, and every round's p50.
latency_labels=()
declare -A latency_cmd latency_p50s latency_p99s latency_status

latency_target() {
    local label=$1
    shift
    latency_labels+=("$label")
    latency_cmd[$label]=$(printf '%q ' "$@")
    latency_p50s[$label]=""
    latency_p99s[$label]=""
    latency_status[$label]=ok
}

latency_once() {
    local label=$1 out
    [[ ${latency_status[$label]} == ok ]] || return 0
    log "ping-pong: $label, round $round/$ROUNDS ($PINGS round trips)"
    if out=$(eval "target/release/examples/pingpong --input \"$tmp/requests.jsonl\" --requests $PINGS --warmup $WARMUP -- ${latency_cmd[$label]}" 2>"$tmp/ping_err.txt"); then
        latency_p50s[$label]+="$(sed -n 's/.*p50_us=\([0-9.]*\).*/\1/p' <<<"$out") "
        latency_p99s[$label]+="$(sed -n 's/.*p99_us=\([0-9.]*\).*/\1/p' <<<"$out") "
    else
        latency_status[$label]=FAIL
        log "ping-pong against $label failed:"
        tail -n 5 "$tmp/ping_err.txt" >&2 || true
    fi
}

median() {
    tr ' ' '\n' | grep -v '^$' | sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) print "-"; else if (NR % 2) print v[(NR + 1) / 2]; else printf "%.1f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

latency_row() {
    local label=$1
    [[ ${latency_status[$label]} == ok ]] || failed=1
    echo "| $label | $(median <<<"${latency_p50s[$label]}") | $(median <<<"${latency_p99s[$label]}") | ${latency_p50s[$label]% } | ${latency_status[$label]} |"
}

# Durable: a fresh data directory per run (the seed workload assumes an
# empty store), fsync before every reply batch (group commit).
printf '#!/usr/bin/env bash\nrm -rf "%s/data" && exec "%s" --data-dir "%s/data" "$@"\n' "$tmp" "$NODE" "$tmp" >"$tmp/durable.sh"
chmod +x "$tmp/durable.sh"
BASELINE_NODE=${BASELINE_NODE:-}
if [[ -n $BASELINE_NODE ]]; then
    printf '#!/usr/bin/env bash\nrm -rf "%s/data" && exec "%s" --data-dir "%s/data" "$@"\n' "$tmp" "$BASELINE_NODE" "$tmp" >"$tmp/baseline_durable.sh"
    chmod +x "$tmp/baseline_durable.sh"
    target "baseline node --workers 1" "$BASELINE_NODE" --workers 1
    target "baseline node (default workers)" "$BASELINE_NODE"
    target "baseline node --data-dir (fsync always)" "$tmp/baseline_durable.sh"
fi
target "cat (echo baseline)" cat
target "serde_json baseline (no store, 2 threads)" target/release/examples/serde_baseline 2
target "eventstore --workers 1" "$NODE" --workers 1
target "eventstore (default workers)" "$NODE"
target "eventstore --data-dir (fsync always)" "$tmp/durable.sh"
target "eventstore --data-dir --fsync never" "$tmp/durable.sh" --fsync never
for run in $(seq 1 "$RUNS"); do
    for label in "${labels[@]}"; do
        run_once "$label"
    done
done
# Reopen: the directory the last durable run left (~1M events); time from
# start to the first reply.
log "reopen: time to first reply on $(du -sh "$tmp/data" | cut -f1) of log"
echo '{"src":"c","body":{"type":"read_all","msg_id":1,"max_count":1}}' >"$tmp/one.jsonl"
t0=$(date +%s.%N)
"$NODE" --data-dir "$tmp/data" <"$tmp/one.jsonl" >"$tmp/one_reply.jsonl"
t1=$(date +%s.%N)
reopen_s=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }')
grep -q '"all_read"' "$tmp/one_reply.jsonl" || { log "reopen: no reply"; failed=1; }

latency_target "cat (echo baseline)" cat
latency_target "eventstore --workers 1" "$NODE" --workers 1
latency_target "eventstore (default workers)" "$NODE"
if [[ -n $BASELINE_NODE ]]; then
    latency_target "baseline node --workers 1" "$BASELINE_NODE" --workers 1
    latency_target "baseline node (default workers)" "$BASELINE_NODE"
fi
for round in $(seq 1 "$ROUNDS"); do
    for label in "${latency_labels[@]}"; do
        latency_once "$label"
    done
done

echo
echo "### Throughput: $req_lines $KIND requests ($req_mib MiB), best of $RUNS, $(nproc) CPUs"
echo
echo "| target | msgs/s | wall s | peak RSS MiB | replies | check |"
echo "|---|---:|---:|---:|---:|---|"
for label in "${labels[@]}"; do
    throughput_row "$label"
done
node_s=${best["eventstore (default workers)"]}
serde_s=${best["serde_json baseline (no store, 2 threads)"]}
echo
echo "Default node vs the serde_json baseline: $(awk -v a="$node_s" -v b="$serde_s" 'BEGIN { printf "%.2f", a / b }')× its wall time;"
echo "default workers vs --workers 1: $(awk -v a="${best["eventstore --workers 1"]}" -v b="$node_s" 'BEGIN { printf "%.2f", a / b }')× faster."
echo
echo "Reopening the durable directory of the last run: first reply after ${reopen_s} s."
echo
echo "### Ping-pong latency: one request in flight, $ROUNDS interleaved rounds of $PINGS round trips (after $WARMUP warm-up)"
echo
echo "| target | p50 µs (median of rounds) | p99 µs (median of rounds) | p50 of each round | check |"
echo "|---|---:|---:|---|---|"
for label in "${latency_labels[@]}"; do
    latency_row "$label"
done
exit "$failed"
