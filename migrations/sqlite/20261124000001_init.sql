-- Initial schema for the embedded SQLite backend.
-- Timestamps are INTEGER microseconds since the Unix epoch (UTC) so that
-- comparisons and ordering never depend on text formatting.

CREATE TABLE jobs (
    -- Monotonic enqueue order; FIFO within a workspace follows it.
    seq              INTEGER PRIMARY KEY AUTOINCREMENT,
    id               TEXT    NOT NULL UNIQUE,
    tenant           TEXT    NOT NULL,
    -- Serialization key: at most one running job per workspace. NULL = no serialization.
    workspace        TEXT,
    tool             TEXT    NOT NULL,
    arguments        TEXT    NOT NULL,
    state            TEXT    NOT NULL
        CHECK (state IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
    priority         INTEGER NOT NULL DEFAULT 0,
    attempts         INTEGER NOT NULL DEFAULT 0,
    max_attempts     INTEGER NOT NULL DEFAULT 1,
    retry_safe       INTEGER NOT NULL DEFAULT 0,
    timeout_s        INTEGER NOT NULL,
    run_after        INTEGER NOT NULL,
    created_at       INTEGER NOT NULL,
    started_at       INTEGER,
    finished_at      INTEGER,
    lease_owner      TEXT,
    lease_expires_at INTEGER,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    idempotency_key  TEXT,
    result           TEXT,
    error            TEXT,
    exit_code        INTEGER,
    UNIQUE (tenant, idempotency_key)
);

-- Invariant 2 of ARCHITECTURE.md: the database itself refuses a second running job in a workspace.
CREATE UNIQUE INDEX jobs_one_running_per_workspace ON jobs (workspace) WHERE state = 'running';
CREATE INDEX jobs_queued ON jobs (priority DESC, seq) WHERE state = 'queued';
CREATE INDEX jobs_workspace_state ON jobs (workspace, state, priority DESC, seq);
CREATE INDEX jobs_running_lease ON jobs (lease_expires_at) WHERE state = 'running';
CREATE INDEX jobs_tenant_seq ON jobs (tenant, seq DESC);
CREATE INDEX jobs_finished ON jobs (finished_at) WHERE finished_at IS NOT NULL;

-- Captured stdout/stderr of a job, in chunks, for replay over the events stream.
CREATE TABLE job_output (
    job_id     TEXT    NOT NULL,
    seq        INTEGER NOT NULL,
    stream     TEXT    NOT NULL CHECK (stream IN ('stdout', 'stderr')),
    data       BLOB    NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (job_id, seq)
);

CREATE TABLE sandboxes (
    id                TEXT    PRIMARY KEY,
    tenant            TEXT    NOT NULL,
    name              TEXT    NOT NULL,
    driver            TEXT    NOT NULL,
    language          TEXT    NOT NULL,
    status            TEXT    NOT NULL,
    image             TEXT,
    git_repo          TEXT,
    git_branch        TEXT,
    environment_vars  TEXT    NOT NULL DEFAULT '{}',
    labels            TEXT    NOT NULL DEFAULT '{}',
    resources         TEXT    NOT NULL DEFAULT '{}',
    persistent        INTEGER NOT NULL DEFAULT 0,
    auto_stop_minutes INTEGER,
    created_at        INTEGER NOT NULL,
    last_accessed     INTEGER NOT NULL,
    UNIQUE (tenant, name)
);

-- Append-only: the store never updates or deletes audit rows.
CREATE TABLE audit_log (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    at            INTEGER NOT NULL,
    request_id    TEXT,
    tenant        TEXT    NOT NULL,
    key_id        TEXT,
    client_addr   TEXT,
    action        TEXT    NOT NULL,
    workspace     TEXT,
    job_id        TEXT,
    outcome       TEXT    NOT NULL,
    duration_ms   INTEGER,
    args_digest   TEXT,
    args_summary  TEXT
);
CREATE INDEX audit_log_at ON audit_log (at);
CREATE INDEX audit_log_tenant_at ON audit_log (tenant, at);

CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END;
CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END;
