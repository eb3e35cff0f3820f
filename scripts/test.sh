#!/usr/bin/env bash
# Runs the whole test suite (unit, property and integration tests) against the local PostgreSQL, starting it
# if needed. Builds offline from .sqlx/, so no DATABASE_URL is needed at compile time.
#
#   scripts/test.sh                 # everything
#   scripts/test.sh reads::         # extra arguments go to cargo test (here: a name filter)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/ensure-services.sh
export SQLX_OFFLINE=true
cargo test --workspace --all-targets "$@"
