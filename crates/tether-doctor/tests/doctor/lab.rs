//! The world the doctor sees in these tests; the programs and servers
//! around it come from `tether-testlab`.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use tether_doctor::World;
use tether_transport::{BoxFuture, BoxedIo, Dial, Resolve, StaticResolver, TcpDialer};
use tether_wire::{Clock, SystemClock};

pub use tether_testlab::dnsmasq::Dnsmasq;
pub use tether_testlab::mitmproxy::Mitmproxy;
pub use tether_testlab::ntp::Ntp;
pub use tether_testlab::ocsp::OpensslOcsp;
pub use tether_testlab::plain_http::PlainHttp;
pub use tether_testlab::squid::Squid;
pub use tether_testlab::tinyproxy::Tinyproxy;
pub use tether_testlab::{free_port, program};

/// A world on loopback: `localhost` resolves to 127.0.0.1, no name servers,
/// empty hosts file, no systemd.
pub struct Lab {
    pub dir: tempfile::TempDir,
}

impl Lab {
    pub fn new() -> Lab {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("resolv.conf"), "# lab: no name servers\n").expect("write");
        std::fs::write(dir.path().join("hosts"), "").expect("write");
        Lab { dir }
    }

    pub fn world(&self) -> World {
        let resolver =
            StaticResolver::new().with("localhost", Ok(vec!["127.0.0.1".parse().expect("ip")]));
        self.world_with(
            Arc::new(resolver),
            Arc::new(TcpDialer),
            Arc::new(SystemClock),
        )
    }

    pub fn world_with(
        &self,
        resolver: Arc<dyn Resolve>,
        dialer: Arc<dyn Dial>,
        clock: Arc<dyn Clock>,
    ) -> World {
        World {
            clock,
            resolver,
            dialer,
            resolv_conf: self.dir.path().join("resolv.conf"),
            hosts_file: self.dir.path().join("hosts"),
            dns_port: 53,
            systemctl: None,
            service_name: "tether-agent".into(),
        }
    }
}

/// A dialer whose connections never complete: a silently dropped SYN.
#[derive(Debug)]
pub struct BlackholeDialer;

impl Dial for BlackholeDialer {
    fn dial(&self, _addr: SocketAddr) -> BoxFuture<'_, io::Result<BoxedIo>> {
        Box::pin(std::future::pending())
    }
}
