//! Host facts reported at enrollment and at each check-in, read from `/proc`
//! and `/etc` without unsafe code. Every reader degrades to an empty value:
//! a missing fact must never stop a check-in.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use tether_wire::HostFacts;
use time::OffsetDateTime;

/// Collects the facts of this host.
pub fn collect(installed_at: Option<OffsetDateTime>) -> HostFacts {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let mut ips = parse_fib_trie(&read("/proc/net/fib_trie"));
    ips.extend(parse_if_inet6(&read("/proc/net/if_inet6")));
    HostFacts {
        hostname: hostname(),
        os: parse_os_release(&read("/etc/os-release")),
        internal_ips: ips.iter().map(IpAddr::to_string).collect(),
        uptime_secs: parse_uptime(&read("/proc/uptime")),
        installed_at,
    }
}

/// This host's name, or `"unknown-host"`.
pub fn hostname() -> String {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .unwrap_or_default();
    let name = name.trim();
    if name.is_empty() || name.chars().any(char::is_control) {
        "unknown-host".to_owned()
    } else {
        name.to_owned()
    }
}

/// `"linux debian 12"` from `/etc/os-release`.
pub fn parse_os_release(text: &str) -> String {
    let field = |key: &str| {
        text.lines()
            .filter_map(|l| l.split_once('='))
            .find(|(k, _)| k.trim() == key)
            .map(|(_, v)| v.trim().trim_matches(['"', '\'']).to_owned())
            .filter(|v| !v.is_empty())
    };
    let mut parts = vec![std::env::consts::OS.to_owned()];
    parts.extend(field("ID"));
    parts.extend(field("VERSION_ID"));
    parts.join(" ")
}

/// Seconds since boot from `/proc/uptime` (`"12345.67 890.12"`).
pub fn parse_uptime(text: &str) -> u64 {
    text.split_whitespace()
        .next()
        .and_then(|s| s.split('.').next())
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// The local, non-loopback IPv4 addresses from `/proc/net/fib_trie`: the
/// address line that precedes a `/32 host LOCAL` line.
pub fn parse_fib_trie(text: &str) -> Vec<IpAddr> {
    let mut out = Vec::new();
    let mut last: Option<Ipv4Addr> = None;
    for line in text.lines() {
        let t = line.trim_start_matches([' ', '|', '-', '+']).trim();
        if let Ok(ip) = t.parse::<Ipv4Addr>() {
            last = Some(ip);
        } else if t.contains("/32 host LOCAL")
            && let Some(ip) = last.filter(|ip| !ip.is_loopback()).map(IpAddr::V4)
            && !out.contains(&ip)
        {
            out.push(ip);
        }
    }
    out
}

/// Global and unique-local IPv6 addresses from `/proc/net/if_inet6`.
pub fn parse_if_inet6(text: &str) -> Vec<IpAddr> {
    text.lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|hex| hex.len() == 32)
        .filter_map(|hex| u128::from_str_radix(hex, 16).ok())
        .map(Ipv6Addr::from)
        .filter(|ip| !ip.is_loopback() && (ip.segments()[0] & 0xffc0) != 0xfe80)
        .map(IpAddr::V6)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn os_release_yields_id_and_version() {
        let text = "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nID=debian\nVERSION_ID=\"12\"\n";
        assert_eq!(
            parse_os_release(text),
            format!("{} debian 12", std::env::consts::OS)
        );
        assert_eq!(parse_os_release(""), std::env::consts::OS);
    }

    #[test]
    fn uptime_takes_whole_seconds() {
        assert_eq!(parse_uptime("12345.67 890.12\n"), 12345);
        assert_eq!(parse_uptime("garbage"), 0);
    }

    #[test]
    fn fib_trie_lists_local_addresses_once_without_loopback() {
        let text = "Main:\n  +-- 0.0.0.0/0 3 0 5\n     |-- 10.1.2.3\n        /32 host LOCAL\n     |-- 10.1.2.255\n        /32 link BROADCAST\n     |-- 127.0.0.1\n        /32 host LOCAL\nLocal:\n     |-- 10.1.2.3\n        /32 host LOCAL\n";
        assert_eq!(
            parse_fib_trie(text),
            vec![IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3))]
        );
    }

    #[test]
    fn if_inet6_skips_loopback_and_link_local() {
        let text = "00000000000000000000000000000001 01 80 10 80       lo\nfe800000000000000000000000000001 02 40 20 80     eth0\nfd000000000000000000000000000002 02 40 00 80     eth0\n";
        assert_eq!(
            parse_if_inet6(text),
            vec!["fd00::2".parse::<IpAddr>().expect("ip")]
        );
    }

    #[test]
    fn collect_on_this_host_has_a_name() {
        assert!(!collect(None).hostname.is_empty());
    }
}
