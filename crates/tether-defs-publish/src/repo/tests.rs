use super::*;
use tether_wire::ManualClock;

fn clock() -> Arc<ManualClock> {
    Arc::new(ManualClock::new(
        time::macros::datetime!(2026-11-21 08:00 UTC),
    ))
}

#[tokio::test]
async fn publish_numbers_versions_and_keeps_history_across_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = clock();
    let repo = Repo::open(dir.path(), c.clone()).await.expect("open");
    let base: String = (0..2000)
        .map(|i| format!("Sig.Family-{i}:0:{:x}\n", i * 7919))
        .collect();
    let changed = base.replace("Sig.Family-1000:", "Sig.Family-1000-changed:");
    let v1 = repo
        .publish("main", base.into_bytes(), Some("first".into()))
        .await
        .expect("publish");
    assert_eq!((v1.version, v1.content.as_str()), (1, "text"));
    assert!(v1.deltas.is_empty());
    c.advance(time::Duration::hours(6));
    let v2 = repo
        .publish("main", changed.into_bytes(), None)
        .await
        .expect("publish");
    assert_eq!(v2.version, 2);
    assert_eq!(v2.deltas.len(), 1);
    assert_eq!(v2.deltas[0].from_version, 1);
    assert!(v2.deltas[0].size * 10 < v2.full_size, "{v2:?}");
    let other = repo
        .publish("rules", vec![0u8, 1, 2, 3], None)
        .await
        .expect("publish");
    assert_eq!((other.version, other.content.as_str()), (1, "binary"));
    // The content is stored by hash.
    assert!(dir.path().join("objects").join(&v2.sha256).exists());
    drop(repo);
    let again = Repo::open(dir.path(), c).await.expect("reopen");
    let h = again.history().await.expect("history");
    assert_eq!(
        h.iter()
            .map(|v| (v.channel.as_str(), v.version))
            .collect::<Vec<_>>(),
        vec![("main", 1), ("main", 2), ("rules", 1)]
    );
    assert_eq!(h[0].notes.as_deref(), Some("first"));
    // The served tree has consistent-snapshot metadata.
    let meta = again.serve_dir().join("metadata");
    assert!(meta.join("1.root.json").exists());
    assert!(meta.join("timestamp.json").exists());
    assert!(
        meta.join("4.targets.json").exists(),
        "initial + 3 publishes"
    );
}

#[tokio::test]
async fn bad_channel_names_and_empty_content_are_refused_and_change_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let repo = Repo::open(dir.path(), clock()).await.expect("open");
    for bad in ["", "Main", "../x", "a/b", "x y"] {
        let e = repo.publish(bad, b"x".to_vec(), None).await.expect_err(bad);
        assert_eq!(e.code(), ErrorCode::ChannelInvalid, "{bad}");
    }
    let e = repo
        .publish("main", Vec::new(), None)
        .await
        .expect_err("empty");
    assert_eq!(e.code(), ErrorCode::DefsEmpty);
    assert!(repo.history().await.expect("history").is_empty());
}

#[tokio::test]
async fn refresh_resigns_only_past_half_life() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = clock();
    let repo = Repo::open(dir.path(), c.clone()).await.expect("open");
    assert!(!repo.refresh().await.expect("refresh"));
    c.advance(time::Duration::hours(13));
    assert!(repo.refresh().await.expect("refresh"));
    assert!(!repo.refresh().await.expect("refresh"));
}

#[test]
fn keygen_never_overwrites_and_returns_a_key_id() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("root.pem");
    let id = keygen(&path).expect("keygen");
    assert_eq!(id.len(), 64);
    let mode = std::fs::metadata(&path).expect("meta").permissions();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(mode.mode() & 0o777, 0o600);
    assert!(keygen(&path).is_err());
    std::fs::write(dir.path().join("junk.pem"), "not a key").expect("write");
    assert!(load_key(&dir.path().join("junk.pem")).is_err());
}

#[tokio::test]
async fn rotating_needs_a_current_root_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = clock();
    Repo::open(dir.path(), c.clone()).await.expect("open");
    let stranger = dir.path().join("stranger.pem");
    keygen(&stranger).expect("keygen");
    let e = rotate_key(dir.path(), RoleName::Targets, None, &[stranger], c.clone())
        .await
        .expect_err("not a root key");
    assert!(matches!(e, RepoError::NotARootKey { .. }), "{e}");
    let v = rotate_key(
        dir.path(),
        RoleName::Root,
        None,
        &[dir.path().join("keys/root.pem")],
        c,
    )
    .await
    .expect("rotate");
    assert_eq!(v, 2);
    assert!(dir.path().join("repo/metadata/2.root.json").exists());
}

#[tokio::test]
async fn a_running_repo_sees_a_rotation_made_by_another_process() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = clock();
    let server = Repo::open(dir.path(), c.clone()).await.expect("open");
    server
        .publish("main", b"one\n".to_vec(), None)
        .await
        .expect("v1");
    // The CLI rotates the timestamp key with its own handle.
    rotate_key(
        dir.path(),
        RoleName::Timestamp,
        None,
        &[dir.path().join("keys/root.pem")],
        c.clone(),
    )
    .await
    .expect("rotate");
    // The server's handle signs with the new key and the new root.
    server
        .publish("main", b"two\n".to_vec(), None)
        .await
        .expect("v2 after rotation");
    assert!(
        server
            .root_json()
            .await
            .expect("root")
            .contains("\"version\": 2")
    );
    assert!(server.refresh().await.is_ok());
}

fn key_files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir.join("keys"))
        .expect("keys/")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// The ceremony for a new control plane: the root key is made offline and
/// only read from its media; the server holds the online roles' keys.
#[tokio::test]
async fn a_repository_rooted_offline_keeps_only_the_online_keys() {
    let dir = tempfile::tempdir().expect("tempdir");
    let media = tempfile::tempdir().expect("tempdir");
    let c = clock();
    let offline = media.path().join("root.pem");
    let root_id = keygen(&offline).expect("keygen");
    let repo = Repo::open_with_root_key(dir.path(), c.clone(), Some(&offline))
        .await
        .expect("open");
    assert_eq!(
        key_files(dir.path()),
        ["snapshot.pem", "targets.pem", "timestamp.pem"]
    );
    assert!(online_root_keys(dir.path()).expect("reads").is_empty());
    let root: serde_json::Value =
        serde_json::from_str(&repo.root_json().await.expect("root")).expect("json");
    assert_eq!(
        root["signed"]["roles"]["root"]["keyids"][0],
        root_id.as_str()
    );
    // Day to day needs no root key: publish and refresh sign with the online keys.
    repo.publish("main", b"one\n".to_vec(), None)
        .await
        .expect("publishes without the root key");
    c.advance(time::Duration::days(2));
    repo.refresh()
        .await
        .expect("refreshes without the root key");
    // Rotations take it from the media again.
    let v = rotate_key(
        dir.path(),
        RoleName::Targets,
        None,
        std::slice::from_ref(&offline),
        c.clone(),
    )
    .await
    .expect("rotates with the offline root");
    assert_eq!(v, 2);
    assert!(online_root_keys(dir.path()).expect("reads").is_empty());
    // A missing medium is named, not papered over with a new online key.
    let other = tempfile::tempdir().expect("tempdir");
    let e = Repo::open_with_root_key(other.path(), c, Some(&media.path().join("gone.pem")))
        .await
        .expect_err("no key there");
    assert!(e.to_string().contains("media"), "{e}");
}

/// The ceremony for a control plane that made its root key online at its
/// first start: rotate the root to an offline key, then delete the old one.
#[tokio::test]
async fn moving_an_online_root_key_offline_leaves_no_current_root_key_on_the_server() {
    let dir = tempfile::tempdir().expect("tempdir");
    let media = tempfile::tempdir().expect("tempdir");
    let c = clock();
    let _repo = Repo::open(dir.path(), c.clone()).await.expect("open");
    let online = dir.path().join("keys/root.pem");
    assert_eq!(
        online_root_keys(dir.path()).expect("reads"),
        std::slice::from_ref(&online),
        "a default repository has its root key online"
    );
    let offline = media.path().join("root.pem");
    keygen(&offline).expect("keygen");
    rotate_key(
        dir.path(),
        RoleName::Root,
        Some(&offline),
        std::slice::from_ref(&online),
        c.clone(),
    )
    .await
    .expect("rotates the root");
    assert!(
        online_root_keys(dir.path()).expect("reads").is_empty(),
        "the old root key no longer signs anything"
    );
    std::fs::remove_file(&online).expect("the old key is deleted");
    assert_eq!(
        key_files(dir.path()),
        ["snapshot.pem", "targets.pem", "timestamp.pem"]
    );
    // The next root still needs the offline key, and works with it.
    let e = rotate_key(dir.path(), RoleName::Snapshot, None, &[], c.clone())
        .await
        .expect_err("no root key given");
    assert!(matches!(e, RepoError::NotARootKey { .. }), "{e}");
    rotate_key(dir.path(), RoleName::Snapshot, None, &[offline], c)
        .await
        .expect("rotates with the offline root");
}

/// Loads `served` (a repository's served tree) with tough from the pinned
/// `root`, keeping what it trusts in `datastore`, as an agent does.
async fn load_as_agent(root: &[u8], served: &Path, datastore: &Path) -> tough::Repository {
    let url = |sub: &str| url::Url::from_directory_path(served.join(sub)).expect("absolute");
    let root = root.to_vec();
    tough::RepositoryLoader::new(&root, url("metadata"), url("targets"))
        .datastore(datastore)
        .expiration_enforcement(tough::ExpirationEnforcement::Unsafe)
        .load()
        .await
        .expect("verifies")
}

fn newest_of(repo: &tough::Repository, channel: &str) -> u64 {
    repo.targets()
        .signed
        .targets
        .values()
        .filter_map(|t| tether_defs::layout::TargetMeta::from_custom(&t.custom))
        .filter(|m| m.channel == channel)
        .map(|m| m.version)
        .max()
        .unwrap_or(0)
}

#[tokio::test]
async fn an_agent_pinned_at_a_joining_repository_walks_to_the_shared_root() {
    let (shared_dir, own_dir, agent) = (
        tempfile::tempdir().expect("tempdir"),
        tempfile::tempdir().expect("tempdir"),
        tempfile::tempdir().expect("tempdir"),
    );
    let c = clock();
    let shared = Repo::open(shared_dir.path(), c.clone())
        .await
        .expect("shared");
    shared
        .publish("main", b"shared one\n".to_vec(), None)
        .await
        .expect("v1");
    let own = Repo::open(own_dir.path(), c.clone()).await.expect("own");
    let own_root_key = own_dir.path().join("keys/root.pem");
    let pinned_v1 = std::fs::read(own_dir.path().join("repo/metadata/1.root.json")).expect("v1");
    for i in 1..=3 {
        own.publish("main", format!("own {i}\n").into_bytes(), None)
            .await
            .expect("own main");
    }
    own.publish("extra", b"only here\n".to_vec(), None)
        .await
        .expect("extra");
    // The joining repository's root moves ahead of the shared one (v3 > v1),
    // with its timestamp and snapshot keys changed.
    for role in [RoleName::Timestamp, RoleName::Snapshot] {
        rotate_key(
            own_dir.path(),
            role,
            None,
            std::slice::from_ref(&own_root_key),
            c.clone(),
        )
        .await
        .expect("rotate");
    }
    // An agent enrolled at own v1 updated from own: it trusts own's
    // timestamp, snapshot and targets at versions the shared one is below.
    let before = load_as_agent(&pinned_v1, &own.serve_dir(), agent.path()).await;
    assert_eq!(before.root().signed.version.get(), 3);
    assert_eq!(newest_of(&before, "main"), 3);

    let shared_root_key = shared_dir.path().join("keys/root.pem");
    let stranger = agent.path().join("stranger.pem");
    keygen(&stranger).expect("keygen");
    // Wrong keys, a missing shared key, the same repository, no repository:
    // refused with their codes, and nothing changes.
    for (own_keys, shared_keys, shared_path, code) in [
        (
            vec![stranger.clone()],
            vec![shared_root_key.clone()],
            shared_dir.path(),
            ErrorCode::DefsJoinKeys,
        ),
        (
            vec![own_root_key.clone()],
            vec![stranger.clone()],
            shared_dir.path(),
            ErrorCode::DefsJoinKeys,
        ),
        (
            vec![own_root_key.clone()],
            vec![own_root_key.clone()],
            own_dir.path(),
            ErrorCode::DefsJoinSame,
        ),
        (
            vec![own_root_key.clone()],
            vec![shared_root_key.clone()],
            agent.path(),
            ErrorCode::DefsJoinNoRepository,
        ),
    ] {
        let e = join(
            shared_path,
            own_dir.path(),
            &own_keys,
            &shared_keys,
            c.clone(),
        )
        .await
        .expect_err("refused");
        assert_eq!(e.code(), code, "{e}");
    }
    assert!(!shared_dir.path().join("repo/metadata/2.root.json").exists());
    assert!(!agent.path().join("state.json").exists());

    let joined = join(
        shared_dir.path(),
        own_dir.path(),
        std::slice::from_ref(&own_root_key),
        std::slice::from_ref(&shared_root_key),
        c.clone(),
    )
    .await
    .expect("join");
    assert_eq!(joined.bumped, [2, 3, 4]);
    assert_eq!(joined.countersigned, [2, 3, 4]);
    assert!(joined.unreachable.is_empty());
    assert_eq!(
        joined.raised,
        [("extra".to_owned(), 2), ("main".to_owned(), 4)]
    );
    assert_eq!(joined.root_version, 4);
    // The raised main carries the shared content, not the joining one's.
    let main4 = shared
        .history()
        .await
        .expect("history")
        .into_iter()
        .find(|v| v.channel == "main" && v.version == 4)
        .expect("main v4");
    assert_eq!(main4.sha256, delta::sha256_hex(b"shared one\n"));

    // The same agent (its pinned root and its datastore) now loads the
    // shared repository: it walks 2, 3, 4, and tough drops the timestamp
    // and snapshot it trusted (their keys changed), so the shared ones, at
    // lower versions, are accepted.
    let after = load_as_agent(&pinned_v1, &shared.serve_dir(), agent.path()).await;
    assert_eq!(after.root().signed.version.get(), 4);
    assert_eq!(newest_of(&after, "main"), 4);
    assert_eq!(newest_of(&after, "extra"), 2);
    // An agent pinned at own v3 (enrolled last) too, with a fresh datastore.
    let pinned_v3 = std::fs::read(own_dir.path().join("repo/metadata/3.root.json")).expect("v3");
    let fresh = tempfile::tempdir().expect("tempdir");
    let v3 = load_as_agent(&pinned_v3, &shared.serve_dir(), fresh.path()).await;
    assert_eq!(v3.root().signed.version.get(), 4);
    // The shared repository's own agents still walk their chain.
    let shared_v1 = std::fs::read(shared_dir.path().join("repo/metadata/1.root.json")).expect("v1");
    let theirs = tempfile::tempdir().expect("tempdir");
    let s = load_as_agent(&shared_v1, &shared.serve_dir(), theirs.path()).await;
    assert_eq!(s.root().signed.version.get(), 4);
    assert_eq!(newest_of(&s, "main"), 4);

    // Joining again changes nothing.
    let again = join(
        shared_dir.path(),
        own_dir.path(),
        std::slice::from_ref(&own_root_key),
        &[],
        c,
    )
    .await
    .expect("join again");
    assert!(again.bumped.is_empty() && again.countersigned.is_empty() && again.raised.is_empty());
    assert_eq!(again.root_version, 4);
}

#[tokio::test]
async fn two_handles_on_one_directory_publish_one_after_the_other() {
    // Two servers sharing `defs_dir`: each publish re-reads what the other
    // wrote under the directory's lock, so no version is lost or doubled.
    let dir = tempfile::tempdir().expect("tempdir");
    let c = clock();
    let (a, b) = tokio::join!(
        Repo::open(dir.path(), c.clone()),
        Repo::open(dir.path(), c.clone())
    );
    let (a, b) = (a.expect("a"), b.expect("b"));
    assert_eq!(a.id().await.expect("id"), b.id().await.expect("id"));
    let token = a.change_token();
    let mut tasks = Vec::new();
    for i in 0..6 {
        let r = if i % 2 == 0 { a.clone() } else { b.clone() };
        tasks.push(tokio::spawn(async move {
            r.publish("main", format!("content {i}\n").into_bytes(), None)
                .await
                .expect("publish")
                .version
        }));
    }
    let mut versions = Vec::new();
    for t in tasks {
        versions.push(t.await.expect("task"));
    }
    versions.sort_unstable();
    assert_eq!(versions, [1, 2, 3, 4, 5, 6]);
    assert_ne!(b.change_token(), token);
    let h = b.history().await.expect("history");
    assert_eq!(h.len(), 6);
    assert!(
        a.root_json()
            .await
            .expect("root")
            .contains("\"version\": 1")
    );
}
