-- Snapshots of sandboxes' files (`snapshot_sandbox`): one row per archive, which lives in the
-- data dir of `node` (`<data_dir>/snapshots/<id>.tar.gz`). A snapshot outlives its sandbox, so
-- `sandbox_id` is not a foreign key. `size_bytes` counts against the tenant's `quotas.max_disk`.
CREATE TABLE snapshots (
    id            TEXT PRIMARY KEY,
    tenant        TEXT NOT NULL,
    name          TEXT,
    sandbox_id    TEXT NOT NULL,
    sandbox_name  TEXT NOT NULL,
    driver        TEXT NOT NULL,
    node          TEXT NOT NULL,
    size_bytes    INTEGER NOT NULL CHECK (size_bytes >= 0),
    digest        TEXT NOT NULL,
    entries       INTEGER NOT NULL,
    created_at    INTEGER NOT NULL
);
CREATE INDEX snapshots_tenant ON snapshots (tenant, created_at);
