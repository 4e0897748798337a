//! Rolling upgrades with two real builds (issue #12): a server of the
//! previous release (`.ci/previous-release`, built from git by
//! `scripts/build-previous-release.sh`) keeps serving on a PostgreSQL
//! database this build migrated further, beside a server of this build;
//! agents of both builds keep working through both.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use time::OffsetDateTime;
use tokio::time::Instant;

use crate::lab::{Agent, Server, tether_bin, text};

/// The previous release's binaries, as scripts/build-previous-release.sh
/// left them.
struct PreviousRelease {
    commit: String,
    tether: PathBuf,
    agent: PathBuf,
    /// From .ci/previous-release: whether that build itself tolerates
    /// migrations it does not know when it (re)starts.
    restarts_against_newer_schema: bool,
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The previous release, or `None` when scripts/build-previous-release.sh
/// could not get its commit (a shallow clone): it says so loudly then.
fn previous_release() -> Option<PreviousRelease> {
    let file = std::fs::read_to_string(repo_root().join(".ci/previous-release"))
        .expect(".ci/previous-release exists");
    let value = |key: &str| {
        file.lines()
            .find_map(|l| l.strip_prefix(&format!("{key}=")))
            .unwrap_or_else(|| panic!(".ci/previous-release has no {key}="))
            .trim()
            .to_owned()
    };
    let commit = value("commit");
    let restarts_against_newer_schema = value("restarts_against_newer_schema") == "true";
    let dir = std::env::var_os("TETHER_PREVIOUS_RELEASE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            tether_bin()
                .parent()
                .and_then(Path::parent)
                .expect("the tether binary is in <target dir>/debug")
                .join("previous-release")
        });
    if let Ok(why) = std::fs::read_to_string(dir.join("NOT-BUILT")) {
        eprintln!(
            "\n!!! THIS TEST DID NOT RUN: the previous release was not built: {}\n",
            why.trim()
        );
        return None;
    }
    let built = std::fs::read_to_string(dir.join("COMMIT")).unwrap_or_default();
    let (tether, agent) = (dir.join("bin/tether"), dir.join("bin/tether-agent"));
    assert!(
        built.trim() == commit && tether.exists() && agent.exists(),
        "the previous release {commit} (.ci/previous-release) is not built in {}: run \
         `bash scripts/build-previous-release.sh` (with the same CARGO_TARGET_DIR) first; \
         scripts/test.sh does it before the tests",
        dir.display()
    );
    Some(PreviousRelease {
        commit,
        tether,
        agent,
        restarts_against_newer_schema,
    })
}

fn psql(url: &str, sql: &str) -> String {
    let out = std::process::Command::new("psql")
        .arg(url)
        .args(["-At", "-c", sql])
        .output()
        .expect("psql runs");
    assert!(out.status.success(), "{sql}: {}", text(&out));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// The migration versions applied to the database.
fn applied(url: &str) -> BTreeSet<i64> {
    psql(url, "SELECT version FROM _sqlx_migrations ORDER BY version")
        .lines()
        .map(|l| l.parse().expect("a version"))
        .collect()
}

/// This build's PostgreSQL migration versions, from its source.
fn this_build_migrations() -> BTreeSet<i64> {
    let dir = repo_root().join("crates/tether-store-sql/migrations/postgres");
    std::fs::read_dir(dir)
        .expect("reads the migrations")
        .filter_map(|e| {
            e.ok()?
                .file_name()
                .to_str()?
                .split('_')
                .next()?
                .parse()
                .ok()
        })
        .collect()
}

/// When `server` (through its own build's admin CLI) last saw `id`. Read
/// as JSON values, so an older build's output need not match this build's
/// types.
async fn last_seen(server: &Server, id: uuid::Uuid) -> Option<OffsetDateTime> {
    let out = server.admin_ok(&["agents", "list", "--json"]).await;
    let list: serde_json::Value = serde_json::from_str(&out).expect("agents list --json");
    let row = list
        .as_array()
        .expect("a list")
        .iter()
        .find(|a| a["id"] == id.to_string())?;
    row["last_seen"].as_str().map(|s| {
        OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).expect("RFC 3339")
    })
}

/// Waits until `server` records a check-in of `id` after `after` (30 s at
/// most: a 5 s interval, and the agent's back-off after a server restart).
async fn checks_in_after(
    server: &Server,
    agent: &Agent,
    id: uuid::Uuid,
    after: Option<OffsetDateTime>,
    what: &str,
) -> OffsetDateTime {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(seen) = last_seen(server, id).await
            && after.is_none_or(|a| seen > a)
        {
            return seen;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: no check-in after {after:?} within 30 s.\nagent: {}\nserver: {}",
            agent.stderr(),
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn token(server: &Server) -> String {
    server.token(&[]).await.token
}

/// The old server first, on a fresh database; agents of both builds enroll
/// and check in through it. Then this build's server starts on the same
/// database and migrates it further. The old server keeps serving
/// check-ins, enrollments and admin calls beside the new one, agents of
/// both builds enroll and check in through either, and the old server
/// restarts against the newer schema (when its build tolerates that: see
/// .ci/previous-release).
#[tokio::test]
async fn previous_release_keeps_serving_on_a_database_this_build_migrated() {
    let Some(prev) = previous_release() else {
        return;
    };
    let started = Instant::now();
    let mut old = Server::start_binary(prev.tether.clone(), &[]).await;
    let url = old.database_url.clone().expect("PostgreSQL");
    old.set_interval(5).await;
    let old_known = applied(&url);
    assert!(
        !old_known.is_empty(),
        "the old server migrated the database"
    );

    // Agents of both builds, enrolled through the old server.
    let old_token = token(&old).await;
    let mut cur_agent = Agent::new();
    let cur_id = cur_agent.enroll_ok(&old, &old_token, &[]).await;
    let mut old_agent = Agent::of_binary(prev.agent.clone());
    let old_id = old_agent.enroll_ok(&old, &old_token, &[]).await;
    cur_agent.run(&[]);
    old_agent.run(&[]);
    let cur_seen = checks_in_after(&old, &cur_agent, cur_id, None, "this build's agent").await;
    let old_seen = checks_in_after(&old, &old_agent, old_id, None, "the old agent").await;

    // This build starts on the same database and migrates it further.
    let new = Server::start_sharing_database(&old).await;
    let now_applied = applied(&url);
    let ours = this_build_migrations();
    assert_eq!(
        now_applied,
        &old_known | &ours,
        "this build applied its migrations on top of the old ones"
    );
    let unknown_to_old: BTreeSet<i64> = now_applied.difference(&old_known).copied().collect();
    if unknown_to_old.is_empty() {
        eprintln!(
            "NOTE: this build has no migration newer than the previous release ({}): the two \
             builds share one schema, so this run does not show an old server on a newer one",
            prev.commit
        );
    } else {
        eprintln!(
            "the previous release ({}) runs against migrations it does not know: {unknown_to_old:?}",
            prev.commit
        );
    }

    // The old server keeps serving its agents' check-ins ...
    checks_in_after(
        &old,
        &cur_agent,
        cur_id,
        Some(cur_seen),
        "after the upgrade",
    )
    .await;
    let old_seen = checks_in_after(&old, &old_agent, old_id, Some(old_seen), "old agent").await;
    // ... enrollments (of agents of both builds) ...
    let old_token = token(&old).await;
    let mut late_old_agent = Agent::of_binary(prev.agent.clone());
    let late_old_id = late_old_agent.enroll_ok(&old, &old_token, &[]).await;
    let mut late_cur_agent = Agent::new();
    let late_cur_id = late_cur_agent.enroll_ok(&old, &old_token, &[]).await;
    late_old_agent.run(&[]);
    late_cur_agent.run(&[]);
    checks_in_after(&old, &late_old_agent, late_old_id, None, "old agent, late").await;
    checks_in_after(&old, &late_cur_agent, late_cur_id, None, "new agent, late").await;
    // ... and admin calls that write: a policy edit through the old build
    // reaches the new server.
    old.admin_ok(&[
        "policy",
        "set",
        "rolling",
        "--checkin-interval",
        "7s",
        "--jitter-percent",
        "0",
    ])
    .await;
    let listed: serde_json::Value =
        serde_json::from_str(&new.admin_ok(&["policy", "list", "--json"]).await)
            .expect("policy list --json");
    let rolling = listed
        .as_array()
        .expect("a list")
        .iter()
        .find(|p| p["name"] == "rolling")
        .unwrap_or_else(|| panic!("the old build's policy is listed by the new: {listed}"));
    assert_eq!(rolling["checkin_interval_secs"], 7, "{rolling}");

    // The new server serves too: an old agent enrolls through it and
    // checks in, and it sees the old server's agents.
    let new_token = token(&new).await;
    let mut old_agent_on_new = Agent::of_binary(prev.agent.clone());
    let on_new_id = old_agent_on_new.enroll_ok(&new, &new_token, &[]).await;
    old_agent_on_new.run(&[]);
    checks_in_after(
        &new,
        &old_agent_on_new,
        on_new_id,
        None,
        "old agent via new",
    )
    .await;
    assert!(last_seen(&new, old_id).await.is_some_and(|s| s >= old_seen));

    // The old server restarts against the newer schema.
    old.stop().await;
    let restarted = old.try_restart().await;
    let must_restart = unknown_to_old.is_empty() || prev.restarts_against_newer_schema;
    match restarted {
        Ok(()) => {
            assert!(
                must_restart,
                ".ci/previous-release says {} refuses unknown migrations, yet it restarted: set \
                 restarts_against_newer_schema=true",
                prev.commit
            );
            let seen = last_seen(&old, old_id).await;
            checks_in_after(&old, &old_agent, old_id, seen, "after the old restart").await;
        }
        Err(log) => {
            assert!(!must_restart, "the old server did not restart: {log}");
            assert!(
                log.contains("was previously applied but is missing"),
                "a release before the rolling-upgrade rule refuses unknown migrations: {log}"
            );
            eprintln!(
                "NOTE: the previous release {} predates the rolling-upgrade rule: it keeps \
                 running on the newer schema but cannot restart on it (sqlx's \"migration was \
                 previously applied but is missing\"); releases from this one on restart",
                prev.commit
            );
        }
    }
    for agent in [
        &mut cur_agent,
        &mut old_agent,
        &mut late_old_agent,
        &mut late_cur_agent,
        &mut old_agent_on_new,
    ] {
        agent.terminate().await;
    }
    eprintln!("rolling upgrade test took {:?}", started.elapsed());
}
