#!/usr/bin/env bash
# REST gateway benchmark, all in one run on this machine (see BENCHMARKS.md): the prototype's 5:3:2 read mix
# over 1,000 seeded users, each request with that user's own token,
#   1. over gRPC (loadgen mix, 100 streams over 4 HTTP/2 connections): the baseline of the same run
#   2. over REST through the in-process gateway (trading-monitor serve --http-listen), wrk: HTTP/1.1 keep-alive,
#      100 connections, 2 threads
#   3. over REST through the standalone gateway (trading-gateway --upstream), wrk as in 2
# After each phase: throughput, latency percentiles and CPU per request of the server (and of the standalone
# gateway), from /proc/<pid>/stat.
#   DURATION=30s scripts/bench-rest.sh
#   SERVER_BIN=/tmp/old/trading-monitor GATEWAY_BIN=/tmp/old/trading-gateway scripts/bench-rest.sh   # another build
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/bench-lib.sh
command -v wrk >/dev/null 2>&1 || { export DEBIAN_FRONTEND=noninteractive; apt-get install -y -q wrk >/dev/null; }
bench_init rest
cargo build --release --quiet -p trading-gateway

duration="${DURATION:-30s}"
users=1000
port=50083 http_port=8083 gateway_port=8084 redis_port=6383 metrics_port=9183
tokens="$(mktemp)"
trap 'rm -f "$tokens"; bench_cleanup' EXIT

start_redis "$redis_port"
serve "${SERVER_BIN:-target/release/trading-monitor}" "$port" --http-listen "127.0.0.1:$http_port" \
  --redis-url "redis://127.0.0.1:$redis_port" --admin-listen "127.0.0.1:$metrics_port"
server_pid=$last_pid
wait_port "$http_port"
RUST_LOG=warn "${GATEWAY_BIN:-target/release/trading-gateway}" --upstream "http://127.0.0.1:$port" \
  --listen "127.0.0.1:$gateway_port" &
gateway_pid=$!
track "$gateway_pid"
wait_port "$gateway_port"

machine
$loadgen --target "http://127.0.0.1:$port" seed --users "$users"
$loadgen --target "http://127.0.0.1:$port" tokens --users "$users" > "$tokens"
# Warm the caches the same way for every phase.
$loadgen --target "http://127.0.0.1:$port" --duration 5s mix --users "$users" --label warm-up > /dev/null

echo "== 1. gRPC (loadgen, 100 streams, 4 connections)"
measured "$server_pid" --target "http://127.0.0.1:$port" --duration "$duration" mix --users "$users" --label "gRPC" \
  --metrics "127.0.0.1:$metrics_port"

run_wrk() { # label port
  local before after gw_before gw_after out requests
  before=$(cpu_ticks "$server_pid"); gw_before=$(cpu_ticks "$gateway_pid")
  out=$(TOKENS="$tokens" wrk -t2 -c100 -d"$duration" --latency -s scripts/wrk-mix.lua "http://127.0.0.1:$2")
  after=$(cpu_ticks "$server_pid"); gw_after=$(cpu_ticks "$gateway_pid")
  echo "$out" | grep -E "Latency|50%|90%|99%|requests in|Requests/sec|Non-2xx|Socket errors"
  requests=$(echo "$out" | sed -n 's/^ *\([0-9][0-9]*\) requests in.*/\1/p')
  per_call server "$before" "$after" "$requests"
  if [[ "$1" == standalone ]]; then per_call gateway "$gw_before" "$gw_after" "$requests"; fi
}
echo "== 2. REST, in-process gateway (wrk, 100 connections, HTTP/1.1 keep-alive)"
run_wrk in-process "$http_port"
echo "== 3. REST, standalone gateway (wrk, 100 connections; gateway -> server over one gRPC channel)"
run_wrk standalone "$gateway_port"
