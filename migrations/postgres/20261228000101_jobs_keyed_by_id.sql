-- Jobs are keyed by `id` alone (issue 10). No update of a job is HOT (its state is in the
-- predicate of several partial indexes), so each claim and completion inserts an entry into
-- every index the new row version matches, and the primary key on `seq` was one of them: a
-- B-tree entry per claim and per completion that no hot statement needed. Every lookup of one
-- job is by `id`; the claim now addresses the rows it found by `ctid`; ordering by `seq` is
-- served by the partial queue indexes (queued jobs), `jobs_tenant_seq` (one tenant's history,
-- and every tenant's, merged per tenant) and `jobs_workspace_state`. `seq` stays unique by
-- construction (an identity column that is never written), so its index only cost writes.
-- Measured with benches/pg/instructions.sh: 9 % of PostgreSQL's instructions per unkeyed job,
-- 6 % per keyed job.
ALTER TABLE jobs DROP CONSTRAINT jobs_pkey;
ALTER TABLE jobs DROP CONSTRAINT jobs_id_key;
ALTER TABLE jobs ADD CONSTRAINT jobs_pkey PRIMARY KEY (id);
