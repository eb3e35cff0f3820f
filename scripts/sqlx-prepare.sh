#!/usr/bin/env bash
# Regenerates .sqlx/, the offline query cache that lets the crate build with SQLX_OFFLINE=true and no database.
# It migrates a scratch database with migrations/, then rebuilds the crate with SQLX_OFFLINE_DIR set, which
# makes sqlx's query macros write one JSON file per query (what `cargo sqlx prepare` does, without sqlx-cli).
#
#   scripts/sqlx-prepare.sh          # rewrite .sqlx/
#   scripts/sqlx-prepare.sh --check  # fail if .sqlx/ is out of date with the queries or migrations
#
# Needs PostgreSQL (PGHOST/PGPORT/PGUSER, default 127.0.0.1:5432 user postgres) and psql.
set -euo pipefail
cd "$(dirname "$0")/.."

export PGHOST="${PGHOST:-127.0.0.1}" PGPORT="${PGPORT:-5432}" PGUSER="${PGUSER:-postgres}"
db="trading_monitor_sqlx_prepare_$$"
out=".sqlx"
if [[ "${1:-}" == "--check" ]]; then
  out="$(mktemp -d)"
fi
cleanup() {
  psql -q -d postgres -c "DROP DATABASE IF EXISTS \"$db\"" >/dev/null 2>&1 || true
  if [[ "$out" != ".sqlx" ]]; then rm -rf "$out"; fi
}
trap cleanup EXIT

psql -q -v ON_ERROR_STOP=1 -d postgres -c "CREATE DATABASE \"$db\"" >/dev/null
for migration in migrations/*.sql; do
  psql -q -v ON_ERROR_STOP=1 -d "$db" -f "$migration" >/dev/null
done

if [[ "$out" == ".sqlx" ]]; then rm -rf .sqlx; fi
mkdir -p "$out"
out_abs="$(cd "$out" && pwd)"
# Touching the crate root makes cargo recompile it, so every query macro runs again.
touch src/lib.rs
SQLX_OFFLINE=false SQLX_OFFLINE_DIR="$out_abs" DATABASE_URL="postgres://$PGUSER@$PGHOST:$PGPORT/$db?sslmode=disable" \
  cargo check --all-targets --quiet

if [[ "${1:-}" == "--check" ]]; then
  if ! diff -r "$out_abs" .sqlx >/dev/null; then
    echo "error: .sqlx/ is out of date: run scripts/sqlx-prepare.sh and commit the result" >&2
    diff -r "$out_abs" .sqlx | head -20 >&2
    exit 1
  fi
  echo ".sqlx/ is up to date ($(ls .sqlx | wc -l) queries)"
else
  echo "wrote $(ls .sqlx | wc -l) query files to .sqlx/"
fi
