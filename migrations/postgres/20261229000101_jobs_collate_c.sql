-- Byte order for the text keys of the jobs' and audit rows' indexes (issue 10). Under any libc
-- locale but "C" and "POSIX" (`C.UTF-8` and `en_US.UTF-8` included, on PostgreSQL 15), every
-- comparison of two index keys copies both strings and calls strcoll(); the B-tree
-- descents of every insert, claim and completion compare tenants and workspaces that way.
-- These columns are identifiers, compared for equality and ordered only inside the claim's
-- walk over workspaces, so byte order is all they need. Measured with
-- benches/pg/instructions.sh: 6.5 % fewer instructions in the claim and completion statements
-- per keyed job (C.UTF-8 database); more under locales whose strcoll() is costlier.
-- (`state` keeps the database's collation: a trigger's definition depends on it.)
ALTER TABLE jobs
    ALTER COLUMN tenant TYPE text COLLATE "C",
    ALTER COLUMN workspace TYPE text COLLATE "C",
    ALTER COLUMN node TYPE text COLLATE "C",
    ALTER COLUMN idempotency_key TYPE text COLLATE "C";
ALTER TABLE audit_log ALTER COLUMN tenant TYPE text COLLATE "C";
