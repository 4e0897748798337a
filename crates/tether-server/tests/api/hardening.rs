//! The server against its own outages and against hostile or greedy
//! clients: statuses after a restart or a store failure, admin credentials,
//! enrollment during a publish, limits, bundles, the read-only probe,
//! paging, retention, file modes.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration as StdDuration;

use tether_server::{RunningServer, ServerConfig};
use tether_wire::{
    ActionInfo, ActionKind, ActionResult, ActionState, AdminTokenInfo, AgentKind, AgentProbe,
    AgentStatus, AgentSummary, BundleInfo, CreateAdminTokenRequest, CreatedAdminToken,
    DoctorSummary, ErrorCode, LastError, ManualClock, NEXT_CURSOR_HEADER, OutageKind,
};
use time::Duration;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::outage::Switchable;
use crate::support::{self, Client, Harness, checkin_request, token_request};

/// The default policy: 30 s ± 10 %, plus the default 10 s grace.
const THRESHOLD_SECS: i64 = 76;

async fn start_in(
    dir: &std::path::Path,
    clock: &ManualClock,
    adjust: impl FnOnce(&mut ServerConfig),
) -> RunningServer {
    let mut cfg = support::config(dir);
    adjust(&mut cfg);
    tether_server::start(cfg, Arc::new(clock.clone()))
        .await
        .expect("server starts")
}

fn admin_of(server: &RunningServer) -> String {
    std::fs::read_to_string(&server.admin_token_path)
        .expect("admin token")
        .trim()
        .to_owned()
}

async fn active_agent(client: &Client, admin: &str) -> tether_wire::EnrollResponse {
    let t: tether_wire::CreatedToken = client
        .post(
            "/v1/admin/tokens",
            Some(admin),
            &token_request(AgentKind::Connector),
        )
        .await
        .ok();
    let e: tether_wire::EnrollResponse = client
        .post("/v1/enroll", None, &support::enroll_request(&t.token, "a"))
        .await
        .ok();
    let c: tether_wire::CheckinResponse = client
        .post("/v1/agent/checkin", Some(&e.credential), &checkin_request())
        .await
        .ok();
    assert_eq!(c.status, AgentStatus::Active);
    e
}

async fn detail(client: &Client, admin: &str, id: uuid::Uuid) -> tether_wire::AgentDetail {
    client
        .get(&format!("/v1/admin/agents/{id}"), Some(admin))
        .await
        .ok()
}

fn inactive_transitions(d: &tether_wire::AgentDetail) -> usize {
    d.transitions
        .iter()
        .filter(|t| t.to == AgentStatus::Inactive)
        .count()
}

// Statuses after the control plane's own outages.

#[tokio::test]
async fn after_a_restart_every_agent_gets_a_full_threshold() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = ManualClock::new(support::epoch());
    let first = start_in(dir.path(), &clock, |_| {}).await;
    let admin = admin_of(&first);
    let client = Client::new(&first);
    let back = active_agent(&client, &admin).await;
    let gone = active_agent(&client, &admin).await;
    first.shutdown().await;

    // Down for three thresholds.
    clock.advance(Duration::seconds(3 * THRESHOLD_SECS));
    let second = start_in(dir.path(), &clock, |_| {}).await;
    assert_eq!(second.start_outage.kind, OutageKind::Restart);
    assert_eq!(second.start_outage.agents_given_grace, 2);
    assert_eq!(
        second.sweep_now().await.expect("sweeps"),
        0,
        "nobody is Inactive right after a restart"
    );
    let client = Client::new(&second);
    clock.advance(Duration::seconds(THRESHOLD_SECS - 5));
    assert_eq!(second.sweep_now().await.expect("sweeps"), 0);
    // One agent resumes within the threshold: no transition at all.
    let c: tether_wire::CheckinResponse = client
        .post(
            "/v1/agent/checkin",
            Some(&back.credential),
            &checkin_request(),
        )
        .await
        .ok();
    assert_eq!(c.status, AgentStatus::Active);
    // The other stays silent a full threshold after the restart.
    clock.advance(Duration::seconds(6));
    assert_eq!(second.sweep_now().await.expect("sweeps"), 1);

    let d = detail(&client, &admin, back.agent_id).await;
    assert_eq!(inactive_transitions(&d), 0, "{:?}", d.transitions);
    let outage = d.outages.first().expect("the restart is in the history");
    assert_eq!(outage.kind, OutageKind::Restart);
    assert_eq!(
        outage.ended_at - outage.started_at,
        Duration::seconds(3 * THRESHOLD_SECS),
        "from the last heartbeat to the restart"
    );
    let d = detail(&client, &admin, gone.agent_id).await;
    assert_eq!(d.summary.status, AgentStatus::Inactive);
    let reason = &d.transitions[0].reason;
    assert!(
        reason.contains("recovered from its own outage"),
        "the reason says the count restarted: {reason}"
    );
    second.shutdown().await;
}

#[tokio::test]
async fn after_a_store_outage_every_agent_gets_a_full_threshold() {
    let dir = tempfile::tempdir().expect("tempdir");
    let inner = tether_store_sql::connect(&tether_server::default_database_url(dir.path()))
        .await
        .expect("sqlite opens");
    let store = Arc::new(Switchable::new(inner));
    let clock = ManualClock::new(support::epoch());
    let server = tether_server::start_with_store(
        support::config(dir.path()),
        store.clone(),
        Arc::new(clock.clone()),
    )
    .await
    .expect("starts");
    let admin = admin_of(&server);
    let client = Client::new(&server);
    let a = active_agent(&client, &admin).await;

    store.down.store(true, Ordering::SeqCst);
    clock.advance(Duration::seconds(10));
    client
        .post("/v1/agent/checkin", Some(&a.credential), &checkin_request())
        .await
        .error(503, ErrorCode::StoreUnavailable);
    // Three thresholds of failing store: nobody is declared Inactive.
    for _ in 0..3 {
        clock.advance(Duration::seconds(THRESHOLD_SECS));
        assert_eq!(server.sweeper_tick().await, 0);
    }
    store.down.store(false, Ordering::SeqCst);
    clock.advance(Duration::seconds(1));
    assert_eq!(
        server.sweeper_tick().await,
        0,
        "the first tick after recovery gives the grace"
    );
    clock.advance(Duration::seconds(THRESHOLD_SECS - 1));
    assert_eq!(server.sweeper_tick().await, 0, "still within the threshold");
    let d = detail(&client, &admin, a.agent_id).await;
    assert_eq!(inactive_transitions(&d), 0);
    let outage = d.outages.first().expect("the store outage is recorded");
    assert_eq!(
        (outage.kind, outage.agents_given_grace),
        (OutageKind::Store, 1)
    );
    assert_eq!(
        outage.ended_at - outage.started_at,
        Duration::seconds(3 * THRESHOLD_SECS + 1),
        "from the first failure to the first tick that found the store back"
    );
    clock.advance(Duration::seconds(2));
    assert_eq!(
        server.sweeper_tick().await,
        1,
        "silent a full threshold after the store came back"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn a_checkin_on_a_stuck_store_is_answered_503_within_the_bound() {
    let dir = tempfile::tempdir().expect("tempdir");
    let inner = tether_store_sql::connect(&tether_server::default_database_url(dir.path()))
        .await
        .expect("sqlite opens");
    let store = Arc::new(Switchable::new(inner));
    let clock = ManualClock::new(support::epoch());
    let mut cfg = support::config(dir.path());
    cfg.store_wait_secs = 1;
    let server = tether_server::start_with_store(cfg, store.clone(), Arc::new(clock.clone()))
        .await
        .expect("starts");
    let admin = admin_of(&server);
    let client = Client::new(&server);
    let a = active_agent(&client, &admin).await;

    store.hang.store(true, Ordering::SeqCst);
    let started = tokio::time::Instant::now();
    let r = tokio::time::timeout(
        StdDuration::from_secs(20),
        client.post("/v1/agent/checkin", Some(&a.credential), &checkin_request()),
    )
    .await
    .expect("the check-in is answered, not left hanging");
    let e = r.error(503, ErrorCode::StoreUnavailable);
    assert!(e.message.contains("within 1 s"), "{}", e.message);
    assert_eq!(
        r.headers.get("retry-after").map(|v| v.as_bytes()),
        Some(&b"5"[..])
    );
    assert!(
        started.elapsed() < StdDuration::from_secs(10),
        "answered after {:?}",
        started.elapsed()
    );
    assert!(
        server.ctx().outages.failing_since().is_some(),
        "the stuck store counts as an outage"
    );
    let health = tokio::time::timeout(StdDuration::from_secs(20), client.get("/health", None))
        .await
        .expect("the health check answers too");
    assert_eq!(health.status, 503);
    store.hang.store(false, Ordering::SeqCst);
    let c: tether_wire::CheckinResponse = client
        .post("/v1/agent/checkin", Some(&a.credential), &checkin_request())
        .await
        .ok();
    assert_eq!(c.status, AgentStatus::Active);
    server.shutdown().await;
}

// Admin credentials.

#[tokio::test]
async fn deleting_admin_token_and_restarting_revokes_the_old_credential() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = ManualClock::new(support::epoch());
    let first = start_in(dir.path(), &clock, |_| {}).await;
    let old = admin_of(&first);
    let client = Client::new(&first);
    let _: Vec<tether_wire::TokenInfo> = client.get("/v1/admin/tokens", Some(&old)).await.ok();
    first.shutdown().await;

    std::fs::remove_file(dir.path().join("admin.token")).expect("removes admin.token");
    clock.advance(Duration::seconds(1));
    let second = start_in(dir.path(), &clock, |_| {}).await;
    assert!(second.admin_token_created);
    let new = admin_of(&second);
    assert_ne!(new, old);
    let client = Client::new(&second);
    let e = client
        .get("/v1/admin/tokens", Some(&old))
        .await
        .error(401, ErrorCode::AdminCredentialRevoked);
    assert!(e.message.contains("bootstrap"), "{}", e.message);
    let _: Vec<tether_wire::TokenInfo> = client.get("/v1/admin/tokens", Some(&new)).await.ok();
    let listed: Vec<AdminTokenInfo> = client.get("/v1/admin/admin-tokens", Some(&new)).await.ok();
    assert_eq!(
        listed
            .iter()
            .map(|t| (t.name.as_str(), t.bootstrap, t.revoked_at.is_some()))
            .collect::<Vec<_>>(),
        [("bootstrap", true, true), ("bootstrap", true, false)]
    );
    second.shutdown().await;
}

#[tokio::test]
async fn admin_credentials_are_created_listed_revoked_and_rotated() {
    let h = support::start().await;
    let created: CreatedAdminToken = {
        let r = h
            .client
            .post(
                "/v1/admin/admin-tokens",
                Some(&h.admin),
                &CreateAdminTokenRequest { name: "ci".into() },
            )
            .await;
        assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
        r.json()
    };
    assert!(created.token.starts_with("tta_"));
    assert!(!created.info.bootstrap);
    let ci = created.token;
    let _: Vec<AdminTokenInfo> = h.client.get("/v1/admin/admin-tokens", Some(&ci)).await.ok();

    // Names are unique among working credentials; "bootstrap" is taken.
    h.client
        .post(
            "/v1/admin/admin-tokens",
            Some(&h.admin),
            &CreateAdminTokenRequest { name: "ci".into() },
        )
        .await
        .error(409, ErrorCode::AdminTokenNameTaken);
    for bad in ["bootstrap", "", "a b", "x\u{1b}[31m"] {
        h.client
            .post(
                "/v1/admin/admin-tokens",
                Some(&h.admin),
                &CreateAdminTokenRequest { name: bad.into() },
            )
            .await
            .error(422, ErrorCode::InvalidField);
    }

    // Rotation: the old secret stops, the new one works, same name.
    let listed: Vec<AdminTokenInfo> = h
        .client
        .get("/v1/admin/admin-tokens", Some(&h.admin))
        .await
        .ok();
    let boot = listed
        .iter()
        .find(|t| t.bootstrap)
        .expect("bootstrap listed");
    let rotated: CreatedAdminToken = h
        .client
        .post(
            &format!("/v1/admin/admin-tokens/{}/rotate", boot.id),
            Some(&ci),
            &(),
        )
        .await
        .ok();
    assert_eq!(
        (rotated.info.name.as_str(), rotated.info.bootstrap),
        ("bootstrap", true)
    );
    h.client
        .get("/v1/admin/tokens", Some(&h.admin))
        .await
        .error(401, ErrorCode::AdminCredentialRevoked);
    let boot_secret = rotated.token;
    let _: Vec<tether_wire::TokenInfo> = h
        .client
        .get("/v1/admin/tokens", Some(&boot_secret))
        .await
        .ok();

    // Revocation is immediate; the last working credential cannot go.
    let ci_id = created.info.id;
    let revoked: AdminTokenInfo = h
        .client
        .post(
            &format!("/v1/admin/admin-tokens/{ci_id}/revoke"),
            Some(&boot_secret),
            &(),
        )
        .await
        .ok();
    assert!(revoked.revoked_at.is_some());
    h.client
        .get("/v1/admin/tokens", Some(&ci))
        .await
        .error(401, ErrorCode::AdminCredentialRevoked);
    let e = h
        .client
        .post(
            &format!("/v1/admin/admin-tokens/{}/revoke", rotated.info.id),
            Some(&boot_secret),
            &(),
        )
        .await
        .error(409, ErrorCode::LastAdminCredential);
    assert!(e.message.contains("last"), "{}", e.message);
    h.client
        .post(
            &format!("/v1/admin/admin-tokens/{}/revoke", uuid::Uuid::new_v4()),
            Some(&boot_secret),
            &(),
        )
        .await
        .error(404, ErrorCode::NotFound);
    h.client
        .post(
            &format!("/v1/admin/admin-tokens/{ci_id}/rotate"),
            Some(&boot_secret),
            &(),
        )
        .await
        .error(409, ErrorCode::Conflict);
}

#[tokio::test]
async fn a_revoked_admin_token_file_is_never_registered_again() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = ManualClock::new(support::epoch());
    let first = start_in(dir.path(), &clock, |_| {}).await;
    let boot = admin_of(&first);
    let client = Client::new(&first);
    let other: CreatedAdminToken = client
        .post(
            "/v1/admin/admin-tokens",
            Some(&boot),
            &CreateAdminTokenRequest { name: "ops".into() },
        )
        .await
        .json();
    let listed: Vec<AdminTokenInfo> = client.get("/v1/admin/admin-tokens", Some(&boot)).await.ok();
    let boot_id = listed.iter().find(|t| t.bootstrap).expect("listed").id;
    let _: AdminTokenInfo = client
        .post(
            &format!("/v1/admin/admin-tokens/{boot_id}/revoke"),
            Some(&other.token),
            &(),
        )
        .await
        .ok();
    first.shutdown().await;

    let second = start_in(dir.path(), &clock, |_| {}).await;
    assert!(!second.admin_token_created, "the file is still there");
    let client = Client::new(&second);
    client
        .get("/v1/admin/tokens", Some(&boot))
        .await
        .error(401, ErrorCode::AdminCredentialRevoked);
    second.shutdown().await;
}

// Enrollment never waits on the definitions repository.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_enrollment_completes_while_a_publish_holds_the_repository() {
    let h = support::start().await;
    let t = h.create_token(&token_request(AgentKind::Connector)).await;
    // A previous version makes the next publish build a delta too.
    let content = |seed: u64| -> Vec<u8> {
        (0..600_000_u64)
            .map(|i| format!("rule {i} {}\n", (i * 2_654_435_761 + seed) % 1_000_003))
            .collect::<String>()
            .into_bytes()
    };
    h.server
        .ctx()
        .defs
        .publish("big", content(1), None)
        .await
        .expect("first publish");
    let ctx = h.server.ctx().clone();
    let publish = tokio::spawn(async move {
        let started = tokio::time::Instant::now();
        ctx.defs
            .publish("big", content(2), None)
            .await
            .expect("second publish");
        started.elapsed()
    });
    // Wait until the publish holds the repository's lock.
    let repo = h.server.ctx().defs.clone();
    let deadline = tokio::time::Instant::now() + StdDuration::from_secs(30);
    while tokio::time::timeout(StdDuration::from_millis(20), repo.history())
        .await
        .is_ok()
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the publish never took the lock"
        );
        assert!(
            !publish.is_finished(),
            "the publish ended before it was seen holding the lock"
        );
    }
    let started = tokio::time::Instant::now();
    let e = h.enroll_ok(&t.token, "during-publish").await;
    let took = started.elapsed();
    assert!(
        !publish.is_finished(),
        "the enrollment ({took:?}) waited for the publish to finish"
    );
    assert!(e.credential.starts_with("tac_"));
    let root = e.defs_root.expect("the pinned root is handed out");
    let publish_took = publish.await.expect("joins");
    assert_eq!(
        root,
        h.server
            .ctx()
            .defs
            .root_json()
            .await
            .expect("reads the root"),
        "the root from memory is the repository's"
    );
    eprintln!("enrollment took {took:?}; the publish holding the lock took {publish_took:?}");
}

// Limits.

#[tokio::test]
async fn failed_enrollments_are_rate_limited_per_address_but_good_ones_never() {
    let h = support::start_with(|c| c.enroll_failures_per_minute = 3).await;
    let t = h.create_token(&token_request(AgentKind::Connector)).await;
    let bad = support::enroll_request(&format!("tet_{}", "A".repeat(43)), "x");
    for _ in 0..3 {
        h.enroll(&bad).await.error(401, ErrorCode::TokenUnknown);
    }
    let r = h.enroll(&bad).await;
    let e = r.error(429, ErrorCode::RateLimited);
    assert!(
        e.message.contains("enroll_failures_per_minute"),
        "{}",
        e.message
    );
    let retry: u64 = r
        .headers
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("a Retry-After in seconds");
    assert!((1..=60).contains(&retry), "{retry}");
    // Garbage bodies count as failures too.
    h.client
        .send(
            "POST",
            "/v1/enroll",
            &[("content-type", "application/json")],
            Some(b"{".to_vec()),
        )
        .await
        .error(429, ErrorCode::RateLimited);
    // A valid token from the same address is never refused.
    let ok = h.enroll_ok(&t.token, "behind-the-same-nat").await;
    assert_eq!(ok.status, AgentStatus::Pending);
}

/// A TLS connection whose socket receives little, for a client that reads
/// slowly or not at all.
async fn slow_reader(
    client: &Client,
    addr: std::net::SocketAddr,
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("small buffer");
    let tcp = socket.connect(addr).await.expect("connects");
    client.tls_on(tcp, "localhost").await
}

/// The largest file of the served tree (the newest full object).
fn largest_target(data_dir: &std::path::Path) -> String {
    let targets = data_dir.join("defs/repo/targets");
    let mut best: Option<(u64, String)> = None;
    for entry in std::fs::read_dir(&targets).expect("targets dir") {
        let entry = entry.expect("entry");
        let len = entry.metadata().expect("meta").len();
        let name = entry.file_name().to_string_lossy().into_owned();
        if best.as_ref().is_none_or(|(l, _)| len > *l) {
            best = Some((len, name));
        }
    }
    format!("targets/{}", best.expect("a target").1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_that_stops_is_cut_off_and_streams_per_address_are_capped() {
    let h = support::start_with(|c| {
        c.defs_streams_per_address = 1;
        c.write_timeout_secs = 1;
    })
    .await;
    // Incompressible, larger than every socket buffer on the way.
    let mut content = vec![0_u8; 24 * 1024 * 1024];
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for b in content.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    h.server
        .ctx()
        .defs
        .publish("blob", content, None)
        .await
        .expect("publishes");
    let path = format!("/defs/{}", largest_target(h._dir.path()));

    // A reader that reads the head and then nothing.
    let mut stalled = slow_reader(&h.client, h.server.local_addr).await;
    stalled
        .write_all(format!("GET {path} HTTP/1.1\r\nhost: localhost\r\n\r\n").as_bytes())
        .await
        .expect("writes");
    stalled.flush().await.expect("flushes");
    let mut head = [0_u8; 64];
    let n = stalled.read(&mut head).await.expect("reads the head");
    assert!(
        String::from_utf8_lossy(&head[..n]).starts_with("HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&head[..n])
    );
    let me: std::net::IpAddr = "127.0.0.1".parse().expect("ip");
    assert_eq!(h.server.ctx().limits.defs_streams_held(me), 1);

    // A second stream from the same address is told to come back later.
    let r = h.client.get(&path, None).await;
    r.error(429, ErrorCode::RateLimited);
    assert!(r.headers.get("retry-after").is_some());

    // The stalled write times out: the slot (and the file) are freed.
    let deadline = tokio::time::Instant::now() + StdDuration::from_secs(20);
    while h.server.ctx().limits.defs_streams_held(me) > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "a reader that stopped still holds its stream"
        );
        tokio::time::sleep(StdDuration::from_millis(100)).await;
    }
    let r = h.client.get(&path, None).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.body.len() as u64,
        std::fs::metadata(
            h._dir
                .path()
                .join("defs/repo")
                .join(path.trim_start_matches("/defs/"))
        )
        .expect("meta")
        .len()
    );
    drop(stalled);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_cap_wait_until_one_closes() {
    let h = support::start_with(|c| c.max_connections = 2).await;
    let addr = h.server.local_addr;
    let first = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connects");
    let _second = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connects");
    // The kernel accepts the third, but the server does not serve it.
    let third = tokio::net::TcpStream::connect(addr).await.expect("queued");
    let waiting = tokio::spawn({
        let client = h.client.clone();
        async move { client.tls_on(third, "localhost").await }
    });
    tokio::time::sleep(StdDuration::from_millis(800)).await;
    assert!(!waiting.is_finished(), "served beyond the cap");
    drop(first);
    let tls = tokio::time::timeout(StdDuration::from_secs(10), waiting)
        .await
        .expect("served once a slot is free")
        .expect("joins");
    drop(tls);
}

// Bundles.

fn tar_gz(files: &[(&str, &[u8])]) -> Vec<u8> {
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let mut tar = tar::Builder::new(gz);
    for (name, body) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(body.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        tar.append_data(&mut header, name, *body).expect("appends");
    }
    tar.into_inner().expect("tar").finish().expect("gzip")
}

async fn upload(h: &Harness, credential: &str, data: Vec<u8>) -> support::Reply {
    let auth = format!("Bearer {credential}");
    h.client
        .send(
            "POST",
            "/v1/agent/bundles",
            &[
                ("authorization", &auth),
                ("content-type", "application/gzip"),
            ],
            Some(data),
        )
        .await
}

#[tokio::test]
async fn only_served_agents_upload_within_their_quota() {
    let h = support::start_with(|c| c.bundle_uploads_per_agent_per_hour = 2).await;
    let mut req = token_request(AgentKind::Connector);
    req.require_approval = true;
    let t = h.create_token(&req).await;
    let pending = h.enroll_ok(&t.token, "pending").await;
    let bundle = tar_gz(&[("notes.txt", b"hello")]);
    upload(&h, &pending.credential, bundle.clone())
        .await
        .error(403, ErrorCode::AgentPendingApproval);

    let t = h.create_token(&token_request(AgentKind::Connector)).await;
    let a = h.enroll_ok(&t.token, "a").await;
    for _ in 0..2 {
        assert_eq!(upload(&h, &a.credential, bundle.clone()).await.status, 201);
    }
    let r = upload(&h, &a.credential, bundle.clone()).await;
    r.error(429, ErrorCode::RateLimited);
    let retry: u64 = r
        .headers
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("Retry-After");
    assert!(retry > 60, "the hourly quota: {retry}");
    let b = h.enroll_ok(&t.token, "b").await;
    assert_eq!(
        upload(&h, &b.credential, bundle).await.status,
        201,
        "another agent has its own quota"
    );
}

#[tokio::test]
async fn uploads_beyond_the_concurrent_cap_are_told_to_wait() {
    let h = support::start_with(|c| {
        c.bundle_uploads_concurrent = 1;
        // Only the concurrent cap is under test here.
        c.bundle_uploads_per_agent_per_hour = 1000;
    })
    .await;
    let t = h.create_token(&token_request(AgentKind::Connector)).await;
    let a = h.enroll_ok(&t.token, "a").await;
    let b = h.enroll_ok(&t.token, "b").await;
    // An upload that sends its head and only part of its body.
    let open_slow = || async {
        let mut slow = h.client.tls("localhost").await;
        slow.write_all(
            format!(
                "POST /v1/agent/bundles HTTP/1.1\r\nhost: localhost\r\nauthorization: Bearer {}\r\ncontent-type: application/gzip\r\ncontent-length: 100000\r\n\r\n",
                a.credential
            )
            .as_bytes(),
        )
        .await
        .expect("writes");
        slow.write_all(&[0x1f, 0x8b]).await.expect("writes");
        slow.flush().await.expect("flushes");
        slow
    };
    let mut slow = open_slow().await;
    let deadline = tokio::time::Instant::now() + StdDuration::from_secs(10);
    loop {
        let r = upload(&h, &b.credential, tar_gz(&[("x", b"y")])).await;
        if r.status == 429 {
            r.error(429, ErrorCode::RateLimited);
            assert!(r.headers.get("retry-after").is_some());
            break;
        }
        // The slow upload may not have reached the server yet.
        assert_eq!(r.status, 201);
        assert!(tokio::time::Instant::now() < deadline, "never capped");
        // Or it arrived while this upload held the only place, and was
        // itself told to wait: then it starts again.
        let mut byte = [0u8; 1];
        if let Ok(read) = tokio::time::timeout(
            StdDuration::from_millis(20),
            tokio::io::AsyncReadExt::read(&mut slow, &mut byte),
        )
        .await
        {
            let _answered_or_closed = read;
            slow = open_slow().await;
        }
        tokio::time::sleep(StdDuration::from_millis(100)).await;
    }
    drop(slow);
    let deadline = tokio::time::Instant::now() + StdDuration::from_secs(10);
    while upload(&h, &b.credential, tar_gz(&[("x", b"y")]))
        .await
        .status
        != 201
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the place was never freed"
        );
        tokio::time::sleep(StdDuration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_doctor_summary_may_only_name_the_agents_own_bundle() {
    let h = support::start().await;
    let t = h.create_token(&token_request(AgentKind::Connector)).await;
    let a = h.enroll_ok(&t.token, "a").await;
    let b = h.enroll_ok(&t.token, "b").await;
    let theirs: BundleInfo = upload(&h, &b.credential, tar_gz(&[("x", b"y")]))
        .await
        .json();
    let mine: BundleInfo = upload(&h, &a.credential, tar_gz(&[("x", b"y")]))
        .await
        .json();
    let summary = |bundle_id| DoctorSummary {
        status: "failed".into(),
        code: Some(ErrorCode::ConnectRefused),
        root_cause: "refused".into(),
        action: "start it".into(),
        check: None,
        at: time::macros::datetime!(2026-05-17 12:00 UTC),
        bundle_id: Some(bundle_id),
    };
    // In a bundle's manifest.
    let manifest =
        serde_json::to_vec(&serde_json::json!({ "verdict": summary(theirs.id) })).expect("json");
    upload(&h, &a.credential, tar_gz(&[("MANIFEST.json", &manifest)]))
        .await
        .error(422, ErrorCode::BundleNotOwned);
    // In an action's result.
    let queued: ActionInfo = {
        let r = h
            .client
            .post(
                &format!("/v1/admin/agents/{}/actions", a.agent_id),
                Some(&h.admin),
                &ActionKind::Doctor { upload: true },
            )
            .await;
        assert_eq!(r.status, 201);
        r.json()
    };
    let _ = h.checkin(&a.credential).await;
    let path = format!("/v1/agent/actions/{}/result", queued.id);
    let result = |bundle| ActionResult {
        ok: true,
        message: "ran".into(),
        doctor: Some(summary(bundle)),
    };
    let e = h
        .client
        .post(&path, Some(&a.credential), &result(theirs.id))
        .await
        .error(422, ErrorCode::BundleNotOwned);
    assert!(e.message.contains(&theirs.id.to_string()), "{}", e.message);
    let done: ActionInfo = h
        .client
        .post(&path, Some(&a.credential), &result(mine.id))
        .await
        .ok();
    assert_eq!(done.state, ActionState::Completed);
}

// The read-only probe.

#[tokio::test]
async fn the_probe_answers_without_touching_actions_or_reported_state() {
    let h = support::start().await;
    let t = h.create_token(&token_request(AgentKind::Connector)).await;
    let a = h.enroll_ok(&t.token, "a").await;
    let mut req = checkin_request();
    req.last_errors.insert(
        "enroll".into(),
        LastError {
            code: ErrorCode::ProxyAuthFailed,
            message: "the proxy said no".into(),
            at: time::macros::datetime!(2026-05-17 12:00 UTC),
        },
    );
    let _: tether_wire::CheckinResponse = h
        .client
        .post("/v1/agent/checkin", Some(&a.credential), &req)
        .await
        .ok();
    let queued: ActionInfo = h
        .client
        .post(
            &format!("/v1/admin/agents/{}/actions", a.agent_id),
            Some(&h.admin),
            &ActionKind::Doctor { upload: false },
        )
        .await
        .json();
    let before = h.detail(a.agent_id).await;
    h.clock.advance(Duration::seconds(7));

    let probe: AgentProbe = h
        .client
        .get("/v1/agent/probe", Some(&a.credential))
        .await
        .ok();
    assert_eq!(
        (probe.agent_id, probe.status),
        (a.agent_id, AgentStatus::Active)
    );
    assert_eq!(
        probe.current_agent_version.as_deref(),
        Some(tether_wire::VERSION)
    );

    let after = h.detail(a.agent_id).await;
    assert_eq!(after.last_errors, before.last_errors, "last errors kept");
    assert_eq!(
        after.summary.last_seen, before.summary.last_seen,
        "no check-in recorded"
    );
    assert_eq!(after.facts, before.facts);
    let actions: Vec<ActionInfo> = h
        .client
        .get(
            &format!("/v1/admin/agents/{}/actions", a.agent_id),
            Some(&h.admin),
        )
        .await
        .ok();
    assert_eq!(
        actions.iter().map(|x| (x.id, x.state)).collect::<Vec<_>>(),
        [(queued.id, ActionState::Queued)],
        "the queued action is still there for the agent's next check-in"
    );

    h.client
        .get("/v1/agent/probe", None)
        .await
        .error(401, ErrorCode::AgentCredentialRejected);
    let mut req = token_request(AgentKind::Connector);
    req.require_approval = true;
    let t = h.create_token(&req).await;
    let p = h.enroll_ok(&t.token, "p").await;
    h.client
        .get("/v1/agent/probe", Some(&p.credential))
        .await
        .error(403, ErrorCode::AgentPendingApproval);
}

// Paging.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_and_group_actions_reach_past_ten_thousand_agents() {
    const N: u32 = 10_050;
    let h = support::start_with(|c| c.database_url = Some("sqlite::memory:".into())).await;
    let at = h.clock_now();
    tether_store_sql::seed_agents(
        &h.server.store,
        N,
        |i| {
            let mut hash = [0_u8; 32];
            hash[..4].copy_from_slice(&i.to_be_bytes());
            hash
        },
        at,
    )
    .await
    .expect("seeds");

    let first = h.client.get("/v1/admin/agents", Some(&h.admin)).await;
    let page: Vec<AgentSummary> = first.ok();
    assert_eq!(
        page.len(),
        tether_wire::DEFAULT_PAGE as usize,
        "a page, not everything"
    );
    let mut next = first
        .headers
        .get(NEXT_CURSOR_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let mut seen: std::collections::BTreeSet<uuid::Uuid> = page.iter().map(|a| a.id).collect();
    let mut pages = 1;
    while let Some(cursor) = next {
        let r = h
            .client
            .get(
                &format!("/v1/admin/agents?limit=1000&after={cursor}"),
                Some(&h.admin),
            )
            .await;
        let page: Vec<AgentSummary> = r.ok();
        seen.extend(page.iter().map(|a| a.id));
        next = r
            .headers
            .get(NEXT_CURSOR_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        pages += 1;
        assert!(pages < 100, "paging does not end");
    }
    assert_eq!(seen.len(), N as usize, "every agent, once");

    let queued: Vec<ActionInfo> = h
        .client
        .post(
            "/v1/admin/groups/seed/actions",
            Some(&h.admin),
            &ActionKind::UpdateDefs { channel: None },
        )
        .await
        .ok();
    assert_eq!(
        queued.len(),
        N as usize,
        "the whole group, not the first 10,000"
    );

    h.client
        .get("/v1/admin/agents?after=yesterday", Some(&h.admin))
        .await
        .error(400, ErrorCode::InvalidCursor);
    h.client
        .get("/v1/admin/agents?limit=0", Some(&h.admin))
        .await
        .error(422, ErrorCode::InvalidField);
    h.client
        .get("/v1/admin/agents?limit=1001", Some(&h.admin))
        .await
        .error(422, ErrorCode::InvalidField);
    let none: Vec<AgentSummary> = h
        .client
        .get("/v1/admin/agents?group=nobody", Some(&h.admin))
        .await
        .ok();
    assert!(none.is_empty());
}

#[tokio::test]
async fn token_lists_are_paged() {
    let h = support::start().await;
    for _ in 0..5 {
        h.create_token(&token_request(AgentKind::Connector)).await;
    }
    let r = h
        .client
        .get("/v1/admin/tokens?limit=2", Some(&h.admin))
        .await;
    let page: Vec<tether_wire::TokenInfo> = r.ok();
    assert_eq!(page.len(), 2);
    let mut all = page;
    let mut next = r
        .headers
        .get(NEXT_CURSOR_HEADER)
        .map(|v| v.to_str().expect("text").to_owned());
    while let Some(cursor) = next {
        let r = h
            .client
            .get(
                &format!("/v1/admin/tokens?limit=2&after={cursor}"),
                Some(&h.admin),
            )
            .await;
        let page: Vec<tether_wire::TokenInfo> = r.ok();
        all.extend(page);
        next = r
            .headers
            .get(NEXT_CURSOR_HEADER)
            .map(|v| v.to_str().expect("text").to_owned());
    }
    assert_eq!(all.len(), 5);
    let ids: std::collections::BTreeSet<_> = all.iter().map(|t| t.id).collect();
    assert_eq!(ids.len(), 5);
}

// Retention.

#[tokio::test]
async fn history_past_its_retention_is_deleted_but_the_newest_transition_stays() {
    let h = support::start_with(|c| {
        c.transitions_retention_days = 1;
        c.actions_retention_days = 1;
        c.audit_retention_days = 3;
    })
    .await;
    let t = h.create_token(&token_request(AgentKind::Connector)).await;
    let a = h.enroll_ok(&t.token, "a").await;
    let _ = h.checkin(&a.credential).await;
    let queued: ActionInfo = h
        .client
        .post(
            &format!("/v1/admin/agents/{}/actions", a.agent_id),
            Some(&h.admin),
            &ActionKind::Doctor { upload: false },
        )
        .await
        .json();
    let _ = h.checkin(&a.credential).await;
    let _: ActionInfo = h
        .client
        .post(
            &format!("/v1/agent/actions/{}/result", queued.id),
            Some(&a.credential),
            &ActionResult {
                ok: true,
                message: "done".into(),
                doctor: None,
            },
        )
        .await
        .ok();
    assert_eq!(h.detail(a.agent_id).await.transitions.len(), 2);

    h.clock.advance(Duration::days(2));
    let pruned = tether_server::service::retention::prune_once(h.server.ctx())
        .await
        .expect("prunes");
    assert_eq!(
        (pruned.transitions, pruned.actions, pruned.audit),
        (1, 1, 0)
    );
    // The admin actions above (a token, an action queued) are audit entries,
    // kept for 3 days.
    let audit: Vec<tether_wire::AuditEntry> =
        h.client.get("/v1/admin/audit", Some(&h.admin)).await.ok();
    assert_eq!(audit.len(), 2, "{audit:#?}");
    h.clock.advance(Duration::days(2));
    let pruned = tether_server::service::retention::prune_once(h.server.ctx())
        .await
        .expect("prunes");
    assert_eq!(pruned.audit, 2);
    let audit: Vec<tether_wire::AuditEntry> =
        h.client.get("/v1/admin/audit", Some(&h.admin)).await.ok();
    assert!(audit.is_empty(), "{audit:#?}");
    let d = h.detail(a.agent_id).await;
    assert_eq!(
        d.transitions.iter().map(|t| t.to).collect::<Vec<_>>(),
        [AgentStatus::Active],
        "the newest transition explains the status"
    );
    let actions: Vec<ActionInfo> = h
        .client
        .get(
            &format!("/v1/admin/agents/{}/actions", a.agent_id),
            Some(&h.admin),
        )
        .await
        .ok();
    assert!(actions.is_empty());
}

// Files.

#[tokio::test]
async fn the_data_dir_is_private_and_so_is_the_database() {
    use std::os::unix::fs::PermissionsExt as _;
    let parent = tempfile::tempdir().expect("tempdir");
    let dir = parent.path().join("fresh/data");
    let clock = ManualClock::new(support::epoch());
    let server = start_in(&dir, &clock, |_| {}).await;
    let mode = |p: &std::path::Path| {
        std::fs::metadata(p)
            .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode(&dir), 0o700, "the data dir");
    for file in ["tether.db", "tether.db-wal", "admin.token"] {
        assert_eq!(mode(&dir.join(file)), 0o600, "{file}");
    }
    server.shutdown().await;
}
