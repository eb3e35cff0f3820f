#!/usr/bin/env bash
# What an account costs to keep, measured for docs/capacity.md: a release server on a scratch database with a
# private redis-server, then
#   1. Redis: 1,000 users seeded (loadgen seed) and read for 10 s with the 5:3:2 mix, so every cached value of
#      every user is in Redis; prints Redis's keys and used_memory over the empty server's, per account;
#   2. PostgreSQL: `loadgen ingest` for $DURATION (default 20 s) with the given shape (default: 1,000 users,
#      3 keyed positions per side per sync, 8 callers); prints each table's growth (heap + indexes + TOAST)
#      and rows added, then the bytes per sync and the events per sync.
#   scripts/bench-footprint.sh
#   DURATION=30s scripts/bench-footprint.sh --positions 20 --users 400     # the ingest benchmark's default shape
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/bench-lib.sh
bench_init footprint
duration="${DURATION:-20s}"
machine

redis_port=6398
start_redis "$redis_port"
redis() { redis-cli -p "$redis_port" "$@"; }
used_memory() { redis INFO memory | sed -n 's/^used_memory:\([0-9]*\).*/\1/p'; }
port=50098
serve target/release/trading-monitor "$port" --redis-url "redis://127.0.0.1:$redis_port"
target="http://127.0.0.1:$port"

empty=$(used_memory)
"$loadgen" --target "$target" seed --users 1000 >/dev/null
"$loadgen" --target "$target" --duration 10s mix --users 1000 >/dev/null
keys=$(redis DBSIZE)
full=$(used_memory)
echo "== Redis after 1,000 seeded accounts were read (5 positions each)"
echo "keys $keys, used_memory $(( full - empty )) bytes over the empty server's: $(( (full - empty) / 1000 )) bytes per account"

sql() { psql -h 127.0.0.1 -U postgres -d "$db" -AtqX -c "$1"; }
sizes="SELECT c.relname, pg_total_relation_size(c.oid), c.reltuples::bigint FROM pg_class c
  JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p')
  AND c.relname <> '_sqlx_migrations' ORDER BY 1"
counts="SELECT (SELECT count(*) FROM syncs), (SELECT count(*) FROM events)"
sql "ANALYZE"
before_sizes=$(sql "$sizes")
read -r syncs0 events0 < <(sql "$counts" | tr '|' ' ')
ingest_args=("$@")
if [[ ${#ingest_args[@]} -eq 0 ]]; then ingest_args=(--users 1000 --positions 3); fi
"$loadgen" --target "$target" --duration "$duration" ingest "${ingest_args[@]}" | grep -E "ok,|throughput"
sql "ANALYZE"
after_sizes=$(sql "$sizes")
read -r syncs1 events1 < <(sql "$counts" | tr '|' ' ')
syncs=$(( syncs1 - syncs0 ))
echo "== PostgreSQL growth over $syncs syncs (ingest ${ingest_args[*]}), bytes including indexes and TOAST"
python3 - "$syncs" "$(( events1 - events0 ))" "$before_sizes" "$after_sizes" <<'PY'
import sys
syncs, events = int(sys.argv[1]), int(sys.argv[2])
def parse(text):
    return {name: (int(size), int(rows)) for name, size, rows in (line.split("|") for line in text.splitlines())}
before, after = parse(sys.argv[3]), parse(sys.argv[4])
total = 0
for name in sorted(after):
    size0, rows0 = before.get(name, (0, 0))
    size1, rows1 = after[name]
    grown = size1 - size0
    total += grown
    if grown:
        print(f"  {name:28} {grown:>12,} bytes  {grown / syncs:8.0f} B/sync   rows {max(rows0, 0):>9,} -> {rows1:>9,}")
print(f"  {'total':28} {total:>12,} bytes  {total / syncs:8.0f} B/sync")
print(f"  events: {events:,} for {syncs:,} syncs = {events / syncs:.2f} per sync")
PY
