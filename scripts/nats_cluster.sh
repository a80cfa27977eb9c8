# Sourced by the JetStream benchmarks (scripts/bench_jetstream*.sh): starts
# a 3-server nats-server cluster on free loopback ports in "$tmp" and waits
# until every server answers /healthz.
#
#   tmp=$(mktemp -d); pids=()
#   trap cleanup EXIT    # kill "${pids[@]}", rm -rf "$tmp"
#   source scripts/nats_cluster.sh
#   start_nats_cluster "$server"     # sets $urls (comma-separated)
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
