//! A network namespace of the test's own, joined to the root namespace by
//! one veth pair on a private /30 (10.200.K.0/30): the root side is
//! 10.200.K.1, the namespace side 10.200.K.2. Traffic to it never leaves
//! the machine. Inside the namespace run a real TCP listener (socat) and a
//! real firewall (iptables); 10.200.K.8/30 is routed into the namespace,
//! which declares it `unreachable`, so the namespace's kernel answers with
//! ICMP host-unreachable.
//!
//! [`Netns`] removes everything it made when dropped, also when the test
//! fails. A host that does not permit `ip netns` fails the test with the
//! reason.

use std::net::Ipv4Addr;
use std::process::{Child, Command, Output, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use crate::program as binary;

/// Serialises the choice of a free /24, so parallel tests never share one.
static ALLOCATE: Mutex<()> = Mutex::new(());
static COUNTER: AtomicU32 = AtomicU32::new(0);

pub struct Netns {
    pub name: String,
    host_if: String,
    /// The root namespace's end of the veth: what the namespace reaches
    /// the host on (a listener in the root namespace bound to it, or to
    /// 0.0.0.0, answers programs inside the namespace).
    pub host_ip: Ipv4Addr,
    /// The namespace's end of the veth, where listeners bind.
    pub ns_ip: Ipv4Addr,
    /// An address routed into the namespace, which declares it unreachable.
    pub unreachable_ip: Ipv4Addr,
    children: Vec<Child>,
}

fn run(args: &[&str]) -> Output {
    let ip = binary("ip");
    Command::new(&ip)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {} {}: {e}", ip.display(), args.join(" ")))
}

fn must(args: &[&str]) {
    let out = run(args);
    assert!(
        out.status.success(),
        "`ip {}` failed ({}): {} (the netns lab needs root and CAP_NET_ADMIN)",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
}

impl Netns {
    /// Creates the namespace, the veth pair, the addresses and the routes.
    // No `Default`: creating a namespace is an action with side effects.
    #[allow(clippy::new_without_default)]
    pub fn new() -> Netns {
        let _held = ALLOCATE.lock().unwrap_or_else(|p| p.into_inner());
        let seq = COUNTER.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        let taken = String::from_utf8_lossy(&run(&["-4", "route", "show"]).stdout).into_owned();
        let start = (pid + seq * 37) % 200;
        let k = (0..200)
            .map(|i| (start + i) % 200 + 20)
            .find(|k| !taken.contains(&format!("10.200.{k}.")))
            .expect("a free 10.200.K.0/24 among 200");
        // Interface names are at most 15 bytes.
        let tag = format!("{:x}{seq:x}", pid % 0x10000);
        let name = format!("tlab-{pid}-{seq}");
        let host_if = format!("vh{tag}");
        let ns_if = format!("vn{tag}");
        let host_ip = Ipv4Addr::new(10, 200, k as u8, 1);
        let ns_ip = Ipv4Addr::new(10, 200, k as u8, 2);
        let unreachable_ip = Ipv4Addr::new(10, 200, k as u8, 9);
        let out = run(&["netns", "add", &name]);
        assert!(
            out.status.success(),
            "`ip netns add {name}` is not permitted here ({}): {}. The netns lab needs root \
             (CAP_SYS_ADMIN and CAP_NET_ADMIN) and a writable /run/netns.",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
        // From here on, Drop cleans up whatever was made.
        let ns = Netns {
            name: name.clone(),
            host_if: host_if.clone(),
            host_ip,
            ns_ip,
            unreachable_ip,
            children: Vec::new(),
        };
        must(&[
            "link", "add", &host_if, "type", "veth", "peer", "name", &ns_if,
        ]);
        must(&["link", "set", &ns_if, "netns", &name]);
        must(&["addr", "add", &format!("{host_ip}/30"), "dev", &host_if]);
        must(&["link", "set", &host_if, "up"]);
        ns.ip(&["addr", "add", &format!("{ns_ip}/30"), "dev", &ns_if]);
        ns.ip(&["link", "set", &ns_if, "up"]);
        ns.ip(&["link", "set", "lo", "up"]);
        ns.exec(&["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
        let unreachable_net = format!("10.200.{k}.8/30");
        ns.ip(&["route", "add", "unreachable", &unreachable_net]);
        // This route goes away with the veth.
        must(&[
            "route",
            "add",
            &unreachable_net,
            "via",
            &ns_ip.to_string(),
            "dev",
            &host_if,
        ]);
        ns
    }

    /// `ip …` inside the namespace; panics on failure.
    pub fn ip(&self, args: &[&str]) {
        let mut full = vec!["-n", self.name.as_str()];
        full.extend_from_slice(args);
        must(&full);
    }

    /// Runs a program inside the namespace; panics on failure.
    pub fn exec(&self, args: &[&str]) -> Output {
        let mut full = vec!["netns", "exec", self.name.as_str()];
        full.extend_from_slice(args);
        let out = run(&full);
        assert!(
            out.status.success(),
            "`ip netns exec {} {}` failed ({}): {}",
            self.name,
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
        out
    }

    /// Adds an iptables rule to the namespace's INPUT chain.
    pub fn firewall(&self, rule: &[&str]) {
        let iptables = binary("iptables");
        let mut args = vec![iptables.to_str().expect("UTF-8 path"), "-A", "INPUT"];
        args.extend_from_slice(rule);
        self.exec(&args);
    }

    /// Starts a real TCP listener (socat, answering a line and closing) on
    /// `ns_ip:port` inside the namespace, and waits until it accepts.
    pub fn listen(&mut self, port: u16) {
        let socat = binary("socat");
        let child = Command::new(binary("ip"))
            .args(["netns", "exec", &self.name])
            .arg(socat)
            .arg(format!(
                "TCP-LISTEN:{port},bind={},fork,reuseaddr",
                self.ns_ip
            ))
            .arg("SYSTEM:echo lab-listener")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start socat in {}: {e}", self.name));
        self.children.push(child);
        let addr = std::net::SocketAddr::from((self.ns_ip, port));
        for _ in 0..100 {
            if std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "socat did not listen on {addr} inside {} within 5 s",
            self.name
        );
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        // Deleting the root end removes the peer and the route through it
        // at once; the namespace itself goes after.
        let _ = run(&["link", "del", &self.host_if]);
        let _ = run(&["netns", "del", &self.name]);
    }
}
