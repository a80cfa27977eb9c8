#!/usr/bin/env bash
# The large-read burst (issue "Valid but hostile"): 10 appends of 1,000
# events of ~1 KB, then READS read_all requests of 10,000 events each sent
# at once. Reports, per node binary: peak RSS (VmHWM at the end, the node
# still running), the time from sending the reads to the first reply line
# and to the last, and whether every reply came out whole.
#
#   scripts/bench_burst.sh                          # target/release/eventstore
#   NODES="old=/path/to/old/eventstore new=target/release/eventstore" ROUNDS=3 scripts/bench_burst.sh
#
# Environment:
#   READS   reads in the burst (default 300: ~3.6 GB of replies)
#   ROUNDS  interleaved rounds per node (default 1); medians reported
#   NODES   label=binary pairs (default new=target/release/eventstore)
#   LIMIT_AS  optional address-space limit for the node, in bytes (as with
#           `ulimit -v`): shows whether the burst fits
# Prints a markdown table on stdout. Exits 1 if a reply was missing.
set -euo pipefail
cd "$(dirname "$0")/.."

READS=${READS:-300}
ROUNDS=${ROUNDS:-1}
NODES=${NODES:-new=target/release/eventstore}
LIMIT_AS=${LIMIT_AS:-}

if [[ "$NODES" == *target/release/eventstore* ]]; then
    cargo build --release --quiet --bin eventstore >&2
fi

python3 - "$READS" "$ROUNDS" "$LIMIT_AS" $NODES <<'EOF'
import json, statistics, subprocess, sys, threading, time

reads, rounds, limit_as = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
nodes = [n.split("=", 1) for n in sys.argv[4:]]
pad = "x" * 1000

def line(body):
    return json.dumps({"src": "client", "dest": "eventstore", "body": body}) + "\n"

def one(binary):
    cmd = [binary]
    if limit_as:
        cmd = ["prlimit", f"--as={limit_as}", "--"] + cmd
    p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, bufsize=1 << 20)
    out = p.stdout
    for b in range(10):
        events = [{"event_type": "Padded", "event_data": {"i": i, "pad": pad}} for i in range(1000)]
        p.stdin.write(line({"type": "append", "msg_id": b, "aggregate_id": f"big-{b}",
                            "version": 0, "events": events}).encode())
        p.stdin.flush()
        if b"appended" not in out.readline():
            raise SystemExit("append failed")
    burst = b"".join(line({"type": "read_all", "msg_id": 100 + r, "max_count": 10000}).encode()
                     for r in range(reads))
    start = time.monotonic()
    def send():
        p.stdin.write(burst)
        p.stdin.flush()
    threading.Thread(target=send, daemon=True).start()
    first = None
    whole = 0
    for r in range(reads):
        reply = out.readline()
        if first is None:
            first = time.monotonic() - start
        if reply.startswith(b'{"src"') and reply.endswith(b',"head":10000}}\n'):
            whole += 1
        elif not reply:
            break
    last = time.monotonic() - start
    rss = 0
    try:
        with open(f"/proc/{p.pid}/status") as f:
            for l in f:
                if l.startswith("VmHWM:"):
                    rss = int(l.split()[1]) * 1024
    except FileNotFoundError:
        pass
    p.stdin.close()
    err = p.stderr.read().decode(errors="replace").strip()
    code = p.wait()
    return first or float("nan"), last, rss, whole, code, err

results = {label: [] for label, _ in nodes}
for r in range(rounds):
    for label, binary in nodes:
        res = one(binary)
        print(f"bench_burst: round {r + 1} {label}: first {res[0]:.3f} s, all {res[1]:.2f} s, "
              f"peak RSS {res[2] / 2**20:.0f} MiB, {res[3]}/{reads} whole replies, exit {res[4]}"
              + (f", stderr: {res[5][:200]}" if res[5] else ""), file=sys.stderr)
        results[label].append(res)

print(f"| node | reads | first reply (s) | all replies (s) | peak RSS (MiB) | whole replies |")
print(f"|---|---:|---:|---:|---:|---:|")
ok = True
for label, _ in nodes:
    rs = results[label]
    med = lambda i: statistics.median(x[i] for x in rs)
    whole = min(x[3] for x in rs)
    ok &= whole == reads
    print(f"| {label} | {reads} | {med(0):.3f} | {med(1):.2f} | {med(2) / 2**20:.0f} | {whole}/{reads} |")
sys.exit(0 if ok else 1)
EOF
