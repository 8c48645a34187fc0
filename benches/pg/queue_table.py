"""Times the design "a narrow queue table beside the history table" against the store's current
statements, on the same PostgreSQL, to decide whether that rewrite would pay (issue 10).

Current: the unkeyed claim and the batched completion as `src/store/postgres.rs` writes them
(read from the work tree), on the migrated schema (`migrations/postgres`).  Proposed: `jobs`
keeps history only (no index mentions `state`, so its updates can be HOT; fillfactor FF leaves
room on each page), and a narrow `job_queue` row per open job carries what claims search on; a
claim flips the queue row to running and updates the history row, a completion deletes the
queue row and updates the history row.  Both work off N no-op jobs without a workspace in
claims of 512, one psql session, and the sum of the claim and completion statements' own times
is reported (psql's \\timing), design against design, rounds interleaved.

A third design, `delete`, is the current claim with a completion that deletes the row, as
graphile-worker's does: no history is kept, so it is not a design this store can have (the jobs
API answers for finished jobs); it measures what keeping them costs.

Usage: python3 benches/pg/queue_table.py [ROUNDS]   (env: N 20000, FF 50, DESIGNS
`current,queue` (any of current, queue, delete), PGURL, the server's URL without a database; a
database `queue_table_bench` is created and dropped).
"""
import os
import re
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
sys.dont_write_bytecode = True  # no __pycache__ beside the scripts
from statements import const, literal  # noqa: E402  (the statements as instructions.sh reads them)

N = int(os.environ.get("N", "20000"))
FF = int(os.environ.get("FF", "50"))
URL = os.environ.get("PGURL", "postgres://postgres@127.0.0.1:5432")
DB = "queue_table_bench"
CLAIM = 512


def psql(sql, db=DB):
    r = subprocess.run(["psql", f"{URL}/{db}", "-qAt", "-v", "ON_ERROR_STOP=1"],
                       input=sql, capture_output=True, text=True)
    if r.returncode:
        sys.exit(r.stderr[-3000:])
    return r.stdout + r.stderr


SRC = open(os.path.join(ROOT, "src/store/postgres.rs")).read()
CUR_CLAIM = (const(SRC, "CLAIM").replace("{heads}", const(SRC, "CLAIM_HEADS_WINDOW"))
             .replace("{free}", const(SRC, "CLAIM_FREE_WINDOW")))
CUR_COMPLETE = literal(SRC, SRC.index("sqlx::query(", SRC.index("async fn complete(")))
PER_NOTICE = re.search(r"const DONE_IDS_PER_NOTICE: i64 = (\d+);", SRC).group(1)
CUR_CLAIM_PREPARE = ("PREPARE claim (timestamptz, text, timestamptz, bigint, bigint) AS "
                     + CUR_CLAIM + ";\n")
CUR_PREPARE = (
    CUR_CLAIM_PREPARE
    + "PREPARE complete (uuid[], text[], jsonb[], jsonb[], integer[], timestamptz[], timestamptz, "
    "text, text, text, bigint) AS " + CUR_COMPLETE + ";\n")

NEW_SCHEMA = f"""
CREATE TABLE history (LIKE jobs INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING IDENTITY)
    WITH (fillfactor = {FF});
ALTER TABLE history ADD PRIMARY KEY (id);
CREATE INDEX history_tenant_seq ON history (tenant, seq DESC);
CREATE INDEX history_workspace_seq ON history (workspace, seq DESC) WHERE workspace IS NOT NULL;
CREATE TABLE job_queue (id uuid PRIMARY KEY, seq bigint NOT NULL, tenant text COLLATE "C" NOT NULL,
    workspace text COLLATE "C", priority int NOT NULL, run_after timestamptz NOT NULL,
    node text COLLATE "C", running boolean NOT NULL DEFAULT false, lease_owner text,
    lease_expires_at timestamptz);
CREATE INDEX queue_free ON job_queue (priority DESC, seq) WHERE NOT running AND workspace IS NULL;
CREATE INDEX queue_keyed ON job_queue (priority DESC, seq) WHERE NOT running AND workspace IS NOT NULL;
CREATE INDEX queue_workspace ON job_queue (workspace, priority DESC, seq) WHERE NOT running;
CREATE UNIQUE INDEX queue_one_running ON job_queue (workspace) WHERE running;
CREATE INDEX queue_tenant ON job_queue (tenant) WHERE NOT running;
"""
# The end of both prototype completions: the store's notices over the rows in `written`.
NOTICES = """
done AS (SELECT count(pg_notify($9, ids)) AS n FROM (SELECT string_agg(id::text, ',') AS ids
         FROM (SELECT id, (row_number() OVER () - 1) / $11 AS part FROM written) w GROUP BY part) d),
finished AS (SELECT count(pg_notify($10, $8)) AS n FROM (SELECT 1 FROM written LIMIT 1) w)
SELECT written.* FROM written, done, finished;
"""
NEW_PREPARE = """
PREPARE claim (timestamptz, text, timestamptz, bigint, bigint) AS
WITH c AS (SELECT ctid FROM job_queue WHERE NOT running AND workspace IS NULL AND run_after <= $1
             AND (node IS NULL OR node = $2) AND $5 >= 0 ORDER BY priority DESC, seq LIMIT $4),
l AS (SELECT ctid FROM job_queue WHERE ctid = ANY(ARRAY(SELECT ctid FROM c)) AND NOT running
      FOR UPDATE SKIP LOCKED),
q AS (UPDATE job_queue SET running = true, lease_owner = $2, lease_expires_at = $3
      WHERE ctid = ANY(ARRAY(SELECT ctid FROM l)) RETURNING id)
UPDATE history SET state = 'running', attempts = attempts + 1, started_at = $1, lease_owner = $2,
    lease_expires_at = $3 WHERE id = ANY(ARRAY(SELECT id FROM q)) RETURNING *;
PREPARE complete (uuid[], text[], jsonb[], jsonb[], integer[], timestamptz[], timestamptz, text,
                  text, text, bigint) AS
WITH c AS (SELECT * FROM unnest($1::uuid[], $2::text[], $3::jsonb[], $4::jsonb[], $5::integer[],
                                $6::timestamptz[]) AS c(id, state, result, error, exit_code, run_after)),
d AS (DELETE FROM job_queue q USING c WHERE q.id = c.id AND q.running AND q.lease_owner = $8
      RETURNING q.id, c.state, c.result, c.error, c.exit_code),
written AS (UPDATE history SET state = d.state, finished_at = $7, result = d.result, error = d.error,
                exit_code = d.exit_code, lease_owner = NULL, lease_expires_at = NULL
            FROM d WHERE history.id = d.id
            RETURNING history.id, history.state, history.run_after, history.finished_at,
                history.cancel_requested, history.result, history.error, history.exit_code),""" + NOTICES
# The current claim, and a completion that deletes the finished rows instead of keeping them
# (with the same notices).
DELETE_PREPARE = CUR_CLAIM_PREPARE + """
PREPARE complete (uuid[], text[], jsonb[], jsonb[], integer[], timestamptz[], timestamptz, text,
                  text, text, bigint) AS
WITH c AS (SELECT * FROM unnest($1::uuid[], $2::text[], $3::jsonb[], $4::jsonb[], $5::integer[],
                                $6::timestamptz[]) AS c(id, state, result, error, exit_code, run_after)),
written AS (DELETE FROM jobs USING c WHERE jobs.id = c.id AND jobs.state = 'running'
            AND jobs.lease_owner = $8 AND $7 IS NOT NULL RETURNING jobs.id),""" + NOTICES
INSERT = """INSERT INTO {t} (id, tenant, workspace, tool, arguments, state, priority, attempts,
    max_attempts, retry_safe, timeout_s, run_after, created_at)
SELECT gen_random_uuid(), 'bench', NULL, 'noop', '{{}}', 'queued', 0, 0, 1, FALSE, 300,
       now() - interval '1 second', now() FROM generate_series(1, {n}) g;"""
BATCH = ("SELECT COALESCE(array_agg(id), '{{}}') AS ids, COALESCE(array_agg('succeeded'::text), "
         "'{{}}') AS states, COALESCE(array_agg('{{}}'::jsonb), '{{}}') AS results, "
         "COALESCE(array_agg(NULL::jsonb), '{{}}') AS errors, COALESCE(array_agg(NULL::integer), "
         "'{{}}') AS exit_codes, COALESCE(array_agg(NULL::timestamptz), '{{}}') AS run_afters "
         "FROM {running} \\gset")
CYCLE = ("EXECUTE claim (now(), 'bench-node', now() + interval '1 minute', 512, 512);\n{batch}\n"
         "EXECUTE complete (:'ids', :'states', :'results', :'errors', :'exit_codes', "
         ":'run_afters', now(), 'bench-node', 'daytona_mcp_done', 'daytona_mcp_jobs', {per_notice});")


def run(design):
    if design in ("current", "delete"):
        setup = f"TRUNCATE jobs; {INSERT.format(t='jobs', n=N)} VACUUM ANALYZE jobs;"
        prepare = CUR_PREPARE if design == "current" else DELETE_PREPARE
        running, left = "jobs WHERE state = 'running'", "jobs"
    else:
        setup = (f"TRUNCATE history, job_queue; {INSERT.format(t='history', n=N)} "
                 "INSERT INTO job_queue (id, seq, tenant, workspace, priority, run_after, node) "
                 "SELECT id, seq, tenant, workspace, priority, run_after, node FROM history; "
                 "VACUUM ANALYZE history; VACUUM ANALYZE job_queue;")
        prepare, running, left = NEW_PREPARE, "job_queue WHERE running", "history"
    psql(setup + " CHECKPOINT;")
    cycle = CYCLE.format(batch=BATCH.format(running=running), per_notice=PER_NOTICE)
    out = psql("SET plan_cache_mode = force_generic_plan;\n" + prepare + "\\timing on\n"
               + "\n".join([cycle] * (N // CLAIM + 3)) + "\n")
    times = [float(t) for t in re.findall(r"Time: ([\d.]+) ms", out)]
    claim, complete = sum(times[0::3]), sum(times[2::3])
    rest = psql(f"SELECT count(*) FROM {left} WHERE state <> 'succeeded'").strip()
    assert rest == "0", f"{design}: {rest} jobs not worked off"
    return claim, complete


DESIGNS = os.environ.get("DESIGNS", "current,queue").split(",")
NAMES = {"current": "current", "queue": f"queue table, fillfactor {FF}",
         "delete": "current claim, completion deletes (no history)"}


def main():
    unknown = [d for d in DESIGNS if d not in NAMES]
    if unknown:
        sys.exit(f"unknown design(s) {unknown}: choose from {', '.join(NAMES)}")
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    psql(f"DROP DATABASE IF EXISTS {DB}", "postgres")
    psql(f"CREATE DATABASE {DB}", "postgres")
    try:
        migrations = sorted(os.listdir(os.path.join(ROOT, "migrations/postgres")))
        for m in migrations:
            psql(open(os.path.join(ROOT, "migrations/postgres", m)).read())
        psql(NEW_SCHEMA)
        print(f"| round | design | claim ms | completion ms | jobs/s ({N} jobs, claims of {CLAIM}) |")
        print("|---|---|---:|---:|---:|")
        for r in range(1, rounds + 1):
            for design in DESIGNS:
                claim, complete = run(design)
                print(f"| {r} | {NAMES[design]} | {claim:.0f} | {complete:.0f} | "
                      f"{N / (claim + complete) * 1000:,.0f} |", flush=True)
    finally:
        psql(f"DROP DATABASE IF EXISTS {DB}", "postgres")


main()
