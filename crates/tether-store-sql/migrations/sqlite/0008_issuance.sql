-- The built-in CA's issued certificates and the deploys of certificates
-- to their locations (issue #10).
-- Kept column-for-column identical to migrations/postgres/0008_issuance.sql.

CREATE TABLE issued_certs (
    -- sha256:<hex> of the DER.
    fingerprint TEXT PRIMARY KEY,
    -- Lower-case hex, unique per CA.
    serial TEXT NOT NULL UNIQUE,
    -- JSON list of the DNS names and addresses signed.
    names TEXT NOT NULL,
    not_before INTEGER NOT NULL,
    not_after INTEGER NOT NULL,
    issued_at INTEGER NOT NULL,
    -- The deploy task and agent that asked (NULL for a CLI issuance).
    task_id TEXT,
    agent_id TEXT,
    -- The certificate, PEM (public).
    cert_pem TEXT NOT NULL
) STRICT;

CREATE INDEX issued_certs_not_after ON issued_certs (not_after);

-- One row per deploy transaction an agent reported.
CREATE TABLE cert_deployments (
    -- The transaction's id (the agent's journal id).
    id TEXT PRIMARY KEY,
    task_id TEXT NOT NULL,
    agent_id TEXT NOT NULL,
    -- The certificate deployed, and the one it replaced ('' when none).
    fingerprint TEXT NOT NULL,
    old_fingerprint TEXT NOT NULL,
    -- deployed, rolled_back or rollback_failed.
    state TEXT NOT NULL,
    at INTEGER NOT NULL,
    -- JSON DeployReport: steps, durations, redacted output, code.
    report TEXT NOT NULL
) STRICT;

CREATE INDEX cert_deployments_new ON cert_deployments (fingerprint, at);
CREATE INDEX cert_deployments_old ON cert_deployments (old_fingerprint, at);
