"""Writes the SQL script that benches/pg/instructions.sh runs under callgrind: CYCLES rounds of
one claim (the walk over every workspace, CLAIM with CLAIM_HEADS_ALL) and one completion of
every running job, both taken from a revision's src/store/postgres.rs (read from stdin),
prepared, and executed with their parameters.  Usage: statements.py CLAIM_SIZE CYCLES < postgres.rs > script.sql
"""
import os
import re
import sys


def literal(src, start):
    """The Rust string literal (with `\\` line continuations) that starts at or after start."""
    i = src.index('"', start)
    j = i + 1
    while src[j] != '"' or src[j - 1] == "\\":
        j += 1
    body = src[i + 1:j].replace("\\\n", " ").replace('\\"', '"')
    return re.sub(r"\s+", " ", body).strip()


def const(src, name):
    return literal(src, src.index(f"const {name}: &str ="))


def main():
    size, cycles = int(sys.argv[1]), int(sys.argv[2])
    src = sys.stdin.read()
    claim = const(src, "CLAIM").replace("{heads}", const(src, "CLAIM_HEADS_ALL"))
    claim = claim.replace("{free}", "TRUE")
    start = src.index("async fn complete(")
    complete = literal(src, src.index("sqlx::query(", start))
    # Prepared and executed as the server's driver does, on the plans the revision's server
    # gets: generic ones where its hot pool forces them, else PostgreSQL's choice.
    mode = "force_generic_plan" if "force_generic_plan" in src else "auto"
    mode = os.environ.get("PLAN_CACHE_MODE", mode)
    print("SELECT pg_backend_pid();")
    print(f"SET plan_cache_mode = {mode};")
    print("PREPARE claim (timestamptz, text, timestamptz, bigint, bigint) AS " + claim + ";")
    # The completer's batch: every running job succeeded, as the bench's no-op jobs do (built
    # by a statement of its own and sent back as parameters, as the completer sends them): one
    # JSON document in revisions that read it with `jsonb_to_recordset`, else one array per
    # column.
    if "jsonb_to_recordset" in complete:
        print("PREPARE complete (jsonb, timestamptz, text, text, text) AS "
              + complete.replace("$1::jsonb", "$1") + ";")
        batch = ("SELECT COALESCE(jsonb_agg(jsonb_build_object('id', id, 'state', 'succeeded', "
                 "'result', '{}'::jsonb, 'error', NULL, 'exit_code', NULL, 'run_after', NULL)), "
                 "'[]') AS batch FROM jobs WHERE state = 'running' \\gset")
        execute = ("EXECUTE complete (:'batch', now(), 'bench-node', 'daytona_mcp_done', "
                   "'daytona_mcp_jobs');")
    else:
        # Revisions that share `done` notices among jobs take how many ids one notice holds.
        per_notice = re.search(r"const DONE_IDS_PER_NOTICE: i64 = (\d+);", src)
        print("PREPARE complete (uuid[], text[], jsonb[], jsonb[], integer[], timestamptz[], "
              "timestamptz, text, text, text" + (", bigint" if per_notice else "") + ") AS "
              + complete + ";")
        batch = ("SELECT COALESCE(array_agg(id), '{}') AS ids, "
                 "COALESCE(array_agg('succeeded'::text), '{}') AS states, "
                 "COALESCE(array_agg('{}'::jsonb), '{}') AS results, "
                 "COALESCE(array_agg(NULL::jsonb), '{}') AS errors, "
                 "COALESCE(array_agg(NULL::integer), '{}') AS exit_codes, "
                 "COALESCE(array_agg(NULL::timestamptz), '{}') AS run_afters "
                 "FROM jobs WHERE state = 'running' \\gset")
        execute = ("EXECUTE complete (:'ids', :'states', :'results', :'errors', :'exit_codes', "
                   ":'run_afters', now(), 'bench-node', 'daytona_mcp_done', 'daytona_mcp_jobs'"
                   + (f", {per_notice.group(1)}" if per_notice else "") + ");")
    for _ in range(cycles):
        print(f"EXECUTE claim (now(), 'bench-node', now() + interval '1 minute', {size}, 0);")
        print(batch)
        print(execute)

if __name__ == "__main__":
    main()
