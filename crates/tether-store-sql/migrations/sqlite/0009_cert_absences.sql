-- "Gone" is decided per completed scan, not per result chunk: an absence a
-- scan observes (no TLS, or silence) at a location with a current
-- certificate waits here under its scan (task and epoch) until the scan
-- completes, then is acted on and deleted. A silent location is gone only
-- after two completed scans in a row found it silent.
-- Kept column-for-column identical to migrations/postgres/0009_cert_absences.sql.

CREATE TABLE cert_absences (
    task_id TEXT NOT NULL,
    epoch INTEGER NOT NULL,
    address TEXT NOT NULL,
    sni TEXT NOT NULL,
    agent_id TEXT NOT NULL,
    -- no_tls (refused, not TLS, a TLS failure without a chain) or silent
    -- (filtered).
    kind TEXT NOT NULL,
    -- The agent's time of the probe.
    observed_at INTEGER NOT NULL,
    PRIMARY KEY (task_id, epoch, address, sni, agent_id)
) STRICT;

-- Completed scans in a row that found the location silent, and the newest
-- one's observation time (so a scan is counted once, and in order).
ALTER TABLE cert_locations ADD COLUMN silent_scans INTEGER NOT NULL DEFAULT 0;
ALTER TABLE cert_locations ADD COLUMN silent_at INTEGER;
