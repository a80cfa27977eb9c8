#!/usr/bin/env bash
# JetStream benchmark: the node on a 3-server loopback cluster (replicas 3).
#
#   scripts/bench_jetstream.sh                    # 100,000 seed requests
#   REQUESTS=20000 PINGS=1000 scripts/bench_jetstream.sh
#
# Environment:
#   REQUESTS  seed requests piped through one front end (default 100000)
#   PINGS     measured ping-pong round trips (default 2000, plus 200 warm-up)
#   REPLICAS  stream replicas (default 3)
#   RUNS      interleaved rounds (default 3): each runs the throughput, the
#             ping-pong and the floor once; the table shows best / median
#   PROFILE   cargo profile to build and run (default release; debug for a
#             quick check of the script itself)
#   WINDOW    publishes in flight for the cluster's capacity (default 1024,
#             the front end's window)
#
# Throughput: the whole request file (examples/workload.rs, kind seed) is
# piped into one `eventstore --nats` front end; msgs/s = requests / wall
# time. The reply count must equal the request count and no reply may be an
# error. The front end's CPU (user + system, /usr/bin/time) and the three
# servers' (/proc/PID/stat) are reported per message. The cluster's
# capacity: the same number of bare publishes with the front end's headers,
# WINDOW in flight from one task (examples/jetstream_publish.rs
# --in-flight). Latency: examples/pingpong.rs through the front end (one append at
# a time, each answered after the stream's quorum ack), against
# examples/jetstream_publish.rs: bare publishes awaiting their ack, the
# floor. The cluster is started in a temporary directory and stopped at the
# end. Prints a markdown table on stdout; progress on stderr.
set -euo pipefail
cd "$(dirname "$0")/.."

REQUESTS=${REQUESTS:-100000}
PINGS=${PINGS:-2000}
REPLICAS=${REPLICAS:-3}
PROFILE=${PROFILE:-release}
RUNS=${RUNS:-3}
bin="${CARGO_TARGET_DIR:-target}/$PROFILE"
log() { echo "bench_jetstream: $*" >&2; }

source scripts/nats_cluster.sh
bench_setup --example workload --example pingpong --example jetstream_publish
log "cluster ready: $urls"

$bin/examples/workload --kind seed --requests "$REQUESTS" --seed 1 >"$tmp/requests.jsonl"
node=($bin/eventstore --nats "$urls" --nats-replicas "$REPLICAS")

field() { echo "$1" | tr ' ' '\n' | sed -n "s/^$2=//p"; }
ok=yes
rates=(); pp50=(); pp99=(); fl50=(); fl99=(); node_us=(); server_us=(); caps=()
WINDOW=${WINDOW:-1024}
# CPU ticks (user + system) the cluster's servers used so far.
servers_cpu() {
    local t=0 pid f
    for pid in "${pids[@]}"; do
        read -r -a f < <(cut -d')' -f2 "/proc/$pid/stat")
        t=$((t + f[11] + f[12]))
    done
    echo "$t"
}
for round in $(seq 1 "$RUNS"); do
    log "round $round/$RUNS (load: $(cut -d' ' -f1-3 /proc/loadavg)): throughput, $REQUESTS seed requests through one front end"
    servers_before=$(servers_cpu)
    start=$(date +%s.%N)
    /usr/bin/time -f "%U %S" -o "$tmp/node_cpu.txt" \
        "${node[@]}" --nats-stream "bench_tp$round" <"$tmp/requests.jsonl" >"$tmp/replies.jsonl" 2>"$tmp/node_err.txt"
    end=$(date +%s.%N)
    servers_after=$(servers_cpu)
    read -r node_user node_sys <"$tmp/node_cpu.txt"
    node_us+=("$(python3 -c "print(round(($node_user + $node_sys) * 1e6 / $REQUESTS, 1))")")
    server_us+=("$(python3 -c "print(round(($servers_after - $servers_before) * 1e6 / $(getconf CLK_TCK) / $REQUESTS, 1))")")
    replies=$(wc -l <"$tmp/replies.jsonl")
    errors=$(grep -c '"type":"error"\|"type":"concurrency_error"' "$tmp/replies.jsonl" || true)
    rate=$(python3 -c "print(int($REQUESTS / ($end - $start)))")
    log "  $rate msgs/s"
    rates+=("$rate")
    [ "$replies" -eq "$REQUESTS" ] || { ok=no; log "replies: $replies of $REQUESTS"; }
    [ "$errors" -eq 0 ] || { ok=no; log "$errors error replies"; }

    log "  ping-pong through the front end"
    pp=$($bin/examples/pingpong --input "$tmp/requests.jsonl" --requests "$PINGS" --warmup 200 -- "${node[@]}" --nats-stream "bench_pp$round")
    pp50+=("$(field "$pp" p50_us)"); pp99+=("$(field "$pp" p99_us)")
    log "  bare pipelined publishes ($WINDOW in flight): the cluster's capacity"
    cap=$($bin/examples/jetstream_publish "$urls" --requests "$REQUESTS" --replicas "$REPLICAS" --in-flight "$WINDOW")
    caps+=("$(field "$cap" msgs_per_s)")
    log "  bare publishes (the floor)"
    floor=$($bin/examples/jetstream_publish "$urls" --requests "$PINGS" --replicas "$REPLICAS")
    fl50+=("$(field "$floor" p50_us)"); fl99+=("$(field "$floor" p99_us)")
done
stat() { python3 -c "import statistics,sys; v=sorted(float(x) for x in sys.argv[2:]); print(f'{(max(v) if sys.argv[1]==\"best_high\" else min(v)):.0f} / {statistics.median(v):.0f}')" "$@"; }
echo "| measure (replicas $REPLICAS, 2 cores, cluster on this machine; best / median of $RUNS interleaved rounds) | value |"
echo "|---|---|"
echo "| $REQUESTS seed requests, one front end, msgs/s | $(stat best_high "${rates[@]}") (replies ok: $ok) |"
echo "| … front end CPU per message, µs (user + sys) | $(stat best_low "${node_us[@]}") |"
echo "| … the three servers' CPU per message, µs | $(stat best_low "${server_us[@]}") |"
echo "| $REQUESTS bare publishes, $WINDOW in flight, one task (the cluster's capacity), msgs/s | $(stat best_high "${caps[@]}") |"
echo "| ping-pong append through the front end, p50 µs | $(stat best_low "${pp50[@]}") |"
echo "| ping-pong append through the front end, p99 µs | $(stat best_low "${pp99[@]}") |"
echo "| bare JetStream publish + ack, p50 µs (floor) | $(stat best_low "${fl50[@]}") |"
echo "| bare JetStream publish + ack, p99 µs (floor) | $(stat best_low "${fl99[@]}") |"
[ "$ok" = yes ]
