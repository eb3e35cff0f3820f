#!/usr/bin/env bash
# Ingest benchmark: a release server on a scratch database, loadgen pushing SubmitBrokerSync (20 positions per
# sync, 8 concurrent callers by default) for 30 s. Prints loadgen's report, then the server's CPU time per sync
# and its peak memory. Extra arguments go to loadgen, e.g.
#   scripts/bench-ingest.sh --duration 10s --concurrency 16
#   scripts/bench-ingest.sh --duration 20s --concurrency 1 ingest --positions 2000 --book unkeyed --users 4
# (the last is the largest sync the API accepts: 2,000 broker and 2,000 platform positions in one symbol/side)
# SERVER_BIN=path/to/another/trading-monitor runs that binary instead (e.g. an older build, for a baseline).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/bench-lib.sh
scripts/ensure-services.sh
export SQLX_OFFLINE=true
cargo build --release --quiet --bin trading-monitor --bin loadgen

db="tm_bench_ingest_$$"
port=50091
secret="bench-secret-0123456789abcdef0123456789"
psql -q -h 127.0.0.1 -U postgres -d postgres -c "CREATE DATABASE \"$db\""
server_pid=""
cleanup() {
  if [[ -n "$server_pid" ]]; then kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; fi
  psql -q -h 127.0.0.1 -U postgres -d postgres -c "DROP DATABASE IF EXISTS \"$db\" WITH (FORCE)" || true
}
trap cleanup EXIT

TM_JWT_SECRET="$secret" RUST_LOG=warn "${SERVER_BIN:-target/release/trading-monitor}" serve \
  --listen "127.0.0.1:$port" --database-url "postgres://postgres@127.0.0.1:5432/$db?sslmode=disable" &
server_pid=$!
for _ in $(seq 1 50); do
  (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
  sleep 0.2
done

before=$(cpu_ticks "$server_pid")
args=("$@")
# Options before the mode go to loadgen itself; `ingest ...` may be given explicitly to pass mode options.
if ! printf '%s\n' "${args[@]}" | grep -qx ingest; then args+=(ingest); fi
TM_JWT_SECRET="$secret" target/release/loadgen --target "http://127.0.0.1:$port" "${args[@]}" | tee /tmp/bench-ingest.$$
after=$(cpu_ticks "$server_pid")
calls=$(sed -n 's/.* \([0-9][0-9]*\) ok.*/\1/p' /tmp/bench-ingest.$$ | head -n 1)
rm -f /tmp/bench-ingest.$$
hz=$(getconf CLK_TCK)
echo "server CPU: $(( (after - before) * 1000 / hz )) ms in total${calls:+, $(( (after - before) * 1000000 / hz / calls )) us per sync}"
echo "server peak memory: $(awk '/VmHWM/ { print $2, $3 }' "/proc/$server_pid/status")"
