#!/usr/bin/env bash
# Reads on long aggregates (issue "Reads that do not grow with history"):
# one aggregate of N events (N = 2k, 20k, 200k, 2M by default), appended in
# batches of 1,000 (`event_data` like {"balance":i,"k3":i}: ten keys in
# turn), a snapshot taken 100 events before the end; then, one request at a
# time, READS round trips of each read (after one cold read, reported
# separately), median reported:
#   replay; get_state now; get_state at the middle event's time;
#   replay use_snapshot (snapshot 100 events back).
# Also the node's peak RSS after the appends and after the reads.
#
#   scripts/bench_history.sh
#   SIZES="2000 200000" READS=50 NODES="old=/path/eventstore new=target/release/eventstore" scripts/bench_history.sh
set -euo pipefail
cd "$(dirname "$0")/.."

SIZES=${SIZES:-2000 20000 200000 2000000}
READS=${READS:-50}
NODES=${NODES:-new=target/release/eventstore}

if [[ "$NODES" == *target/release/eventstore* ]]; then
    cargo build --release --quiet --bin eventstore >&2
fi

python3 - "$READS" "$SIZES" $NODES <<'EOF'
import json, statistics, subprocess, sys, time

reads = int(sys.argv[1])
sizes = [int(s) for s in sys.argv[2].split()]
nodes = [n.split("=", 1) for n in sys.argv[3:]]

def line(body):
    return (json.dumps({"src": "c", "dest": "n", "body": body}, separators=(",", ":")) + "\n").encode()

def rss(pid):
    with open(f"/proc/{pid}/status") as f:
        for l in f:
            if l.startswith("VmHWM:"):
                return int(l.split()[1]) / 1024
    return 0.0

def run(binary, n):
    p = subprocess.Popen([binary], stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=1 << 20)
    def call(body):
        p.stdin.write(line(body))
        p.stdin.flush()
        reply = p.stdout.readline()
        if not reply:
            raise SystemExit(f"{binary}: no reply")
        return reply
    msg = 0
    def batch(lo, hi):
        nonlocal msg
        events = [{"event_type": "Deposited", "event_data": {"balance": i, f"k{i % 10}": i}}
                  for i in range(lo, hi)]
        msg += 1
        return {"type": "append", "msg_id": msg, "aggregate_id": "acct", "version": "any", "events": events}
    # Pipelined appends (replies read in a thread would be faster; the
    # pipe holds a few replies, so read as we go).
    i = 0
    snap_at = n - 100
    while i < n:
        hi = min(n, i + 1000, snap_at if i < snap_at else n)
        reply = call(batch(i, hi))
        assert b'"appended"' in reply, reply[:200]
        i = hi
        if i == snap_at:
            assert b"snapshot_created" in call({"type": "create_snapshot", "msg_id": 0, "aggregate_id": "acct"})
    rss_appends = rss(p.pid)
    mid = json.loads(call({"type": "read_stream", "msg_id": 0, "aggregate_id": "acct",
                           "from_version": n // 2, "max_count": 1}))["body"]["events"][0]["recorded_at"]
    kinds = {
        "replay": {"type": "replay", "aggregate_id": "acct"},
        "get_state now": {"type": "get_state", "aggregate_id": "acct", "timestamp": "2999-01-01T00:00:00Z"},
        "get_state middle": {"type": "get_state", "aggregate_id": "acct", "timestamp": mid},
        "replay use_snapshot": {"type": "replay", "aggregate_id": "acct", "use_snapshot": True},
    }
    out = {}
    for name, body in kinds.items():
        times = []
        for r in range(reads + 1):
            t0 = time.perf_counter()
            call(body)
            times.append((time.perf_counter() - t0) * 1e6)
        out[name] = (times[0], statistics.median(times[1:]))
    rss_reads = rss(p.pid)
    p.stdin.close()
    p.wait()
    return out, rss_appends, rss_reads

results = {}
for n in sizes:
    for label, binary in nodes:
        out, ra, rr = run(binary, n)
        results[(label, n)] = (out, ra, rr)
        print(f"bench_history: {label} {n} events: " +
              ", ".join(f"{k} cold {c:.0f} µs median {m:.0f} µs" for k, (c, m) in out.items()) +
              f"; RSS appends {ra:.0f} MiB, after reads {rr:.0f} MiB", file=sys.stderr)

kinds = ["replay", "get_state now", "get_state middle", "replay use_snapshot"]
print("| node | events | " + " | ".join(f"{k} µs (median; cold)" for k in kinds) + " | peak RSS MiB appends → reads |")
print("|---|---:|" + "---:|" * len(kinds) + "---:|")
for (label, n), (out, ra, rr) in results.items():
    cells = " | ".join(f"{out[k][1]:.0f} ({out[k][0]:.0f})" for k in kinds)
    print(f"| {label} | {n:,} | {cells} | {ra:.0f} → {rr:.0f} |")
small, large = min(sizes), max(sizes)
for label, _ in nodes:
    if (label, small) in results and (label, large) in results:
        ratios = ", ".join(f"{k} {results[(label, large)][0][k][1] / results[(label, small)][0][k][1]:.1f}×"
                           for k in kinds)
        print(f"\n{label}: median at {large:,} events vs {small:,}: {ratios}")
EOF
