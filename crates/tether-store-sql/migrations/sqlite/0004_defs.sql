-- Definitions (signed content channels): what each agent reports about its
-- channels, what each policy says about them, and every published version.
-- The TUF repository on disk stays the source of truth for versions; this
-- table mirrors it so that summaries are one query.
-- Kept column-for-column identical to migrations/postgres/0004_defs.sql.

-- The agent's channels as reported at check-in: a JSON array of ChannelState.
ALTER TABLE agents ADD COLUMN defs TEXT NOT NULL DEFAULT '[]';
-- The policy's DefsPolicy as JSON; '{}' reads as the defaults (serde).
ALTER TABLE policies ADD COLUMN defs TEXT NOT NULL DEFAULT '{}';

CREATE TABLE defs_versions (
    channel TEXT NOT NULL,
    version INTEGER NOT NULL,
    -- SHA-256 (hex) and length of the content.
    sha256 TEXT NOT NULL,
    length INTEGER NOT NULL,
    -- "text" or "binary".
    content TEXT NOT NULL,
    published_at INTEGER NOT NULL,
    notes TEXT,
    full_size INTEGER NOT NULL,
    -- The deltas published with the version: a JSON array of DeltaInfo.
    deltas TEXT NOT NULL,
    PRIMARY KEY (channel, version)
) STRICT;
