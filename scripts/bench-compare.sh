#!/usr/bin/env bash
# This build against another, on the read paths callers hit most, in alternating rounds in one run (A B A B ...:
# the machine is shared and noisy, so each build is measured more than once and drift shows):
#   echo   a bare tonic echo server (the same services, canned responses) under the gRPC mix: the ceiling
#   grpc   the cached 5:3:2 read mix over gRPC, 100 streams over 4 HTTP/2 connections (loadgen mix)
#   rest   the same mix over REST/JSON through the in-process gateway (wrk, 100 connections, HTTP/1.1)
# Each build serves a database of its own, seeded the same way (1,000 users), and a Redis key prefix of its
# own, on the run's own redis-server; the caches are warmed before each measured phase. Prints every phase,
# then the medians per build and path and this build's ratio to the baseline (and to the echo server).
#   BASELINE_DIR=/tmp/base scripts/bench-compare.sh            # BASELINE_DIR holds the other trading-monitor
#   BASELINE_DIR=/tmp/base ROUNDS=3 DURATION=20s scripts/bench-compare.sh
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/bench-lib.sh
: "${BASELINE_DIR:?set BASELINE_DIR to the directory of the baseline trading-monitor binary}"
command -v wrk >/dev/null 2>&1 || { export DEBIAN_FRONTEND=noninteractive; apt-get install -y -q wrk >/dev/null; }
bench_init compare

duration="${DURATION:-20s}"
rounds="${ROUNDS:-2}"
users=1000
port=50073 http_port=8073 admin_port=9173 redis_port=6373 echo_port=50074
results="$(mktemp)" tokens="$(mktemp)"
trap 'rm -f "$results" "$tokens"; bench_cleanup' EXIT
base_db="${db}_baseline"
create_database "$base_db"
start_redis "$redis_port"
server_pid=""

# start BUILD: the server of BUILD (baseline | this) on its own database and key prefix.
start() {
  stop "$server_pid"
  local bin=target/release/trading-monitor url="$db_url"
  if [[ "$1" == baseline ]]; then
    bin="$BASELINE_DIR/trading-monitor" url="postgres://postgres@127.0.0.1:5432/$base_db?sslmode=disable"
  fi
  DATABASE_URL="$url" serve "$bin" "$port" --http-listen "127.0.0.1:$http_port" --admin-listen "127.0.0.1:$admin_port" \
    --redis-url "redis://127.0.0.1:$redis_port" --cache-key-prefix "bench-compare-$1" --rate-limit-per-user 0
  server_pid=$last_pid
  wait_port "$http_port"
  sleep 1 # until it reads through Redis
}

# record ROUND BUILD PATH OUTPUT CPU-BEFORE CPU-AFTER: one phase's req/s, p99 and server CPU per call.
record() {
  local rps p99 calls
  if [[ "$3" == rest ]]; then
    rps=$(echo "$4" | sed -n 's/^Requests\/sec: *\([0-9.]*\).*/\1/p')
    p99=$(echo "$4" | awk '$1 == "99%" { v = $2; if (v ~ /us$/) { sub(/us$/, "", v); v /= 1000 } else if (v ~ /ms$/) { sub(/ms$/, "", v) } else if (v ~ /s$/) { sub(/s$/, "", v); v *= 1000 }; print v }')
    calls=$(echo "$4" | sed -n 's/^ *\([0-9][0-9]*\) requests in.*/\1/p')
  else
    rps=$(echo "$4" | sed -n 's/^ *throughput *\([0-9]*\) req\/s.*/\1/p')
    p99=$(echo "$4" | sed -n 's/.* p99 \([0-9.]*\) .*/\1/p')
    calls=$(echo "$4" | sed -n 's/.*: \([0-9][0-9]*\) ok, \([0-9][0-9]*\) errors.*/\1 \2/p' | awk '{ print $1 + $2 }')
  fi
  local cpu=$(( ($6 - $5) * 1000000 / hz / calls ))
  printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$rps" "$p99" "$cpu" >> "$results"
  echo "  -> $2 $3: $rps req/s, p99 $p99 ms, server CPU $cpu us per call"
}

# phase ROUND BUILD: the gRPC mix, then the REST mix, on the running server.
phase() {
  local out before after
  echo "== round $1, $2: gRPC mix"
  $loadgen --target "http://127.0.0.1:$port" --duration 5s mix --users "$users" --label warm-up > /dev/null
  before=$(cpu_ticks "$server_pid")
  out=$($loadgen --target "http://127.0.0.1:$port" --duration "$duration" mix --users "$users" --label "$2 gRPC")
  after=$(cpu_ticks "$server_pid")
  echo "$out"
  record "$1" "$2" grpc "$out" "$before" "$after"
  echo "== round $1, $2: REST mix (in-process gateway)"
  before=$(cpu_ticks "$server_pid")
  out=$(TOKENS="$tokens" wrk -t2 -c100 -d"$duration" --latency -s scripts/wrk-mix.lua "http://127.0.0.1:$http_port")
  after=$(cpu_ticks "$server_pid")
  echo "$out" | grep -E "Latency|99%|requests in|Requests/sec|Non-2xx|Socket errors" || true
  record "$1" "$2" rest "$out" "$before" "$after"
}

machine
echo "== this build: $(git rev-parse --short HEAD)$(git diff --quiet || echo ' (with uncommitted changes)'); baseline: $BASELINE_DIR"
start baseline
$loadgen --target "http://127.0.0.1:$port" seed --users "$users"
start this
$loadgen --target "http://127.0.0.1:$port" seed --users "$users"
$loadgen --target "http://127.0.0.1:$port" tokens --users "$users" > "$tokens"

for round in $(seq 1 "$rounds"); do
  echo "== round $round, echo: bare tonic echo server (responses captured from this build)"
  $loadgen --target "http://127.0.0.1:$port" echo-server --listen "127.0.0.1:$echo_port" --users "$users" &
  echo_pid=$!
  track "$echo_pid"
  wait_port "$echo_port"
  before=$(cpu_ticks "$echo_pid")
  out=$($loadgen --target "http://127.0.0.1:$echo_port" --duration "$duration" mix --users "$users" --label "echo")
  after=$(cpu_ticks "$echo_pid")
  echo "$out"
  record "$round" echo grpc "$out" "$before" "$after"
  stop "$echo_pid"
  # Alternate which build goes first, so neither always runs on the warmer (or the noisier) half.
  if (( round % 2 == 1 )); then order="baseline this"; else order="this baseline"; fi
  for build in $order; do
    start "$build"
    phase "$round" "$build"
  done
done

echo "== summary: medians over $rounds rounds (req/s, p99 ms, server CPU us per call); ratios are this / baseline"
python3 - "$results" <<'PY'
import statistics, sys
rows = [line.rstrip("\n").split("\t") for line in open(sys.argv[1])]
med = {}
for path in ("grpc", "rest"):
    for build in ("echo", "baseline", "this"):
        sel = [r for r in rows if r[1] == build and r[2] == path]
        if not sel:
            continue
        m = [statistics.median(float(r[i]) for r in sel) for i in (3, 4, 5)]
        med[(build, path)] = m
        rounds = ", ".join(f"{float(r[3]):.0f}" for r in sel)
        print(f"  {path:4} {build:8}  {m[0]:8.0f} req/s  p99 {m[1]:6.2f} ms  cpu {m[2]:5.0f} us   (rounds: {rounds})")
for path in ("grpc", "rest"):
    if ("this", path) in med and ("baseline", path) in med:
        t, b = med[("this", path)], med[("baseline", path)]
        print(f"  {path:4} this/baseline: throughput {t[0] / b[0]:.2f}x, p99 {t[1] / b[1]:.2f}x, cpu per call {t[2] / b[2]:.2f}x")
        pairs = [(r, s) for r in rows if r[1] == "this" and r[2] == path for s in rows if s[1] == "baseline" and s[2] == path and s[0] == r[0]]
        print("       per round: " + ", ".join(f"{float(r[3]) / float(s[3]):.2f}" for r, s in pairs))
    if ("echo", "grpc") in med and ("this", path) in med and path == "grpc":
        for build in ("baseline", "this"):
            print(f"  grpc {build} / echo: {med[(build, 'grpc')][0] / med[('echo', 'grpc')][0]:.2f}x")
PY
