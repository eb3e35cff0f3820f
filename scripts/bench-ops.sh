#!/usr/bin/env bash
# Operations benchmark, all in one run on this machine (see BENCHMARKS.md, "Operations"):
#   T. what tracing costs: the cached 5:3:2 read mix, 100 streams, against
#        T1. this build with no OTEL_* variable (no exporter);
#        T2. this build exporting every call's spans over OTLP/gRPC to `loadgen otlp-sink`;
#        T3. the same, sampling 10 % of the traces (OTEL_TRACES_SAMPLER=parentbased_traceidratio, 0.1);
#        T0. BASELINE_BIN, if given (the build before tracing existed), as T1;
#      in ROUNDS rounds (default 2), so each is measured more than once and drift shows.
#   O. overload: the uncached mix (--cache-disabled: each call is a PostgreSQL statement) with an in-flight
#      limit of LIMIT calls (default 16, the pool's size), at LIMIT streams, then at 3 x LIMIT streams; and at
#      3 x LIMIT streams with no limit, for contrast. Callers refused RESOURCE_EXHAUSTED wait the RetryInfo
#      delay the server sends (200 ms), as a well-behaved client does.
# 1,000 seeded users. After each phase: the server's CPU time per request, from /proc/<pid>/stat.
#   DURATION=20s scripts/bench-ops.sh
#   BASELINE_BIN=/tmp/trading-monitor-before-traces scripts/bench-ops.sh
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/bench-lib.sh
bench_init ops

duration="${DURATION:-20s}"
rounds="${ROUNDS:-2}"
limit="${LIMIT:-16}"
users=1000
port=50083 admin_port=9183 redis_port=6383 sink_port=4383
target="http://127.0.0.1:$port"
server_pid="" sink_pid=""

# start_server BINARY [serve flags...]: the server under test (replacing the previous one), with the
# environment the caller exported.
start_server() {
  local bin="$1"; shift
  stop "$server_pid"
  serve "$bin" "$port" --redis-url "redis://127.0.0.1:$redis_port" --admin-listen "127.0.0.1:$admin_port" \
    --rate-limit-per-user 0 "$@"
  server_pid=$last_pid
  wait_port "$admin_port"
  # Until the replica reads through Redis (it answers from PostgreSQL before its Redis client connects).
  sleep 1
}

start_redis "$redis_port"
start_server target/release/trading-monitor

machine
$loadgen --target "$target" seed --users "$users"

# mix STREAMS LABEL: the 5:3:2 read mix.
mix() {
  measured "$server_pid" --target "$target" --duration "$duration" --concurrency "$1" \
    mix --users "$users" --metrics "127.0.0.1:$admin_port" --label "$2"
}

for round in $(seq 1 "$rounds"); do
  if [[ -n "${BASELINE_BIN:-}" ]]; then
    echo "== T0 (round $round). baseline build, cached, reads only"
    start_server "$BASELINE_BIN"
    mix 100 "T0 baseline build"
  fi
  echo "== T1 (round $round). this build, no OTLP endpoint"
  start_server target/release/trading-monitor
  mix 100 "T1 no exporter"

  for sampled in 1.0 0.1; do
    if [[ "$sampled" == 1.0 ]]; then phase=T2; else phase=T3; fi
    echo "== $phase (round $round). this build, spans exported to an OTLP sink, sampling ratio $sampled"
    stop "$sink_pid"
    "$loadgen" otlp-sink --listen "127.0.0.1:$sink_port" > "/tmp/bench-ops-sink-$$.out" &
    sink_pid=$!
    track "$sink_pid"
    wait_port "$sink_port"
    OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:$sink_port" OTEL_TRACES_SAMPLER=parentbased_traceidratio \
      OTEL_TRACES_SAMPLER_ARG="$sampled" start_server target/release/trading-monitor
    mix 100 "$phase exporting, ratio $sampled"
    stop "$server_pid"; server_pid=""   # its shutdown flushes the last spans
    stop "$sink_pid"; sink_pid=""
    cat "/tmp/bench-ops-sink-$$.out"; rm -f "/tmp/bench-ops-sink-$$.out"
  done
done

echo "== O1. uncached, in-flight limit $limit, $limit streams (at the limit)"
start_server target/release/trading-monitor --cache-disabled --max-concurrent-requests "$limit"
mix "$limit" "O1 at the limit"
echo "== O2. uncached, in-flight limit $limit, $(( 3 * limit )) streams (3x overload)"
mix $(( 3 * limit )) "O2 3x, shedding"
echo "== O3. uncached, no in-flight limit, $(( 3 * limit )) streams (3x, queueing)"
start_server target/release/trading-monitor --cache-disabled --max-concurrent-requests 100000
mix $(( 3 * limit )) "O3 3x, no limit"
