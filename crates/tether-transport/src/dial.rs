//! The injectable TCP dialer and the classification of connect failures.

use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};

/// A boxed, sendable future (the crate avoids a dependency on `futures`).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A byte stream the transport can run TLS over: a TCP socket, a proxy
/// tunnel, or a test double.
pub trait Io: AsyncRead + AsyncWrite + Send + Unpin {}

impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

/// A boxed [`Io`], as returned by a [`Dial`].
pub type BoxedIo = Box<dyn Io>;

/// Opens TCP connections. The default is [`TcpDialer`]; tests inject dialers
/// that fail or hang.
pub trait Dial: Send + Sync + fmt::Debug {
    /// Connects to one address. Time limits are applied by the caller.
    fn dial(&self, addr: SocketAddr) -> BoxFuture<'_, io::Result<BoxedIo>>;
}

/// The real dialer: `tokio::net::TcpStream::connect` with `TCP_NODELAY`.
#[derive(Debug, Clone, Copy, Default)]
pub struct TcpDialer;

impl Dial for TcpDialer {
    fn dial(&self, addr: SocketAddr) -> BoxFuture<'_, io::Result<BoxedIo>> {
        Box::pin(async move {
            let stream = tokio::net::TcpStream::connect(addr).await?;
            // Requests are small and latency matters more than packet count.
            stream.set_nodelay(true)?;
            Ok(Box::new(stream) as BoxedIo)
        })
    }
}

/// Why a TCP connection attempt failed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConnectErrorKind {
    /// The peer answered with a reset: nothing listens there.
    Refused,
    /// No answer within the time limit: packets are dropped on the way.
    Timeout,
    /// The network or host is unreachable from here (no route, ICMP error).
    Unreachable,
    /// Any other failure, with the operating system's message.
    Other(String),
}

impl ConnectErrorKind {
    /// Classifies an I/O error from a connect call.
    pub fn from_io(err: &io::Error) -> Self {
        match err.kind() {
            io::ErrorKind::ConnectionRefused => ConnectErrorKind::Refused,
            io::ErrorKind::TimedOut => ConnectErrorKind::Timeout,
            io::ErrorKind::HostUnreachable | io::ErrorKind::NetworkUnreachable => {
                ConnectErrorKind::Unreachable
            }
            _ => match err.raw_os_error() {
                // Linux EHOSTUNREACH and ENETUNREACH, for std versions that
                // report them as an uncategorized kind.
                Some(113) | Some(101) if cfg!(target_os = "linux") => ConnectErrorKind::Unreachable,
                _ => ConnectErrorKind::Other(err.to_string()),
            },
        }
    }

    /// How much this failure tells a user about the path, higher is more.
    /// When every address fails, the most telling failure is reported: a
    /// refusal proves the host was reached, and "unreachable" is the usual
    /// noise from an address family this host has no route for.
    pub(crate) fn salience(&self) -> u8 {
        match self {
            ConnectErrorKind::Refused => 3,
            ConnectErrorKind::Timeout => 2,
            ConnectErrorKind::Other(_) => 1,
            ConnectErrorKind::Unreachable => 0,
        }
    }
}

impl fmt::Display for ConnectErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnectErrorKind::Refused => f.write_str("connection refused"),
            ConnectErrorKind::Timeout => f.write_str("timed out"),
            ConnectErrorKind::Unreachable => f.write_str("network or host unreachable"),
            ConnectErrorKind::Other(msg) => write!(f, "{msg}"),
        }
    }
}

/// One failed attempt to connect to one resolved address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectAttempt {
    /// The address tried.
    pub addr: SocketAddr,
    /// Why it failed.
    pub kind: ConnectErrorKind,
    /// How long the attempt took.
    pub elapsed: Duration,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_errors_are_classified() {
        let refused = io::Error::from(io::ErrorKind::ConnectionRefused);
        assert_eq!(
            ConnectErrorKind::from_io(&refused),
            ConnectErrorKind::Refused
        );
        let timed_out = io::Error::from(io::ErrorKind::TimedOut);
        assert_eq!(
            ConnectErrorKind::from_io(&timed_out),
            ConnectErrorKind::Timeout
        );
        let host = io::Error::from(io::ErrorKind::HostUnreachable);
        assert_eq!(
            ConnectErrorKind::from_io(&host),
            ConnectErrorKind::Unreachable
        );
        let net = io::Error::from(io::ErrorKind::NetworkUnreachable);
        assert_eq!(
            ConnectErrorKind::from_io(&net),
            ConnectErrorKind::Unreachable
        );
        #[cfg(target_os = "linux")]
        {
            let raw = io::Error::from_raw_os_error(113);
            assert_eq!(
                ConnectErrorKind::from_io(&raw),
                ConnectErrorKind::Unreachable
            );
        }
        let other = io::Error::other("weird");
        assert_eq!(
            ConnectErrorKind::from_io(&other),
            ConnectErrorKind::Other("weird".to_owned())
        );
    }

    #[test]
    fn refusal_is_more_telling_than_unreachable() {
        assert!(ConnectErrorKind::Refused.salience() > ConnectErrorKind::Timeout.salience());
        assert!(ConnectErrorKind::Timeout.salience() > ConnectErrorKind::Unreachable.salience());
    }
}
