//! `tether audit list`: the admin audit log, newest first (admin API;
//! docs/audit.md).

use std::fmt::Write as _;
use std::process::ExitCode;

use clap::Subcommand;
use tether_wire::{AuditEntry, MAX_PAGE};

use crate::cli::AdminConn;
use crate::display::{safe, safe_cut};

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Admin actions, newest first: when, who, from where, what and the
    /// outcome. Never bodies or secrets.
    List {
        #[command(flatten)]
        conn: AdminConn,
        /// Only this actor's actions (an admin credential's name, or
        /// `unauthenticated` for refused credentials).
        #[arg(long)]
        actor: Option<String>,
        /// Only actions since then: a duration back from the server's clock
        /// (`90s`, `30m`, `2h`, `7d`) or an RFC 3339 time.
        #[arg(long)]
        since: Option<String>,
        /// At most this many entries (the newest).
        #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
        limit: u32,
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(cmd: AuditCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        AuditCommand::List {
            conn,
            actor,
            since,
            limit,
            json,
        } => {
            let client = crate::admin::client(&conn)?;
            let mut rows: Vec<AuditEntry> = Vec::new();
            let mut after: Option<String> = None;
            while rows.len() < limit as usize {
                let want = (limit - rows.len() as u32).min(MAX_PAGE);
                let (page, next) = client
                    .audit_page(actor.as_deref(), since.as_deref(), want, after.as_deref())
                    .await?;
                let empty = page.is_empty();
                rows.extend(page);
                match next {
                    Some(n) if !empty && after.as_deref() != Some(n.as_str()) => after = Some(n),
                    _ => break,
                }
            }
            rows.truncate(limit as usize);
            if json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                print!("{}", table(&rows));
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The text table: one line per action, every stored value through
/// [`safe`], since names and paths came from clients.
pub fn table(rows: &[AuditEntry]) -> String {
    let mut out = String::new();
    if rows.is_empty() {
        out.push_str("no admin actions recorded\n");
        return out;
    }
    let _ = writeln!(
        out,
        "{:<24} {:<20} {:<16} {:<7} {:<44} {:<6} CODE",
        "WHEN", "WHO", "FROM", "METHOD", "ROUTE (TARGET)", "STATUS"
    );
    for e in rows {
        let when =
            e.at.format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_else(|_| e.at.unix_timestamp().to_string());
        let what = match &e.target {
            Some(t) => format!("{} ({})", safe(&e.route), safe_cut(t, 40)),
            None => safe(&e.route),
        };
        let _ = writeln!(
            out,
            "{:<24} {:<20} {:<16} {:<7} {:<44} {:<6} {}",
            when,
            safe_cut(&e.actor, 20),
            safe(e.address.as_deref().unwrap_or("-")),
            safe(&e.method),
            what,
            e.status,
            safe(e.code.as_deref().unwrap_or("-")),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_escapes_what_clients_sent() {
        let e = AuditEntry {
            id: uuid::Uuid::nil(),
            at: time::macros::datetime!(2026-12-08 03:00:00 UTC),
            actor: "evil\n\u{1b}[31mname".into(),
            actor_id: None,
            method: "POST".into(),
            route: "/v1/admin/agents/{id}/approve".into(),
            path: "/v1/admin/agents/x/approve".into(),
            target: Some("x\r\ny".into()),
            address: Some("203.0.113.7".into()),
            status: 404,
            code: Some("TETHER-E4001".into()),
        };
        let text = table(&[e]);
        assert_eq!(text.lines().count(), 2, "{text}");
        assert!(!text.contains('\u{1b}'), "{text}");
        assert!(text.contains("203.0.113.7"));
        assert!(text.contains("(x\\r\\ny)"), "{text}");
    }
}
