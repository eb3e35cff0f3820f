#!/usr/bin/env bash
# Read benchmark of the cache layer, all in one run on this machine (see BENCHMARKS.md):
#   1. a bare tonic echo server (same services, canned payloads captured from the real server) under the mix
#   2. the real server, cached (Redis + L1), reads only: ratio to (1), cache hit rate, PostgreSQL loads
#   3. cached, with a live market: 5 quote batches/s and every user re-synced every 10 s (100 syncs/s)
#   4. the same with 50 quote batches/s
#   5. a stampede: 1,000 concurrent requests for one cold key
#   6. cross-replica invalidation latency: a second replica on the same database and Redis
#   7. the cached mix, with Redis killed half-way through
#   8. the uncached path (--cache-disabled) with 1,000,000 events in the log
#   9. the cached mix against a local Redis Cluster (3 primaries + 3 replicas), reads only
# 1,000 users with demo-like data, 100 concurrent streams over 4 HTTP/2 connections, the 5:3:2 mix. After each
# phase: the server's CPU time per request, from /proc/<pid>/stat (utime + stime) before and after.
#   DURATION=30s scripts/bench-reads.sh
#   SERVER_ARGS="--cache-l1-ttl 1s" scripts/bench-reads.sh     # extra flags for the server under test
#   BASELINE_BIN=/tmp/trading-monitor-old scripts/bench-reads.sh  # also run phase 8 against another build, on a
#                                                                 # database of its own seeded the same way
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/bench-lib.sh
bench_init reads

duration="${DURATION:-30s}"
users=1000
port=50093 metrics_port=9193 redis_port=6393 echo_port=50094 replica_port=50095 cluster_base=7191
target="http://127.0.0.1:$port"
server_pid="" cluster=""
trap 'if [[ -n "$cluster" ]]; then scripts/redis-cluster.sh stop "$cluster_base"; fi; bench_cleanup' EXIT

# start_server REDIS-URL [serve flags...]: the server under test (replacing the previous one).
start_server() {
  local redis_url="$1"; shift
  stop "$server_pid"
  serve target/release/trading-monitor "$port" --redis-url "$redis_url" --admin-listen "127.0.0.1:$metrics_port" \
    ${SERVER_ARGS:-} "$@"
  server_pid=$last_pid
  wait_port "$metrics_port"
}

start_redis "$redis_port"
redis_pid=$last_pid
start_server "redis://127.0.0.1:$redis_port"

machine
$loadgen --target "$target" seed --users "$users"

echo "== 1. baseline: bare tonic echo server"
$loadgen --target "$target" echo-server --listen "127.0.0.1:$echo_port" --users "$users" &
echo_pid=$!
track "$echo_pid"
wait_port "$echo_port"
measured "$echo_pid" --target "http://127.0.0.1:$echo_port" --duration "$duration" mix --users "$users" --label "bare echo"
stop "$echo_pid"; echo_pid=""

mix() { measured "$server_pid" --target "$target" --duration "$duration" mix --users "$users" --metrics "127.0.0.1:$metrics_port" "$@"; }

echo "== 2. cached, reads only"
mix --label "cached, reads only"

echo "== 3. cached, live market: 5 quote batches/s, 100 syncs/s"
mix --label "cached, 5 quote batches/s + 100 syncs/s" --quotes-per-sec 5 --syncs-per-sec 100

echo "== 4. cached, live market: 50 quote batches/s, 100 syncs/s"
mix --label "cached, 50 quote batches/s + 100 syncs/s" --quotes-per-sec 50 --syncs-per-sec 100

echo "== 5. stampede"
$loadgen --target "$target" stampede --users "$users" --requests 1000 --metrics "127.0.0.1:$metrics_port"

echo "== 6. cross-replica invalidation latency"
serve target/release/trading-monitor "$replica_port" --skip-migrations --redis-url "redis://127.0.0.1:$redis_port" \
  ${SERVER_ARGS:-}
replica_pid=$last_pid
sleep 2 # both replicas hear the invalidation channel
$loadgen --target "http://127.0.0.1:$replica_port" replica-latency --reader "$target" --users "$users" --samples 500
stop "$replica_pid"; replica_pid=""

echo "== 7. cached, Redis killed half-way"
seconds="${duration%s}"
( sleep "$((seconds / 2))"; kill "$redis_pid"; echo "   (redis killed)" ) &
killer=$!
mix --label "cached, redis killed at $((seconds / 2)) s"
wait "$killer" || true
wait "$redis_pid" 2>/dev/null || true
redis_pid=""

# A million events of history, vacuumed and checkpointed so the phase measures reads, not the bulk load's
# aftermath (autovacuum and a checkpoint would otherwise land in the middle of it).
add_history() {
  psql -q -h 127.0.0.1 -U postgres -d "$1" -c "
    INSERT INTO events (user_id, event_type, occurred_at, message)
    SELECT ('be0c0000-0000-4000-8000-' || lpad(to_hex(g % $users), 12, '0'))::uuid, 'sync_completed',
           now() - make_interval(secs => g * 0.01), 'benchmark history'
    FROM generate_series(1, 1000000) g;" -c "VACUUM ANALYZE events" -c "CHECKPOINT"
}

echo "== 8. uncached, 1,000,000 events"
add_history "$db"
start_server "redis://127.0.0.1:$redis_port" --cache-disabled
mix --label "uncached, 1M events"
echo "  (every request is one PostgreSQL statement: pg loads = round trips)"

if [[ -n "${BASELINE_BIN:-}" ]]; then
  echo "== 8b. uncached, 1,000,000 events, baseline build $BASELINE_BIN"
  stop "$server_pid"
  base_db="${db}_baseline"
  create_database "$base_db"
  DATABASE_URL="postgres://postgres@127.0.0.1:5432/$base_db?sslmode=disable" serve "$BASELINE_BIN" "$port" \
    --cache-disabled --admin-listen "127.0.0.1:$metrics_port"
  server_pid=$last_pid
  wait_port "$metrics_port"
  $loadgen --target "$target" seed --users "$users"
  add_history "$base_db"
  mix --label "baseline, uncached, 1M events"
  stop "$server_pid"; server_pid=""
fi

echo "== 9. cached, Redis Cluster (3 primaries + 3 replicas), reads only"
stop "$server_pid"; server_pid=""
cluster=$(scripts/redis-cluster.sh start "$cluster_base")
start_server "$cluster"
sleep 2
mix --label "cached, redis cluster, reads only"
