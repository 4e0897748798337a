//! `tether agent defs status`: each subscribed channel's installed version,
//! the last attempt and its result, the server used and any cool-down, read
//! from disk (the updater's per-channel state and the cached policy), so it
//! works whether or not the agent is running.

use std::path::Path;

use serde::Serialize;
use tether_wire::{ChannelState, DefsPolicy, ErrorCode};
use time::OffsetDateTime;
use url::Url;

/// The status of definitions on this agent (`--json` prints it as is).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DefsStatus {
    /// The update servers the policy names, in fallback order (the control
    /// plane's `/defs/` when it names none).
    pub servers: Vec<String>,
    pub interval_secs: u32,
    pub allow_user_update: bool,
    /// Seconds left of the cool-down an update server asked for.
    pub cooldown_secs: Option<u64>,
    pub channels: Vec<ChannelStatus>,
}

/// One channel: the updater's state plus the catalog's action for its error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChannelStatus {
    #[serde(flatten)]
    pub state: ChannelState,
    /// What to do about `last_error`, from the error catalog.
    pub action: Option<String>,
    /// Where consumers read the installed content.
    pub path: String,
}

impl DefsStatus {
    /// Reads the status of the channels `policy` subscribes to.
    pub fn read(
        state_dir: &Path,
        policy: &DefsPolicy,
        server: &Url,
        now: OffsetDateTime,
    ) -> DefsStatus {
        let channels = tether_defs::client::channel_states(state_dir, &policy.channels)
            .into_iter()
            .map(|state| ChannelStatus {
                action: state
                    .last_error
                    .as_ref()
                    .map(|e| e.code.action().to_owned()),
                // channel_states lists valid names only, so the path exists.
                path: tether_defs::client::installed_path(state_dir, &state.channel)
                    .map(|p| p.display().to_string())
                    .unwrap_or_default(),
                state,
            })
            .collect();
        DefsStatus {
            servers: super::update_servers(policy, server)
                .iter()
                .map(ToString::to_string)
                .collect(),
            interval_secs: policy.interval_secs,
            allow_user_update: policy.allow_user_update,
            cooldown_secs: tether_defs::client::cooldown_remaining(state_dir, now)
                .map(|d| d.as_secs().max(1)),
            channels,
        }
    }

    /// The human rendering.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        if self.channels.is_empty() {
            out.push_str("This agent's policy subscribes to no definitions channel.\n");
            return out;
        }
        out.push_str(&format!(
            "Update servers: {}\nChecked every {} ({}).\n",
            self.servers.join(", "),
            humantime::format_duration(std::time::Duration::from_secs(u64::from(
                self.interval_secs
            ))),
            if self.allow_user_update {
                "`update --now` allowed"
            } else {
                "`update --now` not allowed by the policy"
            }
        ));
        match self.cooldown_secs {
            Some(s) => out.push_str(&format!(
                "Cool-down: the update server asked to wait; {s} s left ({}).\n",
                ErrorCode::DefsCoolingDown
            )),
            None => out.push_str("Cool-down: none.\n"),
        }
        for c in &self.channels {
            let s = &c.state;
            out.push('\n');
            match s.version {
                Some(v) => out.push_str(&format!(
                    "{}: version {v}, updated {}{}\n",
                    s.channel,
                    time_or_dash(s.updated_at),
                    s.method
                        .map(|m| format!(" ({})", m.as_str()))
                        .unwrap_or_default()
                )),
                None => out.push_str(&format!("{}: nothing installed yet\n", s.channel)),
            }
            let result = match &s.last_error {
                None if s.last_attempt_at.is_some() => "ok".to_owned(),
                None => "-".to_owned(),
                Some(e) => format!("FAILED {}: {}", e.code, e.message),
            };
            out.push_str(&format!(
                "  last attempt: {} {result}\n",
                time_or_dash(s.last_attempt_at)
            ));
            if let Some(action) = &c.action {
                out.push_str(&format!("  action: {action}\n"));
            }
            if s.consecutive_failures > 0 {
                out.push_str(&format!(
                    "  failures in a row: {}\n",
                    s.consecutive_failures
                ));
            }
            if let Some(server) = &s.server {
                out.push_str(&format!(
                    "  server: {server}{}\n",
                    s.via_proxy
                        .as_deref()
                        .map(|p| format!(" via proxy {p}"))
                        .unwrap_or_default()
                ));
            }
            out.push_str(&format!("  installed at: {}\n", c.path));
        }
        out
    }
}

fn time_or_dash(t: Option<OffsetDateTime>) -> String {
    t.and_then(|t| {
        t.format(&time::format_description::well_known::Rfc3339)
            .ok()
    })
    .unwrap_or_else(|| "-".to_owned())
}
