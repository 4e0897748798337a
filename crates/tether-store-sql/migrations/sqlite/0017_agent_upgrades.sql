-- Agent upgrades (issue #13): each agent's last upgrade as its host
-- reported it at check-in (upgrading, upgraded, rolled_back with the
-- reason), for `tether agents list|show`.
-- Kept column-for-column identical to
-- migrations/postgres/0017_agent_upgrades.sql.
CREATE TABLE agent_upgrades (
    agent_id TEXT PRIMARY KEY REFERENCES agents (id),
    state TEXT NOT NULL,
    version TEXT NOT NULL,
    from_version TEXT,
    reason TEXT,
    -- The host's time of the outcome, unix milliseconds.
    at INTEGER NOT NULL,
    -- When the server recorded it, unix milliseconds.
    recorded_at INTEGER NOT NULL
);
