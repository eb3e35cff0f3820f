# The plumbing every bench-*.sh script shares (sourced, not run): one build, one scratch database, processes
# started here and stopped (by PID) on exit, and the server CPU time per call measured from /proc.
#
#   source scripts/bench-lib.sh
#   bench_init watch                       # services up, release build, database tm_bench_watch_<pid>, cleanup trap
#   start_redis 6394                       # a redis-server of the run's own; its PID in $last_pid
#   serve target/release/trading-monitor 50096 --redis-url redis://127.0.0.1:6394   # PID in $last_pid
#   measured "$last_pid" --target http://127.0.0.1:50096 --duration 20s mix --users 1000
#
# bench_init exports TM_JWT_SECRET (the servers verify, and loadgen mints, with it) and sets: $db (the database
# name), $db_url (its URL), $loadgen (the release loadgen, or $LOADGEN_BIN), $hz (clock ticks per second).

# wait_port PORT: until something listens on 127.0.0.1:PORT (10 s at most; fails after).
wait_port() { for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done; return 1; }
# stop PID: terminates a process this script started and reaps it (nothing if PID is empty).
stop() { if [[ -n "${1:-}" ]]; then kill "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; fi; }
# cpu_ticks PID: the process's CPU time so far (user + system), in clock ticks ($hz per second).
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }

bench_pids=()
bench_dbs=()

# track PID: stop it when the script exits.
track() { bench_pids+=("$1"); }

bench_cleanup() {
  local i db
  # Last started, first stopped: servers before the Redis they use.
  for (( i = ${#bench_pids[@]} - 1; i >= 0; i-- )); do stop "${bench_pids[i]}"; done
  for db in "${bench_dbs[@]}"; do
    psql -q -h 127.0.0.1 -U postgres -d postgres -c "DROP DATABASE IF EXISTS \"$db\" WITH (FORCE)" || true
  done
}

# create_database NAME: a scratch database, dropped on exit.
create_database() {
  psql -q -h 127.0.0.1 -U postgres -d postgres -c "CREATE DATABASE \"$1\""
  bench_dbs+=("$1")
}

# bench_init NAME: what every benchmark needs first (see the top of this file).
bench_init() {
  scripts/ensure-services.sh
  export SQLX_OFFLINE=true
  # BENCH_PREBUILT=1: the caller built (and copied) the binaries, so sources may change during the run.
  if [[ -z "${BENCH_PREBUILT:-}" ]]; then
    cargo build --release --quiet -p trading-monitor --bin trading-monitor --bin loadgen
  fi
  export TM_JWT_SECRET="bench-secret-0123456789abcdef0123456789"
  loadgen="${LOADGEN_BIN:-target/release/loadgen}"
  hz=$(getconf CLK_TCK)
  db="tm_bench_${1}_$$"
  db_url="postgres://postgres@127.0.0.1:5432/$db?sslmode=disable"
  trap bench_cleanup EXIT
  create_database "$db"
}

# machine: the line every report starts with.
machine() { echo "== machine: $(nproc) cores, $(lscpu | sed -n 's/^Model name: *//p'), $(date -u +%FT%TZ)"; }

# start_redis PORT: a redis-server of this run's own, nothing persisted; PID in $last_pid.
start_redis() {
  redis-server --port "$1" --bind 127.0.0.1 --save "" --appendonly no --daemonize no --loglevel warning &
  last_pid=$!
  track "$last_pid"
  wait_port "$1"
}

# serve BINARY PORT [serve flags...]: `BINARY serve` on 127.0.0.1:PORT against $db_url (or the caller's
# DATABASE_URL), logging warnings only, with the caller's environment; PID in $last_pid, listening on return.
serve() {
  local bin="$1" port="$2"; shift 2
  DATABASE_URL="${DATABASE_URL:-$db_url}" RUST_LOG=warn "$bin" serve --listen "127.0.0.1:$port" "$@" &
  last_pid=$!
  track "$last_pid"
  wait_port "$port"
}

# measured PID LOADGEN-ARGS...: runs loadgen while measuring process PID's CPU time, prints loadgen's report and
# the CPU per call PID answered (refused and failed calls included: they cost the server too).
measured() {
  local pid="$1" before after out calls; shift
  before=$(cpu_ticks "$pid")
  out=$("$loadgen" "$@")
  after=$(cpu_ticks "$pid")
  echo "$out"
  calls=$(echo "$out" | sed -n 's/.*: \([0-9][0-9]*\) ok, \([0-9][0-9]*\) errors.*/\1 \2/p' | head -n 1 | awk '{ print $1 + $2 }')
  per_call "server" "$before" "$after" "$calls"
}

# per_call LABEL TICKS-BEFORE TICKS-AFTER CALLS: the CPU time per call of a process measured around a phase.
per_call() {
  if [[ -n "${4:-}" && "$4" -gt 0 ]]; then
    echo "  $1 CPU  $(( ($3 - $2) * 1000000 / hz / $4 )) us per call ($(( ($3 - $2) * 1000 / hz )) ms in total)"
  fi
}
