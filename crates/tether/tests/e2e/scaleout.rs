//! Several servers on one PostgreSQL, and a load balancer in front (issue
//! #12, first slice): singleton jobs run on one server at a time and move
//! when it dies; a real HAProxy's PROXY header (v1 and v2) gives the real
//! client address, and one from an untrusted address is refused; the
//! database's credentials and TLS settings.

use std::time::Duration;

use tether_testlab::haproxy::{Balancer, Haproxy};
use tokio::time::Instant;

use crate::lab::{Agent, Backend, Server, text};

const LEASE: &str = "3";

async fn jobs(server: &Server) -> Vec<String> {
    server.health().await.map(|h| h.jobs).unwrap_or_default()
}

/// Waits until `server`'s `/health` lists `job`; returns how long it took.
async fn until_holds(server: &Server, job: &str, within: Duration) -> Duration {
    let start = Instant::now();
    loop {
        if jobs(server).await.iter().any(|j| j == job) {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < within,
            "{job} did not move to this server within {within:?}: {}",
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Two real servers on one PostgreSQL: one runs the sweeper (and the other
/// singleton jobs), the other does not; after a kill -9 of the holder the
/// other takes them over within the documented bound (4/3 of the lease),
/// and the lease's epoch says it changed hands once.
#[tokio::test]
async fn singleton_jobs_run_on_one_server_and_move_after_kill_9() {
    let env = [("TETHER_SINGLETON_LEASE_SECS", LEASE)];
    let mut a = Server::start_with(Backend::Postgres, &env).await;
    // A claims at start, before B exists.
    until_holds(&a, "status-sweeper", Duration::from_secs(5)).await;
    let b = Server::start_sharing_database_with(&a, &env).await;
    // Over several renewals, B never runs them and A keeps them.
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let on_a = jobs(&a).await;
        let on_b = jobs(&b).await;
        for job in ["status-sweeper", "task-sweeper", "retention"] {
            assert!(on_a.iter().any(|j| j == job), "A runs {job}: {on_a:?}");
            assert!(
                !on_b.iter().any(|j| j == job),
                "B does not run {job}: {on_b:?}"
            );
        }
        // Each re-signs its own definitions repository (no shared defs_dir here).
        assert!(on_b.iter().any(|j| j == "defs-refresh"), "{on_b:?}");
    }
    assert!(
        !b.log()
            .contains("singleton job acquired: this server runs it job=\"status-sweeper\""),
        "{}",
        b.log()
    );

    let killed = Instant::now();
    a.kill().await;
    // The bound: the lease (3 s) plus one renewal period (1 s), plus the
    // time for a poll to see it.
    let took = until_holds(&b, "status-sweeper", Duration::from_secs(8)).await;
    let after_kill = killed.elapsed();
    eprintln!("singleton takeover after kill -9: {after_kill:?} (seen after {took:?} of polling)");
    assert!(
        after_kill <= Duration::from_millis(4000 + 1500),
        "took {after_kill:?}"
    );
    let on_b = jobs(&b).await;
    for job in ["status-sweeper", "task-sweeper", "retention"] {
        assert!(on_b.iter().any(|j| j == job), "B runs {job} now: {on_b:?}");
    }
    assert!(b.log().contains("singleton job acquired"), "{}", b.log());
    // The store's view: B holds the sweeper's lease at epoch 2.
    let db = a.database_url.clone().expect("postgres");
    let out = std::process::Command::new("psql")
        .arg(&db)
        .args([
            "-At",
            "-c",
            "SELECT holder, epoch FROM job_leases WHERE job = 'status-sweeper'",
        ])
        .output()
        .expect("psql runs");
    let row = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let b_instance = std::fs::read_to_string(b.dir.path().join("instance.id"))
        .expect("instance.id")
        .trim()
        .to_owned();
    assert_eq!(row, format!("{b_instance}|2"), "{}", text(&out));
}

/// A clean stop (SIGTERM) releases the leases: the other server takes over
/// at its next renewal, well before the lease would have expired.
#[tokio::test]
async fn a_clean_stop_hands_the_jobs_over_at_once() {
    let env = [("TETHER_SINGLETON_LEASE_SECS", "30")];
    let mut a = Server::start_with(Backend::Postgres, &env).await;
    until_holds(&a, "status-sweeper", Duration::from_secs(5)).await;
    let b = Server::start_sharing_database_with(&a, &env).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!jobs(&b).await.iter().any(|j| j == "status-sweeper"));
    a.stop().await;
    // One renewal period (10 s) at most, not the 30 s lease.
    until_holds(&b, "status-sweeper", Duration::from_secs(12)).await;
    assert!(a.log().contains("singleton job released"), "{}", a.log());
}

fn passthrough(server: &Server, send_proxy: Option<&'static str>, source: &str) -> Balancer {
    Balancer {
        tls: None,
        servers: vec![server.local_addr()],
        tcp: true,
        send_proxy,
        source: Some(source.to_owned()),
    }
}

fn url(balancer: &Haproxy) -> String {
    format!("https://127.0.0.1:{}", balancer.port)
}

/// A real HAProxy in TCP mode connects to the server from 127.0.0.3 (the
/// trusted balancer) and sends PROXY v1 or v2 naming the agent at
/// 127.0.0.1: the agent's recorded external IP is 127.0.0.1, not the
/// balancer's. The same header from 127.0.0.4 (untrusted) is refused, and
/// a trusted balancer that sends no header is refused while one is
/// required. Direct connections (the admin CLI) are served as before.
#[tokio::test]
async fn haproxy_proxy_protocol_gives_the_real_client_address() {
    let server = Server::start_with(
        Backend::Sqlite,
        &[("TETHER_PROXY_PROTOCOL_FROM", "127.0.0.3/32")],
    )
    .await;
    for version in ["send-proxy", "send-proxy-v2"] {
        let balancer = Haproxy::start(&passthrough(&server, Some(version), "127.0.0.3")).await;
        let agent = Agent::new();
        let token = server.token(&[]).await.token;
        let out = agent
            .enroll_at(&url(&balancer), &server, &token, &["--name", version])
            .await;
        assert!(out.status.success(), "{version}: {}", text(&out));
        let id = agent.id();
        let enrolled = server
            .agents()
            .await
            .into_iter()
            .find(|a| a.id == id)
            .expect("listed");
        assert_eq!(
            enrolled.external_ip.as_deref(),
            Some("127.0.0.1"),
            "{version}: the agent's address, not the balancer's 127.0.0.3"
        );
        // The running agent checks in through the balancer too (the URL it
        // enrolled with), and its check-ins record the same address.
        assert_eq!(enrolled.last_seen, None, "no check-in yet");
        let mut agent = agent;
        agent.run(&[]);
        let deadline = Instant::now() + Duration::from_secs(20);
        let checked_in = loop {
            let seen = server.agents().await.into_iter().find(|a| a.id == id);
            if let Some(a) = seen.filter(|a| a.last_seen.is_some()) {
                break a;
            }
            assert!(
                Instant::now() < deadline,
                "{version}: no check-in through the balancer: {}",
                agent.stderr()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        assert_eq!(
            checked_in.external_ip.as_deref(),
            Some("127.0.0.1"),
            "{version}"
        );
        agent.terminate().await;
    }

    // An untrusted sender's header is refused.
    let stranger = Haproxy::start(&passthrough(&server, Some("send-proxy-v2"), "127.0.0.4")).await;
    let token = server.token(&[]).await.token;
    let out = Agent::new()
        .enroll_at(&url(&stranger), &server, &token, &[])
        .await;
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        server.log().contains("not in proxy_protocol_from"),
        "{}",
        server.log()
    );

    // The trusted balancer without a header: refused while required.
    let bare = Haproxy::start(&passthrough(&server, None, "127.0.0.3")).await;
    let out = Agent::new()
        .enroll_at(&url(&bare), &server, &token, &[])
        .await;
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        server
            .log()
            .contains("no PROXY header from the trusted balancer"),
        "{}",
        server.log()
    );
}

/// A password in the database URL (user part and parameter) reaches
/// neither `tether config show` nor the server's log; a start that fails
/// names where it tried, without it.
#[tokio::test]
async fn database_passwords_reach_no_log_and_no_config_show() {
    let a = Server::start(Backend::Postgres).await;
    let base = a.database_url.clone().expect("postgres");
    // The local server trusts loopback, so these passwords are not checked
    // but still travel in the URL.
    let with_password = base.replacen("postgres@", "postgres:Hunter2secret@", 1);
    assert_ne!(with_password, base);
    let scratch = tether_testlab::Scratch::new("config");
    let out = tokio::process::Command::new(crate::lab::tether_bin())
        .args(["config", "show", "--data-dir"])
        .arg(scratch.path())
        .args([
            "--database-url",
            &format!("{with_password}?password=Param2secret"),
        ])
        .output()
        .await
        .expect("runs");
    let shown = text(&out);
    assert!(out.status.success(), "{shown}");
    assert!(shown.contains("postgres:***@"), "{shown}");
    assert!(shown.contains("password=***"), "{shown}");
    assert!(
        !shown.contains("Hunter2secret") && !shown.contains("Param2secret"),
        "{shown}"
    );

    // A start against a port nothing listens on fails and says where.
    let dead = tether_testlab::free_port();
    let url = format!("postgres://postgres:Hunter2secret@127.0.0.1:{dead}/x?password=Param2secret");
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new(crate::lab::tether_bin())
            .args(["server", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(scratch.path())
            .args(["--database-url", &url])
            .env("TETHER_LOG", "debug")
            .output(),
    )
    .await
    .expect("fails in time")
    .expect("runs");
    let said = text(&out);
    assert!(!out.status.success(), "{said}");
    assert!(said.contains("TETHER-E5001"), "{said}");
    assert!(said.contains(&format!("127.0.0.1:{dead}")), "{said}");
    assert!(
        !said.contains("Hunter2secret") && !said.contains("Param2secret"),
        "{said}"
    );
}

fn psql_at(url: &str, sql: &str) -> String {
    let out = std::process::Command::new("psql")
        .arg(url)
        .args(["-At", "-c", sql])
        .output()
        .expect("psql runs");
    assert!(out.status.success(), "{sql}: {}", text(&out));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

async fn server_start_fails(
    scratch: &tether_testlab::Scratch,
    url: &str,
    env: &[(&str, String)],
) -> String {
    let mut cmd = tokio::process::Command::new(crate::lab::tether_bin());
    cmd.args(["server", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(scratch.path())
        .args(["--database-url", url]);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .expect("fails in time")
        .expect("runs");
    let said = text(&out);
    assert!(!out.status.success(), "{url} {env:?}: {said}");
    said
}

/// TLS to the local PostgreSQL (Debian's default: ssl on, a self-signed
/// `localhost` certificate): with `verify-full` and that certificate as
/// the CA file, a real server starts and its connections are TLS
/// (`pg_stat_ssl`). The same settings against `127.0.0.1`, which the
/// certificate does not name, stop the start with TETHER-E5003 and its
/// action, from the setting and from the URL alike; so does a CA file that
/// cannot be read.
#[tokio::test]
async fn database_tls_is_verified_and_a_failure_stops_the_start_with_e5003() {
    let a = Server::start(Backend::Postgres).await;
    let base = a.database_url.clone().expect("postgres");
    assert_eq!(
        psql_at(&base, "SHOW ssl"),
        "on",
        "the local PostgreSQL must have TLS on (Debian's default, scripts/install-test-deps.sh)"
    );
    let cert = psql_at(&base, "SHOW ssl_cert_file");
    let by_name = base.replacen("@127.0.0.1:", "@localhost:", 1);
    assert_ne!(by_name, base);
    let db = by_name
        .rsplit('/')
        .next()
        .expect("database name")
        .to_owned();

    let verified = Server::start_at_database_url(
        by_name.clone(),
        &[
            ("TETHER_DATABASE_SSLMODE", "verify-full"),
            ("TETHER_DATABASE_CA_FILE", cert.as_str()),
            ("TETHER_DATABASE_POOL_SIZE", "3"),
        ],
    )
    .await;
    let tls_connections = psql_at(
        &base,
        &format!(
            "SELECT count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
             WHERE a.datname = '{db}' AND s.ssl AND a.pid <> pg_backend_pid()"
        ),
    );
    assert_ne!(tls_connections, "0", "{}", verified.log());
    drop(verified);

    let scratch = tether_testlab::Scratch::new("tls");
    let separator = if base.contains('?') { '&' } else { '?' };
    let cases: [(String, Vec<(&str, String)>); 3] = [
        (
            base.clone(),
            vec![
                ("TETHER_DATABASE_SSLMODE", "verify-full".to_owned()),
                ("TETHER_DATABASE_CA_FILE", cert.clone()),
            ],
        ),
        (
            format!("{base}{separator}sslmode=verify-full&sslrootcert={cert}"),
            vec![],
        ),
        (
            by_name.clone(),
            vec![
                ("TETHER_DATABASE_SSLMODE", "verify-ca".to_owned()),
                (
                    "TETHER_DATABASE_CA_FILE",
                    scratch.path().join("missing-ca.pem").display().to_string(),
                ),
            ],
        ),
    ];
    for (url, env) in cases {
        let said = server_start_fails(&scratch, &url, &env).await;
        assert!(said.contains("TETHER-E5003"), "{url} {env:?}: {said}");
        assert!(said.contains("action: Turn TLS on in PostgreSQL"), "{said}");
    }
}

/// A garbage enrollment (a failure the limit counts) posted with curl to
/// `base`, trusting `server`'s CA; returns the HTTP status.
async fn failed_enrollment(server: &Server, base: &str) -> String {
    let out = tokio::process::Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "5",
        ])
        .arg("--cacert")
        .arg(&server.endpoint.ca_pem_path)
        .args([
            "-X",
            "POST",
            "-H",
            "content-type: application/json",
            "--data",
            "{",
        ])
        .arg(format!("{base}/v1/enroll"))
        .output()
        .await
        .expect("curl runs");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// The failed-enrollment limit counts the client the PROXY header names,
/// not the balancer: failures made through HAProxy (which connects from
/// 127.0.0.3 for a client at 127.0.0.1) use up 127.0.0.1's allowance, so
/// the same client connecting directly is limited at once.
#[tokio::test]
async fn rate_limits_count_the_real_client_behind_the_balancer() {
    let server = Server::start_with(
        Backend::Sqlite,
        &[
            ("TETHER_PROXY_PROTOCOL_FROM", "127.0.0.3"),
            ("TETHER_ENROLL_FAILURES_PER_MINUTE", "2"),
        ],
    )
    .await;
    let balancer = Haproxy::start(&passthrough(&server, Some("send-proxy-v2"), "127.0.0.3")).await;
    let through = url(&balancer);
    for attempt in 0..2 {
        let status = failed_enrollment(&server, &through).await;
        assert!(
            status.starts_with('4') && status != "429",
            "failure {attempt} is refused for itself: {status}"
        );
    }
    assert_eq!(failed_enrollment(&server, &through).await, "429");
    // Directly from 127.0.0.1: the balancer's address (127.0.0.3) made no
    // request the limit saw; 127.0.0.1 made all of them.
    assert_eq!(
        failed_enrollment(&server, &server.endpoint.url).await,
        "429"
    );
}
