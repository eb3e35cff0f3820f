#!/usr/bin/env bash
# Ingest benchmark: a release server on a scratch database, loadgen pushing SubmitBrokerSync (20 positions per
# sync, 8 concurrent callers by default) for 30 s. Prints loadgen's report. Extra arguments go to loadgen, e.g.
#   scripts/bench-ingest.sh --duration 10s --concurrency 16
set -euo pipefail
cd "$(dirname "$0")/.."
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

TM_JWT_SECRET="$secret" RUST_LOG=warn target/release/trading-monitor serve \
  --listen "127.0.0.1:$port" --database-url "postgres://postgres@127.0.0.1:5432/$db?sslmode=disable" &
server_pid=$!
for _ in $(seq 1 50); do
  (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
  sleep 0.2
done

TM_JWT_SECRET="$secret" target/release/loadgen --target "http://127.0.0.1:$port" "$@" ingest
