//! `tether fleet diagnose [--json]`: the control plane's fleet diagnosis
//! (`GET /v1/fleet/diagnosis`, docs/fleet-diagnosis.md). Everything an
//! agent wrote (names, proxies, labels) goes through `display::safe`.

use std::process::ExitCode;

use clap::Subcommand;
use tether_wire::{FleetDiagnosis, IncidentKind};

use crate::admin::client;
use crate::cli::AdminConn;
use crate::display::{safe, safe_cut};

#[derive(Debug, Subcommand)]
pub enum FleetCommand {
    /// Group failing agents by subnet, site, proxy, external IP, update
    /// server and error class; print one verdict per incident with its
    /// evidence, then hints. Exit code 0 with no incident, 1 with some.
    Diagnose {
        #[command(flatten)]
        conn: AdminConn,
        /// The most agents to read, oldest enrollment first (the server's
        /// default is 20000, its maximum 100000).
        #[arg(long)]
        limit: Option<u32>,
        /// Print the diagnosis as JSON.
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(cmd: FleetCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        FleetCommand::Diagnose { conn, limit, json } => {
            let d = client(&conn)?.fleet_diagnosis(limit).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&d)?);
            } else {
                print!("{}", render(&d));
            }
            Ok(if d.incidents.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
    }
}

/// The readable text of a diagnosis.
pub fn render(d: &FleetDiagnosis) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} of {} judged agents failing ({} read{})",
        d.failing,
        d.judged,
        d.agents_read,
        if d.truncated {
            "; more exist: raise --limit"
        } else {
            ""
        }
    );
    if d.incidents.is_empty() {
        let _ = writeln!(out, "no incident");
    }
    for (i, inc) in d.incidents.iter().enumerate() {
        let _ = writeln!(out);
        let _ = writeln!(out, "{}. {}", i + 1, safe(&inc.summary));
        let label = match inc.kind {
            IncidentKind::Network => "network",
            IncidentKind::Configuration => "configuration",
            IncidentKind::Server => "server",
            IncidentKind::Unknown => "unknown",
        };
        let _ = writeln!(
            out,
            "   verdict: {label}; {}: {}; {} of {} failing; class {}{}",
            inc.dimension.as_str(),
            safe(&inc.value),
            inc.failing,
            inc.total,
            safe(&inc.error_class),
            inc.code
                .as_deref()
                .map(|c| format!(" ({})", safe(c)))
                .unwrap_or_default()
        );
        let names: Vec<String> = inc
            .agents
            .iter()
            .map(|a| {
                let id = a.id.to_string();
                format!("{} ({})", safe_cut(&a.name, 40), &id[..8])
            })
            .collect();
        if !names.is_empty() {
            let more = inc.failing.saturating_sub(names.len() as u64);
            let _ = writeln!(
                out,
                "   agents: {}{}",
                names.join(", "),
                if more > 0 {
                    format!(" and {more} more")
                } else {
                    String::new()
                }
            );
        }
    }
    if !d.hints.is_empty() {
        let _ = writeln!(out);
        let _ = writeln!(out, "hints:");
        for h in &d.hints {
            let _ = writeln!(out, "- {}", safe(&h.message));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use tether_wire::{AgentRef, Dimension, Incident};
    use time::macros::datetime;
    use uuid::Uuid;

    use super::*;

    #[test]
    fn agent_written_text_is_escaped_never_obeyed() {
        let d = FleetDiagnosis {
            generated_at: datetime!(2026-12-08 10:00 UTC),
            agents_read: 2,
            judged: 2,
            failing: 1,
            truncated: true,
            incidents: vec![Incident {
                kind: IncidentKind::Configuration,
                dimension: Dimension::Site,
                value: "evil\u{1b}[2J".into(),
                failing: 1,
                total: 2,
                error_class: "silent".into(),
                code: None,
                since: None,
                detail: None,
                contrast: None,
                summary: "configuration: 1 agent of 2 at site evil\u{1b}[2J went silent".into(),
                agents: vec![AgentRef {
                    id: Uuid::nil(),
                    name: "host\u{202e}gpj.exe".into(),
                }],
            }],
            hints: Vec::new(),
        };
        let t = render(&d);
        assert!(!t.contains('\u{1b}') && !t.contains('\u{202e}'), "{t}");
        assert!(t.contains("\\u{1b}[2J"), "{t}");
        assert!(t.contains("more exist: raise --limit"), "{t}");
        assert!(t.contains("(00000000)"), "{t}");
    }
}
