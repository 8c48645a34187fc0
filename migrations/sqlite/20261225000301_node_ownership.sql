-- Node ownership. A local-driver sandbox lives on one node's disk: its row names that node, and
-- so does every job on it (`jobs.node`), which only that node claims. NULL = any node (Daytona
-- sandboxes, jobs without a sandbox, rows from before this migration).
ALTER TABLE sandboxes ADD COLUMN node TEXT;
ALTER TABLE jobs ADD COLUMN node TEXT;
-- Queued jobs bound to a node, for the rescuer's "node gone" pass.
CREATE INDEX jobs_queued_node ON jobs (node) WHERE state = 'queued' AND node IS NOT NULL;
-- Every node's last sign of life (microseconds since the epoch), written by its heartbeat loop.
-- A node whose heartbeat is older than the horizon (`queue.node_horizon_s`) is gone: its queued
-- jobs fail with `node_gone`.
CREATE TABLE nodes (
    id           TEXT PRIMARY KEY,
    started_at   INTEGER NOT NULL,
    heartbeat_at INTEGER NOT NULL
);
