#!/usr/bin/env bash
# Runs this project's queue bench and the peers' (graphile-worker batched, pg-boss) on the same
# PostgreSQL in the same run, then prints a side-by-side table with ratios.  Usage:
#   benches/peers/compare.sh [RUNS]
# Env: JOBS (20000), BACKENDS (postgres; `sqlite,postgres` adds our SQLite rows), PGHOST
#   (127.0.0.1), PGPORT (5432), PGUSER (postgres), OUT (a file to keep the JSON lines in).
# Rounds are interleaved (ours, graphile-worker, pg-boss, then again), so that every system
# sees the same machine conditions; the table reports the median of the rounds.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
RUNS="${1:-1}"
export JOBS="${JOBS:-20000}"
export PGHOST="${PGHOST:-127.0.0.1}" PGPORT="${PGPORT:-5432}" PGUSER="${PGUSER:-postgres}"
export DAYTONA_MCP_BENCH_POSTGRES="${DAYTONA_MCP_BENCH_POSTGRES:-postgres://$PGUSER@$PGHOST:$PGPORT/postgres}"
OUT="${OUT:-$(mktemp /tmp/peers_compare.XXXXXX)}"
: > "$OUT"
(cd "$ROOT" && cargo bench --bench pipeline --no-run >&2)
echo "# load before: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
for ((run = 1; run <= RUNS; run++)); do
  echo "# round $run/$RUNS" >&2
  (cd "$ROOT" && cargo bench --bench pipeline -- peers "$JOBS" 1 "${BACKENDS:-postgres}") | tee -a "$OUT"
  SINGLE=0 PROFILE=batched "$HERE/graphile_bench.sh" AB 1 | tee -a "$OUT"
  SINGLE=0 "$HERE/pgboss_bench.sh" AB 1 | tee -a "$OUT"
done
echo "# load after: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
python3 "$HERE/table.py" < "$OUT"
echo "# JSON lines kept in $OUT" >&2
