-- The history indexes leave running jobs out (issue 10). No update of a job is HOT, so a claim
-- inserted an entry for the running row version into `jobs_tenant_seq` and (for workspace jobs)
-- `jobs_workspace_state`, and the completion inserted the next one a moment later: two B-tree
-- entries per job that only a listing of running jobs would read. Running jobs are few (at most
-- every node's concurrency) and all in `jobs_one_running_per_workspace`, so listings read them
-- from there and the jobs that are not running from these indexes (`PgStore::list_jobs`).
-- Measured with benches/pg/instructions.sh: 7 % of PostgreSQL's instructions per unkeyed job,
-- 8 % per keyed job.
DROP INDEX jobs_tenant_seq;
CREATE INDEX jobs_tenant_seq ON jobs (tenant, seq DESC) WHERE state <> 'running';
DROP INDEX jobs_workspace_state;
CREATE INDEX jobs_workspace_state ON jobs (workspace, state, seq DESC)
    WHERE workspace IS NOT NULL AND state <> 'running';
