//! Fleet diagnosis as pure functions: no store, no clock (callers pass
//! `now`), so every shape is testable without a server. The service
//! (`service::fleet`) reads the agents a page at a time and calls
//! [`AgentView::from_record`] and [`diagnose`]. docs/fleet-diagnosis.md.
//!
//! The heuristic: failing agents are grouped by their failure (error class
//! and code). For each failure, the path element shared by the most failing
//! agents where most agents sharing it fail (more than half, and at least
//! two) is a **network** incident. What remains, one or a few agents whose
//! peers on the same path are fine, is a **configuration** incident (clock
//! skew, a bad credential, local config). When most of the judged fleet
//! fails the same way across more than one path, it is the **server**.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;

use tether_store::AgentRecord;
use tether_wire::{
    AgentRef, AgentStatus, Dimension, FleetDiagnosis, Hint, HintKind, Incident, IncidentKind,
    LastError,
};
use time::OffsetDateTime;
use uuid::Uuid;

/// A value longer than this (a hostile label or proxy) is cut, on a char
/// boundary, with `…`.
pub const MAX_VALUE_CHARS: usize = 128;
/// At most this many internal addresses of one agent are read.
pub const MAX_IPS_PER_AGENT: usize = 16;
/// At most this many update servers of one agent are read.
pub const MAX_SERVERS_PER_AGENT: usize = 8;
/// Agents named per incident or hint.
pub const MAX_NAMED: usize = 20;
/// A reported time this far past the control plane's time of the check-in
/// means the agent's clock is ahead.
pub const SKEW_TOLERANCE_SECS: i64 = 300;
/// Several agents of one subnet failing the same way: a hint from this many.
pub const SEGMENT_HINT_MIN: u64 = 3;
/// The `last_errors` key of the check-in loop's own error: it is cleared by
/// the check-in after the one that carries it, so it is history, not a
/// current failure, on an agent that checks in.
const CHECKIN_SUBSYSTEM: &str = "checkin";

/// Dimensions in the order a tie between them is broken: the most specific
/// path element first.
const PATH_ORDER: [Dimension; 5] = [
    Dimension::Proxy,
    Dimension::UpdateServer,
    Dimension::ExternalIp,
    Dimension::Subnet,
    Dimension::Site,
];

/// A failure's identity: its error class and code.
type FailureKey<'a> = (&'static str, Option<&'a str>);

/// Where a configuration incident is placed: the first of these where the
/// agent has healthy peers (a subnet before the external IP, which a NAT
/// makes broad).
const CONFIG_ORDER: [Dimension; 5] = [
    Dimension::Proxy,
    Dimension::UpdateServer,
    Dimension::Subnet,
    Dimension::ExternalIp,
    Dimension::Site,
];

/// Why an agent is failing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// `silent`, or the class of `code`.
    pub class: &'static str,
    pub code: Option<String>,
    /// When it started (silent: the last check-in).
    pub since: Option<OffsetDateTime>,
}

/// What the diagnosis needs of one agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentView {
    pub id: Uuid,
    pub name: String,
    /// Active or Inactive: judged. Others are read for the hints only.
    pub judged: bool,
    pub failure: Option<Failure>,
    pub subnets: BTreeSet<String>,
    pub site: Option<String>,
    pub proxy: Option<String>,
    pub external_ip: Option<String>,
    pub update_servers: BTreeSet<String>,
    pub version_outdated: bool,
    /// Seconds the agent's clock is ahead of the control plane's, when its
    /// reported times show it.
    pub clock_ahead_secs: Option<i64>,
}

impl AgentView {
    /// The values of one dimension.
    fn values(&self, d: Dimension) -> Vec<&str> {
        match d {
            Dimension::Proxy => self.proxy.iter().map(String::as_str).collect(),
            Dimension::UpdateServer => self.update_servers.iter().map(String::as_str).collect(),
            Dimension::ExternalIp => self.external_ip.iter().map(String::as_str).collect(),
            Dimension::Subnet => self.subnets.iter().map(String::as_str).collect(),
            Dimension::Site => self.site.iter().map(String::as_str).collect(),
            Dimension::Fleet | Dimension::Unknown => Vec::new(),
        }
    }

    fn has(&self, d: Dimension, v: &str) -> bool {
        self.values(d).contains(&v)
    }

    fn key(&self) -> Option<FailureKey<'_>> {
        self.failure.as_ref().map(|f| (f.class, f.code.as_deref()))
    }

    fn named(&self) -> AgentRef {
        AgentRef {
            id: self.id,
            name: self.name.clone(),
        }
    }

    /// The view of a stored agent. `version_outdated` is the status flag's
    /// own computation (`status::flags`), passed in.
    pub fn from_record(a: &AgentRecord, version_outdated: bool) -> AgentView {
        let judged = matches!(a.status, AgentStatus::Active | AgentStatus::Inactive);
        let failure = if !judged {
            None
        } else if a.status == AgentStatus::Inactive {
            Some(Failure {
                class: "silent",
                code: None,
                since: a.last_seen,
            })
        } else {
            current_error(a).map(|e| Failure {
                class: error_class(e.code.as_str()),
                code: Some(e.code.as_str().to_owned()),
                since: Some(match a.last_seen {
                    Some(seen) if e.at > seen => seen,
                    _ => e.at,
                }),
            })
        };
        AgentView {
            id: a.id,
            name: clip(&a.name),
            judged,
            failure,
            subnets: a
                .facts
                .internal_ips
                .iter()
                .take(MAX_IPS_PER_AGENT)
                .filter_map(|ip| subnet(ip))
                .collect(),
            site: a.site.as_deref().map(clip).filter(|s| !s.is_empty()),
            proxy: a.proxy.as_deref().map(clip).filter(|s| !s.is_empty()),
            external_ip: a.external_ip.as_deref().map(clip).filter(|s| !s.is_empty()),
            update_servers: a
                .defs
                .iter()
                .filter_map(|c| c.server.as_deref())
                .take(MAX_SERVERS_PER_AGENT)
                .map(clip)
                .filter(|s| !s.is_empty())
                .collect(),
            version_outdated,
            clock_ahead_secs: clock_ahead(a),
        }
    }
}

/// The agent's current error: the newest one of a subsystem other than the
/// check-in loop's (see [`CHECKIN_SUBSYSTEM`]), the definitions channels'
/// included.
fn current_error(a: &AgentRecord) -> Option<&LastError> {
    a.last_errors
        .iter()
        .filter(|(k, _)| k.as_str() != CHECKIN_SUBSYSTEM)
        .map(|(_, e)| e)
        .chain(a.defs.iter().filter_map(|c| c.last_error.as_ref()))
        .max_by_key(|e| e.at)
}

/// How far the agent's clock is ahead of the control plane's, from the
/// times it reported (its errors, its definitions attempts) against the
/// control plane's time of its last check-in. Only "ahead" is visible: a
/// clock behind looks like an old event.
fn clock_ahead(a: &AgentRecord) -> Option<i64> {
    let seen = a.last_seen?;
    let newest = a
        .last_errors
        .values()
        .map(|e| e.at)
        .chain(a.defs.iter().filter_map(|c| c.last_attempt_at))
        .chain(a.defs.iter().filter_map(|c| c.updated_at))
        .max()?;
    let ahead = (newest - seen).whole_seconds();
    (ahead > SKEW_TOLERANCE_SECS).then_some(ahead)
}

/// The stable code's family, from its string form (`TETHER-E3203`), so a
/// code from a newer peer still falls into its family.
pub fn error_class(code: &str) -> &'static str {
    let Some(n) = code
        .strip_prefix("TETHER-E")
        .and_then(|d| d.get(..4))
        .and_then(|d| d.parse::<u32>().ok())
    else {
        return "other";
    };
    match n {
        1007 | 1008 => "clock",
        1000..=1999 => "local",
        2100..=2199 => "token",
        2200..=2299 => "credential",
        3000..=3099 => "dns",
        3100..=3199 => "connect",
        3202 | 3203 => "proxy-auth",
        3200..=3299 => "proxy",
        3302 | 3303 => "clock-or-certificate",
        3300..=3399 => "tls",
        3400..=3499 => "http",
        5000..=5999 => "server",
        6000..=6099 => "definitions",
        _ => "other",
    }
}

fn class_phrase(class: &str) -> &str {
    match class {
        "proxy-auth" => "proxy authentication",
        "clock-or-certificate" => "certificate validity (or the clock)",
        "local" => "local configuration",
        other => other,
    }
}

/// The /24 (IPv4) or /64 (IPv6) of an address; `None` for anything that
/// is not an address, and for unspecified ones.
pub fn subnet(ip: &str) -> Option<String> {
    // An address may come with a prefix length (`10.0.0.5/16`) or a zone.
    let bare = ip.trim().split(['/', '%']).next().unwrap_or("");
    if bare.len() > 64 {
        return None;
    }
    match bare.parse::<IpAddr>().ok()? {
        IpAddr::V4(v4) if !v4.is_unspecified() => {
            let o = v4.octets();
            Some(format!("{}.{}.{}.0/24", o[0], o[1], o[2]))
        }
        IpAddr::V6(v6) if !v6.is_unspecified() => {
            let s = v6.segments();
            let net = std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0);
            Some(format!("{net}/64"))
        }
        _ => None,
    }
}

/// At most [`MAX_VALUE_CHARS`] characters.
pub fn clip(s: &str) -> String {
    match s.char_indices().nth(MAX_VALUE_CHARS) {
        Some((end, _)) => format!("{}…", &s[..end]),
        None => s.to_owned(),
    }
}

fn dim_phrase(d: Dimension, v: &str) -> String {
    match d {
        Dimension::Proxy => format!("behind proxy {v}"),
        Dimension::UpdateServer => format!("using update server {v}"),
        Dimension::ExternalIp => format!("coming from {v}"),
        Dimension::Subnet => format!("in {v}"),
        Dimension::Site => format!("at site {v}"),
        Dimension::Fleet | Dimension::Unknown => "in the fleet".to_owned(),
    }
}

fn dim_noun(d: Dimension) -> &'static str {
    match d {
        Dimension::Proxy => "proxy",
        Dimension::UpdateServer => "update server",
        Dimension::ExternalIp => "external IP",
        Dimension::Subnet => "subnet",
        Dimension::Site => "site",
        Dimension::Fleet | Dimension::Unknown => "fleet",
    }
}

fn agents(n: u64) -> &'static str {
    if n == 1 { "agent" } else { "agents" }
}

/// `2 h`, `45 min`, `3 d`.
pub fn fmt_duration(secs: i64) -> String {
    let secs = secs.max(0);
    if secs >= 2 * 86_400 {
        format!("{} d", (secs + 43_200) / 86_400)
    } else if secs >= 3600 {
        format!("{} h", (secs + 1800) / 3600)
    } else {
        format!("{} min", (secs + 30) / 60)
    }
}

fn what_fails(class: &str, code: Option<&str>, n: u64) -> String {
    let verb = if n == 1 { "fails" } else { "fail" };
    match code {
        None => "went silent".to_owned(),
        Some(code) => format!("{verb} with {} ({code})", class_phrase(class)),
    }
}

/// The diagnosis of the agents read. `truncated` says more agents exist.
pub fn diagnose(
    views: &[AgentView],
    now: OffsetDateTime,
    current_version: &str,
    truncated: bool,
) -> FleetDiagnosis {
    let judged: Vec<&AgentView> = views.iter().filter(|v| v.judged).collect();
    let failing: Vec<&AgentView> = judged
        .iter()
        .copied()
        .filter(|v| v.failure.is_some())
        .collect();

    // Failing agents by failure, largest first (ties by class and code, so
    // the order is stable).
    let mut by_failure: BTreeMap<FailureKey<'_>, Vec<&AgentView>> = BTreeMap::new();
    for v in &failing {
        if let Some(k) = v.key() {
            by_failure.entry(k).or_default().push(v);
        }
    }
    let mut failures: Vec<_> = by_failure.into_iter().collect();
    failures.sort_by(|a, b| b.1.len().cmp(&a.1.len()).then(a.0.cmp(&b.0)));

    let index = Index::build(&judged);
    let mut incidents = Vec::new();
    for ((class, code), members) in failures {
        incidents.extend(incidents_of(&judged, &index, class, code, members));
    }
    incidents.sort_by(|a, b| {
        kind_rank(a.kind)
            .cmp(&kind_rank(b.kind))
            .then(b.failing.cmp(&a.failing))
            .then(a.value.cmp(&b.value))
    });

    FleetDiagnosis {
        generated_at: now,
        agents_read: views.len() as u64,
        judged: judged.len() as u64,
        failing: failing.len() as u64,
        truncated,
        hints: hints(views, &judged, current_version),
        incidents,
    }
}

fn kind_rank(k: IncidentKind) -> u8 {
    match k {
        IncidentKind::Server => 0,
        IncidentKind::Network => 1,
        IncidentKind::Configuration => 2,
        IncidentKind::Unknown => 3,
    }
}

/// What is known of each path element, built once per diagnosis so that no
/// step rescans the fleet: the judged agents sharing it, the healthy ones,
/// and the failing ones by failure.
#[derive(Default)]
struct Index<'a> {
    groups: HashMap<(Dimension, &'a str), Counts<'a>>,
}

#[derive(Default)]
struct Counts<'a> {
    total: u64,
    fine: u64,
    by_failure: HashMap<FailureKey<'a>, u64>,
}

impl<'a> Index<'a> {
    fn build(judged: &[&'a AgentView]) -> Index<'a> {
        let mut index = Index::default();
        for a in judged {
            for d in PATH_ORDER {
                for v in a.values(d) {
                    let c = index.groups.entry((d, v)).or_default();
                    c.total += 1;
                    match a.key() {
                        Some(k) => *c.by_failure.entry(k).or_default() += 1,
                        None => c.fine += 1,
                    }
                }
            }
        }
        index
    }

    /// Judged agents that share `d = v`: how many fail with `key`, how many
    /// are healthy, and how many there are.
    fn counts(&self, d: Dimension, v: &str, key: FailureKey<'_>) -> (u64, u64, u64) {
        self.groups.get(&(d, v)).map_or((0, 0, 0), |c| {
            (
                c.by_failure.get(&key).copied().unwrap_or(0),
                c.fine,
                c.total,
            )
        })
    }

    fn fine(&self, d: Dimension, v: &str) -> u64 {
        self.groups.get(&(d, v)).map_or(0, |c| c.fine)
    }
}

fn incidents_of<'a>(
    judged: &[&'a AgentView],
    index: &Index<'_>,
    class: &'static str,
    code: Option<&str>,
    members: Vec<&'a AgentView>,
) -> Vec<Incident> {
    let key = (class, code);
    let mut out = Vec::new();
    let judged_n = judged.len() as u64;
    let members_n = members.len() as u64;

    // Server: most of the fleet, and no one path element that all of them
    // share (else that element is as likely a cause).
    let spread = !PATH_ORDER.iter().any(|d| {
        members.first().is_some_and(|first| {
            first
                .values(*d)
                .iter()
                .any(|v| members.iter().all(|m| m.has(*d, v)))
        })
    });
    if members_n >= 3 && members_n * 5 >= judged_n * 4 && spread {
        out.push(incident(
            IncidentKind::Server,
            Dimension::Fleet,
            "all",
            &members,
            members_n,
            judged_n,
            class,
            code,
            Some(format!(
                "{} {} failing the same way span several subnets, proxies or addresses",
                members_n,
                agents(members_n)
            )),
            healthy_phrase(judged_n - members_n, "the rest of the fleet"),
        ));
        return out;
    }

    // Network: greedily, the shared path element with the highest failing
    // share (more than half), then the most failing agents.
    let mut left: Vec<&AgentView> = members;
    loop {
        // (dimension, value, failing agents left there, same failure,
        // same failure plus healthy)
        let mut best: Option<(Dimension, String, u64, u64, u64)> = None;
        // Failing agents left per path element, in `PATH_ORDER` (the
        // dimension's own order), then by value.
        let mut hits: BTreeMap<(Dimension, &str), u64> = BTreeMap::new();
        for m in &left {
            for d in PATH_ORDER {
                for v in m.values(d) {
                    *hits.entry((d, v)).or_default() += 1;
                }
            }
        }
        for ((d, v), hit) in hits {
            let (same, fine, _) = index.counts(d, v, key);
            // Most of the agents there fail this way: peers failing
            // some other way neither confirm nor refute it.
            let judged_here = same + fine;
            if hit < 2 || same * 2 <= judged_here {
                continue;
            }
            // The higher failing share wins, then more agents; on a tie
            // the earlier (more specific) dimension stays.
            let better = best.as_ref().is_none_or(|(_, _, bh, bs, bj)| {
                let lhs = u128::from(same) * u128::from(*bj);
                let rhs = u128::from(*bs) * u128::from(judged_here);
                lhs > rhs || (lhs == rhs && hit > *bh)
            });
            if better {
                best = Some((d, v.to_owned(), hit, same, judged_here));
            }
        }
        let Some((d, v, _, _, _)) = best else {
            break;
        };
        let (_, _, total) = index.counts(d, &v, key);
        let (these, rest): (Vec<_>, Vec<_>) = left.into_iter().partition(|m| m.has(d, &v));
        left = rest;
        let n = these.len() as u64;
        let contrast = network_contrast(judged, &these, d, &v);
        out.push(incident(
            IncidentKind::Network,
            d,
            &v,
            &these,
            n,
            total,
            class,
            code,
            None,
            contrast,
        ));
    }

    // Configuration: each remaining agent against the most specific path
    // element where its peers are fine; agents of one failure on the same
    // such element together.
    let mut groups: BTreeMap<(Dimension, String), Vec<&AgentView>> = BTreeMap::new();
    let mut alone: Vec<&AgentView> = Vec::new();
    for m in left {
        let place = CONFIG_ORDER.iter().find_map(|d| {
            m.values(*d)
                .into_iter()
                .find(|v| index.fine(*d, v) > 0)
                .map(|v| (*d, v.to_owned()))
        });
        match place {
            Some(k) => groups.entry(k).or_default().push(m),
            None => alone.push(m),
        }
    }
    for ((d, v), these) in groups {
        let (_, _, total) = index.counts(d, &v, key);
        let n = these.len() as u64;
        let fine = index.fine(d, &v);
        out.push(incident(
            IncidentKind::Configuration,
            d,
            &v,
            &these,
            n,
            total,
            class,
            code,
            skew_detail(&these),
            healthy_phrase(fine, &format!("{} {}", dim_noun(d), v)),
        ));
    }
    if !alone.is_empty() {
        // No peer shares any path element: nothing to contrast with, so the
        // agent's own setup is the first suspect.
        let n = alone.len() as u64;
        out.push(incident(
            IncidentKind::Configuration,
            Dimension::Unknown,
            "no shared path",
            &alone,
            n,
            n,
            class,
            code,
            skew_detail(&alone).or(Some(
                "no healthy agent shares its subnet, proxy, address or site".to_owned(),
            )),
            None,
        ));
    }
    out
}

fn skew_detail(these: &[&AgentView]) -> Option<String> {
    let ahead = these.iter().filter_map(|a| a.clock_ahead_secs).max()?;
    Some(format!("clock {} ahead", fmt_duration(ahead)))
}

fn healthy_phrase(n: u64, of: &str) -> Option<String> {
    (n > 0).then(|| {
        format!(
            "{n} {} of {of} {} fine",
            agents(n),
            if n == 1 { "is" } else { "are" }
        )
    })
}

/// Healthy agents that share another path element with the failing ones
/// but not `d = v`: the evidence that the shared element is the cause.
fn network_contrast(
    judged: &[&AgentView],
    these: &[&AgentView],
    d: Dimension,
    v: &str,
) -> Option<String> {
    for d2 in [
        Dimension::Subnet,
        Dimension::Site,
        Dimension::ExternalIp,
        Dimension::Proxy,
        Dimension::UpdateServer,
    ] {
        if d2 == d {
            continue;
        }
        let theirs: BTreeSet<&str> = these.iter().flat_map(|m| m.values(d2)).collect();
        let fine = judged
            .iter()
            .filter(|a| {
                a.failure.is_none()
                    && !a.has(d, v)
                    && a.values(d2).iter().any(|x| theirs.contains(x))
            })
            .count() as u64;
        if fine > 0 {
            return Some(format!(
                "{fine} {} of the same {} without the {} {} fine",
                agents(fine),
                dim_noun(d2),
                dim_noun(d),
                if fine == 1 { "is" } else { "are" }
            ));
        }
    }
    None
}

#[allow(clippy::too_many_arguments)]
fn incident(
    kind: IncidentKind,
    dimension: Dimension,
    value: &str,
    these: &[&AgentView],
    failing: u64,
    total: u64,
    class: &'static str,
    code: Option<&str>,
    detail: Option<String>,
    contrast: Option<String>,
) -> Incident {
    let since = these
        .iter()
        .filter_map(|a| a.failure.as_ref().and_then(|f| f.since))
        .min();
    let count = if failing == total && failing > 1 {
        format!("all {failing} agents")
    } else {
        format!("{failing} {} of {total}", agents(failing))
    };
    let place = match (kind, dimension) {
        (IncidentKind::Server, _) => "in the fleet".to_owned(),
        (_, Dimension::Unknown) => "with no peer on the same path".to_owned(),
        _ => dim_phrase(dimension, value),
    };
    let mut summary = format!(
        "{}: {count} {place} {}",
        kind.as_str(),
        what_fails(class, code, failing)
    );
    if let Some(t) = since {
        summary.push_str(if code.is_none() {
            " (last check-in "
        } else {
            " since "
        });
        summary.push_str(&tether_wire::clock::utc_minute(t));
        if code.is_none() {
            summary.push(')');
        }
    }
    if let Some(d) = &detail {
        summary.push_str(": ");
        summary.push_str(d);
    }
    if let Some(c) = &contrast {
        summary.push_str("; ");
        summary.push_str(c);
    }
    Incident {
        kind,
        dimension,
        value: value.to_owned(),
        failing,
        total,
        error_class: class.to_owned(),
        code: code.map(str::to_owned),
        since,
        detail,
        contrast,
        summary,
        agents: these.iter().take(MAX_NAMED).map(|a| a.named()).collect(),
    }
}

fn hints(views: &[AgentView], judged: &[&AgentView], current_version: &str) -> Vec<Hint> {
    let mut out = Vec::new();
    // Several agents in one segment failing the same way.
    let mut segments: BTreeMap<(&str, FailureKey<'_>), Vec<&AgentView>> = BTreeMap::new();
    for a in judged {
        if let Some(k) = a.key() {
            for s in &a.subnets {
                segments.entry((s.as_str(), k)).or_default().push(a);
            }
        }
    }
    for ((segment, (class, code)), these) in segments {
        let n = these.len() as u64;
        if n < SEGMENT_HINT_MIN {
            continue;
        }
        out.push(hint(
            HintKind::SegmentFailing,
            &these,
            format!(
                "{n} agents in {segment} {}: look at what the segment shares (its proxy, firewall, resolver) before the hosts",
                what_fails(class, code, n)
            ),
        ));
    }
    let outdated: Vec<&AgentView> = views.iter().filter(|v| v.version_outdated).collect();
    if !outdated.is_empty() {
        let n = outdated.len() as u64;
        out.push(hint(
            HintKind::VersionOutdated,
            &outdated,
            format!(
                "{n} {} older than the current version {}: install the current agent package on them",
                if n == 1 { "agent runs a version" } else { "agents run versions" },
                clip(current_version)
            ),
        ));
    }
    let unlabelled: Vec<&AgentView> = views.iter().filter(|v| v.site.is_none()).collect();
    if !unlabelled.is_empty() {
        let n = unlabelled.len() as u64;
        out.push(hint(
            HintKind::NoSite,
            &unlabelled,
            format!(
                "{n} {} no site label: label them (`tether sites assign ID SITE`, or a token created with --site) so incidents can be placed",
                if n == 1 { "agent has" } else { "agents have" }
            ),
        ));
    }
    out
}

/// A hint about `agents`, naming the first [`MAX_NAMED`] of them.
fn hint(kind: HintKind, agents: &[&AgentView], message: String) -> Hint {
    Hint {
        kind,
        count: agents.len() as u64,
        message,
        agents: agents.iter().take(MAX_NAMED).map(|a| a.named()).collect(),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use tether_wire::{AgentKind, ChannelState, ErrorCode, HostFacts};
    use time::macros::datetime;

    use super::*;

    const NOW: OffsetDateTime = datetime!(2026-12-08 10:00 UTC);
    const CURRENT: &str = "1.4.0";

    fn record(name: &str, ip: &str) -> AgentRecord {
        AgentRecord {
            id: Uuid::new_v4(),
            name: name.to_owned(),
            kind: AgentKind::Connector,
            group: "default".into(),
            policy: "default".into(),
            status: AgentStatus::Active,
            requires_approval: false,
            approved_at: None,
            enrolled_at: datetime!(2026-12-01 08:00 UTC),
            last_seen: Some(datetime!(2026-12-08 09:59 UTC)),
            deadline_at: None,
            stopped_at: None,
            credential_rejected_at: None,
            external_ip: Some("198.51.100.7".into()),
            version: CURRENT.into(),
            facts: HostFacts {
                hostname: name.to_owned(),
                os: "linux debian 12".into(),
                internal_ips: vec![ip.to_owned()],
                uptime_secs: 1,
                installed_at: None,
            },
            definitions: BTreeMap::new(),
            defs: Vec::new(),
            last_errors: BTreeMap::new(),
            proxy: None,
            checkin_interval_secs: 60,
            inactive_after_secs: 130,
            pending_actions: 0,
            site: Some("paris".into()),
        }
    }

    fn err(code: ErrorCode, at: OffsetDateTime) -> LastError {
        LastError {
            code,
            message: "m".into(),
            at,
        }
    }

    fn failing_with(mut a: AgentRecord, subsystem: &str, code: ErrorCode) -> AgentRecord {
        a.last_errors.insert(
            subsystem.to_owned(),
            err(code, datetime!(2026-12-08 09:12 UTC)),
        );
        a
    }

    fn silent(mut a: AgentRecord) -> AgentRecord {
        a.status = AgentStatus::Inactive;
        a.last_seen = Some(datetime!(2026-12-08 09:12 UTC));
        a
    }

    fn run(records: &[AgentRecord]) -> FleetDiagnosis {
        let views: Vec<AgentView> = records
            .iter()
            .map(|a| {
                let outdated = crate::status::compare_versions(&a.version, CURRENT)
                    == Some(std::cmp::Ordering::Less);
                AgentView::from_record(a, outdated)
            })
            .collect();
        diagnose(&views, NOW, CURRENT, false)
    }

    /// The first example: everything behind one proxy fails the
    /// same way, the same subnet without the proxy is fine.
    #[test]
    fn all_behind_a_proxy_is_network_with_the_healthy_contrast() {
        let mut fleet = Vec::new();
        for i in 0..14 {
            let mut a = record(&format!("p{i}"), &format!("10.2.0.{}", 10 + i));
            a.proxy = Some("http://10.2.0.5:3128".into());
            fleet.push(failing_with(a, "defs:main", ErrorCode::ProxyAuthFailed));
        }
        for i in 0..3 {
            fleet.push(record(&format!("d{i}"), &format!("10.2.0.{}", 100 + i)));
        }
        let d = run(&fleet);
        assert_eq!((d.judged, d.failing), (17, 14));
        assert_eq!(d.incidents.len(), 1, "{:#?}", d.incidents);
        let i = &d.incidents[0];
        assert_eq!(i.kind, IncidentKind::Network);
        assert_eq!(i.dimension, Dimension::Proxy);
        assert_eq!(i.value, "http://10.2.0.5:3128");
        assert_eq!((i.failing, i.total), (14, 14));
        assert_eq!(i.code.as_deref(), Some("TETHER-E3203"));
        assert_eq!(i.error_class, "proxy-auth");
        assert_eq!(i.since, Some(datetime!(2026-12-08 09:12 UTC)));
        assert_eq!(
            i.summary,
            "network: all 14 agents behind proxy http://10.2.0.5:3128 fail with proxy \
             authentication (TETHER-E3203) since 2026-12-08 09:12 UTC; 3 agents of the same \
             subnet without the proxy are fine"
        );
        assert_eq!(i.agents.len(), 14);
        assert!(
            d.hints
                .iter()
                .any(|h| h.kind == HintKind::SegmentFailing && h.count == 14),
            "{:#?}",
            d.hints
        );
    }

    /// The second example: one agent of forty in a subnet fails,
    /// and its reported times show its clock two hours ahead.
    #[test]
    fn one_of_forty_is_configuration_with_the_clock_named() {
        let mut fleet: Vec<AgentRecord> = (0..39)
            .map(|i| record(&format!("a{i}"), &format!("10.4.1.{}", i + 1)))
            .collect();
        let mut skewed = record("skewed", "10.4.1.200");
        skewed.last_seen = Some(datetime!(2026-12-08 09:58 UTC));
        skewed.defs = vec![ChannelState {
            channel: "main".into(),
            version: Some(3),
            sha256: None,
            updated_at: None,
            method: None,
            last_attempt_at: Some(datetime!(2026-12-08 11:58 UTC)),
            last_error: Some(err(
                ErrorCode::DefsMetadataExpired,
                datetime!(2026-12-08 11:58 UTC),
            )),
            consecutive_failures: 1,
            server: None,
            via_proxy: None,
        }];
        fleet.push(skewed);
        let d = run(&fleet);
        assert_eq!(d.incidents.len(), 1, "{:#?}", d.incidents);
        assert_eq!(d.incidents[0].kind, IncidentKind::Configuration);
        let i = &d.incidents[0];
        assert_eq!(i.dimension, Dimension::Subnet);
        assert_eq!(i.value, "10.4.1.0/24");
        assert_eq!((i.failing, i.total), (1, 40));
        assert_eq!(i.detail.as_deref(), Some("clock 2 h ahead"));
        assert_eq!(i.error_class, "definitions");
        assert!(
            i.summary.starts_with(
                "configuration: 1 agent of 40 in 10.4.1.0/24 fails with definitions (TETHER-E6"
            ) && i
                .summary
                .ends_with(": clock 2 h ahead; 39 agents of subnet 10.4.1.0/24 are fine"),
            "{}",
            i.summary
        );
        assert!(
            !d.hints.iter().any(|h| h.kind == HintKind::NoSite),
            "every agent has its site: {:#?}",
            d.hints
        );
    }

    #[test]
    fn silent_agents_behind_a_dead_proxy_are_network_and_say_silent() {
        let mut fleet = Vec::new();
        for i in 0..3 {
            let mut a = record(&format!("p{i}"), "192.168.7.10");
            a.proxy = Some("http://192.168.7.1:3128".into());
            fleet.push(silent(a));
        }
        for i in 0..2 {
            fleet.push(record(&format!("d{i}"), "192.168.7.11"));
        }
        let d = run(&fleet);
        assert_eq!(d.incidents.len(), 1, "{:#?}", d.incidents);
        let i = &d.incidents[0];
        assert_eq!(
            (
                i.kind,
                i.dimension,
                i.error_class.as_str(),
                i.code.as_deref()
            ),
            (IncidentKind::Network, Dimension::Proxy, "silent", None)
        );
        assert_eq!(
            i.summary,
            "network: all 3 agents behind proxy http://192.168.7.1:3128 went silent (last \
             check-in 2026-12-08 09:12 UTC); 2 agents of the same subnet without the proxy \
             are fine"
        );
    }

    #[test]
    fn one_silent_behind_a_proxy_its_peers_use_is_configuration() {
        let mut fleet = Vec::new();
        for i in 0..4 {
            let mut a = record(&format!("p{i}"), "192.168.7.10");
            a.proxy = Some("http://192.168.7.1:3128".into());
            a.site = None;
            fleet.push(if i == 0 { silent(a) } else { a });
        }
        let d = run(&fleet);
        assert_eq!(d.incidents.len(), 1, "{:#?}", d.incidents);
        let i = &d.incidents[0];
        assert_eq!(i.kind, IncidentKind::Configuration);
        assert_eq!((i.failing, i.total), (1, 4));
        assert!(
            i.contrast
                .as_deref()
                .unwrap_or("")
                .starts_with("3 agents of "),
            "{i:#?}"
        );
    }

    #[test]
    fn most_of_the_fleet_across_paths_is_the_server() {
        let fleet: Vec<AgentRecord> = (0..10)
            .map(|i| {
                let mut a = record(&format!("a{i}"), &format!("10.{i}.0.1"));
                a.external_ip = Some(format!("203.0.113.{i}"));
                a.site = None;
                failing_with(a, "tasks", ErrorCode::HttpBackendDown)
            })
            .collect();
        let d = run(&fleet);
        assert_eq!(d.incidents.len(), 1, "{:#?}", d.incidents);
        assert_eq!(d.incidents[0].kind, IncidentKind::Server);
        assert_eq!(d.incidents[0].dimension, Dimension::Fleet);
        assert!(
            d.incidents[0]
                .summary
                .starts_with("server: all 10 agents in the fleet fail with http (TETHER-E3406)")
        );
    }

    #[test]
    fn a_lone_agent_with_no_peer_is_configuration_without_contrast() {
        let mut a = record("alone", "10.9.9.9");
        a.site = None;
        a.external_ip = None;
        let mut b = record("other", "10.8.8.8");
        b.site = None;
        b.external_ip = None;
        let d = run(&[failing_with(a, "defs:main", ErrorCode::DnsNxDomain), b]);
        assert_eq!(d.incidents.len(), 1);
        let i = &d.incidents[0];
        assert_eq!(
            (i.kind, i.dimension),
            (IncidentKind::Configuration, Dimension::Unknown)
        );
        assert_eq!(i.error_class, "dns");
        assert!(i.contrast.is_none());
    }

    #[test]
    fn a_past_checkin_error_on_an_agent_that_checks_in_is_not_a_failure() {
        let a = failing_with(
            record("a", "10.0.0.1"),
            "checkin",
            ErrorCode::ConnectTimeout,
        );
        let d = run(&[a]);
        assert_eq!(d.failing, 0);
        assert!(d.incidents.is_empty());
    }

    #[test]
    fn two_failures_in_one_subnet_are_two_incidents() {
        let mut fleet = Vec::new();
        for i in 0..3 {
            fleet.push(failing_with(
                record(&format!("t{i}"), "10.1.1.1"),
                "defs:main",
                ErrorCode::TlsUnknownIssuer,
            ));
        }
        for i in 0..3 {
            let mut a = record(&format!("p{i}"), "10.1.1.2");
            a.proxy = Some("http://10.1.1.254:8080".into());
            fleet.push(failing_with(a, "defs:main", ErrorCode::ProxyUnreachable));
        }
        for i in 0..10 {
            fleet.push(record(&format!("h{i}"), "10.2.2.2"));
        }
        let d = run(&fleet);
        let codes: BTreeSet<_> = d.incidents.iter().filter_map(|i| i.code.clone()).collect();
        assert_eq!(d.incidents.len(), 2, "{:#?}", d.incidents);
        assert!(codes.contains("TETHER-E3305") && codes.contains("TETHER-E3201"));
        assert!(d.incidents.iter().all(|i| i.kind == IncidentKind::Network));
    }

    #[test]
    fn pending_and_stopped_agents_are_not_judged() {
        let mut p = record("p", "10.0.0.1");
        p.status = AgentStatus::Pending;
        let mut s = record("s", "10.0.0.2");
        s.status = AgentStatus::Stopped;
        let d = run(&[p, s]);
        assert_eq!((d.agents_read, d.judged, d.failing), (2, 0, 0));
        assert!(d.incidents.is_empty());
    }

    #[test]
    fn outdated_versions_and_missing_sites_are_hinted() {
        let mut old = record("old", "10.0.0.1");
        old.version = "1.3.9".into();
        let mut nosite = record("nosite", "10.0.0.2");
        nosite.site = Some(String::new());
        let d = run(&[old, nosite, record("fine", "10.0.0.3")]);
        let outdated = d
            .hints
            .iter()
            .find(|h| h.kind == HintKind::VersionOutdated)
            .expect("an outdated hint");
        assert_eq!(outdated.count, 1);
        assert_eq!(outdated.agents[0].name, "old");
        let nosite = d
            .hints
            .iter()
            .find(|h| h.kind == HintKind::NoSite)
            .expect("a site hint");
        assert_eq!(nosite.count, 1, "an empty label is no label");
    }

    #[test]
    fn hostile_addresses_and_labels_neither_panic_nor_group() {
        let huge = "x".repeat(100_000);
        let garbage = [
            "not-an-ip",
            "999.1.1.1",
            "",
            "::",
            "0.0.0.0",
            "1.2.3",
            "10.0.0.5/16",
            "fe80::1%eth0",
            "2001:db8:1:2:3:4:5:6",
            "\u{1b}[31m10.0.0.1",
            "💥",
            huge.as_str(),
        ];
        let mut fleet = Vec::new();
        for (i, ip) in garbage.iter().enumerate() {
            let mut a = record(&huge, ip);
            a.facts.internal_ips = vec![ip.to_string(); 1000];
            a.site = Some(format!("{huge}{i}"));
            a.proxy = Some(huge.clone());
            a.external_ip = Some("é".repeat(10_000));
            fleet.push(silent(a));
        }
        let d = run(&fleet);
        assert_eq!(d.failing, garbage.len() as u64);
        for i in &d.incidents {
            assert!(
                i.value.chars().count() <= MAX_VALUE_CHARS + 1,
                "{}",
                i.value.len()
            );
            assert!(i.agents.len() <= MAX_NAMED);
            for a in &i.agents {
                assert!(a.name.chars().count() <= MAX_VALUE_CHARS + 1);
            }
        }
        assert_eq!(subnet("10.0.0.5/16").as_deref(), Some("10.0.0.0/24"));
        assert_eq!(subnet("fe80::1%eth0").as_deref(), Some("fe80::/64"));
        assert_eq!(
            subnet("2001:db8:1:2:3:4:5:6").as_deref(),
            Some("2001:db8:1:2::/64")
        );
        for bad in [
            "not-an-ip",
            "999.1.1.1",
            "",
            "::",
            "0.0.0.0",
            "1.2.3",
            "💥",
            huge.as_str(),
        ] {
            assert_eq!(subnet(bad), None, "{bad:.20}");
        }
        // Every agent shares the (clipped) proxy: one network incident.
        assert_eq!(d.incidents.len(), 1, "{:#?}", d.incidents.len());
        assert_eq!(d.incidents[0].dimension, Dimension::Proxy);
    }

    #[test]
    fn the_error_classes_follow_the_catalog_families() {
        for (code, class) in [
            (ErrorCode::DnsNxDomain, "dns"),
            (ErrorCode::ConnectRefused, "connect"),
            (ErrorCode::ProxyUnreachable, "proxy"),
            (ErrorCode::ProxyAuthRequired, "proxy-auth"),
            (ErrorCode::ProxyAuthFailed, "proxy-auth"),
            (ErrorCode::TlsUnknownIssuer, "tls"),
            (ErrorCode::TlsCertExpired, "clock-or-certificate"),
            (ErrorCode::ClockSkew, "clock"),
            (ErrorCode::HttpTimeout, "http"),
            (ErrorCode::AgentCredentialRejected, "credential"),
            (ErrorCode::DefsMetadataExpired, "definitions"),
            (ErrorCode::ConfigInvalid, "local"),
        ] {
            assert_eq!(error_class(code.as_str()), class, "{code:?}");
        }
        for odd in [
            "",
            "TETHER-E",
            "TETHER-Exyz1",
            "E3203",
            "TETHER-E99999",
            "TETHER-É320",
        ] {
            let _ = error_class(odd);
        }
        assert_eq!(error_class("TETHER-E3299"), "proxy");
        assert_eq!(error_class("garbage"), "other");
    }

    /// A hundred thousand agents: 1,000 subnets of 100; the 300 agents
    /// behind one proxy all fail, 50 agents scattered over 50 subnets went
    /// silent. Every count comes from one index, so this stays linear.
    #[test]
    fn a_hundred_thousand_agents_are_diagnosed_from_one_index() {
        let mut fleet = Vec::with_capacity(100_000);
        for i in 0..100_000u32 {
            let mut a = record(
                &format!("a{i}"),
                &format!("10.{}.{}.{}", i / 25_600, (i / 100) % 256, i % 100),
            );
            a.site = None;
            a.external_ip = Some(format!("203.0.113.{}", i % 200));
            if i < 300 {
                a.proxy = Some("http://10.9.9.9:3128".into());
                a = failing_with(a, "defs:main", ErrorCode::ProxyAuthFailed);
            } else if i % 2000 == 1000 {
                a = silent(a);
            }
            fleet.push(a);
        }
        let started = std::time::SystemTime::now();
        let d = run(&fleet);
        let took = started.elapsed().unwrap_or_default();
        eprintln!("diagnosis of {} agents: {took:?}", fleet.len());
        assert_eq!((d.judged, d.failing), (100_000, 350));
        let network: Vec<_> = d
            .incidents
            .iter()
            .filter(|i| i.kind == IncidentKind::Network)
            .collect();
        assert_eq!(network.len(), 1, "{network:#?}");
        assert_eq!(
            (network[0].dimension, network[0].failing),
            (Dimension::Proxy, 300)
        );
        let configuration: u64 = d
            .incidents
            .iter()
            .filter(|i| i.kind == IncidentKind::Configuration)
            .map(|i| i.failing)
            .sum();
        assert_eq!(configuration, 50);
    }

    proptest::proptest! {
        /// Whatever an agent writes as its addresses, labels and proxy, the
        /// subnet is a /24 or /64 of a parsed address or nothing, and the
        /// diagnosis neither panics nor shows a value past its cut.
        #[test]
        fn any_agent_text_is_grouped_safely(
            ips in proptest::collection::vec(".{0,80}", 0..20),
            site in proptest::option::of(".{0,300}"),
            proxy in proptest::option::of(".{0,300}"),
            code in ".{0,20}",
        ) {
            for ip in &ips {
                if let Some(net) = subnet(ip) {
                    proptest::prop_assert!(net.ends_with("/24") || net.ends_with("/64"), "{net}");
                }
            }
            let _ = error_class(&code);
            let mut fleet = Vec::new();
            for i in 0..4 {
                let mut a = record(&format!("a{i}"), "10.0.0.1");
                a.facts.internal_ips = ips.clone();
                a.site = site.clone();
                a.proxy = proxy.clone();
                fleet.push(if i % 2 == 0 { silent(a) } else { a });
            }
            let d = run(&fleet);
            proptest::prop_assert_eq!(d.failing, 2);
            for i in &d.incidents {
                proptest::prop_assert!(i.value.chars().count() <= MAX_VALUE_CHARS + 1);
            }
        }
    }

    #[test]
    fn an_empty_fleet_has_no_incident() {
        let d = diagnose(&[], NOW, CURRENT, true);
        assert!(d.incidents.is_empty() && d.hints.is_empty() && d.truncated);
    }
}
