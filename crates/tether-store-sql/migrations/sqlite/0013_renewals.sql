-- Certificate renewal (issue #10): policies, where each certificate was
-- deployed, renewals and the one issuance each renewal task may have.
-- Times are unix milliseconds.
-- Kept column-for-column identical to migrations/postgres/0013_renewals.sql.

-- One policy per scope: 'default', 'cert:<fingerprint>' or 'group:<name>'.
CREATE TABLE renewal_policies (
    scope TEXT PRIMARY KEY,
    -- JSON tether_wire::RenewalPolicy.
    policy TEXT NOT NULL,
    updated_at INTEGER NOT NULL
) STRICT;

-- Where a verified deploy put a certificate, with the deploy spec, so the
-- certificate can be redeployed there after the task itself is pruned.
CREATE TABLE renewal_locations (
    fingerprint TEXT NOT NULL,
    task_id TEXT NOT NULL,
    agent_id TEXT NOT NULL,
    spec TEXT NOT NULL,
    at INTEGER NOT NULL,
    PRIMARY KEY (fingerprint, task_id)
) STRICT;

CREATE TABLE cert_renewals (
    id TEXT PRIMARY KEY,
    -- The certificate renewed.
    fingerprint TEXT NOT NULL,
    -- The fingerprint while the renewal is not verified, else NULL: at most
    -- one open renewal per certificate.
    open_fingerprint TEXT UNIQUE,
    -- due, issuing, issued, deploying, verified or failed.
    state TEXT NOT NULL,
    issuer TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    failures INTEGER NOT NULL,
    ca_failures INTEGER NOT NULL,
    locations INTEGER NOT NULL,
    done INTEGER NOT NULL,
    -- JSON list of the current attempt's deploy task ids.
    tasks TEXT NOT NULL,
    new_fingerprint TEXT,
    reason_code TEXT,
    reason TEXT NOT NULL,
    next_attempt_at INTEGER,
    forced INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    version INTEGER NOT NULL
) STRICT;

CREATE INDEX cert_renewals_fingerprint ON cert_renewals (fingerprint, created_at);

-- One row per deploy task a renewal created: its one issuance.
CREATE TABLE renewal_tasks (
    task_id TEXT PRIMARY KEY,
    renewal_id TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    -- SHA-256 of the CSR whose issuance was claimed (NULL: none yet).
    request TEXT,
    fingerprint TEXT,
    cert_pem TEXT,
    chain_pem TEXT
) STRICT;

CREATE INDEX renewal_tasks_renewal ON renewal_tasks (renewal_id);
