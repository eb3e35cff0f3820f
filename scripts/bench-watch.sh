#!/usr/bin/env bash
# Watch-stream benchmark (issue 10; see BENCHMARKS.md), in one run on this machine:
#   1. write-to-watcher latency across replicas: 100 users x 1 stream on replica B, writes through replica A
#   2. 1,000 streams (100 users x 10) on B at 50 events/s: delivery latency, B's CPU and memory per stream,
#      PostgreSQL transactions/s
#   3. the same with 100 streams (10 users x 10): PostgreSQL work must not grow with the number of streams
#   4. polling instead: 1,000 dashboards calling GetGuardStatus + GetReconciliationStatus every 2 s, same writes
# Each write is one failed sync (one SYNC_FAILED event) stamped with its send time.
#   DURATION=30s scripts/bench-watch.sh
#   SERVER_BIN=path/to/another/trading-monitor scripts/bench-watch.sh     # the same load against another build
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/bench-lib.sh
bench_init watch

duration="${DURATION:-30s}"
a_port=50096 b_port=50097 redis_port=6394
start_redis "$redis_port"
redis=(--redis-url "redis://127.0.0.1:$redis_port" --cache-key-prefix bench-watch)
serve "${SERVER_BIN:-target/release/trading-monitor}" "$a_port" "${redis[@]}"
serve "${SERVER_BIN:-target/release/trading-monitor}" "$b_port" "${redis[@]}" --skip-migrations
b_pid=$last_pid

machine
$loadgen --target "http://127.0.0.1:$a_port" seed --users 100

common=(--target "http://127.0.0.1:$b_port" --connections 10 --duration "$duration")
watch=(--writer "http://127.0.0.1:$a_port" --server-pid "$b_pid" --database-url "$db_url" --events-per-sec 50)
echo "== 1. write on A, watch on B: 100 streams (100 users x 1)"
$loadgen "${common[@]}" watch "${watch[@]}" --users 100 --streams-per-user 1 --label "A->B, 100 x 1"
echo "== 2. 1,000 streams (100 users x 10), 50 events/s"
$loadgen "${common[@]}" watch "${watch[@]}" --users 100 --streams-per-user 10 --label "1000 streams"
echo "== 3. 100 streams (10 users x 10), 50 events/s"
$loadgen "${common[@]}" watch "${watch[@]}" --users 10 --streams-per-user 10 --label "100 streams"
echo "== 4. 1,000 dashboards polling every 2 s instead, 50 events/s"
$loadgen "${common[@]}" watch "${watch[@]}" --users 100 --streams-per-user 10 --poll-every 2s --label "1000 pollers"
