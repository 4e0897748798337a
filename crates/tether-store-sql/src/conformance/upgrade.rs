//! Upgrading a database an older Tether wrote: the rows it holds survive the
//! new migrations, and the new columns read as their defaults.
//!
//! A backend's test builds the old database with the old migrations only
//! ([`copy_migrations_before`], then `sqlx::migrate::Migrator::new`), writes
//! [`pre_defs_rows`] into it, opens it as a store (which applies the rest),
//! and runs [`upgraded_from_0003_keeps_data`].

use std::path::Path;

use tether_wire::{AgentStatus, DefsPolicy, HostFacts};
use uuid::Uuid;

use super::{Fixture, t};
use crate::row::to_ms;

/// The agent [`pre_defs_rows`] writes.
pub const PRE_DEFS_AGENT: Uuid = Uuid::from_u128(0x0003_0003_0003_0003_0003_0003_0003_0003);

/// Copies the migrations of `dialect` (`"sqlite"` or `"postgres"`) numbered
/// below `version` into `into`.
pub fn copy_migrations_before(dialect: &str, version: u32, into: &Path) -> std::io::Result<u32> {
    let from = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("migrations")
        .join(dialect);
    let mut copied = 0;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let name = entry.file_name();
        let number = name
            .to_str()
            .and_then(|n| n.split('_').next())
            .and_then(|n| n.parse::<u32>().ok());
        if number.is_some_and(|n| n < version) {
            std::fs::copy(entry.path(), into.join(&name))?;
            copied += 1;
        }
    }
    Ok(copied)
}

/// Rows as a Tether at migration 0003 wrote them, for `dialect`
/// (`"sqlite"` or `"postgres"`; only the byte-string literal differs): a
/// policy with targets, a token, and an agent that reported definitions the
/// old way.
pub fn pre_defs_rows(dialect: &str) -> String {
    let hash = "00".repeat(31) + "03";
    let hash = if dialect == "postgres" {
        format!("decode('{hash}', 'hex')")
    } else {
        format!("X'{hash}'")
    };
    let facts = serde_json::to_string(&HostFacts {
        hostname: String::from("old-host"),
        os: String::from("linux debian 12"),
        internal_ips: vec![String::from("10.0.0.3")],
        uptime_secs: 7,
        installed_at: None,
    })
    .expect("host facts serialize");
    let at = to_ms(t(0));
    format!(
        "INSERT INTO policies (name, revision, checkin_interval_secs, jitter_percent, updated_at, targets) \
         VALUES ('old-policy', 4, 120, 15, {at}, '[\"ldap.corp.example:389\"]'); \
         INSERT INTO tokens (id, hash, kind, group_name, policy, not_before, expires_at, max_uses, uses, require_approval, created_at) \
         VALUES ('00000000-0000-0000-0000-000000000003', {hash}, 'discovery', 'plant-a', 'old-policy', {at}, {at}, 1, 1, FALSE, {at}); \
         INSERT INTO agents (id, name, kind, group_name, policy, status, requires_approval, enrolled_at, token_id, \
         version, facts, definitions, last_errors, checkin_interval_secs, inactive_after_secs, last_seen) \
         VALUES ('{PRE_DEFS_AGENT}', 'old-agent', 'discovery', 'plant-a', 'old-policy', 'active', FALSE, {at}, \
         '00000000-0000-0000-0000-000000000003', '0.9.0', '{facts}', '{{\"signatures\":\"2026.01\"}}', '{{}}', 120, 360, {at});"
    )
}

pub async fn upgraded_from_0003_keeps_data(f: Fixture) {
    let s = &*f.store;
    let policy = s
        .policy("old-policy")
        .await
        .expect("reads the old policy")
        .expect("kept");
    assert_eq!(
        (
            policy.revision,
            policy.checkin_interval_secs,
            policy.jitter_percent
        ),
        (4, 120, 15)
    );
    assert_eq!(policy.targets, vec![String::from("ldap.corp.example:389")]);
    assert_eq!(
        policy.defs,
        DefsPolicy::default(),
        "old policies read as the defaults"
    );
    let agent = s
        .agent(PRE_DEFS_AGENT)
        .await
        .expect("reads the old agent")
        .expect("kept");
    assert_eq!(agent.name, "old-agent");
    assert_eq!(agent.status, AgentStatus::Active);
    assert_eq!(agent.facts.hostname, "old-host");
    assert_eq!(
        agent.definitions.get("signatures").map(String::as_str),
        Some("2026.01")
    );
    assert!(agent.defs.is_empty(), "old agents report no channels yet");
    assert_eq!(agent.last_seen, Some(t(0)));
    assert!(
        s.list_defs_versions(None)
            .await
            .expect("the new table exists")
            .is_empty()
    );
    // The upgraded rows take new writes like any other.
    let mut c = super::checkin(PRE_DEFS_AGENT, t(60));
    c.defs = vec![tether_wire::ChannelState {
        channel: String::from("signatures"),
        version: Some(1),
        sha256: None,
        updated_at: None,
        method: None,
        last_attempt_at: None,
        last_error: None,
        consecutive_failures: 0,
        server: None,
        via_proxy: None,
    }];
    let stored = s.record_checkin(&c).await.expect("checks in");
    assert_eq!(stored.defs, c.defs);
}

/// An expand-only migration of a "newer build", numbered after every real
/// one: a table and a nullable column this build does not know.
pub const NEWER_EXPAND: (&str, &str) = (
    "9001_expand_newer_build.sql",
    "CREATE TABLE newer_build_things (id BIGINT PRIMARY KEY);\n\
     ALTER TABLE agents ADD COLUMN newer_build_note TEXT;\n",
);

/// A contract migration of a "newer build": it drops what this build uses.
pub const NEWER_CONTRACT: (&str, &str) = (
    "9002_contract_drop_policy_jitter_percent.sql",
    "ALTER TABLE policies DROP COLUMN jitter_percent;\n",
);

/// Copies every migration of `dialect` into `into`, then writes `extra`
/// (file name, SQL) beside them: the migrations a newer build would apply.
/// With `alter_first`, migration 0001 gets a trailing comment, as if a
/// released file had been edited.
pub fn newer_build_migrations(
    dialect: &str,
    into: &Path,
    extra: &[(&str, &str)],
    alter_first: bool,
) -> std::io::Result<()> {
    copy_migrations_before(dialect, u32::MAX, into)?;
    for (name, sql) in extra {
        std::fs::write(into.join(name), sql)?;
    }
    if alter_first {
        for entry in std::fs::read_dir(into)? {
            let path = entry?.path();
            if path
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("0001_"))
            {
                let mut sql = std::fs::read_to_string(&path)?;
                sql.push_str("\n-- edited after release\n");
                std::fs::write(&path, sql)?;
            }
        }
    }
    Ok(())
}

/// A store opened on a database a newer build migrated with
/// [`NEWER_EXPAND`] still works: it writes and reads back a policy (each
/// call edits it once more) and counts agents, on the newer schema.
pub async fn runs_against_a_newer_expand_only_schema(f: Fixture) {
    let before = f.store.policy("rolling").await.expect("reads");
    let interval = before.as_ref().map_or(60, |p| p.checkin_interval_secs + 1);
    let written = f
        .store
        .upsert_policy(
            "rolling",
            &super::policy_settings(interval, 5, &[]),
            None,
            t(0),
        )
        .await
        .expect("an older build writes a policy on the newer schema");
    assert_eq!(written.revision, before.map_or(1, |p| p.revision + 1));
    let read = f
        .store
        .policy("rolling")
        .await
        .expect("reads")
        .expect("the policy is there");
    assert_eq!(read, written);
    let agents: u64 = f
        .store
        .count_by_status()
        .await
        .expect("counts")
        .values()
        .sum();
    assert_eq!(agents, 0);
}
