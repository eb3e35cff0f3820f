#!/usr/bin/env bash
# Watch-stream benchmark (issue 10; see BENCHMARKS.md), in one run on this machine:
#   1. write-to-watcher latency across replicas: 100 users x 1 stream on replica B, writes through replica A
#   2. 1,000 streams (100 users x 10) on B at 50 events/s: delivery latency, B's CPU and memory per stream,
#      PostgreSQL transactions/s
#   3. the same with 100 streams (10 users x 10): PostgreSQL work must not grow with the number of streams
#   4. polling instead: 1,000 dashboards calling GetGuardStatus + GetReconciliationStatus every 2 s, same writes
# Each write is one failed sync (one SYNC_FAILED event) stamped with its send time.
#   DURATION=30s scripts/bench-watch.sh
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/bench-lib.sh
scripts/ensure-services.sh
cargo build --release --quiet --bin trading-monitor --bin loadgen

duration="${DURATION:-30s}"
db="tm_bench_watch_$$"
a_port=50096 b_port=50097 redis_port=6394
secret="bench-secret-0123456789abcdef0123456789"
export TM_JWT_SECRET="$secret"
url="postgres://postgres@127.0.0.1:5432/$db?sslmode=disable"
loadgen=target/release/loadgen
a_pid="" b_pid="" redis_pid=""

cleanup() {
  stop "$a_pid"; stop "$b_pid"; stop "$redis_pid"
  psql -q -h 127.0.0.1 -U postgres -d postgres -c "DROP DATABASE IF EXISTS \"$db\" WITH (FORCE)" || true
}
trap cleanup EXIT

serve() {
  RUST_LOG=warn target/release/trading-monitor serve --listen "127.0.0.1:$1" --database-url "$url" \
    --redis-url "redis://127.0.0.1:$redis_port" --cache-key-prefix "bench-watch" "${@:2}" &
}

psql -q -h 127.0.0.1 -U postgres -d postgres -c "CREATE DATABASE \"$db\""
redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no --daemonize no --loglevel warning &
redis_pid=$!
wait_port "$redis_port"
serve "$a_port"; a_pid=$!
wait_port "$a_port"
serve "$b_port" --skip-migrations; b_pid=$!
wait_port "$b_port"

echo "== machine: $(nproc) cores, $(lscpu | sed -n 's/^Model name: *//p'), $(date -u +%FT%TZ)"
$loadgen --target "http://127.0.0.1:$a_port" seed --users 100

common=(--target "http://127.0.0.1:$b_port" --connections 10 --duration "$duration")
watch=(--writer "http://127.0.0.1:$a_port" --server-pid "$b_pid" --database-url "$url" --events-per-sec 50)
echo "== 1. write on A, watch on B: 100 streams (100 users x 1)"
$loadgen "${common[@]}" watch "${watch[@]}" --users 100 --streams-per-user 1 --label "A->B, 100 x 1"
echo "== 2. 1,000 streams (100 users x 10), 50 events/s"
$loadgen "${common[@]}" watch "${watch[@]}" --users 100 --streams-per-user 10 --label "1000 streams"
echo "== 3. 100 streams (10 users x 10), 50 events/s"
$loadgen "${common[@]}" watch "${watch[@]}" --users 10 --streams-per-user 10 --label "100 streams"
echo "== 4. 1,000 dashboards polling every 2 s instead, 50 events/s"
$loadgen "${common[@]}" watch "${watch[@]}" --users 100 --streams-per-user 10 --poll-every 2s --label "1000 pollers"
