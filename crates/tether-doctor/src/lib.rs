//! The connectivity doctor: runs every check of the support guides at once,
//! through the agent's own transport (`tether-transport`), and names the one
//! root cause with a stable [`ErrorCode`] and an action.
//!
//! The caller (the agent crate, or the CLI before enrollment) builds a
//! [`DoctorInput`] from its config and state, picks a [`World`] (the real one,
//! or test doubles), and calls [`run`]. The [`Report`] renders as text
//! ([`Report::to_text`]) or versioned JSON ([`Report::to_json`], schema in
//! `docs/doctor-schema.md`).
//!
//! Architecture invariants:
//! - No second network stack: DNS, TCP, proxy CONNECT, TLS and HTTP go
//!   through [`tether_transport::Transport`] and its phases, so a verdict is
//!   true for the agent. The only sockets opened here are the ones the
//!   transport has no phase for: SNTP over UDP, and the protocol probes of
//!   target ports over a connection the transport opened.
//! - One global deadline: every check's time limits are derived from what is
//!   left of it, and the scheduler aborts whatever still runs when it ends.
//! - No secret is printed: the credential, the token and proxy passwords are
//!   never put in evidence; values from the environment are redacted.
//! - No dependency on the server, the store or the agent crates: this crate
//!   ships in the endpoint binary, and the agent depends on it.

mod checks;
mod engine;
mod report;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tether_transport::{Dial, Resolve, SystemResolver, TcpDialer, TransportConfig};
use tether_wire::{ApiError, Clock, HostFacts, SystemClock};
use uuid::Uuid;

pub use checks::clock::default_ntp_servers;
pub use checks::defs::{DEFS_PREFIX, defs_check_id};
pub use checks::logs::{Signature, SignatureTable};
pub use report::{CheckResult, Report, SCHEMA_VERSION, Status, Verdict, VerdictStatus};
pub use tether_wire::ErrorCode;

/// Everything the doctor needs to know, built by the caller from the agent's
/// config and state (or from CLI flags before enrollment).
#[derive(Debug, Clone)]
pub struct DoctorInput {
    /// The control plane's base URL (`https://…`).
    pub server: url::Url,
    /// Proxy and trust exactly as the agent uses them.
    pub transport: TransportConfig,
    /// Whether this host is enrolled.
    pub enrolled: bool,
    /// The agent's id, when enrolled.
    pub agent_id: Option<Uuid>,
    /// The agent's credential, when enrolled. Used for the auth check, never
    /// printed.
    pub credential: Option<String>,
    /// The facts the auth check reports with its check-in (the same ones the
    /// agent sends, so the doctor's check-in changes nothing on the server).
    pub facts: HostFacts,
    /// An enrollment token to check before enrollment. Never printed.
    pub token: Option<String>,
    /// The server's last refusal of that token, if the caller kept it (its
    /// body carries `server_time`, `not_before` and `expires_at`).
    pub last_token_error: Option<ApiError>,
    /// The agent's state directory.
    pub state_dir: Option<PathBuf>,
    /// The agent's log directory (install.log, agent.log, error.log).
    pub log_dir: Option<PathBuf>,
    /// The effective settings: (setting, value already redacted, source).
    pub config_sources: Vec<(String, String, String)>,
    /// The proxy variables of the shell the doctor runs in.
    pub shell_proxy_env: BTreeMap<String, String>,
    /// The proxy variables of the installed service (`systemctl show -p
    /// Environment tether-agent`, or the unit file), if known.
    pub service_proxy_env: Option<BTreeMap<String, String>>,
    /// Extra host:port targets to probe from this host.
    pub targets: Vec<(String, u16)>,
    /// The global deadline for the whole run.
    pub deadline: Duration,
    /// How long a target's protocol probe may wait for an answer (a WAN
    /// service can be slow); capped by the deadline.
    pub target_timeout: Duration,
    /// The revocation check's own budget inside the deadline: every OCSP
    /// and CRL fetch runs at once and whatever has not answered when it
    /// runs out is "unreachable", so a server that drops packets cannot
    /// hold the run until the global deadline.
    pub revocation_budget: Duration,
    /// This agent's version.
    pub agent_version: String,
    /// NTP servers as `host` or `host:port` (see [`default_ntp_servers`]).
    pub ntp_servers: Vec<String>,
    /// The definitions path, when the agent is subscribed to a channel.
    pub defs: Option<DefsInput>,
    /// An unpacked offline install bundle to check (`offline.*`).
    pub offline_bundle: Option<PathBuf>,
}

/// The definitions path as the agent's updater takes it, built by the agent
/// crate from the same functions the updater uses.
#[derive(Debug, Clone)]
pub struct DefsInput {
    /// The update servers in fallback order: the policy's `update_urls`, or
    /// the control plane's `/defs/` when it names none.
    pub servers: Vec<url::Url>,
    /// The control plane's own `/defs/` tree: the newest version, to tell a
    /// mirror that is behind.
    pub control_plane: url::Url,
    /// The updater's transport: the check-in path's proxy, NO_PROXY and
    /// timeouts, with the definitions trust (the agent's CA anchors plus
    /// system roots, no pin).
    pub transport: TransportConfig,
    /// The subscribed channels.
    pub channels: Vec<String>,
    /// The agent's state dir: `defs/root.json` (the pinned root), `defs/tuf`
    /// (what it trusts), and each channel's state.
    pub state_dir: PathBuf,
}

impl DoctorInput {
    /// The default global deadline.
    pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(10);
    /// The default wait for a target's answer.
    pub const DEFAULT_TARGET_TIMEOUT: Duration = Duration::from_secs(3);
    /// The default revocation budget.
    pub const DEFAULT_REVOCATION_BUDGET: Duration = Duration::from_secs(3);

    /// An input for a pre-enrollment check of `server` with the default
    /// transport: not enrolled, no targets, a 10 s deadline.
    pub fn new(server: url::Url) -> DoctorInput {
        DoctorInput {
            server,
            transport: TransportConfig::default(),
            enrolled: false,
            agent_id: None,
            credential: None,
            facts: HostFacts::default(),
            token: None,
            last_token_error: None,
            state_dir: None,
            log_dir: None,
            config_sources: Vec::new(),
            shell_proxy_env: BTreeMap::new(),
            service_proxy_env: None,
            targets: Vec::new(),
            deadline: Self::DEFAULT_DEADLINE,
            target_timeout: Self::DEFAULT_TARGET_TIMEOUT,
            revocation_budget: Self::DEFAULT_REVOCATION_BUDGET,
            agent_version: tether_wire::VERSION.to_owned(),
            ntp_servers: Vec::new(),
            defs: None,
            offline_bundle: None,
        }
    }
}

/// The world the doctor observes: injected so tests can set the clock, make
/// DNS fail or make connections hang.
#[derive(Debug, Clone)]
pub struct World {
    /// The wall clock (certificate validity, skew).
    pub clock: Arc<dyn Clock>,
    /// The resolver the agent uses (the system's).
    pub resolver: Arc<dyn Resolve>,
    /// The TCP dialer the agent uses.
    pub dialer: Arc<dyn Dial>,
    /// resolv.conf, whose name servers are queried one by one.
    pub resolv_conf: PathBuf,
    /// The hosts file.
    pub hosts_file: PathBuf,
    /// The port the name servers of resolv.conf are asked on (53; tests use
    /// a DNS server on a high port).
    pub dns_port: u16,
    /// The `systemctl` program, if the host has systemd.
    pub systemctl: Option<PathBuf>,
    /// The systemd unit of the agent.
    pub service_name: String,
}

impl World {
    /// The real world: system clock, system resolver, real TCP.
    pub fn system() -> World {
        let systemctl = ["/usr/bin/systemctl", "/bin/systemctl"]
            .iter()
            .map(PathBuf::from)
            .find(|p| p.exists());
        World {
            clock: Arc::new(SystemClock),
            resolver: Arc::new(SystemResolver::new()),
            dialer: Arc::new(TcpDialer),
            resolv_conf: PathBuf::from("/etc/resolv.conf"),
            hosts_file: PathBuf::from("/etc/hosts"),
            dns_port: 53,
            systemctl,
            service_name: "tether-agent".to_owned(),
        }
    }
}

/// Runs every check and returns the report. Never fails: a check that cannot
/// run reports why. Returns within `input.deadline` (plus scheduling noise).
pub async fn run(input: DoctorInput, world: World) -> Report {
    checks::run(input, world).await
}
