-- Quotas count a tenant's queued and running jobs inside the enqueue transaction; this index
-- keeps that count to the open jobs instead of the tenant's whole history.
CREATE INDEX jobs_tenant_open ON jobs (tenant) WHERE state IN ('queued', 'running');
