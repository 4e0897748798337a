//! `tether rollout …`: publish agent releases and roll them out per group
//! (admin API; docs/upgrades.md).

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::bail;
use clap::Subcommand;
use tether_wire::{Release, Rollout, RolloutStage, RolloutUpdate};

use crate::cli::AdminConn;

#[derive(Debug, Subcommand)]
pub enum RolloutCommand {
    /// Publish an agent binary as release VERSION for one platform: a
    /// definitions channel of its own (`agent-<platform>-<version>`), signed
    /// and served like every channel.
    Publish {
        #[command(flatten)]
        conn: AdminConn,
        /// The tether-agent binary built for the platform.
        #[arg(long)]
        file: PathBuf,
        /// The version it reports (`tether-agent --version`).
        #[arg(long)]
        version: String,
        /// `<os>-<arch>` as Rust names them (default: this machine's).
        #[arg(long)]
        platform: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// The published releases.
    Releases {
        #[command(flatten)]
        conn: AdminConn,
        #[arg(long)]
        json: bool,
    },
    /// Every group's rollout with its progress.
    List {
        #[command(flatten)]
        conn: AdminConn,
        #[arg(long)]
        json: bool,
    },
    /// Set the version a group's agents should run: offered to a canary
    /// share first (`--canary 10`), or to all at once. Replaces the group's
    /// rollout; agents that took another version keep it until offered this
    /// one.
    Set {
        #[command(flatten)]
        conn: AdminConn,
        group: String,
        #[arg(long)]
        version: String,
        /// Percent of the group offered the version first (1–99); then
        /// `tether rollout promote GROUP`.
        #[arg(long)]
        canary: Option<u8>,
        #[arg(long)]
        json: bool,
    },
    /// Stop offering the version (agents that took it keep it).
    Pause {
        #[command(flatten)]
        conn: AdminConn,
        group: String,
        #[arg(long)]
        reason: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Offer the version again after a pause (a rollback pauses by itself).
    Resume {
        #[command(flatten)]
        conn: AdminConn,
        group: String,
        #[arg(long)]
        json: bool,
    },
    /// End the canary stage: offer the version to the whole group.
    Promote {
        #[command(flatten)]
        conn: AdminConn,
        group: String,
        #[arg(long)]
        json: bool,
    },
    /// End the group's rollout; its agents keep what they run.
    Clear {
        #[command(flatten)]
        conn: AdminConn,
        group: String,
    },
}

pub async fn run(cmd: RolloutCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        RolloutCommand::Publish {
            conn,
            file,
            version,
            platform,
            json,
        } => {
            let platform = platform.unwrap_or_else(tether_agent::upgrade::offer::platform);
            let Some(channel) = tether_wire::release_channel(&platform, &version) else {
                bail!(
                    "{}: version {version:?} or platform {platform:?} cannot name a release ({})",
                    tether_wire::ErrorCode::RolloutVersionInvalid,
                    tether_wire::ErrorCode::RolloutVersionInvalid.action()
                );
            };
            let content = crate::defs::read_defs_file(&file, crate::defs::DEFS_MAX_BYTES)?;
            let notes = format!("tether-agent {version} for {platform}");
            let v = crate::admin::bulk_client(&conn)?
                .publish_defs(&channel, content, Some(&notes))
                .await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                println!(
                    "published tether-agent {version} for {platform} as {channel} (v{}, {} bytes, sha256 {})",
                    v.version, v.length, v.sha256
                );
            }
        }
        RolloutCommand::Releases { conn, json } => {
            let releases = crate::admin::client(&conn)?.releases().await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&releases)?);
            } else {
                print!("{}", releases_text(&releases));
            }
        }
        RolloutCommand::List { conn, json } => {
            let rollouts = crate::admin::client(&conn)?.rollouts().await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&rollouts)?);
            } else {
                print!("{}", rollouts_text(&rollouts));
            }
        }
        RolloutCommand::Set {
            conn,
            group,
            version,
            canary,
            json,
        } => {
            let update = RolloutUpdate {
                version,
                canary_percent: canary,
            };
            let r = crate::admin::client(&conn)?
                .put_rollout(&group, &update)
                .await?;
            show(&r, json)?;
        }
        RolloutCommand::Pause {
            conn,
            group,
            reason,
            json,
        } => {
            let r = crate::admin::client(&conn)?
                .pause_rollout(&group, reason.as_deref())
                .await?;
            show(&r, json)?;
        }
        RolloutCommand::Resume { conn, group, json } => {
            let r = crate::admin::client(&conn)?
                .rollout_step(&group, "resume")
                .await?;
            show(&r, json)?;
        }
        RolloutCommand::Promote { conn, group, json } => {
            let r = crate::admin::client(&conn)?
                .rollout_step(&group, "promote")
                .await?;
            show(&r, json)?;
        }
        RolloutCommand::Clear { conn, group } => {
            crate::admin::client(&conn)?.delete_rollout(&group).await?;
            println!("the rollout of group {group} ended; its agents keep what they run");
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn show(r: &Rollout, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(r)?);
    } else {
        print!("{}", rollouts_text(std::slice::from_ref(r)));
    }
    Ok(())
}

/// One line per rollout.
pub fn rollouts_text(rollouts: &[Rollout]) -> String {
    if rollouts.is_empty() {
        return "no rollouts\n".to_owned();
    }
    let mut out = String::new();
    for r in rollouts {
        let stage = match r.stage {
            RolloutStage::Canary => format!("canary {}%", r.canary_percent),
            RolloutStage::All => "all".to_owned(),
        };
        let state = if r.paused {
            format!(
                "PAUSED: {}",
                crate::display::safe(r.pause_reason.as_deref().unwrap_or("no reason given"))
            )
        } else {
            "running".to_owned()
        };
        let p = &r.progress;
        let _ = writeln!(
            out,
            "{}: version {} ({stage}), {state}; {} of {} agents on it, {} rolled back",
            crate::display::safe(&r.group),
            crate::display::safe(&r.version),
            p.on_target,
            p.agents,
            p.rolled_back
        );
    }
    out
}

/// One line per release.
pub fn releases_text(releases: &[Release]) -> String {
    if releases.is_empty() {
        return "no releases published (tether rollout publish --file … --version …)\n".to_owned();
    }
    let mut out = String::new();
    for r in releases {
        let _ = writeln!(
            out,
            "{} {}  {} bytes  sha256 {}  published {}",
            crate::display::safe(&r.version),
            crate::display::safe(&r.platform),
            r.length,
            r.sha256,
            crate::defs::utc_minute(r.published_at)
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use tether_wire::RolloutProgress;
    use time::macros::datetime;

    #[test]
    fn rollouts_render_their_stage_pause_and_progress() {
        let r = Rollout {
            group: "prod".into(),
            version: "1.5.0".into(),
            stage: RolloutStage::Canary,
            canary_percent: 10,
            paused: true,
            pause_reason: Some("version 1.5.0 rolled back on agent web-1".into()),
            paused_at: Some(datetime!(2026-12-08 03:00 UTC)),
            updated_at: datetime!(2026-12-08 02:00 UTC),
            progress: RolloutProgress {
                agents: 40,
                on_target: 3,
                rolled_back: 1,
            },
        };
        assert_eq!(
            rollouts_text(&[r]),
            "prod: version 1.5.0 (canary 10%), PAUSED: version 1.5.0 rolled back on agent web-1; 3 of 40 agents on it, 1 rolled back\n"
        );
        assert_eq!(rollouts_text(&[]), "no rollouts\n");
    }
}
