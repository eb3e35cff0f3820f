#!/usr/bin/env bash
# Ingest of this build against another, at several concurrencies, in alternating rounds of one run (the machine
# is shared and noisy): for each round and concurrency, `scripts/bench-ingest.sh` against the baseline binary
# and against this build (which goes first alternates by round), each on a fresh scratch database. Prints every
# run, then the median syncs/s and p99 per build and concurrency, and this build's ratio.
#   BASELINE_DIR=/tmp/base scripts/bench-ingest-compare.sh                 # 8, 16 and 64 callers, 2 rounds, 20 s
#   BASELINE_DIR=/tmp/base CONCURRENCY="16" ROUNDS=3 DURATION=30s scripts/bench-ingest-compare.sh
#   WATCH_ALL=1 BASELINE_DIR=... scripts/bench-ingest-compare.sh     # with one stream watching every user's events
# (the baseline's loadgen is this build's: the load is the same for both servers)
# The load: loadgen ingest, 1,000 users, 3 keyed positions per side per sync (the issue's shape).
set -euo pipefail
cd "$(dirname "$0")/.."
: "${BASELINE_DIR:?set BASELINE_DIR to the directory of the baseline trading-monitor binary}"
rounds="${ROUNDS:-2}"
duration="${DURATION:-20s}"
concurrencies="${CONCURRENCY:-8 16 64}"
results="$(mktemp)"
bin_dir="$(mktemp -d)"
trap 'rm -rf "$results" "$bin_dir"' EXIT
export SQLX_OFFLINE=true
cargo build --release --quiet -p trading-monitor --bin trading-monitor --bin loadgen
# Copies, so the runs use this build even if the sources change meanwhile.
cp target/release/trading-monitor target/release/loadgen "$bin_dir/"
export BENCH_PREBUILT=1 LOADGEN_BIN="$bin_dir/loadgen"
extra=()
if [[ -n "${WATCH_ALL:-}" ]]; then extra=(--watch-all); fi

echo "== machine: $(nproc) cores, $(lscpu | sed -n 's/^Model name: *//p'), $(date -u +%FT%TZ)"
echo "== this build: $(git rev-parse --short HEAD)$(git diff --quiet || echo ' (with uncommitted changes)'); baseline: $BASELINE_DIR"
for round in $(seq 1 "$rounds"); do
  if (( round % 2 == 1 )); then order="baseline this"; else order="this baseline"; fi
  for c in $concurrencies; do
    for build in $order; do
      bin="$bin_dir/trading-monitor"
      if [[ "$build" == baseline ]]; then bin="$BASELINE_DIR/trading-monitor"; fi
      echo "== round $round, $c callers, $build"
      out=$(SERVER_BIN="$bin" scripts/bench-ingest.sh --duration "$duration" --concurrency "$c" \
        ingest --users 1000 --positions 3 "${extra[@]}" 2>/dev/null)
      echo "$out" | grep -E "ok,|throughput|latency|server CPU|watcher"
      rps=$(echo "$out" | sed -n 's/^ *throughput *\([0-9]*\) req\/s.*/\1/p')
      p99=$(echo "$out" | sed -n 's/.* p99 \([0-9.]*\) .*/\1/p')
      printf '%s\t%s\t%s\t%s\t%s\n' "$round" "$c" "$build" "$rps" "$p99" >> "$results"
    done
  done
done

echo "== summary: medians over $rounds rounds; ratio is this / baseline"
python3 - "$results" <<'PY'
import statistics, sys
rows = [line.rstrip("\n").split("\t") for line in open(sys.argv[1])]
for c in sorted({int(r[1]) for r in rows}):
    med = {}
    for build in ("baseline", "this"):
        sel = [r for r in rows if int(r[1]) == c and r[2] == build]
        med[build] = (statistics.median(float(r[3]) for r in sel), statistics.median(float(r[4]) for r in sel))
        runs = ", ".join(r[3] for r in sel)
        print(f"  {c:3} callers {build:8} {med[build][0]:6.0f} syncs/s  p99 {med[build][1]:6.2f} ms   (runs: {runs})")
    print(f"  {c:3} callers this/baseline: {med['this'][0] / med['baseline'][0]:.2f}x syncs/s, p99 {med['this'][1] / med['baseline'][1]:.2f}x")
PY
