#!/usr/bin/env bash
# Reads through a JetStream front end against the embedded node, holding the
# same events (issue target: "reads from a front end's view: the same speed
# as the embedded node").
#
#   scripts/bench_jetstream_reads.sh
#   RUNS=5 scripts/bench_jetstream_reads.sh
#   SEED=20000 READS=20000 PINGS=500 RUNS=1 scripts/bench_jetstream_reads.sh   # quick
#
# Environment:
#   SEED      seed requests (examples/workload.rs, kind seed: 97% appends
#             over 10,000 aggregates, 3% snapshots; default 100000)
#   READS     read_stream and replay requests per timed phase (default 200000)
#   READ_ALLS read_all requests (pages of 1..=100 events; default 20000)
#   PINGS     measured ping-pong read_stream round trips (default 2000, plus
#             200 warm-up)
#   REPLICAS  stream replicas (default 3)
#   RUNS      interleaved rounds (default 3)
#   PROFILE   cargo profile (default release)
#
# How it measures. A 3-server cluster is started in a temporary directory
# (scripts/nats_cluster.sh). The seed is piped once through one front end
# into the stream `bench_reads` (its rate is printed, not the subject
# here). Then, per round, two processes, each driven by
# examples/drive.rs, in alternating order (embedded first in odd rounds,
# the front end first in even ones):
#
#   embedded:  `eventstore`; untimed phase: the seed file; then the timed
#              phases.
#   front end: a fresh `eventstore --nats URLS --nats-stream bench_reads`
#              (nothing writes the stream any more); untimed phase: one
#              `read_all` with max_count 0, answered once the front end
#              connected and its view caught up with the whole stream
#              (connect waits for that); then the same timed phases.
#
# Timed phases, the same request files for both: READS `read_stream`
# (a random aggregate from a random version, max_count 1..=100), READS
# `replay` (half with use_snapshot), READ_ALLS `read_all` pages, each piped
# at once, timed from the first byte written to the last reply read (the
# catch-up is not in it: it ended with the untimed phase's reply); then
# PINGS ping-pong `read_stream`s, one in flight. Each timed phase also
# reports the CPU time the node's threads used in it (drive reads
# /proc/PID/task/*/schedstat), which other load on the machine disturbs less
# than wall time.
#
# Checks (any failure exits 1): every request gets one reply, in order
# (in_reply_to), none an error; and per phase every run of both targets
# returns the same events (count) and the same replies up to event ids and
# timestamps (drive's digest), so both really serve the same data.
# Prints a markdown table on stdout; progress on stderr.
set -euo pipefail
cd "$(dirname "$0")/.."

SEED=${SEED:-100000}
READS=${READS:-200000}
READ_ALLS=${READ_ALLS:-20000}
PINGS=${PINGS:-2000}
REPLICAS=${REPLICAS:-3}
PROFILE=${PROFILE:-release}
RUNS=${RUNS:-3}
bin="${CARGO_TARGET_DIR:-target}/$PROFILE"
log() { echo "bench_jetstream_reads: $*" >&2; }

source scripts/nats_cluster.sh
bench_setup --example workload --example drive
log "cluster ready: $urls"

$bin/examples/workload --kind seed --requests "$SEED" --seed 1 >"$tmp/seed.jsonl"
$bin/examples/workload --kind read_stream --after-seed "$SEED" --requests "$READS" --seed 1 >"$tmp/read_stream.jsonl"
$bin/examples/workload --kind replay --after-seed "$SEED" --requests "$READS" --seed 1 >"$tmp/replay.jsonl"
$bin/examples/workload --kind read_all --after-seed "$SEED" --requests "$READ_ALLS" --seed 1 >"$tmp/read_all.jsonl"
echo '{"src":"client","dest":"eventstore","body":{"type":"read_all","msg_id":1,"max_count":0}}' >"$tmp/probe.jsonl"
stream=bench_reads
front=($bin/eventstore --nats "$urls" --nats-stream "$stream" --nats-replicas "$REPLICAS")
embedded=($bin/eventstore)

log "seeding the stream: $SEED seed requests through one front end"
start=$(date +%s.%N)
"${front[@]}" <"$tmp/seed.jsonl" >"$tmp/seed_replies.jsonl" 2>"$tmp/seed_err.txt"
end=$(date +%s.%N)
replies=$(wc -l <"$tmp/seed_replies.jsonl")
errors=$(grep -c '"type":"error"\|"type":"concurrency_error"' "$tmp/seed_replies.jsonl" || true)
[ "$replies" -eq "$SEED" ] && [ "$errors" -eq 0 ] || { log "seeding failed: $replies replies of $SEED, $errors errors"; exit 1; }
seed_rate=$(python3 -c "print(int($SEED / ($end - $start)))")
log "  seeded at $seed_rate msgs/s"

phases=(--timed "read_stream=$tmp/read_stream.jsonl" --timed "replay=$tmp/replay.jsonl"
    --timed "read_all=$tmp/read_all.jsonl" --pingpong "pingpong=$tmp/read_stream.jsonl:200:$PINGS")
run_target() { # run_target NAME ROUND: one drive run, its output in $tmp/NAME.ROUND
    local name=$1 round=$2 first
    if [ "$name" = embedded ]; then
        first=(--untimed "$tmp/seed.jsonl"); cmd=("${embedded[@]}")
    else
        first=(--untimed "$tmp/probe.jsonl"); cmd=("${front[@]}")
    fi
    log "  $name (load: $(cut -d' ' -f1-3 /proc/loadavg))"
    if ! $bin/examples/drive "${first[@]}" "${phases[@]}" -- "${cmd[@]}" >"$tmp/$name.$round" 2>"$tmp/$name.$round.err"; then
        log "$name failed in round $round:"; cat "$tmp/$name.$round.err" >&2; exit 1
    fi
    sed 's/^/    /' "$tmp/$name.$round" >&2
}
load_start=$(cut -d' ' -f1-3 /proc/loadavg)
for round in $(seq 1 "$RUNS"); do
    log "round $round/$RUNS"
    if [ $((round % 2)) -eq 1 ]; then order=(embedded front); else order=(front embedded); fi
    for name in "${order[@]}"; do run_target "$name" "$round"; done
done
load_end=$(cut -d' ' -f1-3 /proc/loadavg)

# The table: per measure, best / median of each target, and the front end /
# embedded ratio (time or latency; 1.00 = the same speed) of the bests and
# the median of the per-round ratios.
python3 - "$tmp" "$RUNS" "$SEED" "$READS" "$READ_ALLS" "$PINGS" "$seed_rate" "$load_start" "$load_end" <<'PY'
import statistics, sys
tmp, runs, seed, reads, read_alls, pings, seed_rate, load_start, load_end = sys.argv[1:]
runs = int(runs)
def parse(path):
    out = {}
    for line in open(path):
        f = dict(kv.split("=", 1) for kv in line.split())
        out[f.pop("phase")] = f
    return out
res = {t: [parse(f"{tmp}/{t}.{r}") for r in range(1, runs + 1)] for t in ("embedded", "front")}
ok = True
for phase in ("read_stream", "replay", "read_all", "pingpong"):
    seen = {(r[phase]["events"], r[phase]["digest"]) for t in res for r in res[t]}
    if len(seen) != 1:
        ok = False
        print(f"MISMATCH in {phase}: {seen}", file=sys.stderr)
rows = [
    ("read_stream", "seconds", f"{int(reads):,} `read_stream`, piped", "msgs/s"),
    ("replay", "seconds", f"{int(reads):,} `replay` (half use_snapshot), piped", "msgs/s"),
    ("read_all", "seconds", f"{int(read_alls):,} `read_all` pages (1..100 events), piped", "msgs/s"),
    ("pingpong", "p50_us", "ping-pong `read_stream`, p50", "µs"),
    ("pingpong", "p99_us", "ping-pong `read_stream`, p99", "µs"),
]
n = {"read_stream": int(reads), "replay": int(reads), "read_all": int(read_alls)}
print(f"Seed: {int(seed):,} requests ({res['embedded'][0]['read_all']['events']} events returned by the read_all phase); "
      f"seeded through one front end at {int(seed_rate):,} msgs/s. Load average {load_start} at the start, {load_end} at the end.")
print()
print(f"| measure (best / median of {runs} interleaved rounds) | embedded | front end | front end / embedded, best (median of rounds) |")
print("|---|---:|---:|---:|")
for phase, key, label, unit in rows:
    e = [float(r[phase][key]) for r in res["embedded"]]
    f = [float(r[phase][key]) for r in res["front"]]
    ratio_best = min(f) / min(e)
    ratio_med = statistics.median(b / a for a, b in zip(e, f))
    if unit == "msgs/s":
        show = lambda v: f"{n[phase] / min(v):,.0f} / {n[phase] / statistics.median(v):,.0f} msgs/s"
        label += " (time ratio)"
    else:
        show = lambda v: f"{min(v):.1f} / {statistics.median(v):.1f} µs"
    print(f"| {label} | {show(e)} | {show(f)} | {ratio_best:.2f} ({ratio_med:.2f}) |")
    if unit == "msgs/s":
        e = [float(r[phase]["cpu_s"]) for r in res["embedded"]]
        f = [float(r[phase]["cpu_s"]) for r in res["front"]]
        ratio_best = min(f) / min(e)
        ratio_med = statistics.median(b / a for a, b in zip(e, f))
        print(f"| … its CPU seconds (the node's threads, /proc) | {min(e):.3f} / {statistics.median(e):.3f} s "
              f"| {min(f):.3f} / {statistics.median(f):.3f} s | {ratio_best:.2f} ({ratio_med:.2f}) |")
ready = [float(r["ready"]["seconds"]) for r in res["front"]]
print()
print(f"Front end start to caught up (connect + catch-up of the stream, not in the timings above): "
      f"best {min(ready):.2f} s, median {statistics.median(ready):.2f} s.")
print(f"Replies: every count, order and error check passed; same events and digests on both: {'yes' if ok else 'NO'}.")
sys.exit(0 if ok else 1)
PY
