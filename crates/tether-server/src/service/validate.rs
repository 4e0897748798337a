//! Checks on every value that arrives from outside. Each returns the value
//! (trimmed where that is the rule) or an [`ServiceError::InvalidField`] that
//! says what was seen and what is accepted.

use std::collections::BTreeMap;

use tether_wire::{HostFacts, LastError};

use super::ServiceError;

pub const MAX_NAME_CHARS: usize = 128;
pub const MAX_GROUP_CHARS: usize = 64;
pub const MIN_VALID_FOR_SECS: u64 = 60;
pub const MAX_VALID_FOR_SECS: u64 = 365 * 86_400;
pub const MAX_USES: u32 = 1_000_000;
pub const MIN_INTERVAL_SECS: u32 = 5;
pub const MAX_INTERVAL_SECS: u32 = 86_400;
pub const MAX_JITTER_PERCENT: u8 = 50;
/// How far in the future a token's window may start.
pub const MAX_NOT_BEFORE_AHEAD_SECS: i64 = 365 * 86_400;

const MAX_SHORT: usize = 256;
const MAX_IPS: usize = 64;
const MAX_MAP_ENTRIES: usize = 64;
const MAX_ERROR_MESSAGE: usize = 2048;
const MAX_PROXY: usize = 512;
/// How many `host:port` targets one policy may hold.
pub const MAX_TARGETS: usize = 64;
const MAX_HOST_CHARS: usize = 253;

/// Shows at most 40 characters of a hostile value in a message.
fn excerpt(s: &str) -> String {
    let short: String = s.chars().take(40).collect();
    if short.len() < s.len() {
        format!("{short:?}… ({} chars)", s.chars().count())
    } else {
        format!("{short:?}")
    }
}

fn text(
    field: &'static str,
    value: &str,
    max: usize,
    allow_empty: bool,
) -> Result<(), ServiceError> {
    let n = value.chars().count();
    if (!allow_empty && n == 0) || n > max {
        let min = if allow_empty { 0 } else { 1 };
        return Err(ServiceError::invalid(
            field,
            excerpt(value),
            format!("{min} to {max} characters (got {n})"),
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(ServiceError::invalid(
            field,
            excerpt(value),
            "no control characters",
        ));
    }
    Ok(())
}

/// A display name: 1–128 characters, no control characters. Anything else
/// (quotes, semicolons, SQL) is stored verbatim.
pub fn name(field: &'static str, value: &str) -> Result<(), ServiceError> {
    text(field, value, MAX_NAME_CHARS, false)
}

/// A group or policy name: 1–64 characters of `[A-Za-z0-9._-]`.
pub fn slug(field: &'static str, value: &str) -> Result<(), ServiceError> {
    let n = value.chars().count();
    if n == 0
        || n > MAX_GROUP_CHARS
        || !value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
    {
        return Err(ServiceError::invalid(
            field,
            excerpt(value),
            "1 to 64 characters of A-Z a-z 0-9 . _ -",
        ));
    }
    Ok(())
}

pub fn valid_for(secs: u64) -> Result<(), ServiceError> {
    if !(MIN_VALID_FOR_SECS..=MAX_VALID_FOR_SECS).contains(&secs) {
        return Err(ServiceError::invalid(
            "valid_for_secs",
            secs,
            format!("{MIN_VALID_FOR_SECS} (1 min) to {MAX_VALID_FOR_SECS} (365 days)"),
        ));
    }
    Ok(())
}

pub fn max_uses(uses: Option<u32>) -> Result<(), ServiceError> {
    match uses {
        Some(n) if !(1..=MAX_USES).contains(&n) => Err(ServiceError::invalid(
            "max_uses",
            n,
            format!("1 to {MAX_USES}, or absent for unlimited"),
        )),
        _ => Ok(()),
    }
}

pub fn interval(secs: u32) -> Result<(), ServiceError> {
    if !(MIN_INTERVAL_SECS..=MAX_INTERVAL_SECS).contains(&secs) {
        return Err(ServiceError::invalid(
            "checkin_interval_secs",
            secs,
            format!("{MIN_INTERVAL_SECS} to {MAX_INTERVAL_SECS}"),
        ));
    }
    Ok(())
}

pub fn jitter(percent: u8) -> Result<(), ServiceError> {
    if percent > MAX_JITTER_PERCENT {
        return Err(ServiceError::invalid(
            "jitter_percent",
            percent,
            format!("0 to {MAX_JITTER_PERCENT}"),
        ));
    }
    Ok(())
}

/// A policy's long tasks at once.
pub fn max_concurrent_tasks(n: u32) -> Result<(), ServiceError> {
    use tether_wire::{MAX_MAX_CONCURRENT_TASKS, MIN_MAX_CONCURRENT_TASKS};
    if !(MIN_MAX_CONCURRENT_TASKS..=MAX_MAX_CONCURRENT_TASKS).contains(&n) {
        return Err(ServiceError::invalid(
            "max_concurrent_tasks",
            n,
            format!("{MIN_MAX_CONCURRENT_TASKS} to {MAX_MAX_CONCURRENT_TASKS}"),
        ));
    }
    Ok(())
}

pub fn version(value: &str) -> Result<(), ServiceError> {
    text("agent_version", value, 64, false)
}

/// An agent's upgrade report: versions as at check-in, a reason of at
/// most 1,024 characters.
pub fn upgrade(u: &tether_wire::UpgradeReport) -> Result<(), ServiceError> {
    text("upgrade.version", &u.version, 64, false)?;
    if let Some(from) = &u.from {
        text("upgrade.from", from, 64, false)?;
    }
    if let Some(reason) = &u.reason {
        text("upgrade.reason", reason, 1024, false)?;
    }
    Ok(())
}

pub fn facts(f: &HostFacts) -> Result<(), ServiceError> {
    text("facts.hostname", &f.hostname, MAX_SHORT, true)?;
    text("facts.os", &f.os, MAX_SHORT, true)?;
    if f.internal_ips.len() > MAX_IPS {
        return Err(ServiceError::invalid(
            "facts.internal_ips",
            format!("{} addresses", f.internal_ips.len()),
            format!("at most {MAX_IPS}"),
        ));
    }
    for ip in &f.internal_ips {
        text("facts.internal_ips", ip, 64, false)?;
    }
    Ok(())
}

pub fn definitions(d: &BTreeMap<String, String>) -> Result<(), ServiceError> {
    if d.len() > MAX_MAP_ENTRIES {
        return Err(ServiceError::invalid(
            "definitions",
            format!("{} entries", d.len()),
            format!("at most {MAX_MAP_ENTRIES}"),
        ));
    }
    for (k, v) in d {
        text("definitions", k, MAX_GROUP_CHARS, false)?;
        text("definitions", v, MAX_NAME_CHARS, false)?;
    }
    Ok(())
}

pub fn last_errors(e: &BTreeMap<String, LastError>) -> Result<(), ServiceError> {
    if e.len() > MAX_MAP_ENTRIES {
        return Err(ServiceError::invalid(
            "last_errors",
            format!("{} entries", e.len()),
            format!("at most {MAX_MAP_ENTRIES}"),
        ));
    }
    for (k, v) in e {
        text("last_errors", k, MAX_GROUP_CHARS, false)?;
        // Error messages may span lines; only their length is bounded.
        let n = v.message.chars().count();
        if n > MAX_ERROR_MESSAGE {
            return Err(ServiceError::invalid(
                "last_errors.message",
                format!("{n} characters"),
                format!("at most {MAX_ERROR_MESSAGE}"),
            ));
        }
    }
    Ok(())
}

/// A policy's doctor targets: at most 64, each `host:port` where the host is
/// 1–253 characters of `[A-Za-z0-9.-]` (which covers IPv4) or an IPv6
/// address in brackets, and the port is 1–65535.
pub fn targets(values: &[String]) -> Result<(), ServiceError> {
    if values.len() > MAX_TARGETS {
        return Err(ServiceError::invalid(
            "targets",
            format!("{} targets", values.len()),
            format!("at most {MAX_TARGETS} targets"),
        ));
    }
    values.iter().try_for_each(|t| target(t))
}

/// One `host:port` doctor target.
pub fn target(value: &str) -> Result<(), ServiceError> {
    let bad = |why: String| ServiceError::invalid("targets", excerpt(value), why);
    let Some((host, port)) = value.rsplit_once(':') else {
        return Err(bad(String::from("HOST:PORT")));
    };
    match port.parse::<u16>() {
        Ok(p) if p >= 1 => {}
        _ => return Err(bad(String::from("a port from 1 to 65535"))),
    }
    let host_ok = if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        v6.parse::<std::net::Ipv6Addr>().is_ok()
    } else {
        // Unbracketed, only names and IPv4 (whose characters are a subset):
        // "::1:22" is ambiguous and refused.
        !host.is_empty()
            && host.len() <= MAX_HOST_CHARS
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-.".contains(&b))
    };
    if !host_ok {
        return Err(bad(format!(
            "a host of 1 to {MAX_HOST_CHARS} characters of [A-Za-z0-9.-] or an IP address ([v6] in brackets)"
        )));
    }
    Ok(())
}

/// How many channels one check-in may report.
pub const MAX_DEFS_CHANNELS: usize = 64;
/// How many channels one policy may subscribe to.
pub const MAX_POLICY_CHANNELS: usize = 32;
/// How many update servers one policy may list.
pub const MAX_UPDATE_URLS: usize = 8;
/// The update check interval's bounds: a minute to a week.
pub const MIN_DEFS_INTERVAL_SECS: u32 = 60;
pub const MAX_DEFS_INTERVAL_SECS: u32 = 7 * 86_400;
const MAX_URL: usize = 512;

/// The definitions state an agent reports at check-in: at most 64 channels,
/// each once, every string bounded. Proxy and server URLs lose any
/// `user:pass@`, like the agent's own proxy.
pub fn defs_state(
    states: Vec<tether_wire::ChannelState>,
) -> Result<Vec<tether_wire::ChannelState>, ServiceError> {
    if states.len() > MAX_DEFS_CHANNELS {
        return Err(ServiceError::invalid(
            "defs",
            format!("{} channels", states.len()),
            format!("at most {MAX_DEFS_CHANNELS}"),
        ));
    }
    let mut seen = std::collections::BTreeSet::new();
    let mut out = Vec::with_capacity(states.len());
    for mut s in states {
        text("defs.channel", &s.channel, MAX_GROUP_CHARS, false)?;
        if !seen.insert(s.channel.clone()) {
            return Err(ServiceError::invalid(
                "defs.channel",
                excerpt(&s.channel),
                "each channel once",
            ));
        }
        if let Some(sha) = &s.sha256 {
            text("defs.sha256", sha, 128, false)?;
        }
        if let Some(e) = &s.last_error {
            let n = e.message.chars().count();
            if n > MAX_ERROR_MESSAGE {
                return Err(ServiceError::invalid(
                    "defs.last_error.message",
                    format!("{n} characters"),
                    format!("at most {MAX_ERROR_MESSAGE}"),
                ));
            }
        }
        if let Some(server) = &s.server {
            text("defs.server", server, MAX_URL, false)?;
            s.server = Some(strip_userinfo(server));
        }
        if let Some(proxy) = &s.via_proxy {
            text("defs.via_proxy", proxy, MAX_PROXY, false)?;
            s.via_proxy = Some(strip_userinfo(proxy));
        }
        out.push(s);
    }
    Ok(out)
}

/// A policy's definitions settings: valid channel names (at most 32, each
/// once), at most 8 `https://` update URLs without credentials, and an
/// interval from a minute to a week.
pub fn defs_policy(p: &tether_wire::DefsPolicy) -> Result<(), ServiceError> {
    if p.channels.len() > MAX_POLICY_CHANNELS {
        return Err(ServiceError::invalid(
            "defs.channels",
            format!("{} channels", p.channels.len()),
            format!("at most {MAX_POLICY_CHANNELS}"),
        ));
    }
    let mut seen = std::collections::BTreeSet::new();
    for c in &p.channels {
        tether_defs_publish::repo::validate_channel(c)?;
        if !seen.insert(c.as_str()) {
            return Err(ServiceError::invalid(
                "defs.channels",
                excerpt(c),
                "each channel once",
            ));
        }
    }
    if p.update_urls.len() > MAX_UPDATE_URLS {
        return Err(ServiceError::invalid(
            "defs.update_urls",
            format!("{} URLs", p.update_urls.len()),
            format!("at most {MAX_UPDATE_URLS}"),
        ));
    }
    for url in &p.update_urls {
        update_url(url)?;
    }
    if !(MIN_DEFS_INTERVAL_SECS..=MAX_DEFS_INTERVAL_SECS).contains(&p.interval_secs) {
        return Err(ServiceError::invalid(
            "defs.interval_secs",
            p.interval_secs,
            format!("{MIN_DEFS_INTERVAL_SECS} to {MAX_DEFS_INTERVAL_SECS} seconds"),
        ));
    }
    Ok(())
}

/// One update server: `https://host[:port][/path]`, printable, no
/// credentials (a policy is shown to every admin and sent to every agent).
fn update_url(url: &str) -> Result<(), ServiceError> {
    let expected = "an https:// URL of at most 512 characters, without spaces or user:password@";
    let bad = || ServiceError::invalid("defs.update_urls", excerpt(url), expected);
    let rest = url.strip_prefix("https://").ok_or_else(bad)?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = authority
        .rsplit_once(':')
        .filter(|(_, port)| port.bytes().all(|b| b.is_ascii_digit()))
        .map_or(authority, |(h, _)| h);
    if url.len() > MAX_URL
        || url.chars().any(|c| c.is_control() || c.is_whitespace())
        || authority.contains('@')
        || host.is_empty()
    {
        return Err(bad());
    }
    Ok(())
}

/// A proxy URL as reported by an agent, with any `user:pass@` removed so the
/// server never stores a proxy password.
pub fn proxy(p: Option<&str>) -> Result<Option<String>, ServiceError> {
    let Some(p) = p else { return Ok(None) };
    text("proxy", p, MAX_PROXY, false)?;
    Ok(Some(strip_userinfo(p)))
}

fn strip_userinfo(url: &str) -> String {
    let (scheme, rest) = match url.find("://") {
        Some(i) => (&url[..i + 3], &url[i + 3..]),
        None => ("", url),
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}{}", &rest[at + 1..]),
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_accept_anything_printable_within_bounds() {
        assert!(name("name", "web-01'; DROP TABLE agents;--").is_ok());
        assert!(name("name", "Ünïcødé 名前").is_ok());
        assert!(name("name", "").is_err());
        assert!(name("name", &"x".repeat(129)).is_err());
        assert!(name("name", &"é".repeat(128)).is_ok());
        let e = name("name", "a\nb").expect_err("control char");
        assert!(e.to_string().contains("no control characters"), "{e}");
    }

    #[test]
    fn slugs_are_restricted() {
        assert!(slug("group", "prod-eu.1_a").is_ok());
        assert!(slug("group", "prod eu").is_err());
        assert!(slug("group", "").is_err());
        assert!(slug("group", &"a".repeat(65)).is_err());
        assert!(slug("group", "a;b").is_err());
    }

    #[test]
    fn numeric_bounds_name_the_accepted_range() {
        assert!(valid_for(59).is_err());
        assert!(valid_for(60).is_ok());
        assert!(valid_for(365 * 86_400).is_ok());
        assert!(valid_for(365 * 86_400 + 1).is_err());
        assert!(max_uses(Some(0)).is_err());
        assert!(max_uses(Some(1_000_001)).is_err());
        assert!(max_uses(None).is_ok());
        assert!(interval(4).is_err());
        assert!(interval(86_401).is_err());
        assert!(jitter(51).is_err());
        let e = interval(1).expect_err("too short");
        assert_eq!(
            e.to_string(),
            "field checkin_interval_secs: got 1; expected 5 to 86400"
        );
    }

    #[test]
    fn targets_are_host_port_pairs() {
        for good in [
            "ldap.corp.example:389",
            "10.0.0.7:22",
            "[::1]:5985",
            "a:65535",
        ] {
            assert!(target(good).is_ok(), "{good}");
        }
        let long = format!("{}:22", "a".repeat(254));
        for bad in [
            "ldap.corp",
            "ldap.corp:0",
            "ldap.corp:65536",
            ":22",
            "a b:22",
            "a_b:22",
            "::1:22",
            "[nothost]:22",
            long.as_str(),
        ] {
            assert!(target(bad).is_err(), "{bad}");
        }
        assert!(target(&format!("{}:22", "a".repeat(253))).is_ok());
        let many: Vec<String> = (1..=65).map(|p| format!("h:{p}")).collect();
        assert!(targets(&many[..64]).is_ok());
        let e = targets(&many).expect_err("too many");
        assert!(e.to_string().contains("at most 64"), "{e}");
    }

    #[test]
    fn proxy_credentials_are_never_kept() {
        assert_eq!(
            proxy(Some("http://bob:pw@proxy:3128"))
                .ok()
                .flatten()
                .as_deref(),
            Some("http://proxy:3128")
        );
        assert_eq!(
            proxy(Some("proxy:3128")).ok().flatten().as_deref(),
            Some("proxy:3128")
        );
        assert_eq!(proxy(None).ok().flatten(), None);
    }
}
