-- Audit retention: rows leave the audit log only through the store's prune, which sets the
-- transaction-local setting `daytona_mcp.audit_prune_before` (set_config(..., true)) and deletes
-- the rows older than it in the same transaction. Any other DELETE (no horizon set, or a row at
-- or after it) is refused, as every UPDATE still is.
CREATE OR REPLACE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    horizon TEXT := current_setting('daytona_mcp.audit_prune_before', true);
BEGIN
    IF TG_OP = 'DELETE' AND horizon IS NOT NULL AND horizon <> ''
       AND OLD.at < horizon::timestamptz THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION 'audit_log is append-only: rows leave only through the retention prune';
END;
$$;

-- TRUNCATE fires no row triggers: refuse it outright.
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only();
