#!/usr/bin/env bash
# Node benchmark: throughput, peak memory and ping-pong latency of the
# `eventstore` binary on the stdin/stdout protocol (PROTOCOL.md), against
# `cat` as the do-nothing line-echo baseline.
#
#   scripts/bench_node.sh                       # 1,000,000 seed requests
#   REQUESTS=200000 RUNS=1 PINGS=5000 scripts/bench_node.sh
#
# Environment:
#   REQUESTS  requests in the throughput run (default 1000000)
#   RUNS      throughput runs per target; the best wall time is reported (default 3)
#   PINGS     measured ping-pong round trips per target (default 20000, plus 1000 warm-up)
#   KIND      workload kind, seed or mixed (default seed)
#   NODE      the node binary (default target/release/eventstore)
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
PINGS=${PINGS:-20000}
WARMUP=1000
KIND=${KIND:-seed}
NODE=${NODE:-target/release/eventstore}

log() { echo "bench_node: $*" >&2; }

log "building (release)"
cargo build --release --quiet --bin eventstore --example workload --example pingpong >&2

tmp=$(mktemp -d "${TMPDIR:-/tmp}/bench_node.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

log "generating $REQUESTS $KIND requests"
target/release/examples/workload --kind "$KIND" --requests "$REQUESTS" --seed 1 >"$tmp/requests.jsonl"
req_lines=$(wc -l <"$tmp/requests.jsonl")
req_mib=$(awk -v b="$(stat -c %s "$tmp/requests.jsonl")" 'BEGIN { printf "%.0f", b / 1048576 }')

failed=0
throughput_rows=()
latency_rows=()

# throughput LABEL CMD [ARGS...]: RUNS runs, best wall time, max peak RSS.
throughput() {
    local label=$1
    shift
    local best="" rss_max=0 replies=0 errors=0 status="ok" wall rss rc
    for run in $(seq 1 "$RUNS"); do
        log "throughput: $label (run $run/$RUNS)"
        local t0 t1
        t0=$(date +%s.%N)
        set +e
        /usr/bin/time -v -o "$tmp/time.txt" "$@" <"$tmp/requests.jsonl" >"$tmp/replies.jsonl" 2>"$tmp/stderr.txt"
        rc=$?
        set -e
        t1=$(date +%s.%N)
        wall=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')
        rss=$(awk -F: '/Maximum resident set size/ { gsub(/ /, "", $2); print $2 }' "$tmp/time.txt")
        rss=${rss:-0}
        replies=$(wc -l <"$tmp/replies.jsonl")
        if [[ $rc -ne 0 ]]; then
            status="exit $rc"
            log "$label exited with $rc; stderr tail:"
            tail -n 5 "$tmp/stderr.txt" >&2 || true
        elif [[ $replies -ne $req_lines ]]; then
            status="FAIL: $replies replies"
        fi
        if [[ $label != cat* && $KIND == seed ]]; then
            errors=$(grep -c -E '"type": ?"(error|concurrency_error)"' "$tmp/replies.jsonl" || true)
            if [[ $errors -ne 0 && $status == ok ]]; then
                status="FAIL: $errors error replies"
            fi
        fi
        if [[ -z $best ]] || awk -v w="$wall" -v b="$best" 'BEGIN { exit !(w < b) }'; then
            best=$wall
        fi
        if ((rss > rss_max)); then rss_max=$rss; fi
        [[ $status == ok ]] || break
    done
    [[ $status == ok ]] || failed=1
    local rate rss_mib
    rate=$(awk -v n="$req_lines" -v w="$best" 'BEGIN { printf "%.0f", (w > 0 ? n / w : 0) }')
    rss_mib=$(awk -v k="$rss_max" 'BEGIN { printf "%.1f", k / 1024 }')
    throughput_rows+=("| $label | $rate | $best | $rss_mib | $replies / $req_lines | $status |")
}

# latency LABEL CMD [ARGS...]
latency() {
    local label=$1
    shift
    log "ping-pong: $label ($PINGS round trips)"
    local out p50 p99 mean
    if out=$(target/release/examples/pingpong --input "$tmp/requests.jsonl" --requests "$PINGS" --warmup "$WARMUP" -- "$@" 2>"$tmp/ping_err.txt"); then
        p50=$(sed -n 's/.*p50_us=\([0-9.]*\).*/\1/p' <<<"$out")
        p99=$(sed -n 's/.*p99_us=\([0-9.]*\).*/\1/p' <<<"$out")
        mean=$(sed -n 's/.*mean_us=\([0-9.]*\).*/\1/p' <<<"$out")
        latency_rows+=("| $label | $p50 | $p99 | $mean | ok |")
    else
        failed=1
        log "ping-pong against $label failed:"
        tail -n 5 "$tmp/ping_err.txt" >&2 || true
        latency_rows+=("| $label | - | - | - | FAIL |")
    fi
}

throughput "cat (echo baseline)" cat
throughput "eventstore --workers 1" "$NODE" --workers 1
throughput "eventstore (default workers)" "$NODE"
# Durable: a fresh data directory per run (the seed workload assumes an
# empty store), fsync before every reply batch (group commit).
printf '#!/usr/bin/env bash\nrm -rf "%s/data" && exec "%s" --data-dir "%s/data" "$@"\n' "$tmp" "$NODE" "$tmp" >"$tmp/durable.sh"
chmod +x "$tmp/durable.sh"
throughput "eventstore --data-dir (fsync always)" "$tmp/durable.sh"
throughput "eventstore --data-dir --fsync never" "$tmp/durable.sh" --fsync never
# Reopen: the directory the last durable run left (~1M events); time from
# start to the first reply.
log "reopen: time to first reply on $(du -sh "$tmp/data" | cut -f1) of log"
echo '{"src":"c","body":{"type":"read_all","msg_id":1,"max_count":1}}' >"$tmp/one.jsonl"
t0=$(date +%s.%N)
"$NODE" --data-dir "$tmp/data" <"$tmp/one.jsonl" >"$tmp/one_reply.jsonl"
t1=$(date +%s.%N)
reopen_s=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }')
grep -q '"all_read"' "$tmp/one_reply.jsonl" || { log "reopen: no reply"; failed=1; }

latency "cat (echo baseline)" cat
latency "eventstore --workers 1" "$NODE" --workers 1
latency "eventstore (default workers)" "$NODE"

echo
echo "### Throughput: $req_lines $KIND requests ($req_mib MiB), best of $RUNS, $(nproc) CPUs"
echo
echo "| target | msgs/s | wall s | peak RSS MiB | replies | check |"
echo "|---|---:|---:|---:|---:|---|"
printf '%s\n' "${throughput_rows[@]}"
echo
echo "Reopening the durable directory of the last run: first reply after ${reopen_s} s."
echo
echo "### Ping-pong latency: $PINGS round trips, one request in flight (after $WARMUP warm-up)"
echo
echo "| target | p50 µs | p99 µs | mean µs | check |"
echo "|---|---:|---:|---:|---|"
printf '%s\n' "${latency_rows[@]}"
exit "$failed"
