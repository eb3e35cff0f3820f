#!/usr/bin/env bash
# Runs the whole test suite (unit, property and integration tests, the browser test in headless Chromium, and
# Schemathesis against the REST gateway) against the local PostgreSQL and Redis, starting them if needed and
# installing Chromium (Debian packages) and the Python tools (.venv/) when missing. Builds offline from .sqlx/,
# so no DATABASE_URL is needed at compile time.
#
#   scripts/test.sh                 # everything: unit tests, then the api, ops and browser test binaries
#   scripts/test.sh --test api      # extra arguments go to cargo test: here only the fast RPC tests (~40 s)
#   scripts/test.sh reads::         # a name filter
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/ensure-services.sh
scripts/ensure-test-tools.sh
export SQLX_OFFLINE=true
cargo test --workspace --all-targets "$@"
