-- Audit retention: rows leave the audit log only through the store's prune, which sets a
-- horizon in `audit_prune` inside its own transaction, deletes the rows older than it and
-- clears it before committing. Any other DELETE (no horizon set, or a row at or after it) is
-- refused, as every UPDATE still is.
CREATE TABLE audit_prune (
    id      INTEGER PRIMARY KEY CHECK (id = 1),
    before  INTEGER NOT NULL
);

DROP TRIGGER audit_log_no_delete;
CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
WHEN NOT EXISTS (SELECT 1 FROM audit_prune WHERE OLD.at < audit_prune.before)
BEGIN SELECT RAISE(ABORT, 'audit_log is append-only: rows leave only through the retention prune'); END;
