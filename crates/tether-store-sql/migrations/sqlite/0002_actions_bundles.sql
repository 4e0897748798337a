-- Actions queued for agents, and escalation bundles they upload.
-- Kept column-for-column identical to migrations/postgres/0002_actions_bundles.sql.

-- The cheap flag the check-in reads (it comes with the agent row it already
-- loads): only when it is above zero does the server look for actions.
ALTER TABLE agents ADD COLUMN pending_actions INTEGER NOT NULL DEFAULT 0;
-- The last doctor verdict the agent reported (JSON DoctorSummary).
ALTER TABLE agents ADD COLUMN last_doctor TEXT;

CREATE TABLE actions (
    id TEXT PRIMARY KEY,
    agent_id TEXT NOT NULL REFERENCES agents (id),
    -- The ActionKind as JSON, e.g. {"type":"doctor","upload":true}.
    kind TEXT NOT NULL,
    -- queued, delivered or completed.
    state TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    delivered_at INTEGER,
    completed_at INTEGER,
    -- The ActionResult as JSON, once completed.
    result TEXT
) STRICT;

CREATE INDEX actions_agent ON actions (agent_id, state, created_at);

-- Bundles live in the database, not beside it: a PostgreSQL-backed control
-- plane may run several servers without a shared data dir, and one backup
-- then holds everything. Each agent keeps only its newest few.
CREATE TABLE bundles (
    id TEXT PRIMARY KEY,
    agent_id TEXT NOT NULL REFERENCES agents (id),
    size_bytes INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    -- The doctor verdict from the bundle's manifest (JSON DoctorSummary).
    verdict TEXT,
    created_at INTEGER NOT NULL,
    data BLOB NOT NULL
) STRICT;

CREATE INDEX bundles_agent ON bundles (agent_id, created_at);
