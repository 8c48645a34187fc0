"""Writes the SQL script that benches/pg/instructions.sh runs under callgrind: CYCLES rounds of
one claim (the walk over every workspace, CLAIM with CLAIM_HEADS_ALL) and one completion of
every running job, both taken from a revision's src/store/postgres.rs (read from stdin) with
their parameters filled in.  Usage: statements.py CLAIM_SIZE CYCLES < postgres.rs > script.sql
"""
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
    for param, value in [("$1", "now()"), ("$2", "'bench-node'"),
                         ("$3", "now() + interval '1 minute'"), ("$4", f"{size}::bigint"),
                         ("$5", "0::bigint")]:
        claim = claim.replace(param, value)
    complete = literal(src, src.index("async fn complete("))
    # The completer's batch: every running job succeeded, as the bench's no-op jobs do.
    batch = ("(SELECT jsonb_agg(jsonb_build_object('id', id, 'state', 'succeeded', "
             "'result', '{}'::jsonb, 'error', NULL, 'exit_code', NULL, 'run_after', NULL)) "
             "FROM jobs WHERE state = 'running')")
    for param, value in [("$1::jsonb", batch), ("$2", "now()"), ("$3", "'bench-node'"),
                         ("$4", "'daytona_mcp_done'"), ("$5", "'daytona_mcp_jobs'")]:
        complete = complete.replace(param, value)
    print("SELECT pg_backend_pid();")
    for _ in range(cycles):
        print(claim + ";")
        print(complete + ";")


main()
