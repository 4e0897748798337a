//! The SQL text of the store, written once for both backends.
//!
//! Everything here is portable between SQLite (3.35+, for `RETURNING`) and
//! PostgreSQL: `$N` placeholders (sqlx's SQLite driver accepts them), unix
//! milliseconds as integers, UUIDs as text. Every value is bound, never
//! interpolated. The few statements a backend genuinely needs in its own
//! dialect live in that backend's module, next to a comment saying why.

/// The agent columns every query that returns an [`tether_store::AgentRecord`]
/// selects, in the order `row::agent` reads them (it reads by name, so the
/// order is for humans).
macro_rules! agent_columns {
    () => {
        "id, name, kind, group_name, policy, status, requires_approval, approved_at, \
         enrolled_at, last_seen, deadline_at, stopped_at, credential_rejected_at, \
         external_ip, version, facts, definitions, defs, last_errors, proxy, \
         checkin_interval_secs, inactive_after_secs, pending_actions, site"
    };
}

macro_rules! token_columns {
    () => {
        "id, kind, group_name, policy, not_before, expires_at, max_uses, uses, \
         require_approval, revoked_at, created_at"
    };
}

macro_rules! policy_columns {
    () => {
        "name, revision, checkin_interval_secs, jitter_percent, targets, defs, \
         max_concurrent_tasks, updated_at"
    };
}

pub(crate) const PING: &str = "SELECT 1";

// Admin credentials.

macro_rules! admin_credential_columns {
    () => {
        "id, label, bootstrap_instance, created_at, revoked_at"
    };
}

pub(crate) const INSERT_ADMIN_CREDENTIAL: &str = concat!(
    "INSERT INTO admin_credentials (hash, label, created_at, id, bootstrap_instance) \
     VALUES ($1, $2, $3, $4, $5) RETURNING ",
    admin_credential_columns!()
);
/// Only a credential that is not revoked opens the admin API.
pub(crate) const ADMIN_CREDENTIAL_EXISTS: &str =
    "SELECT 1 FROM admin_credentials WHERE hash = $1 AND revoked_at IS NULL";
pub(crate) const ADMIN_CREDENTIAL_COUNT: &str =
    "SELECT COUNT(*) FROM admin_credentials WHERE revoked_at IS NULL";
pub(crate) const ADMIN_CREDENTIAL_BY_HASH: &str = concat!(
    "SELECT ",
    admin_credential_columns!(),
    " FROM admin_credentials WHERE hash = $1"
);
pub(crate) const ADMIN_CREDENTIAL_BY_ID: &str = concat!(
    "SELECT ",
    admin_credential_columns!(),
    " FROM admin_credentials WHERE id = $1"
);
pub(crate) const LIST_ADMIN_CREDENTIALS: &str = concat!(
    "SELECT ",
    admin_credential_columns!(),
    " FROM admin_credentials ORDER BY created_at, id LIMIT $1"
);
pub(crate) const LIST_ADMIN_CREDENTIALS_AFTER: &str = concat!(
    "SELECT ",
    admin_credential_columns!(),
    " FROM admin_credentials WHERE (created_at, id) > ($1, $2) ORDER BY created_at, id LIMIT $3"
);
/// Revoking twice keeps the first time.
pub(crate) const REVOKE_ADMIN_CREDENTIAL: &str = concat!(
    "UPDATE admin_credentials SET revoked_at = COALESCE(revoked_at, $2) WHERE id = $1 RETURNING ",
    admin_credential_columns!()
);
/// Touches nothing when the credential is absent or already revoked.
pub(crate) const REVOKE_ACTIVE_ADMIN_CREDENTIAL: &str =
    "UPDATE admin_credentials SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL";
pub(crate) const REVOKE_BOOTSTRAP_ADMIN_CREDENTIALS: &str = "UPDATE admin_credentials SET revoked_at = $2 \
     WHERE bootstrap_instance = $1 AND revoked_at IS NULL";

// Tokens.

pub(crate) const INSERT_TOKEN: &str = "INSERT INTO tokens \
     (id, hash, kind, group_name, policy, not_before, expires_at, max_uses, uses, require_approval, created_at) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 0, $9, $10)";
pub(crate) const TOKEN_BY_HASH: &str =
    concat!("SELECT ", token_columns!(), " FROM tokens WHERE hash = $1");
pub(crate) const TOKEN_BY_ID: &str =
    concat!("SELECT ", token_columns!(), " FROM tokens WHERE id = $1");
pub(crate) const LIST_TOKENS: &str = concat!(
    "SELECT ",
    token_columns!(),
    " FROM tokens ORDER BY created_at, id"
);
pub(crate) const LIST_TOKENS_PAGE: &str = concat!(
    "SELECT ",
    token_columns!(),
    " FROM tokens ORDER BY created_at, id LIMIT $1"
);
pub(crate) const LIST_TOKENS_PAGE_AFTER: &str = concat!(
    "SELECT ",
    token_columns!(),
    " FROM tokens WHERE (created_at, id) > ($1, $2) ORDER BY created_at, id LIMIT $3"
);
/// Revoking twice keeps the first time.
pub(crate) const REVOKE_TOKEN: &str = concat!(
    "UPDATE tokens SET revoked_at = COALESCE(revoked_at, $2) WHERE id = $1 RETURNING ",
    token_columns!()
);
/// Consumes one use, atomically with the limit check. Under concurrency the
/// row lock (PostgreSQL re-evaluates the WHERE clause on the newest row
/// version) or the single writer (SQLite) makes the loser see `uses = max_uses`.
pub(crate) const CONSUME_TOKEN_USE: &str = "UPDATE tokens SET uses = uses + 1 \
     WHERE id = $1 AND revoked_at IS NULL AND (max_uses IS NULL OR uses < max_uses)";
/// Why [`CONSUME_TOKEN_USE`] touched nothing.
pub(crate) const TOKEN_USE_STATE: &str =
    "SELECT revoked_at, max_uses, uses FROM tokens WHERE id = $1";

// Agents.

pub(crate) const INSERT_AGENT: &str = concat!(
    "INSERT INTO agents (id, name, kind, group_name, policy, status, requires_approval, enrolled_at, \
     token_id, credential_hash, external_ip, version, facts, definitions, last_errors, \
     checkin_interval_secs, inactive_after_secs) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, '{}', '{}', \
     COALESCE((SELECT checkin_interval_secs FROM policies WHERE name = $5), 30), 0) \
     RETURNING ",
    agent_columns!()
);
/// Re-registration: the old credential moves aside (so the server can tell a
/// replaced credential from an unknown one) and stops working in the same
/// statement; the scope comes from the new token; approval starts over.
pub(crate) const REREGISTER_AGENT: &str = concat!(
    "UPDATE agents SET previous_credential_hash = credential_hash, credential_hash = $2, \
     name = $3, kind = $4, group_name = $5, policy = $6, status = $7, requires_approval = $8, \
     approved_at = NULL, token_id = $9, external_ip = $10, version = $11, facts = $12, \
     stopped_at = NULL, pending_credential_hash = NULL \
     WHERE id = $1 AND removed_at IS NULL RETURNING ",
    agent_columns!()
);
pub(crate) const AGENT_BY_ID: &str = concat!(
    "SELECT ",
    agent_columns!(),
    " FROM agents WHERE id = $1 AND removed_at IS NULL"
);
pub(crate) const AGENT_BY_CREDENTIAL: &str = concat!(
    "SELECT ",
    agent_columns!(),
    " FROM agents WHERE credential_hash = $1 AND removed_at IS NULL"
);
pub(crate) const AGENT_BY_PREVIOUS_CREDENTIAL: &str =
    "SELECT id FROM agents WHERE previous_credential_hash = $1 AND removed_at IS NULL";
/// A rotation's first step: the new credential waits beside the current one.
pub(crate) const SET_PENDING_CREDENTIAL: &str = "UPDATE agents SET pending_credential_hash = $2 \
     WHERE id = $1 AND removed_at IS NULL";
pub(crate) const AGENT_BY_PENDING_CREDENTIAL: &str =
    "SELECT id FROM agents WHERE pending_credential_hash = $1 AND removed_at IS NULL";
/// A rotation's second step, when the agent first presents the new
/// credential: it becomes the credential and the old one moves aside.
pub(crate) const PROMOTE_PENDING_CREDENTIAL: &str = concat!(
    "UPDATE agents SET previous_credential_hash = credential_hash, \
     credential_hash = pending_credential_hash, pending_credential_hash = NULL \
     WHERE pending_credential_hash = $1 AND removed_at IS NULL RETURNING ",
    agent_columns!()
);
pub(crate) const FLAG_CREDENTIAL_REJECTED: &str =
    "UPDATE agents SET credential_rejected_at = $2 WHERE id = $1 AND removed_at IS NULL";
pub(crate) const LIST_AGENTS: &str = concat!(
    "SELECT ",
    agent_columns!(),
    " FROM agents WHERE removed_at IS NULL ORDER BY enrolled_at, id LIMIT $1"
);
pub(crate) const LIST_AGENTS_WITH_STATUS: &str = concat!(
    "SELECT ",
    agent_columns!(),
    " FROM agents WHERE removed_at IS NULL AND status = $1 ORDER BY enrolled_at, id LIMIT $2"
);
/// The SQL of one page of the agent listing: only the conditions asked
/// for, so each form is served by an index (`agents_enrolled`, or
/// `agents_group` for a group). Only placeholders are generated, in the
/// order status, group, cursor time, cursor id, limit; values are bound.
pub(crate) fn list_agents_page(status: bool, group: bool, after: bool) -> String {
    let mut n = 0;
    let mut next = || {
        n += 1;
        format!("${n}")
    };
    let mut sql = format!(
        "SELECT {} FROM agents WHERE removed_at IS NULL",
        agent_columns!()
    );
    if status {
        sql.push_str(&format!(" AND status = {}", next()));
    }
    if group {
        sql.push_str(&format!(" AND group_name = {}", next()));
    }
    if after {
        let (at, id) = (next(), next());
        sql.push_str(&format!(" AND (enrolled_at, id) > ({at}, {id})"));
    }
    sql.push_str(&format!(" ORDER BY enrolled_at, id LIMIT {}", next()));
    sql
}
/// The check-in hot path: one statement when the status does not change.
/// `sweep_at` (the sweeper's index, a lower bound of `deadline_at`) is only
/// filled in or lowered, so on PostgreSQL the update changes no indexed
/// column and stays HOT (migrations/postgres/0020_hot_checkins.sql).
pub(crate) const RECORD_CHECKIN: &str = concat!(
    "UPDATE agents SET last_seen = $2, deadline_at = $3, checkin_interval_secs = $4, \
     inactive_after_secs = $5, external_ip = $6, version = $7, facts = $8, definitions = $9, \
     last_errors = $10, proxy = $11, defs = $12, \
     sweep_at = CASE WHEN sweep_at IS NULL OR sweep_at > $3 THEN $3 ELSE sweep_at END \
     WHERE id = $1 AND removed_at IS NULL RETURNING ",
    agent_columns!()
);
/// Parameters per row of [`record_checkins`].
pub(crate) const CHECKIN_PARAMS: usize = 12;

/// [`RECORD_CHECKIN`] for `rows` agents in one statement. Both dialects name
/// the columns of a `VALUES` list `column1`, `column2`…, so the text is the
/// same for both. Only placeholders are generated; values are always bound.
pub(crate) fn record_checkins(rows: usize) -> String {
    let mut values = String::with_capacity(rows * 64);
    for r in 0..rows {
        if r > 0 {
            values.push_str(", ");
        }
        values.push('(');
        for c in 0..CHECKIN_PARAMS {
            if c > 0 {
                values.push_str(", ");
            }
            values.push_str(&format!("${}", r * CHECKIN_PARAMS + c + 1));
        }
        values.push(')');
    }
    format!(
        "UPDATE agents SET last_seen = v.column2, deadline_at = v.column3, \
         checkin_interval_secs = v.column4, inactive_after_secs = v.column5, \
         external_ip = v.column6, version = v.column7, facts = v.column8, \
         definitions = v.column9, last_errors = v.column10, proxy = v.column11, \
         defs = v.column12, \
         sweep_at = CASE WHEN agents.sweep_at IS NULL OR agents.sweep_at > v.column3 \
         THEN v.column3 ELSE agents.sweep_at END \
         FROM (VALUES {values}) AS v \
         WHERE agents.id = v.column1 AND agents.removed_at IS NULL RETURNING {}",
        agent_columns!()
    )
}

/// Compare-and-set on the recorded status.
pub(crate) const CHANGE_STATUS: &str =
    "UPDATE agents SET status = $2 WHERE id = $1 AND removed_at IS NULL AND status = $3";
pub(crate) const AGENT_EXISTS: &str = "SELECT 1 FROM agents WHERE id = $1 AND removed_at IS NULL";
/// Compare-and-set from the status read in the same transaction, so a
/// concurrent change makes this touch nothing rather than be overwritten.
pub(crate) const RECORD_SHUTDOWN: &str = "UPDATE agents SET status = 'stopped', stopped_at = $2 \
     WHERE id = $1 AND removed_at IS NULL AND status = $3";
pub(crate) const APPROVE_AGENT: &str = concat!(
    "UPDATE agents SET approved_at = COALESCE(approved_at, $2) WHERE id = $1 AND removed_at IS NULL RETURNING ",
    agent_columns!()
);
/// Soft delete; clearing the credential makes it stop working at once.
pub(crate) const REMOVE_AGENT: &str = "UPDATE agents SET removed_at = $2, credential_hash = NULL \
     WHERE id = $1 AND removed_at IS NULL";
/// The sweeper's candidates are Active agents whose `sweep_at` (a lower
/// bound of `deadline_at`, index `agents_sweep`) is unknown or past. Those
/// not overdue yet get `sweep_at` raised to their deadline (an hour from
/// now at most, and an hour from now when they have none), so the next
/// sweep skips them: `$1` now, `$2` how many to look at, the bound.
pub(crate) const RAISE_SWEEP_AT: &str = "UPDATE agents SET sweep_at = \
     CASE WHEN deadline_at IS NOT NULL AND deadline_at < $1 + 3600000 THEN deadline_at \
     ELSE $1 + 3600000 END \
     WHERE id IN (SELECT id FROM (SELECT id FROM agents WHERE status = 'active' \
     AND removed_at IS NULL AND sweep_at IS NULL LIMIT $2) AS unknown \
     UNION ALL SELECT id FROM (SELECT id FROM agents WHERE status = 'active' \
     AND removed_at IS NULL AND sweep_at < $1 ORDER BY sweep_at LIMIT $2) AS past) \
     AND status = 'active' AND removed_at IS NULL AND (deadline_at IS NULL OR deadline_at >= $1)";
/// The overdue among the candidates of [`RAISE_SWEEP_AT`], earliest
/// deadline first; each part is bounded by the index `agents_sweep`.
pub(crate) const OVERDUE_AGENTS: &str = "SELECT id, last_seen, deadline_at, inactive_after_secs FROM \
     (SELECT id, last_seen, deadline_at, inactive_after_secs FROM \
     (SELECT id, last_seen, deadline_at, inactive_after_secs FROM agents \
     WHERE status = 'active' AND removed_at IS NULL AND sweep_at IS NULL AND deadline_at < $1 \
     LIMIT $2) AS unknown \
     UNION ALL SELECT id, last_seen, deadline_at, inactive_after_secs FROM \
     (SELECT id, last_seen, deadline_at, inactive_after_secs FROM agents \
     WHERE status = 'active' AND removed_at IS NULL AND sweep_at < $1 AND deadline_at < $1 \
     ORDER BY sweep_at LIMIT $2) AS past) AS overdue \
     ORDER BY deadline_at, id LIMIT $2";
pub(crate) const COUNT_BY_STATUS: &str =
    "SELECT status, COUNT(*) AS n FROM agents WHERE removed_at IS NULL GROUP BY status";

// The control plane's own outages.

pub(crate) const HEARTBEAT_BEFORE: &str =
    "SELECT alive_at FROM server_heartbeats WHERE instance = $1";
pub(crate) const UPSERT_HEARTBEAT: &str = "INSERT INTO server_heartbeats (instance, alive_at) \
     VALUES ($1, $2) ON CONFLICT (instance) DO UPDATE SET alive_at = excluded.alive_at";
/// A full threshold from `$1` for every Active agent whose deadline comes
/// sooner; a later deadline is kept.
pub(crate) const GRACE_ACTIVE_AGENTS: &str = "UPDATE agents SET deadline_at = $1 + inactive_after_secs * 1000 \
     WHERE status = 'active' AND removed_at IS NULL AND deadline_at IS NOT NULL \
     AND deadline_at < $1 + inactive_after_secs * 1000";
pub(crate) const INSERT_OUTAGE: &str = "INSERT INTO control_plane_outages \
     (id, kind, instance, started_at, ended_at, agents_given_grace) VALUES ($1, $2, $3, $4, $5, $6)";
pub(crate) const OUTAGES: &str = "SELECT id, kind, started_at, ended_at, agents_given_grace \
     FROM control_plane_outages WHERE ended_at >= $1 ORDER BY ended_at DESC, id DESC LIMIT $2";

// Retention: bounded deletes by age.

/// An agent's newest transition explains its current status, so it stays
/// however old it is.
pub(crate) const PRUNE_TRANSITIONS: &str = "DELETE FROM transitions WHERE seq IN \
     (SELECT t.seq FROM transitions t WHERE t.at < $1 \
     AND t.seq < (SELECT MAX(n.seq) FROM transitions n WHERE n.agent_id = t.agent_id) \
     ORDER BY t.seq LIMIT $2)";
pub(crate) const PRUNE_COMPLETED_ACTIONS: &str = "DELETE FROM actions WHERE id IN \
     (SELECT id FROM actions WHERE state = 'completed' AND completed_at < $1 \
     ORDER BY completed_at LIMIT $2)";
pub(crate) const PRUNE_OUTAGES: &str = "DELETE FROM control_plane_outages WHERE id IN \
     (SELECT id FROM control_plane_outages WHERE ended_at < $1 ORDER BY ended_at LIMIT $2)";

// Transitions.

pub(crate) const INSERT_TRANSITION: &str = "INSERT INTO transitions (agent_id, from_status, to_status, reason, at) VALUES ($1, $2, $3, $4, $5)";
pub(crate) const TRANSITIONS: &str = "SELECT from_status, to_status, reason, at FROM transitions \
     WHERE agent_id = $1 ORDER BY seq DESC LIMIT $2";

// Policies.

pub(crate) const POLICY: &str = concat!(
    "SELECT ",
    policy_columns!(),
    " FROM policies WHERE name = $1"
);
pub(crate) const LIST_POLICIES: &str =
    concat!("SELECT ", policy_columns!(), " FROM policies ORDER BY name");
pub(crate) const UPSERT_POLICY: &str = concat!(
    "INSERT INTO policies (name, revision, checkin_interval_secs, jitter_percent, targets, defs, \
     max_concurrent_tasks, updated_at) \
     VALUES ($1, 1, $2, $3, $4, $5, COALESCE(CAST($8 AS BIGINT), 4), $6) \
     ON CONFLICT (name) DO UPDATE SET revision = policies.revision + 1, \
     checkin_interval_secs = excluded.checkin_interval_secs, \
     jitter_percent = excluded.jitter_percent, targets = excluded.targets, \
     defs = excluded.defs, \
     max_concurrent_tasks = COALESCE(CAST($8 AS BIGINT), policies.max_concurrent_tasks), \
     updated_at = excluded.updated_at \
     WHERE $7 IS NULL OR policies.revision = $7 \
     RETURNING ",
    policy_columns!()
);

// Actions.

macro_rules! action_columns {
    () => {
        "id, agent_id, kind, state, created_at, delivered_at, completed_at, result"
    };
}

/// Raises the cheap flag; touching nothing means the agent is absent.
pub(crate) const BUMP_PENDING_ACTIONS: &str = "UPDATE agents SET pending_actions = pending_actions + 1 \
     WHERE id = $1 AND removed_at IS NULL";
pub(crate) const INSERT_ACTION: &str = concat!(
    "INSERT INTO actions (id, agent_id, kind, state, created_at) VALUES ($1, $2, $3, 'queued', $4) RETURNING ",
    action_columns!()
);
pub(crate) const QUEUED_ACTIONS: &str = concat!(
    "SELECT ",
    action_columns!(),
    " FROM actions WHERE agent_id = $1 AND state = 'queued' ORDER BY created_at, id LIMIT $2"
);
/// Compare-and-set: of two concurrent deliveries, one touches the row.
pub(crate) const DELIVER_ACTION: &str = concat!(
    "UPDATE actions SET state = 'delivered', delivered_at = $2 WHERE id = $1 AND state = 'queued' RETURNING ",
    action_columns!()
);
pub(crate) const RESET_PENDING_ACTIONS: &str = "UPDATE agents SET pending_actions = \
     (SELECT COUNT(*) FROM actions WHERE agent_id = $1 AND state = 'queued') WHERE id = $1";
pub(crate) const COMPLETE_ACTION: &str = concat!(
    "UPDATE actions SET state = 'completed', completed_at = $3, result = $4 \
     WHERE id = $1 AND agent_id = $2 AND state = 'delivered' RETURNING ",
    action_columns!()
);
pub(crate) const ACTION_STATE: &str = "SELECT state FROM actions WHERE id = $1 AND agent_id = $2";
pub(crate) const LIST_ACTIONS: &str = concat!(
    "SELECT ",
    action_columns!(),
    " FROM actions WHERE agent_id = $1 ORDER BY created_at DESC, id DESC LIMIT $2"
);
pub(crate) const SET_LAST_DOCTOR: &str =
    "UPDATE agents SET last_doctor = $2 WHERE id = $1 AND removed_at IS NULL";
pub(crate) const LAST_DOCTOR: &str =
    "SELECT id, last_doctor FROM agents WHERE id = $1 AND removed_at IS NULL";

// Bundles.

macro_rules! bundle_columns {
    () => {
        "id, agent_id, size_bytes, sha256, verdict, created_at"
    };
}

pub(crate) const INSERT_BUNDLE: &str = concat!(
    "INSERT INTO bundles (id, agent_id, size_bytes, sha256, verdict, created_at, data) \
     VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING ",
    bundle_columns!()
);
/// Keeps the newest `$2` bundles of agent `$1`.
pub(crate) const PRUNE_BUNDLES: &str = "DELETE FROM bundles WHERE agent_id = $1 AND id NOT IN \
     (SELECT id FROM bundles WHERE agent_id = $1 ORDER BY created_at DESC, id DESC LIMIT $2)";
pub(crate) const LIST_BUNDLES: &str = concat!(
    "SELECT ",
    bundle_columns!(),
    " FROM bundles WHERE agent_id = $1 ORDER BY created_at DESC, id DESC LIMIT $2"
);
pub(crate) const BUNDLE_INFO: &str =
    concat!("SELECT ", bundle_columns!(), " FROM bundles WHERE id = $1");
pub(crate) const BUNDLE: &str = concat!(
    "SELECT ",
    bundle_columns!(),
    ", data FROM bundles WHERE id = $1"
);

// Definitions versions.

macro_rules! defs_version_columns {
    () => {
        "channel, version, sha256, length, content, published_at, notes, full_size, deltas"
    };
}

/// Touches nothing when the version is already recorded, so the stored one
/// is never overwritten; the caller turns that into a `Conflict`.
pub(crate) const INSERT_DEFS_VERSION: &str = concat!(
    "INSERT INTO defs_versions (",
    defs_version_columns!(),
    ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (channel, version) DO NOTHING"
);
pub(crate) const LIST_DEFS_VERSIONS: &str = concat!(
    "SELECT ",
    defs_version_columns!(),
    " FROM defs_versions ORDER BY channel, version DESC"
);
pub(crate) const LIST_DEFS_VERSIONS_OF_CHANNEL: &str = concat!(
    "SELECT ",
    defs_version_columns!(),
    " FROM defs_versions WHERE channel = $1 ORDER BY version DESC"
);
