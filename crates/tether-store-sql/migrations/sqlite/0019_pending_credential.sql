-- An agent's credential rotated in place (issue #13: after an escalation
-- capture that carried the TLS key log). Two steps, so a crash on either
-- side never locks the agent out: the server keeps the new credential's
-- hash here and the old one keeps working until the agent first presents
-- the new one, which moves it into credential_hash (the old one into
-- previous_credential_hash) in one statement.
-- Kept column-for-column identical to
-- migrations/postgres/0019_pending_credential.sql.
ALTER TABLE agents ADD COLUMN pending_credential_hash BLOB;
CREATE INDEX agents_pending_credential ON agents (pending_credential_hash)
    WHERE pending_credential_hash IS NOT NULL;
