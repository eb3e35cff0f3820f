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
bench_init ingest

port=50091
serve "${SERVER_BIN:-target/release/trading-monitor}" "$port"
server_pid=$last_pid

args=("$@")
# Options before the mode go to loadgen itself; `ingest ...` may be given explicitly to pass mode options.
if ! printf '%s\n' "${args[@]}" | grep -qx ingest; then args+=(ingest); fi
measured "$server_pid" --target "http://127.0.0.1:$port" "${args[@]}"
echo "server peak memory: $(awk '/VmHWM/ { print $2, $3 }' "/proc/$server_pid/status")"
