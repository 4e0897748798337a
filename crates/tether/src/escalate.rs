//! `tether agents escalate ID`: the escalation report the support guides
//! ask for, from what the control plane knows of the agent and its newest
//! uploaded bundle: name and IPs, last check-in and definitions update,
//! the status timeline, errors with their codes, the doctor's verdict, the
//! network path as the doctor saw it (checks, resolvers, routes, proxy,
//! failed connections), and the bundle's ID to attach.
//!
//! One [`Report`] renders twice: as Markdown and as one self-contained
//! HTML page (inline style, no script, no outside reference). Everything
//! in it that an agent reported (names, errors, files of its bundle) is
//! hostile: it is escaped for the format it lands in, so a name cannot
//! become a link, a heading or markup, and long values are cut.
//!
//! The bundle is hostile too: it is read with caps on what is unpacked,
//! only the few files the report quotes are kept, and a bundle that cannot
//! be read leaves the report whole with a line saying why.

use std::collections::BTreeMap;
use std::io::Read;

use tether_wire::{AgentDetail, BundleInfo, DoctorSummary};
use time::OffsetDateTime;

use crate::admin::{ago, flags_text, fmt_time};

/// The bundle files the report quotes.
const QUOTED: [&str; 7] = [
    "doctor/report.json",
    "network/resolv.conf",
    "network/ip-route.txt",
    "network/proxy-env.txt",
    "logs/error.log",
    "logs/agent.log",
    "MANIFEST.json",
];
/// The most bytes kept of one quoted file.
const MAX_FILE: u64 = 1024 * 1024;
/// The most bytes unpacked from a bundle in all (the server caps uploads
/// at 256 MiB unpacked; the report needs far less).
const MAX_UNPACKED: u64 = 64 * 1024 * 1024;
/// The most tar entries looked at.
const MAX_ENTRIES: usize = 10_000;
/// Lines of error excerpts quoted.
const EXCERPT_LINES: usize = 30;
/// The longest value in a table cell, in characters.
const MAX_CELL: usize = 300;

/// The report's output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Markdown,
    Html,
}

/// The files of a bundle the report quotes, as text.
#[derive(Debug, Default)]
pub struct BundleFiles(BTreeMap<String, String>);

impl BundleFiles {
    /// Reads a bundle (tar.gz) as hostile input.
    pub fn read(tar_gz: &[u8]) -> Result<BundleFiles, String> {
        let gz = flate2::read::GzDecoder::new(tar_gz).take(MAX_UNPACKED);
        let mut archive = tar::Archive::new(gz);
        let entries = archive
            .entries()
            .map_err(|e| format!("not a tar.gz: {e}"))?;
        let mut files = BTreeMap::new();
        for (n, entry) in entries.enumerate() {
            if n >= MAX_ENTRIES {
                return Err(format!("more than {MAX_ENTRIES} entries"));
            }
            let entry = entry.map_err(|e| format!("entry {n}: {e}"))?;
            let name = entry
                .path()
                .map(|p| p.to_string_lossy().into_owned())
                .unwrap_or_default();
            if !QUOTED.contains(&name.as_str()) || files.contains_key(&name) {
                continue;
            }
            let mut data = Vec::new();
            entry
                .take(MAX_FILE)
                .read_to_end(&mut data)
                .map_err(|e| format!("{name}: {e}"))?;
            files.insert(name, String::from_utf8_lossy(&data).into_owned());
        }
        if files.is_empty() {
            return Err("none of the files a report quotes is in it".to_owned());
        }
        Ok(BundleFiles(files))
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }
}

/// What the report is made from.
pub struct Inputs {
    pub detail: AgentDetail,
    /// The bundle the report names, newest first by default.
    pub bundle: Option<BundleInfo>,
    /// Its files, or why they could not be read.
    pub files: Result<BundleFiles, String>,
    pub now: OffsetDateTime,
}

enum Block {
    /// A paragraph of plain text.
    Text(String),
    /// A command to run, shown as code.
    Command(String),
    /// Label and value pairs.
    Fields(Vec<(&'static str, String)>),
    Table {
        head: Vec<&'static str>,
        rows: Vec<Vec<String>>,
    },
    /// Preformatted text (a file's lines).
    Pre(String),
}

struct Section {
    heading: String,
    blocks: Vec<Block>,
}

/// The report, before it is rendered.
pub struct Report {
    title: String,
    sections: Vec<Section>,
}

impl Report {
    pub fn build(inputs: &Inputs) -> Report {
        let d = &inputs.detail;
        let s = &d.summary;
        let now = inputs.now;
        let files = inputs.files.as_ref().ok();
        let doctor: Option<serde_json::Value> = files
            .and_then(|f| f.get("doctor/report.json"))
            .and_then(|t| serde_json::from_str(t).ok());
        let mut sections = Vec::new();

        sections.push(Section {
            heading: "Agent".to_owned(),
            blocks: vec![Block::Fields(vec![
                ("Name", s.name.clone()),
                ("ID", s.id.to_string()),
                ("Kind", s.kind.as_str().to_owned()),
                ("Group", s.group.clone()),
                ("Site", d.site.clone().unwrap_or_else(|| "-".to_owned())),
                (
                    "Status",
                    format!("{}{}", s.status, flags_suffix(&flags_text(&s.flags))),
                ),
                ("Version", s.version.clone()),
                ("Hostname", d.facts.hostname.clone()),
                ("OS", d.facts.os.clone()),
                ("Internal IPs", join_or_dash(&d.facts.internal_ips)),
                (
                    "External IP (as the server sees it)",
                    s.external_ip.clone().unwrap_or_else(|| "-".to_owned()),
                ),
                (
                    "Last check-in",
                    match s.last_seen {
                        Some(t) => format!("{} ({})", fmt_time(t), ago(Some(t), now)),
                        None => "never".to_owned(),
                    },
                ),
                ("Enrolled", fmt_time(s.enrolled_at)),
                (
                    "Proxy",
                    d.proxy
                        .clone()
                        .unwrap_or_else(|| "none (direct)".to_owned()),
                ),
                (
                    "Check-in interval",
                    format!(
                        "{} s (Inactive after {} s of silence)",
                        d.checkin_interval_secs, d.inactive_after_secs
                    ),
                ),
            ])],
        });

        let updates = if d.defs.is_empty() {
            vec![Block::Text(
                "The agent subscribes to no definitions channel.".to_owned(),
            )]
        } else {
            vec![Block::Table {
                head: vec![
                    "Channel",
                    "Installed",
                    "Newest",
                    "Last update",
                    "Last attempt",
                    "Server",
                    "Via proxy",
                    "Last error",
                ],
                rows: d
                    .defs
                    .iter()
                    .map(|c| {
                        vec![
                            c.channel.clone(),
                            c.version.map_or("none".to_owned(), |v| v.to_string()),
                            c.newest_version.map_or("-".to_owned(), |v| {
                                format!("{v} ({} behind)", c.versions_behind)
                            }),
                            when(c.updated_at, now),
                            when(c.last_attempt_at, now),
                            c.server.clone().unwrap_or_else(|| "-".to_owned()),
                            c.via_proxy.clone().unwrap_or_else(|| "-".to_owned()),
                            c.last_error.as_ref().map_or("-".to_owned(), |e| {
                                format!("{}: {}", e.code.as_str(), e.message)
                            }),
                        ]
                    })
                    .collect(),
            }]
        };
        sections.push(Section {
            heading: "Last update (definitions)".to_owned(),
            blocks: updates,
        });

        let verdict = d
            .last_doctor
            .as_ref()
            .or(inputs.bundle.as_ref().and_then(|b| b.verdict.as_ref()));
        sections.push(Section {
            heading: "Doctor's verdict".to_owned(),
            blocks: match verdict {
                Some(v) => vec![verdict_fields(v)],
                None => vec![
                    Block::Text("No doctor run was reported by this agent. Queue one:".to_owned()),
                    Block::Command(format!("tether agents doctor {}", s.id)),
                ],
            },
        });

        let mut timeline = vec![if d.transitions.is_empty() {
            Block::Text("No status change recorded.".to_owned())
        } else {
            Block::Table {
                head: vec!["At", "From", "To", "Reason"],
                rows: d
                    .transitions
                    .iter()
                    .map(|t| {
                        vec![
                            fmt_time(t.at),
                            t.from.map_or("-".to_owned(), |f| f.to_string()),
                            t.to.to_string(),
                            t.reason.clone(),
                        ]
                    })
                    .collect(),
            }
        }];
        if !d.outages.is_empty() {
            timeline.push(Block::Text(
                "The control plane's own outages since the agent enrolled (a silence in them is not the agent's):"
                    .to_owned(),
            ));
            timeline.push(Block::Table {
                head: vec!["Kind", "From", "To", "Agents given grace"],
                rows: d
                    .outages
                    .iter()
                    .map(|o| {
                        vec![
                            o.kind.as_str().to_owned(),
                            fmt_time(o.started_at),
                            fmt_time(o.ended_at),
                            o.agents_given_grace.to_string(),
                        ]
                    })
                    .collect(),
            });
        }
        sections.push(Section {
            heading: "Status timeline".to_owned(),
            blocks: timeline,
        });

        let mut errors = vec![if d.last_errors.is_empty() {
            Block::Text("The agent reports no last error.".to_owned())
        } else {
            Block::Table {
                head: vec!["Where", "Code", "At", "Message"],
                rows: d
                    .last_errors
                    .iter()
                    .map(|(area, e)| {
                        vec![
                            area.clone(),
                            e.code.as_str().to_owned(),
                            fmt_time(e.at),
                            e.message.clone(),
                        ]
                    })
                    .collect(),
            }
        }];
        if let Some(excerpt) = files.and_then(error_excerpt) {
            errors.push(Block::Text(format!(
                "The last {EXCERPT_LINES} lines with an error code from the bundle's logs:"
            )));
            errors.push(Block::Pre(excerpt));
        }
        sections.push(Section {
            heading: "Errors".to_owned(),
            blocks: errors,
        });

        sections.push(Section {
            heading: "Network path".to_owned(),
            blocks: network_blocks(d, files, doctor.as_ref()),
        });

        let bundle_blocks = match (&inputs.bundle, &inputs.files) {
            (None, _) => vec![
                Block::Text(
                    "No escalation bundle was uploaded. Queue a doctor run with an upload:"
                        .to_owned(),
                ),
                Block::Command(format!("tether agents doctor {}", s.id)),
            ],
            (Some(b), files) => {
                let mut blocks = vec![
                    Block::Fields(vec![
                        ("Bundle ID", b.id.to_string()),
                        ("Uploaded", when(Some(b.created_at), now)),
                        ("Size", format!("{} bytes", b.size_bytes)),
                        ("SHA-256", b.sha256.clone()),
                    ]),
                    Block::Text("Attach it to the ticket:".to_owned()),
                    Block::Command(format!(
                        "tether agents bundle-download {} --out bundle-{}.tar.gz",
                        b.id, b.id
                    )),
                ];
                if let Err(why) = files {
                    blocks.push(Block::Text(format!(
                        "The bundle could not be read for this report: {why}"
                    )));
                }
                blocks
            }
        };
        sections.push(Section {
            heading: "Escalation bundle".to_owned(),
            blocks: bundle_blocks,
        });

        Report {
            title: format!("Escalation report: {}", s.name),
            sections: {
                let mut all = vec![Section {
                    heading: String::new(),
                    blocks: vec![Block::Text(format!(
                        "Written {} by tether {} for agent {}.",
                        fmt_time(now),
                        env!("CARGO_PKG_VERSION"),
                        s.id
                    ))],
                }];
                all.extend(sections);
                all
            },
        }
    }

    pub fn render(&self, format: Format) -> String {
        match format {
            Format::Markdown => self.markdown(),
            Format::Html => self.html(),
        }
    }

    fn markdown(&self) -> String {
        let mut out = format!("# {}\n", md(&self.title));
        for section in &self.sections {
            if !section.heading.is_empty() {
                out.push_str(&format!("\n## {}\n", md(&section.heading)));
            }
            for block in &section.blocks {
                out.push('\n');
                match block {
                    Block::Text(t) => out.push_str(&format!("{}\n", md(t))),
                    Block::Command(c) => out.push_str(&format!("{}\n", md_code_block(c))),
                    Block::Fields(fields) => {
                        out.push_str("| | |\n|---|---|\n");
                        for (label, value) in fields {
                            out.push_str(&format!("| {} | {} |\n", md(label), md_cell(value)));
                        }
                    }
                    Block::Table { head, rows } => {
                        out.push_str(&format!(
                            "| {} |\n|{}\n",
                            head.iter().map(|h| md(h)).collect::<Vec<_>>().join(" | "),
                            "---|".repeat(head.len())
                        ));
                        for row in rows {
                            out.push_str(&format!(
                                "| {} |\n",
                                row.iter()
                                    .map(|c| md_cell(c))
                                    .collect::<Vec<_>>()
                                    .join(" | ")
                            ));
                        }
                    }
                    Block::Pre(text) => out.push_str(&format!("{}\n", md_code_block(text))),
                }
            }
        }
        out
    }

    fn html(&self) -> String {
        let mut out = format!(
            "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
             <meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">\n\
             <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
             <title>{title}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n<main>\n<h1>{title}</h1>\n",
            title = html_text(&self.title)
        );
        for section in &self.sections {
            if !section.heading.is_empty() {
                out.push_str(&format!("<h2>{}</h2>\n", html_text(&section.heading)));
            }
            for block in &section.blocks {
                match block {
                    Block::Text(t) => out.push_str(&format!("<p>{}</p>\n", html_text(t))),
                    Block::Command(c) => {
                        out.push_str(&format!("<pre><code>{}</code></pre>\n", html_text(c)))
                    }
                    Block::Fields(fields) => {
                        out.push_str("<table class=\"fields\">\n");
                        for (label, value) in fields {
                            out.push_str(&format!(
                                "<tr><th scope=\"row\">{}</th><td>{}</td></tr>\n",
                                html(label),
                                html(&cut(value))
                            ));
                        }
                        out.push_str("</table>\n");
                    }
                    Block::Table { head, rows } => {
                        out.push_str("<table>\n<thead><tr>");
                        for h in head {
                            out.push_str(&format!("<th scope=\"col\">{}</th>", html(h)));
                        }
                        out.push_str("</tr></thead>\n<tbody>\n");
                        for row in rows {
                            out.push_str("<tr>");
                            for c in row {
                                out.push_str(&format!("<td>{}</td>", html(&cut(c))));
                            }
                            out.push_str("</tr>\n");
                        }
                        out.push_str("</tbody>\n</table>\n");
                    }
                    Block::Pre(text) => out.push_str(&format!("<pre>{}</pre>\n", html(text))),
                }
            }
        }
        out.push_str("</main>\n</body>\n</html>\n");
        out
    }
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:2rem;color:#1a1a1a;background:#fff}\
main{max-width:72rem}table{border-collapse:collapse;margin:.5rem 0 1rem}\
th,td{border:1px solid #bbb;padding:.25rem .5rem;text-align:left;vertical-align:top;overflow-wrap:anywhere}\
th{background:#f0f0f0}pre{background:#f5f5f5;border:1px solid #ccc;padding:.5rem;overflow-x:auto;white-space:pre-wrap}";

fn verdict_fields(v: &DoctorSummary) -> Block {
    Block::Fields(vec![
        ("Status", v.status.clone()),
        (
            "Code",
            v.code.map_or("-".to_owned(), |c| c.as_str().to_owned()),
        ),
        ("Root cause", v.root_cause.clone()),
        ("Action", v.action.clone()),
        (
            "Failed check",
            v.check.clone().unwrap_or_else(|| "-".to_owned()),
        ),
        ("Ran at", fmt_time(v.at)),
        (
            "Bundle",
            v.bundle_id.map_or("-".to_owned(), |b| b.to_string()),
        ),
    ])
}

/// Resolvers, routes, proxy, the doctor's path checks and the failed
/// connections among them.
fn network_blocks(
    d: &AgentDetail,
    files: Option<&BundleFiles>,
    doctor: Option<&serde_json::Value>,
) -> Vec<Block> {
    let mut blocks = Vec::new();
    let checks: Vec<&serde_json::Value> = doctor
        .and_then(|r| r["checks"].as_array())
        .map(|c| c.iter().collect())
        .unwrap_or_default();
    if checks.is_empty() {
        blocks.push(Block::Text(
            "No doctor report in the bundle: the path checks below are missing.".to_owned(),
        ));
    } else {
        if let Some(server) = doctor.and_then(|r| r["server"].as_str()) {
            blocks.push(Block::Text(format!(
                "The doctor checked the path to {server}, check by check:"
            )));
        }
        blocks.push(Block::Table {
            head: vec!["Check", "Status", "Code", "Evidence", "Problem"],
            rows: checks
                .iter()
                .map(|c| {
                    vec![
                        text_of(&c["id"]),
                        text_of(&c["status"]),
                        text_of(&c["code"]),
                        evidence_of(&c["evidence"]),
                        text_of(&c["problem"]),
                    ]
                })
                .collect(),
        });
        let failed: Vec<Vec<String>> = checks
            .iter()
            .filter(|c| {
                // `tcp:ADDR`, `proxy`, and each update server's `defs.N.tcp…`.
                let id = c["id"].as_str().unwrap_or("");
                let connect = id
                    .split(['.', ':'])
                    .any(|part| part == "tcp" || part == "proxy");
                connect && !matches!(c["status"].as_str(), Some("pass" | "skipped"))
            })
            .map(|c| {
                vec![
                    text_of(&c["id"]),
                    text_of(&c["code"]),
                    text_of(&c["problem"]),
                ]
            })
            .collect();
        blocks.push(Block::Text(if failed.is_empty() {
            "Firewall and proxy: every connection the doctor opened was accepted.".to_owned()
        } else {
            "Firewall and proxy: these connections failed (a firewall that drops shows as a timeout, one that rejects as a refusal):".to_owned()
        }));
        if !failed.is_empty() {
            blocks.push(Block::Table {
                head: vec!["Check", "Code", "Problem"],
                rows: failed,
            });
        }
    }
    let resolvers: Vec<String> = files
        .and_then(|f| f.get("network/resolv.conf"))
        .map(|t| {
            t.lines()
                .filter_map(|l| l.trim().strip_prefix("nameserver"))
                .map(|s| s.trim().to_owned())
                .collect()
        })
        .unwrap_or_default();
    blocks.push(Block::Fields(vec![
        (
            "Resolvers (/etc/resolv.conf)",
            if resolvers.is_empty() {
                "-".to_owned()
            } else {
                resolvers.join(", ")
            },
        ),
        (
            "Proxy (agent's configuration)",
            d.proxy
                .clone()
                .unwrap_or_else(|| "none (direct)".to_owned()),
        ),
    ]));
    for (name, label) in [
        ("network/ip-route.txt", "Routes (`ip route`):"),
        ("network/proxy-env.txt", "Proxy environment:"),
    ] {
        if let Some(text) = files.and_then(|f| f.get(name)) {
            blocks.push(Block::Text(label.to_owned()));
            blocks.push(Block::Pre(last_lines(text, 60)));
        }
    }
    blocks
}

/// The last lines of the bundle's logs that carry an error code.
fn error_excerpt(files: &BundleFiles) -> Option<String> {
    let mut lines: Vec<&str> = Vec::new();
    for name in ["logs/agent.log", "logs/error.log"] {
        if let Some(text) = files.get(name) {
            lines.extend(text.lines().filter(|l| l.contains("TETHER-E")));
        }
    }
    if lines.is_empty() {
        return None;
    }
    lines.dedup();
    let start = lines.len().saturating_sub(EXCERPT_LINES);
    Some(
        lines[start..]
            .iter()
            .map(|l| cut(l))
            .collect::<Vec<_>>()
            .join("\n"),
    )
}

fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..]
        .iter()
        .map(|l| cut(l))
        .collect::<Vec<_>>()
        .join("\n")
}

fn text_of(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::Null => "-".to_owned(),
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A check's evidence in one line: its scalar fields and lists of
/// scalars (`addresses=192.0.2.1,192.0.2.2`); nested detail stays in the
/// bundle's report.
fn evidence_of(v: &serde_json::Value) -> String {
    use serde_json::Value;
    let scalar = |v: &Value| match v {
        Value::Array(_) | Value::Object(_) => None,
        other => Some(text_of(other)),
    };
    match v {
        Value::Object(fields) => fields
            .iter()
            .filter_map(|(k, v)| match v {
                Value::Null => None,
                Value::Array(items) => {
                    let items: Option<Vec<String>> = items.iter().map(scalar).collect();
                    items.map(|i| format!("{k}={}", i.join(",")))
                }
                other => scalar(other).map(|s| format!("{k}={s}")),
            })
            .collect::<Vec<_>>()
            .join("; "),
        Value::Array(items) => items.iter().map(text_of).collect::<Vec<_>>().join("; "),
        other => text_of(other),
    }
}

fn when(t: Option<OffsetDateTime>, now: OffsetDateTime) -> String {
    match t {
        Some(t) => format!("{} ({})", fmt_time(t), ago(Some(t), now)),
        None => "never".to_owned(),
    }
}

fn join_or_dash(items: &[String]) -> String {
    if items.is_empty() {
        "-".to_owned()
    } else {
        items.join(", ")
    }
}

fn flags_suffix(flags: &str) -> String {
    if flags.is_empty() {
        String::new()
    } else {
        format!(" ({flags})")
    }
}

/// At most [`MAX_CELL`] characters, control characters shown escaped.
fn cut(s: &str) -> String {
    crate::display::safe_cut(s, MAX_CELL)
}

/// Markdown text: every character that could start markup is escaped
/// (CommonMark backslash escapes), and control characters are shown.
fn md(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in crate::display::safe(s).chars() {
        if matches!(
            c,
            '\\' | '`' | '*' | '_' | '[' | ']' | '<' | '>' | '|' | '~' | '#' | '&'
        ) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// A table cell: escaped, on one line, cut.
fn md_cell(s: &str) -> String {
    md(&cut(s))
}

/// A fenced code block whose fence no line of `text` can close.
fn md_code_block(text: &str) -> String {
    let longest = text.split(|c| c != '`').map(str::len).max().unwrap_or(0);
    let fence = "`".repeat(longest.max(2) + 1);
    let body: String = text
        .lines()
        .map(|l| crate::display::safe(l) + "\n")
        .collect();
    format!("{fence}text\n{body}{fence}")
}

/// One line of text for HTML: control characters shown, then escaped.
fn html_text(s: &str) -> String {
    html(&crate::display::safe(s))
}

/// `s` escaped for HTML text and attribute values.
fn html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;

    const HOSTILE: &str = "evil<script>alert(1)</script> [click](javascript:alert(2)) | ```\n# not a heading \u{1b}[31m";

    fn detail(name: &str) -> AgentDetail {
        serde_json::from_value(serde_json::json!({
            "summary": {
                "id": "00000000-0000-0000-0000-0000000000aa",
                "name": name,
                "kind": "connector",
                "group": "default",
                "status": "inactive",
                "flags": [],
                "hostname": "bot-7",
                "version": "0.1.0",
                "last_seen": "2026-12-07T10:00:00Z",
                "external_ip": "203.0.113.9",
                "enrolled_at": "2026-12-01T09:00:00Z"
            },
            "facts": {"hostname": "bot-7", "os": "linux debian 13", "internal_ips": ["10.1.2.3"], "uptime_secs": 5},
            "policy": {"name": "default", "revision": 1, "checkin_interval_secs": 60, "jitter_percent": 10},
            "definitions": {},
            "last_errors": {"checkin": {"code": "TETHER-E2101", "message": name, "at": "2026-12-07T10:01:00Z"}},
            "proxy": null,
            "checkin_interval_secs": 60,
            "inactive_after_secs": 300,
            "transitions": [
                {"from": "active", "to": "inactive", "reason": name, "at": "2026-12-07T10:05:00Z"}
            ]
        }))
        .expect("a detail")
    }

    fn now() -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_796_637_600).expect("time")
    }

    fn bundle_of(files: &[(&str, &str)]) -> Vec<u8> {
        let mut tar = tar::Builder::new(Vec::new());
        for (name, text) in files {
            let mut header = tar::Header::new_old();
            // Written raw: the tar crate refuses `..` in names it sets,
            // and a hostile bundle is exactly what may carry one.
            header.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
            header.set_size(text.len() as u64);
            header.set_mode(0o644);
            header.set_cksum();
            tar.append(&header, text.as_bytes()).expect("append");
        }
        let tar = tar.into_inner().expect("tar");
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&tar).expect("gz");
        gz.finish().expect("gz")
    }

    fn report(name: &str, files: Result<BundleFiles, String>) -> Report {
        Report::build(&Inputs {
            detail: detail(name),
            bundle: None,
            files,
            now: now(),
        })
    }

    #[test]
    fn a_hostile_name_is_text_in_markdown_and_in_html() {
        let r = report(HOSTILE, Err("no bundle".into()));
        let md = r.render(Format::Markdown);
        assert!(!md.contains("<script>"), "{md}");
        assert!(!md.contains("[click](javascript"), "{md}");
        assert!(!md.contains("\u{1b}"), "{md}");
        assert!(
            !md.lines().any(|l| l.starts_with("# not a heading")),
            "{md}"
        );
        assert!(md.contains(r"evil\<script\>alert(1)\</script\>"), "{md}");
        // Every table row still has its columns: the `|` was escaped.
        for line in md.lines().filter(|l| l.contains("TETHER-E2101")) {
            assert_eq!(line.matches(" | ").count(), 3, "{line}");
        }

        let html = r.render(Format::Html);
        assert!(!html.contains("<script>"), "{html}");
        assert!(
            html.contains("evil&lt;script&gt;alert(1)&lt;/script&gt;"),
            "{html}"
        );
        assert!(!html.contains("href="), "{html}");
        assert!(!html.contains("\u{1b}"), "{html}");
        assert!(html.contains("default-src 'none'"), "{html}");
    }

    #[test]
    fn the_report_names_ips_timeline_errors_and_what_to_run() {
        let md = report("bot-7", Err("no bundle".into())).render(Format::Markdown);
        for expected in [
            "# Escalation report: bot-7",
            "10.1.2.3",
            "203.0.113.9",
            "## Status timeline",
            "| active | inactive |",
            "TETHER-E2101",
            "tether agents doctor 00000000-0000-0000-0000-0000000000aa",
        ] {
            assert!(md.contains(expected), "{expected} missing:\n{md}");
        }
    }

    #[test]
    fn bundle_files_feed_the_network_section_and_the_excerpt() {
        let doctor = serde_json::json!({
            "server": "https://cp.example:8443",
            "checks": [
                {"id": "dns", "status": "pass", "evidence": ["cp.example -> 192.0.2.10"], "code": null, "problem": null},
                {"id": "tcp", "status": "fail", "evidence": ["connect 192.0.2.10:8443: timed out after 5s"], "code": "TETHER-E2201", "problem": "nothing answered"},
                {"id": "tls", "status": "skipped", "evidence": [], "code": null, "problem": null}
            ]
        });
        let bytes = bundle_of(&[
            ("MANIFEST.json", "{}"),
            ("doctor/report.json", &doctor.to_string()),
            (
                "network/resolv.conf",
                "# comment\nnameserver 10.0.0.53\nnameserver ::1\n",
            ),
            ("network/ip-route.txt", "default via 10.1.2.1 dev eth0\n"),
            (
                "logs/agent.log",
                "ok line\nERROR check-in failed code=TETHER-E2201 ```\nmore\n",
            ),
            ("../../etc/passwd", "root:x:0:0"),
        ]);
        let files = BundleFiles::read(&bytes).expect("reads");
        let md = report("bot-7", Ok(files)).render(Format::Markdown);
        for expected in [
            "The doctor checked the path to https://cp.example:8443",
            "10.0.0.53, ::1",
            "default via 10.1.2.1 dev eth0",
            "these connections failed",
            "| tcp | TETHER-E2201 |",
            "check-in failed code=TETHER-E2201",
        ] {
            assert!(md.contains(expected), "{expected} missing:\n{md}");
        }
        assert!(!md.contains("root:x"), "an unquoted file leaked: {md}");
        // The log line's backticks cannot close the block that quotes it.
        assert!(md.contains("````text\n"), "{md}");
    }

    #[test]
    fn hostile_bundles_are_refused_with_a_reason_and_the_report_stands() {
        for (what, bytes) in [
            ("empty", Vec::new()),
            ("not gzip", b"PK\x03\x04 a zip".to_vec()),
            ("no quoted file", bundle_of(&[("other.txt", "x")])),
        ] {
            let why = BundleFiles::read(&bytes).expect_err(what);
            let md = Report::build(&Inputs {
                detail: detail("bot-7"),
                bundle: Some(
                    serde_json::from_value(serde_json::json!({
                        "id": "00000000-0000-0000-0000-0000000000bb",
                        "agent_id": "00000000-0000-0000-0000-0000000000aa",
                        "size_bytes": bytes.len(),
                        "sha256": "00",
                        "created_at": "2026-12-07T10:00:00Z"
                    }))
                    .expect("bundle info"),
                ),
                files: Err(why.clone()),
                now: now(),
            })
            .render(Format::Markdown);
            assert!(
                md.contains("could not be read for this report"),
                "{what}: {md}"
            );
            assert!(
                md.contains("00000000-0000-0000-0000-0000000000bb"),
                "{what}"
            );
        }
        // A truncated bundle is an error, not a panic.
        let good = bundle_of(&[("doctor/report.json", "{}")]);
        for n in [1, 10, good.len() / 2, good.len() - 1] {
            let _ = BundleFiles::read(&good[..n]);
        }
    }
}
