-- Tether store, PostgreSQL dialect. Append-only: never edit a released migration.
-- Timestamps are BIGINT unix milliseconds, UUIDs hyphenated lowercase TEXT,
-- secrets only as SHA-256 digests (BYTEA), structured facts as JSON TEXT.
-- Kept column-for-column identical to migrations/sqlite/0001_init.sql; the
-- dialects differ only in BYTEA/BLOB, BOOLEAN and the identity column.

CREATE TABLE admin_credentials (
    hash BYTEA PRIMARY KEY,
    label TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

CREATE TABLE policies (
    name TEXT PRIMARY KEY,
    revision BIGINT NOT NULL,
    checkin_interval_secs BIGINT NOT NULL,
    jitter_percent BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

-- The policy every agent falls back to; it always exists.
INSERT INTO policies (name, revision, checkin_interval_secs, jitter_percent, updated_at)
VALUES ('default', 1, 30, 10, (EXTRACT(EPOCH FROM now()) * 1000)::BIGINT);

CREATE TABLE tokens (
    id TEXT PRIMARY KEY,
    hash BYTEA NOT NULL UNIQUE,
    kind TEXT NOT NULL,
    group_name TEXT NOT NULL,
    policy TEXT NOT NULL,
    not_before BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    max_uses BIGINT,
    uses BIGINT NOT NULL DEFAULT 0,
    require_approval BOOLEAN NOT NULL,
    revoked_at BIGINT,
    created_at BIGINT NOT NULL
);

CREATE TABLE agents (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    kind TEXT NOT NULL,
    group_name TEXT NOT NULL,
    policy TEXT NOT NULL,
    status TEXT NOT NULL,
    requires_approval BOOLEAN NOT NULL,
    approved_at BIGINT,
    enrolled_at BIGINT NOT NULL,
    token_id TEXT NOT NULL REFERENCES tokens (id),
    -- NULL once the agent is removed, so the credential stops working at once.
    credential_hash BYTEA UNIQUE,
    -- The credential replaced at the last re-registration.
    previous_credential_hash BYTEA,
    last_seen BIGINT,
    deadline_at BIGINT,
    stopped_at BIGINT,
    credential_rejected_at BIGINT,
    removed_at BIGINT,
    external_ip TEXT,
    version TEXT NOT NULL,
    facts TEXT NOT NULL,
    definitions TEXT NOT NULL,
    last_errors TEXT NOT NULL,
    proxy TEXT,
    checkin_interval_secs BIGINT NOT NULL,
    inactive_after_secs BIGINT NOT NULL
);

-- The sweeper's query: recorded status Active and deadline before now.
CREATE INDEX agents_overdue ON agents (status, deadline_at) WHERE removed_at IS NULL;
-- Listing, oldest enrollment first.
CREATE INDEX agents_enrolled ON agents (enrolled_at, id) WHERE removed_at IS NULL;
CREATE INDEX agents_previous_credential ON agents (previous_credential_hash)
    WHERE previous_credential_hash IS NOT NULL;

CREATE TABLE transitions (
    -- Insertion order is the order of record: newest first means highest seq.
    seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    agent_id TEXT NOT NULL REFERENCES agents (id),
    from_status TEXT,
    to_status TEXT NOT NULL,
    reason TEXT NOT NULL,
    at BIGINT NOT NULL
);

CREATE INDEX transitions_agent ON transitions (agent_id, seq);
