#!/usr/bin/env bash
# Read benchmark of the cache layer, all in one run on this machine (see BENCHMARKS.md):
#   1. a bare tonic echo server (same services, canned payloads captured from the real server) under the mix
#   2. the real server, cached (Redis + L1), same mix: ratio to (1), cache hit rate, PostgreSQL loads
#   3. a stampede: 1,000 concurrent requests for one cold key
#   4. the cached mix again, with Redis killed half-way through
#   5. the uncached path (--cache-disabled) with 1,000,000 events in the log
# 1,000 users with demo-like data, 100 concurrent streams over 4 HTTP/2 connections, the 5:3:2 mix.
#   DURATION=30s scripts/bench-reads.sh
#   SERVER_ARGS="--cache-l1-ttl 1s" scripts/bench-reads.sh     # extra flags for the server under test
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/ensure-services.sh
cargo build --release --quiet --bin trading-monitor --bin loadgen

duration="${DURATION:-30s}"
users=1000
db="tm_bench_reads_$$"
port=50093 metrics_port=9193 redis_port=6393 echo_port=50094
secret="bench-secret-0123456789abcdef0123456789"
export TM_JWT_SECRET="$secret"
target="http://127.0.0.1:$port"
loadgen=target/release/loadgen
server_pid="" echo_pid="" redis_pid=""

wait_port() { for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done; return 1; }
stop() { if [[ -n "${1:-}" ]]; then kill "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; fi; }
cleanup() {
  stop "$server_pid"; stop "$echo_pid"; stop "$redis_pid"
  psql -q -h 127.0.0.1 -U postgres -d postgres -c "DROP DATABASE IF EXISTS \"$db\" WITH (FORCE)" || true
}
trap cleanup EXIT

start_server() {
  RUST_LOG=warn target/release/trading-monitor serve --listen "127.0.0.1:$port" \
    --database-url "postgres://postgres@127.0.0.1:5432/$db?sslmode=disable" \
    --redis-url "redis://127.0.0.1:$redis_port" --metrics-listen "127.0.0.1:$metrics_port" ${SERVER_ARGS:-} "$@" &
  server_pid=$!
  wait_port "$port"; wait_port "$metrics_port"
}

psql -q -h 127.0.0.1 -U postgres -d postgres -c "CREATE DATABASE \"$db\""
redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no --daemonize no --loglevel warning &
redis_pid=$!
wait_port "$redis_port"
start_server

echo "== machine: $(nproc) cores, $(lscpu | sed -n 's/^Model name: *//p'), $(date -u +%FT%TZ)"
$loadgen --target "$target" seed --users "$users"

echo "== 1. baseline: bare tonic echo server"
$loadgen --target "$target" echo-server --listen "127.0.0.1:$echo_port" --users "$users" &
echo_pid=$!
wait_port "$echo_port"
$loadgen --target "http://127.0.0.1:$echo_port" --duration "$duration" mix --users "$users" --label "bare echo"
stop "$echo_pid"; echo_pid=""

echo "== 2. cached"
$loadgen --target "$target" --duration "$duration" mix --users "$users" --metrics "127.0.0.1:$metrics_port" --label cached

echo "== 3. stampede"
$loadgen --target "$target" stampede --users "$users" --requests 1000 --metrics "127.0.0.1:$metrics_port"

echo "== 4. cached, Redis killed half-way"
seconds="${duration%s}"
( sleep "$((seconds / 2))"; kill "$redis_pid"; echo "   (redis killed)" ) &
killer=$!
$loadgen --target "$target" --duration "$duration" mix --users "$users" --metrics "127.0.0.1:$metrics_port" \
  --label "cached, redis killed at $((seconds / 2)) s"
wait "$killer" || true
wait "$redis_pid" 2>/dev/null || true
redis_pid=""

echo "== 5. uncached, 1,000,000 events"
psql -q -h 127.0.0.1 -U postgres -d "$db" -c "
  INSERT INTO events (user_id, event_type, occurred_at, message)
  SELECT ('be0c0000-0000-4000-8000-' || lpad(to_hex(g % $users), 12, '0'))::uuid, 'sync_completed',
         now() - make_interval(secs => g * 0.01), 'benchmark history'
  FROM generate_series(1, 1000000) g;
  ANALYZE events;"
stop "$server_pid"
start_server --cache-disabled
$loadgen --target "$target" --duration "$duration" mix --users "$users" --metrics "127.0.0.1:$metrics_port" \
  --label "uncached, 1M events"
