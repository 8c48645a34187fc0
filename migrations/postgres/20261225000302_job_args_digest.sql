-- The SHA-256 of the submitted tool and its canonical arguments (secret values masked), so that
-- a repeated idempotency key can be told apart from a key reused for a different request: the
-- same digest replays the original job, another one is refused (409). NULL on jobs from before
-- this migration and on bulk loads, which any repetition replays.
ALTER TABLE jobs ADD COLUMN args_digest TEXT;
