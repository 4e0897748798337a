-- The host:port targets a policy adds to the connectivity doctor's checks,
-- as a JSON array of strings like the other JSON columns.
-- Kept identical in migrations/sqlite and migrations/postgres.
ALTER TABLE policies ADD COLUMN targets TEXT NOT NULL DEFAULT '[]';
