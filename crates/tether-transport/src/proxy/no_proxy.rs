//! NO_PROXY matching, following the common curl/Go conventions.

use std::net::IpAddr;

/// Splits a NO_PROXY value on commas (and whitespace), dropping empty items.
pub(super) fn split_list(list: &str) -> Vec<String> {
    list.split([',', ' ', '\t'])
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Whether one NO_PROXY entry covers `host`.
///
/// - `*` covers everything;
/// - `example.com`, `.example.com` and `*.example.com` cover
///   `example.com` and every name below it;
/// - an IP address covers that address; `10.0.0.0/8` covers the range;
/// - a `:port` suffix on an entry is ignored (the transport only asks about
///   hosts).
pub(super) fn matches(entry: &str, host: &str) -> bool {
    let entry = entry.trim();
    if entry == "*" {
        return true;
    }
    let host = normalize_host(host);
    if host.is_empty() {
        return false;
    }
    let host_ip: Option<IpAddr> = host.parse().ok();

    if let Some((net, prefix)) = entry.split_once('/') {
        let (Ok(net), Ok(prefix), Some(ip)) =
            (net.parse::<IpAddr>(), prefix.parse::<u8>(), host_ip)
        else {
            return false;
        };
        return in_cidr(ip, net, prefix);
    }

    let entry = strip_port(entry);
    if let Ok(ip) = entry.parse::<IpAddr>() {
        return host_ip == Some(ip);
    }
    if host_ip.is_some() {
        // A name never covers an IP literal.
        return false;
    }
    let domain = normalize_host(entry.trim_start_matches('*').trim_start_matches('.'));
    if domain.is_empty() {
        return false;
    }
    host == domain
        || (host.len() > domain.len()
            && host.ends_with(&domain)
            && host.as_bytes()[host.len() - domain.len() - 1] == b'.')
}

fn normalize_host(host: &str) -> String {
    host.trim()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .trim_end_matches('.')
        .to_ascii_lowercase()
}

/// Drops a trailing `:port` from `host:port` or `[v6]:port`, leaving bare
/// IPv6 literals alone.
fn strip_port(entry: &str) -> &str {
    if let Some(rest) = entry.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match entry.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') && p.chars().all(|c| c.is_ascii_digit()) => h,
        _ => entry,
    }
}

fn in_cidr(ip: IpAddr, net: IpAddr, prefix: u8) -> bool {
    match (ip, net) {
        (IpAddr::V4(ip), IpAddr::V4(net)) if prefix <= 32 => {
            let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            u32::from(ip) & mask == u32::from(net) & mask
        }
        (IpAddr::V6(ip), IpAddr::V6(net)) if prefix <= 128 => {
            let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            u128::from(ip) & mask == u128::from(net) & mask
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn star_covers_everything() {
        assert!(matches("*", "anything.example"));
        assert!(matches("*", "10.0.0.1"));
    }

    #[test]
    fn domains_cover_themselves_and_subdomains_only() {
        for entry in [
            "corp.example",
            ".corp.example",
            "*.corp.example",
            "CORP.example.",
        ] {
            assert!(matches(entry, "corp.example"), "{entry}");
            assert!(matches(entry, "a.b.corp.example"), "{entry}");
            assert!(matches(entry, "A.Corp.Example."), "{entry}");
            assert!(!matches(entry, "evilcorp.example"), "{entry}");
            assert!(!matches(entry, "corp.example.evil"), "{entry}");
            assert!(!matches(entry, "example"), "{entry}");
        }
        assert!(matches("localhost:8443", "localhost"));
        assert!(!matches("", "localhost"));
        assert!(!matches(".", "localhost"));
    }

    #[test]
    fn ip_entries_match_exact_addresses_and_ranges() {
        assert!(matches("127.0.0.1", "127.0.0.1"));
        assert!(!matches("127.0.0.1", "127.0.0.2"));
        assert!(matches("::1", "[::1]"));
        assert!(matches("[::1]:443", "::1"));
        assert!(matches("10.0.0.0/8", "10.255.0.1"));
        assert!(!matches("10.0.0.0/8", "11.0.0.1"));
        assert!(matches("0.0.0.0/0", "192.0.2.1"));
        assert!(matches("fd00::/8", "fd12::1"));
        assert!(!matches("fd00::/8", "fe80::1"));
        assert!(!matches("10.0.0.0/33", "10.0.0.1"));
        assert!(!matches("10.0.0.0/8", "ten.example"));
        assert!(!matches("10.0.0.0/x", "10.0.0.1"));
        // A name never covers an address, even one that looks like a suffix.
        assert!(!matches("0.1", "10.0.0.1"));
    }

    #[test]
    fn lists_are_split_on_commas_and_spaces() {
        assert_eq!(split_list("a, b,,c d"), vec!["a", "b", "c", "d"]);
        assert!(split_list(" , ").is_empty());
    }

    #[test]
    fn hostile_entries_never_panic() {
        let inputs = crate::hostile::inputs(2000, 40);
        for pair in inputs.chunks(2) {
            let entry = String::from_utf8_lossy(&pair[0]);
            let host = String::from_utf8_lossy(pair.get(1).map_or(&[][..], |v| v));
            let _ = matches(&entry, &host);
            // An entry always covers the identical plain host name.
            if !entry.is_empty() && entry.bytes().all(|b| b.is_ascii_lowercase()) {
                assert!(matches(&entry, &entry), "{entry}");
            }
        }
    }
}
