#!/usr/bin/env bash
# A local Redis Cluster for benchmarks: three primaries and three replicas on loopback ports BASE..BASE+5
# (cluster bus ports BASE+100..BASE+105), nothing persisted, files under /tmp/tm-redis-cluster-BASE.
#   scripts/redis-cluster.sh start 7101     # starts it, waits until healthy, prints the URL for --redis-url
#   scripts/redis-cluster.sh stop 7101      # stops exactly the processes it started (by PID) and cleans up
# (The integration test starts its own cluster on free ports: tests/ops/cluster.rs.)
set -euo pipefail
action="${1:?start or stop}"
base="${2:-7101}"
dir="/tmp/tm-redis-cluster-$base"

case "$action" in
  start)
    mkdir -p "$dir"
    : > "$dir/pids"
    addresses=()
    for i in 0 1 2 3 4 5; do
      port=$((base + i))
      redis-server --port "$port" --bind 127.0.0.1 --cluster-enabled yes --cluster-port $((base + 100 + i)) \
        --cluster-config-file "nodes-$port.conf" --cluster-node-timeout 1000 --repl-diskless-sync-delay 0 \
        --save "" --appendonly no --dir "$dir" --daemonize no --loglevel warning >/dev/null 2>&1 &
      echo $! >> "$dir/pids"
      addresses+=("127.0.0.1:$port")
    done
    for i in 0 1 2 3 4 5; do
      for _ in $(seq 1 100); do redis-cli -p $((base + i)) ping 2>/dev/null | grep -q PONG && break; sleep 0.05; done
    done
    redis-cli --cluster create "${addresses[@]}" --cluster-replicas 1 --cluster-yes >/dev/null
    for _ in $(seq 1 100); do
      healthy=1
      for i in 0 1 2 3 4 5; do
        redis-cli -p $((base + i)) cluster info | grep -q cluster_state:ok || healthy=0
      done
      [[ $healthy == 1 ]] && break
      sleep 0.1
    done
    [[ $healthy == 1 ]] || { echo "error: the cluster did not become healthy" >&2; exit 1; }
    echo "redis-cluster://127.0.0.1:$base?node=127.0.0.1:$((base + 1))&node=127.0.0.1:$((base + 2))"
    ;;
  stop)
    if [[ -f "$dir/pids" ]]; then
      while read -r pid; do kill "$pid" 2>/dev/null || true; done < "$dir/pids"
      while read -r pid; do while kill -0 "$pid" 2>/dev/null; do sleep 0.05; done; done < "$dir/pids"
    fi
    rm -rf "$dir"
    ;;
  *)
    echo "usage: $0 start|stop [base port]" >&2
    exit 2
    ;;
esac
