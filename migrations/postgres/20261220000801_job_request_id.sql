-- The id of the HTTP request that submitted the job (its X-Request-Id), so that one id finds
-- the request's audit row, the job and the log lines of both. NULL for jobs submitted without
-- a request (tests, benchmarks, jobs from before this migration).
ALTER TABLE jobs ADD COLUMN request_id TEXT;
