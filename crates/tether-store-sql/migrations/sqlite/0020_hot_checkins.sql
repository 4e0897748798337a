-- The sweeper's index moves from deadline_at, which every check-in changes,
-- to sweep_at, a lower bound of it that check-ins leave alone (see
-- migrations/postgres/0020_hot_checkins.sql for why: HOT updates there).
-- Kept the same here so both backends run one SQL text; on SQLite it saves
-- the delete and insert in the index on every check-in.
ALTER TABLE agents ADD COLUMN sweep_at INTEGER;
UPDATE agents SET sweep_at = deadline_at WHERE status = 'active' AND removed_at IS NULL;
CREATE INDEX agents_sweep ON agents (sweep_at) WHERE status = 'active' AND removed_at IS NULL;
DROP INDEX agents_overdue;
