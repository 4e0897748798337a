//! The updater's pure parts: backoff between rounds, cool-downs, and which
//! signed targets it may act on. The load/apply/install path against real
//! signed repositories is tested from `tether-defs-publish`
//! (`tests/updater.rs`), which can publish them.

use super::*;

#[test]
fn full_jitter_stays_within_its_ceiling() {
    for attempt in 0..20 {
        for _ in 0..50 {
            let d = full_jitter(Duration::from_secs(2), Duration::from_secs(60), attempt);
            assert!(d <= Duration::from_secs(60));
            assert!(d <= Duration::from_secs(2) * 2u32.saturating_pow(attempt.min(16)));
        }
    }
}

#[test]
fn cooldowns_persist_and_expire() {
    let dir = tempfile::tempdir().expect("tempdir");
    let now = time::macros::datetime!(2026-11-21 08:00 UTC);
    let server = Url::parse("https://mirror.example/defs/").expect("url");
    assert_eq!(cooldown_remaining(dir.path(), now), None);
    set_cooldown(dir.path(), &server, now, Duration::from_secs(120));
    assert_eq!(
        cooldown_for(dir.path(), &server, now),
        Some(Duration::from_secs(120))
    );
    assert_eq!(
        cooldown_remaining(dir.path(), now + time::Duration::seconds(60)),
        Some(Duration::from_secs(60))
    );
    assert_eq!(
        cooldown_remaining(dir.path(), now + time::Duration::seconds(121)),
        None
    );
    // A server cannot park the agent for more than a day.
    set_cooldown(dir.path(), &server, now, Duration::from_secs(10 * 86_400));
    assert_eq!(
        cooldown_for(dir.path(), &server, now),
        Some(Duration::from_secs(86_400))
    );
}

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

#[test]
fn signed_targets_with_hostile_names_or_hashes_are_not_sane() {
    let sha = "a".repeat(64);
    let full = TargetMeta {
        channel: "main".into(),
        version: 2,
        kind: TargetKind::Full,
        delta_kind: None,
        base_version: None,
        base_sha256: None,
        content_sha256: sha.clone(),
        content_length: 1,
        content: "text".into(),
        published_at: "2026-11-21T08:00:00Z".into(),
    };
    assert!(layout::target_is_sane("main.v2.full.zst", &full));
    let delta = TargetMeta {
        kind: TargetKind::Delta,
        delta_kind: Some("line".into()),
        base_version: Some(1),
        base_sha256: Some(sha.clone()),
        ..full.clone()
    };
    assert!(layout::target_is_sane("main.v1-v2.line.delta", &delta));
    for n in hostile_names() {
        let m = TargetMeta {
            channel: n.clone(),
            ..full.clone()
        };
        assert!(
            !layout::target_is_sane(&layout::full_name(&n, 2), &m),
            "{n:?}"
        );
    }
    let bad = [
        ("../main.v2.full.zst", full.clone()),
        ("main.v3.full.zst", full.clone()),
        (
            "main.v2.full.zst",
            TargetMeta {
                content_sha256: "../../x".into(),
                ..full.clone()
            },
        ),
        (
            "main.v2.full.zst",
            TargetMeta {
                content_sha256: "é".repeat(32),
                ..full.clone()
            },
        ),
        (
            "main.v1-v2.line.delta",
            TargetMeta {
                base_sha256: Some("/".into()),
                ..delta.clone()
            },
        ),
        (
            "main.v1-v2.evil.delta",
            TargetMeta {
                delta_kind: Some("evil".into()),
                ..delta.clone()
            },
        ),
    ];
    for (name, m) in bad {
        assert!(!layout::target_is_sane(name, &m), "{name} {m:?}");
    }
}
