//! The lab: real components on loopback (dnsmasq, tinyproxy, a fake NTP
//! server, a plain HTTP server for CRLs) and the world the doctor sees.
//! A missing program fails the test loudly, naming the install script.

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use tether_doctor::World;
use tether_transport::{BoxFuture, BoxedIo, Dial, Resolve, StaticResolver, TcpDialer};
use tether_wire::{Clock, SystemClock};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};

pub fn binary(name: &str) -> PathBuf {
    ["/usr/sbin", "/usr/bin", "/sbin", "/bin", "/usr/local/bin"]
        .iter()
        .map(|d| PathBuf::from(d).join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{name} is missing: run scripts/install-test-deps.sh"))
}

/// A program found on `PATH` (pip installs land there, not in /usr/bin).
pub fn on_path(name: &str) -> PathBuf {
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .chain(["/usr/local/bin", "/usr/bin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{name} is missing: run scripts/install-test-deps.sh"))
}

pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

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

/// A fake NTP server on UDP loopback answering with this host's real time
/// plus `offset`. The reply is built here, independently of the doctor's
/// SNTP code.
pub struct Ntp {
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Ntp {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Ntp {
    pub async fn start(offset: time::Duration) -> Ntp {
        let sock = tokio::net::UdpSocket::bind("127.0.0.1:0")
            .await
            .expect("bind udp");
        let addr = sock.local_addr().expect("addr");
        let task = tokio::spawn(async move {
            let mut buf = [0u8; 512];
            loop {
                let Ok((n, peer)) = sock.recv_from(&mut buf).await else {
                    return;
                };
                if n < 48 {
                    continue;
                }
                let now = time::OffsetDateTime::now_utc() + offset;
                let secs = (now.unix_timestamp() + 2_208_988_800) as u64;
                let frac = ((now.nanosecond() as u64) << 32) / 1_000_000_000;
                let ts = ((secs << 32) | frac).to_be_bytes();
                let mut reply = [0u8; 48];
                reply[0] = 0x24; // v4, server
                reply[1] = 1; // stratum 1
                reply[24..32].copy_from_slice(&buf[40..48]);
                reply[32..40].copy_from_slice(&ts);
                reply[40..48].copy_from_slice(&ts);
                let _ = sock.send_to(&reply, peer).await;
            }
        });
        Ntp { addr, task }
    }
}

/// A real dnsmasq on 127.0.0.1:PORT: `good.test` → 127.0.0.1, `nx.test`
/// NXDOMAIN, `fail.test` forwarded to an upstream that answers SERVFAIL,
/// which dnsmasq relays (a dead upstream makes dnsmasq stay silent instead).
pub struct Dnsmasq {
    pub port: u16,
    _child: tokio::process::Child,
    upstream: tokio::task::JoinHandle<()>,
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        self.upstream.abort();
    }
}

impl Dnsmasq {
    pub async fn start() -> Dnsmasq {
        let bin = binary("dnsmasq");
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
        for _ in 0..5 {
            let port = free_port();
            let mut child = tokio::process::Command::new(&bin)
                .args([
                    "--no-daemon",
                    "--keep-in-foreground",
                    "--port",
                    &port.to_string(),
                    "--listen-address",
                    "127.0.0.1",
                    "--bind-interfaces",
                    "--no-resolv",
                    "--no-hosts",
                    "--user=root",
                    "--pid-file",
                    "--address=/good.test/127.0.0.1",
                    "--address=/nx.test/",
                    &server_arg,
                ])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .kill_on_drop(true)
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start dnsmasq: {e}"));
            // dnsmasq binds before it logs "started"; probe with a TCP
            // connect (it serves DNS over TCP too).
            for _ in 0..50 {
                if tokio::net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .is_ok()
                {
                    return Dnsmasq {
                        port,
                        _child: child,
                        upstream,
                    };
                }
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ =
                    tokio::time::timeout(Duration::from_millis(200), e.read_to_string(&mut err))
                        .await;
            }
            eprintln!("dnsmasq did not come up on {port}: {err}");
        }
        panic!("dnsmasq did not start (see stderr above)");
    }
}

/// A real tinyproxy on loopback demanding `user:pass`, allowing CONNECT to
/// `connect_port` only.
pub struct Tinyproxy {
    pub port: u16,
    _dir: tempfile::TempDir,
    _child: tokio::process::Child,
}

impl Tinyproxy {
    pub async fn start(connect_port: u16) -> Tinyproxy {
        let bin = binary("tinyproxy");
        let port = free_port();
        let dir = tempfile::tempdir().expect("tempdir");
        let config = format!(
            "Port {port}\nListen 127.0.0.1\nTimeout 30\nMaxClients 20\nAllow 127.0.0.1\nBasicAuth user pass\n\
             ConnectPort {connect_port}\nLogLevel Info\nLogFile \"{}\"\nPidFile \"{}\"\n",
            dir.path().join("tp.log").display(),
            dir.path().join("tp.pid").display()
        );
        let conf = dir.path().join("tp.conf");
        std::fs::write(&conf, config).expect("write");
        let mut child = tokio::process::Command::new(&bin)
            .arg("-d")
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start tinyproxy: {e}"));
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                return Tinyproxy {
                    port,
                    _dir: dir,
                    _child: child,
                };
            }
            if let Ok(Some(s)) = child.try_wait() {
                panic!("tinyproxy exited with {s}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("tinyproxy did not listen on {port}");
    }
}

/// A plain HTTP server answering every GET with its current body (a CRL).
pub struct PlainHttp {
    body: Arc<std::sync::Mutex<Vec<u8>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for PlainHttp {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl PlainHttp {
    pub fn set_body(&self, body: Vec<u8>) {
        *self.body.lock().expect("not poisoned") = body;
    }

    pub async fn start_on(port: u16, body: Vec<u8>) -> PlainHttp {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .expect("bind");
        let body = Arc::new(std::sync::Mutex::new(body));
        let shared = body.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut s, _)) = listener.accept().await else {
                    return;
                };
                let body = shared.lock().expect("not poisoned").clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    let mut got = Vec::new();
                    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                        match s.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => got.extend_from_slice(&buf[..n]),
                        }
                    }
                    let head = format!(
                        "HTTP/1.0 200 OK\r\nContent-Type: application/pkix-crl\r\nContent-Length: {}\r\n\r\n",
                        body.len()
                    );
                    let _ = s.write_all(head.as_bytes()).await;
                    let _ = s.write_all(&body).await;
                    let _ = s.shutdown().await;
                });
            }
        });
        PlainHttp { body, task }
    }
}

/// A real `openssl ocsp` responder for `ca` on `port`, signing with the
/// CA's own key, answering from an index that lists `good` as valid and
/// `revoked` as revoked (anything else is "unknown" to it).
pub struct OpensslOcsp {
    _dir: tempfile::TempDir,
    _child: tokio::process::Child,
}

impl OpensslOcsp {
    pub async fn start(port: u16, ca: &crate::pki::Ca, good: &[u8], revoked: &[u8]) -> OpensslOcsp {
        let bin = binary("openssl");
        let dir = tempfile::tempdir().expect("tempdir");
        let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02X}")).collect::<String>();
        let index = format!(
            "V\t351231235959Z\t\t{}\tunknown\t/CN=localhost\n\
             R\t351231235959Z\t250101000000Z,keyCompromise\t{}\tunknown\t/CN=localhost\n",
            hex(good),
            hex(revoked)
        );
        std::fs::write(dir.path().join("index.txt"), index).expect("write");
        std::fs::write(dir.path().join("index.txt.attr"), "unique_subject = no\n").expect("write");
        std::fs::write(dir.path().join("ca.pem"), ca.pem()).expect("write");
        std::fs::write(dir.path().join("ca.key"), ca.key_pem()).expect("write");
        let mut child = tokio::process::Command::new(&bin)
            .current_dir(dir.path())
            .args([
                "ocsp",
                "-index",
                "index.txt",
                "-CA",
                "ca.pem",
                "-rsigner",
                "ca.pem",
                "-rkey",
                "ca.key",
                "-ignore_err",
                "-port",
                &port.to_string(),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start openssl ocsp: {e}"));
        // openssl 3.0's responder wedges on a connection closed without a
        // request, so readiness is read from its log, not probed by a
        // connect: it says "waiting for OCSP client connections" once bound.
        let stderr = child.stderr.take().expect("stderr is piped");
        let mut lines = tokio::io::BufReader::new(stderr).lines();
        let mut seen = Vec::new();
        let ready = tokio::time::timeout(Duration::from_secs(5), async {
            while let Ok(Some(line)) = lines.next_line().await {
                let done = line.contains("waiting for OCSP client connections");
                seen.push(line);
                if done {
                    return true;
                }
            }
            false
        })
        .await;
        if ready != Ok(true) {
            let status = child.try_wait().ok().flatten();
            panic!(
                "openssl ocsp did not come up on {port} within 5 s (exit: {status:?}): {}",
                seen.join(" | ")
            );
        }
        // Keep draining its log so it never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        OpensslOcsp {
            _dir: dir,
            _child: child,
        }
    }
}

/// A real mitmproxy (`mitmdump`) in regular proxy mode on 127.0.0.1,
/// intercepting TLS with its own CA (generated in its private confdir) and
/// not verifying the upstream (`--ssl-insecure`, the test server's CA is
/// not mitmproxy's business).
pub struct Mitmproxy {
    pub port: u16,
    _dir: tempfile::TempDir,
    _child: tokio::process::Child,
}

impl Mitmproxy {
    /// Waits at most 60 s for mitmproxy to say it listens (Python starts
    /// slowly on a loaded machine); fails loudly with its output otherwise.
    pub async fn start() -> Mitmproxy {
        let bin = on_path("mitmdump");
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let mut child = tokio::process::Command::new(&bin)
            .args([
                "--mode",
                "regular",
                "--listen-host",
                "127.0.0.1",
                "--listen-port",
                &port.to_string(),
                "--set",
                &format!("confdir={}", dir.path().display()),
                "--ssl-insecure",
                "--quiet",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        let started = tokio::time::Instant::now();
        while started.elapsed() < Duration::from_secs(60) {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                return Mitmproxy {
                    port,
                    _dir: dir,
                    _child: child,
                };
            }
            if let Ok(Some(status)) = child.try_wait() {
                let mut err = String::new();
                if let Some(mut e) = child.stderr.take() {
                    let _ = e.read_to_string(&mut err).await;
                }
                panic!("mitmdump exited with {status}: {err}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("mitmdump did not listen on 127.0.0.1:{port} within 60 s");
    }
}

/// A real squid on 127.0.0.1 demanding Basic auth (`basic_ncsa_auth` over
/// an htpasswd file hashed by `openssl passwd -apr1`), allowing CONNECT to
/// `connect_port` only. Foreground (`-N`), with its own config, logs, pid
/// file and service name (its shared memory is named after it) in a temp dir.
pub struct Squid {
    pub port: u16,
    pub dir: tempfile::TempDir,
    _child: tokio::process::Child,
}

impl Squid {
    pub async fn start(connect_port: u16, user: &str, password: &str) -> Squid {
        use std::os::unix::fs::PermissionsExt;
        let bin = binary("squid");
        let helper = [
            "/usr/lib/squid/basic_ncsa_auth",
            "/usr/lib64/squid/basic_ncsa_auth",
        ]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .expect("basic_ncsa_auth is missing: run scripts/install-test-deps.sh (squid)");
        let dir = tempfile::tempdir().expect("tempdir");
        // squid drops root for its own user, which must write its logs here.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777))
            .expect("chmod");
        let hash = std::process::Command::new(binary("openssl"))
            .args(["passwd", "-apr1", password])
            .output()
            .expect("run openssl passwd");
        assert!(hash.status.success(), "openssl passwd -apr1 failed");
        let hash = String::from_utf8(hash.stdout).expect("ASCII hash");
        let htpasswd = dir.path().join("htpasswd");
        std::fs::write(&htpasswd, format!("{user}:{}\n", hash.trim())).expect("write");
        std::fs::set_permissions(&htpasswd, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let d = dir.path().display();
        let port = free_port();
        let config = format!(
            "http_port 127.0.0.1:{port}\n\
             pid_filename {d}/squid.pid\n\
             cache_log {d}/cache.log\n\
             access_log {d}/access.log\n\
             cache_store_log none\n\
             coredump_dir {d}\n\
             cache deny all\n\
             netdb_filename none\n\
             shutdown_lifetime 0 seconds\n\
             auth_param basic program {} {}\n\
             auth_param basic realm tether-lab\n\
             acl authed proxy_auth REQUIRED\n\
             acl lab_ports port {connect_port}\n\
             acl CONNECT method CONNECT\n\
             http_access deny CONNECT !lab_ports\n\
             http_access allow authed\n\
             http_access deny all\n",
            helper.display(),
            htpasswd.display()
        );
        let conf = dir.path().join("squid.conf");
        std::fs::write(&conf, config).expect("write");
        let service = format!("tdoc{}{port}", std::process::id());
        let mut child = tokio::process::Command::new(&bin)
            .args(["-N", "-n", &service, "-f"])
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start squid: {e}"));
        for _ in 0..200 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                return Squid {
                    port,
                    dir,
                    _child: child,
                };
            }
            if let Ok(Some(status)) = child.try_wait() {
                let mut err = String::new();
                if let Some(mut e) = child.stderr.take() {
                    let _ = e.read_to_string(&mut err).await;
                }
                let log = std::fs::read_to_string(dir.path().join("cache.log")).unwrap_or_default();
                panic!("squid exited with {status}: {err}\n{log}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("squid did not listen on 127.0.0.1:{port} within 10 s");
    }
}
