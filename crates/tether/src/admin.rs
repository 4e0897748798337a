//! Admin commands over the server's API: tokens, agents, policies.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use tether_client::ApiClient;
use tether_transport::{ProxySetting, Transport, TransportConfig, TrustConfig};
use tether_wire::{
    ActionInfo, ActionKind, AgentDetail, AgentFlag, AgentSummary, BundleInfo, CreateTokenRequest,
    DoctorSummary, TokenInfo,
};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use uuid::Uuid;

use crate::cli::{AdminConn, AdminTokensCommand, AgentsCommand, TokenCommand};
use crate::display::safe;
use crate::endpoint::{DEFAULT_DATA_DIR, Endpoint};

/// Builds an authenticated admin client from flags, env and the local data dir.
pub fn client(conn: &AdminConn) -> anyhow::Result<ApiClient> {
    let (base, token, config) = connection(conn)?;
    Ok(ApiClient::new(Transport::new(config)?, base).with_bearer(token))
}

/// [`client`] plus a bulk transport for definitions publish and export: a
/// body cap of [`crate::defs::DEFS_MAX_BYTES`] and a longer HTTP limit,
/// where the ordinary calls keep the smaller cap.
pub fn bulk_client(conn: &AdminConn) -> anyhow::Result<ApiClient> {
    let (base, token, config) = connection(conn)?;
    let mut bulk = TransportConfig {
        max_body_bytes: crate::defs::DEFS_MAX_BYTES,
        ..config.clone()
    };
    bulk.timeouts.http = crate::defs::DEFS_HTTP_TIMEOUT;
    Ok(ApiClient::new(Transport::new(config)?, base)
        .with_bearer(token)
        .with_bulk_transport(Transport::new(bulk)?))
}

/// The server URL, the admin credential and the transport settings, from
/// flags, env and the local data dir.
fn connection(conn: &AdminConn) -> anyhow::Result<(url::Url, String, TransportConfig)> {
    let data_dir = conn
        .data_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
    let local = Endpoint::read(&data_dir)?;

    let server = match (&conn.server, &local) {
        (Some(s), _) => s.clone(),
        (None, Some(e)) => e.url.clone(),
        (None, None) => bail!(
            "no server given: pass --server URL or set TETHER_SERVER (no local server record in {})",
            data_dir.display()
        ),
    };
    let base =
        url::Url::parse(&server).with_context(|| format!("--server {server:?} is not a URL"))?;

    let token = match (
        std::env::var("TETHER_ADMIN_TOKEN").ok(),
        &conn.admin_token_file,
        &local,
    ) {
        (_, Some(path), _) => read_secret(path)?,
        (Some(t), None, _) if !t.trim().is_empty() => t.trim().to_owned(),
        (_, None, Some(e)) => read_secret(&e.admin_token_path)?,
        _ => bail!(
            "{}: no admin credential: pass --admin-token-file, set TETHER_ADMIN_TOKEN, or run next to the server's data dir",
            tether_wire::ErrorCode::AdminCredentialRejected
        ),
    };

    let ca_file = conn.ca_file.clone().or_else(|| {
        // The local CA only applies when talking to the local server.
        local
            .as_ref()
            .filter(|e| e.url == server)
            .map(|e| e.ca_pem_path.clone())
    });
    let trust = trust_config(ca_file.as_deref(), conn.ca_fingerprint.as_deref())?;
    let config = TransportConfig {
        proxy: ProxySetting::FromEnv,
        trust,
        user_agent: format!("tether-admin/{}", tether_wire::VERSION),
        // Bundle downloads are up to 16 MiB.
        max_body_bytes: 20 * 1024 * 1024,
        ..TransportConfig::default()
    };
    Ok((base, token, config))
}

pub fn trust_config(
    ca_file: Option<&std::path::Path>,
    fingerprint: Option<&str>,
) -> anyhow::Result<TrustConfig> {
    let ca_pem = match ca_file {
        Some(p) => {
            Some(std::fs::read(p).with_context(|| format!("reading CA file {}", p.display()))?)
        }
        None => None,
    };
    let pinned = match fingerprint {
        Some(f) => Some(tether_transport::parse_fingerprint(f)?),
        None => None,
    };
    let system_roots = ca_pem.is_none() && pinned.is_none();
    Ok(TrustConfig {
        pinned_ca_sha256: pinned,
        ca_pem,
        extra_ca_pem: None,
        system_roots,
    })
}

fn read_secret(path: &std::path::Path) -> anyhow::Result<String> {
    let s = std::fs::read_to_string(path)
        .with_context(|| format!("reading admin credential {}", path.display()))?;
    let s = s.trim();
    if s.is_empty() {
        bail!("admin credential file {} is empty", path.display());
    }
    Ok(s.to_owned())
}

pub async fn token(cmd: TokenCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        TokenCommand::Create {
            conn,
            kind,
            group,
            valid_for,
            not_before,
            max_uses,
            require_approval,
            policy,
            site,
            json,
        } => {
            let not_before = match not_before {
                Some(s) => Some(
                    OffsetDateTime::parse(&s, &Rfc3339)
                        .with_context(|| format!("--not-before {s:?} is not an RFC 3339 time"))?,
                ),
                None => None,
            };
            let req = CreateTokenRequest {
                kind,
                group,
                valid_for_secs: valid_for.as_secs(),
                not_before,
                max_uses,
                require_approval,
                policy,
                site,
            };
            let created = client(&conn)?.create_token(&req).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&created)?);
            } else {
                println!("{}", created.token);
                eprintln!("{}", describe_token(&created.info));
                eprintln!("The token is shown once; Tether keeps only its hash.");
            }
        }
        TokenCommand::List { conn, json } => {
            let tokens = client(&conn)?.list_tokens().await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&tokens)?);
            } else {
                print!("{}", token_table(&tokens, OffsetDateTime::now_utc()));
            }
        }
        TokenCommand::Revoke { conn, id } => {
            let info = client(&conn)?.revoke_token(id).await?;
            println!("revoked {}", describe_token(&info));
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn agents(cmd: AgentsCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        AgentsCommand::List { conn, status, json } => {
            let agents = client(&conn)?.list_agents(status).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&agents)?);
            } else {
                print!("{}", agent_table(&agents, OffsetDateTime::now_utc()));
            }
        }
        AgentsCommand::Show { conn, id, json } => {
            let api = client(&conn)?;
            let detail = api.agent(id).await?;
            let tasks = api.list_tasks(&format!("agent={id}&limit=20")).await?;
            if json {
                let mut v = serde_json::to_value(&detail)?;
                v["tasks"] = serde_json::to_value(&tasks)?;
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                print!("{}", agent_detail(&detail, OffsetDateTime::now_utc()));
                if !tasks.is_empty() {
                    println!("Tasks (newest first):");
                    print!("{}", crate::tasks_cmd::table(&tasks));
                }
            }
        }
        AgentsCommand::Approve { conn, id } => {
            let a = client(&conn)?.approve_agent(id).await?;
            println!(
                "approved {} ({}); status {} until its next check-in",
                a.name, a.id, a.status
            );
        }
        AgentsCommand::Remove { conn, id } => {
            client(&conn)?.remove_agent(id).await?;
            println!("removed {id}; its credential no longer works");
        }
        AgentsCommand::Doctor {
            conn,
            id,
            no_upload,
            json,
        } => {
            let action = client(&conn)?
                .queue_action(id, &ActionKind::Doctor { upload: !no_upload })
                .await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&action)?);
            } else {
                println!(
                    "queued doctor run {} for agent {id}{}; it runs at the agent's next check-in. See the verdict with `tether agents show {id}`{}",
                    action.id,
                    if no_upload {
                        " (no bundle upload)"
                    } else {
                        " with bundle upload"
                    },
                    if no_upload {
                        "."
                    } else {
                        " and the bundle with `tether agents bundles ID`."
                    }
                );
            }
        }
        AgentsCommand::Capture {
            conn,
            id,
            duration,
            tls_keylog,
            wait,
            json,
        } => {
            let secs = duration
                .map(|d| u32::try_from(d.as_secs()))
                .transpose()
                .map_err(|_| anyhow::anyhow!("--for is longer than the 1 h a capture may take"))?;
            let client = client(&conn)?;
            let mut action = client
                .queue_action(id, &ActionKind::Capture { secs, tls_keylog })
                .await?;
            if wait {
                let window = Duration::from_secs(u64::from(secs.unwrap_or(3600)));
                action =
                    wait_action(&client, id, action.id, window + Duration::from_secs(600)).await?;
            }
            if json {
                println!("{}", serde_json::to_string_pretty(&action)?);
            } else if let Some(result) = &action.result {
                println!(
                    "capture {} on agent {id}: {} {}",
                    action.id,
                    if result.ok { "done:" } else { "failed:" },
                    safe(&result.message)
                );
            } else {
                println!(
                    "queued capture {} for agent {id}; it starts at the agent's next check-in and its result names the uploaded bundle (`tether agents bundles {id}`){}",
                    action.id,
                    if tls_keylog {
                        "; with the TLS key log, the agent's credential is rotated after the upload"
                    } else {
                        ""
                    }
                );
            }
            if action.result.as_ref().is_some_and(|r| !r.ok) {
                anyhow::bail!("the capture failed on the agent");
            }
        }
        AgentsCommand::Bundles { conn, id, json } => {
            let bundles = client(&conn)?.list_bundles(id).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&bundles)?);
            } else {
                print!("{}", bundle_table(&bundles, OffsetDateTime::now_utc()));
            }
        }
        AgentsCommand::Escalate {
            conn,
            id,
            bundle,
            format,
            out,
        } => {
            let text = escalation_report(&client(&conn)?, id, bundle, format).await?;
            match out {
                Some(path) => {
                    tether_fs::write_atomic(&path, text.as_bytes(), tether_fs::PRIVATE)
                        .with_context(|| format!("writing {}", path.display()))?;
                    println!("wrote the escalation report for {id} to {}", path.display());
                }
                None => print!("{text}"),
            }
        }
        AgentsCommand::BundleDownload {
            conn,
            bundle_id,
            out,
        } => {
            let bytes = client(&conn)?.download_bundle(bundle_id).await?;
            tether_fs::write_atomic(&out, &bytes, tether_fs::PRIVATE)
                .with_context(|| format!("writing {}", out.display()))?;
            println!("wrote {} ({} bytes)", out.display(), bytes.len());
        }
        AgentsCommand::UpdateNow {
            conn,
            id,
            group,
            channel,
            json,
        } => {
            let what = match &channel {
                Some(c) => format!("channel {c}"),
                None => "every subscribed channel".to_owned(),
            };
            let kind = ActionKind::UpdateDefs { channel };
            let client = client(&conn)?;
            let actions = match (id, group) {
                (Some(id), _) => vec![client.queue_action(id, &kind).await?],
                (None, Some(group)) => client.queue_group_action(&group, &kind).await?,
                // clap requires one of them (`required_unless_present`).
                (None, None) => bail!("pass an agent ID or --group"),
            };
            if json {
                println!("{}", serde_json::to_string_pretty(&actions)?);
            } else {
                for a in &actions {
                    println!(
                        "queued definitions update {} for agent {} ({what})",
                        a.id, a.agent_id
                    );
                }
                if actions.is_empty() {
                    println!("no agents in that group: nothing queued");
                } else {
                    println!(
                        "It runs at each agent's next check-in; follow it with `tether agents show ID`."
                    );
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn admin_tokens(cmd: AdminTokensCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        AdminTokensCommand::Create { conn, name, json } => {
            let created = client(&conn)?
                .create_admin_token(&tether_wire::CreateAdminTokenRequest { name })
                .await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&created)?);
            } else {
                println!("{}", created.token);
                eprintln!(
                    "admin credential {} ({}); the secret is shown once, Tether keeps only its hash",
                    safe(&created.info.name),
                    created.info.id
                );
            }
        }
        AdminTokensCommand::List { conn, json } => {
            let tokens = client(&conn)?.list_admin_tokens().await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&tokens)?);
            } else {
                print!("{}", admin_token_table(&tokens));
            }
        }
        AdminTokensCommand::Revoke { conn, id_or_name } => {
            let client = client(&conn)?;
            let id = resolve_admin_token(&client, &id_or_name).await?;
            let info = client.revoke_admin_token(id).await?;
            println!(
                "revoked admin credential {} ({}); it no longer works",
                safe(&info.name),
                info.id
            );
        }
        AdminTokensCommand::Rotate {
            conn,
            id_or_name,
            out,
            json,
        } => {
            let client = client(&conn)?;
            let id = resolve_admin_token(&client, &id_or_name).await?;
            let created = client.rotate_admin_token(id).await?;
            match (&out, json) {
                (Some(path), _) => {
                    write_secret(path, &created.token)?;
                    println!(
                        "rotated admin credential {} ({id} → {}); the new secret is in {} (mode 0600), the old one no longer works",
                        safe(&created.info.name),
                        created.info.id,
                        path.display()
                    );
                }
                (None, true) => println!("{}", serde_json::to_string_pretty(&created)?),
                (None, false) => {
                    println!("{}", created.token);
                    eprintln!(
                        "rotated admin credential {} ({id} → {}); the old one no longer works",
                        safe(&created.info.name),
                        created.info.id
                    );
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// An admin credential's id, from an id or the name of one not revoked.
async fn resolve_admin_token(client: &ApiClient, id_or_name: &str) -> anyhow::Result<uuid::Uuid> {
    if let Ok(id) = uuid::Uuid::parse_str(id_or_name) {
        return Ok(id);
    }
    let matching: Vec<_> = client
        .list_admin_tokens()
        .await?
        .into_iter()
        .filter(|t| t.revoked_at.is_none() && t.name == id_or_name)
        .collect();
    match matching.as_slice() {
        [one] => Ok(one.id),
        [] => bail!(
            "{}: no admin credential named {:?} that is not revoked; list them with `tether admin-tokens list`",
            tether_wire::ErrorCode::NotFound,
            safe(id_or_name)
        ),
        many => bail!(
            "{} admin credentials are named {:?}; pass one of their IDs: {}",
            many.len(),
            safe(id_or_name),
            many.iter()
                .map(|t| t.id.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// Writes a secret to `path`, mode 0600, replacing it atomically.
fn write_secret(path: &std::path::Path, secret: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("creating a file in {}", dir.display()))?;
    // NamedTempFile is created 0600 already.
    writeln!(tmp, "{secret}").with_context(|| format!("writing {}", path.display()))?;
    tmp.as_file()
        .sync_all()
        .with_context(|| format!("writing {}", path.display()))?;
    tmp.persist(path)
        .with_context(|| format!("replacing {}", path.display()))?;
    Ok(())
}

fn admin_token_table(tokens: &[tether_wire::AdminTokenInfo]) -> String {
    let mut out = format!(
        "{:<36}  {:<20}  {:<9}  {:<20}  {:<20}\n",
        "ID", "NAME", "STATE", "CREATED", "REVOKED"
    );
    for t in tokens {
        out.push_str(&format!(
            "{:<36}  {:<20}  {:<9}  {:<20}  {:<20}\n",
            t.id,
            truncate(&safe(&t.name), 20),
            if t.revoked_at.is_some() {
                "revoked"
            } else {
                "active"
            },
            fmt_time(t.created_at),
            t.revoked_at.map_or("-".to_owned(), fmt_time),
        ));
    }
    out
}

fn describe_token(t: &TokenInfo) -> String {
    format!(
        "token {} kind={} group={} policy={} valid {} .. {} uses {}/{}{}",
        t.id,
        t.kind,
        t.group,
        t.policy,
        fmt_time(t.not_before),
        fmt_time(t.expires_at),
        t.uses,
        t.max_uses.map_or("∞".to_owned(), |m| m.to_string()),
        if t.require_approval {
            " (approval required)"
        } else {
            ""
        }
    )
}

/// The escalation report of agent `id`, quoting `bundle` (or the last
/// doctor run's, else the newest).
async fn escalation_report(
    api: &ApiClient,
    id: Uuid,
    bundle: Option<Uuid>,
    format: crate::escalate::Format,
) -> anyhow::Result<String> {
    use crate::escalate::{BundleFiles, Inputs, Report};
    let detail = api.agent(id).await?;
    let bundles = api.list_bundles(id).await?;
    let wanted = bundle.or(detail.last_doctor.as_ref().and_then(|d| d.bundle_id));
    let chosen = match wanted {
        Some(b) => match bundles.iter().find(|x| x.id == b) {
            Some(found) => Some(found.clone()),
            // The last doctor run's bundle may have been pruned.
            None if bundle.is_none() => bundles.first().cloned(),
            None => anyhow::bail!(
                "bundle {b} is not one of agent {id}'s bundles; list them with `tether agents bundles {id}`"
            ),
        },
        None => bundles.first().cloned(),
    };
    let files = match &chosen {
        Some(b) => match api.download_bundle(b.id).await {
            Ok(bytes) => BundleFiles::read(&bytes),
            Err(e) => Err(format!("download failed: {e}")),
        },
        None => Err("no bundle".to_owned()),
    };
    let report = Report::build(&Inputs {
        detail,
        bundle: chosen,
        files,
        now: OffsetDateTime::now_utc(),
    });
    Ok(report.render(format))
}

pub fn fmt_time(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_else(|_| t.to_string())
}

/// "12s ago", "3m ago", "2h ago", "4d ago".
pub fn ago(then: Option<OffsetDateTime>, now: OffsetDateTime) -> String {
    let Some(then) = then else {
        return "never".to_owned();
    };
    let s = (now - then).whole_seconds();
    match s {
        i64::MIN..0 => "in the future".to_owned(),
        0..120 => format!("{s}s ago"),
        120..7200 => format!("{}m ago", s / 60),
        7200..172_800 => format!("{}h ago", s / 3600),
        _ => format!("{}d ago", s / 86_400),
    }
}

fn token_table(tokens: &[TokenInfo], now: OffsetDateTime) -> String {
    let mut out = format!(
        "{:<36}  {:<12}  {:<16}  {:<8}  {:>9}  {:<20}\n",
        "ID", "KIND", "GROUP", "STATE", "USES", "EXPIRES"
    );
    for t in tokens {
        let state = if t.revoked_at.is_some() {
            "revoked"
        } else if now < t.not_before {
            "not-yet"
        } else if now >= t.expires_at {
            "expired"
        } else if t.max_uses.is_some_and(|m| t.uses >= m) {
            "used-up"
        } else {
            "valid"
        };
        let uses = format!(
            "{}/{}",
            t.uses,
            t.max_uses.map_or("∞".to_owned(), |m| m.to_string())
        );
        out.push_str(&format!(
            "{:<36}  {:<12}  {:<16}  {:<8}  {:>9}  {:<20}\n",
            t.id,
            t.kind.as_str(),
            safe(&t.group),
            state,
            uses,
            fmt_time(t.expires_at)
        ));
    }
    out
}

pub fn agent_table(agents: &[AgentSummary], now: OffsetDateTime) -> String {
    let mut out = format!(
        "{:<36}  {:<20}  {:<12}  {:<12}  {:<9}  {:<10}  {:<12}  {:<9}  {:<20}  {}\n",
        "ID",
        "NAME",
        "KIND",
        "GROUP",
        "STATUS",
        "LAST SEEN",
        "VERSION",
        "IN POLICY",
        "FLAGS",
        "UPGRADE"
    );
    for a in agents {
        out.push_str(&format!(
            "{:<36}  {:<20}  {:<12}  {:<12}  {:<9}  {:<10}  {:<12}  {:<9}  {:<20}  {}\n",
            a.id,
            truncate(&safe(&a.name), 20),
            a.kind.as_str(),
            truncate(&safe(&a.group), 12),
            a.status.as_str().to_uppercase(),
            ago(a.last_seen, now),
            truncate(&safe(&a.version), 12),
            crate::defs::in_policy_cell(a.in_policy),
            flags_text(&a.flags),
            upgrade_cell(a)
        ));
    }
    if agents.is_empty() {
        out.push_str("(no agents)\n");
    }
    out
}

/// Where an agent stands against its group's rollout, then its last
/// upgrade: who is behind and why.
pub fn upgrade_cell(a: &AgentSummary) -> String {
    use tether_wire::AgentRolloutState as S;
    let behind = a.rollout.as_ref().and_then(|r| {
        let why = match r.state {
            S::OnTarget => return None,
            S::Offered => "offered, not taken yet",
            S::WaitingForCanary => "not in the canary share",
            S::Paused => "the rollout is paused",
            S::RolledBack => "it rolled back here; not offered again",
            S::Unknown => "state unknown",
        };
        Some(format!("behind {}: {why}", safe(&r.target)))
    });
    match (behind, a.upgrade.as_ref()) {
        (None, u) => upgrade_text(u),
        (Some(b), None) => b,
        (Some(b), Some(u)) => format!("{b}; last: {}", upgrade_text(Some(u))),
    }
}

/// An agent's last upgrade as `agents list` and `agents show` print it:
/// who is upgrading, upgraded, or rolled back and why.
pub fn upgrade_text(u: Option<&tether_wire::UpgradeReport>) -> String {
    let Some(u) = u else {
        return "-".to_owned();
    };
    let back_to = u.from.as_deref().unwrap_or("the packaged binary");
    match u.state {
        tether_wire::UpgradeState::Upgrading => format!("upgrading to {}", safe(&u.version)),
        tether_wire::UpgradeState::Upgraded => format!("upgraded to {}", safe(&u.version)),
        tether_wire::UpgradeState::RolledBack => format!(
            "rolled back from {} to {}: {}",
            safe(&u.version),
            safe(back_to),
            safe(u.reason.as_deref().unwrap_or("no reason given"))
        ),
        tether_wire::UpgradeState::Unknown => format!("{} (state unknown)", safe(&u.version)),
    }
}

/// An agent's flags as `agents list` (its FLAGS column) and `agents show`
/// (its Status line) both print them: the wire names, comma-separated.
pub fn flags_text(flags: &[AgentFlag]) -> String {
    flags
        .iter()
        .map(|f| f.as_str())
        .collect::<Vec<_>>()
        .join(",")
}

/// One line for a doctor verdict: status, code and root cause.
pub fn verdict_line(v: &DoctorSummary) -> String {
    format!(
        "{}{}: {}",
        safe(&v.status.to_uppercase()),
        v.code.map(|c| format!(" {c}")).unwrap_or_default(),
        safe(&v.root_cause)
    )
}

pub fn bundle_table(bundles: &[BundleInfo], now: OffsetDateTime) -> String {
    let mut out = format!(
        "{:<36}  {:>10}  {:<22}  {}\n",
        "BUNDLE", "BYTES", "CREATED", "VERDICT"
    );
    for b in bundles {
        out.push_str(&format!(
            "{:<36}  {:>10}  {:<22}  {}\n",
            b.id,
            b.size_bytes,
            format!(
                "{} ({})",
                fmt_time(b.created_at),
                ago(Some(b.created_at), now)
            ),
            b.verdict
                .as_ref()
                .map_or_else(|| "-".to_owned(), verdict_line)
        ));
    }
    if bundles.is_empty() {
        out.push_str("(no bundles)\n");
    }
    out
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_owned()
    } else {
        format!("{}…", s.chars().take(n - 1).collect::<String>())
    }
}

fn agent_detail(d: &AgentDetail, now: OffsetDateTime) -> String {
    let a = &d.summary;
    let mut out = String::new();
    let line = |out: &mut String, k: &str, v: String| out.push_str(&format!("{k:<18} {v}\n"));
    line(&mut out, "Agent", format!("{} ({})", safe(&a.name), a.id));
    line(
        &mut out,
        "Status",
        format!(
            "{}{}",
            a.status.as_str().to_uppercase(),
            if a.flags.is_empty() {
                String::new()
            } else {
                format!("  flags: {}", flags_text(&a.flags))
            }
        ),
    );
    line(
        &mut out,
        "Kind / group",
        format!(
            "{} / {}{}",
            a.kind,
            safe(&a.group),
            d.site
                .as_deref()
                .map(|s| format!("  site: {}", safe(s)))
                .unwrap_or_default()
        ),
    );
    line(
        &mut out,
        "Last seen",
        match a.last_seen {
            Some(t) => format!("{} ({})", fmt_time(t), ago(Some(t), now)),
            None => "never".into(),
        },
    );
    line(
        &mut out,
        "External IP",
        a.external_ip.as_deref().map_or_else(|| "-".into(), safe),
    );
    line(&mut out, "Version", safe(&a.version));
    if a.upgrade.is_some() {
        line(&mut out, "Upgrade", upgrade_cell(a));
    }
    line(
        &mut out,
        "Host",
        format!(
            "{} ({}), internal {}",
            safe(&d.facts.hostname),
            safe(&d.facts.os),
            safe(&d.facts.internal_ips.join(", "))
        ),
    );
    line(
        &mut out,
        "Proxy",
        d.proxy.as_deref().map_or_else(|| "none".into(), safe),
    );
    line(
        &mut out,
        "Policy",
        format!(
            "{} rev {}: every {} s ± {} %, Inactive after {} s of silence",
            safe(&d.policy.name),
            d.policy.revision,
            d.checkin_interval_secs,
            d.policy.jitter_percent,
            d.inactive_after_secs
        ),
    );
    line(&mut out, "Enrolled", fmt_time(a.enrolled_at));
    if !d.defs.is_empty() || d.in_policy.is_some() {
        out.push_str(&crate::defs::agent_defs_text(d));
    } else if d.definitions.is_empty() {
        line(
            &mut out,
            "Definitions",
            "none (no channel subscribed)".into(),
        );
    } else {
        // An agent that reports versions but no channel state predates
        // definitions channels: show what it reported.
        for (channel, version) in &d.definitions {
            line(
                &mut out,
                "Definitions",
                format!("{}: {}", safe(channel), safe(version)),
            );
        }
    }
    if d.last_errors.is_empty() {
        line(&mut out, "Last errors", "none".into());
    } else {
        for (subsystem, e) in &d.last_errors {
            line(
                &mut out,
                "Last error",
                format!(
                    "[{}] {} {}: {} Action: {}",
                    safe(subsystem),
                    fmt_time(e.at),
                    e.code,
                    safe(&e.message),
                    e.code.action()
                ),
            );
        }
    }
    match &d.last_doctor {
        Some(v) => {
            line(
                &mut out,
                "Last doctor",
                format!("{} ({})", verdict_line(v), fmt_time(v.at)),
            );
            if !v.action.is_empty() {
                line(&mut out, "  action", safe(&v.action));
            }
            if let Some(b) = v.bundle_id {
                line(
                    &mut out,
                    "  bundle",
                    format!("{b} (`tether agents bundle-download {b} --out FILE`)"),
                );
            }
        }
        None => line(&mut out, "Last doctor", "never run".into()),
    }
    out.push_str(&history_text(d));
    out
}

/// The status history, newest first, with the control plane's own outages
/// in between: they say why a silence led to no transition.
fn history_text(d: &AgentDetail) -> String {
    let mut lines: Vec<(OffsetDateTime, String)> = d
        .transitions
        .iter()
        .map(|t| {
            (
                t.at,
                format!(
                    "  {}  {} -> {}  {}\n",
                    fmt_time(t.at),
                    t.from.map_or("-".to_owned(), |s| s.as_str().to_owned()),
                    t.to,
                    safe(&t.reason)
                ),
            )
        })
        .collect();
    // Only outages within the history shown: older ones explain nothing here.
    let oldest = d.transitions.last().map(|t| t.at);
    for o in d
        .outages
        .iter()
        .filter(|o| oldest.is_none_or(|oldest| o.ended_at >= oldest))
    {
        lines.push((
            o.ended_at,
            format!(
                "  {}  (control plane {} after {} down since {}; every Active agent got a full threshold again)\n",
                fmt_time(o.ended_at),
                match o.kind {
                    tether_wire::OutageKind::Restart => "restarted",
                    tether_wire::OutageKind::Store => "store recovered",
                },
                tether_server::status::human(o.ended_at - o.started_at),
                fmt_time(o.started_at),
            ),
        ));
    }
    // Stable: at equal times, transitions stay before outages.
    lines.sort_by_key(|line| std::cmp::Reverse(line.0));
    let mut out = String::from("Status history (newest first):\n");
    for (_, line) in lines {
        out.push_str(&line);
    }
    out
}

/// Polls an agent's actions until `action` has its result, for at most
/// `within`.
async fn wait_action(
    client: &ApiClient,
    agent: Uuid,
    action: Uuid,
    within: Duration,
) -> anyhow::Result<ActionInfo> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let found = client
            .list_actions(agent)
            .await?
            .into_iter()
            .find(|a| a.id == action);
        match found {
            Some(a) if a.result.is_some() => return Ok(a),
            Some(_) => {}
            None => anyhow::bail!("action {action} is no longer listed for agent {agent}"),
        }
        if tokio::time::Instant::now() >= deadline {
            anyhow::bail!(
                "action {action} has no result after {}; see it later with `tether agents show {agent}`",
                humantime::format_duration(within)
            );
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn ago_reads_naturally() {
        let now = datetime!(2026-05-17 19:16 UTC);
        assert_eq!(ago(None, now), "never");
        assert_eq!(ago(Some(now - time::Duration::seconds(12)), now), "12s ago");
        assert_eq!(ago(Some(now - time::Duration::minutes(5)), now), "5m ago");
        assert_eq!(ago(Some(now - time::Duration::hours(5)), now), "5h ago");
        assert_eq!(
            ago(Some(now + time::Duration::hours(5)), now),
            "in the future"
        );
    }

    #[test]
    fn an_upgrade_says_who_is_behind_and_why_with_hostile_text_made_safe() {
        let at = datetime!(2026-05-17 19:16 UTC);
        let report = |state, reason: Option<&str>| tether_wire::UpgradeReport {
            state,
            version: "1.3.0".into(),
            from: Some("1.2.0".into()),
            reason: reason.map(str::to_owned),
            at,
        };
        use tether_wire::UpgradeState::*;
        assert_eq!(upgrade_text(None), "-");
        assert_eq!(
            upgrade_text(Some(&report(Upgrading, None))),
            "upgrading to 1.3.0"
        );
        assert_eq!(
            upgrade_text(Some(&report(Upgraded, None))),
            "upgraded to 1.3.0"
        );
        let shown = upgrade_text(Some(&report(
            RolledBack,
            Some("version 1.3.0 did not check in\x1b[2J within 3m"),
        )));
        assert!(
            shown.starts_with("rolled back from 1.3.0 to 1.2.0: version 1.3.0 did not check in"),
            "{shown}"
        );
        assert!(
            !shown.contains('\x1b'),
            "terminal escapes are not printed: {shown:?}"
        );
    }

    #[test]
    fn list_and_show_print_the_same_flags() {
        let now = datetime!(2026-05-17 19:16 UTC);
        let summary = AgentSummary {
            id: uuid::Uuid::nil(),
            name: "web-1".into(),
            kind: tether_wire::AgentKind::Discovery,
            group: "default".into(),
            status: tether_wire::AgentStatus::Active,
            flags: vec![
                AgentFlag::VersionOutdated,
                AgentFlag::DownloadPathProblem,
                AgentFlag::DefsNeverInstalled,
            ],
            hostname: "web-1".into(),
            version: "0.1.0".into(),
            last_seen: Some(now),
            external_ip: None,
            enrolled_at: now,
            in_policy: Some(false),
            upgrade: None,
            rollout: None,
        };
        let detail = AgentDetail {
            summary: summary.clone(),
            facts: tether_wire::HostFacts {
                hostname: "web-1".into(),
                os: "linux".into(),
                internal_ips: Vec::new(),
                uptime_secs: 60,
                installed_at: None,
            },
            policy: tether_wire::Policy {
                name: "default".into(),
                revision: 1,
                checkin_interval_secs: 30,
                jitter_percent: 10,
                targets: Vec::new(),
                defs: tether_wire::DefsPolicy::default(),
                max_concurrent_tasks: tether_wire::DEFAULT_MAX_CONCURRENT_TASKS,
            },
            definitions: Default::default(),
            last_errors: Default::default(),
            proxy: None,
            checkin_interval_secs: 30,
            inactive_after_secs: 90,
            transitions: Vec::new(),
            last_doctor: None,
            defs: Vec::new(),
            in_policy: Some(false),
            outages: Vec::new(),
            site: None,
        };
        let names = "version_outdated,download_path_problem,defs_never_installed";
        let table = agent_table(std::slice::from_ref(&summary), now);
        let row = table.lines().nth(1).expect("one row");
        // FLAGS, then UPGRADE ("-": none reported).
        assert!(row.ends_with(&format!("  {names}  -")), "{row}");
        let shown = agent_detail(&detail, now);
        assert!(
            shown.contains(&format!("Status             ACTIVE  flags: {names}\n")),
            "{shown}"
        );
    }

    #[test]
    fn truncate_is_char_safe() {
        assert_eq!(truncate("héllo wörld", 5), "héll…");
        assert_eq!(truncate("abc", 5), "abc");
    }
}
