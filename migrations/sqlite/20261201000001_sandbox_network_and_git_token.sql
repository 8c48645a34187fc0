-- Per-sandbox network access (off unless the operator allows it and the sandbox asked) and the
-- sandbox's git token for HTTPS remotes (a secret like environment_vars: never shown or audited).
ALTER TABLE sandboxes ADD COLUMN network INTEGER NOT NULL DEFAULT 0;
ALTER TABLE sandboxes ADD COLUMN git_token TEXT;
