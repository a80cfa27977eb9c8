# Sourced by the JetStream benchmarks (scripts/bench_jetstream*.sh).
#
#   source scripts/nats_cluster.sh
#   bench_setup --example A ...   # needs $PROFILE and log(); finds the server,
#                                 # builds the node and the examples, makes
#                                 # $tmp, kills the servers and removes $tmp
#                                 # on exit, starts the cluster (sets $urls)
#
# or the parts: start_nats_cluster "$server" starts a 3-server nats-server
# cluster on free loopback ports in "$tmp" (the caller's `pids` array and
# cleanup) and waits until every server answers /healthz.
#
# The servers' pids are appended to the caller's `pids` array, their
# logs are "$tmp/n0.log" .. "$tmp/n2.log".

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

start_nats_cluster() {
    local server=$1 i
    local -a client cluster http
    for i in 0 1 2; do client[$i]=$(free_port); cluster[$i]=$(free_port); http[$i]=$(free_port); done
    local routes="\"nats-route://127.0.0.1:${cluster[0]}\", \"nats-route://127.0.0.1:${cluster[1]}\", \"nats-route://127.0.0.1:${cluster[2]}\""
    for i in 0 1 2; do
        cat >"$tmp/n$i.conf" <<CONF
server_name: n$i
listen: 127.0.0.1:${client[$i]}
http: 127.0.0.1:${http[$i]}
jetstream { store_dir: "$tmp/s$i" }
cluster { name: bench, listen: 127.0.0.1:${cluster[$i]}, routes: [$routes] }
CONF
        "$server" -c "$tmp/n$i.conf" >"$tmp/n$i.log" 2>&1 &
        pids+=($!)
    done
    urls="nats://127.0.0.1:${client[0]},nats://127.0.0.1:${client[1]},nats://127.0.0.1:${client[2]}"
    for i in 0 1 2; do
        for _ in $(seq 1 300); do
            if curl -fs "http://127.0.0.1:${http[$i]}/healthz" >/dev/null 2>&1 \
                || python3 -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:${http[$i]}/healthz')" 2>/dev/null; then
                break
            fi
            sleep 0.1
        done
    done
}

bench_setup() {
    server=$(bash scripts/nats-server.sh)
    log "nats-server: $server ($("$server" --version))"
    local flag=(--release)
    [ "$PROFILE" = release ] || flag=(--profile "$PROFILE")
    [ "$PROFILE" = debug ] && flag=()
    cargo build "${flag[@]}" --quiet --bin eventstore "$@" >&2
    tmp=$(mktemp -d)
    pids=()
    trap bench_cleanup EXIT
    start_nats_cluster "$server"
}

bench_cleanup() {
    for pid in "${pids[@]}"; do { kill -9 "$pid"; wait "$pid"; } 2>/dev/null || true; done
    rm -rf "$tmp"
}
