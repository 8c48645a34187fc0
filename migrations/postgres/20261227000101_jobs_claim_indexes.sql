-- Fewer index entries per claim and completion (issue 10). No update of a job is HOT, so a
-- claim inserts a new entry into every index whose predicate the running row matches, and a
-- completion into every index the finished row matches. Three of those entries were not needed:
-- * `jobs_running_lease`: every running job is already in `jobs_one_running_per_workspace`
--   (jobs without a workspace too: a NULL key is indexed, only never unique-checked), and the
--   running jobs are few (at most every node's concurrency), so the rescuer's "running with a
--   lapsed lease" reads that index and filters on the lease; heartbeats no longer touch an index
--   column either;
-- * `jobs_tenant_open` indexed queued and running jobs: it now holds queued jobs only (an entry
--   at enqueue, none at the claim); the quota adds the tenant's running jobs, read from the same
--   small running index;
-- * `jobs_finished` was a B-tree entry per completion, read only by retention: a BRIN index over
--   `finished_at` costs next to nothing per new row (rows land in the table's unsummarized tail)
--   and still lets retention skip every block range that finished after its cut-off.
DROP INDEX jobs_running_lease;
DROP INDEX jobs_tenant_open;
CREATE INDEX jobs_tenant_queued ON jobs (tenant) WHERE state = 'queued';
DROP INDEX jobs_finished;
CREATE INDEX jobs_finished ON jobs USING brin (finished_at) WITH (autosummarize = on);
