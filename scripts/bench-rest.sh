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
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/bench-lib.sh
scripts/ensure-services.sh
command -v wrk >/dev/null 2>&1 || { export DEBIAN_FRONTEND=noninteractive; apt-get install -y -q wrk >/dev/null; }
cargo build --release --quiet --bin trading-monitor --bin loadgen -p trading-monitor
cargo build --release --quiet -p trading-gateway

duration="${DURATION:-30s}"
users=1000
db="tm_bench_rest_$$"
port=50083 http_port=8083 gateway_port=8084 redis_port=6383 metrics_port=9183
secret="bench-secret-0123456789abcdef0123456789"
export TM_JWT_SECRET="$secret"
loadgen=target/release/loadgen
tokens="$(mktemp)"
server_pid="" gateway_pid="" redis_pid=""
hz=$(getconf CLK_TCK)

cleanup() {
  stop "$gateway_pid"; stop "$server_pid"; stop "$redis_pid"
  rm -f "$tokens"
  psql -q -h 127.0.0.1 -U postgres -d postgres -c "DROP DATABASE IF EXISTS \"$db\" WITH (FORCE)" || true
}
trap cleanup EXIT
per_request() { # pid-label ticks-before ticks-after requests
  echo "  $1 CPU  $(( ($3 - $2) * 1000000 / hz / $4 )) us per request"
}

psql -q -h 127.0.0.1 -U postgres -d postgres -c "CREATE DATABASE \"$db\""
redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no --daemonize no --loglevel warning &
redis_pid=$!
wait_port "$redis_port"
RUST_LOG=warn target/release/trading-monitor serve --listen "127.0.0.1:$port" --http-listen "127.0.0.1:$http_port" \
  --database-url "postgres://postgres@127.0.0.1:5432/$db?sslmode=disable" --redis-url "redis://127.0.0.1:$redis_port" \
  --admin-listen "127.0.0.1:$metrics_port" &
server_pid=$!
wait_port "$port"; wait_port "$http_port"
RUST_LOG=warn target/release/trading-gateway --upstream "http://127.0.0.1:$port" --listen "127.0.0.1:$gateway_port" &
gateway_pid=$!
wait_port "$gateway_port"

echo "== machine: $(nproc) cores, $(lscpu | sed -n 's/^Model name: *//p'), $(date -u +%FT%TZ)"
$loadgen --target "http://127.0.0.1:$port" seed --users "$users"
$loadgen --target "http://127.0.0.1:$port" tokens --users "$users" > "$tokens"
# Warm the caches the same way for every phase.
$loadgen --target "http://127.0.0.1:$port" --duration 5s mix --users "$users" --label warm-up > /dev/null

echo "== 1. gRPC (loadgen, 100 streams, 4 connections)"
before=$(cpu_ticks "$server_pid")
out=$($loadgen --target "http://127.0.0.1:$port" --duration "$duration" mix --users "$users" --label "gRPC" \
  --metrics "127.0.0.1:$metrics_port")
after=$(cpu_ticks "$server_pid")
echo "$out"
requests=$(echo "$out" | sed -n 's/.*: \([0-9][0-9]*\) ok,.*/\1/p' | head -n 1)
per_request server "$before" "$after" "$requests"

run_wrk() { # label port
  local before after gw_before gw_after out requests
  before=$(cpu_ticks "$server_pid"); gw_before=$(cpu_ticks "$gateway_pid")
  out=$(TOKENS="$tokens" wrk -t2 -c100 -d"$duration" --latency -s scripts/wrk-mix.lua "http://127.0.0.1:$2")
  after=$(cpu_ticks "$server_pid"); gw_after=$(cpu_ticks "$gateway_pid")
  echo "$out" | grep -E "Latency|50%|90%|99%|requests in|Requests/sec|Non-2xx|Socket errors"
  requests=$(echo "$out" | sed -n 's/^ *\([0-9][0-9]*\) requests in.*/\1/p')
  per_request server "$before" "$after" "$requests"
  if [[ "$1" == standalone ]]; then per_request gateway "$gw_before" "$gw_after" "$requests"; fi
}
echo "== 2. REST, in-process gateway (wrk, 100 connections, HTTP/1.1 keep-alive)"
run_wrk in-process "$http_port"
echo "== 3. REST, standalone gateway (wrk, 100 connections; gateway -> server over one gRPC channel)"
run_wrk standalone "$gateway_port"
