-- Certificates an ACME CA issued through the control plane (issue #10).
-- Kept column-for-column identical between the sqlite and postgres dirs.
-- Expand-only: servers of the previous release never read these columns,
-- and their rows (NULL issuer) are the built-in CA's.

-- 'acme:NAME'; NULL for the built-in CA.
ALTER TABLE issued_certs ADD COLUMN issuer TEXT;
-- The ACME CA's suggested renewal window (RFC 9773) as last read, and
-- when it was read (all NULL when the CA offers none).
ALTER TABLE issued_certs ADD COLUMN ari_start BIGINT;
ALTER TABLE issued_certs ADD COLUMN ari_end BIGINT;
ALTER TABLE issued_certs ADD COLUMN ari_checked_at BIGINT;
