-- Fewer index entries per submission (issue 10). A submission wrote six B-tree entries for its
-- job: the primary key, the two claim indexes, `jobs_tenant_queued` (the quota's count), and
-- `jobs_tenant_seq` and `jobs_workspace_state`, the history indexes that listings read. The last
-- two held every job that is not running, so a queued job was in them from its submission, and
-- its completion wrote its entry again (no update of a job is HOT). They now hold finished jobs
-- only; listings read the queued jobs from `jobs_tenant_queued`, which becomes `(tenant, seq
-- DESC)` for that (the quota still counts from it), or from `jobs_queued_workspace` with a
-- workspace filter (`PgStore::list_jobs`). Each submission writes four entries for its job.
-- The audit row's `audit_log_at` was a B-tree entry per row read only by retention and by time
-- ranges: rows arrive in time order, so a BRIN index over `at` serves both for next to nothing
-- per row, as `jobs_finished` does for jobs.
-- Nodes of an earlier version list jobs with `state <> 'running'`, which these indexes do not
-- match: during a rolling upgrade their listings are slower (correct, from the table), not wrong.
DROP INDEX jobs_tenant_seq;
CREATE INDEX jobs_tenant_seq ON jobs (tenant, seq DESC)
    WHERE state IN ('succeeded', 'failed', 'cancelled');
DROP INDEX jobs_workspace_state;
CREATE INDEX jobs_workspace_state ON jobs (workspace, state, seq DESC)
    WHERE workspace IS NOT NULL AND state IN ('succeeded', 'failed', 'cancelled');
DROP INDEX jobs_tenant_queued;
CREATE INDEX jobs_tenant_queued ON jobs (tenant, seq DESC) WHERE state = 'queued';
DROP INDEX audit_log_at;
CREATE INDEX audit_log_at ON audit_log USING brin (at) WITH (autosummarize = on);
-- `jobs_finished` covered every job, and a BRIN index is written on every insert into a block
-- range it has summarized: a `SAMEPAGE_UPDATE` WAL record and an exclusive lock on the range's
-- summary per submission, the same page for every concurrent submitter, for a job with no
-- `finished_at` yet. Partial, it is written at the completion only (retention, its one reader,
-- asks for finished jobs anyway).
DROP INDEX jobs_finished;
CREATE INDEX jobs_finished ON jobs USING brin (finished_at) WITH (autosummarize = on)
    WHERE finished_at IS NOT NULL;
