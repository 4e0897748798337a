-- Check-ins stay HOT on PostgreSQL (issue #12, "PostgreSQL's own cost per
-- check-in"). Every check-in rewrites the agents row with a new last_seen
-- and deadline_at. An update is HOT (no new index entries, the old version
-- pruned in-page) only if no indexed column changes and the page has room;
-- agents_overdue (status, deadline_at) made every check-in a full update
-- that also inserted into all the table's indexes.
--
-- The sweeper finds overdue agents through sweep_at instead: a lower bound
-- of deadline_at that a check-in leaves alone (it only lowers it, when a
-- policy shortened the threshold, or fills it in when NULL). The sweeper
-- raises it to the deadline when it finds an agent that is not overdue yet,
-- so each agent costs one non-HOT update per threshold, in the sweeper's
-- batch, not one per check-in. Rows written by a server of the previous
-- release (which knows nothing of sweep_at) stay correct: a check-in only
-- moves deadline_at later, so sweep_at stays a lower bound, and NULL is
-- always a candidate.
--
-- Expand-only: the new column is nullable; dropping agents_overdue only
-- makes an older server's sweep query scan instead of use the index.
-- Kept in step with migrations/sqlite/0020_hot_checkins.sql (no fillfactor
-- there: SQLite has no such storage parameter).
ALTER TABLE agents ADD COLUMN sweep_at BIGINT;
UPDATE agents SET sweep_at = deadline_at WHERE status = 'active' AND removed_at IS NULL;
CREATE INDEX agents_sweep ON agents (sweep_at) WHERE status = 'active' AND removed_at IS NULL;
DROP INDEX agents_overdue;
-- Room in each page for the new version of a row, so the update can stay
-- HOT. Applies to pages written from now on (a VACUUM FULL or pg_repack
-- rewrites the old ones).
ALTER TABLE agents SET (fillfactor = 70);
