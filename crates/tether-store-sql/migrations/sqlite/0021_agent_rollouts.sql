-- Agent rollouts (issue #13): per agent group, the version its agents
-- should run, the stage (canary share first, then all) and whether it is
-- paused. Expand-only: a new table that older servers never read.
-- Kept column-for-column identical to
-- migrations/postgres/0021_agent_rollouts.sql.
CREATE TABLE agent_rollouts (
    group_name TEXT PRIMARY KEY,
    version TEXT NOT NULL,
    -- 'canary' or 'all'.
    stage TEXT NOT NULL,
    canary_percent INTEGER NOT NULL,
    -- Unix milliseconds; NULL while the rollout runs.
    paused_at INTEGER,
    pause_reason TEXT,
    created_at INTEGER NOT NULL,
    -- The last change by an admin (set, pause, resume, promote), unix
    -- milliseconds: a rollback an agent reported before it does not pause
    -- the rollout again.
    updated_at INTEGER NOT NULL
) STRICT;
