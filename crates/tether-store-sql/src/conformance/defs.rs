//! The story of definitions: published versions (recorded once, never
//! overwritten, listed by channel and newest first), the channel state each
//! agent reports at check-in, and what a policy says about channels.

use tether_store::{PolicySettings, StoreError};
use tether_wire::{
    ChannelState, DefsPolicy, DefsVersion, DeltaInfo, ErrorCode, LastError, UpdateMethod,
};
use uuid::Uuid;

use super::{Fixture, agent, assert_conflict, change, checkin, enroll_at, t};

/// A version as the repository would report it, published at `t(at_secs)`.
fn version(channel: &str, version: u64, at_secs: i64) -> DefsVersion {
    DefsVersion {
        channel: channel.to_owned(),
        version,
        sha256: format!("{version:064x}"),
        length: version.saturating_add(1000),
        content: String::from("text"),
        published_at: t(at_secs),
        notes: Some(format!("release {version}")),
        full_size: version.saturating_add(400),
        deltas: (1..version)
            .rev()
            .take(2)
            .map(|from| DeltaInfo {
                from_version: from,
                kind: String::from("line"),
                size: from.saturating_mul(10),
            })
            .collect(),
        agents: 0,
    }
}

fn state(channel: &str, installed: Option<u64>) -> ChannelState {
    ChannelState {
        channel: channel.to_owned(),
        version: installed,
        sha256: installed.map(|v| format!("{v:064x}")),
        updated_at: installed.map(|_| t(30)),
        method: installed.map(|_| UpdateMethod::Delta),
        last_attempt_at: Some(t(40)),
        last_error: None,
        consecutive_failures: 0,
        server: Some(String::from("https://tether.corp.example:8443/defs/")),
        via_proxy: None,
    }
}

pub async fn defs_versions_round_trip(f: Fixture) {
    let s = &*f.store;
    assert!(
        s.list_defs_versions(None).await.expect("lists").is_empty(),
        "a fresh store has no versions"
    );
    let mut first = version("signatures", 1, 0);
    first.notes = None;
    first.deltas = Vec::new();
    let mut second = version("signatures", 2, 3600);
    second.content = String::from("binary");
    second.deltas = vec![DeltaInfo {
        from_version: 1,
        kind: String::from("zstd"),
        size: u64::from(u32::MAX) + 7,
    }];
    second.length = i64::MAX.unsigned_abs();
    // The repository may report `agents`; the store never keeps it.
    second.agents = 42;
    s.insert_defs_version(&first).await.expect("inserts v1");
    s.insert_defs_version(&second).await.expect("inserts v2");
    let listed = s
        .list_defs_versions(Some("signatures"))
        .await
        .expect("lists");
    second.agents = 0;
    assert_eq!(
        listed,
        vec![second, first],
        "every field round-trips, newest first"
    );
}

pub async fn defs_version_odd_notes_round_trip(f: Fixture) {
    let s = &*f.store;
    let notes = [
        "hôte-東京-🚀 \u{2028}\u{202e}reversed",
        "'; DROP TABLE defs_versions; --",
        "line one\nline two\r\n\ttabbed \\ \"quoted\" {} []",
        "",
    ];
    for (i, note) in notes.iter().enumerate() {
        let mut v = version("rules", u64::try_from(i).expect("small") + 1, 0);
        v.notes = Some((*note).to_owned());
        s.insert_defs_version(&v).await.expect("inserts");
    }
    let long = "n".repeat(64 * 1024);
    let mut v = version("rules", 10, 0);
    v.notes = Some(long.clone());
    s.insert_defs_version(&v).await.expect("inserts long notes");
    let listed = s.list_defs_versions(Some("rules")).await.expect("lists");
    let stored: Vec<Option<String>> = listed.iter().rev().map(|v| v.notes.clone()).collect();
    let mut expected: Vec<Option<String>> = notes.iter().map(|n| Some((*n).to_owned())).collect();
    expected.push(Some(long));
    assert_eq!(stored, expected, "notes are stored byte for byte");
}

pub async fn duplicate_defs_version_is_refused_and_original_kept(f: Fixture) {
    let s = &*f.store;
    let original = version("signatures", 3, 0);
    s.insert_defs_version(&original).await.expect("inserts");
    let mut again = version("signatures", 3, 999);
    again.sha256 = "f".repeat(64);
    again.notes = Some(String::from("an impostor"));
    match s.insert_defs_version(&again).await {
        Err(StoreError::Conflict(message)) => {
            assert!(
                message.contains("signatures") && message.contains('3'),
                "the conflict names the channel and version: {message}"
            );
        }
        other => panic!("duplicate version: expected Conflict, got {other:?}"),
    }
    assert_eq!(
        s.list_defs_versions(None).await.expect("lists"),
        vec![original.clone()],
        "the original is intact"
    );
    // The same version of another channel is a different version.
    let other = version("rules", 3, 0);
    s.insert_defs_version(&other).await.expect("other channel");

    // A version the store cannot represent is refused, and nothing is written.
    let huge = version("signatures", u64::MAX, 0);
    assert_conflict(
        s.insert_defs_version(&huge).await,
        "a version beyond i64::MAX",
    );
    assert_eq!(
        s.list_defs_versions(Some("signatures"))
            .await
            .expect("lists"),
        vec![original]
    );
}

pub async fn defs_versions_are_ordered_and_filtered(f: Fixture) {
    let s = &*f.store;
    // Inserted out of order, with channel names whose order differs between
    // byte order and a locale's (punctuation, digits).
    let published = [
        ("signatures", 2),
        ("a.rules", 1),
        ("signatures", 10),
        ("a-rules", 1),
        ("signatures", 1),
        ("a.rules", 3),
        ("0day", 1),
        ("ab", 1),
    ];
    for (i, (channel, v)) in published.iter().enumerate() {
        let at = i64::try_from(i).expect("small") * 60;
        s.insert_defs_version(&version(channel, *v, at))
            .await
            .expect("inserts");
    }
    let all: Vec<(String, u64)> = s
        .list_defs_versions(None)
        .await
        .expect("lists")
        .into_iter()
        .map(|v| (v.channel, v.version))
        .collect();
    let expected: Vec<(String, u64)> = [
        ("0day", 1),
        ("a-rules", 1),
        ("a.rules", 3),
        ("a.rules", 1),
        ("ab", 1),
        ("signatures", 10),
        ("signatures", 2),
        ("signatures", 1),
    ]
    .iter()
    .map(|(c, v)| ((*c).to_owned(), *v))
    .collect();
    assert_eq!(
        all, expected,
        "by channel (byte order), then newest first (numerically)"
    );
    let one: Vec<u64> = s
        .list_defs_versions(Some("signatures"))
        .await
        .expect("lists")
        .into_iter()
        .map(|v| v.version)
        .collect();
    assert_eq!(one, vec![10, 2, 1]);
    assert!(
        s.list_defs_versions(Some("absent"))
            .await
            .expect("lists")
            .is_empty()
    );
    assert!(
        s.list_defs_versions(Some("a_rules"))
            .await
            .expect("lists")
            .is_empty(),
        "the filter is an exact match, not a pattern"
    );
    assert!(
        s.list_defs_versions(Some("%"))
            .await
            .expect("lists")
            .is_empty(),
        "the filter is an exact match, not a pattern"
    );
}

/// The channel state round-trips through both check-in paths: the batched
/// one (no status change) and the transactional one (with a change).
pub async fn agent_defs_state_round_trips_through_both_checkin_paths(f: Fixture) {
    let s = &*f.store;
    let (a, _) = enroll_at(s, t(0)).await;
    assert!(a.defs.is_empty(), "a new agent reports no channels");

    let mut failing = state("rules", Some(4));
    failing.last_error = Some(LastError {
        code: ErrorCode::ProxyAuthRequired,
        message: String::from("407 from proxy \"corp\" \u{2028}"),
        at: t(41),
    });
    failing.consecutive_failures = 3;
    failing.via_proxy = Some(String::from("http://proxy.corp.example:3128"));
    let never = state("hôte-東京", None);

    // The transactional path.
    let mut first = checkin(a.id, t(60));
    first.defs = vec![state("signatures", Some(7)), failing.clone(), never.clone()];
    first.status_change = Some(change(
        tether_wire::AgentStatus::Pending,
        tether_wire::AgentStatus::Active,
        "first check-in",
    ));
    let stored = s.record_checkin(&first).await.expect("checks in");
    assert_eq!(stored.status, tether_wire::AgentStatus::Active);
    assert_eq!(stored.defs, first.defs, "order and every field kept");
    assert_eq!(agent(s, a.id).await.defs, first.defs);

    // The batched path replaces the state as a whole.
    let mut second = checkin(a.id, t(120));
    let mut updated = state("signatures", Some(8));
    updated.method = Some(UpdateMethod::Bundle);
    second.defs = vec![updated];
    let stored = s.record_checkin(&second).await.expect("checks in");
    assert_eq!(stored.defs, second.defs);
    assert_eq!(agent(s, a.id).await.defs, second.defs);

    // Several agents in one batch each keep their own state.
    let mut others = Vec::new();
    for i in 0..8_u64 {
        let (other, _) = enroll_at(s, t(1)).await;
        others.push((other.id, vec![state(&format!("channel-{i}"), Some(i))]));
    }
    let mut tasks = tokio::task::JoinSet::new();
    for (id, defs) in others.clone() {
        let store = f.store.clone();
        tasks.spawn(async move {
            let mut c = checkin(id, t(200));
            c.defs = defs;
            store.record_checkin(&c).await.expect("checks in")
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.expect("task ran");
    }
    for (id, defs) in others {
        assert_eq!(agent(s, id).await.defs, defs, "agent {id}");
    }

    // Clearing is a check-in with no channels.
    let cleared = s
        .record_checkin(&checkin(a.id, t(300)))
        .await
        .expect("checks in");
    assert!(cleared.defs.is_empty());
    assert!(s.agent(Uuid::new_v4()).await.expect("reads").is_none());
}

pub async fn policy_defs_round_trip(f: Fixture) {
    let s = &*f.store;
    let default = s.policy("default").await.expect("reads").expect("seeded");
    assert_eq!(
        default.defs,
        DefsPolicy::default(),
        "a policy that never set definitions reads as the defaults"
    );
    let defs = DefsPolicy {
        channels: vec![String::from("signatures"), String::from("rules.yara")],
        update_urls: vec![
            String::from("https://mirror-1.corp.example/defs/"),
            String::from("https://mirror-2.corp.example/defs/?q='\"x"),
        ],
        interval_secs: 3600,
        allow_user_update: false,
    };
    let settings = PolicySettings {
        checkin_interval_secs: 60,
        jitter_percent: 5,
        targets: vec![String::from("ldap.corp.example:389")],
        defs: defs.clone(),
        max_concurrent_tasks: None,
    };
    let created = s
        .upsert_policy("plant", &settings, None, t(1))
        .await
        .expect("creates");
    assert_eq!(created.defs, defs);
    assert_eq!(
        s.policy("plant").await.expect("reads").map(|p| p.defs),
        Some(defs.clone())
    );
    let listed = s.list_policies().await.expect("lists");
    assert_eq!(
        listed
            .iter()
            .find(|p| p.name == "plant")
            .map(|p| p.defs.clone()),
        Some(defs)
    );
    // An update replaces the definitions settings as a whole.
    let cleared = s
        .upsert_policy(
            "plant",
            &PolicySettings {
                defs: DefsPolicy::default(),
                ..settings
            },
            None,
            t(2),
        )
        .await
        .expect("updates");
    assert_eq!(cleared.revision, 2);
    assert_eq!(cleared.defs, DefsPolicy::default());
}
