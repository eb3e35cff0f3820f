#!/usr/bin/env bash
# One command for a newcomer: starts PostgreSQL if needed, builds, creates and migrates the `trading_monitor`
# database, loads demo data through the gRPC API, serves on 127.0.0.1:50051 and prints a token and commands.
# Extra arguments go to `trading-monitor demo` (see `--help`).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/ensure-services.sh
exec cargo run --release --quiet --bin trading-monitor -- demo "$@"
