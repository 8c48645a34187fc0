-- Fewer index insertions per job (issue 10). No update of a job can be HOT (its state is in
-- the predicate of several partial indexes), so every claim and completion inserts a new entry
-- into every index whose predicate the new row version matches. Three indexes held entries no
-- query reads:
-- * the idempotency constraint indexed every job, though only jobs with a key are ever looked
--   up or conflict there (a NULL key never conflicts): it becomes a partial unique index, which
--   `ON CONFLICT (tenant, idempotency_key) WHERE idempotency_key IS NOT NULL` infers;
-- * `jobs_workspace_state` indexed jobs without a workspace, which every query of it excludes
--   (`workspace = $1`);
-- * `jobs_running_lease` keeps its entries (running jobs, the only ones with a lease) but is
--   keyed by the lease alone, so that the claim's "is this workspace running a job?" probe can
--   only be planned on `jobs_one_running_per_workspace` (both partial indexes used to cover
--   `state = 'running'`, and with statistics taken while nothing ran the planner scanned every
--   running job's lease entry once per workspace).
ALTER TABLE jobs DROP CONSTRAINT jobs_tenant_idempotency_key_key;
CREATE UNIQUE INDEX jobs_tenant_idempotency ON jobs (tenant, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
DROP INDEX jobs_workspace_state;
CREATE INDEX jobs_workspace_state ON jobs (workspace, state, seq DESC) WHERE workspace IS NOT NULL;
DROP INDEX jobs_running_lease;
CREATE INDEX jobs_running_lease ON jobs (lease_expires_at) WHERE lease_expires_at IS NOT NULL;
