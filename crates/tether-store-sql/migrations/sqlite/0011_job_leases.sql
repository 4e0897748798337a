-- Singleton jobs' leases (issue #12): one row per job that must run on one
-- server at a time. Times are unix milliseconds.
-- Kept column-for-column identical to migrations/postgres/0011_job_leases.sql.
-- Numbered 0011 because 0008 to 0010 are taken on other branches.

CREATE TABLE job_leases (
    job TEXT PRIMARY KEY,
    -- The server process holding it: instance id and a per-start nonce.
    holder TEXT NOT NULL,
    -- Grows by one each time another holder takes the lease.
    epoch INTEGER NOT NULL,
    acquired_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
) STRICT;
