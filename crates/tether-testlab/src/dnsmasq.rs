//! A real dnsmasq on 127.0.0.1:PORT: `good.test` → 127.0.0.1, `nx.test`
//! NXDOMAIN, `fail.test` forwarded to an upstream that answers SERVFAIL,
//! which dnsmasq relays (a dead upstream makes dnsmasq stay silent instead),
//! and PTR records the test chooses (`start_with_ptr`).
//!
//! [`Dnsmasq::start_for`] serves a test's network namespace: it also
//! listens on the root end of its veth, and answers `good.test` (and every
//! name under it) with that address, which programs inside the namespace
//! reach the host on (pebble's validator, [`crate::pebble`]).

use std::net::Ipv4Addr;
use std::time::Duration;

use tokio::process::{Child, Command};

use crate::netns::Netns;
use crate::process::read_logs;
use crate::{Scratch, free_port, program, spawn_logged};

pub struct Dnsmasq {
    pub port: u16,
    /// The addresses it listens on (127.0.0.1 first).
    pub ips: Vec<Ipv4Addr>,
    /// What `good.test` and the names under it resolve to.
    pub good: Ipv4Addr,
    _dir: Scratch,
    _child: Child,
    upstream: tokio::task::JoinHandle<()>,
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        self.upstream.abort();
    }
}

impl Dnsmasq {
    pub async fn start() -> Dnsmasq {
        Dnsmasq::start_with_ptr(&[]).await
    }

    /// The same server, also answering PTR queries for each address with
    /// its name (`--ptr-record`); other addresses have no reverse name.
    pub async fn start_with_ptr(ptr: &[(std::net::IpAddr, &str)]) -> Dnsmasq {
        Dnsmasq::start_inner(ptr, Ipv4Addr::LOCALHOST, &[]).await
    }

    /// The same server for programs inside `ns`: it listens on 127.0.0.1
    /// and on `ns.host_ip`, and answers `good.test` (and every name under
    /// it) with `ns.host_ip`, where the namespace reaches the host.
    pub async fn start_for(ns: &Netns) -> Dnsmasq {
        Dnsmasq::start_inner(&[], ns.host_ip, &[ns.host_ip]).await
    }

    async fn start_inner(
        ptr: &[(std::net::IpAddr, &str)],
        good: Ipv4Addr,
        also_on: &[Ipv4Addr],
    ) -> Dnsmasq {
        let mut ips = vec![Ipv4Addr::LOCALHOST];
        ips.extend_from_slice(also_on);
        let listen_args: Vec<String> = ips
            .iter()
            .map(|ip| format!("--listen-address={ip}"))
            .collect();
        let good_arg = format!("--address=/good.test/{good}");
        let ptr_args: Vec<String> = ptr
            .iter()
            .map(|(ip, name)| format!("--ptr-record={},{name}", reverse_name(*ip)))
            .collect();
        let bin = program("dnsmasq");
        let failing = tokio::net::UdpSocket::bind("127.0.0.1:0")
            .await
            .expect("bind upstream");
        let upstream_port = failing.local_addr().expect("addr").port();
        let upstream = tokio::spawn(async move {
            let mut buf = [0u8; 512];
            loop {
                let Ok((n, peer)) = failing.recv_from(&mut buf).await else {
                    return;
                };
                if n < 12 {
                    continue;
                }
                // Same id and question; QR=1, RD, RA, RCODE=2 (SERVFAIL).
                buf[2] = 0x81;
                buf[3] = 0x82;
                let _ = failing.send_to(&buf[..n], peer).await;
            }
        });
        let server_arg = format!("--server=/fail.test/127.0.0.1#{upstream_port}");
        let dir = Scratch::new("dnsmasq");
        let out = dir.path().join("dnsmasq.out");
        // The port is only free when asked; another process can take it
        // first, so a failed start is retried on a fresh one.
        for _ in 0..5 {
            let port = free_port();
            let mut child = spawn_logged(
                Command::new(&bin)
                    .args([
                        "--no-daemon",
                        "--keep-in-foreground",
                        "--port",
                        &port.to_string(),
                        "--bind-interfaces",
                        "--no-resolv",
                        "--no-hosts",
                        "--user=root",
                        "--pid-file",
                        &good_arg,
                        "--address=/nx.test/",
                        &server_arg,
                    ])
                    .args(&listen_args)
                    .args(&ptr_args),
                dir.path(),
                "dnsmasq",
            );
            // dnsmasq binds before it logs "started"; probe with a TCP
            // connect (it serves DNS over TCP too).
            for _ in 0..50 {
                if tokio::net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .is_ok()
                {
                    return Dnsmasq {
                        port,
                        ips,
                        good,
                        _dir: dir,
                        _child: child,
                        upstream,
                    };
                }
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            eprintln!("dnsmasq did not come up on {port}:\n{}", read_logs(&[&out]));
        }
        panic!("dnsmasq did not start (see stderr above)");
    }
}

/// The in-addr.arpa (or ip6.arpa) name of an address's PTR record.
fn reverse_name(ip: std::net::IpAddr) -> String {
    match ip {
        std::net::IpAddr::V4(v4) => {
            let [a, b, c, d] = v4.octets();
            format!("{d}.{c}.{b}.{a}.in-addr.arpa")
        }
        std::net::IpAddr::V6(v6) => {
            let nibbles: Vec<String> = v6
                .octets()
                .iter()
                .rev()
                .flat_map(|b| [b & 0xf, b >> 4])
                .map(|n| format!("{n:x}"))
                .collect();
            format!("{}.ip6.arpa", nibbles.join("."))
        }
    }
}
