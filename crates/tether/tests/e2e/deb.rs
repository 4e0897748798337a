//! The Debian packages on this machine (issue #13): `scripts/package-deb.sh`
//! builds `tether-server` and `tether-agent` from this run's binaries,
//! `dpkg -i` installs them for real (the tests run as root), and the story
//! checks the files, modes, owners and the `tether` user, the units
//! (`systemd-analyze verify`), the agent's unattended enrollment from a
//! preseed against a real server (a broken preseed first, which fails the
//! configuration with its code and loses nothing), the agent running as the
//! service user, an upgrade that keeps config and enrollment, and a purge
//! that leaves the machine clean. A guard purges on failure too.
//!
//! The test changes the machine, so it takes a machine-wide lock (another
//! run, another engineer) and sits in nextest's `machine` test group.

use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use tether_testlab::machine_lock::machine_lock;
use tether_wire::AgentStatus;

use crate::lab::{Backend, Scratch, Server, agent_bin, tether_bin, text};

const PRESEED: &str = "/etc/tether/agent.preseed";
const STATE: &str = "/var/lib/tether/agent";
const PACKAGES: [&str; 2] = ["tether-agent", "tether-server"];

/// Purges both packages when the test ends, however it ends.
struct Purge;

impl Drop for Purge {
    fn drop(&mut self) {
        let _ = Command::new("dpkg")
            .arg("--purge")
            .args(PACKAGES)
            .stdin(Stdio::null())
            .output();
        let _ = std::fs::remove_file(PRESEED);
        let _ = std::fs::remove_dir("/etc/tether");
    }
}

/// Runs a command without the test process's own preseed variables (a
/// command may still set them itself).
fn run(cmd: &mut Command) -> Output {
    for var in ["TETHER_SERVER", "TETHER_CA_PIN", "TETHER_TOKEN"] {
        if !cmd.get_envs().any(|(k, _)| k == var) {
            cmd.env_remove(var);
        }
    }
    cmd.stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{cmd:?} cannot run: {e}"))
}

fn run_ok(cmd: &mut Command) -> String {
    let out = run(cmd);
    assert!(out.status.success(), "{cmd:?} failed:\n{}", text(&out));
    text(&out)
}

/// `dpkg-query`'s status of a package ("install ok installed", …), or "".
fn dpkg_status(package: &str) -> String {
    let out = run(Command::new("dpkg-query").args(["-W", "-f=${Status} ${Version}", package]));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Builds both packages with `version` from this run's binaries.
fn build(version: &str, out: &Path) -> (PathBuf, PathBuf) {
    let bin_dir = tether_bin().parent().expect("bin dir").to_path_buf();
    // agent_bin() fails clearly when the endpoint binary was not built.
    assert_eq!(agent_bin().parent(), Some(bin_dir.as_path()));
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/package-deb.sh");
    let printed = run_ok(
        Command::new(script)
            .arg("--bin-dir")
            .arg(&bin_dir)
            .arg("--out")
            .arg(out)
            .args(["--version", version, "--compress", "none"]),
    );
    let find = |name: &str| {
        printed
            .lines()
            .map(PathBuf::from)
            .find(|p| {
                p.file_name()
                    .is_some_and(|f| f.to_string_lossy().starts_with(&format!("{name}_")))
            })
            .unwrap_or_else(|| panic!("package-deb.sh printed no {name} package:\n{printed}"))
    };
    (find("tether-server"), find("tether-agent"))
}

/// Mode, owner name and group name of a path.
fn owned(path: &str) -> (u32, String, String) {
    let meta = std::fs::metadata(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let name = |db: &str, id: u32| {
        let out = run(Command::new("getent").args([db, &id.to_string()]));
        String::from_utf8_lossy(&out.stdout)
            .split(':')
            .next()
            .unwrap_or_default()
            .to_owned()
    };
    (
        meta.mode() & 0o7777,
        name("passwd", meta.uid()),
        name("group", meta.gid()),
    )
}

fn assert_owned(path: &str, mode: u32, user: &str, group: &str) {
    let got = owned(path);
    assert_eq!(
        got,
        (mode, user.to_owned(), group.to_owned()),
        "{path}: mode {:04o} {}:{}, expected {mode:04o} {user}:{group}",
        got.0,
        got.1,
        got.2
    );
}

fn write_preseed(content: &str) {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::create_dir_all("/etc/tether").expect("mkdir /etc/tether");
    std::fs::write(PRESEED, content).expect("write the preseed");
    std::fs::set_permissions(PRESEED, std::fs::Permissions::from_mode(0o600)).expect("chmod");
}

fn agent_id() -> uuid::Uuid {
    let state: serde_json::Value = serde_json::from_slice(
        &std::fs::read(format!("{STATE}/state.json")).expect("the agent's state.json"),
    )
    .expect("state.json is JSON");
    state["agent_id"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .expect("state.json has the agent_id")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn packages_install_enroll_unattended_upgrade_and_purge() {
    let _lock = machine_lock("dpkg-tether", Duration::from_secs(300));
    // A run killed before its guard ran leaves its own test versions behind:
    // those are ours to purge. Anything else is someone's real install.
    for package in PACKAGES {
        let status = dpkg_status(package);
        assert!(
            status.is_empty() || status.contains("~e2e") || status.starts_with("unknown"),
            "{package} is installed on this machine ({status}); this test would replace it: purge it first"
        );
    }
    drop(Purge);
    assert!(
        !Path::new("/etc/tether").exists() && !Path::new("/var/lib/tether").exists(),
        "/etc/tether or /var/lib/tether exists without the packages: remove them first"
    );
    let analyze = Path::new("/usr/bin/systemd-analyze");
    assert!(
        analyze.exists(),
        "systemd-analyze is missing: run scripts/install-test-deps.sh (package systemd)"
    );

    let server = Server::start(Backend::Sqlite).await;
    let token = server.token(&["--max-uses", "1"]).await.token;
    let debs = Scratch::new("debs");
    let v1 = format!("{}-0~e2e1", tether_wire::VERSION);
    let v2 = format!("{}-0~e2e2", tether_wire::VERSION);
    let (server_deb, agent_deb) = build(&v1, debs.path());
    let _purge = Purge;

    // The server package: installs, creates the user, does not start a
    // service on a machine whose PID 1 is not systemd, and says so.
    let out = run_ok(Command::new("dpkg").arg("-i").arg(&server_deb));
    assert!(
        out.contains(
            "systemd is not PID 1 on this machine, so tether-server.service was not started"
        ),
        "{out}"
    );

    // A broken preseed fails the agent's configuration with its code and
    // action, and loses nothing: the files and the conffile stay.
    let name = format!("deb-e2e-{}", uuid::Uuid::new_v4().simple());
    write_preseed(&format!(
        "server = \"http://{}\"\nca_pin = \"{}\"\ntoken = \"{token}\"\n",
        server.local_addr(),
        server.endpoint.ca_fingerprint
    ));
    let out = run(Command::new("dpkg").arg("-i").arg(&agent_deb));
    let said = text(&out);
    assert!(!out.status.success(), "a broken preseed must fail: {said}");
    assert!(said.contains("TETHER-E8721"), "{said}");
    assert!(said.contains("dpkg --configure tether-agent"), "{said}");
    assert!(
        !said.contains(&token),
        "the token leaked into the output: {said}"
    );
    assert!(
        dpkg_status("tether-agent").starts_with("install ok half-configured"),
        "{}",
        dpkg_status("tether-agent")
    );
    assert!(Path::new("/etc/tether/agent.env").exists());
    assert!(Path::new("/usr/bin/tether-agent").exists());
    assert!(!Path::new(&format!("{STATE}/credential")).exists());

    // Fixed, the configuration enrolls unattended and takes the token out
    // of the preseed.
    write_preseed(&format!(
        "# written by the fleet's installer\nserver = \"{}\"\nca_pin = \"{}\"\ntoken = \"{token}\"\nname = \"{name}\"\n",
        server.endpoint.url, server.endpoint.ca_fingerprint
    ));
    let out = run_ok(Command::new("dpkg").args(["--configure", "tether-agent"]));
    assert!(out.contains("Enrolled agent"), "{out}");
    assert!(
        out.contains(&format!("The token was removed from {PRESEED}")),
        "{out}"
    );
    assert!(
        out.contains(
            "systemd is not PID 1 on this machine, so tether-agent.service was not started"
        ),
        "{out}"
    );
    let preseed = std::fs::read_to_string(PRESEED).expect("the preseed stays, redacted");
    assert!(!preseed.contains(&token), "{preseed}");
    assert!(preseed.contains("# token removed after agent"), "{preseed}");
    assert!(
        preseed.contains("# written by the fleet's installer"),
        "{preseed}"
    );
    let id = agent_id();
    let listed = server.agents().await;
    assert!(
        listed.iter().any(|a| a.id == id && a.name == name),
        "{listed:?}"
    );

    // Files, modes, owners and the user.
    assert_owned("/usr/bin/tether", 0o755, "root", "root");
    assert_owned("/usr/bin/tether-agent", 0o755, "root", "root");
    // Shipped without debug info (package-deb.sh strips it), symbols kept.
    for bin in ["/usr/bin/tether", "/usr/bin/tether-agent"] {
        let sections = run_ok(Command::new("readelf").args(["-S", "-W", bin]));
        // (`.debug_gdb_scripts` is a loaded, 34-byte hint for gdb, not debug info.)
        for debug in [".debug_info", ".debug_line", ".debug_str"] {
            assert!(
                !sections.contains(debug),
                "{bin} ships {debug}:\n{sections}"
            );
        }
        assert!(
            sections.contains(".symtab"),
            "{bin} lost its symbols:\n{sections}"
        );
    }
    assert_owned("/etc/tether", 0o750, "root", "tether");
    for conf in ["server.toml", "server.env", "agent.env"] {
        assert_owned(&format!("/etc/tether/{conf}"), 0o640, "root", "tether");
    }
    assert_owned("/var/lib/tether", 0o700, "tether", "tether");
    assert_owned("/var/lib/tether/server", 0o700, "tether", "tether");
    assert_owned(STATE, 0o700, "tether", "tether");
    assert_owned(&format!("{STATE}/credential"), 0o600, "tether", "tether");
    assert_owned("/var/log/tether", 0o750, "tether", "tether");
    assert_owned("/var/log/tether/agent", 0o750, "tether", "tether");
    // The enrollment's own log sits with the service's logs.
    let install_log = std::fs::read_to_string("/var/log/tether/agent/install.log")
        .expect("the preseed's install.log");
    assert!(install_log.contains("enrolled"), "{install_log}");
    assert!(!install_log.contains(&token), "the token reached a log");
    assert_eq!(owned("/var/log/tether/agent/install.log").1, "tether");
    for unit in ["tether-server", "tether-agent"] {
        assert_owned(
            &format!("/usr/lib/systemd/system/{unit}.service"),
            0o644,
            "root",
            "root",
        );
    }
    for doc in [
        "/usr/share/man/man1/tether.1.gz",
        "/usr/share/man/man1/tether-server.1.gz",
        "/usr/share/man/man1/tether-agent.1.gz",
        "/usr/share/man/man1/tether-agent-preseed.1.gz",
        "/usr/share/bash-completion/completions/tether",
        "/usr/share/bash-completion/completions/tether-agent",
        "/usr/share/zsh/vendor-completions/_tether-agent",
        "/usr/share/fish/vendor_completions.d/tether.fish",
    ] {
        assert_owned(doc, 0o644, "root", "root");
    }
    let passwd = run_ok(Command::new("getent").args(["passwd", "tether"]));
    let fields: Vec<&str> = passwd.trim().split(':').collect();
    assert_eq!(fields.len(), 7, "{passwd}");
    let uid: u32 = fields[2].parse().expect("uid");
    assert!(uid < 1000, "tether must be a system user: {passwd}");
    assert_eq!(fields[5], "/var/lib/tether", "{passwd}");
    assert_eq!(fields[6], "/usr/sbin/nologin", "{passwd}");
    // Invariant 2: the agent's package carries the endpoint binary only.
    let files = run_ok(Command::new("dpkg").args(["-L", "tether-agent"]));
    assert!(!files.lines().any(|l| l == "/usr/bin/tether"), "{files}");

    // The units, as systemd reads them (their ExecStart binaries exist now).
    for unit in ["tether-server", "tether-agent"] {
        let path = format!("/usr/lib/systemd/system/{unit}.service");
        let out = run(Command::new(analyze).args(["verify", &path]));
        assert!(
            out.status.success() && out.stderr.is_empty(),
            "systemd-analyze verify {path}:\n{}",
            text(&out)
        );
    }

    // The agent runs as the unit runs it (user tether, the packaged paths)
    // and becomes Active. setpriv execs, so the PID is the agent's own.
    let mut agent = tokio::process::Command::new("setpriv")
        .args([
            "--reuid=tether",
            "--regid=tether",
            "--init-groups",
            "--",
            "/usr/bin/tether-agent",
            "run",
            "--state-dir",
            STATE,
            "--log-dir",
            "/var/log/tether/agent",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("setpriv starts the agent");
    server
        .wait_status(id, AgentStatus::Active, Duration::from_secs(30))
        .await;
    let pid = agent.id().expect("the agent runs");
    run_ok(Command::new("kill").args(["-TERM", &pid.to_string()]));
    let status = tokio::time::timeout(Duration::from_secs(10), agent.wait())
        .await
        .expect("the agent stops within 10 s of SIGTERM")
        .expect("wait works");
    assert!(status.success(), "the agent exited {status}");
    // The agent writes its log 0640 itself; the unit's UMask=0077 narrows
    // that under systemd. Nobody else may read it either way.
    let (mode, user, group) = owned("/var/log/tether/agent/agent.log");
    assert_eq!((user.as_str(), group.as_str()), ("tether", "tether"));
    assert_eq!(mode & 0o027, 0, "agent.log is {mode:04o}");

    // The upgrade keeps the admin's edits of the conffiles, the enrollment
    // and the modes, and does not enroll again.
    let (server_deb2, agent_deb2) = build(&v2, debs.path());
    for conf in ["/etc/tether/agent.env", "/etc/tether/server.toml"] {
        let mut content = std::fs::read_to_string(conf).expect("conffile");
        content.push_str("# edited by the admin\n");
        std::fs::write(conf, content).expect("edit the conffile");
    }
    let credential = std::fs::read(format!("{STATE}/credential")).expect("credential");
    let out = run_ok(
        Command::new("dpkg")
            .arg("-i")
            .arg(&server_deb2)
            .arg(&agent_deb2),
    );
    assert!(out.contains("Already enrolled"), "{out}");
    for package in PACKAGES {
        assert_eq!(dpkg_status(package), format!("install ok installed {v2}"));
    }
    for conf in ["/etc/tether/agent.env", "/etc/tether/server.toml"] {
        let content = std::fs::read_to_string(conf).expect("conffile");
        assert!(
            content.ends_with("# edited by the admin\n"),
            "{conf}: {content}"
        );
        assert_owned(conf, 0o640, "root", "tether");
        for leftover in [".dpkg-dist", ".dpkg-new", ".dpkg-old"] {
            assert!(!Path::new(&format!("{conf}{leftover}")).exists());
        }
    }
    assert_eq!(
        std::fs::read(format!("{STATE}/credential")).expect("credential"),
        credential
    );
    assert_eq!(agent_id(), id);
    assert_owned(&format!("{STATE}/credential"), 0o600, "tether", "tether");
    assert_eq!(
        server
            .agents()
            .await
            .iter()
            .filter(|a| a.name == name)
            .count(),
        1,
        "the upgrade enrolled a second agent"
    );

    // Purge leaves nothing behind.
    run_ok(Command::new("dpkg").arg("--purge").args(PACKAGES));
    assert_machine_clean();

    // The agent alone, preseeded by the environment at dpkg time only (no
    // file): it enrolls, and a purge again leaves nothing.
    let token = server.token(&["--max-uses", "1"]).await.token;
    let out = run_ok(
        Command::new("dpkg")
            .arg("-i")
            .arg(&agent_deb2)
            .env("TETHER_SERVER", &server.endpoint.url)
            .env("TETHER_CA_PIN", &server.endpoint.ca_fingerprint)
            .env("TETHER_TOKEN", &token),
    );
    assert!(out.contains("Enrolled agent"), "{out}");
    assert!(
        !out.contains(&token),
        "the token leaked into the output: {out}"
    );
    assert!(!Path::new(PRESEED).exists());
    let second = agent_id();
    assert_ne!(second, id);
    assert!(server.agents().await.iter().any(|a| a.id == second));
    run_ok(Command::new("dpkg").args(["--purge", "tether-agent"]));
    assert_machine_clean();
}

/// Nothing of either package is left on the machine.
fn assert_machine_clean() {
    for gone in [
        "/etc/tether",
        "/var/lib/tether",
        "/var/log/tether",
        "/usr/bin/tether",
        "/usr/bin/tether-agent",
        "/usr/lib/systemd/system/tether-agent.service",
        "/etc/systemd/system/multi-user.target.wants/tether-agent.service",
        "/etc/systemd/system/multi-user.target.wants/tether-server.service",
        "/etc/systemd/system/tether-agent.service",
    ] {
        assert!(!Path::new(gone).exists(), "{gone} is left after the purge");
    }
    for db in ["passwd", "group"] {
        let out = run(Command::new("getent").args([db, "tether"]));
        assert!(
            !out.status.success(),
            "the {db} entry tether is left: {}",
            text(&out)
        );
    }
    for package in PACKAGES {
        let status = dpkg_status(package);
        assert!(
            status.is_empty() || status.starts_with("unknown ok not-installed"),
            "{package}: {status}"
        );
    }
}
