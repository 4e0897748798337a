//! Protocol probes for target ports: what to send, and how to recognise
//! the right protocol in the first bytes of the answer.

/// The probe a port gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Probe {
    /// Read the server's banner: `SSH-2.0-…`.
    Ssh,
    /// Send a request to WinRM's path; any `HTTP/1.x` status line will do.
    Http,
    /// Send an LDAP rootDSE search; expect a BER LDAPMessage.
    Ldap,
    /// A TLS handshake: a certificate means the port speaks TLS.
    Tls,
    /// TCP only.
    None,
}

impl Probe {
    pub(crate) fn for_port(port: u16) -> Probe {
        match port {
            22 => Probe::Ssh,
            80 | 5985 => Probe::Http,
            389 => Probe::Ldap,
            443 | 636 | 5986 | 8443 => Probe::Tls,
            _ => Probe::None,
        }
    }

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Probe::Ssh => "ssh",
            Probe::Http => "http",
            Probe::Ldap => "ldap",
            Probe::Tls => "tls",
            Probe::None => "tcp",
        }
    }
}

/// An HTTP request to the WinRM endpoint.
pub(crate) fn http_request(host: &str) -> Vec<u8> {
    format!(
        "POST /wsman HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .into_bytes()
}

/// An LDAPv3 SearchRequest for the rootDSE (base "", scope base,
/// filter (objectClass=*), attributes none), message id 1. Anonymous: no
/// bind is needed for the rootDSE.
pub(crate) const LDAP_ROOT_DSE: &[u8] = &[
    0x30, 0x25, // LDAPMessage SEQUENCE, 37 bytes
    0x02, 0x01, 0x01, // messageID 1
    0x63, 0x20, // [APPLICATION 3] SearchRequest, 32 bytes
    0x04, 0x00, // baseObject ""
    0x0a, 0x01, 0x00, // scope baseObject
    0x0a, 0x01, 0x00, // derefAliases never
    0x02, 0x01, 0x00, // sizeLimit 0
    0x02, 0x01, 0x00, // timeLimit 0
    0x01, 0x01, 0x00, // typesOnly false
    0x87, 0x0b, b'o', b'b', b'j', b'e', b'c', b't', b'C', b'l', b'a', b's',
    b's', // present objectClass
    0x30, 0x00, // attributes: none
];

/// Whether `banner` starts like an SSH identification string.
pub(crate) fn is_ssh_banner(banner: &[u8]) -> bool {
    banner.starts_with(b"SSH-")
}

/// Whether `reply` starts with an HTTP/1.x status line; returns the status.
pub(crate) fn http_status(reply: &[u8]) -> Option<u16> {
    let rest = reply.strip_prefix(b"HTTP/1.")?;
    let code = rest.get(2..5)?;
    std::str::from_utf8(code).ok()?.parse().ok()
}

/// Whether `reply` is a BER LDAPMessage with message id 1: a SEQUENCE whose
/// length is well-formed, holding INTEGER 1 and an [APPLICATION n] op.
/// Returns the protocol op's tag number.
pub(crate) fn ldap_reply(reply: &[u8]) -> Option<u8> {
    if *reply.first()? != 0x30 {
        return None;
    }
    let (_, after_len) = ber_length(reply.get(1..)?)?;
    let body = reply.get(1 + after_len..)?;
    // messageID INTEGER 1
    if body.get(0..3)? != [0x02, 0x01, 0x01] {
        return None;
    }
    let op = *body.get(3)?;
    // Application class, constructed: 0b011x_xxxx.
    if op & 0xE0 != 0x60 {
        return None;
    }
    Some(op & 0x1F)
}

/// A BER length: (value, bytes used by the length itself).
fn ber_length(b: &[u8]) -> Option<(usize, usize)> {
    let first = *b.first()?;
    if first & 0x80 == 0 {
        return Some((first as usize, 1));
    }
    let n = (first & 0x7F) as usize;
    if n == 0 || n > 4 {
        return None;
    }
    let mut v = 0usize;
    for byte in b.get(1..1 + n)? {
        v = (v << 8) | *byte as usize;
    }
    Some((v, 1 + n))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_get_their_probe() {
        assert_eq!(Probe::for_port(22), Probe::Ssh);
        assert_eq!(Probe::for_port(5985), Probe::Http);
        assert_eq!(Probe::for_port(389), Probe::Ldap);
        for p in [443, 636, 8443] {
            assert_eq!(Probe::for_port(p), Probe::Tls);
        }
        assert_eq!(Probe::for_port(1234), Probe::None);
    }

    #[test]
    fn the_root_dse_request_is_well_formed_ber() {
        assert_eq!(LDAP_ROOT_DSE.len(), 2 + 0x25);
        assert_eq!(LDAP_ROOT_DSE[6] as usize, LDAP_ROOT_DSE.len() - 7);
    }

    #[test]
    fn recognisers_accept_the_real_thing_only() {
        assert!(is_ssh_banner(b"SSH-2.0-OpenSSH_9.2p1 Debian\r\n"));
        assert!(!is_ssh_banner(b"HTTP/1.1 400 Bad Request"));
        assert_eq!(http_status(b"HTTP/1.1 401 Unauthorized\r\n"), Some(401));
        assert_eq!(http_status(b"HTTP/1.0 200 OK"), Some(200));
        assert_eq!(http_status(b"SSH-2.0-x"), None);
        assert_eq!(http_status(b"HTTP/1.1 4"), None);
        // A SearchResultDone (op 5) with success, as slapd answers.
        let done = [
            0x30, 0x0c, 0x02, 0x01, 0x01, 0x65, 0x07, 0x0a, 0x01, 0x00, 0x04, 0x00, 0x04, 0x00,
        ];
        assert_eq!(ldap_reply(&done), Some(5));
        // Long-form length.
        let long = [0x30, 0x81, 0x0c, 0x02, 0x01, 0x01, 0x64, 0x00];
        assert_eq!(ldap_reply(&long), Some(4));
        assert_eq!(ldap_reply(b"HTTP/1.1 200 OK"), None);
        assert_eq!(ldap_reply(&[0x30]), None);
        assert_eq!(ldap_reply(&[0x30, 0x85, 1, 2, 3, 4, 5]), None);
        assert_eq!(ldap_reply(&[0x30, 0x03, 0x02, 0x01, 0x02, 0x65]), None);
    }

    #[test]
    fn hostile_replies_never_panic() {
        let mut s: u32 = 99;
        for len in 0..300usize {
            let bytes: Vec<u8> = (0..len % 40)
                .map(|_| {
                    s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                    if s.is_multiple_of(5) {
                        0x30
                    } else {
                        (s >> 24) as u8
                    }
                })
                .collect();
            let _ = ldap_reply(&bytes);
            let _ = http_status(&bytes);
            let _ = is_ssh_banner(&bytes);
        }
    }
}
