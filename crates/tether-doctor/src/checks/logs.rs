//! `logs`: the agent's own logs scanned for known error signatures, from a
//! table kept as data (`signatures.toml`).

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::sync::{Arc, OnceLock};

use regex::Regex;
use serde_json::json;
use tether_wire::ErrorCode;

use super::Ctx;
use crate::engine::TaskOutput;
use crate::report::CheckResult;

/// The log files scanned, in the log directory.
const LOG_FILES: &[&str] = &["install.log", "agent.log", "error.log"];
/// Only the tail of each file is read: recent trouble matters, and a huge
/// log must not slow the doctor down.
const TAIL_BYTES: u64 = 1024 * 1024;

/// One known error signature.
#[derive(Debug, Clone)]
pub struct Signature {
    /// Stable id, e.g. `proxy-auth`.
    pub id: String,
    /// Matched against each log line.
    pub pattern: Regex,
    /// The problem, in one line.
    pub problem: String,
    /// What to do, in one line.
    pub action: String,
    /// The catalog code.
    pub code: ErrorCode,
}

/// The table of signatures.
#[derive(Debug, Clone)]
pub struct SignatureTable {
    /// In file order; the first match of a line wins.
    pub signatures: Vec<Signature>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTable {
    /// The signatures.
    signature: Vec<RawSignature>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSignature {
    /// Stable id.
    id: String,
    /// Regex, matched per line.
    pattern: String,
    /// One-line problem.
    problem: String,
    /// One-line action.
    action: String,
    /// `TETHER-Exxxx`.
    code: String,
}

/// Why a signature table was refused.
#[derive(Debug, thiserror::Error)]
pub enum SignatureError {
    /// Not valid TOML for the schema.
    #[error("the signature table is not valid: {0}")]
    Toml(String),
    /// A pattern does not compile.
    #[error("signature {id}: invalid pattern: {detail}")]
    Pattern { id: String, detail: String },
    /// A code is not in the catalog.
    #[error("signature {id}: unknown code {code:?}")]
    Code { id: String, code: String },
    /// Two signatures share an id.
    #[error("signature id {0} appears twice")]
    Duplicate(String),
}

impl SignatureTable {
    /// Parses and validates a table.
    pub fn parse(text: &str) -> Result<SignatureTable, SignatureError> {
        let raw: RawTable =
            toml::from_str(text).map_err(|e| SignatureError::Toml(e.to_string()))?;
        let mut signatures = Vec::with_capacity(raw.signature.len());
        for s in raw.signature {
            if signatures.iter().any(|x: &Signature| x.id == s.id) {
                return Err(SignatureError::Duplicate(s.id));
            }
            let pattern = regex::RegexBuilder::new(&s.pattern)
                .size_limit(1 << 20)
                .build()
                .map_err(|e| SignatureError::Pattern {
                    id: s.id.clone(),
                    detail: e.to_string(),
                })?;
            let code = ErrorCode::parse(&s.code).ok_or_else(|| SignatureError::Code {
                id: s.id.clone(),
                code: s.code.clone(),
            })?;
            signatures.push(Signature {
                id: s.id,
                pattern,
                problem: s.problem,
                action: s.action,
                code,
            });
        }
        Ok(SignatureTable { signatures })
    }

    /// The table built into this binary.
    pub fn builtin() -> &'static SignatureTable {
        static TABLE: OnceLock<SignatureTable> = OnceLock::new();
        TABLE.get_or_init(|| {
            // Covered by a unit test; an invalid table degrades to none.
            SignatureTable::parse(include_str!("logs/signatures.toml")).unwrap_or(SignatureTable {
                signatures: Vec::new(),
            })
        })
    }

    /// The first signature matching `line`.
    pub fn matching(&self, line: &str) -> Option<&Signature> {
        self.signatures.iter().find(|s| s.pattern.is_match(line))
    }
}

/// The matches of one signature in one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Hit {
    pub(crate) signature: String,
    pub(crate) file: String,
    pub(crate) count: usize,
    pub(crate) last_line_no: usize,
    pub(crate) last_line: String,
}

/// Scans one file's text; hits per signature, in order of last occurrence.
pub(crate) fn scan(table: &SignatureTable, file: &str, text: &str) -> Vec<Hit> {
    let mut hits: Vec<Hit> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let Some(sig) = table.matching(line) else {
            continue;
        };
        let line_text =
            crate::checks::config::redact_url_userinfo(&super::snippet(line.as_bytes(), 200));
        match hits.iter_mut().find(|h| h.signature == sig.id) {
            Some(h) => {
                h.count += 1;
                h.last_line_no = i + 1;
                h.last_line = line_text;
            }
            None => hits.push(Hit {
                signature: sig.id.clone(),
                file: file.to_owned(),
                count: 1,
                last_line_no: i + 1,
                last_line: line_text,
            }),
        }
    }
    hits.sort_by_key(|h| h.last_line_no);
    hits
}

pub(crate) async fn check(ctx: Arc<Ctx>) -> TaskOutput {
    let mut r = CheckResult::pass("logs", "Agent logs");
    let Some(dir) = ctx.input.log_dir.clone() else {
        return TaskOutput {
            results: vec![r.with("note", "no log directory given")],
            blocked_by: None,
        };
    };
    r.set("log_dir", dir.display().to_string());
    let table = SignatureTable::builtin();
    let mut all = Vec::new();
    let mut scanned = Vec::new();
    for name in LOG_FILES {
        let path = dir.join(name);
        match read_tail(&path) {
            Ok(text) => {
                scanned.push(json!({ "file": name, "bytes_scanned": text.len() }));
                all.extend(scan(table, name, &text));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => scanned.push(json!({ "file": name, "error": e.to_string() })),
        }
    }
    r.set("files", scanned);
    r.set(
        "matches",
        all.iter()
            .map(|h| {
                json!({ "signature": h.signature, "file": h.file, "count": h.count,
                              "last_line_no": h.last_line_no, "last_line": h.last_line })
            })
            .collect::<Vec<_>>(),
    );
    // The most recent signature in error.log (else agent.log, else
    // install.log) is the one reported.
    let latest = ["error.log", "agent.log", "install.log"]
        .iter()
        .find_map(|f| {
            all.iter()
                .filter(|h| h.file == *f)
                .max_by_key(|h| h.last_line_no)
        });
    if let Some(hit) = latest
        && let Some(sig) = table.signatures.iter().find(|s| s.id == hit.signature)
    {
        r = r
            .warn(
                sig.code,
                format!(
                    "{} ({} × in {}, last at line {})",
                    sig.problem.trim_end_matches('.'),
                    hit.count,
                    hit.file,
                    hit.last_line_no
                ) + ".",
            )
            .with_action(sig.action.clone());
    }
    TaskOutput {
        results: vec![r],
        blocked_by: None,
    }
}

fn read_tail(path: &Path) -> std::io::Result<String> {
    let mut f = std::fs::File::open(path)?;
    let len = f.metadata()?.len();
    if len > TAIL_BYTES {
        f.seek(SeekFrom::Start(len - TAIL_BYTES))?;
    }
    let mut buf = Vec::new();
    f.take(TAIL_BYTES).read_to_end(&mut buf)?;
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_builtin_table_is_valid() {
        let t = SignatureTable::parse(include_str!("logs/signatures.toml")).expect("valid table");
        assert!(t.signatures.len() >= 10);
        assert_eq!(
            SignatureTable::builtin().signatures.len(),
            t.signatures.len()
        );
    }

    #[test]
    fn lines_map_to_their_signature() {
        let t = SignatureTable::builtin();
        let id = |line: &str| t.matching(line).map(|s| s.id.as_str());
        assert_eq!(
            id(
                "2026-05-01 WARN checkin failed code=TETHER-E3203 proxy-auth: the proxy p:3128 answered 407"
            ),
            Some("proxy-auth")
        );
        assert_eq!(
            id("open /var/lib/tether/state.json: Permission denied (os error 13)"),
            Some("permission-denied")
        );
        assert_eq!(
            id("write failed: No space left on device"),
            Some("disk-full")
        );
        assert_eq!(
            id("dns: resolving x failed: no such name (NXDOMAIN)"),
            Some("dns")
        );
        assert_eq!(id("INFO check-in ok"), None);
    }

    #[test]
    fn bad_tables_are_refused_with_the_reason() {
        let bad_regex =
            "[[signature]]\nid='a'\npattern='('\nproblem='p'\naction='a'\ncode='TETHER-E1001'\n";
        assert!(matches!(
            SignatureTable::parse(bad_regex),
            Err(SignatureError::Pattern { .. })
        ));
        let bad_code = "[[signature]]\nid='a'\npattern='x'\nproblem='p'\naction='a'\ncode='E1'\n";
        assert!(matches!(
            SignatureTable::parse(bad_code),
            Err(SignatureError::Code { .. })
        ));
        let unknown_field = "[[signature]]\nid='a'\npattern='x'\nproblem='p'\naction='a'\ncode='TETHER-E1001'\nextra=1\n";
        assert!(matches!(
            SignatureTable::parse(unknown_field),
            Err(SignatureError::Toml(_))
        ));
        let dup =
            "[[signature]]\nid='a'\npattern='x'\nproblem='p'\naction='a'\ncode='TETHER-E1001'\n"
                .repeat(2);
        assert!(matches!(
            SignatureTable::parse(&dup),
            Err(SignatureError::Duplicate(_))
        ));
    }

    #[test]
    fn scan_counts_and_keeps_the_last_line_redacted() {
        let text = "ok\nconnect: timed out (Connection timed out)\nproxy http://bob:pw@p:3128 answered 407 Proxy Authentication Required\nconnection timed out again\n";
        let hits = scan(SignatureTable::builtin(), "agent.log", text);
        assert_eq!(hits.len(), 2);
        assert_eq!(hits[0].signature, "proxy-auth");
        assert!(!hits[0].last_line.contains("pw"), "{}", hits[0].last_line);
        assert_eq!(
            (
                hits[1].signature.as_str(),
                hits[1].count,
                hits[1].last_line_no
            ),
            ("timeout", 2, 4)
        );
    }
}
