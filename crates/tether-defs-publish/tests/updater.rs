//! The updater's verification and install, driven through offline bundles
//! of a real signed repository (the same load/apply/install path as online
//! updates, without a network; the HTTPS path is covered end to end in
//! crates/tether/tests).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tether_defs::client::*;
use tether_defs_publish::repo::{Repo, RoleName, rotate_key};
use tether_transport::Transport;
use tether_wire::{Clock, ErrorCode, ManualClock, UpdateMethod};
use url::Url;

/// Names no agent may turn into a path: from a policy, an action, the
/// command line or signed metadata.
fn hostile_names() -> Vec<String> {
    vec![
        "..".into(),
        ".".into(),
        "/".into(),
        "../escape".into(),
        "a/../../escape".into(),
        "/tmp/tether-hostile-abs".into(),
        "main/../../escape".into(),
        "nul\0byte".into(),
        "x".repeat(300),
        String::new(),
        "Main".into(),
        "sp ace".into(),
    ]
}

struct World {
    _dirs: (tempfile::TempDir, tempfile::TempDir),
    repo_dir: PathBuf,
    state: PathBuf,
    clock: Arc<ManualClock>,
    repo: Repo,
    updater: Updater,
}

async fn world() -> World {
    let (a, b) = (
        tempfile::tempdir().expect("tempdir"),
        tempfile::tempdir().expect("tempdir"),
    );
    let clock = Arc::new(ManualClock::new(
        time::macros::datetime!(2026-11-21 08:00 UTC),
    ));
    let repo = Repo::open(a.path(), clock.clone()).await.expect("open");
    pin_root(b.path(), &repo.root_json().await.expect("root")).expect("pin");
    let transport = Arc::new(Transport::new(Default::default()).expect("transport"));
    let updater = Updater::new(
        UpdaterConfig {
            state_dir: b.path().to_path_buf(),
            servers: Vec::new(),
        },
        transport,
        clock.clone(),
    );
    World {
        repo_dir: a.path().to_path_buf(),
        state: b.path().to_path_buf(),
        _dirs: (a, b),
        clock,
        repo,
        updater,
    }
}

impl World {
    async fn bundle(&self, name: &str) -> PathBuf {
        let out = self.state.parent().expect("parent").join(format!(
            "{}-{name}.tar",
            self.state.file_name().expect("name").to_string_lossy()
        ));
        self.repo.export("main", &out).await.expect("export");
        out
    }

    async fn import(&self, bundle: &Path) -> Result<Applied, UpdateError> {
        let mut out = self
            .updater
            .import_bundle(bundle, Some(&["main".to_owned()]))
            .await?;
        out.remove(0).result
    }

    fn installed(&self) -> (u64, Vec<u8>) {
        let i = read_installed(&self.state, "main").expect("installed");
        let content = std::fs::read(installed_path(&self.state, "main").expect("a valid name"))
            .expect("current");
        assert_eq!(
            tether_defs::delta::sha256_hex(&content),
            i.sha256,
            "current matches installed.json"
        );
        (i.version, content)
    }
}

/// A world with "one\n" installed as v1 and a bundle of v2 ("two\n").
async fn v1_installed_v2_bundled() -> (World, PathBuf) {
    let w = world().await;
    w.repo
        .publish("main", b"one\n".to_vec(), None)
        .await
        .expect("v1");
    w.import(&w.bundle("v1").await).await.expect("v1");
    w.repo
        .publish("main", b"two\n".to_vec(), None)
        .await
        .expect("v2");
    let b2 = w.bundle("v2").await;
    (w, b2)
}

/// Rewrites a bundle, letting `edit` change the unpacked files.
fn repack(src: &Path, out: &Path, edit: impl Fn(&Path)) {
    let dir = tempfile::tempdir().expect("tempdir");
    tar::Archive::new(std::fs::File::open(src).expect("open"))
        .unpack(dir.path())
        .expect("unpack");
    edit(dir.path());
    let mut b = tar::Builder::new(std::fs::File::create(out).expect("create"));
    b.append_dir_all(".", dir.path()).expect("append");
    b.finish().expect("finish");
}

fn first_file(dir: &Path, sub: &str, contains: &str) -> PathBuf {
    std::fs::read_dir(dir.join(sub))
        .expect("read_dir")
        .flatten()
        .map(|e| e.path())
        .find(|p| p.to_string_lossy().contains(contains))
        .expect("file")
}

#[tokio::test]
async fn bundles_install_then_update_keeping_the_previous_version() {
    let w = world().await;
    w.repo
        .publish("main", b"r1\nr2\n".to_vec(), None)
        .await
        .expect("v1");
    let b1 = w.bundle("v1").await;
    let got = w.import(&b1).await.expect("import v1");
    assert!(
        matches!(
            got,
            Applied::Installed {
                version: 1,
                from: None,
                method: UpdateMethod::Bundle,
                ..
            }
        ),
        "{got:?}"
    );
    assert_eq!(w.installed(), (1, b"r1\nr2\n".to_vec()));
    // Importing the same bundle again: up to date, nothing changes.
    assert_eq!(
        w.import(&b1).await.expect("again"),
        Applied::UpToDate { version: 1 }
    );

    w.clock.advance(time::Duration::hours(6));
    w.repo
        .publish("main", b"r1\nr2 changed\n".to_vec(), None)
        .await
        .expect("v2");
    let b2 = w.bundle("v2").await;
    w.import(&b2).await.expect("import v2");
    assert_eq!(w.installed(), (2, b"r1\nr2 changed\n".to_vec()));
    let i = read_installed(&w.state, "main").expect("installed");
    assert_eq!(i.previous.as_ref().map(|p| p.version), Some(1));
    assert!(
        w.state
            .join("defs/main")
            .join(&i.previous.expect("prev").file)
            .exists()
    );

    let states = channel_states(&w.state, &["main".to_owned()]);
    assert_eq!(states[0].version, Some(2));
    assert_eq!(states[0].last_error, None);
    assert!(
        states[0]
            .server
            .as_deref()
            .unwrap_or("")
            .starts_with("bundle ")
    );

    // A replayed older bundle is refused and v2 stays.
    let e = w.import(&b1).await.expect_err("replay");
    assert_eq!(e.code(), ErrorCode::DefsRollbackRefused, "{e}");
    assert_eq!(w.installed().0, 2);
    let states = channel_states(&w.state, &["main".to_owned()]);
    assert_eq!(
        states[0].consecutive_failures, 0,
        "a refused import is not recorded as a channel failure by load"
    );
}

#[tokio::test]
async fn tampered_metadata_is_refused_and_the_installed_version_kept() {
    let (w, b2) = v1_installed_v2_bundled().await;
    let bad = b2.with_extension("tampered.tar");
    repack(&b2, &bad, |d| {
        // Claim a different length for a target in every targets
        // metadata: the signatures no longer match.
        for t in std::fs::read_dir(d.join("metadata"))
            .expect("dir")
            .flatten()
        {
            let t = t.path();
            if t.to_string_lossy().ends_with(".targets.json") {
                let s = std::fs::read_to_string(&t).expect("read");
                let s = s.replacen("\"length\": ", "\"length\": 1", 1);
                std::fs::write(&t, s).expect("write");
            }
        }
    });
    let e = w.import(&bad).await.expect_err("tampered");
    assert_eq!(e.code(), ErrorCode::DefsSignatureInvalid, "{e}");
    assert_eq!(w.installed(), (1, b"one\n".to_vec()));
}

#[tokio::test]
async fn tampered_content_is_refused_and_the_installed_version_kept() {
    let (w, b2) = v1_installed_v2_bundled().await;
    let bad = b2.with_extension("content.tar");
    repack(&b2, &bad, |d| {
        let t = first_file(d, "targets", ".v2.full.zst");
        let mut bytes = std::fs::read(&t).expect("read");
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        std::fs::write(&t, bytes).expect("write");
    });
    let e = w.import(&bad).await.expect_err("tampered");
    assert_eq!(e.code(), ErrorCode::DefsHashMismatch, "{e}");
    assert_eq!(w.installed(), (1, b"one\n".to_vec()));
    // An oversized object is refused before it is read.
    let big = b2.with_extension("big.tar");
    repack(&b2, &big, |d| {
        let t = first_file(d, "targets", ".v2.full.zst");
        let mut bytes = std::fs::read(&t).expect("read");
        bytes.extend_from_slice(&[0u8; 4096]);
        std::fs::write(&t, bytes).expect("write");
    });
    let e = w.import(&big).await.expect_err("oversized");
    assert_eq!(e.code(), ErrorCode::DefsTooLarge, "{e}");
    assert_eq!(w.installed().0, 1);
}

#[tokio::test]
async fn expired_metadata_is_a_frozen_repository() {
    let w = world().await;
    w.repo
        .publish("main", b"one\n".to_vec(), None)
        .await
        .expect("v1");
    let b1 = w.bundle("v1").await;
    w.clock.advance(time::Duration::days(40));
    let e = w.import(&b1).await.expect_err("expired");
    assert_eq!(e.code(), ErrorCode::DefsMetadataExpired, "{e}");
    assert!(e.to_string().contains("expired"), "{e}");
    assert!(read_installed(&w.state, "main").is_none());
}

#[tokio::test]
async fn a_clock_that_ran_ahead_and_came_back_does_not_lock_the_agent_out() {
    let w = world().await;
    w.repo
        .publish("main", b"one\n".to_vec(), None)
        .await
        .expect("v1");
    let b1 = w.bundle("v1").await;
    // The clock runs 40 days ahead: the metadata looks expired.
    let now = w.clock.now();
    w.clock.advance(time::Duration::days(40));
    let e = w.import(&b1).await.expect_err("expired");
    assert_eq!(e.code(), ErrorCode::DefsMetadataExpired, "{e}");
    // tough also saw a far-future system time at some point.
    std::fs::write(
        w.state.join("defs/tuf/latest_known_time.json"),
        "\"2099-01-01T00:00:00Z\"",
    )
    .expect("write");
    // NTP puts the clock back: the update works again.
    w.clock.set(now);
    w.import(&b1).await.expect("works once the clock is right");
    assert_eq!(w.installed().0, 1);
}

#[tokio::test]
async fn garbage_and_hostile_bundles_are_refused_with_their_code() {
    let w = world().await;
    w.repo
        .publish("main", b"one\n".to_vec(), None)
        .await
        .expect("v1");
    let good = w.bundle("v1").await;
    let junk = good.with_extension("junk");
    std::fs::write(&junk, b"this is not a tar file at all, not even close....").expect("write");
    let e = w
        .updater
        .import_bundle(&junk, None)
        .await
        .expect_err("junk");
    assert_eq!(e.code(), ErrorCode::DefsBundleInvalid, "{e}");

    // An entry that climbs out of the unpack directory.
    let evil = good.with_extension("evil.tar");
    {
        let mut b = tar::Builder::new(std::fs::File::create(&evil).expect("create"));
        let data = b"x";
        let mut h = tar::Header::new_gnu();
        h.set_size(1);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, "metadata/ok.json", &data[..])
            .expect("append");
        let mut h = tar::Header::new_gnu();
        h.set_size(1);
        h.set_mode(0o644);
        // `append_data` refuses "..", so write the name into the header directly.
        h.as_old_mut().name[..12].copy_from_slice(b"../escape.tx");
        h.set_cksum();
        b.append(&h, &data[..]).expect("append raw");
        b.finish().expect("finish");
    }
    let e = w
        .updater
        .import_bundle(&evil, None)
        .await
        .expect_err("evil");
    assert_eq!(e.code(), ErrorCode::DefsBundleInvalid, "{e}");
    assert!(!w.state.join("defs").join("..").join("escape.tx").exists());

    // A bundle with only a part of the metadata.
    let partial = good.with_extension("partial.tar");
    repack(&good, &partial, |d| {
        std::fs::remove_file(d.join("metadata/timestamp.json")).expect("rm");
    });
    let e = w
        .updater
        .import_bundle(&partial, None)
        .await
        .expect_err("partial");
    assert_eq!(e.code(), ErrorCode::DefsBundleInvalid, "{e}");
    assert!(read_installed(&w.state, "main").is_none());
}

#[tokio::test]
async fn without_a_pinned_root_nothing_is_trusted() {
    let w = world().await;
    w.repo
        .publish("main", b"one\n".to_vec(), None)
        .await
        .expect("v1");
    let b1 = w.bundle("v1").await;
    std::fs::remove_file(w.state.join("defs/root.json")).expect("rm");
    let e = w.import(&b1).await.expect_err("untrusted");
    assert_eq!(e.code(), ErrorCode::DefsNotTrusted, "{e}");
    assert!(pin_root(&w.state, "{not json").is_err());
}

#[tokio::test]
async fn a_rotated_root_is_followed_from_the_pinned_one() {
    let w = world().await;
    w.repo
        .publish("main", b"one\n".to_vec(), None)
        .await
        .expect("v1");
    w.import(&w.bundle("v1").await).await.expect("v1");
    let root_key = w.repo_dir.join("keys/root.pem");
    for role in [RoleName::Root, RoleName::Targets] {
        let keys = if role == RoleName::Root {
            vec![root_key.clone()]
        } else {
            // After the root rotated, the new root key signs.
            std::fs::read_dir(w.repo_dir.join("keys"))
                .expect("keys")
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.to_string_lossy().contains("root-"))
                .collect()
        };
        rotate_key(&w.repo_dir, role, None, &keys, w.clock.clone())
            .await
            .expect("rotate");
    }
    let repo = Repo::open(&w.repo_dir, w.clock.clone())
        .await
        .expect("reopen");
    repo.publish("main", b"two\n".to_vec(), None)
        .await
        .expect("v2");
    let out = w.state.with_extension("rotated.tar");
    repo.export("main", &out).await.expect("export");
    let got = w.import(&out).await.expect("the chain 1 → 2 → 3 verifies");
    assert!(
        matches!(got, Applied::Installed { version: 2, .. }),
        "{got:?}"
    );
}

/// Every path under `root`, relative to it.
fn tree(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![root.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            out.push(p.strip_prefix(root).expect("under root").to_path_buf());
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                todo.push(p);
            }
        }
    }
    out.sort();
    out
}

#[tokio::test]
async fn hostile_channel_names_are_refused_and_create_no_path() {
    let (w, b2) = v1_installed_v2_bundled().await;
    let parent = w.state.parent().expect("parent").to_path_buf();
    let inside_before = tree(&w.state);
    let updater = Updater::new(
        UpdaterConfig {
            state_dir: w.state.clone(),
            servers: vec![Url::parse("https://127.0.0.1:9/defs/").expect("url")],
        },
        Arc::new(Transport::new(Default::default()).expect("transport")),
        w.clock.clone(),
    );
    let names = hostile_names();
    let outcomes = updater.update(&names).await;
    assert_eq!(outcomes.len(), names.len());
    for o in &outcomes {
        let e = o.result.as_ref().expect_err("refused");
        assert_eq!(
            e.code(),
            ErrorCode::DefsChannelNameRefused,
            "{:?}: {e}",
            o.channel
        );
        assert!(e.to_string().len() < 300, "the name is cut: {e}");
    }
    // An offline bundle asked for the same names: refused the same way.
    let imported = w
        .updater
        .import_bundle(&b2, Some(&names))
        .await
        .expect("the bundle itself is valid");
    for o in &imported {
        let e = o.result.as_ref().expect_err("refused");
        assert_eq!(
            e.code(),
            ErrorCode::DefsChannelNameRefused,
            "{:?}: {e}",
            o.channel
        );
    }
    for n in &names {
        assert!(read_installed(&w.state, n).is_none());
        assert!(installed_path(&w.state, n).is_none());
        assert!(last_delta_error(&w.state, n).is_none());
    }
    assert!(
        channel_states(&w.state, &names).is_empty(),
        "never echoed back"
    );
    assert_eq!(
        tree(&w.state),
        inside_before,
        "nothing new in the state dir"
    );
    assert!(!Path::new("/tmp/tether-hostile-abs").exists());
    assert!(!parent.join("escape").exists());
    // The valid channel still installs from the same bundle.
    let ok = w
        .updater
        .import_bundle(&b2, Some(&["main".to_owned()]))
        .await
        .expect("imports");
    assert!(ok[0].result.is_ok(), "{:?}", ok[0].result);
}

#[tokio::test]
async fn an_installed_record_pointing_outside_its_channel_is_ignored() {
    let (w, _b2) = v1_installed_v2_bundled().await;
    let record = w.state.join("defs/main/installed.json");
    let mut v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&record).expect("read")).expect("json");
    for evil in ["../../credential", "/etc/passwd", "..", "a/b.dat"] {
        v["file"] = serde_json::Value::String(evil.to_owned());
        std::fs::write(&record, serde_json::to_vec(&v).expect("json")).expect("write");
        assert!(read_installed(&w.state, "main").is_none(), "{evil}");
    }
}
