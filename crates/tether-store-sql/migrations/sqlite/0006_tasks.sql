-- The task queue: tasks, their result chunks, schedules, and sites.
-- Kept column-for-column identical to migrations/postgres/0006_tasks.sql.

-- A site groups agents by place; its time zone is what schedules and
-- allowed hours are read in.
CREATE TABLE sites (
    name TEXT PRIMARY KEY,
    -- An IANA zone name, checked by the server.
    tz TEXT NOT NULL,
    updated_at INTEGER NOT NULL
) STRICT;

-- The site label: set from the enrollment token, changeable by an admin.
ALTER TABLE agents ADD COLUMN site TEXT;
ALTER TABLE tokens ADD COLUMN site TEXT;

CREATE TABLE tasks (
    id TEXT PRIMARY KEY,
    -- discover, doctor, update_defs…
    kind TEXT NOT NULL,
    -- The kind's spec as JSON, normalized by the server.
    spec TEXT NOT NULL,
    -- One agent, or a group and agent kind (and optionally a site).
    target_agent TEXT,
    target_group TEXT,
    target_kind TEXT,
    target_site TEXT,
    -- queued, leased, succeeded, dead or cancelled.
    state TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    max_attempts INTEGER NOT NULL,
    -- The fencing token: the number of the newest lease.
    epoch INTEGER NOT NULL,
    lease_secs INTEGER NOT NULL,
    deadline_at INTEGER,
    -- JSON AllowedHours, read in `tz`.
    allowed_hours TEXT,
    tz TEXT NOT NULL,
    leased_to TEXT,
    lease_expires_at INTEGER,
    heartbeat_at INTEGER,
    -- JSON Progress.
    progress TEXT,
    cancel_requested INTEGER NOT NULL,
    last_error TEXT,
    reason TEXT,
    -- JSON TaskOutcome.
    outcome TEXT,
    not_before INTEGER NOT NULL,
    schedule_id TEXT,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    finished_at INTEGER,
    -- Bumped by every write: the compare-and-set key.
    version INTEGER NOT NULL,
    result_chunks INTEGER NOT NULL
) STRICT;

-- Leasing reads the queue per agent and per group; the sweeper reads
-- leases by expiry and unfinished tasks by deadline.
CREATE INDEX tasks_agent_queue ON tasks (target_agent, state, not_before);
CREATE INDEX tasks_group_queue ON tasks (target_group, target_kind, state, not_before);
CREATE INDEX tasks_lease_expiry ON tasks (state, lease_expires_at);
CREATE INDEX tasks_deadline ON tasks (deadline_at);
CREATE INDEX tasks_leased_to ON tasks (leased_to);
CREATE INDEX tasks_created ON tasks (created_at);

-- Result chunks, keyed by (task, epoch, chunk): a chunk sent twice is
-- stored once.
CREATE TABLE task_results (
    task_id TEXT NOT NULL REFERENCES tasks (id),
    epoch INTEGER NOT NULL,
    chunk INTEGER NOT NULL,
    -- The kind's result items as JSON; NULL for a chunk that only ends
    -- the attempt.
    items TEXT,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (task_id, epoch, chunk)
) STRICT;

CREATE TABLE task_schedules (
    id TEXT PRIMARY KEY,
    -- JSON ScheduleRule.
    rule TEXT NOT NULL,
    tz TEXT NOT NULL,
    -- JSON NewTask: what each run creates.
    template TEXT NOT NULL,
    next_run_at INTEGER NOT NULL,
    last_run_at INTEGER,
    last_task_id TEXT,
    -- JSON array of the missed runs folded into the last run.
    missed TEXT NOT NULL,
    created_at INTEGER NOT NULL
) STRICT;

CREATE INDEX task_schedules_due ON task_schedules (next_run_at);
