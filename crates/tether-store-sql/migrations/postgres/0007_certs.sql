-- The discovery inventory: certificates deduplicated by fingerprint and
-- every location where each was seen.
-- Kept column-for-column identical to migrations/sqlite/0007_certs.sql.

CREATE TABLE certs (
    -- sha256:<hex> of the DER.
    fingerprint TEXT PRIMARY KEY,
    -- A UUID given at the first sighting: with first_seen, the paging key.
    id TEXT NOT NULL UNIQUE,
    -- JSON CertFacts of the end-entity certificate, from the newest sighting.
    facts TEXT NOT NULL,
    -- JSON list of CertFacts: the chain the newest sighting presented.
    chain TEXT NOT NULL,
    -- JSON list of the newest sighting's verdict names (cert_verdicts holds
    -- the same, for filtering).
    verdicts TEXT NOT NULL,
    not_after BIGINT NOT NULL,
    first_seen BIGINT NOT NULL,
    last_seen BIGINT NOT NULL
);

CREATE INDEX certs_first_seen ON certs (first_seen, id);
CREATE INDEX certs_not_after ON certs (not_after);

-- The verdicts of each certificate's newest sighting, one row each, so that
-- a listing filters on them with a plain equality.
CREATE TABLE cert_verdicts (
    fingerprint TEXT NOT NULL REFERENCES certs (fingerprint),
    verdict TEXT NOT NULL,
    PRIMARY KEY (fingerprint, verdict)
);

CREATE INDEX cert_verdicts_verdict ON cert_verdicts (verdict, fingerprint);

-- One row per certificate seen at a location (address:port, SNI, agent).
CREATE TABLE cert_locations (
    fingerprint TEXT NOT NULL REFERENCES certs (fingerprint),
    -- ip:port, [ip]:port for IPv6.
    address TEXT NOT NULL,
    -- The SNI name sent; '' when none was.
    sni TEXT NOT NULL,
    agent_id TEXT NOT NULL,
    first_seen BIGINT NOT NULL,
    last_seen BIGINT NOT NULL,
    -- current, changed (another certificate was seen there later) or gone
    -- (a later scan found no TLS there).
    state TEXT NOT NULL,
    state_since BIGINT,
    -- The certificate seen there before this one, and after it.
    previous TEXT,
    replaced_by TEXT,
    PRIMARY KEY (address, sni, agent_id, fingerprint)
);

CREATE INDEX cert_locations_cert ON cert_locations (fingerprint, last_seen);
