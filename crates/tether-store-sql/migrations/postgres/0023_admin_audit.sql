-- The admin audit log (issue #11): every admin action the API answered,
-- who (the credential's name and id, or "unauthenticated"), what (method,
-- route template, concrete path, target), when, from where and the
-- outcome. Never a body, a token or a credential. Expand-only: a new
-- table that older servers ignore.
-- Kept column-for-column identical to
-- migrations/sqlite/0023_admin_audit.sql.
CREATE TABLE admin_audit (
    id TEXT PRIMARY KEY,
    -- When the server answered, unix milliseconds.
    at BIGINT NOT NULL,
    actor TEXT NOT NULL,
    actor_id TEXT,
    method TEXT NOT NULL,
    route TEXT NOT NULL,
    path TEXT NOT NULL,
    target TEXT,
    address TEXT,
    status BIGINT NOT NULL,
    code TEXT
);
-- Newest first, and by actor.
CREATE INDEX admin_audit_at ON admin_audit (at, id);
CREATE INDEX admin_audit_actor_at ON admin_audit (actor, at, id);
