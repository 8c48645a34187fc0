-- Claims first look at a window of the oldest queued workspace jobs in priority/FIFO order
-- (issue 10): with many workspaces, the heads of free workspaces are almost always among them,
-- so a small claim costs a few index probes instead of a walk over every workspace with queued
-- jobs. Only queued rows are in this index, so claiming a job (queued -> running) adds no entry.
CREATE INDEX jobs_queued_keyed ON jobs (priority DESC, seq) WHERE state = 'queued' AND workspace IS NOT NULL;
