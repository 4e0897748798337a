//! The discovery spec as a person (or the task queue) writes it, and the
//! validated [`Plan`] the scanner runs.
//!
//! Parse, don't validate: [`DiscoverSpec::plan`] turns JSON-shaped input
//! into a [`Plan`] whose every value is in range, or refuses it with a
//! [`SpecError`] that names the field, what was seen, what is accepted and a
//! stable code. Targets are never expanded into a list: a plan holds ranges
//! and walks them lazily ([`Plan::endpoints`]), so memory does not grow with
//! the size of a scan.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tether_tasks::window::Window;
use tether_wire::{AllowedHours, ErrorCode};

/// The most addresses one scan may cover (an IPv4 /16).
pub const MAX_ADDRESSES: u64 = 65_536;
/// The most distinct ports one scan may probe.
pub const MAX_PORTS: usize = 1_024;
/// The most host-name targets one scan may hold.
pub const MAX_NAMES: usize = 1_024;
/// The most target entries (CIDRs, ranges, addresses and names together).
pub const MAX_TARGET_ENTRIES: usize = 4_096;
/// The most endpoints (address × port × SNI) one scan may probe.
pub const MAX_ENDPOINTS: u64 = 1_048_576;
/// The most explicit SNI names for one address.
pub const MAX_SNI_PER_ADDRESS: usize = 16;
/// The most addresses one host name may resolve to that are scanned.
pub const MAX_ADDRS_PER_NAME: usize = 16;
/// Bounds of concurrent probes.
pub const MAX_CONCURRENCY: usize = 1_024;
/// Bounds of the per-host rate (new connections per second).
pub const MAX_RATE_PER_HOST: u32 = 1_000;
/// Bounds of every timeout, in milliseconds.
pub const MIN_TIMEOUT_MS: u64 = 100;
pub const MAX_TIMEOUT_MS: u64 = 60_000;

/// A spec the scanner refuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: spec field {field}: got {observed}; expected {expected}")]
pub struct SpecError {
    /// [`ErrorCode::ScanSpecInvalid`], [`ErrorCode::ScanSpecTooLarge`] or
    /// [`ErrorCode::ScanTargetsEmpty`].
    pub code: ErrorCode,
    pub field: String,
    pub observed: String,
    pub expected: String,
}

impl SpecError {
    fn invalid(field: &str, observed: impl Into<String>, expected: impl Into<String>) -> Self {
        SpecError {
            code: ErrorCode::ScanSpecInvalid,
            field: field.to_owned(),
            observed: clip(&observed.into()),
            expected: expected.into(),
        }
    }

    fn too_large(field: &str, observed: impl Into<String>, expected: impl Into<String>) -> Self {
        SpecError {
            code: ErrorCode::ScanSpecTooLarge,
            ..SpecError::invalid(field, observed, expected)
        }
    }
}

/// Hostile input is echoed in messages: at most 80 characters of it.
fn clip(s: &str) -> String {
    if s.chars().count() <= 80 {
        s.to_owned()
    } else {
        format!("{}…", s.chars().take(80).collect::<String>())
    }
}

/// A port, or a range of ports written `"8000-8100"`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum PortSpec {
    One(u32),
    Text(String),
}

/// Which TLS server name (SNI) to send to an address.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SniMode {
    /// A host-name target's own name; none for addresses (unless
    /// `sni_names` lists some).
    #[default]
    Auto,
    /// The name from the address's reverse DNS (PTR) record, none when it
    /// has none.
    ReverseDns,
    /// Never send SNI (explicit `sni_names` still apply).
    None,
}

/// The protocols whose STARTTLS upgrade the scanner speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Starttls {
    Smtp,
    Imap,
    Pop3,
    Ldap,
    Postgres,
}

impl Starttls {
    pub fn as_str(self) -> &'static str {
        match self {
            Starttls::Smtp => "smtp",
            Starttls::Imap => "imap",
            Starttls::Pop3 => "pop3",
            Starttls::Ldap => "ldap",
            Starttls::Postgres => "postgres",
        }
    }

    /// The protocol usually served in clear text with a STARTTLS upgrade on
    /// this port.
    pub fn well_known(port: u16) -> Option<Starttls> {
        match port {
            25 | 587 => Some(Starttls::Smtp),
            143 => Some(Starttls::Imap),
            110 => Some(Starttls::Pop3),
            389 => Some(Starttls::Ldap),
            5432 => Some(Starttls::Postgres),
            _ => None,
        }
    }
}

/// `starttls` values: a protocol, or `"none"` to turn a well-known port's
/// default off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StarttlsSetting {
    Smtp,
    Imap,
    Pop3,
    Ldap,
    Postgres,
    None,
}

impl StarttlsSetting {
    fn protocol(self) -> Option<Starttls> {
        match self {
            StarttlsSetting::Smtp => Some(Starttls::Smtp),
            StarttlsSetting::Imap => Some(Starttls::Imap),
            StarttlsSetting::Pop3 => Some(Starttls::Pop3),
            StarttlsSetting::Ldap => Some(Starttls::Ldap),
            StarttlsSetting::Postgres => Some(Starttls::Postgres),
            StarttlsSetting::None => None,
        }
    }
}

/// The discovery spec, as JSON (`tether tasks create --kind discover
/// --spec …`) or as `tether scan run` flags.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiscoverSpec {
    /// CIDRs (`10.0.0.0/24`), ranges (`10.0.0.1-10.0.0.50` or
    /// `10.0.0.1-50`), addresses and host names.
    pub targets: Vec<String>,
    /// Ports and port ranges (`443`, `"8000-8100"`).
    pub ports: Vec<PortSpec>,
    /// How the SNI name of an address is chosen.
    #[serde(default)]
    pub sni: SniMode,
    /// Explicit SNI names per address: each name is probed separately.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub sni_names: BTreeMap<String, Vec<String>>,
    /// STARTTLS per port, on top of the well-known ports' defaults (25 and
    /// 587 SMTP, 143 IMAP, 110 POP3, 389 LDAP, 5432 PostgreSQL).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub starttls: BTreeMap<String, StarttlsSetting>,
    /// Probes in flight at once (default 64).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<usize>,
    /// New connections per second to any one address (default 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_per_host: Option<u32>,
    /// TCP connect limit in ms (default 3000); a silent port is filtered
    /// after it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect_timeout_ms: Option<u64>,
    /// Limit in ms on STARTTLS plus the TLS handshake (default 5000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handshake_timeout_ms: Option<u64>,
    /// Wait the whole `connect_timeout_ms` on every silent port instead of
    /// a limit derived from the scan's round trips (`tether_scan::rtt`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub fixed_connect_timeout: bool,
    /// Local hours during which probes may start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_hours: Option<AllowedHours>,
    /// The IANA zone of `allowed_hours` (default UTC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tz: Option<String>,
}

/// An inclusive run of addresses of one family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddrRange {
    first: u128,
    last: u128,
    v6: bool,
}

impl AddrRange {
    fn len(&self) -> u64 {
        u64::try_from(self.last - self.first).map_or(u64::MAX, |n| n.saturating_add(1))
    }

    fn nth(&self, i: u64) -> IpAddr {
        let n = self.first + u128::from(i);
        if self.v6 {
            IpAddr::V6(Ipv6Addr::from(n))
        } else {
            // A v4 range holds values below 2^32 by construction.
            IpAddr::V4(Ipv4Addr::from(u32::try_from(n).unwrap_or(u32::MAX)))
        }
    }
}

/// A validated spec.
#[derive(Debug, Clone)]
pub struct Plan {
    ranges: Vec<AddrRange>,
    names: Vec<String>,
    ports: Vec<u16>,
    sni: SniMode,
    sni_names: BTreeMap<IpAddr, Vec<String>>,
    starttls: BTreeMap<u16, Starttls>,
    pub concurrency: usize,
    pub rate_per_host: u32,
    pub connect_timeout: Duration,
    /// Whether the connect limit adapts to the scan's round trips.
    pub adaptive_connect_timeout: bool,
    pub handshake_timeout: Duration,
    pub window: Option<Window>,
    addresses: u64,
}

/// One thing to probe: an address, a port and the SNI to send.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    pub ip: IpAddr,
    pub port: u16,
    /// The SNI name to send; `None` sends none. With
    /// [`SniMode::ReverseDns`] it is filled in at probe time.
    pub sni: Option<String>,
    /// The host-name target this address came from, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub starttls: Option<Starttls>,
    /// Look the SNI name up in reverse DNS before probing.
    #[serde(skip)]
    pub reverse_dns: bool,
}

impl DiscoverSpec {
    /// Parses a spec from JSON, refusing unknown fields.
    pub fn from_json(value: &serde_json::Value) -> Result<DiscoverSpec, SpecError> {
        serde_json::from_value(value.clone()).map_err(|e| {
            SpecError::invalid(
                "spec",
                e.to_string(),
                "the discovery spec (targets, ports, …)",
            )
        })
    }

    /// Checks every field and every limit.
    pub fn plan(&self) -> Result<Plan, SpecError> {
        if self.targets.is_empty() {
            return Err(SpecError {
                code: ErrorCode::ScanTargetsEmpty,
                ..SpecError::invalid("targets", "an empty list", "at least one target")
            });
        }
        if self.ports.is_empty() {
            return Err(SpecError {
                code: ErrorCode::ScanTargetsEmpty,
                ..SpecError::invalid("ports", "an empty list", "at least one port")
            });
        }
        if self.targets.len() > MAX_TARGET_ENTRIES {
            return Err(SpecError::too_large(
                "targets",
                format!("{} entries", self.targets.len()),
                format!("at most {MAX_TARGET_ENTRIES} entries"),
            ));
        }
        let mut ranges = Vec::new();
        let mut names = Vec::new();
        let mut addresses: u64 = 0;
        for t in &self.targets {
            match parse_target(t)? {
                Target::Range(r) => {
                    addresses = addresses.saturating_add(r.len());
                    if addresses > MAX_ADDRESSES {
                        return Err(SpecError::too_large(
                            "targets",
                            format!("{addresses} addresses or more (at {t:?})"),
                            format!("at most {MAX_ADDRESSES} addresses (an IPv4 /16)"),
                        ));
                    }
                    ranges.push(r);
                }
                Target::Name(n) => {
                    if !names.contains(&n) {
                        names.push(n);
                    }
                    if names.len() > MAX_NAMES {
                        return Err(SpecError::too_large(
                            "targets",
                            format!("more than {MAX_NAMES} host names"),
                            format!("at most {MAX_NAMES} host names"),
                        ));
                    }
                }
            }
        }
        let ports = parse_ports(&self.ports)?;
        let mut sni_names = BTreeMap::new();
        for (addr, list) in &self.sni_names {
            let ip: IpAddr = addr.parse().map_err(|_| {
                SpecError::invalid("sni_names", addr.as_str(), "an IP address as each key")
            })?;
            if list.is_empty() || list.len() > MAX_SNI_PER_ADDRESS {
                return Err(SpecError::too_large(
                    "sni_names",
                    format!("{} names for {addr}", list.len()),
                    format!("1 to {MAX_SNI_PER_ADDRESS} names per address"),
                ));
            }
            let mut checked = Vec::with_capacity(list.len());
            for n in list {
                checked.push(host_name(n).ok_or_else(|| {
                    SpecError::invalid("sni_names", n.as_str(), "DNS host names")
                })?);
            }
            sni_names.insert(ip, checked);
        }
        let mut starttls: BTreeMap<u16, Starttls> = ports
            .iter()
            .filter_map(|p| Starttls::well_known(*p).map(|s| (*p, s)))
            .collect();
        for (port, setting) in &self.starttls {
            let p: u16 = port.parse().ok().filter(|p| *p != 0).ok_or_else(|| {
                SpecError::invalid("starttls", port.as_str(), "port numbers 1-65535 as keys")
            })?;
            match setting.protocol() {
                Some(proto) => starttls.insert(p, proto),
                None => starttls.remove(&p),
            };
        }
        // Every address is probed once per port, plus once more per
        // explicit SNI name beyond the first; every host name counts once
        // per port for each address it may resolve to.
        let extra_sni: u64 = sni_names
            .values()
            .map(|v| v.len().saturating_sub(1) as u64)
            .sum();
        let per_port = addresses
            .saturating_add(extra_sni)
            .saturating_add((names.len() * MAX_ADDRS_PER_NAME) as u64);
        let endpoints = per_port.saturating_mul(ports.len() as u64);
        if endpoints > MAX_ENDPOINTS {
            return Err(SpecError::too_large(
                "targets × ports",
                format!(
                    "up to {endpoints} endpoints ({addresses} addresses, {} host names × {MAX_ADDRS_PER_NAME} addresses each, {} ports)",
                    names.len(),
                    ports.len()
                ),
                format!("at most {MAX_ENDPOINTS} endpoints"),
            ));
        }
        let concurrency = bounded(
            "concurrency",
            self.concurrency.map(|c| c as u64),
            64,
            1,
            MAX_CONCURRENCY as u64,
        )? as usize;
        let rate_per_host = bounded(
            "rate_per_host",
            self.rate_per_host.map(u64::from),
            10,
            1,
            u64::from(MAX_RATE_PER_HOST),
        )? as u32;
        let connect_ms = bounded(
            "connect_timeout_ms",
            self.connect_timeout_ms,
            3_000,
            MIN_TIMEOUT_MS,
            MAX_TIMEOUT_MS,
        )?;
        let handshake_ms = bounded(
            "handshake_timeout_ms",
            self.handshake_timeout_ms,
            5_000,
            MIN_TIMEOUT_MS,
            MAX_TIMEOUT_MS,
        )?;
        let window = match &self.allowed_hours {
            Some(hours) => Some(
                Window::parse(hours, self.tz.as_deref().unwrap_or("UTC"))
                    .map_err(|e| SpecError::invalid(&e.field, e.observed, e.expected))?,
            ),
            None if self.tz.is_some() => {
                return Err(SpecError::invalid(
                    "tz",
                    "a zone without allowed_hours",
                    "tz only with allowed_hours",
                ));
            }
            None => None,
        };
        Ok(Plan {
            ranges,
            names,
            ports,
            sni: self.sni,
            sni_names,
            starttls,
            concurrency,
            rate_per_host,
            connect_timeout: Duration::from_millis(connect_ms),
            adaptive_connect_timeout: !self.fixed_connect_timeout,
            handshake_timeout: Duration::from_millis(handshake_ms),
            window,
            addresses,
        })
    }
}

fn bounded(
    field: &str,
    v: Option<u64>,
    default: u64,
    min: u64,
    max: u64,
) -> Result<u64, SpecError> {
    match v {
        None => Ok(default),
        Some(v) if (min..=max).contains(&v) => Ok(v),
        Some(v) => Err(SpecError::too_large(
            field,
            v.to_string(),
            format!("{min} to {max}"),
        )),
    }
}

enum Target {
    Range(AddrRange),
    Name(String),
}

fn ip_value(ip: IpAddr) -> (u128, bool) {
    match ip {
        IpAddr::V4(v4) => (u128::from(u32::from(v4)), false),
        IpAddr::V6(v6) => (u128::from(v6), true),
    }
}

fn parse_target(raw: &str) -> Result<Target, SpecError> {
    let t = raw.trim();
    let bad = |why: &str| SpecError::invalid("targets", raw, why);
    if t.is_empty() {
        return Err(bad("a CIDR, a range, an address or a host name"));
    }
    if let Some((net, prefix)) = t.split_once('/') {
        let ip: IpAddr = net.parse().map_err(|_| bad("a CIDR such as 10.0.0.0/24"))?;
        let prefix: u32 = prefix.parse().map_err(|_| bad("a CIDR prefix length"))?;
        let (value, v6) = ip_value(ip);
        let bits = if v6 { 128 } else { 32 };
        if prefix > bits {
            return Err(bad(&format!("a prefix length of at most {bits}")));
        }
        let host_bits = bits - prefix;
        // 2^16 addresses is the largest scan; anything wider is refused
        // before any arithmetic could overflow (a /0 of IPv6 is 2^128).
        if host_bits > 16 {
            return Err(SpecError::too_large(
                "targets",
                format!("{t} (2^{host_bits} addresses)"),
                format!(
                    "a prefix of at least /{} (at most {MAX_ADDRESSES} addresses)",
                    bits - 16
                ),
            ));
        }
        let size = 1u128 << host_bits;
        let first = value & !(size - 1);
        return Ok(Target::Range(AddrRange {
            first,
            last: first + size - 1,
            v6,
        }));
    }
    if let Ok(ip) = t.parse::<IpAddr>() {
        let (value, v6) = ip_value(ip);
        return Ok(Target::Range(AddrRange {
            first: value,
            last: value,
            v6,
        }));
    }
    if let Some((a, b)) = t.split_once('-')
        && let Ok(start) = a.trim().parse::<IpAddr>()
    {
        let end: IpAddr = match b.trim().parse::<IpAddr>() {
            Ok(ip) => ip,
            // `10.0.0.1-50`: the last octet of an IPv4 range.
            Err(_) => match (start, b.trim().parse::<u8>()) {
                (IpAddr::V4(s), Ok(last)) => {
                    let o = s.octets();
                    IpAddr::V4(Ipv4Addr::new(o[0], o[1], o[2], last))
                }
                _ => return Err(bad("a range such as 10.0.0.1-10.0.0.50 or 10.0.0.1-50")),
            },
        };
        let (first, v6) = ip_value(start);
        let (last, v6_end) = ip_value(end);
        if v6 != v6_end {
            return Err(bad("both ends of a range in the same address family"));
        }
        if last < first {
            return Err(bad("a range whose end is not before its start"));
        }
        if last - first >= u128::from(MAX_ADDRESSES) {
            return Err(SpecError::too_large(
                "targets",
                format!("{t} ({} addresses or more)", MAX_ADDRESSES + 1),
                format!("at most {MAX_ADDRESSES} addresses"),
            ));
        }
        return Ok(Target::Range(AddrRange { first, last, v6 }));
    }
    host_name(t)
        .map(Target::Name)
        .ok_or_else(|| bad("a CIDR, a range, an address or a DNS host name"))
}

/// A DNS host name (letters, digits, '-', '_' and dots, at most 253
/// characters, labels of at most 63), lower-cased.
fn host_name(s: &str) -> Option<String> {
    let s = s.trim().trim_end_matches('.');
    let ok = !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
        // A name made of digits and dots would be read as an address.
        && !s.bytes().all(|b| b.is_ascii_digit() || b == b'.');
    ok.then(|| s.to_ascii_lowercase())
}

fn parse_ports(specs: &[PortSpec]) -> Result<Vec<u16>, SpecError> {
    let mut ports: Vec<u16> = Vec::new();
    let port = |v: &str| -> Result<u16, SpecError> {
        v.trim()
            .parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| SpecError::invalid("ports", v, "ports 1-65535"))
    };
    for spec in specs {
        let (a, b) = match spec {
            PortSpec::One(n) => {
                let p = u16::try_from(*n)
                    .ok()
                    .filter(|p| *p != 0)
                    .ok_or_else(|| SpecError::invalid("ports", n.to_string(), "ports 1-65535"))?;
                (p, p)
            }
            PortSpec::Text(t) => match t.split_once('-') {
                Some((a, b)) => (port(a)?, port(b)?),
                None => {
                    let p = port(t)?;
                    (p, p)
                }
            },
        };
        if b < a {
            return Err(SpecError::invalid(
                "ports",
                format!("{a}-{b}"),
                "a range whose end is not before its start",
            ));
        }
        if usize::from(b - a) >= MAX_PORTS || ports.len() + usize::from(b - a) >= MAX_PORTS * 2 {
            return Err(SpecError::too_large(
                "ports",
                format!("{a}-{b}"),
                format!("at most {MAX_PORTS} ports"),
            ));
        }
        ports.extend(a..=b);
    }
    ports.sort_unstable();
    ports.dedup();
    if ports.len() > MAX_PORTS {
        return Err(SpecError::too_large(
            "ports",
            format!("{} ports", ports.len()),
            format!("at most {MAX_PORTS} ports"),
        ));
    }
    Ok(ports)
}

impl Plan {
    /// The number of endpoints the plan probes before host names resolve
    /// (each name counts once per port), for progress bars.
    pub fn estimated_endpoints(&self) -> u64 {
        let extra_sni: u64 = self
            .sni_names
            .values()
            .map(|v| v.len().saturating_sub(1) as u64)
            .sum();
        (self.addresses + extra_sni + self.names.len() as u64) * self.ports.len() as u64
    }

    /// The host-name targets, to be resolved before probing.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    pub fn ports(&self) -> &[u16] {
        &self.ports
    }

    /// The STARTTLS protocol spoken on a port, if any.
    pub fn starttls(&self, port: u16) -> Option<Starttls> {
        self.starttls.get(&port).copied()
    }

    /// Every address endpoint, port by port (so consecutive probes go to
    /// different hosts), generated lazily.
    pub fn endpoints(&self) -> impl Iterator<Item = Endpoint> + '_ {
        self.ports.iter().flat_map(move |&port| {
            self.ranges.iter().flat_map(move |r| {
                (0..r.len()).flat_map(move |i| self.address_endpoints(r.nth(i), port, None))
            })
        })
    }

    /// The endpoints of one address and port: one per SNI name.
    pub fn address_endpoints(&self, ip: IpAddr, port: u16, name: Option<&str>) -> Vec<Endpoint> {
        let base = Endpoint {
            ip,
            port,
            sni: None,
            name: name.map(str::to_owned),
            starttls: self.starttls(port),
            reverse_dns: false,
        };
        if let Some(list) = self.sni_names.get(&ip) {
            return list
                .iter()
                .map(|n| Endpoint {
                    sni: Some(n.clone()),
                    ..base.clone()
                })
                .collect();
        }
        let ep = match (self.sni, name) {
            (SniMode::None, _) => base,
            (SniMode::Auto, Some(n)) => Endpoint {
                sni: Some(n.to_owned()),
                ..base
            },
            (SniMode::Auto, None) => base,
            (SniMode::ReverseDns, _) => Endpoint {
                reverse_dns: true,
                ..base
            },
        };
        vec![ep]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn plan(v: serde_json::Value) -> Result<Plan, SpecError> {
        DiscoverSpec::from_json(&v)?.plan()
    }

    #[test]
    fn targets_expand_cidrs_ranges_and_addresses_lazily() {
        let p = plan(json!({
            "targets": ["10.0.0.0/30", "10.0.1.1-3", "192.168.0.9-192.168.0.10", "::1", "Host.Example."],
            "ports": [443, "8443"]
        }))
        .expect("valid");
        assert_eq!(p.ports(), &[443, 8443]);
        assert_eq!(p.names(), &["host.example".to_owned()]);
        let eps: Vec<_> = p.endpoints().collect();
        assert_eq!(eps.len(), (4 + 3 + 2 + 1) * 2);
        assert_eq!(eps[0].ip, "10.0.0.0".parse::<IpAddr>().expect("ip"));
        assert_eq!(eps[0].port, 443);
        assert_eq!(eps[9].ip, "::1".parse::<IpAddr>().expect("ip"));
        assert_eq!(eps[10].port, 8443);
        assert_eq!(p.estimated_endpoints(), 11 * 2);
    }

    #[test]
    fn hostile_sizes_are_refused_with_the_limit() {
        for (spec, field) in [
            (json!({"targets": ["0.0.0.0/0"], "ports": [443]}), "targets"),
            (json!({"targets": ["::/0"], "ports": [443]}), "targets"),
            (
                json!({"targets": ["10.0.0.0/15"], "ports": [443]}),
                "targets",
            ),
            (
                json!({"targets": ["10.0.0.0/16", "10.1.0.0/31"], "ports": [443]}),
                "targets",
            ),
            (
                json!({"targets": ["10.0.0.0-10.2.0.0"], "ports": [443]}),
                "targets",
            ),
            (
                json!({"targets": ["10.0.0.1"], "ports": ["1-65535"]}),
                "ports",
            ),
            (
                json!({"targets": ["10.0.0.0/16"], "ports": ["1-17"]}),
                "targets × ports",
            ),
            (
                json!({"targets": ["10.0.0.1"], "ports": [443], "concurrency": 100000}),
                "concurrency",
            ),
            (
                json!({"targets": ["10.0.0.1"], "ports": [443], "connect_timeout_ms": 0}),
                "connect_timeout_ms",
            ),
        ] {
            let e = plan(spec.clone()).expect_err("refused");
            assert_eq!(e.code, ErrorCode::ScanSpecTooLarge, "{spec}: {e}");
            assert_eq!(e.field, field, "{spec}: {e}");
            assert!(
                e.expected.contains("at most") || e.expected.contains(" to "),
                "{e}"
            );
        }
        let million: Vec<u32> = (1..=1_000_000).map(|i| i % 65_535 + 1).collect();
        let e = plan(json!({"targets": ["10.0.0.1"], "ports": million})).expect_err("refused");
        assert_eq!(e.code, ErrorCode::ScanSpecTooLarge, "{e}");
        let names: Vec<String> = (0..=MAX_NAMES).map(|i| format!("h{i}.example")).collect();
        let e = plan(json!({"targets": names, "ports": [443]})).expect_err("refused");
        assert_eq!(e.code, ErrorCode::ScanSpecTooLarge, "{e}");
    }

    #[test]
    fn empty_targets_or_ports_have_their_own_code() {
        let e = plan(json!({"targets": [], "ports": [443]})).expect_err("empty");
        assert_eq!(
            (e.code, e.field.as_str()),
            (ErrorCode::ScanTargetsEmpty, "targets")
        );
        let e = plan(json!({"targets": ["a.example"], "ports": []})).expect_err("empty");
        assert_eq!(
            (e.code, e.field.as_str()),
            (ErrorCode::ScanTargetsEmpty, "ports")
        );
    }

    #[test]
    fn malformed_fields_are_refused_by_name() {
        for (spec, field) in [
            (
                json!({"targets": ["10.0.0.0/33"], "ports": [443]}),
                "targets",
            ),
            (
                json!({"targets": ["10.0.0.9-10.0.0.1"], "ports": [443]}),
                "targets",
            ),
            (
                json!({"targets": ["10.0.0.1-::1"], "ports": [443]}),
                "targets",
            ),
            (json!({"targets": ["bad name!"], "ports": [443]}), "targets"),
            (json!({"targets": ["a.example"], "ports": [0]}), "ports"),
            (json!({"targets": ["a.example"], "ports": [70000]}), "ports"),
            (json!({"targets": ["a.example"], "ports": ["9-1"]}), "ports"),
            (
                json!({"targets": ["a.example"], "ports": [443], "sni_names": {"nope": ["x"]}}),
                "sni_names",
            ),
            (
                json!({"targets": ["a.example"], "ports": [443], "starttls": {"0": "smtp"}}),
                "starttls",
            ),
            (
                json!({"targets": ["a.example"], "ports": [443], "allowed_hours": {"from": "25:00", "to": "01:00"}}),
                "allowed_hours.from",
            ),
            (
                json!({"targets": ["a.example"], "ports": [443], "allowed_hours": {"from": "22:00", "to": "01:00"}, "tz": "Mars/Base"}),
                "tz",
            ),
            (
                json!({"targets": ["a.example"], "ports": [443], "tz": "UTC"}),
                "tz",
            ),
            (
                json!({"targets": ["a.example"], "ports": [443], "colour": 1}),
                "spec",
            ),
        ] {
            let e = plan(spec.clone()).expect_err("refused");
            assert_eq!(e.code, ErrorCode::ScanSpecInvalid, "{spec}: {e}");
            assert_eq!(e.field, field, "{spec}: {e}");
        }
        let long = "x".repeat(10_000);
        let e = plan(json!({"targets": [long], "ports": [443]})).expect_err("refused");
        assert!(e.observed.chars().count() <= 81, "echo is clipped: {e}");
    }

    #[test]
    fn sni_and_starttls_follow_the_spec() {
        let p = plan(json!({
            "targets": ["10.0.0.1", "10.0.0.2", "mail.example"],
            "ports": [25, 443, 389, 5432],
            "sni_names": {"10.0.0.2": ["a.example", "b.example"]},
            "starttls": {"443": "imap", "5432": "none"}
        }))
        .expect("valid");
        assert_eq!(p.starttls(25), Some(Starttls::Smtp));
        assert_eq!(p.starttls(389), Some(Starttls::Ldap));
        assert_eq!(p.starttls(443), Some(Starttls::Imap));
        assert_eq!(p.starttls(5432), None);
        let at = |ip: &str| -> Vec<Option<String>> {
            p.address_endpoints(ip.parse().expect("ip"), 443, None)
                .into_iter()
                .map(|e| e.sni)
                .collect()
        };
        assert_eq!(at("10.0.0.1"), vec![None]);
        assert_eq!(
            at("10.0.0.2"),
            vec![Some("a.example".to_owned()), Some("b.example".to_owned())]
        );
        let named = p.address_endpoints("10.9.9.9".parse().expect("ip"), 443, Some("mail.example"));
        assert_eq!(named[0].sni.as_deref(), Some("mail.example"));
        let p = plan(json!({"targets": ["10.0.0.1"], "ports": [443], "sni": "reverse_dns"}))
            .expect("valid");
        assert!(p.endpoints().all(|e| e.reverse_dns && e.sni.is_none()));
        let p =
            plan(json!({"targets": ["h.example"], "ports": [443], "sni": "none"})).expect("valid");
        let named = p.address_endpoints("10.9.9.9".parse().expect("ip"), 443, Some("h.example"));
        assert_eq!(named[0].sni, None);
    }

    #[test]
    fn defaults_and_allowed_hours() {
        let p = plan(json!({"targets": ["10.0.0.1"], "ports": [443]})).expect("valid");
        assert_eq!(p.concurrency, 64);
        assert_eq!(p.rate_per_host, 10);
        assert_eq!(p.connect_timeout, Duration::from_secs(3));
        assert_eq!(p.handshake_timeout, Duration::from_secs(5));
        assert!(p.window.is_none());
        let p = plan(json!({"targets": ["10.0.0.1"], "ports": [443],
            "allowed_hours": {"from": "22:00", "to": "04:00"}, "tz": "Europe/Paris"}))
        .expect("valid");
        assert!(
            p.window
                .expect("window")
                .describe()
                .contains("Europe/Paris")
        );
    }

    #[test]
    fn hostile_text_never_panics() {
        let fragments = [
            "/", "-", ":", ".", "0", "255", "ff", "::", "/0", "/128", "1", "x",
        ];
        let mut state = 7u64;
        for _ in 0..3000 {
            let mut s = String::new();
            for _ in 0..(state % 9) {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                s.push_str(fragments[(state >> 33) as usize % fragments.len()]);
            }
            let _ = plan(json!({"targets": [s.clone()], "ports": [s]}));
        }
    }
}
