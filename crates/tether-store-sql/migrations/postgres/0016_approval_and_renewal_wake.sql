-- A deploy held for an admin's approval (issue #10), and the renewal
-- scheduler's due filter.
-- Kept column-for-column identical to
-- migrations/sqlite/0016_approval_and_renewal_wake.sql.

-- NULL: the task needs no approval. 'awaiting': held, never leased;
-- 'approved' or 'rejected': decided by the admin credential named in
-- approval_by at approval_at (unix milliseconds).
ALTER TABLE tasks ADD COLUMN approval TEXT;
ALTER TABLE tasks ADD COLUMN approval_by TEXT;
ALTER TABLE tasks ADD COLUMN approval_at BIGINT;

-- When the scheduler must step the renewal next (tether_tasks'
-- Renewal::wake_at): its last change while an attempt runs, its next
-- attempt while due or failed, NULL once verified. A tick reads
-- `wake_at <= now` through the index instead of every open renewal.
ALTER TABLE cert_renewals ADD COLUMN wake_at BIGINT;
UPDATE cert_renewals SET wake_at = CASE
    WHEN state = 'verified' THEN NULL
    WHEN state IN ('due', 'failed') THEN COALESCE(next_attempt_at, updated_at)
    ELSE updated_at
END;
CREATE INDEX cert_renewals_wake ON cert_renewals (wake_at);
