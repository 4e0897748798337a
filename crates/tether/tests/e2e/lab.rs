//! The lab: starts a server process on a chosen backend and drives agents.

use std::path::PathBuf;
use std::process::{Output, Stdio};
use std::time::Duration;

use serde::Deserialize;
use tether_wire::{AgentStatus, AgentSummary, CreatedToken};
use tokio::process::{Child, Command};
use tokio::time::Instant;

#[derive(Debug, Clone, Copy)]
pub enum Backend {
    Sqlite,
    Postgres,
}

pub use tether_testlab::{Scratch, free_port};

#[derive(Debug, Deserialize)]
pub struct Endpoint {
    pub url: String,
    pub ca_fingerprint: String,
    pub ca_pem_path: PathBuf,
}

pub fn tether_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_tether"))
}

/// The endpoint binary, built by the same `cargo test/nextest --workspace` run.
pub fn agent_bin() -> PathBuf {
    let p = tether_bin().with_file_name("tether-agent");
    assert!(
        p.exists(),
        "{} is missing: run the tests for the whole workspace (scripts/test.sh), which builds tether-agent",
        p.display()
    );
    p
}

pub struct Server {
    /// Killed when the test ends (kill_on_drop); `None` while stopped.
    child: Option<Child>,
    pub dir: Scratch,
    pub endpoint: Endpoint,
    /// The PostgreSQL URL, when the backend is PostgreSQL.
    pub database_url: Option<String>,
    /// The database this server created (dropped with it); `None` when it
    /// shares another server's.
    _db: Option<PgDatabase>,
    /// What `--listen` was given, so a restart listens where agents look.
    listen: String,
    env: Vec<(String, String)>,
    /// The `tether` binary it runs (and its admin CLI): this build's, or
    /// another release's (rolling.rs).
    bin: PathBuf,
}

/// A fresh PostgreSQL database, dropped at the end of the test.
pub struct PgDatabase {
    name: String,
}

impl PgDatabase {
    pub fn create() -> PgDatabase {
        let name = format!("tether_e2e_{}", uuid::Uuid::new_v4().simple());
        psql(&format!("CREATE DATABASE {name}"));
        PgDatabase { name }
    }
    pub fn url(&self) -> String {
        let base = std::env::var("TETHER_TEST_DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
        let (prefix, _) = base.rsplit_once('/').expect("database URL has a path");
        format!("{prefix}/{}", self.name)
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        let _ = std::process::Command::new("psql")
            .args([
                "-h",
                "127.0.0.1",
                "-U",
                "postgres",
                "-d",
                "postgres",
                "-q",
                "-c",
            ])
            .arg(format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ))
            .output();
    }
}

fn psql(sql: &str) {
    let out = std::process::Command::new("psql")
        .args([
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
            "-d",
            "postgres",
            "-v",
            "ON_ERROR_STOP=1",
            "-q",
            "-c",
            sql,
        ])
        .output()
        .expect("psql is installed (PostgreSQL client); run scripts/install-test-deps.sh");
    assert!(
        out.status.success(),
        "PostgreSQL at 127.0.0.1:5432 is needed for this test and refused `{sql}`: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Server {
    pub async fn start(backend: Backend) -> Server {
        Server::start_with(backend, &[]).await
    }

    pub async fn start_with(backend: Backend, env: &[(&str, &str)]) -> Server {
        Server::start_listening(backend, "127.0.0.1:0".to_owned(), env).await
    }

    /// Like [`Server::start_with`], on a port that a [`Server::restart`]
    /// listens on again, so running agents find the server back.
    pub async fn start_restartable(backend: Backend, env: &[(&str, &str)]) -> Server {
        Server::start_listening(backend, format!("127.0.0.1:{}", free_port()), env).await
    }

    async fn start_listening(backend: Backend, listen: String, env: &[(&str, &str)]) -> Server {
        let db = match backend {
            Backend::Sqlite => None,
            Backend::Postgres => Some(PgDatabase::create()),
        };
        let database_url = db.as_ref().map(PgDatabase::url);
        Server::launch(database_url, db, listen, env, Scratch::new("server")).await
    }

    /// A SQLite server on a data dir prepared beforehand (for example by
    /// `tether defs init`).
    pub async fn start_in(dir: Scratch) -> Server {
        Server::launch(None, None, "127.0.0.1:0".to_owned(), &[], dir).await
    }

    /// A second server process on `other`'s PostgreSQL database: its own
    /// data dir, URL and CA, the same fleet.
    pub async fn start_sharing_database(other: &Server) -> Server {
        let url = other
            .database_url
            .clone()
            .expect("sharing needs the PostgreSQL backend");
        Server::launch(
            Some(url),
            None,
            "127.0.0.1:0".to_owned(),
            &[],
            Scratch::new("server"),
        )
        .await
    }

    /// Like [`Server::start_sharing_database`], with extra environment.
    pub async fn start_sharing_database_with(other: &Server, env: &[(&str, &str)]) -> Server {
        let url = other
            .database_url
            .clone()
            .expect("sharing needs the PostgreSQL backend");
        Server::start_at_database_url(url, env).await
    }

    /// A server on a database URL of the caller's (which another server's
    /// `PgDatabase` owns), with extra environment.
    pub async fn start_at_database_url(url: String, env: &[(&str, &str)]) -> Server {
        Server::launch(
            Some(url),
            None,
            "127.0.0.1:0".to_owned(),
            env,
            Scratch::new("server"),
        )
        .await
    }

    /// Like [`Server::start_at_database_url`], on a port that a
    /// [`Server::restart`] listens on again.
    pub async fn start_restartable_at_database_url(url: String, env: &[(&str, &str)]) -> Server {
        Server::launch(
            Some(url),
            None,
            format!("127.0.0.1:{}", free_port()),
            env,
            Scratch::new("server"),
        )
        .await
    }

    /// A server of another build (`bin`, for example the previous release)
    /// on a fresh PostgreSQL database it owns; its admin CLI is that
    /// build's too.
    pub async fn start_binary(bin: PathBuf, env: &[(&str, &str)]) -> Server {
        let db = PgDatabase::create();
        let url = db.url();
        Server::launch_binary(
            bin,
            Some(url),
            Some(db),
            format!("127.0.0.1:{}", free_port()),
            env,
            Scratch::new("server"),
        )
        .await
    }

    /// A server on a data dir (and PostgreSQL database) prepared beforehand,
    /// for example by `tether restore`, listening on `listen` (another
    /// server's [`Server::listen_addr`], so that server's agents find it).
    pub async fn start_restored(dir: Scratch, listen: &str, db: Option<PgDatabase>) -> Server {
        let url = db.as_ref().map(PgDatabase::url);
        Server::launch(url, db, listen.to_owned(), &[], dir).await
    }

    /// What `--listen` was given.
    pub fn listen_addr(&self) -> &str {
        &self.listen
    }

    /// `127.0.0.1:PORT`: where a load balancer reaches this server.
    pub fn local_addr(&self) -> String {
        self.endpoint
            .url
            .trim_start_matches("https://")
            .trim_end_matches('/')
            .to_owned()
    }

    /// `GET /health` over HTTPS with curl, trusting the server's CA; `None`
    /// when the server does not answer (a killed server).
    pub async fn health(&self) -> Option<tether_wire::Health> {
        let out = Command::new("curl")
            .args(["-s", "--max-time", "3", "--cacert"])
            .arg(&self.endpoint.ca_pem_path)
            .arg(format!("{}/health", self.endpoint.url))
            .stdin(Stdio::null())
            .output()
            .await
            .expect("curl runs");
        serde_json::from_slice(&out.stdout).ok()
    }

    async fn launch(
        database_url: Option<String>,
        db: Option<PgDatabase>,
        listen: String,
        env: &[(&str, &str)],
        dir: Scratch,
    ) -> Server {
        Server::launch_binary(tether_bin(), database_url, db, listen, env, dir).await
    }

    async fn launch_binary(
        bin: PathBuf,
        database_url: Option<String>,
        db: Option<PgDatabase>,
        listen: String,
        env: &[(&str, &str)],
        dir: Scratch,
    ) -> Server {
        let mut server = Server {
            bin,
            child: None,
            dir,
            endpoint: Endpoint {
                url: String::new(),
                ca_fingerprint: String::new(),
                ca_pem_path: PathBuf::new(),
            },
            database_url,
            _db: db,
            listen,
            env: env
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        };
        server.spawn().await;
        server
    }

    /// Starts the server process and waits until it wrote its endpoint.
    async fn spawn(&mut self) {
        if let Err(log) = self.try_spawn().await {
            panic!("server did not start: {log}");
        }
    }

    /// Like [`Server::restart`], but a server that exits instead of
    /// starting is an `Err` with its log, not a panic.
    pub async fn try_restart(&mut self) -> Result<(), String> {
        assert!(self.child.is_none(), "stop the server first");
        self.try_spawn().await
    }

    async fn try_spawn(&mut self) -> Result<(), String> {
        let endpoint_file = self.dir.path().join("endpoint.json");
        let _ = std::fs::remove_file(&endpoint_file);
        let mut cmd = Command::new(&self.bin);
        cmd.args(["server", "--listen", &self.listen, "--data-dir"])
            .arg(self.dir.path());
        if let Some(url) = &self.database_url {
            cmd.args(["--database-url", url]);
        }
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("server.log"))
            .expect("log file");
        let mut child = cmd
            .env("TETHER_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("tether server starts");
        let deadline = Instant::now() + Duration::from_secs(30);
        self.endpoint = loop {
            if let Ok(body) = std::fs::read(&endpoint_file)
                && let Ok(e) = serde_json::from_slice::<Endpoint>(&body)
            {
                break e;
            }
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!("exited ({status}): {}", self.log()));
            }
            if Instant::now() >= deadline {
                return Err(format!("not started within 30 s: {}", self.log()));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        self.child = Some(child);
        Ok(())
    }

    /// SIGTERM: the server's clean stop; waits (bounded) until it exited.
    pub async fn stop(&mut self) {
        let mut child = self.child.take().expect("the server is running");
        let pid = child.id().expect("the server has a pid");
        let st = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .expect("kill runs");
        assert!(st.success());
        tokio::time::timeout(Duration::from_secs(20), child.wait())
            .await
            .expect("the server stops within 20 s of SIGTERM")
            .expect("wait works");
    }

    /// Starts the stopped server again on the same data, database and port.
    pub async fn restart(&mut self) {
        assert!(self.child.is_none(), "stop the server first");
        self.spawn().await;
    }

    /// Like [`Server::restart`], with `env` instead of the environment it
    /// was started with (for instance without libfaketime).
    pub async fn restart_with_env(&mut self, env: &[(&str, &str)]) {
        self.env = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        self.restart().await;
    }

    /// Runs the admin CLI with extra environment variables (for instance
    /// TETHER_ADMIN_TOKEN).
    pub async fn admin_env(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut cmd = Command::new(&self.bin);
        cmd.args(args)
            .arg("--data-dir")
            .arg(self.dir.path())
            .env_remove("TETHER_ADMIN_TOKEN")
            .env_remove("TETHER_SERVER")
            .stdin(Stdio::null());
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.output().await.expect("tether admin command runs")
    }

    /// SIGKILL: the server dies as in a crash (its data stays); waits until
    /// it is gone.
    pub async fn kill(&mut self) {
        let mut child = self.child.take().expect("the server is running");
        child.kill().await.expect("the server is killed");
    }

    /// Runs the admin CLI against this server.
    pub async fn admin(&self, args: &[&str]) -> Output {
        Command::new(&self.bin)
            .args(args)
            .arg("--data-dir")
            .arg(self.dir.path())
            .env_remove("TETHER_ADMIN_TOKEN")
            .env_remove("TETHER_SERVER")
            .stdin(Stdio::null())
            .output()
            .await
            .expect("tether admin command runs")
    }

    pub async fn admin_ok(&self, args: &[&str]) -> String {
        let out = self.admin(args).await;
        assert!(
            out.status.success(),
            "`tether {}` failed: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub async fn token(&self, extra: &[&str]) -> CreatedToken {
        let mut args = vec!["token", "create", "--kind", "discovery", "--json"];
        args.extend_from_slice(extra);
        let out = self.admin_ok(&args).await;
        serde_json::from_str(&out).expect("token create --json prints a CreatedToken")
    }

    pub async fn agents(&self) -> Vec<AgentSummary> {
        serde_json::from_str(&self.admin_ok(&["agents", "list", "--json"]).await)
            .expect("agents list --json")
    }

    pub async fn agent(&self, id: uuid::Uuid) -> tether_wire::AgentDetail {
        serde_json::from_str(
            &self
                .admin_ok(&["agents", "show", &id.to_string(), "--json"])
                .await,
        )
        .expect("agents show --json")
    }

    /// Waits (bounded) until the agent has `status`; returns its summary.
    pub async fn wait_status(
        &self,
        id: uuid::Uuid,
        status: AgentStatus,
        within: Duration,
    ) -> AgentSummary {
        let deadline = Instant::now() + within;
        loop {
            let agents = self.agents().await;
            if let Some(a) = agents.iter().find(|a| a.id == id) {
                if a.status == status {
                    return a.clone();
                }
                assert!(
                    Instant::now() < deadline,
                    "agent {id} is {} after {within:?}, expected {status}; server log:\n{}",
                    a.status,
                    self.log()
                );
            } else {
                assert!(Instant::now() < deadline, "agent {id} not listed");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Waits (bounded) until every agent in `ids` has `status`, reading the
    /// fleet once per round.
    pub async fn wait_all_status(&self, ids: &[uuid::Uuid], status: AgentStatus, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let agents = self.agents().await;
            let behind: Vec<String> = ids
                .iter()
                .filter(|id| !agents.iter().any(|a| a.id == **id && a.status == status))
                .map(|id| id.to_string())
                .collect();
            if behind.is_empty() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "agents {behind:?} are not {status} after {within:?}; server log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    /// Sets the default policy's interval (the minimum the server accepts is 5 s).
    pub async fn set_interval(&self, secs: u32) {
        self.admin_ok(&[
            "policy",
            "set",
            "default",
            "--checkin-interval",
            &format!("{secs}s"),
            "--jitter-percent",
            "0",
        ])
        .await;
    }
}

/// An agent's state dir and, while running, its process.
pub struct Agent {
    pub state: Scratch,
    pub child: Option<Child>,
    /// Another build's `tether-agent` (rolling.rs); `None`: this build's.
    bin: Option<PathBuf>,
}

impl Agent {
    pub fn new() -> Agent {
        Agent {
            state: Scratch::new("agent"),
            child: None,
            bin: None,
        }
    }

    /// An agent running another build's `tether-agent` binary.
    pub fn of_binary(bin: PathBuf) -> Agent {
        Agent {
            bin: Some(bin),
            ..Agent::new()
        }
    }

    fn bin(&self) -> PathBuf {
        self.bin.clone().unwrap_or_else(agent_bin)
    }

    pub async fn enroll(&self, server: &Server, token: &str, extra: &[&str]) -> Output {
        self.enroll_at(&server.endpoint.url, server, token, extra)
            .await
    }

    /// Enrolls through `url` (a load balancer in front of `server`), pinning
    /// `server`'s CA.
    pub async fn enroll_at(
        &self,
        url: &str,
        server: &Server,
        token: &str,
        extra: &[&str],
    ) -> Output {
        Command::new(self.bin())
            .args(["enroll", "--server", url, "--token", token])
            .args(["--ca-fingerprint", &server.endpoint.ca_fingerprint])
            .arg("--state-dir")
            .arg(self.state.path())
            .args(extra)
            .env_remove("HTTPS_PROXY")
            .env_remove("https_proxy")
            .stdin(Stdio::null())
            .output()
            .await
            .expect("tether-agent enroll runs")
    }

    pub async fn enroll_ok(&self, server: &Server, token: &str, extra: &[&str]) -> uuid::Uuid {
        let out = self.enroll(server, token, extra).await;
        assert!(
            out.status.success(),
            "enroll failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        self.id()
    }

    pub fn id(&self) -> uuid::Uuid {
        let state: serde_json::Value = serde_json::from_slice(
            &std::fs::read(self.state.path().join("state.json")).expect("state.json exists"),
        )
        .expect("state.json is JSON");
        state["agent_id"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .expect("state.json has agent_id")
    }

    pub fn credential(&self) -> String {
        std::fs::read_to_string(self.state.path().join("credential"))
            .expect("credential file")
            .trim()
            .to_owned()
    }

    pub fn run(&mut self, env: &[(&str, &str)]) {
        let log = std::fs::File::create(self.state.path().join("run.stderr")).expect("log file");
        let mut cmd = Command::new(self.bin());
        cmd.args(["run", "--state-dir"]).arg(self.state.path());
        for (k, v) in env {
            cmd.env(k, v);
        }
        self.child = Some(
            cmd.env_remove("HTTPS_PROXY")
                .env_remove("https_proxy")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .kill_on_drop(true)
                .spawn()
                .expect("tether-agent run starts"),
        );
    }

    /// SIGTERM: the clean stop. Returns the exit status.
    pub async fn terminate(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("agent is running");
        sigterm(&mut child, Duration::from_secs(10)).await
    }

    /// SIGKILL: silence without a goodbye.
    pub async fn kill(&mut self) {
        let mut child = self.child.take().expect("agent is running");
        child.kill().await.expect("kill works");
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.state.path().join("run.stderr")).unwrap_or_default()
    }
}

pub fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Generates one `#[tokio::test]` per backend for a scenario `async fn(Backend)`.
#[macro_export]
macro_rules! both_backends {
    ($($scenario:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() { super::$scenario($crate::lab::Backend::Sqlite).await }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() { super::$scenario($crate::lab::Backend::Postgres).await }
            )*
        }
    };
}

/// Sends SIGTERM (the clean stop) to `child` and waits at most `within` for
/// it to exit.
pub async fn sigterm(child: &mut Child, within: Duration) -> std::process::ExitStatus {
    let pid = child.id().expect("the child has a pid");
    let st = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("kill runs");
    assert!(st.success());
    tokio::time::timeout(within, child.wait())
        .await
        .unwrap_or_else(|_| panic!("pid {pid} did not stop within {within:?} of SIGTERM"))
        .expect("wait works")
}
