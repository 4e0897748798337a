//! The PROXY protocol (v1 text and v2 binary, HAProxy's specification) from
//! trusted load balancers only, so the real client address reaches external
//! IPs, rate limits and logs.
//!
//! Each connection's first bytes are read before TLS, within
//! [`HEADER_TIMEOUT`] and at most [`MAX_HEADER`] bytes:
//! - from an address in `proxy_protocol_from`, a header gives the client's
//!   address; a connection without one is closed when
//!   `proxy_protocol_required` (the default), else served as it came;
//! - from anyone else, a header is refused: the connection is closed, so
//!   nobody can choose the address rate limits count against.
//!
//! The header is parsed by the `ppp` crate. Bytes read past it (or read
//! from a connection without one) are replayed to TLS by [`Rewind`].
//! A LOCAL command (a balancer's own health check) or an UNKNOWN or UNIX
//! address keeps the balancer's address.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, ReadBuf};

/// How long a connection has to send the header (or its first bytes).
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest header accepted: v1's 107 bytes, and a v2 header with room
/// for the TLVs balancers add (AWS, Azure, GCP stay far below it).
pub const MAX_HEADER: usize = 1024;
const V1_MAX: usize = 107;
const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
const V1_SIGNATURE: &[u8; 6] = b"PROXY ";
/// Enough to tell a v2 header (16 bytes fixed), a v1 header ("PROXY ")
/// and a TLS ClientHello (always longer) apart.
const PREFIX: usize = 16;

/// An address or a network (`10.0.0.0/8`, `2001:db8::/32`, `192.0.2.7`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    pub fn parse(text: &str) -> Result<Cidr, String> {
        let (addr, prefix) = match text.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (text, None),
        };
        let network: IpAddr = addr
            .trim()
            .parse()
            .map_err(|_| format!("{addr:?} is not an IP address"))?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("prefix {p:?} is not 0..={max}"))?,
        };
        Ok(Cidr { network, prefix })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        // An IPv4 client on a dual-stack socket shows as ::ffff:a.b.c.d.
        match (self.network, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// Who may send a header, and whether they must.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    pub trusted: Vec<Cidr>,
    pub required: bool,
}

impl Policy {
    /// From `proxy_protocol_from` (validated by the config already; an entry
    /// that does not parse is skipped) and `proxy_protocol_required`.
    pub fn from_config(config: &crate::ServerConfig) -> Policy {
        Policy {
            trusted: config
                .proxy_protocol_from
                .iter()
                .filter_map(|c| Cidr::parse(c).ok())
                .collect(),
            required: config.proxy_protocol_required,
        }
    }

    /// Whether the PROXY protocol is on at all.
    pub fn enabled(&self) -> bool {
        !self.trusted.is_empty()
    }

    fn trusts(&self, ip: IpAddr) -> bool {
        self.trusted.iter().any(|c| c.contains(ip))
    }
}

/// Why a connection was closed before TLS.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProxyError {
    #[error("a PROXY header from {peer}, which is not in proxy_protocol_from")]
    Untrusted { peer: SocketAddr },
    #[error("no PROXY header from the trusted balancer {peer} (proxy_protocol_required)")]
    Missing { peer: SocketAddr },
    #[error("the PROXY header from {peer} is longer than {max} bytes")]
    TooLong { peer: SocketAddr, max: usize },
    #[error("the PROXY header from {peer} does not parse: {problem}")]
    Malformed { peer: SocketAddr, problem: String },
    #[error("no PROXY header from {peer} within {secs} s", secs = HEADER_TIMEOUT.as_secs())]
    Timeout { peer: SocketAddr },
    #[error("reading the PROXY header from {peer}: {error}")]
    Io { peer: SocketAddr, error: String },
}

/// What the connection's first bytes said.
#[derive(Debug, PartialEq, Eq)]
pub struct Accepted {
    /// The client's address: from the header, else the peer's.
    pub client: SocketAddr,
    /// The balancer's address, when a header named the client.
    pub via: Option<SocketAddr>,
    /// Bytes read that belong to TLS.
    pub rest: Vec<u8>,
}

/// Reads (and checks) a connection's PROXY header under `policy`, within
/// [`HEADER_TIMEOUT`]. With the protocol off, nothing is read.
pub async fn accept<S: AsyncRead + Unpin>(
    stream: &mut S,
    peer: SocketAddr,
    policy: &Policy,
) -> Result<Accepted, ProxyError> {
    if !policy.enabled() {
        return Ok(Accepted {
            client: peer,
            via: None,
            rest: Vec::new(),
        });
    }
    match tokio::time::timeout(HEADER_TIMEOUT, read_header(stream, peer, policy)).await {
        Ok(result) => result,
        Err(_) => Err(ProxyError::Timeout { peer }),
    }
}

async fn read_header<S: AsyncRead + Unpin>(
    stream: &mut S,
    peer: SocketAddr,
    policy: &Policy,
) -> Result<Accepted, ProxyError> {
    let io = |error: io::Error| ProxyError::Io {
        peer,
        error: error.to_string(),
    };
    let mut buf = Vec::with_capacity(PREFIX);
    fill(stream, &mut buf, PREFIX).await.map_err(io)?;
    let v2 = buf.starts_with(V2_SIGNATURE);
    let v1 = buf.starts_with(V1_SIGNATURE);
    let trusted = policy.trusts(peer.ip());
    if !(v1 || v2) {
        return if trusted && policy.required {
            Err(ProxyError::Missing { peer })
        } else {
            Ok(Accepted {
                client: peer,
                via: None,
                rest: buf,
            })
        };
    }
    if !trusted {
        return Err(ProxyError::Untrusted { peer });
    }
    let end = if v2 {
        let Some(len) = buf.get(14..16) else {
            return Err(ProxyError::Malformed {
                peer,
                problem: "the connection ended inside the header".into(),
            });
        };
        let total = PREFIX + usize::from(u16::from_be_bytes([len[0], len[1]]));
        if total > MAX_HEADER {
            return Err(ProxyError::TooLong {
                peer,
                max: MAX_HEADER,
            });
        }
        fill(stream, &mut buf, total).await.map_err(io)?;
        total
    } else {
        loop {
            if let Some(i) = buf.windows(2).position(|w| w == b"\r\n") {
                break i + 2;
            }
            if buf.len() >= V1_MAX {
                return Err(ProxyError::TooLong { peer, max: V1_MAX });
            }
            // One read of whatever has arrived: what lies past the line
            // end is TLS, replayed by `Rewind`.
            let mut chunk = [0u8; V1_MAX];
            let n = stream
                .read(&mut chunk[..V1_MAX - buf.len()])
                .await
                .map_err(io)?;
            if n == 0 {
                break 0;
            }
            buf.extend_from_slice(&chunk[..n]);
        }
    };
    let Some(header) = buf.get(..end).filter(|h| !h.is_empty() && h.len() == end) else {
        return Err(ProxyError::Malformed {
            peer,
            problem: "the connection ended inside the header".into(),
        });
    };
    let client = parse(header).map_err(|problem| ProxyError::Malformed { peer, problem })?;
    let rest = buf.split_off(end);
    Ok(Accepted {
        client: client.unwrap_or(peer),
        via: client.map(|_| peer),
        rest,
    })
}

/// The client address a complete header names; `None` for LOCAL, UNKNOWN
/// and UNIX.
fn parse(header: &[u8]) -> Result<Option<SocketAddr>, String> {
    match ppp::HeaderResult::parse(header) {
        ppp::HeaderResult::V1(Ok(h)) => Ok(match h.addresses {
            ppp::v1::Addresses::Tcp4(a) => {
                Some(SocketAddr::from((a.source_address, a.source_port)))
            }
            ppp::v1::Addresses::Tcp6(a) => {
                Some(SocketAddr::from((a.source_address, a.source_port)))
            }
            ppp::v1::Addresses::Unknown => None,
        }),
        ppp::HeaderResult::V2(Ok(h)) => Ok(match (h.command, h.addresses) {
            (ppp::v2::Command::Local, _) => None,
            (_, ppp::v2::Addresses::IPv4(a)) => {
                Some(SocketAddr::from((a.source_address, a.source_port)))
            }
            (_, ppp::v2::Addresses::IPv6(a)) => {
                Some(SocketAddr::from((a.source_address, a.source_port)))
            }
            (_, ppp::v2::Addresses::Unspecified | ppp::v2::Addresses::Unix(_)) => None,
        }),
        ppp::HeaderResult::V1(Err(e)) => Err(format!("v1: {e}")),
        ppp::HeaderResult::V2(Err(e)) => Err(format!("v2: {e}")),
    }
}

/// Reads until `buf` holds `want` bytes or the peer stops sending.
async fn fill<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut Vec<u8>,
    want: usize,
) -> io::Result<()> {
    let mut chunk = [0u8; 256];
    while buf.len() < want {
        let room = (want - buf.len()).min(chunk.len());
        let n = stream.read(&mut chunk[..room]).await?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Ok(())
}

/// A stream that first yields bytes already read from it.
#[derive(Debug)]
pub struct Rewind<S> {
    prefix: Vec<u8>,
    at: usize,
    inner: S,
}

impl<S> Rewind<S> {
    pub fn new(prefix: Vec<u8>, inner: S) -> Rewind<S> {
        Rewind {
            prefix,
            at: 0,
            inner,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Rewind<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.at < self.prefix.len() {
            let n = (self.prefix.len() - self.at).min(out.remaining());
            let at = self.at;
            out.put_slice(&self.prefix[at..at + n]);
            self.at += n;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, out)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Rewind<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn balancer() -> SocketAddr {
        "10.1.2.3:40000".parse().expect("addr")
    }

    fn policy(required: bool) -> Policy {
        Policy {
            trusted: vec![Cidr::parse("10.0.0.0/8").expect("cidr")],
            required,
        }
    }

    /// What `accept` says, with `rest` followed by what it left unread:
    /// the bytes TLS gets through `Rewind`.
    async fn run(bytes: &[u8], peer: SocketAddr, policy: &Policy) -> Result<Accepted, ProxyError> {
        let mut stream = bytes;
        let accepted = accept(&mut stream, peer, policy).await?;
        let mut tls = Vec::new();
        Rewind::new(accepted.rest, stream)
            .read_to_end(&mut tls)
            .await
            .expect("reads");
        Ok(Accepted {
            rest: tls,
            ..accepted
        })
    }

    const HELLO: &[u8] = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03client-hello-bytes";

    fn v2(src: [u8; 4], port: u16, tlvs: &[u8]) -> Vec<u8> {
        let mut h = V2_SIGNATURE.to_vec();
        h.push(0x21); // v2, PROXY
        h.push(0x11); // TCP over IPv4
        h.extend_from_slice(&u16::try_from(12 + tlvs.len()).expect("fits").to_be_bytes());
        h.extend_from_slice(&src);
        h.extend_from_slice(&[192, 0, 2, 1]);
        h.extend_from_slice(&port.to_be_bytes());
        h.extend_from_slice(&8443u16.to_be_bytes());
        h.extend_from_slice(tlvs);
        h
    }

    #[test]
    fn cidrs_parse_and_match() {
        let net = Cidr::parse("10.0.0.0/8").expect("parses");
        assert!(net.contains("10.200.0.1".parse().expect("ip")));
        assert!(net.contains("::ffff:10.0.0.1".parse().expect("ip")));
        assert!(!net.contains("11.0.0.1".parse().expect("ip")));
        let one = Cidr::parse("192.0.2.7").expect("parses");
        assert!(one.contains("192.0.2.7".parse().expect("ip")));
        assert!(!one.contains("192.0.2.8".parse().expect("ip")));
        let v6 = Cidr::parse("2001:db8::/32").expect("parses");
        assert!(v6.contains("2001:db8:1::1".parse().expect("ip")));
        assert!(!v6.contains("10.0.0.1".parse().expect("ip")));
        assert!(
            Cidr::parse("0.0.0.0/0")
                .expect("parses")
                .contains("8.8.8.8".parse().expect("ip"))
        );
        for bad in [
            "",
            "10.0.0.0/33",
            "x/8",
            "10.0.0.0/-1",
            "::/129",
            "10.0.0.0/",
        ] {
            assert!(Cidr::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[tokio::test]
    async fn v1_and_v2_headers_from_a_trusted_balancer_name_the_client() {
        let mut bytes = b"PROXY TCP4 203.0.113.9 192.0.2.1 51000 8443\r\n".to_vec();
        bytes.extend_from_slice(HELLO);
        let a = run(&bytes, balancer(), &policy(true))
            .await
            .expect("accepted");
        assert_eq!(a.client, "203.0.113.9:51000".parse().expect("addr"));
        assert_eq!(a.via, Some(balancer()));
        assert_eq!(a.rest, HELLO, "the TLS bytes are kept");

        let mut bytes = v2([198, 51, 100, 4], 52000, &[0x04, 0x00, 0x02, 0xab, 0xcd]);
        bytes.extend_from_slice(HELLO);
        let a = run(&bytes, balancer(), &policy(true))
            .await
            .expect("accepted");
        assert_eq!(a.client, "198.51.100.4:52000".parse().expect("addr"));
        assert_eq!(a.rest, HELLO);

        let mut bytes = b"PROXY TCP6 2001:db8::9 2001:db8::1 51000 8443\r\n".to_vec();
        bytes.extend_from_slice(HELLO);
        let a = run(&bytes, balancer(), &policy(true))
            .await
            .expect("accepted");
        assert_eq!(a.client, "[2001:db8::9]:51000".parse().expect("addr"));

        // The shortest v1 header is shorter than the prefix read first.
        let mut bytes = b"PROXY UNKNOWN\r\n".to_vec();
        bytes.extend_from_slice(HELLO);
        let a = run(&bytes, balancer(), &policy(true))
            .await
            .expect("accepted");
        assert_eq!(
            (a.client, a.via),
            (balancer(), None),
            "UNKNOWN keeps the peer"
        );
        assert_eq!(a.rest, HELLO);
    }

    #[tokio::test]
    async fn headers_from_anyone_else_are_refused() {
        let stranger: SocketAddr = "203.0.113.50:1234".parse().expect("addr");
        let bytes = b"PROXY TCP4 1.2.3.4 192.0.2.1 1 8443\r\n";
        assert_eq!(
            run(bytes, stranger, &policy(false)).await,
            Err(ProxyError::Untrusted { peer: stranger })
        );
        let bytes = v2([1, 2, 3, 4], 1, &[]);
        assert_eq!(
            run(&bytes, stranger, &policy(false)).await,
            Err(ProxyError::Untrusted { peer: stranger })
        );
        // Without a header, a stranger is served as before.
        let a = run(HELLO, stranger, &policy(true)).await.expect("served");
        assert_eq!((a.client, a.rest.as_slice()), (stranger, HELLO));
    }

    #[tokio::test]
    async fn a_trusted_balancer_without_a_header_is_closed_only_when_required() {
        assert_eq!(
            run(HELLO, balancer(), &policy(true)).await,
            Err(ProxyError::Missing { peer: balancer() })
        );
        let a = run(HELLO, balancer(), &policy(false))
            .await
            .expect("served");
        assert_eq!((a.client, a.rest.as_slice()), (balancer(), HELLO));
    }

    #[tokio::test]
    async fn hostile_headers_are_refused_without_a_panic() {
        let p = policy(true);
        let long_v1 = [b"PROXY TCP4 ".as_slice(), &[b'1'; 200]].concat();
        assert!(matches!(
            run(&long_v1, balancer(), &p).await,
            Err(ProxyError::TooLong { .. })
        ));
        let mut long_v2 = v2([1, 2, 3, 4], 1, &[]);
        long_v2[14..16].copy_from_slice(&u16::MAX.to_be_bytes());
        assert!(matches!(
            run(&long_v2, balancer(), &p).await,
            Err(ProxyError::TooLong { .. })
        ));
        for bad in [
            b"PROXY TCP4 999.1.1.1 192.0.2.1 1 2\r\n".to_vec(),
            b"PROXY TCP4 1.1.1.1 192.0.2.1 99999 2\r\n".to_vec(),
            b"PROXY TCP9 1.1.1.1 192.0.2.1 1 2\r\n".to_vec(),
            b"PROXY TCP4 1.1.1.1\r\n".to_vec(),
            b"PROXY \r\n\0\0\0\0\0\0\0\0\0\0\0".to_vec(),
            // A truncated v2 header: the connection ends inside it.
            v2([1, 2, 3, 4], 1, &[])[..20].to_vec(),
            // A v2 header with a bad version nibble.
            {
                let mut h = v2([1, 2, 3, 4], 1, &[]);
                h[12] = 0x31;
                h
            },
            // Addresses longer than the length says.
            {
                let mut h = v2([1, 2, 3, 4], 1, &[]);
                h[14..16].copy_from_slice(&4u16.to_be_bytes());
                h
            },
        ] {
            let r = run(&bad, balancer(), &p).await;
            assert!(
                matches!(
                    r,
                    Err(ProxyError::Malformed { .. } | ProxyError::TooLong { .. })
                ),
                "{bad:?}: {r:?}"
            );
        }
        // A v1 header cut short before its line end.
        let r = run(b"PROXY TCP4 1.1.1.1 2.2.2.2 1 2", balancer(), &p).await;
        assert!(matches!(r, Err(ProxyError::Malformed { .. })), "{r:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_connection_is_closed_at_the_timeout() {
        let (_client, mut server) = tokio::io::duplex(64);
        let r = accept(&mut server, balancer(), &policy(true)).await;
        assert_eq!(r, Err(ProxyError::Timeout { peer: balancer() }));
    }

    #[tokio::test]
    async fn rewind_replays_the_prefix_then_reads_on() {
        let mut r = Rewind::new(b"abc".to_vec(), b"def".as_slice());
        let mut out = String::new();
        tokio::io::AsyncReadExt::read_to_string(&mut r, &mut out)
            .await
            .expect("reads");
        assert_eq!(out, "abcdef");
    }
}
