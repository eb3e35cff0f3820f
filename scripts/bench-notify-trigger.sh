#!/usr/bin/env bash
# What PostgreSQL's NOTIFY trigger cost ingest (issue 18): one server of a build that still has the
# `events_notify` trigger (migrations before 20261208000001), the trigger enabled and disabled in alternating
# 20 s runs at 16 callers, same server process and database throughout, so only the trigger differs.
#   BASELINE_BIN=/tmp/base/trading-monitor ROUNDS=3 scripts/bench-notify-trigger.sh
set -euo pipefail
cd "$(dirname "$0")/.."
: "${BASELINE_BIN:?set BASELINE_BIN to a trading-monitor binary from before migration 20261208000001}"
source scripts/bench-lib.sh
bench_init notify
machine
port=50094
serve "$BASELINE_BIN" "$port"
pid=$last_pid
for round in $(seq 1 "${ROUNDS:-3}"); do
  for state in ENABLE DISABLE; do
    psql -qAt -h 127.0.0.1 -U postgres -d "$db" -c "ALTER TABLE events $state TRIGGER events_notify"
    echo "== round $round, trigger ${state,,}d"
    measured "$pid" --target "http://127.0.0.1:$port" --duration "${DURATION:-20s}" --concurrency 16 \
      ingest --users 1000 --positions 3 | grep -E 'throughput|latency|server CPU'
  done
done
