//! The injectable resolver: hickory with the system configuration by
//! default, a static table for tests.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::OnceLock;
use std::time::Duration;

use hickory_resolver::config::{NameServerConfig, ResolverConfig, ResolverOpts};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::proto::ProtoErrorKind;
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::xfer::Protocol;
use hickory_resolver::{ResolveError, TokioResolver};

use crate::dial::BoxFuture;

/// Why a name could not be resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DnsErrorKind {
    /// The name does not exist (NXDOMAIN).
    NxDomain,
    /// The DNS server failed to answer (SERVFAIL).
    ServFail,
    /// No answer arrived in time.
    Timeout,
    /// The name exists but has no A or AAAA record.
    NoAddress,
    /// Anything else, with the resolver's message.
    Other(String),
}

impl fmt::Display for DnsErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DnsErrorKind::NxDomain => f.write_str("no such name (NXDOMAIN)"),
            DnsErrorKind::ServFail => f.write_str("server failure (SERVFAIL)"),
            DnsErrorKind::Timeout => f.write_str("timed out"),
            DnsErrorKind::NoAddress => f.write_str("no A or AAAA records"),
            DnsErrorKind::Other(msg) => write!(f, "{msg}"),
        }
    }
}

/// The error a [`Resolve`] returns.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind}")]
pub struct DnsError {
    /// The classified cause.
    pub kind: DnsErrorKind,
}

impl From<DnsErrorKind> for DnsError {
    fn from(kind: DnsErrorKind) -> Self {
        DnsError { kind }
    }
}

/// Injectable DNS. The default is hickory-resolver with the system config
/// (/etc/resolv.conf and /etc/hosts).
pub trait Resolve: Send + Sync + fmt::Debug {
    /// Resolves a host name (never an IP literal: the transport answers
    /// those itself) to its addresses, in preference order.
    fn resolve<'a>(&'a self, host: &'a str) -> BoxFuture<'a, Result<Vec<IpAddr>, DnsError>>;

    /// The names `ip`'s PTR records give (reverse DNS), without the trailing
    /// dot, in the order they came: the scanner's `reverse_dns` SNI. The
    /// default knows no reverse names (NXDOMAIN).
    fn reverse(&self, ip: IpAddr) -> BoxFuture<'_, Result<Vec<String>, DnsError>> {
        let _ = ip;
        Box::pin(async { Err(DnsErrorKind::NxDomain.into()) })
    }
}

/// hickory-resolver, configured from /etc/resolv.conf and /etc/hosts (or from
/// an explicit list of name servers). The resolver is built on first use, so
/// a missing or broken resolv.conf surfaces as a DNS-phase error that names
/// the problem rather than as a construction failure.
pub struct SystemResolver {
    source: ResolverSource,
    inner: OnceLock<Result<TokioResolver, String>>,
}

enum ResolverSource {
    System,
    NameServers {
        servers: Vec<SocketAddr>,
        timeout: Duration,
    },
}

impl SystemResolver {
    /// A resolver that reads the operating system's configuration.
    pub fn new() -> Self {
        SystemResolver {
            source: ResolverSource::System,
            inner: OnceLock::new(),
        }
    }

    /// A resolver that asks the given name servers over UDP (with TCP
    /// fallback), one attempt each with the given timeout, ignoring
    /// /etc/hosts. For tests and for the doctor's "ask this server" check.
    pub fn with_name_servers(servers: Vec<SocketAddr>, timeout: Duration) -> Self {
        SystemResolver {
            source: ResolverSource::NameServers { servers, timeout },
            inner: OnceLock::new(),
        }
    }

    fn build(&self) -> Result<TokioResolver, String> {
        match &self.source {
            ResolverSource::System => TokioResolver::builder_tokio()
                .map(|b| b.build())
                .map_err(|e| format!("cannot read the system resolver configuration: {e}")),
            ResolverSource::NameServers { servers, timeout } => {
                let mut config = ResolverConfig::new();
                for addr in servers {
                    config.add_name_server(NameServerConfig::new(*addr, Protocol::Udp));
                }
                let mut builder =
                    TokioResolver::builder_with_config(config, TokioConnectionProvider::default());
                let opts: &mut ResolverOpts = builder.options_mut();
                opts.timeout = *timeout;
                opts.attempts = 1;
                opts.use_hosts_file = hickory_resolver::config::ResolveHosts::Never;
                opts.cache_size = 0;
                Ok(builder.build())
            }
        }
    }
}

impl Default for SystemResolver {
    fn default() -> Self {
        SystemResolver::new()
    }
}

impl fmt::Debug for SystemResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.source {
            ResolverSource::System => f.write_str("SystemResolver(system)"),
            ResolverSource::NameServers { servers, .. } => {
                write!(f, "SystemResolver({servers:?})")
            }
        }
    }
}

impl SystemResolver {
    fn resolver(&self) -> Result<&TokioResolver, DnsError> {
        self.inner
            .get_or_init(|| self.build())
            .as_ref()
            .map_err(|msg| DnsError::from(DnsErrorKind::Other(msg.clone())))
    }
}

impl Resolve for SystemResolver {
    fn reverse(&self, ip: IpAddr) -> BoxFuture<'_, Result<Vec<String>, DnsError>> {
        Box::pin(async move {
            let lookup = self
                .resolver()?
                .reverse_lookup(ip)
                .await
                .map_err(|e| classify(&e))?;
            Ok(lookup
                .iter()
                .map(|n| n.0.to_utf8().trim_end_matches('.').to_owned())
                .collect())
        })
    }

    fn resolve<'a>(&'a self, host: &'a str) -> BoxFuture<'a, Result<Vec<IpAddr>, DnsError>> {
        Box::pin(async move {
            let resolver = self.resolver()?;
            let lookup = resolver.lookup_ip(host).await.map_err(|e| classify(&e))?;
            let addrs: Vec<IpAddr> = lookup.iter().collect();
            if addrs.is_empty() {
                return Err(DnsErrorKind::NoAddress.into());
            }
            Ok(addrs)
        })
    }
}

/// Maps hickory's error to the kinds the error catalog distinguishes.
fn classify(err: &ResolveError) -> DnsError {
    let kind = match err.proto().map(|p| p.kind()) {
        Some(ProtoErrorKind::NoRecordsFound { response_code, .. }) => match *response_code {
            ResponseCode::NXDomain => DnsErrorKind::NxDomain,
            ResponseCode::ServFail => DnsErrorKind::ServFail,
            ResponseCode::NoError => DnsErrorKind::NoAddress,
            other => DnsErrorKind::Other(format!("the DNS server answered {other}")),
        },
        Some(ProtoErrorKind::Timeout) => DnsErrorKind::Timeout,
        _ => DnsErrorKind::Other(err.to_string()),
    };
    kind.into()
}

/// A fixed table of answers, for tests and for pinning a name to an address
/// by configuration. Names not in the table are NXDOMAIN.
#[derive(Debug, Clone, Default)]
pub struct StaticResolver {
    entries: HashMap<String, Result<Vec<IpAddr>, DnsErrorKind>>,
    ptr: HashMap<IpAddr, Vec<String>>,
}

impl StaticResolver {
    /// An empty table: every name is NXDOMAIN.
    pub fn new() -> Self {
        StaticResolver::default()
    }

    /// Adds (or replaces) an answer for `host` (matched case-insensitively).
    pub fn with(mut self, host: &str, answer: Result<Vec<IpAddr>, DnsErrorKind>) -> Self {
        self.insert(host, answer);
        self
    }

    /// Adds (or replaces) the reverse names of `ip`; addresses not given
    /// have none (NXDOMAIN).
    pub fn with_ptr(mut self, ip: IpAddr, names: &[&str]) -> Self {
        self.ptr
            .insert(ip, names.iter().map(|n| (*n).to_owned()).collect());
        self
    }

    /// Adds (or replaces) an answer for `host` (matched case-insensitively).
    pub fn insert(&mut self, host: &str, answer: Result<Vec<IpAddr>, DnsErrorKind>) {
        self.entries.insert(normalize(host), answer);
    }
}

impl From<HashMap<String, Result<Vec<IpAddr>, DnsErrorKind>>> for StaticResolver {
    fn from(map: HashMap<String, Result<Vec<IpAddr>, DnsErrorKind>>) -> Self {
        let mut r = StaticResolver::new();
        for (host, answer) in map {
            r.insert(&host, answer);
        }
        r
    }
}

impl Resolve for StaticResolver {
    fn resolve<'a>(&'a self, host: &'a str) -> BoxFuture<'a, Result<Vec<IpAddr>, DnsError>> {
        let answer = match self.entries.get(&normalize(host)) {
            Some(Ok(addrs)) if addrs.is_empty() => Err(DnsErrorKind::NoAddress.into()),
            Some(Ok(addrs)) => Ok(addrs.clone()),
            Some(Err(kind)) => Err(kind.clone().into()),
            None => Err(DnsErrorKind::NxDomain.into()),
        };
        Box::pin(async move { answer })
    }

    fn reverse(&self, ip: IpAddr) -> BoxFuture<'_, Result<Vec<String>, DnsError>> {
        let answer = self
            .ptr
            .get(&ip)
            .cloned()
            .ok_or_else(|| DnsErrorKind::NxDomain.into());
        Box::pin(async move { answer })
    }
}

fn normalize(host: &str) -> String {
    host.trim_end_matches('.').to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn static_resolver_answers_from_its_table() {
        let ip: IpAddr = "192.0.2.7".parse().expect("literal");
        let r = StaticResolver::new()
            .with("Server.Example", Ok(vec![ip]))
            .with("servfail.example", Err(DnsErrorKind::ServFail))
            .with("empty.example", Ok(vec![]));
        assert_eq!(r.resolve("server.example.").await, Ok(vec![ip]));
        assert_eq!(
            r.resolve("servfail.example").await.map_err(|e| e.kind),
            Err(DnsErrorKind::ServFail)
        );
        assert_eq!(
            r.resolve("empty.example").await.map_err(|e| e.kind),
            Err(DnsErrorKind::NoAddress)
        );
        assert_eq!(
            r.resolve("missing.example").await.map_err(|e| e.kind),
            Err(DnsErrorKind::NxDomain)
        );
        let r = r.with_ptr(ip, &["server.example"]);
        assert_eq!(r.reverse(ip).await, Ok(vec!["server.example".to_owned()]));
        let other: IpAddr = "192.0.2.8".parse().expect("literal");
        assert_eq!(
            r.reverse(other).await.map_err(|e| e.kind),
            Err(DnsErrorKind::NxDomain)
        );
    }
}
