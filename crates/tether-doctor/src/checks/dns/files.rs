//! Parsers for /etc/resolv.conf and /etc/hosts. Both files are outside
//! input: unknown lines are ignored, nothing panics.

use std::net::IpAddr;

/// The name servers listed in resolv.conf, in order, duplicates removed.
/// `nameserver` lines whose value is not an IP address are skipped (glibc
/// does the same); an IPv6 zone (`fe80::1%eth0`) is dropped.
pub(crate) fn name_servers(resolv_conf: &str) -> Vec<IpAddr> {
    let mut out = Vec::new();
    for line in resolv_conf.lines() {
        let line = line.split(['#', ';']).next().unwrap_or("");
        let mut words = line.split_whitespace();
        if words.next() != Some("nameserver") {
            continue;
        }
        let Some(value) = words.next() else { continue };
        let bare = value.split('%').next().unwrap_or(value);
        if let Ok(ip) = bare.parse::<IpAddr>()
            && !out.contains(&ip)
        {
            out.push(ip);
        }
    }
    out
}

/// The addresses /etc/hosts gives `host` (case-insensitive, trailing dot
/// ignored), in file order.
pub(crate) fn hosts_entries(hosts: &str, host: &str) -> Vec<IpAddr> {
    let wanted = host.trim_end_matches('.').to_ascii_lowercase();
    let mut out = Vec::new();
    for line in hosts.lines() {
        let line = line.split('#').next().unwrap_or("");
        let mut words = line.split_whitespace();
        let Some(addr) = words.next() else { continue };
        let Ok(ip) = addr.split('%').next().unwrap_or(addr).parse::<IpAddr>() else {
            continue;
        };
        if words.any(|name| name.trim_end_matches('.').eq_ignore_ascii_case(&wanted))
            && !out.contains(&ip)
        {
            out.push(ip);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("literal")
    }

    #[test]
    fn resolv_conf_name_servers_in_order() {
        let conf = "# generated\nsearch corp.example\nnameserver 10.0.0.2\nnameserver   ::1 # local\n\
                    nameserver fe80::1%eth0\nnameserver not-an-ip\nnameserver 10.0.0.2\noptions ndots:2\nnameserver\n";
        assert_eq!(
            name_servers(conf),
            vec![ip("10.0.0.2"), ip("::1"), ip("fe80::1")]
        );
        assert!(name_servers("").is_empty());
    }

    #[test]
    fn hosts_entries_match_any_alias() {
        let hosts = "127.0.0.1 localhost\n10.1.1.1 tether.corp.example tether # pinned\n\
                     ::1 ip6-localhost Tether.Corp.Example.\nbad line here\n# 10.9.9.9 tether\n";
        assert_eq!(
            hosts_entries(hosts, "TETHER.corp.example"),
            vec![ip("10.1.1.1"), ip("::1")]
        );
        assert_eq!(hosts_entries(hosts, "tether"), vec![ip("10.1.1.1")]);
        assert!(hosts_entries(hosts, "other").is_empty());
    }

    #[test]
    fn hostile_files_never_panic() {
        let mut state: u32 = 7;
        for _ in 0..500 {
            let text: String = (0..80)
                .map(|_| {
                    state = state.wrapping_mul(1_103_515_245).wrapping_add(12345);
                    let pool = b"nameserver 0123456789.:%#; \n\tabcdef";
                    pool[(state >> 16) as usize % pool.len()] as char
                })
                .collect();
            let _ = name_servers(&text);
            let _ = hosts_entries(&text, "a");
        }
    }
}
