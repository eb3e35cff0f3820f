#!/usr/bin/env python3
"""EXPLAIN every read query of the service on a large data set, and fail on sequential scans of user tables.

The queries come verbatim from .sqlx/ (sqlx's compile-time cache), so this checks exactly what the binary runs.
It builds a scratch database from migrations/, seeds 100,000 accounts, 1,000,000 events (100 users x 10,000,
interleaved in time like concurrent sync workers write them, of every type), plus one user with 1,000,000 events
all of one type (SYNC_COMPLETED: the common case of a long, quiet history), 50,000 positions, 10,000 divergences,
200,000 syncs, 200,000 candle closes and 20,000 market alerts, runs EXPLAIN (ANALYZE, BUFFERS) for each SELECT with representative
parameters as a generic plan (PREPARE + plan_cache_mode = force_generic_plan, as the service runs them), prints the plans, and exits 1 if a user-facing table is read with a Seq Scan or a scan throws away more
than 100 rows it read (a user's rows found through an index that does not start with the user). The event-log query
filtered by type runs once per event type for the long-history user (so including types that user never had,
while other users have plenty) and must stay under a fixed buffer budget: its cost may not grow with history.

    scripts/explain.py [--events N] [--keep]

Needs psql and a local PostgreSQL (PGHOST/PGPORT/PGUSER, default 127.0.0.1:5432 postgres).
"""

import argparse
import glob
import json
import os
import re
import subprocess
import sys

# Tables every user read touches; small global tables (instruments, latest_quotes) are fine to scan.
USER_TABLES = {"events", "positions", "divergences", "syncs", "platform_positions", "accounts",
               "reconciliation_summaries", "market_alerts", "candle_closes"}
HEAVY_USER = "00000000-0000-4000-8000-000000000007"
# A user with a long history of a single event type.
MONO_USER = "00000000-0000-4000-8000-0000000f4240"
EVENT_TYPES = ["sync_completed", "sync_failed", "position_opened", "position_closed", "divergence_detected",
               "divergence_resolved", "drawdown_level_changed", "market_alert_raised", "market_alert_cleared"]
# Shared buffers one page of the event log may touch, whatever the history (a page is at most 501 rows).
EVENT_PAGE_BUFFER_BUDGET = 2_000
# Rows a scan of a user table may read and throw away: more means the query found a user's rows through an
# index that does not start with the user (e.g. every open divergence of every user, filtered).
ROWS_REMOVED_BUDGET = 100


def psql(db, sql, capture=True):
    env = dict(os.environ)
    env.setdefault("PGHOST", "127.0.0.1")
    env.setdefault("PGPORT", "5432")
    env.setdefault("PGUSER", "postgres")
    result = subprocess.run(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-At", "-d", db, "-c", sql],
                            env=env, capture_output=capture, text=True)
    if result.returncode != 0:
        sys.exit(f"psql failed: {result.stderr}")
    return result.stdout


def seed(db, events):
    psql("postgres", f'CREATE DATABASE "{db}"')
    for path in sorted(glob.glob("migrations/*.sql")):
        with open(path) as f:
            psql(db, f.read())
    # 100,000 accounts; the first 100 own all events, positions and divergences.
    users = "(SELECT ('00000000-0000-4000-8000-' || lpad(u::text, 12, '0'))::uuid AS id, u FROM generate_series(0, 99999) u)"
    psql(db, f"""
        INSERT INTO accounts (user_id, currency, equity, peak_equity, drawdown_level)
        SELECT id, 'GBP', 9000, 10000, 'normal' FROM {users} x;
        INSERT INTO reconciliation_summaries (user_id, total_syncs) SELECT id, 1000 FROM {users} x;
        INSERT INTO events (user_id, event_type, occurred_at, message, details)
        SELECT ('00000000-0000-4000-8000-' || lpad((g % 100)::text, 12, '0'))::uuid,
               (ARRAY['sync_completed','sync_completed','sync_completed','position_opened','divergence_detected',
                      'sync_failed'])[1 + (g / 100) % 6],
               now() - make_interval(secs => ({events} - g) * 0.1), 'seeded', '{{}}'::jsonb
        FROM generate_series(1, {events}) g;
        INSERT INTO events (user_id, event_type, occurred_at, message, details)
        SELECT '{MONO_USER}'::uuid, 'sync_completed', now() - make_interval(secs => ({events} - g) * 0.01),
               'seeded', '{{}}'::jsonb
        FROM generate_series(1, {events}) g;
        INSERT INTO positions (position_id, user_id, position_identifier, ticket, symbol, side, volume, open_price,
                               open_time, current_price, current_price_time, status, closed_at, close_reason,
                               last_seen_at)
        SELECT gen_random_uuid(), ('00000000-0000-4000-8000-' || lpad((g % 100)::text, 12, '0'))::uuid, g::text,
               g::text, (ARRAY['XAUUSD','EURUSD','BTCUSD'])[1 + g % 3], 'buy', 1, 100, now(), 100, now(),
               CASE WHEN g % 10 = 0 THEN 'open' ELSE 'closed' END,
               CASE WHEN g % 10 = 0 THEN NULL ELSE now() END,
               CASE WHEN g % 10 = 0 THEN NULL ELSE 'closed_by_platform' END, now()
        FROM generate_series(1, 50000) g;
        INSERT INTO divergences (divergence_id, user_id, kind, symbol, position_identifier, message, detected_at,
                                 resolved_at)
        SELECT gen_random_uuid(), ('00000000-0000-4000-8000-' || lpad((g % 100)::text, 12, '0'))::uuid,
               'broker_only', 'XAUUSD', g::text, 'seeded', now(), CASE WHEN g % 20 = 0 THEN NULL ELSE now() END
        FROM generate_series(1, 10000) g;
        INSERT INTO syncs (sync_id, request_id, user_id, status, started_at, finished_at)
        SELECT gen_random_uuid(), gen_random_uuid(), ('00000000-0000-4000-8000-' || lpad((g % 100)::text, 12, '0'))::uuid,
               'completed', now(), now()
        FROM generate_series(1, 200000) g;
        INSERT INTO candle_closes (symbol, open_time, previous_close, open)
        SELECT (ARRAY['XAUUSD','EURUSD','BTCUSD','GBPUSD'])[1 + g % 4], now() - make_interval(mins => g), 100, 101
        FROM generate_series(1, 200000) g;
        INSERT INTO market_alerts (alert_id, symbol, kind, severity, value_pct, threshold_pct, message, raised_at,
                                   cleared_at)
        SELECT gen_random_uuid(), (ARRAY['XAUUSD','EURUSD','BTCUSD','GBPUSD'])[1 + g % 4], 'price_gap', 'warning', 6, 5,
               'seeded', now(), CASE WHEN g <= 4 THEN NULL ELSE now() END
        FROM generate_series(1, 20000) g;
        ANALYZE;
    """)


def value(kind, counters, query, user=HEAVY_USER, event_types=("sync_failed",)):
    """A representative literal for a parameter of sqlx type `kind` (the n-th of its type in the query)."""
    n = counters.get(kind, 0)
    counters[kind] = n + 1
    if kind == "Uuid":
        return f"'{user}'::uuid"
    if kind == "UuidArray":
        return f"ARRAY['{HEAVY_USER}']::uuid[]"
    if kind == "Timestamptz":
        # Event windows: lower bound first, then the keyset/upper bound.
        return ["'0001-01-01'::timestamptz", "'9999-12-31'::timestamptz"][min(n, 1)]
    if kind == "Int8":
        # Keyset walks take the cursor's event id first, then the limit; other queries only a limit.
        return ["9223372036854775807", "51"][min(n, 1)] if "event_id) <" in query else "51"
    if kind == "Text":
        return "'XAUUSD'"
    if kind == "TextArray":
        if "event_type" in query:
            return "ARRAY[" + ",".join(f"'{t}'" for t in event_types) + "]"
        return "ARRAY['XAUUSD','EURUSD']"
    sys.exit(f"no sample value for parameter type {kind}")


def removed_rows(plan):
    """(table, rows removed by a filter) for every scan node of the plan."""
    found, table = [], None
    for line in plan.splitlines():
        scan = re.search(r"Scan(?: Backward)? (?:using \w+ )?on (\w+)", line)
        if scan:
            table = scan.group(1)
        removed = re.search(r"Rows Removed by Filter: (\d+)", line)
        if removed and table:
            found.append((table, int(removed.group(1))))
    return found


def top_buffers(plan):
    """Shared buffers (hit + read) of the plan's top node, which includes its children."""
    match = re.search(r"Buffers: shared( hit=(\d+))?( read=(\d+))?", plan)
    if not match:
        return 0
    return int(match.group(2) or 0) + int(match.group(4) or 0)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--keep", action="store_true", help="keep the scratch database")
    args = parser.parse_args()
    os.chdir(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    db = f"tm_explain_{os.getpid()}"
    failures = []
    try:
        seed(db, args.events)
        for path in sorted(glob.glob(".sqlx/query-*.json")):
            with open(path) as f:
                entry = json.load(f)
            query = entry["query"]
            head = query.lstrip().upper()
            # Reads: SELECTs, and WITH queries that write nothing (the feed's pages).
            if not (head.startswith("SELECT") or
                    (head.startswith("WITH") and not re.search(r"\b(INSERT|UPDATE|DELETE)\b", head))):
                continue
            runs = [(HEAVY_USER, ("sync_failed",))]
            if "event_type = t.event_type" in query:
                runs = [(HEAVY_USER, tuple(EVENT_TYPES))] + [(MONO_USER, (t,)) for t in EVENT_TYPES]
            for user, types in runs:
                counters = {}
                params = [value(k, counters, query, user, types) for k in entry["describe"]["parameters"]["Left"]]
                execute_args = f"({', '.join(params)})" if params else ""
                # The service runs every statement with a generic plan (plan_cache_mode = force_generic_plan, see
                # storage::connect_options): check that plan, which does not know the parameters' values.
                plan = psql(db, f"BEGIN; SET LOCAL plan_cache_mode = force_generic_plan; PREPARE q AS {query}; "
                                f"EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) EXECUTE q{execute_args}; ROLLBACK;")
                print("=" * 100)
                print(" ".join(query.split())[:300])
                if len(runs) > 1:
                    print(f"user {user}, event types {', '.join(types)}")
                print("-" * 100)
                print(plan.rstrip())
                for table in re.findall(r"Seq Scan on (\w+)", plan):
                    if table in USER_TABLES:
                        failures.append((" ".join(query.split())[:120], table))
                for table, removed in removed_rows(plan):
                    if table in USER_TABLES and removed > ROWS_REMOVED_BUDGET:
                        failures.append((" ".join(query.split())[:120], f"{table}: {removed} rows removed by filter"))
                if "FROM events" in query:
                    buffers = top_buffers(plan)
                    if buffers > EVENT_PAGE_BUFFER_BUDGET:
                        failures.append((f"{' '.join(query.split())[:80]} ({', '.join(types)})",
                                         f"events: {buffers} buffers > {EVENT_PAGE_BUFFER_BUDGET}"))
    finally:
        if not args.keep:
            psql("postgres", f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
    print("=" * 100)
    if failures:
        for query, table in failures:
            print(f"FAILED ({table}): {query}")
        sys.exit(1)
    print(f"no sequential scans of user tables ({args.events} events)")


if __name__ == "__main__":
    main()
