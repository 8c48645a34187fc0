-- Initial schema for the PostgreSQL backend (several nodes may share it).

CREATE TABLE jobs (
    -- Monotonic enqueue order; FIFO within a workspace follows it.
    seq              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id               UUID        NOT NULL UNIQUE,
    tenant           TEXT        NOT NULL,
    -- Serialization key: at most one running job per workspace. NULL = no serialization.
    workspace        TEXT,
    tool             TEXT        NOT NULL,
    arguments        JSONB       NOT NULL,
    state            TEXT        NOT NULL
        CHECK (state IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
    priority         INTEGER     NOT NULL DEFAULT 0,
    attempts         INTEGER     NOT NULL DEFAULT 0,
    max_attempts     INTEGER     NOT NULL DEFAULT 1,
    retry_safe       BOOLEAN     NOT NULL DEFAULT FALSE,
    timeout_s        BIGINT      NOT NULL,
    run_after        TIMESTAMPTZ NOT NULL,
    created_at       TIMESTAMPTZ NOT NULL,
    started_at       TIMESTAMPTZ,
    finished_at      TIMESTAMPTZ,
    lease_owner      TEXT,
    lease_expires_at TIMESTAMPTZ,
    cancel_requested BOOLEAN     NOT NULL DEFAULT FALSE,
    idempotency_key  TEXT,
    result           JSONB,
    error            JSONB,
    exit_code        INTEGER,
    UNIQUE (tenant, idempotency_key)
);

-- Invariant 2 of ARCHITECTURE.md: the database itself refuses a second running job in a workspace,
-- across every node that shares this database.
CREATE UNIQUE INDEX jobs_one_running_per_workspace ON jobs (workspace) WHERE state = 'running';
-- Claims: ready jobs without a workspace in priority/FIFO order, and each workspace's first
-- queued job (reached by a loose index scan over the workspaces that have queued jobs).
CREATE INDEX jobs_queued_free ON jobs (priority DESC, seq) WHERE state = 'queued' AND workspace IS NULL;
CREATE INDEX jobs_queued_workspace ON jobs (workspace, priority DESC, seq) WHERE state = 'queued';
CREATE INDEX jobs_workspace_state ON jobs (workspace, state, seq DESC);
CREATE INDEX jobs_running_lease ON jobs (lease_expires_at) WHERE state = 'running';
CREATE INDEX jobs_tenant_seq ON jobs (tenant, seq DESC);
CREATE INDEX jobs_finished ON jobs (finished_at) WHERE finished_at IS NOT NULL;

-- Captured stdout/stderr of a job, in chunks, for replay over the events stream.
CREATE TABLE job_output (
    job_id     UUID        NOT NULL,
    seq        BIGINT      NOT NULL,
    stream     TEXT        NOT NULL CHECK (stream IN ('stdout', 'stderr')),
    data       BYTEA       NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (job_id, seq)
);

CREATE TABLE sandboxes (
    id                TEXT        PRIMARY KEY,
    tenant            TEXT        NOT NULL,
    name              TEXT        NOT NULL,
    driver            TEXT        NOT NULL,
    language          TEXT        NOT NULL,
    status            TEXT        NOT NULL,
    image             TEXT,
    git_repo          TEXT,
    git_branch        TEXT,
    environment_vars  JSONB       NOT NULL DEFAULT '{}',
    labels            JSONB       NOT NULL DEFAULT '{}',
    resources         JSONB       NOT NULL DEFAULT '{}',
    persistent        BOOLEAN     NOT NULL DEFAULT FALSE,
    auto_stop_minutes INTEGER,
    created_at        TIMESTAMPTZ NOT NULL,
    last_accessed     TIMESTAMPTZ NOT NULL,
    UNIQUE (tenant, name)
);

-- Append-only: the store never updates or deletes audit rows.
CREATE TABLE audit_log (
    id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at            TIMESTAMPTZ NOT NULL,
    request_id    TEXT,
    tenant        TEXT        NOT NULL,
    key_id        TEXT,
    client_addr   TEXT,
    action        TEXT        NOT NULL,
    workspace     TEXT,
    job_id        UUID,
    outcome       TEXT        NOT NULL,
    duration_ms   BIGINT,
    args_digest   TEXT,
    args_summary  JSONB
);
CREATE INDEX audit_log_at ON audit_log (at);
CREATE INDEX audit_log_tenant_at ON audit_log (tenant, at);

CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only';
END;
$$;
CREATE TRIGGER audit_log_no_update_delete BEFORE UPDATE OR DELETE ON audit_log
FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();
