-- The ACME issuers' registry (issue #10): each named ACME CA deploys may
-- order from (`acme:NAME`), with the account registered there.
-- Kept column-for-column identical to migrations/sqlite/0014_acme_issuers.sql.
-- Numbered 0014 because 0012 and 0013 are taken on other branches.

CREATE TABLE acme_issuers (
    name TEXT PRIMARY KEY,
    -- The ACME directory URL.
    directory TEXT NOT NULL,
    -- PEM roots for the ACME server's TLS (NULL: the system's).
    ca_pem TEXT,
    -- The account's contact email (NULL when none was given).
    contact TEXT,
    -- The account's key and URL sealed with the server's KEK, lower-case
    -- hex. Never the plaintext key.
    sealed_account TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
