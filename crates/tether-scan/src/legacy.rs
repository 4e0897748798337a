//! Capture of a chain that rustls will not negotiate: a hand-built TLS
//! ClientHello (TLS 1.0 to 1.2, with the old ciphers rustls refuses) and a
//! reader of the server's plaintext ServerHello and Certificate messages.
//! No key exchange follows: the scanner only needs what the server shows
//! before it.
//!
//! Everything read is bounded: [`MAX_HANDSHAKE_BYTES`] of handshake data,
//! [`MAX_CHAIN_CERTS`] certificates recorded.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The most handshake bytes read before giving up (a 10,000-SAN leaf is
/// about 300 KiB).
pub const MAX_HANDSHAKE_BYTES: usize = 2 * 1024 * 1024;
/// The most certificates of one chain recorded; the rest are counted.
pub const MAX_CHAIN_CERTS: usize = 32;

/// What the server answered to the legacy ClientHello.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// A ServerHello and a Certificate message.
    Hello {
        /// e.g. `TLSv1.0`.
        protocol: String,
        /// The suite's IANA number, e.g. `0xc014`.
        cipher: u16,
        /// Up to [`MAX_CHAIN_CERTS`] certificates, leaf first.
        chain: Vec<Vec<u8>>,
        /// How many the server sent.
        presented: usize,
    },
    /// A TLS alert, by its description number.
    Alert(u8),
    /// Bytes that are not TLS records.
    NotTls(Vec<u8>),
    /// Malformed or oversized TLS, with the reason.
    Broken(String),
}

/// Suites offered: modern ones first so a server that speaks them shows
/// them, then CBC, 3DES, RC4 and export-grade ones rustls refuses.
const SUITES: &[u16] = &[
    0xc02f, 0xc030, 0xc02b, 0xc02c, 0xcca8, 0xcca9, 0x009e, 0x009f, 0x009c, 0x009d, 0xc027, 0xc028,
    0xc023, 0xc024, 0xc013, 0xc014, 0xc009, 0xc00a, 0x0067, 0x006b, 0x0033, 0x0039, 0x003c, 0x003d,
    0x002f, 0x0035, 0xc012, 0xc008, 0x0016, 0x000a, 0xc011, 0xc007, 0x0005, 0x0004, 0x0041, 0x0084,
    0x0045, 0x0088, 0x0096, 0x0009, 0x0015, 0x0003, 0x0006, 0x0008, 0x0014, 0x00ff,
];

/// The suites rustls can negotiate (its TLS 1.2 list).
pub fn rustls_supports(suite: u16) -> bool {
    matches!(suite, 0xc02b | 0xc02c | 0xc02f | 0xc030 | 0xcca8 | 0xcca9)
}

pub fn protocol_name(v: u16) -> String {
    match v {
        0x0300 => "SSLv3".to_owned(),
        0x0301 => "TLSv1.0".to_owned(),
        0x0302 => "TLSv1.1".to_owned(),
        0x0303 => "TLSv1.2".to_owned(),
        0x0304 => "TLSv1.3".to_owned(),
        other => format!("0x{other:04x}"),
    }
}

fn u16be(v: usize) -> [u8; 2] {
    [(v >> 8) as u8, v as u8]
}

/// A ClientHello offering TLS 1.0 through 1.2 and [`SUITES`].
pub fn client_hello(sni: Option<&str>, random: [u8; 32]) -> Vec<u8> {
    let mut exts = Vec::new();
    if let Some(name) = sni.filter(|n| n.len() < 256) {
        let n = name.as_bytes();
        exts.extend_from_slice(&[0x00, 0x00]);
        exts.extend_from_slice(&u16be(n.len() + 5));
        exts.extend_from_slice(&u16be(n.len() + 3));
        exts.push(0x00);
        exts.extend_from_slice(&u16be(n.len()));
        exts.extend_from_slice(n);
    }
    // supported_groups: x25519, secp256r1, secp384r1, secp521r1.
    exts.extend_from_slice(&[
        0x00, 0x0a, 0x00, 0x0a, 0x00, 0x08, 0x00, 0x1d, 0x00, 0x17, 0x00, 0x18, 0x00, 0x19,
    ]);
    // ec_point_formats: uncompressed.
    exts.extend_from_slice(&[0x00, 0x0b, 0x00, 0x02, 0x01, 0x00]);
    // signature_algorithms, SHA-1 ones included (TLS 1.2 servers of old).
    let algs: &[u16] = &[
        0x0403, 0x0503, 0x0603, 0x0804, 0x0805, 0x0806, 0x0401, 0x0501, 0x0601, 0x0201, 0x0203,
    ];
    exts.extend_from_slice(&[0x00, 0x0d]);
    exts.extend_from_slice(&u16be(algs.len() * 2 + 2));
    exts.extend_from_slice(&u16be(algs.len() * 2));
    for a in algs {
        exts.extend_from_slice(&a.to_be_bytes());
    }
    let mut body = vec![0x03, 0x03];
    body.extend_from_slice(&random);
    body.push(0); // no session id
    body.extend_from_slice(&u16be(SUITES.len() * 2));
    for s in SUITES {
        body.extend_from_slice(&s.to_be_bytes());
    }
    body.extend_from_slice(&[0x01, 0x00]); // null compression only
    body.extend_from_slice(&u16be(exts.len()));
    body.extend_from_slice(&exts);
    let mut hs = vec![
        0x01,
        (body.len() >> 16) as u8,
        (body.len() >> 8) as u8,
        body.len() as u8,
    ];
    hs.extend_from_slice(&body);
    // The record says TLS 1.0, as old servers expect.
    let mut rec = vec![0x16, 0x03, 0x01];
    rec.extend_from_slice(&u16be(hs.len()));
    rec.extend_from_slice(&hs);
    rec
}

/// Sends the legacy ClientHello and reads the answer. The caller bounds the
/// time.
pub async fn probe<S: AsyncRead + AsyncWrite + Unpin>(io: &mut S, sni: Option<&str>) -> Answer {
    let mut random = [0u8; 32];
    // Not secret: no key is derived from it.
    for (i, b) in random.iter_mut().enumerate() {
        *b = (i as u8).wrapping_mul(37).wrapping_add(11);
    }
    if let Err(e) = io.write_all(&client_hello(sni, random)).await {
        return Answer::Broken(format!("cannot send the ClientHello: {e}"));
    }
    let _ = io.flush().await;
    read_answer(io).await
}

async fn read_answer<S: AsyncRead + Unpin>(io: &mut S) -> Answer {
    let mut hs: Vec<u8> = Vec::new();
    let mut server_hello: Option<(u16, u16)> = None;
    let mut first = true;
    loop {
        let mut head = [0u8; 5];
        if let Err(e) = io.read_exact(&mut head).await {
            return Answer::Broken(format!(
                "the connection ended before the Certificate message: {e}"
            ));
        }
        let (ctype, len) = (head[0], usize::from(u16::from_be_bytes([head[3], head[4]])));
        if first && (!matches!(ctype, 0x15 | 0x16) || head[1] != 0x03) {
            let mut banner = head.to_vec();
            let mut more = [0u8; 64];
            if let Ok(n) = io.read(&mut more).await {
                banner.extend_from_slice(&more[..n]);
            }
            return Answer::NotTls(banner);
        }
        first = false;
        if len > 16_384 + 2048 {
            return Answer::Broken(format!("a TLS record of {len} bytes (at most 18,432)"));
        }
        let mut body = vec![0u8; len];
        if let Err(e) = io.read_exact(&mut body).await {
            return Answer::Broken(format!("the connection ended inside a record: {e}"));
        }
        match ctype {
            0x15 => return Answer::Alert(body.get(1).copied().unwrap_or(0)),
            0x16 => {}
            other => {
                return Answer::Broken(format!(
                    "record type {other} before the Certificate message"
                ));
            }
        }
        if hs.len() + body.len() > MAX_HANDSHAKE_BYTES {
            return Answer::Broken(format!(
                "the server's handshake exceeds {} KiB before its chain ends",
                MAX_HANDSHAKE_BYTES / 1024
            ));
        }
        hs.extend_from_slice(&body);
        // Walk the complete handshake messages gathered so far.
        let mut at = 0;
        while hs.len() >= at + 4 {
            let mlen = (usize::from(hs[at + 1]) << 16)
                | (usize::from(hs[at + 2]) << 8)
                | usize::from(hs[at + 3]);
            if hs.len() < at + 4 + mlen {
                break;
            }
            let msg = &hs[at + 4..at + 4 + mlen];
            match hs[at] {
                2 => match parse_server_hello(msg) {
                    Some(v) => server_hello = Some(v),
                    None => return Answer::Broken("a malformed ServerHello".to_owned()),
                },
                11 => {
                    let Some((version, cipher)) = server_hello else {
                        return Answer::Broken(
                            "a Certificate message before the ServerHello".to_owned(),
                        );
                    };
                    return match parse_certificates(msg) {
                        Some((chain, presented)) => Answer::Hello {
                            protocol: protocol_name(version),
                            cipher,
                            chain,
                            presented,
                        },
                        None => Answer::Broken("a malformed Certificate message".to_owned()),
                    };
                }
                14 => {
                    return Answer::Broken(
                        "the server sent no certificate (anonymous or PSK suite)".to_owned(),
                    );
                }
                _ => {}
            }
            at += 4 + mlen;
        }
    }
}

fn parse_server_hello(msg: &[u8]) -> Option<(u16, u16)> {
    let version = u16::from_be_bytes([*msg.first()?, *msg.get(1)?]);
    let sid_len = usize::from(*msg.get(34)?);
    let at = 35 + sid_len;
    let cipher = u16::from_be_bytes([*msg.get(at)?, *msg.get(at + 1)?]);
    Some((version, cipher))
}

fn parse_certificates(msg: &[u8]) -> Option<(Vec<Vec<u8>>, usize)> {
    let total = (usize::from(*msg.first()?) << 16)
        | (usize::from(*msg.get(1)?) << 8)
        | usize::from(*msg.get(2)?);
    let list = msg.get(3..3 + total)?;
    let mut chain = Vec::new();
    let mut presented = 0;
    let mut at = 0;
    while at < list.len() {
        let len = (usize::from(*list.get(at)?) << 16)
            | (usize::from(*list.get(at + 1)?) << 8)
            | usize::from(*list.get(at + 2)?);
        let der = list.get(at + 3..at + 3 + len)?;
        presented += 1;
        if chain.len() < MAX_CHAIN_CERTS {
            chain.push(der.to_vec());
        }
        at += 3 + len;
    }
    Some((chain, presented))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(ctype: u8, body: &[u8]) -> Vec<u8> {
        let mut r = vec![ctype, 0x03, 0x01];
        r.extend_from_slice(&u16be(body.len()));
        r.extend_from_slice(body);
        r
    }

    fn handshake(t: u8, body: &[u8]) -> Vec<u8> {
        let mut m = vec![
            t,
            (body.len() >> 16) as u8,
            (body.len() >> 8) as u8,
            body.len() as u8,
        ];
        m.extend_from_slice(body);
        m
    }

    fn server_flight(certs: &[&[u8]]) -> Vec<u8> {
        let mut sh = vec![0x03, 0x01];
        sh.extend_from_slice(&[7u8; 32]);
        sh.push(0);
        sh.extend_from_slice(&[0x00, 0x2f, 0x00]);
        let mut list = Vec::new();
        for c in certs {
            list.extend_from_slice(&[(c.len() >> 16) as u8, (c.len() >> 8) as u8, c.len() as u8]);
            list.extend_from_slice(c);
        }
        let mut cert = vec![
            (list.len() >> 16) as u8,
            (list.len() >> 8) as u8,
            list.len() as u8,
        ];
        cert.extend_from_slice(&list);
        let mut hs = handshake(2, &sh);
        hs.extend(handshake(11, &cert));
        // Split across two records, as servers do with long chains.
        let mid = hs.len() / 2;
        let mut out = record(0x16, &hs[..mid]);
        out.extend(record(0x16, &hs[mid..]));
        out
    }

    #[tokio::test]
    async fn reads_hello_and_chain_across_records() {
        let flight = server_flight(&[b"leaf", b"intermediate"]);
        let answer = read_answer(&mut flight.as_slice()).await;
        assert_eq!(
            answer,
            Answer::Hello {
                protocol: "TLSv1.0".to_owned(),
                cipher: 0x002f,
                chain: vec![b"leaf".to_vec(), b"intermediate".to_vec()],
                presented: 2
            }
        );
    }

    #[tokio::test]
    async fn alerts_garbage_and_truncation_are_named() {
        assert_eq!(
            read_answer(&mut record(0x15, &[2, 70]).as_slice()).await,
            Answer::Alert(70)
        );
        assert!(
            matches!(read_answer(&mut &b"SSH-2.0-OpenSSH\r\n"[..]).await, Answer::NotTls(b) if b.starts_with(b"SSH"))
        );
        let flight = server_flight(&[b"leaf"]);
        for cut in [0, 3, 7, 20, flight.len() - 1] {
            assert!(
                matches!(read_answer(&mut &flight[..cut]).await, Answer::Broken(_)),
                "cut at {cut}"
            );
        }
    }

    #[tokio::test]
    async fn hostile_flights_never_panic() {
        let good = server_flight(&[b"leaf", b"ca"]);
        let mut state = 1u64;
        for i in 0..2000 {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let mut f = good.clone();
            let at = (state >> 33) as usize % f.len();
            f[at] = (state >> 20) as u8;
            f.truncate(f.len() - i % 7);
            let _ = read_answer(&mut f.as_slice()).await;
        }
    }

    #[test]
    fn the_hello_names_the_server() {
        let hello = client_hello(Some("legacy.test"), [0; 32]);
        assert_eq!(&hello[..3], &[0x16, 0x03, 0x01]);
        assert!(hello.windows(11).any(|w| w == b"legacy.test"));
        assert_eq!(
            usize::from(u16::from_be_bytes([hello[3], hello[4]])),
            hello.len() - 5
        );
    }
}
