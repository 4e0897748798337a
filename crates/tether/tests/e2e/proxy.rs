//! Check-in through a real HTTP proxy that demands Basic auth (tinyproxy).

use std::time::Duration;

use tether_wire::{AgentStatus, ErrorCode};

use crate::both_backends;
use tether_testlab::tinyproxy::Tinyproxy;

use crate::lab::{Agent, Backend, Server, text};

both_backends!(checkin_through_an_authenticating_proxy);

async fn checkin_through_an_authenticating_proxy(backend: Backend) {
    let server = Server::start(backend).await;
    server.set_interval(5).await;
    let server_port = url::Url::parse(&server.endpoint.url)
        .expect("url")
        .port()
        .expect("port");
    let proxy = Tinyproxy::start_with(server_port, "tether", "s3cret-pass").await;
    let token = server.token(&["--max-uses", "5"]).await;

    // No credentials: the proxy answers 407 and the agent says so.
    let agent = Agent::new();
    let out = agent
        .enroll(
            &server,
            &token.token,
            &["--proxy", &format!("http://127.0.0.1:{}", proxy.port)],
        )
        .await;
    assert!(!out.status.success());
    assert!(
        text(&out).contains(ErrorCode::ProxyAuthRequired.as_str()),
        "{}",
        text(&out)
    );

    // Wrong credentials: rejected, named as such.
    let out = agent
        .enroll(
            &server,
            &token.token,
            &[
                "--proxy",
                &format!("http://tether:wrong@127.0.0.1:{}", proxy.port),
            ],
        )
        .await;
    assert!(!out.status.success());
    let t = text(&out);
    assert!(t.contains(ErrorCode::ProxyAuthFailed.as_str()), "{t}");
    assert!(
        !t.contains("wrong"),
        "the proxy password must never be printed: {t}"
    );

    // Right credentials: enrollment and check-ins go through the tunnel.
    let mut agent = Agent::new();
    let proxy_url = format!("http://tether:s3cret-pass@127.0.0.1:{}", proxy.port);
    let id = agent
        .enroll_ok(&server, &token.token, &["--proxy", &proxy_url])
        .await;
    agent.run(&[]);
    server
        .wait_status(id, AgentStatus::Active, Duration::from_secs(20))
        .await;

    let detail = server.agent(id).await;
    let reported = detail.proxy.clone().unwrap_or_default();
    assert!(
        reported.contains(&proxy.port.to_string()),
        "the server knows the proxy in use: {reported:?}"
    );
    assert!(
        !reported.contains("s3cret"),
        "no proxy password reaches the server: {reported:?}"
    );
    let log = proxy.log();
    assert!(
        log.contains("CONNECT"),
        "the tunnel went through tinyproxy: {log}"
    );
    agent.terminate().await;
    for f in ["agent.log", "error.log", "install.log"] {
        let p = agent.state.path().join("logs").join(f);
        let body = std::fs::read_to_string(&p).unwrap_or_default();
        assert!(
            !body.contains("s3cret-pass"),
            "{} leaks the proxy password",
            p.display()
        );
    }
}
