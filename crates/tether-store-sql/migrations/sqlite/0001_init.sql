-- Tether store, SQLite dialect. Append-only: never edit a released migration.
-- Timestamps are INTEGER unix milliseconds, UUIDs hyphenated lowercase TEXT,
-- secrets only as SHA-256 digests (BLOB), structured facts as JSON TEXT.
-- Tables are STRICT so a value of the wrong type cannot be stored at all.
-- Kept column-for-column identical to migrations/postgres/0001_init.sql.

CREATE TABLE admin_credentials (
    hash BLOB PRIMARY KEY,
    label TEXT NOT NULL,
    created_at INTEGER NOT NULL
) STRICT;

CREATE TABLE policies (
    name TEXT PRIMARY KEY,
    revision INTEGER NOT NULL,
    checkin_interval_secs INTEGER NOT NULL,
    jitter_percent INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
) STRICT;

-- The policy every agent falls back to; it always exists.
INSERT INTO policies (name, revision, checkin_interval_secs, jitter_percent, updated_at)
VALUES ('default', 1, 30, 10, CAST(strftime('%s', 'now') AS INTEGER) * 1000);

CREATE TABLE tokens (
    id TEXT PRIMARY KEY,
    hash BLOB NOT NULL UNIQUE,
    kind TEXT NOT NULL,
    group_name TEXT NOT NULL,
    policy TEXT NOT NULL,
    not_before INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    max_uses INTEGER,
    uses INTEGER NOT NULL DEFAULT 0,
    require_approval INTEGER NOT NULL,
    revoked_at INTEGER,
    created_at INTEGER NOT NULL
) STRICT;

CREATE TABLE agents (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    kind TEXT NOT NULL,
    group_name TEXT NOT NULL,
    policy TEXT NOT NULL,
    status TEXT NOT NULL,
    requires_approval INTEGER NOT NULL,
    approved_at INTEGER,
    enrolled_at INTEGER NOT NULL,
    token_id TEXT NOT NULL REFERENCES tokens (id),
    -- NULL once the agent is removed, so the credential stops working at once.
    credential_hash BLOB UNIQUE,
    -- The credential replaced at the last re-registration.
    previous_credential_hash BLOB,
    last_seen INTEGER,
    deadline_at INTEGER,
    stopped_at INTEGER,
    credential_rejected_at INTEGER,
    removed_at INTEGER,
    external_ip TEXT,
    version TEXT NOT NULL,
    facts TEXT NOT NULL,
    definitions TEXT NOT NULL,
    last_errors TEXT NOT NULL,
    proxy TEXT,
    checkin_interval_secs INTEGER NOT NULL,
    inactive_after_secs INTEGER NOT NULL
) STRICT;

-- The sweeper's query: recorded status Active and deadline before now.
CREATE INDEX agents_overdue ON agents (status, deadline_at) WHERE removed_at IS NULL;
-- Listing, oldest enrollment first.
CREATE INDEX agents_enrolled ON agents (enrolled_at, id) WHERE removed_at IS NULL;
CREATE INDEX agents_previous_credential ON agents (previous_credential_hash)
    WHERE previous_credential_hash IS NOT NULL;

CREATE TABLE transitions (
    -- Insertion order is the order of record: newest first means highest seq.
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    agent_id TEXT NOT NULL REFERENCES agents (id),
    from_status TEXT,
    to_status TEXT NOT NULL,
    reason TEXT NOT NULL,
    at INTEGER NOT NULL
) STRICT;

CREATE INDEX transitions_agent ON transitions (agent_id, seq);
