-- Revocations of certificates the built-in CA issued (issue #10): what the
-- CRL lists and the OCSP responder answers.
-- Kept column-for-column identical to migrations/postgres/0012_revocations.sql.

CREATE TABLE cert_revocations (
    -- The issued certificate (issued_certs.fingerprint); revoked once.
    fingerprint TEXT PRIMARY KEY,
    -- Lower-case hex, as issued_certs keeps it.
    serial TEXT NOT NULL UNIQUE,
    -- The RFC 5280 CRLReason name (keyCompromise, superseded, ...).
    reason TEXT NOT NULL,
    revoked_at INTEGER NOT NULL,
    -- The admin credential's name.
    revoked_by TEXT NOT NULL,
    -- The certificate's expiry, copied so the CRL drops it afterwards.
    not_after INTEGER NOT NULL
) STRICT;

CREATE INDEX cert_revocations_not_after ON cert_revocations (not_after);
