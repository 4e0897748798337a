-- How many long tasks (scans, deployments) an agent of the policy runs at
-- once; the agent applies it at its next check-in.
-- Kept identical in migrations/sqlite and migrations/postgres (but for the
-- integer type's name).
ALTER TABLE policies ADD COLUMN max_concurrent_tasks BIGINT NOT NULL DEFAULT 4;
