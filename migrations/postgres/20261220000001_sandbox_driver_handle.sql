-- The driver's own name for a sandbox (Daytona assigns its own ids), kept beside our stable
-- `id`, which callers use. NULL for rows made before drivers assigned handles: the local driver's
-- handle is the sandbox id itself.
ALTER TABLE sandboxes ADD COLUMN driver_handle TEXT;
