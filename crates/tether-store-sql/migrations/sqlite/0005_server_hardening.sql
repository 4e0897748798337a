-- Server hardening: named and revocable admin credentials, the control
-- plane's own outages, and indexes for paging and retention.
-- Kept column-for-column identical to migrations/postgres/0005_server_hardening.sql.

-- Admin credentials get an id (to list, revoke and rotate them), a revocation
-- time and, for the credential a server writes to its data dir's admin.token,
-- the server instance it belongs to. The label is the credential's name.
ALTER TABLE admin_credentials ADD COLUMN id TEXT;
ALTER TABLE admin_credentials ADD COLUMN revoked_at INTEGER;
ALTER TABLE admin_credentials ADD COLUMN bootstrap_instance TEXT;
-- A random version-4 UUID for every credential created before this migration.
UPDATE admin_credentials SET id =
    lower(hex(randomblob(4))) || '-' || lower(hex(randomblob(2))) || '-4' ||
    substr(lower(hex(randomblob(2))), 2) || '-' ||
    substr('89ab', 1 + (abs(random()) % 4), 1) || substr(lower(hex(randomblob(2))), 2) || '-' ||
    lower(hex(randomblob(6)));
-- Bootstrap credentials from before this migration belong to no known server
-- instance: the next server that has to create a new admin.token revokes them.
UPDATE admin_credentials SET bootstrap_instance = 'legacy', label = 'bootstrap'
    WHERE label = 'bootstrap (admin.token)';
CREATE UNIQUE INDEX admin_credentials_id ON admin_credentials (id);
CREATE INDEX admin_credentials_listed ON admin_credentials (created_at, id);

-- When each server instance was last seen alive, so a restart knows how long
-- the control plane was down.
CREATE TABLE server_heartbeats (
    instance TEXT PRIMARY KEY,
    alive_at INTEGER NOT NULL
) STRICT;

-- The control plane's own outages (a restart, a store that failed): after
-- each, every Active agent was given a full threshold before it could be
-- declared Inactive, and this row says so in the agents' history.
CREATE TABLE control_plane_outages (
    id TEXT PRIMARY KEY,
    -- "restart" or "store".
    kind TEXT NOT NULL,
    instance TEXT NOT NULL,
    started_at INTEGER NOT NULL,
    ended_at INTEGER NOT NULL,
    agents_given_grace INTEGER NOT NULL
) STRICT;
CREATE INDEX control_plane_outages_ended ON control_plane_outages (ended_at);

-- Keyset paging of tokens, and the retention job's deletes by age.
CREATE INDEX tokens_listed ON tokens (created_at, id);
CREATE INDEX agents_group ON agents (group_name, enrolled_at, id) WHERE removed_at IS NULL;
CREATE INDEX transitions_at ON transitions (at);
CREATE INDEX actions_completed ON actions (state, completed_at);
