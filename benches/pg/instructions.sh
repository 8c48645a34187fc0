#!/usr/bin/env bash
# Counts the instructions PostgreSQL executes to claim and complete no-op jobs (the whole backend,
# and the claim and completion statements alone), with the claim
# and completion statements and the migrations of each given revision: a deterministic
# measure (valgrind's callgrind counts instructions, not seconds) for comparing statement
# changes on a machine too noisy to time them.  Usage:
#   benches/pg/instructions.sh [REV ...]      # default: the work tree; e.g. `aaa1dff WORKTREE`
# Env: JOBS (5000), WORKSPACES (250, the keyed workload; the unkeyed one runs too), CLAIM (128).
# Needs valgrind and PostgreSQL's server binaries (Debian: postgresql-15); runs a private
# cluster under /tmp as the postgres user, on port 5499, and removes it afterwards.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
JOBS="${JOBS:-5000}" WORKSPACES="${WORKSPACES:-250}" CLAIM="${CLAIM:-128}"
CYCLES=$(( JOBS / CLAIM + 5 ))
[ $# -gt 0 ] || set -- WORKTREE
BIN="$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)"
WORK="$(mktemp -d /tmp/pg-instructions.XXXXXX)"
chown postgres "$WORK"
PORT=5499
PSQL=(psql -h "$WORK" -p "$PORT" -U postgres -q -v ON_ERROR_STOP=1)
stop() { su postgres -c "$BIN/pg_ctl -D $WORK/data -m immediate stop" >/dev/null 2>&1 || true; rm -rf "$WORK"; }
trap stop EXIT
su postgres -c "$BIN/initdb -D $WORK/data --locale=C.UTF-8 -A trust" >/dev/null
# Every backend forked by this postmaster runs under callgrind and writes its own count.
su postgres -c "cd $WORK && nohup valgrind --tool=callgrind --callgrind-out-file=$WORK/cg.%p \
  $BIN/postgres -D $WORK/data -p $PORT -k $WORK -c autovacuum=off -c jit=off \
  -c shared_buffers=256MB > $WORK/log 2>&1 &"
for _ in $(seq 1 120); do "${PSQL[@]}" -c "SELECT 1" >/dev/null 2>&1 && break; sleep 1; done

source_of() { # REV PATH
  if [ "$1" = WORKTREE ]; then cat "$ROOT/$2"; else git -C "$ROOT" show "$1:$2"; fi
}
migrations_of() {
  if [ "$1" = WORKTREE ]; then (cd "$ROOT" && ls migrations/postgres/*.sql)
  else git -C "$ROOT" ls-tree --name-only "$1" migrations/postgres/ | grep '\.sql$'; fi
}

echo "| revision | workload | instructions per job (whole backend) | of which the claim and completion statements |"
echo "|---|---|---:|---:|"
for rev in "$@"; do
  db="rev_$(echo "$rev" | tr "A-Z" "a-z" | tr -c "a-z0-9\n" _)"
  "${PSQL[@]}" -c "CREATE DATABASE $db"
  for m in $(migrations_of "$rev" | sort); do source_of "$rev" "$m" | "${PSQL[@]}" -d "$db" -f -; done
  source_of "$rev" src/store/postgres.rs | python3 "$HERE/statements.py" "$CLAIM" "$CYCLES" > "$WORK/cycle.sql"
  for ws in "$WORKSPACES" 0; do
    "${PSQL[@]}" -d "$db" <<SQL
TRUNCATE jobs;
INSERT INTO jobs (id, tenant, workspace, tool, arguments, state, priority, attempts, max_attempts,
                  retry_safe, timeout_s, run_after, created_at)
SELECT gen_random_uuid(), 'bench', CASE WHEN $ws > 0 THEN 'bench/' || (g % $ws) END, 'noop',
       '{}', 'queued', 0, 0, 1, FALSE, 300, now() - interval '1 second', now()
FROM generate_series(1, $JOBS) g;
VACUUM ANALYZE jobs;
SQL
    "${PSQL[@]}" -d "$db" -At -f "$WORK/cycle.sql" > "$WORK/out" 2> "$WORK/err" || { cat "$WORK/err" >&2; exit 1; }
    pid="$(head -1 "$WORK/out")"
    left="$("${PSQL[@]}" -d "$db" -At -c "SELECT count(*) FROM jobs WHERE state <> 'succeeded'")"
    [ "$left" = 0 ] || { echo "$rev: $left jobs not worked off" >&2; exit 1; }
    for _ in $(seq 1 30); do [ -s "$WORK/cg.$pid" ] && break; sleep 1; done
    total="$(awk '/^(summary|totals):/ {print $2; exit}' "$WORK/cg.$pid")"
    # The prepared statements alone (EXECUTE, parameters included), without the script's own
    # statement that builds each completion batch from the running jobs.
    statements="$(callgrind_annotate --inclusive=yes "$WORK/cg.$pid" 2>/dev/null |
      awk '/[?]{3}:ExecuteQuery \[/ && !seen {gsub(",", "", $1); print $1; seen = 1}')"
    label=$([ "$ws" -gt 0 ] && echo "B ($JOBS jobs, $ws workspaces)" || echo "A ($JOBS jobs, no workspace)")
    echo "| $rev | $label | $(( total / JOBS )) | $(( ${statements:-0} / JOBS )) |"
  done
done
