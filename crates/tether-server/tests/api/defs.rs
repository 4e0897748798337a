//! Definitions over real HTTPS: publishing, the served TUF tree with its
//! validators and ranges, the fleet summary, the agent's channel state in
//! its detail, export, policies and group actions.

use tether_wire::{
    ActionInfo, ActionKind, AgentFlag, AgentKind, AgentStatus, ChannelState, ChannelSummary,
    DefsVersion, ErrorCode, Policy, UpdateMethod,
};

use crate::support::{self, Harness, Reply, checkin_request, token_request};

const OCTET: (&str, &str) = ("content-type", "application/octet-stream");

async fn publish(h: &Harness, channel: &str, query: &str, body: &[u8]) -> Reply {
    let auth = format!("Bearer {}", h.admin);
    h.client
        .send(
            "POST",
            &format!("/v1/admin/defs/{channel}/versions{query}"),
            &[OCTET, ("authorization", &auth)],
            Some(body.to_vec()),
        )
        .await
}

async fn published(h: &Harness, channel: &str, body: &[u8]) -> DefsVersion {
    let reply = publish(h, channel, "", body).await;
    assert_eq!(
        reply.status,
        201,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    reply.json()
}

async fn get_with(h: &Harness, path: &str, headers: &[(&str, &str)]) -> Reply {
    h.client.send("GET", path, headers, None).await
}

/// The served target files, by name under `targets/`.
fn target_names(h: &Harness) -> Vec<String> {
    let dir = h.server.ctx().defs.serve_dir().join("targets");
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("targets dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn header<'a>(reply: &'a Reply, name: &str) -> &'a str {
    reply
        .headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_else(|| panic!("no {name} header in {:?}", reply.headers))
}

#[tokio::test]
async fn publish_then_summary_then_the_served_tree_with_ranges() {
    let h = support::start().await;
    let v1 = published(&h, "signatures", b"rule one\nrule two\n").await;
    assert_eq!((v1.channel.as_str(), v1.version), ("signatures", 1));
    assert_eq!(v1.length, 18);
    let reply = publish(
        &h,
        "signatures",
        "?notes=fix%20%2312%20%26%20more",
        b"rule one\nrule two\nrule three\n",
    )
    .await;
    assert_eq!(reply.status, 201);
    let v2: DefsVersion = reply.json();
    assert_eq!(v2.version, 2);
    assert_eq!(v2.notes.as_deref(), Some("fix #12 & more"));

    let summary: Vec<ChannelSummary> = h
        .client
        .get("/v1/admin/defs/summary", Some(&h.admin))
        .await
        .ok();
    assert_eq!(summary.len(), 1);
    assert_eq!(summary[0].channel, "signatures");
    let versions: Vec<u64> = summary[0].versions.iter().map(|v| v.version).collect();
    assert_eq!(versions, vec![2, 1], "newest first");
    assert_eq!(summary[0].versions[0].notes, v2.notes);
    assert_eq!(summary[0].agents_subscribed, 0);
    let one: Vec<ChannelSummary> = h
        .client
        .get("/v1/admin/defs/summary?channel=signatures", Some(&h.admin))
        .await
        .ok();
    assert_eq!(one.len(), 1);
    let none: Vec<ChannelSummary> = h
        .client
        .get("/v1/admin/defs/summary?channel=other", Some(&h.admin))
        .await
        .ok();
    assert!(none.is_empty());
    h.client
        .get("/v1/admin/defs/summary?channel=..", Some(&h.admin))
        .await
        .error(422, ErrorCode::ChannelInvalid);
    h.client
        .get("/v1/admin/defs/summary?chanel=x", Some(&h.admin))
        .await
        .error(422, ErrorCode::InvalidField);
    h.client
        .get("/v1/admin/defs/summary", None)
        .await
        .error(401, ErrorCode::AdminCredentialRejected);

    // Metadata: no auth, JSON, the timestamp revalidated every time.
    let ts = h.client.get("/defs/metadata/timestamp.json", None).await;
    assert_eq!(ts.status, 200);
    assert_eq!(header(&ts, "cache-control"), "no-cache");
    assert_eq!(header(&ts, "content-type"), "application/json");
    let root = h.client.get("/defs/metadata/1.root.json", None).await;
    assert_eq!(root.status, 200);
    // Root versions are revalidated too: `tether defs join` countersigns them.
    assert_eq!(header(&root, "cache-control"), "no-cache");
    let enrolled = {
        let t = h.create_token(&token_request(AgentKind::Connector)).await;
        h.enroll_ok(&t.token, "web-01").await
    };
    assert_eq!(
        enrolled.defs_root.as_deref().map(str::as_bytes),
        Some(&root.body[..]),
        "enrollment hands out the served root to pin"
    );

    // A target: validators, ranges, If-Range.
    let name = target_names(&h).into_iter().next().expect("a target");
    let path = format!("/defs/targets/{name}");
    let full = h.client.get(&path, None).await;
    assert_eq!(full.status, 200);
    let len = full.body.len();
    assert!(len > 4, "target of {len} bytes");
    assert_eq!(header(&full, "accept-ranges"), "bytes");
    assert!(header(&full, "cache-control").contains("immutable"));
    assert_eq!(header(&full, "content-length"), len.to_string());
    let etag = header(&full, "etag").to_owned();
    assert!(etag.starts_with('"'), "a strong ETag: {etag}");
    let modified = header(&full, "last-modified").to_owned();
    assert!(modified.ends_with(" GMT"), "{modified}");

    let part = get_with(&h, &path, &[("range", "bytes=1-3")]).await;
    assert_eq!(part.status, 206);
    assert_eq!(&part.body[..], &full.body[1..4]);
    assert_eq!(header(&part, "content-range"), format!("bytes 1-3/{len}"));
    let tail = get_with(&h, &path, &[("range", "bytes=-2")]).await;
    assert_eq!(tail.status, 206);
    assert_eq!(&tail.body[..], &full.body[len - 2..]);
    let from = get_with(&h, &path, &[("range", "bytes=2-")]).await;
    assert_eq!(from.status, 206);
    assert_eq!(&from.body[..], &full.body[2..]);
    assert_eq!(
        header(&from, "content-range"),
        format!("bytes 2-{}/{len}", len - 1)
    );

    let resumed = get_with(&h, &path, &[("range", "bytes=2-"), ("if-range", &etag)]).await;
    assert_eq!(resumed.status, 206, "the ETag still matches");
    let by_date = get_with(&h, &path, &[("range", "bytes=2-"), ("if-range", &modified)]).await;
    assert_eq!(by_date.status, 206, "the date still matches");
    let changed = get_with(
        &h,
        &path,
        &[("range", "bytes=2-"), ("if-range", "\"something-else\"")],
    )
    .await;
    assert_eq!(changed.status, 200, "a stale If-Range gets the whole file");
    assert_eq!(changed.body, full.body);
    let old_date = get_with(
        &h,
        &path,
        &[
            ("range", "bytes=2-"),
            ("if-range", "Sun, 06 Nov 1994 08:49:37 GMT"),
        ],
    )
    .await;
    assert_eq!(old_date.status, 200);

    let multi = get_with(&h, &path, &[("range", "bytes=0-1,3-4")]).await;
    assert_eq!(multi.status, 200, "multiple ranges: the whole file");
    assert_eq!(multi.body, full.body);

    let outside = get_with(&h, &path, &[("range", &format!("bytes={len}-"))]).await;
    assert_eq!(outside.status, 416);
    assert_eq!(header(&outside, "content-range"), format!("bytes */{len}"));
    let e: tether_wire::ApiError = outside.json();
    assert_eq!(e.code, ErrorCode::InvalidField);

    let cached = get_with(&h, &path, &[("if-none-match", &etag)]).await;
    assert_eq!(cached.status, 304);
    assert!(cached.body.is_empty());
}

#[tokio::test]
async fn the_served_tree_refuses_paths_that_leave_it() {
    let h = support::start().await;
    published(&h, "signatures", b"x\n").await;
    // The keys live next to the served tree: none of these may reach them.
    assert!(
        h.server
            .ctx()
            .defs
            .serve_dir()
            .parent()
            .expect("parent")
            .join("keys/root.pem")
            .exists()
    );
    for path in [
        "/defs/../keys/root.pem",
        "/defs/%2e%2e/keys/root.pem",
        "/defs/metadata/%2e%2e/%2e%2e/keys/root.pem",
        "/defs/..%2fkeys%2froot.pem",
        "/defs/metadata%5c..%5c..%5ckeys%5croot.pem",
        "/defs//etc/passwd",
        "/defs/%2fetc%2fpasswd",
        "/defs/metadata/timestamp.json%00",
        "/defs/metadata",
        "/defs/metadata/",
        "/defs/metadata/absent.json",
        "/defs/./metadata/timestamp.json",
    ] {
        let reply = h.client.get(path, None).await;
        let e = reply.error(404, ErrorCode::NotFound);
        assert!(!e.message.contains("/tmp"), "{path}: {}", e.message);
    }
    // A symlink inside the tree that points out of it is refused too.
    let serve = h.server.ctx().defs.serve_dir();
    std::os::unix::fs::symlink(
        serve.parent().expect("parent").join("keys"),
        serve.join("targets").join("escape"),
    )
    .expect("symlink");
    h.client
        .get("/defs/targets/escape/root.pem", None)
        .await
        .error(404, ErrorCode::NotFound);
}

#[tokio::test]
async fn publish_refuses_bad_channels_empty_bodies_and_oversize_files() {
    let h = support::start_with(|c| c.defs_max_publish_bytes = 2048).await;
    publish(&h, "Bad..Name", "", b"x")
        .await
        .error(422, ErrorCode::ChannelInvalid);
    publish(&h, "-leading", "", b"x")
        .await
        .error(422, ErrorCode::ChannelInvalid);
    publish(&h, &"a".repeat(65), "", b"x")
        .await
        .error(422, ErrorCode::ChannelInvalid);
    publish(&h, "sig", "", b"")
        .await
        .error(422, ErrorCode::DefsEmpty);
    let e = publish(&h, "sig", "", &vec![b'x'; 4096])
        .await
        .error(413, ErrorCode::BodyTooLarge);
    assert!(e.message.contains("2048"), "{}", e.message);
    publish(&h, "sig", "?note=typo", b"x")
        .await
        .error(422, ErrorCode::InvalidField);
    publish(&h, "sig", "?notes=%ff", b"x")
        .await
        .error(422, ErrorCode::InvalidField);
    let auth = format!("Bearer {}", h.admin);
    h.client
        .send(
            "POST",
            "/v1/admin/defs/sig/versions",
            &[("content-type", "text/html"), ("authorization", &auth)],
            Some(b"<html>".to_vec()),
        )
        .await
        .error(415, ErrorCode::UnsupportedMediaType);
    h.client
        .send(
            "POST",
            "/v1/admin/defs/sig/versions",
            &[OCTET],
            Some(b"x".to_vec()),
        )
        .await
        .error(401, ErrorCode::AdminCredentialRejected);
    // Nothing was published by any of these.
    let summary: Vec<ChannelSummary> = h
        .client
        .get("/v1/admin/defs/summary", Some(&h.admin))
        .await
        .ok();
    assert!(summary.is_empty(), "{summary:?}");
    // Exactly at the limit is fine.
    assert_eq!(published(&h, "sig", &vec![b'y'; 2048]).await.version, 1);
}

fn state(channel: &str, version: Option<u64>, failures: u32) -> ChannelState {
    ChannelState {
        channel: channel.to_owned(),
        version,
        sha256: None,
        updated_at: None,
        method: version.map(|_| UpdateMethod::Delta),
        last_attempt_at: None,
        last_error: None,
        consecutive_failures: failures,
        server: Some("https://user:pw@mirror.example/defs/".to_owned()),
        via_proxy: Some("http://bob:secret@proxy.example:3128".to_owned()),
    }
}

#[tokio::test]
async fn checkin_defs_show_in_the_detail_and_the_summary() {
    let h = support::start().await;
    let policy: Policy = h
        .client
        .json_request(
            "PUT",
            "/v1/admin/policies/default",
            Some(&h.admin),
            &serde_json::json!({
                "checkin_interval_secs": 30,
                "jitter_percent": 10,
                "defs": {"channels": ["sig", "rules"], "update_urls": ["https://mirror.example/defs/"]}
            }),
        )
        .await
        .ok();
    assert_eq!(policy.defs.channels, vec!["sig", "rules"]);
    published(&h, "sig", b"one\n").await;
    published(&h, "sig", b"one\ntwo\n").await;

    let t = h.create_token(&token_request(AgentKind::Connector)).await;
    let e = h.enroll_ok(&t.token, "web-01").await;
    let mut req = checkin_request();
    req.defs = vec![state("sig", Some(1), 3), state("rules", None, 0)];
    let reply = h
        .client
        .post("/v1/agent/checkin", Some(&e.credential), &req)
        .await;
    assert_eq!(
        reply.status,
        200,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );

    let d = h.detail(e.agent_id).await;
    assert_eq!(d.summary.status, AgentStatus::Active);
    assert_eq!(d.defs.len(), 2, "{:?}", d.defs);
    let sig = &d.defs[0];
    assert_eq!(sig.channel, "sig");
    assert_eq!(
        (sig.version, sig.newest_version, sig.versions_behind),
        (Some(1), Some(2), 1)
    );
    assert!(sig.in_policy, "just published");
    assert!(sig.download_path_problem, "active, failing, not current");
    assert_eq!(
        sig.server.as_deref(),
        Some("https://mirror.example/defs/"),
        "credentials are never stored"
    );
    assert_eq!(sig.via_proxy.as_deref(), Some("http://proxy.example:3128"));
    let rules = &d.defs[1];
    assert_eq!((rules.newest_version, rules.in_policy), (None, true));
    assert_eq!(d.in_policy, Some(true));
    assert_eq!(d.summary.in_policy, Some(true));
    let list: Vec<tether_wire::AgentSummary> =
        h.client.get("/v1/admin/agents", Some(&h.admin)).await.ok();
    assert_eq!(list[0].in_policy, Some(true));
    assert_eq!(
        list[0].flags, d.summary.flags,
        "the list shows the same flags as the detail"
    );
    assert!(
        d.summary.flags.contains(&AgentFlag::DownloadPathProblem),
        "{:?}",
        d.summary.flags
    );

    let summary: Vec<ChannelSummary> = h
        .client
        .get("/v1/admin/defs/summary", Some(&h.admin))
        .await
        .ok();
    let names: Vec<&str> = summary.iter().map(|s| s.channel.as_str()).collect();
    assert_eq!(
        names,
        vec!["rules", "sig"],
        "subscribed channels are listed too"
    );
    let sig = &summary[1];
    assert_eq!(
        (
            sig.agents_subscribed,
            sig.agents_in_policy,
            sig.agents_download_problem
        ),
        (1, 1, 1)
    );
    let agents: Vec<(u64, u64)> = sig.versions.iter().map(|v| (v.version, v.agents)).collect();
    assert_eq!(agents, vec![(2, 0), (1, 1)]);

    // Two days later, with no check-in since: out of policy.
    h.clock.advance(time::Duration::days(2));
    h.server.sweep_now().await.expect("sweeps");
    let d = h.detail(e.agent_id).await;
    assert_eq!(d.in_policy, Some(false));
    assert!(!d.defs[0].in_policy);
}

#[tokio::test]
async fn checkin_defs_are_validated() {
    let h = support::start().await;
    let t = h.create_token(&token_request(AgentKind::Connector)).await;
    let e = h.enroll_ok(&t.token, "web-01").await;
    let bad = [
        (0..65).map(|i| state(&format!("c{i}"), None, 0)).collect(),
        vec![state("sig", None, 0), state("sig", Some(1), 0)],
        vec![state("", None, 0)],
        vec![state(&"c".repeat(65), None, 0)],
        vec![state("sig\u{1b}[31m", None, 0)],
        vec![ChannelState {
            server: Some("x".repeat(513)),
            ..state("sig", None, 0)
        }],
        vec![ChannelState {
            sha256: Some("f".repeat(129)),
            ..state("sig", None, 0)
        }],
    ];
    for defs in bad {
        let mut req = checkin_request();
        req.defs = defs;
        h.client
            .post("/v1/agent/checkin", Some(&e.credential), &req)
            .await
            .error(422, ErrorCode::InvalidField);
    }
    assert!(h.detail(e.agent_id).await.defs.is_empty());
}

#[tokio::test]
async fn policy_defs_are_validated() {
    let h = support::start().await;
    let put = |defs: serde_json::Value| {
        let h = &h;
        async move {
            h.client
                .json_request(
                    "PUT",
                    "/v1/admin/policies/lab",
                    Some(&h.admin),
                    &serde_json::json!({"checkin_interval_secs": 30, "jitter_percent": 10, "defs": defs}),
                )
                .await
        }
    };
    put(serde_json::json!({"channels": ["Bad"]}))
        .await
        .error(422, ErrorCode::ChannelInvalid);
    let many: Vec<String> = (0..33).map(|i| format!("c{i}")).collect();
    put(serde_json::json!({ "channels": many }))
        .await
        .error(422, ErrorCode::InvalidField);
    put(serde_json::json!({"channels": ["a", "a"]}))
        .await
        .error(422, ErrorCode::InvalidField);
    for url in [
        "http://mirror.example/",
        "https://",
        "https://u:p@mirror.example/",
        "https://mirror.example/a b",
        "ftp://mirror.example/",
    ] {
        put(serde_json::json!({ "update_urls": [url] }))
            .await
            .error(422, ErrorCode::InvalidField);
    }
    let urls: Vec<String> = (0..9).map(|i| format!("https://m{i}.example/")).collect();
    put(serde_json::json!({ "update_urls": urls }))
        .await
        .error(422, ErrorCode::InvalidField);
    for secs in [59, 604_801] {
        put(serde_json::json!({ "interval_secs": secs }))
            .await
            .error(422, ErrorCode::InvalidField);
    }
    // A field this version does not know is ignored (wire compatibility),
    // and changes nothing: the definitions settings stay at their defaults.
    let ignored: Policy = put(serde_json::json!({"unknown": 1})).await.ok();
    assert_eq!(ignored.defs, tether_wire::DefsPolicy::default());
    let ok: Policy = put(serde_json::json!({
        "channels": ["sig"],
        "update_urls": ["https://mirror.example:8443/defs/"],
        "interval_secs": 604_800,
        "allow_user_update": false
    }))
    .await
    .ok();
    assert_eq!(ok.defs.interval_secs, 604_800);
    assert!(!ok.defs.allow_user_update);
}

#[tokio::test]
async fn export_streams_the_offline_bundle() {
    let h = support::start().await;
    published(&h, "sig", b"one\ntwo\n").await;
    let reply = h
        .client
        .get("/v1/admin/defs/sig/export", Some(&h.admin))
        .await;
    assert_eq!(reply.status, 200);
    assert_eq!(header(&reply, "content-type"), "application/x-tar");
    assert_eq!(
        header(&reply, "content-length"),
        reply.body.len().to_string()
    );
    let mut archive = tar::Archive::new(&reply.body[..]);
    let names: Vec<String> = archive
        .entries()
        .expect("a tar")
        .map(|e| {
            e.expect("entry")
                .path()
                .expect("path")
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    assert!(
        names.iter().any(|n| n.contains("timestamp.json")),
        "{names:?}"
    );
    h.client
        .get("/v1/admin/defs/never/export", Some(&h.admin))
        .await
        .error(404, ErrorCode::NotFound);
    h.client
        .get("/v1/admin/defs/Bad/export", Some(&h.admin))
        .await
        .error(422, ErrorCode::ChannelInvalid);
    h.client
        .get("/v1/admin/defs/sig/export", None)
        .await
        .error(401, ErrorCode::AdminCredentialRejected);
}

#[tokio::test]
async fn group_actions_queue_for_every_agent_of_the_group() {
    let h = support::start().await;
    let prod = h.create_token(&token_request(AgentKind::Connector)).await;
    let mut lab_req = token_request(AgentKind::Connector);
    lab_req.group = "lab".to_owned();
    let lab = h.create_token(&lab_req).await;
    let a = h.enroll_ok(&prod.token, "web-01").await;
    let b = h.enroll_ok(&prod.token, "web-02").await;
    let other = h.enroll_ok(&lab.token, "lab-01").await;

    let kind = ActionKind::UpdateDefs {
        channel: Some("sig".to_owned()),
    };
    let queued: Vec<ActionInfo> = h
        .client
        .post("/v1/admin/groups/prod/actions", Some(&h.admin), &kind)
        .await
        .ok();
    let mut agents: Vec<uuid::Uuid> = queued.iter().map(|q| q.agent_id).collect();
    agents.sort();
    let mut expected = vec![a.agent_id, b.agent_id];
    expected.sort();
    assert_eq!(agents, expected);
    assert!(queued.iter().all(|q| q.kind == kind));
    let c: tether_wire::CheckinResponse = h.checkin(&a.credential).await.ok();
    assert_eq!(c.actions.len(), 1);
    assert_eq!(c.actions[0].kind, kind);
    let c: tether_wire::CheckinResponse = h.checkin(&other.credential).await.ok();
    assert!(c.actions.is_empty(), "another group's agent gets nothing");

    h.client
        .post("/v1/admin/groups/nobody/actions", Some(&h.admin), &kind)
        .await
        .error(404, ErrorCode::NotFound);
    h.client
        .post(
            "/v1/admin/groups/prod/actions",
            Some(&h.admin),
            &ActionKind::UpdateDefs {
                channel: Some("Bad Name".to_owned()),
            },
        )
        .await
        .error(422, ErrorCode::ChannelInvalid);
    h.client
        .post(
            "/v1/admin/groups/prod/actions",
            Some(&h.admin),
            &serde_json::json!({"type": "launch_rockets"}),
        )
        .await
        .error(422, ErrorCode::InvalidField);
    h.client
        .post("/v1/admin/groups/prod/actions", None, &kind)
        .await
        .error(401, ErrorCode::AdminCredentialRejected);
    // The whole-fleet form (no channel) is accepted too.
    let all: Vec<ActionInfo> = h
        .client
        .post(
            "/v1/admin/groups/lab/actions",
            Some(&h.admin),
            &ActionKind::UpdateDefs { channel: None },
        )
        .await
        .ok();
    assert_eq!(all.len(), 1);
}

/// A version published while the store was down is recorded at the next
/// start, from the repository's own history.
#[tokio::test]
async fn versions_missing_from_the_store_are_reconciled_at_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = tether_wire::ManualClock::new(support::epoch());
    {
        let server = tether_server::start(
            support::config(dir.path()),
            std::sync::Arc::new(clock.clone()),
        )
        .await
        .expect("starts");
        // Straight into the repository, as if the store write had failed.
        server
            .ctx()
            .defs
            .publish("sig", b"one\n".to_vec(), None)
            .await
            .expect("publishes");
        assert!(
            server
                .store
                .list_defs_versions(None)
                .await
                .expect("lists")
                .is_empty()
        );
        server.shutdown().await;
    }
    let server = tether_server::start(support::config(dir.path()), std::sync::Arc::new(clock))
        .await
        .expect("restarts");
    let versions = server.store.list_defs_versions(None).await.expect("lists");
    assert_eq!(
        versions
            .iter()
            .map(|v| (v.channel.as_str(), v.version))
            .collect::<Vec<_>>(),
        vec![("sig", 1)]
    );
    server.shutdown().await;
}

#[tokio::test]
async fn a_channel_never_installed_after_one_interval_is_out_of_policy() {
    let h = support::start().await;
    let _: Policy = h
        .client
        .json_request(
            "PUT",
            "/v1/admin/policies/default",
            Some(&h.admin),
            &serde_json::json!({
                "checkin_interval_secs": 30,
                "jitter_percent": 10,
                "defs": {"channels": ["sig"], "interval_secs": 3600}
            }),
        )
        .await
        .ok();
    published(&h, "sig", b"one\n").await;
    let t = h.create_token(&token_request(AgentKind::Connector)).await;
    let e = h.enroll_ok(&t.token, "web-01").await;
    let checkin = async || {
        let mut req = checkin_request();
        req.defs = vec![state("sig", None, 0)];
        let reply = h
            .client
            .post("/v1/agent/checkin", Some(&e.credential), &req)
            .await;
        assert_eq!(
            reply.status,
            200,
            "{}",
            String::from_utf8_lossy(&reply.body)
        );
    };
    checkin().await;
    // Enrolled just now: it has its first interval to install the channel.
    let d = h.detail(e.agent_id).await;
    assert!(
        !d.defs[0].never_installed && d.defs[0].in_policy,
        "{:?}",
        d.defs
    );
    assert_eq!(d.in_policy, Some(true));
    assert!(d.summary.flags.is_empty(), "{:?}", d.summary.flags);

    // One interval and a minute later, still checking in, still nothing.
    h.clock
        .advance(time::Duration::hours(1) + time::Duration::minutes(1));
    checkin().await;
    let d = h.detail(e.agent_id).await;
    assert_eq!(d.summary.status, AgentStatus::Active);
    assert!(
        d.defs[0].never_installed && !d.defs[0].in_policy,
        "{:?}",
        d.defs
    );
    assert_eq!(d.in_policy, Some(false));
    assert_eq!(d.summary.flags, vec![AgentFlag::DefsNeverInstalled]);
    let list: Vec<tether_wire::AgentSummary> =
        h.client.get("/v1/admin/agents", Some(&h.admin)).await.ok();
    assert_eq!(list[0].in_policy, Some(false));
    assert_eq!(list[0].flags, d.summary.flags, "list and detail agree");
    let summary: Vec<ChannelSummary> = h
        .client
        .get("/v1/admin/defs/summary", Some(&h.admin))
        .await
        .ok();
    assert_eq!(
        (
            summary[0].agents_subscribed,
            summary[0].agents_in_policy,
            summary[0].agents_never_installed
        ),
        (1, 0, 1)
    );

    // Installing it clears the flag.
    let mut req = checkin_request();
    req.defs = vec![state("sig", Some(1), 0)];
    let reply = h
        .client
        .post("/v1/agent/checkin", Some(&e.credential), &req)
        .await;
    assert_eq!(reply.status, 200);
    let d = h.detail(e.agent_id).await;
    assert!(!d.defs[0].never_installed && d.defs[0].in_policy);
    assert_eq!(d.in_policy, Some(true));
    assert!(d.summary.flags.is_empty(), "{:?}", d.summary.flags);
}
