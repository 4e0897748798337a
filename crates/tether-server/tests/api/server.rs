//! Start-up, health, PKI, keep-alive, restart and shutdown.

use std::sync::Arc;

use sha2::Digest as _;
use tether_wire::{Clock as _, ErrorCode, Health, ManualClock};

use crate::support::{self, Client};

#[tokio::test]
async fn health_reports_the_store_and_needs_no_auth() {
    let h = support::start().await;
    let reply = h.client.get("/health", None).await;
    let health: Health = reply.ok();
    assert_eq!(health.service, "tether");
    assert_eq!(health.status, "ok");
    assert_eq!(health.version, tether_wire::VERSION);
    assert_eq!(health.store.backend, "sqlite");
    assert!(health.store.ok);
    assert_eq!(health.server_time, h.clock.now(), "the injected clock");
}

#[tokio::test]
async fn the_served_chain_ends_in_the_pinned_ca_and_names_ip_and_localhost() {
    let h = support::start().await;
    for name in ["localhost", "127.0.0.1"] {
        let tls = h.client.tls(name).await;
        let (_, conn) = tls.get_ref();
        let chain = conn.peer_certificates().expect("server sent a chain");
        assert_eq!(chain.len(), 2, "leaf and CA");
        let fp = format!(
            "sha256:{}",
            hex::encode(sha2::Sha256::digest(chain[1].as_ref()))
        );
        assert_eq!(fp, h.server.ca_fingerprint);
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&h.server.admin_token_path)
            .expect("admin token")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    assert!(h.admin.starts_with("tta_"));
    assert!(h.server.admin_token_created);
}

#[tokio::test]
async fn keep_alive_carries_many_requests_on_one_connection() {
    let h = support::start().await;
    let mut conn = h.client.connection().await;
    let auth = format!("Bearer {}", h.admin);
    for _ in 0..20 {
        let r = Client::send_on(
            &mut conn,
            "GET",
            "/v1/admin/tokens",
            &[("authorization", &auth)],
            None,
        )
        .await;
        assert_eq!(r.status, 200);
        let r = Client::send_on(&mut conn, "GET", "/nope", &[], None).await;
        r.error(404, ErrorCode::NotFound);
    }
}

#[tokio::test]
async fn a_restart_reuses_the_ca_the_admin_token_and_the_data() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = ManualClock::new(support::epoch());
    let first = tether_server::start(support::config(dir.path()), Arc::new(clock.clone()))
        .await
        .expect("starts");
    let token = std::fs::read_to_string(&first.admin_token_path)
        .expect("token")
        .trim()
        .to_owned();
    let fp = first.ca_fingerprint.clone();
    let client = Client::new(&first);
    let created: tether_wire::CreatedToken = client
        .post(
            "/v1/admin/tokens",
            Some(&token),
            &support::token_request(tether_wire::AgentKind::Connector),
        )
        .await
        .ok();
    first.shutdown().await;

    let second = tether_server::start(support::config(dir.path()), Arc::new(clock))
        .await
        .expect("restarts");
    assert_eq!(second.ca_fingerprint, fp);
    assert!(!second.admin_token_created);
    let again = std::fs::read_to_string(&second.admin_token_path)
        .expect("token")
        .trim()
        .to_owned();
    assert_eq!(again, token);
    let client = Client::new(&second);
    let tokens: Vec<tether_wire::TokenInfo> =
        client.get("/v1/admin/tokens", Some(&token)).await.ok();
    assert_eq!(tokens.len(), 1);
    assert_eq!(tokens[0].id, created.info.id);
    second.shutdown().await;
}

#[tokio::test]
async fn shutdown_stops_accepting_connections() {
    let h = support::start().await;
    let addr = h.server.local_addr;
    assert_eq!(h.client.get("/health", None).await.status, 200);
    h.server.shutdown().await;
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "the listener is closed"
    );
}

#[tokio::test]
async fn operator_certificates_are_served_and_mismatches_refused() {
    // Build an operator chain with the crate's own generator in another dir.
    let pki = tempfile::tempdir().expect("tempdir");
    let other = tempfile::tempdir().expect("tempdir");
    let now = time::OffsetDateTime::now_utc();
    let generated = tether_server::pki::load_or_generate(pki.path(), &[], now).expect("generates");
    tether_server::pki::load_or_generate(other.path(), &[], now).expect("generates");
    let chain = pki.path().join("chain.pem");
    let leaf = std::fs::read_to_string(pki.path().join("pki/server.pem")).expect("leaf");
    let ca = std::fs::read_to_string(pki.path().join("pki/ca.pem")).expect("ca");
    std::fs::write(&chain, format!("{leaf}{ca}")).expect("writes");

    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = support::config(dir.path());
    cfg.tls_cert = Some(chain.clone());
    cfg.tls_key = Some(pki.path().join("pki/server.key"));
    let server = tether_server::start(cfg, Arc::new(ManualClock::new(support::epoch())))
        .await
        .expect("starts");
    assert_eq!(server.ca_fingerprint, generated.ca_fingerprint);
    let client = Client::new(&server);
    assert_eq!(client.get("/health", None).await.status, 200);
    server.shutdown().await;

    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = support::config(dir.path());
    cfg.tls_cert = Some(chain);
    cfg.tls_key = Some(other.path().join("pki/server.key"));
    let err = tether_server::start(cfg, Arc::new(ManualClock::new(support::epoch())))
        .await
        .expect_err("mismatch");
    assert!(err.to_string().contains("does not match"), "{err}");
}

#[tokio::test]
async fn a_silent_client_does_not_block_others() {
    let h = support::start().await;
    // Connections that never start TLS, or send garbage instead, are each
    // handled in their own task; the accept loop keeps serving.
    let _idle = tokio::net::TcpStream::connect(h.server.local_addr)
        .await
        .expect("connects");
    let mut junk = tokio::net::TcpStream::connect(h.server.local_addr)
        .await
        .expect("connects");
    tokio::io::AsyncWriteExt::write_all(&mut junk, b"GET / HTTP/1.1\r\n\r\n")
        .await
        .expect("writes");
    let reply = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        h.client.get("/health", None),
    )
    .await
    .expect("served while other connections stall");
    assert_eq!(reply.status, 200);
}
