//! The doctor's report: one [`CheckResult`] per check, the [`Verdict`], and
//! their text and JSON renderings (schema in `docs/doctor-schema.md`).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use serde_json::{Value, json};
use tether_wire::ErrorCode;
use time::OffsetDateTime;

/// The version of the JSON schema; bumped on any incompatible change.
pub const SCHEMA_VERSION: u32 = 2;

/// The outcome of one check.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Status {
    /// The check found nothing wrong.
    Pass,
    /// Something is off but the path can still work.
    Warn,
    /// Something a person should know that is not a fault where the doctor
    /// runs (before enrollment, "not enrolled"). It has a code and a
    /// problem like a warning, but never becomes the verdict.
    Info,
    /// The check found a fault.
    Fail,
    /// The check did not run because a prerequisite failed.
    Skipped {
        /// The id of the check whose failure blocked this one.
        blocked_by: String,
    },
}

impl Status {
    /// The stable lowercase name: `pass`, `warn`, `info`, `fail`, `skipped`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Status::Pass => "pass",
            Status::Warn => "warn",
            Status::Info => "info",
            Status::Fail => "fail",
            Status::Skipped { .. } => "skipped",
        }
    }
}

/// One check's result, with the evidence it gathered.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckResult {
    /// The stable id, e.g. `dns.system`, `tcp:127.0.0.1:443`, `tls`.
    pub id: String,
    /// A short human title.
    pub title: String,
    /// The outcome.
    pub status: Status,
    /// How long the check ran.
    pub duration: Duration,
    /// What the check observed, by stable key.
    pub evidence: BTreeMap<String, Value>,
    /// The catalog code of the fault, for `warn` and `fail`.
    pub code: Option<ErrorCode>,
    /// The specific problem, in one sentence with observed values.
    pub problem: Option<String>,
    /// What to do about it.
    pub action: Option<String>,
}

impl CheckResult {
    /// A passing result with no evidence yet.
    pub fn pass(id: impl Into<String>, title: impl Into<String>) -> CheckResult {
        CheckResult {
            id: id.into(),
            title: title.into(),
            status: Status::Pass,
            duration: Duration::ZERO,
            evidence: BTreeMap::new(),
            code: None,
            problem: None,
            action: None,
        }
    }

    /// A result skipped because `blocked_by` failed.
    pub fn skipped(
        id: impl Into<String>,
        title: impl Into<String>,
        blocked_by: impl Into<String>,
    ) -> CheckResult {
        CheckResult {
            status: Status::Skipped {
                blocked_by: blocked_by.into(),
            },
            ..CheckResult::pass(id, title)
        }
    }

    /// Marks the result failed with `code`, a specific problem sentence and
    /// the catalog's action.
    pub fn fail(self, code: ErrorCode, problem: impl Into<String>) -> CheckResult {
        self.fault(Status::Fail, code, problem)
    }

    /// Marks the result as a warning with `code` and a specific problem.
    pub fn warn(self, code: ErrorCode, problem: impl Into<String>) -> CheckResult {
        self.fault(Status::Warn, code, problem)
    }

    /// Information with a code: shown, never the verdict.
    pub fn info(self, code: ErrorCode, problem: impl Into<String>) -> CheckResult {
        self.fault(Status::Info, code, problem)
    }

    fn fault(mut self, status: Status, code: ErrorCode, problem: impl Into<String>) -> CheckResult {
        self.status = status;
        self.code = Some(code);
        self.problem = Some(problem.into());
        if self.action.is_none() {
            self.action = Some(code.action().to_owned());
        }
        self
    }

    /// Replaces the action with a more specific one.
    pub fn with_action(mut self, action: impl Into<String>) -> CheckResult {
        self.action = Some(action.into());
        self
    }

    /// Adds one piece of evidence.
    pub fn with(mut self, key: &str, value: impl Into<Value>) -> CheckResult {
        self.evidence.insert(key.to_owned(), value.into());
        self
    }

    /// Adds one piece of evidence in place.
    pub fn set(&mut self, key: &str, value: impl Into<Value>) {
        self.evidence.insert(key.to_owned(), value.into());
    }

    /// Sets the duration.
    pub fn took(mut self, d: Duration) -> CheckResult {
        self.duration = d;
        self
    }

    /// Whether this result is a failure.
    pub fn is_fail(&self) -> bool {
        self.status == Status::Fail
    }
}

/// The overall outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum VerdictStatus {
    /// Every check passed (or did not apply).
    Healthy,
    /// No failure, at least one warning.
    Warnings,
    /// At least one check failed.
    Failed,
}

impl VerdictStatus {
    /// The stable lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            VerdictStatus::Healthy => "healthy",
            VerdictStatus::Warnings => "warnings",
            VerdictStatus::Failed => "failed",
        }
    }
}

/// The one root cause and what to do about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// Healthy, warnings only, or failed.
    pub status: VerdictStatus,
    /// The root cause, in one sentence.
    pub root_cause: String,
    /// Its catalog code.
    pub code: Option<ErrorCode>,
    /// What to do.
    pub action: String,
    /// The id of the check that names the root cause.
    pub check: Option<String>,
}

/// Everything one doctor run found.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// Always [`SCHEMA_VERSION`].
    pub schema_version: u32,
    /// The server URL checked (without credentials).
    pub server: String,
    /// When the run started, by the injected clock.
    pub started_at: OffsetDateTime,
    /// How long the run took.
    pub duration: Duration,
    /// The global deadline the run was held to.
    pub deadline: Duration,
    /// One result per check, in plan order.
    pub checks: Vec<CheckResult>,
    /// The root cause.
    pub verdict: Verdict,
}

/// The upstream order of checks: a failure further up the path is the root
/// cause of failures further down. The control plane's path comes first
/// (check-ins are what keep an agent managed), then each update server's,
/// in the policy's fallback order, then the agent's own definitions state.
fn rank(id: &str) -> usize {
    match defs_server(id) {
        Some((n, family)) => 100 + n.min(1000) * 20 + family_rank(family),
        None if id.starts_with(crate::checks::defs::DEFS_PREFIX) => 100 + 1001 * 20,
        None => family_rank(id),
    }
}

/// For an update server's check (`defs.N.tls`), N and the check's own id.
pub(crate) fn defs_server(id: &str) -> Option<(usize, &str)> {
    let rest = id.strip_prefix(crate::checks::defs::DEFS_PREFIX)?;
    let (n, check) = rest.split_once('.')?;
    Some((n.parse().ok()?, check))
}

fn family_rank(id: &str) -> usize {
    let family = id.split([':', '.']).next().unwrap_or(id);
    match family {
        "config" => 0,
        "dns" => 1,
        "tcp" => 2,
        "proxy" => 3,
        "tls" => 4,
        "http" => 5,
        "tuf" => 6,
        "auth" => 6,
        "clock" => 7,
        "revocation" => 8,
        "host" => 9,
        "target" => 10,
        "logs" => 11,
        _ => 12,
    }
}

/// How much a warning threatens the agent's path, most first. A failure
/// always outranks a warning (it stops the path); among warnings, the one
/// that will break or silently weaken the agent's path comes before
/// housekeeping, whatever its place on the path.
fn impact(code: Option<ErrorCode>) -> usize {
    match code {
        // The path works today only by accident, or the agent itself
        // cannot run or keep its state: these break it next.
        Some(
            ErrorCode::ClockSkew
            | ErrorCode::TlsInspected
            | ErrorCode::StoreUnavailable
            | ErrorCode::ProxyEnvMismatch
            | ErrorCode::ServiceNotRunning
            | ErrorCode::StateDirUnwritable
            | ErrorCode::DiskNearlyFull
            | ErrorCode::CredentialFileInsecure,
        ) => 0,
        // A mirror that is behind: the agent installs stale definitions and
        // falls out of policy.
        Some(ErrorCode::DefsMirrorBehind) => 0,
        // Housekeeping: nothing on the path is weakened. No NTP answer is
        // one of them: the clock is still compared with the server's, and a
        // skew found there is its own warning (ClockSkew), so a silent
        // UDP 123 must not hide a weakened check on either path.
        Some(
            ErrorCode::AgentVersionOutdated
            | ErrorCode::CredentialProbeUnsupported
            | ErrorCode::NtpUnreachable,
        ) => 2,
        // A check the agent relies on is weakened (revocation, NTP…).
        _ => 1,
    }
}

impl Verdict {
    /// Picks the root cause: the most upstream failure; with none, the
    /// warning of most impact on the agent's path (then the most upstream).
    /// Information ([`Status::Info`]) is never the verdict.
    ///
    /// One exception: a certificate that looks expired or not yet valid
    /// because this host's clock is wrong is a clock problem, so a failing
    /// clock check takes precedence over those TLS failures.
    pub fn from_checks(checks: &[CheckResult], server: &str) -> Verdict {
        Verdict::from_checks_with_defs(checks, server, &[])
    }

    /// [`Verdict::from_checks`] over both paths. `update_servers` are the
    /// definitions servers in fallback order (`defs.N.*` is the N-th).
    ///
    /// A failure on the control plane's path outranks any on the
    /// definitions path. When check-ins work and definitions fail, the
    /// verdict names the update server's URL with the definitions root
    /// cause. When both fail, the control plane's root cause is named, and
    /// the definitions failure is added only if its cause differs (the same
    /// proxy, the same first hop or the same configuration is named once).
    pub fn from_checks_with_defs(
        checks: &[CheckResult],
        server: &str,
        update_servers: &[String],
    ) -> Verdict {
        let mut v = Verdict::pick_root(checks, server);
        let url_of = |id: &str| {
            defs_server(id)
                .and_then(|(n, _)| update_servers.get(n.wrapping_sub(1)))
                .cloned()
        };
        let Some(root_id) = v.check.clone() else {
            return v;
        };
        if root_id.starts_with(crate::checks::defs::DEFS_PREFIX) {
            let what = match url_of(&root_id) {
                Some(url) => format!("definitions updates from {url} fail"),
                None => "definitions updates fail".to_owned(),
            };
            v.root_cause = match (v.status, url_of(&root_id)) {
                (VerdictStatus::Failed, _) => {
                    format!("Check-ins work, but {what}: {}", v.root_cause)
                }
                (_, Some(url)) => format!("Definitions from {url}: {}", v.root_cause),
                (_, None) => format!("Definitions: {}", v.root_cause),
            };
            return v;
        }
        if v.status != VerdictStatus::Failed {
            return v;
        }
        // Both paths fail: the definitions path's own root, if any.
        let cp_root = checks.iter().find(|c| c.id == root_id);
        let defs_root = checks
            .iter()
            .enumerate()
            .filter(|(_, c)| c.is_fail() && defs_server(&c.id).is_some())
            .min_by_key(|(i, c)| (rank(&c.id), *i))
            .map(|(_, c)| c);
        if let (Some(cp), Some(d)) = (cp_root, defs_root) {
            let url = url_of(&d.id).unwrap_or_else(|| "the update server".to_owned());
            if same_cause(cp, d) {
                v.root_cause.push_str(&format!(
                    " The same cause stops definitions updates from {url}."
                ));
            } else {
                let problem = d.problem.clone().unwrap_or_default();
                v.root_cause.push_str(&format!(
                    " Definitions updates from {url} also fail ({}, check {}): {problem}",
                    d.code.map(|c| c.as_str()).unwrap_or("no code"),
                    d.id
                ));
            }
        }
        v
    }

    fn pick_root(checks: &[CheckResult], server: &str) -> Verdict {
        let pick = |status: &Status| {
            checks
                .iter()
                .enumerate()
                .filter(|(_, c)| &c.status == status)
                .min_by_key(|(i, c)| {
                    let impact = match status {
                        Status::Warn => impact(c.code),
                        _ => 0,
                    };
                    (impact, rank(&c.id), *i)
                })
                .map(|(_, c)| c)
        };
        if let Some(mut root) = pick(&Status::Fail) {
            if matches!(
                root.code,
                Some(ErrorCode::TlsCertExpired | ErrorCode::TlsCertNotYetValid)
            ) && let Some(clock) = checks
                .iter()
                .find(|c| c.id == "clock" && c.status == Status::Fail)
            {
                root = clock;
            }
            return Verdict::naming(VerdictStatus::Failed, root);
        }
        if let Some(root) = pick(&Status::Warn) {
            return Verdict::naming(VerdictStatus::Warnings, root);
        }
        let mut root_cause = format!("Every check passed: the agent's path to {server} works.");
        let mut action = "Nothing to do.".to_owned();
        if let Some(info) = pick(&Status::Info) {
            let named = Verdict::naming(VerdictStatus::Healthy, info);
            root_cause.push_str(&format!(" For information: {}", named.root_cause));
            action = format!("Nothing to fix. Next: {}", named.action);
        }
        Verdict {
            status: VerdictStatus::Healthy,
            root_cause,
            code: None,
            action,
            check: None,
        }
    }

    fn naming(status: VerdictStatus, c: &CheckResult) -> Verdict {
        let root_cause = c
            .problem
            .clone()
            .or_else(|| c.code.map(|k| k.problem().to_owned()))
            .unwrap_or_else(|| format!("The check {} did not pass.", c.id));
        let action = c
            .action
            .clone()
            .or_else(|| c.code.map(|k| k.action().to_owned()))
            .unwrap_or_else(|| "Run `tether doctor --json` and send the report to support.".into());
        Verdict {
            status,
            root_cause,
            code: c.code,
            action,
            check: Some(c.id.clone()),
        }
    }
}

/// Whether a definitions failure has the control plane's failure as its
/// cause: the same check on the same first hop with the same code (the
/// same proxy refusing, the same proxy's name not resolving), or the
/// configuration both paths share.
fn same_cause(cp: &CheckResult, defs: &CheckResult) -> bool {
    let Some((_, check)) = defs_server(&defs.id) else {
        return false;
    };
    let family = |id: &str| id.split([':', '.']).next().unwrap_or("").to_owned();
    if family(check) != family(&cp.id) || cp.code != defs.code {
        return false;
    }
    let key = match family(check).as_str() {
        "config" => return true,
        "dns" => "host",
        "tcp" => "address",
        "proxy" => "proxy",
        _ => return false,
    };
    match (cp.evidence.get(key), defs.evidence.get(key)) {
        (Some(a), Some(b)) => a == b,
        _ => false,
    }
}

impl Report {
    /// 0 healthy, 1 warnings only, 2 failure. (3, "the doctor itself could
    /// not run", is returned by the caller, which never gets a report then.)
    pub fn exit_code(&self) -> u8 {
        match self.verdict.status {
            VerdictStatus::Healthy => 0,
            VerdictStatus::Warnings => 1,
            VerdictStatus::Failed => 2,
        }
    }

    /// The human rendering: one line per check, then the verdict.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "tether doctor: {} (started {}, took {}, deadline {})",
            self.server,
            rfc3339(self.started_at),
            fmt_duration(self.duration),
            fmt_duration(self.deadline),
        );
        let width = self.checks.iter().map(|c| c.id.len()).max().unwrap_or(0);
        for c in &self.checks {
            let status = match &c.status {
                Status::Pass => "PASS",
                Status::Warn => "WARN",
                Status::Info => "INFO",
                Status::Fail => "FAIL",
                Status::Skipped { .. } => "SKIP",
            };
            let summary = match &c.status {
                Status::Skipped { blocked_by } => format!("blocked by {blocked_by}"),
                _ => evidence_summary(&c.evidence),
            };
            let _ = writeln!(
                out,
                "{status}  {:<width$}  {:>7}  {summary}",
                c.id,
                fmt_duration(c.duration),
            );
            if matches!(c.status, Status::Warn | Status::Info | Status::Fail)
                && let Some(p) = &c.problem
            {
                let code = c.code.map(|k| format!("{k}: ")).unwrap_or_default();
                let _ = writeln!(out, "      {code}{p}");
            }
        }
        let _ = writeln!(out);
        let label = match self.verdict.status {
            VerdictStatus::Healthy => "HEALTHY",
            VerdictStatus::Warnings => "WARNINGS",
            VerdictStatus::Failed => "FAILED",
        };
        let _ = writeln!(out, "Verdict: {label}: {}", self.verdict.root_cause);
        if let Some(code) = self.verdict.code {
            let _ = writeln!(out, "  code:   {code}");
        }
        if let Some(check) = &self.verdict.check {
            let _ = writeln!(out, "  check:  {check}");
        }
        let _ = writeln!(out, "  action: {}", self.verdict.action);
        out
    }

    /// The JSON rendering (schema version 2, `docs/doctor-schema.md`).
    pub fn to_json(&self) -> Value {
        let checks: Vec<Value> = self
            .checks
            .iter()
            .map(|c| {
                let mut v = json!({
                    "id": c.id,
                    "title": c.title,
                    "status": c.status.as_str(),
                    "duration_ms": ms(c.duration),
                    "evidence": c.evidence,
                    "code": c.code.map(|k| k.as_str()),
                    "problem": c.problem,
                    "action": c.action,
                });
                if let Status::Skipped { blocked_by } = &c.status {
                    v["blocked_by"] = json!(blocked_by);
                }
                v
            })
            .collect();
        json!({
            "schema_version": self.schema_version,
            "server": self.server,
            "started_at": rfc3339(self.started_at),
            "duration_ms": ms(self.duration),
            "deadline_ms": ms(self.deadline),
            "checks": checks,
            "verdict": {
                "status": self.verdict.status.as_str(),
                "root_cause": self.verdict.root_cause,
                "code": self.verdict.code.map(|k| k.as_str()),
                "action": self.verdict.action,
                "check": self.verdict.check,
            },
        })
    }

    /// The result with this id, if any.
    pub fn check(&self, id: &str) -> Option<&CheckResult> {
        self.checks.iter().find(|c| c.id == id)
    }
}

/// Milliseconds with microsecond precision, as JSON numbers.
pub(crate) fn ms(d: Duration) -> f64 {
    (d.as_micros() as f64) / 1000.0
}

fn fmt_duration(d: Duration) -> String {
    if d >= Duration::from_secs(1) {
        format!("{:.2}s", d.as_secs_f64())
    } else {
        format!("{}ms", d.as_millis())
    }
}

pub(crate) fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| t.to_string())
}

/// `key=value` pairs of the scalar evidence; lists and objects show their size.
fn evidence_summary(evidence: &BTreeMap<String, Value>) -> String {
    let parts: Vec<String> = evidence
        .iter()
        .map(|(k, v)| match v {
            Value::String(s) => format!("{k}={s}"),
            Value::Array(a) if a.iter().all(|x| !x.is_object() && !x.is_array()) => {
                let items: Vec<String> = a
                    .iter()
                    .map(|x| match x {
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    })
                    .collect();
                format!("{k}=[{}]", items.join(","))
            }
            Value::Array(a) => format!("{k}=[{} items]", a.len()),
            Value::Object(o) => format!("{k}={{{} fields}}", o.len()),
            other => format!("{k}={other}"),
        })
        .collect();
    let line = parts.join(" ");
    const MAX: usize = 160;
    if line.chars().count() > MAX {
        let cut: String = line.chars().take(MAX).collect();
        format!("{cut}…")
    } else {
        line
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failing(id: &str, code: ErrorCode) -> CheckResult {
        CheckResult::pass(id, id).fail(code, format!("{id} broke."))
    }

    #[test]
    fn the_most_upstream_failure_is_the_root_cause() {
        let checks = vec![
            failing("http", ErrorCode::HttpNotTether),
            failing("tcp:127.0.0.1:443", ErrorCode::ConnectRefused),
            failing("dns.ns:10.0.0.1", ErrorCode::DnsTimeout),
            CheckResult::pass("config", "c").warn(ErrorCode::ProxyEnvMismatch, "differs."),
        ];
        let v = Verdict::from_checks(&checks, "https://s");
        assert_eq!(v.status, VerdictStatus::Failed);
        assert_eq!(v.check.as_deref(), Some("dns.ns:10.0.0.1"));
        assert_eq!(v.code, Some(ErrorCode::DnsTimeout));
        assert_eq!(v.root_cause, "dns.ns:10.0.0.1 broke.");
        assert_eq!(v.action, ErrorCode::DnsTimeout.action());
    }

    #[test]
    fn ties_go_to_the_first_in_plan_order() {
        let checks = vec![
            failing("tcp:[::1]:443", ErrorCode::ConnectTimeout),
            failing("tcp:127.0.0.1:443", ErrorCode::ConnectRefused),
        ];
        let v = Verdict::from_checks(&checks, "https://s");
        assert_eq!(v.check.as_deref(), Some("tcp:[::1]:443"));
    }

    #[test]
    fn a_wrong_clock_outranks_the_certificate_it_makes_look_expired() {
        let checks = vec![
            failing("tls", ErrorCode::TlsCertExpired),
            failing("clock", ErrorCode::ClockSkew),
        ];
        let v = Verdict::from_checks(&checks, "https://s");
        assert_eq!(v.check.as_deref(), Some("clock"));
        let checks = vec![
            failing("tls", ErrorCode::TlsUnknownIssuer),
            failing("clock", ErrorCode::ClockSkew),
        ];
        let v = Verdict::from_checks(&checks, "https://s");
        assert_eq!(v.check.as_deref(), Some("tls"));
    }

    #[test]
    fn warnings_only_and_healthy_verdicts() {
        let checks = vec![
            CheckResult::pass("tls", "t"),
            CheckResult::pass("clock", "c").warn(ErrorCode::NtpUnreachable, "no NTP."),
        ];
        let v = Verdict::from_checks(&checks, "https://s");
        assert_eq!(v.status, VerdictStatus::Warnings);
        assert_eq!(v.code, Some(ErrorCode::NtpUnreachable));
        let v = Verdict::from_checks(&[CheckResult::pass("tls", "t")], "https://s");
        assert_eq!(v.status, VerdictStatus::Healthy);
        assert_eq!(v.code, None);
        assert!(v.root_cause.contains("https://s"));
    }

    #[test]
    fn warnings_rank_by_impact_and_information_is_never_the_verdict() {
        let not_enrolled =
            CheckResult::pass("auth", "a").info(ErrorCode::NotEnrolled, "not enrolled");
        let revocation =
            CheckResult::pass("revocation", "r").warn(ErrorCode::RevocationUnreachable, "no OCSP");
        let outdated =
            CheckResult::pass("host.version", "v").warn(ErrorCode::AgentVersionOutdated, "old");
        let clock = CheckResult::pass("clock", "c").warn(ErrorCode::ClockSkew, "skewed");
        // Information does not hide a real warning further down the path.
        let v = Verdict::from_checks(&[not_enrolled.clone(), revocation.clone()], "https://s");
        assert_eq!(v.status, VerdictStatus::Warnings);
        assert_eq!(v.check.as_deref(), Some("revocation"));
        // A weakened check outranks housekeeping; a path about to break
        // outranks both, wherever it sits on the path.
        let v = Verdict::from_checks(&[outdated.clone(), revocation.clone()], "https://s");
        assert_eq!(v.check.as_deref(), Some("revocation"));
        let v = Verdict::from_checks(&[revocation, outdated, clock], "https://s");
        assert_eq!(v.check.as_deref(), Some("clock"));
        // Information alone leaves the path healthy, and says what is next.
        let v = Verdict::from_checks(&[not_enrolled], "https://s");
        assert_eq!(v.status, VerdictStatus::Healthy);
        assert!(v.root_cause.contains("not enrolled"), "{}", v.root_cause);
        assert!(v.action.contains("tether agent enroll"), "{}", v.action);
    }

    const MIRROR: &str = "https://mirror.corp/defs/";
    const SECOND: &str = "https://cdn.example/defs/";

    fn servers() -> Vec<String> {
        vec![MIRROR.to_owned(), SECOND.to_owned()]
    }

    #[test]
    fn a_definitions_only_failure_names_its_root_cause_and_the_servers_url() {
        let checks = vec![
            CheckResult::pass("tcp:127.0.0.1:8443", "t"),
            CheckResult::pass("tls", "t"),
            CheckResult::pass("http", "h"),
            CheckResult::pass("auth", "a"),
            CheckResult::pass("clock", "c").warn(ErrorCode::NtpUnreachable, "no NTP."),
            failing("defs.1.tcp:10.0.0.9:443", ErrorCode::ConnectRefused),
            CheckResult::skipped("defs.1.tls", "t", "defs.1.tcp:10.0.0.9:443"),
            failing("defs.2.tuf", ErrorCode::DefsMirrorFrozen),
            CheckResult::pass("defs.state", "s").warn(ErrorCode::ConnectRefused, "last failed."),
        ];
        let v = Verdict::from_checks_with_defs(&checks, "https://s", &servers());
        assert_eq!(v.status, VerdictStatus::Failed);
        // The first server in fallback order, its most upstream failure;
        // not the NTP warning, which says nothing about definitions.
        assert_eq!(v.check.as_deref(), Some("defs.1.tcp:10.0.0.9:443"));
        assert_eq!(v.code, Some(ErrorCode::ConnectRefused));
        assert_eq!(
            v.root_cause,
            format!(
                "Check-ins work, but definitions updates from {MIRROR} fail: defs.1.tcp:10.0.0.9:443 broke."
            )
        );
        // The second server alone: its own URL.
        let v = Verdict::from_checks_with_defs(&checks[5..], "https://s", &servers());
        assert_eq!(v.check.as_deref(), Some("defs.1.tcp:10.0.0.9:443"));
        let v = Verdict::from_checks_with_defs(&checks[7..], "https://s", &servers());
        assert_eq!(v.check.as_deref(), Some("defs.2.tuf"));
        assert!(v.root_cause.contains(SECOND), "{}", v.root_cause);
    }

    #[test]
    fn a_definitions_warning_is_named_as_such() {
        let checks = vec![
            CheckResult::pass("tls", "t"),
            CheckResult::pass("defs.1.tuf", "t").warn(ErrorCode::DefsMirrorBehind, "behind."),
            CheckResult::pass("defs.1.revocation", "r")
                .warn(ErrorCode::RevocationUnreachable, "no OCSP."),
        ];
        let v = Verdict::from_checks_with_defs(&checks, "https://s", &servers());
        assert_eq!(v.status, VerdictStatus::Warnings);
        // A mirror that is behind outranks a weakened check.
        assert_eq!(v.check.as_deref(), Some("defs.1.tuf"));
        assert_eq!(v.root_cause, format!("Definitions from {MIRROR}: behind."));
        let v = Verdict::from_checks_with_defs(&checks[2..], "https://s", &servers());
        assert_eq!(v.check.as_deref(), Some("defs.1.revocation"));
        // No NTP answer does not hide it (the issue's "WARNINGS: no NTP
        // server answered").
        let ntp = CheckResult::pass("clock", "c").warn(ErrorCode::NtpUnreachable, "no NTP.");
        let v = Verdict::from_checks_with_defs(
            &[ntp.clone(), checks[2].clone()],
            "https://s",
            &servers(),
        );
        assert_eq!(v.check.as_deref(), Some("defs.1.revocation"));
        let v = Verdict::from_checks_with_defs(&[ntp], "https://s", &servers());
        assert_eq!(v.check.as_deref(), Some("clock"));
    }

    #[test]
    fn both_paths_failing_at_the_same_proxy_name_it_once() {
        let proxy_fail = |id: &str| {
            CheckResult::pass(id, "p")
                .with("proxy", "http://127.0.0.1:3128")
                .fail(
                    ErrorCode::ProxyAuthFailed,
                    "The proxy http://127.0.0.1:3128 rejected the configured credentials (407, offers Basic).",
                )
        };
        let checks = vec![
            CheckResult::pass("tcp:127.0.0.1:3128", "t"),
            proxy_fail("proxy"),
            CheckResult::skipped("tls", "t", "proxy"),
            CheckResult::pass("defs.1.tcp:127.0.0.1:3128", "t"),
            proxy_fail("defs.1.proxy"),
            CheckResult::skipped("defs.1.tls", "t", "defs.1.proxy"),
        ];
        let v = Verdict::from_checks_with_defs(&checks, "https://s", &servers());
        assert_eq!(v.status, VerdictStatus::Failed);
        assert_eq!(v.check.as_deref(), Some("proxy"));
        assert_eq!(v.code, Some(ErrorCode::ProxyAuthFailed));
        assert_eq!(
            v.root_cause
                .matches("rejected the configured credentials")
                .count(),
            1
        );
        assert!(
            v.root_cause.ends_with(&format!(
                "The same cause stops definitions updates from {MIRROR}."
            )),
            "{}",
            v.root_cause
        );
    }

    #[test]
    fn both_paths_failing_for_different_causes_name_both() {
        let checks = vec![
            failing("tls", ErrorCode::TlsUnknownIssuer),
            // Another proxy, or none: a cause of its own.
            CheckResult::pass("defs.1.proxy", "p")
                .with("proxy", "http://10.9.9.9:8080")
                .fail(ErrorCode::ProxyAuthFailed, "The other proxy refused."),
        ];
        let v = Verdict::from_checks_with_defs(&checks, "https://s", &servers());
        assert_eq!(v.check.as_deref(), Some("tls"));
        assert_eq!(v.code, Some(ErrorCode::TlsUnknownIssuer));
        assert!(v.root_cause.starts_with("tls broke."), "{}", v.root_cause);
        assert!(
            v.root_cause.contains(&format!(
                "Definitions updates from {MIRROR} also fail (TETHER-E3203, check defs.1.proxy): The other proxy refused."
            )),
            "{}",
            v.root_cause
        );
    }

    #[test]
    fn exit_codes_follow_the_verdict() {
        let mut r = Report {
            schema_version: SCHEMA_VERSION,
            server: "https://s".into(),
            started_at: time::macros::datetime!(2026-01-01 00:00 UTC),
            duration: Duration::ZERO,
            deadline: Duration::from_secs(10),
            checks: vec![],
            verdict: Verdict::from_checks(&[], "https://s"),
        };
        assert_eq!(r.exit_code(), 0);
        r.verdict.status = VerdictStatus::Warnings;
        assert_eq!(r.exit_code(), 1);
        r.verdict.status = VerdictStatus::Failed;
        assert_eq!(r.exit_code(), 2);
    }

    #[test]
    fn evidence_summary_keeps_scalars_and_sizes_collections() {
        let mut e = BTreeMap::new();
        e.insert("addr".to_owned(), json!("127.0.0.1:443"));
        e.insert("ok".to_owned(), json!(true));
        e.insert("list".to_owned(), json!(["a", "b"]));
        e.insert("chain".to_owned(), json!([{"s": 1}]));
        assert_eq!(
            evidence_summary(&e),
            "addr=127.0.0.1:443 chain=[1 items] list=[a,b] ok=true"
        );
        e.insert("long".to_owned(), json!("x".repeat(400)));
        assert!(evidence_summary(&e).ends_with('…'));
    }

    /// A fixed report covering every status, with fixed durations and
    /// timestamps, for the rendering snapshots.
    fn sample() -> Report {
        let ms = Duration::from_millis;
        let checks = vec![
            CheckResult::pass("config", "Configuration")
                .with("enrolled", true)
                .with("proxy_setting", "127.0.0.1:3128")
                .took(ms(0)),
            CheckResult::pass("dns.system", "DNS (system resolver)")
                .with("host", "127.0.0.1")
                .with("ip_literal", true)
                .took(ms(0)),
            CheckResult::pass("tcp:127.0.0.1:3128", "TCP 127.0.0.1:3128")
                .with("connected", true)
                .took(ms(1)),
            CheckResult::pass("proxy", "Proxy CONNECT")
                .with("proxy", "127.0.0.1:3128")
                .with("status", 407)
                .with("auth_schemes", json!(["Basic"]))
                .with("credentials_configured", true)
                .fail(
                    ErrorCode::ProxyAuthFailed,
                    "The proxy 127.0.0.1:3128 rejected the configured credentials (407, offers Basic).",
                )
                .took(ms(3)),
            CheckResult::skipped("tls", "TLS", "proxy"),
            CheckResult::pass("clock", "Clock")
                .with("ntp", json!([{"server": "pool.ntp.org", "error": "no answer within 2000 ms (UDP 123 blocked?)"}]))
                .warn(ErrorCode::NtpUnreachable, "No NTP server answered over UDP 123 (pool.ntp.org): the clock cannot be checked against NTP.")
                .took(ms(2000)),
            CheckResult::skipped("host.service", "Service", "systemd (systemctl not found)"),
        ];
        let verdict = Verdict::from_checks(&checks, "https://tether.example/");
        Report {
            schema_version: SCHEMA_VERSION,
            server: "https://tether.example/".into(),
            started_at: time::macros::datetime!(2026-05-17 19:16:00 UTC),
            duration: ms(2004),
            deadline: Duration::from_secs(10),
            checks,
            verdict,
        }
    }

    #[test]
    fn text_rendering_snapshot() {
        insta::assert_snapshot!(sample().to_text());
    }

    #[test]
    fn json_rendering_snapshot() {
        insta::assert_json_snapshot!(sample().to_json());
    }
}
