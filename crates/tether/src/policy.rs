//! `tether policy list | set`. `set` edits a policy: it changes only the
//! settings it is given, keeps every other one as stored, says what changed,
//! and refuses to overwrite a concurrent edit (the server checks the revision
//! it was based on).

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use tether_wire::{DEFAULT_MAX_CONCURRENT_TASKS, DefsPolicy, Policy, PolicyUpdate};

use crate::admin::client;
use crate::cli::{AdminConn, PolicyCommand};

/// Jitter of a policy created without `--jitter-percent`.
const DEFAULT_JITTER_PERCENT: u8 = 10;

/// What `tether policy set` may change. Every flag left out keeps the stored
/// value; a new policy needs `--checkin-interval`.
#[derive(Debug, Clone, Default, Args)]
pub struct PolicyEdit {
    /// Check-in interval, e.g. 30s, 5m (required to create a policy).
    #[arg(long)]
    pub checkin_interval: Option<humantime::Duration>,
    /// Random spread of the check-in interval, in percent (default 10 for a
    /// new policy).
    #[arg(long)]
    pub jitter_percent: Option<u8>,
    #[command(flatten)]
    pub targets: TargetsEdit,
    #[command(flatten)]
    pub channels: ChannelsEdit,
    #[command(flatten)]
    pub update_urls: UpdateUrlsEdit,
    /// Time between definitions update checks, e.g. 6h (6h for a new policy).
    #[arg(long)]
    pub defs_interval: Option<humantime::Duration>,
    /// Whether a local user may force a definitions update (`tether agent
    /// update --now`); `true` for a new policy.
    #[arg(long, value_name = "true|false", action = clap::ArgAction::Set)]
    pub allow_user_update: Option<bool>,
    /// How many long tasks (scans) each agent runs at once, 1 to 32 (4 for
    /// a new policy); agents apply it at their next check-in.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=32))]
    pub max_concurrent_tasks: Option<u32>,
}

/// One list setting's flags: replace the list, add to it, remove from it, or
/// empty it. Replacing cannot be combined with the others.
macro_rules! list_edit {
    ($name:ident, $what:literal, $value:literal,
     $set:literal, $add:literal, $remove:literal, $clear:literal) => {
        #[derive(Debug, Clone, Default, Args)]
        pub struct $name {
            #[doc = concat!("Replace the policy's ", $what, " with these (repeatable).")]
            #[arg(id = $set, long = $set, value_name = $value, conflicts_with_all = [$add, $remove, $clear])]
            pub set: Vec<String>,
            #[doc = concat!("Add to the policy's ", $what, " (repeatable).")]
            #[arg(id = $add, long = $add, value_name = $value)]
            pub add: Vec<String>,
            #[doc = concat!("Remove from the policy's ", $what, " (repeatable).")]
            #[arg(id = $remove, long = $remove, value_name = $value)]
            pub remove: Vec<String>,
            #[doc = concat!("Empty the policy's ", $what, ".")]
            #[arg(id = $clear, long = $clear, conflicts_with_all = [$add, $remove])]
            pub clear: bool,
        }

        impl $name {
            fn edit(&self) -> ListEdit<'_> {
                ListEdit {
                    set: &self.set,
                    add: &self.add,
                    remove: &self.remove,
                    clear: self.clear,
                }
            }
        }
    };
}

list_edit!(
    TargetsEdit,
    "doctor targets (`HOST:PORT` the connectivity doctor checks on every agent; at most 64)",
    "HOST:PORT",
    "target",
    "add-target",
    "remove-target",
    "no-targets"
);
list_edit!(
    ChannelsEdit,
    "definitions channels",
    "NAME",
    "channel",
    "add-channel",
    "remove-channel",
    "no-channels"
);
list_edit!(
    UpdateUrlsEdit,
    "update servers (https:// `tether defs mirror` trees, in fallback order; none means the control plane itself)",
    "URL",
    "update-url",
    "add-update-url",
    "remove-update-url",
    "no-update-urls"
);

/// The flags of one list setting, without their names.
struct ListEdit<'a> {
    set: &'a [String],
    add: &'a [String],
    remove: &'a [String],
    clear: bool,
}

impl ListEdit<'_> {
    /// The edited list: replaced, or emptied, then items removed, then new
    /// items appended in the order given (an item already present stays
    /// where it is, so a fallback order is kept).
    fn apply(&self, current: &[String]) -> anyhow::Result<Vec<String>> {
        let mut list: Vec<String> = if !self.set.is_empty() {
            self.set.to_vec()
        } else if self.clear {
            Vec::new()
        } else {
            current.to_vec()
        };
        for r in self.remove {
            if !list.contains(r) {
                bail!("{r:?} is not in the list ({})", list_text(&list));
            }
            list.retain(|x| x != r);
        }
        for a in self.add {
            if !list.contains(a) {
                list.push(a.clone());
            }
        }
        let mut seen = std::collections::BTreeSet::new();
        list.retain(|x| seen.insert(x.clone()));
        Ok(list)
    }
}

/// One setting that `set` changed, for the summary it prints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub setting: &'static str,
    pub from: String,
    pub to: String,
}

/// The update to send and what it changes. `current` is the stored policy,
/// or `None` for a new one.
pub fn plan(
    name: &str,
    current: Option<&Policy>,
    edit: &PolicyEdit,
) -> anyhow::Result<(PolicyUpdate, Vec<Change>)> {
    let base = match current {
        Some(p) => PolicyUpdate {
            checkin_interval_secs: p.checkin_interval_secs,
            jitter_percent: p.jitter_percent,
            targets: p.targets.clone(),
            defs: p.defs.clone(),
            max_concurrent_tasks: Some(p.max_concurrent_tasks),
            if_revision: Some(p.revision),
        },
        None => {
            if edit.checkin_interval.is_none() {
                bail!(
                    "policy {name:?} does not exist yet: pass --checkin-interval to create it \
                     (`tether policy list` shows the existing ones)"
                );
            }
            PolicyUpdate {
                checkin_interval_secs: 0,
                jitter_percent: DEFAULT_JITTER_PERCENT,
                targets: Vec::new(),
                defs: DefsPolicy::default(),
                max_concurrent_tasks: None,
                if_revision: None,
            }
        }
    };
    let mut next = base.clone();
    if let Some(d) = edit.checkin_interval {
        next.checkin_interval_secs =
            u32::try_from(d.as_secs()).context("--checkin-interval is too long")?;
    }
    if let Some(j) = edit.jitter_percent {
        next.jitter_percent = j;
    }
    if let Some(n) = edit.max_concurrent_tasks {
        next.max_concurrent_tasks = Some(n);
    }
    next.targets = edit
        .targets
        .edit()
        .apply(&base.targets)
        .context("--remove-target")?;
    next.defs.channels = edit
        .channels
        .edit()
        .apply(&base.defs.channels)
        .context("--remove-channel")?;
    next.defs.update_urls = edit
        .update_urls
        .edit()
        .apply(&base.defs.update_urls)
        .context("--remove-update-url")?;
    // Validated here too, so a bad flag is named before anything is sent.
    next.defs = crate::defs::defs_policy(
        next.defs.channels,
        next.defs.update_urls,
        edit.defs_interval
            .map(Into::into)
            .or(Some(Duration::from_secs(u64::from(
                base.defs.interval_secs,
            )))),
        edit.allow_user_update
            .unwrap_or(base.defs.allow_user_update),
    )?;
    let changes = if current.is_none() {
        Vec::new()
    } else {
        diff(&base, &next)
    };
    Ok((next, changes))
}

/// The settings that differ between two versions of a policy.
fn diff(a: &PolicyUpdate, b: &PolicyUpdate) -> Vec<Change> {
    let mut out = Vec::new();
    let mut push = |setting, from: String, to: String| {
        if from != to {
            out.push(Change { setting, from, to });
        }
    };
    push(
        "check-in interval",
        secs_text(a.checkin_interval_secs),
        secs_text(b.checkin_interval_secs),
    );
    push(
        "jitter",
        format!("{} %", a.jitter_percent),
        format!("{} %", b.jitter_percent),
    );
    push(
        "doctor targets",
        list_text(&a.targets),
        list_text(&b.targets),
    );
    push(
        "channels",
        list_text(&a.defs.channels),
        list_text(&b.defs.channels),
    );
    push(
        "update servers",
        urls_text(&a.defs.update_urls),
        urls_text(&b.defs.update_urls),
    );
    push(
        "definitions interval",
        secs_text(a.defs.interval_secs),
        secs_text(b.defs.interval_secs),
    );
    push(
        "user updates",
        allowed_text(a.defs.allow_user_update).into(),
        allowed_text(b.defs.allow_user_update).into(),
    );
    let tasks = |n: Option<u32>| n.unwrap_or(DEFAULT_MAX_CONCURRENT_TASKS).to_string();
    push(
        "tasks at once",
        tasks(a.max_concurrent_tasks),
        tasks(b.max_concurrent_tasks),
    );
    out
}

pub async fn run(cmd: PolicyCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        PolicyCommand::List { conn, json } => {
            let policies = client(&conn)?.list_policies().await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&policies)?);
            } else {
                print!("{}", table(&policies));
            }
        }
        PolicyCommand::Set {
            conn,
            name,
            edit,
            json,
        } => set(&conn, &name, &edit, json).await?,
    }
    Ok(ExitCode::SUCCESS)
}

async fn set(conn: &AdminConn, name: &str, edit: &PolicyEdit, json: bool) -> anyhow::Result<()> {
    let api = client(conn)?;
    let policies = api.list_policies().await?;
    let current = policies.iter().find(|p| p.name == name);
    let (update, changes) = plan(name, current, edit)?;
    if let Some(p) = current
        && changes.is_empty()
    {
        if json {
            println!("{}", serde_json::to_string_pretty(p)?);
        } else {
            println!(
                "policy {} unchanged at revision {}: {}",
                p.name,
                p.revision,
                summary(p)
            );
        }
        return Ok(());
    }
    let saved = api.put_policy(name, &update).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&saved)?);
        return Ok(());
    }
    match current {
        None => println!(
            "created policy {} at revision {}: {}",
            saved.name,
            saved.revision,
            summary(&saved)
        ),
        Some(_) => {
            println!("policy {} is at revision {}:", saved.name, saved.revision);
            for c in &changes {
                println!("  changed {}: {} -> {}", c.setting, c.from, c.to);
            }
            println!("  now: {}", summary(&saved));
        }
    }
    Ok(())
}

/// A policy's settings in one line.
fn summary(p: &Policy) -> String {
    format!(
        "check in every {} ± {} %; doctor targets: {}; {}; up to {} tasks at once",
        secs_text(p.checkin_interval_secs),
        p.jitter_percent,
        list_text(&p.targets),
        defs_text(&p.defs),
        p.max_concurrent_tasks
    )
}

/// A policy's definitions settings in one phrase.
fn defs_text(d: &DefsPolicy) -> String {
    if d.channels.is_empty() {
        return "definitions: no channel".to_owned();
    }
    format!(
        "definitions: {} every {} from {}; user updates {}",
        d.channels.join(","),
        secs_text(d.interval_secs),
        urls_text(&d.update_urls),
        allowed_text(d.allow_user_update)
    )
}

fn secs_text(secs: u32) -> String {
    humantime::format_duration(Duration::from_secs(u64::from(secs))).to_string()
}

/// A list on one line, `-` when it is empty.
fn list_text(list: &[String]) -> String {
    if list.is_empty() {
        String::from("-")
    } else {
        list.join(",")
    }
}

fn urls_text(urls: &[String]) -> String {
    if urls.is_empty() {
        "the control plane".to_owned()
    } else {
        urls.join(" then ")
    }
}

fn allowed_text(allowed: bool) -> &'static str {
    if allowed { "allowed" } else { "forbidden" }
}

/// What `policy list` prints.
pub fn table(policies: &[Policy]) -> String {
    let mut out = format!(
        "{:<20} {:>8} {:>10} {:>7}  {:<20}  {:<16}  {:>9}  {:<11}  {:>5}  {}\n",
        "NAME",
        "REVISION",
        "INTERVAL",
        "JITTER",
        "TARGETS",
        "CHANNELS",
        "DEFS EVERY",
        "USER UPDATE",
        "TASKS",
        "UPDATE URLS"
    );
    for p in policies {
        let d = &p.defs;
        out.push_str(&format!(
            "{:<20} {:>8} {:>9}s {:>6}%  {:<20}  {:<16}  {:>9}  {:<11}  {:>5}  {}\n",
            p.name,
            p.revision,
            p.checkin_interval_secs,
            p.jitter_percent,
            list_text(&p.targets),
            list_text(&d.channels),
            secs_text(d.interval_secs),
            if d.allow_user_update { "yes" } else { "no" },
            p.max_concurrent_tasks,
            if d.update_urls.is_empty() {
                "(control plane)".to_owned()
            } else {
                d.update_urls.join(" ")
            }
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::cli::{Cli, Command};

    fn stored() -> Policy {
        Policy {
            name: "default".into(),
            revision: 4,
            checkin_interval_secs: 10,
            jitter_percent: 10,
            targets: Vec::new(),
            defs: DefsPolicy {
                channels: vec!["sample".into()],
                update_urls: vec!["https://a.example/defs".into()],
                interval_secs: 7200,
                allow_user_update: false,
            },
            max_concurrent_tasks: 4,
        }
    }

    fn edit(args: &[&str]) -> PolicyEdit {
        let mut full = vec!["tether", "policy", "set", "default"];
        full.extend_from_slice(args);
        match Cli::try_parse_from(full).expect("parses").command {
            Command::Policy(PolicyCommand::Set { edit, .. }) => *edit,
            other => panic!("not policy set: {other:?}"),
        }
    }

    /// The README tour's line: it sets the interval and a target and must
    /// leave the channel, the update server, the definitions interval and the
    /// user-update switch as they were.
    #[test]
    fn set_changes_only_what_it_is_given() {
        let p = stored();
        let (update, changes) = plan(
            "default",
            Some(&p),
            &edit(&["--checkin-interval", "30s", "--target", "ldap.corp:389"]),
        )
        .expect("plans");
        assert_eq!(update.checkin_interval_secs, 30);
        assert_eq!(update.targets, ["ldap.corp:389"]);
        assert_eq!(update.defs, p.defs, "definitions settings are kept");
        assert_eq!(update.jitter_percent, 10);
        assert_eq!(update.if_revision, Some(4));
        assert_eq!(
            changes,
            vec![
                Change {
                    setting: "check-in interval",
                    from: "10s".into(),
                    to: "30s".into()
                },
                Change {
                    setting: "doctor targets",
                    from: "-".into(),
                    to: "ldap.corp:389".into()
                },
            ]
        );
    }

    #[test]
    fn lists_can_be_added_to_removed_from_replaced_and_emptied() {
        let p = stored();
        let (u, _) = plan("default", Some(&p), &edit(&["--add-channel", "main"])).expect("adds");
        assert_eq!(u.defs.channels, ["sample", "main"]);
        let (u, _) = plan(
            "default",
            Some(&p),
            &edit(&["--add-channel", "main", "--remove-channel", "sample"]),
        )
        .expect("adds and removes");
        assert_eq!(u.defs.channels, ["main"]);
        let (u, _) = plan(
            "default",
            Some(&p),
            &edit(&["--channel", "x", "--channel", "y"]),
        )
        .expect("replaces");
        assert_eq!(u.defs.channels, ["x", "y"]);
        let (u, c) = plan("default", Some(&p), &edit(&["--no-update-urls"])).expect("empties");
        assert!(u.defs.update_urls.is_empty());
        assert_eq!(c[0].setting, "update servers");
        assert_eq!(c[0].to, "the control plane");
        // Adding what is there already changes nothing and keeps the order.
        let (u, c) = plan("default", Some(&p), &edit(&["--add-channel", "sample"])).expect("no-op");
        assert_eq!(u.defs.channels, ["sample"]);
        assert!(c.is_empty());
    }

    #[test]
    fn removing_what_is_not_there_is_refused_with_the_list() {
        let err = plan(
            "default",
            Some(&stored()),
            &edit(&["--remove-channel", "nope"]),
        )
        .expect_err("refused");
        let text = format!("{err:#}");
        assert!(
            text.contains("\"nope\" is not in the list (sample)"),
            "{text}"
        );
    }

    #[test]
    fn replacing_conflicts_with_editing_the_same_list() {
        for args in [
            ["--channel", "a", "--add-channel", "b"],
            ["--target", "a:1", "--remove-target", "b:1"],
        ] {
            let mut full = vec!["tether", "policy", "set", "default"];
            full.extend_from_slice(&args);
            assert!(Cli::try_parse_from(full).is_err(), "{args:?}");
        }
        assert!(
            Cli::try_parse_from([
                "tether",
                "policy",
                "set",
                "d",
                "--no-targets",
                "--add-target",
                "a:1"
            ])
            .is_err()
        );
    }

    #[test]
    fn a_new_policy_needs_an_interval_and_gets_the_defaults() {
        let err = plan("lab", None, &edit(&["--add-channel", "main"])).expect_err("refused");
        assert!(format!("{err:#}").contains("pass --checkin-interval"));
        let (u, c) = plan("lab", None, &edit(&["--checkin-interval", "1m"])).expect("creates");
        assert_eq!(u.checkin_interval_secs, 60);
        assert_eq!(u.jitter_percent, DEFAULT_JITTER_PERCENT);
        assert_eq!(u.defs, DefsPolicy::default());
        assert_eq!(u.if_revision, None);
        assert!(c.is_empty());
    }

    #[test]
    fn max_concurrent_tasks_is_set_within_bounds_and_kept_otherwise() {
        let p = stored();
        let (u, c) =
            plan("default", Some(&p), &edit(&["--max-concurrent-tasks", "2"])).expect("plans");
        assert_eq!(u.max_concurrent_tasks, Some(2));
        assert_eq!(
            c,
            vec![Change {
                setting: "tasks at once",
                from: "4".into(),
                to: "2".into()
            }]
        );
        let (u, _) = plan("default", Some(&p), &edit(&["--jitter-percent", "5"])).expect("plans");
        assert_eq!(u.max_concurrent_tasks, Some(4), "kept as stored");
        let (u, _) = plan("lab", None, &edit(&["--checkin-interval", "1m"])).expect("creates");
        assert_eq!(u.max_concurrent_tasks, None, "the server's default");
        for bad in ["0", "33", "-1", "many"] {
            let full = [
                "tether",
                "policy",
                "set",
                "d",
                "--max-concurrent-tasks",
                bad,
            ];
            assert!(Cli::try_parse_from(full).is_err(), "{bad}");
        }
        assert!(
            summary(&p).ends_with("; up to 4 tasks at once"),
            "{}",
            summary(&p)
        );
        assert!(
            table(&[p])
                .lines()
                .nth(1)
                .is_some_and(|l| l.contains("      4  https://a.example/defs"))
        );
    }

    #[test]
    fn definitions_flags_are_still_validated() {
        let err = plan(
            "default",
            Some(&stored()),
            &edit(&["--add-update-url", "http://plain.example/defs"]),
        )
        .expect_err("plain http refused");
        assert!(format!("{err:#}").contains("must be an https:// URL"));
        let (u, c) = plan(
            "default",
            Some(&stored()),
            &edit(&["--defs-interval", "1h", "--allow-user-update", "true"]),
        )
        .expect("plans");
        assert_eq!(u.defs.interval_secs, 3600);
        assert!(u.defs.allow_user_update);
        assert_eq!(c.len(), 2);
    }
}
