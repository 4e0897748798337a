//! Wire compatibility (ARCHITECTURE.md): an agent one version older or
//! newer than the server keeps working. Recorded bodies of released
//! versions and of a newer peer (`tests/fixtures/`) must parse with today's
//! types, in both directions, and today's types must still write what an
//! older peer reads.

use std::path::{Path, PathBuf};

use serde::Serialize;
use serde::de::DeserializeOwned;
use tether_wire::{
    ActionInfo, ActionResult, ApiError, BundleInfo, CheckinRequest, CheckinResponse,
    CreateTokenRequest, CreatedToken, EnrollRequest, EnrollResponse, Policy, PolicyUpdate,
    ShutdownNotice,
};

fn fixture(dir: &str, name: &str) -> serde_json::Value {
    let path = fixtures().join(dir).join(format!("{name}.json"));
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// Parses a recorded body with today's type.
fn parse<T: DeserializeOwned>(dir: &str, name: &str) -> T {
    let v = fixture(dir, name);
    serde_json::from_value(v).unwrap_or_else(|e| {
        panic!(
            "{dir}/{name}.json no longer parses as {}: {e}",
            std::any::type_name::<T>()
        )
    })
}

/// A body of the previous release parses, and today's type writes it back
/// unchanged: nothing an older peer reads was renamed, removed or retyped.
fn round_trip<T: DeserializeOwned + Serialize>(name: &str) -> T {
    let recorded = fixture("v0.1", name);
    let parsed: T = parse("v0.1", name);
    let written = serde_json::to_value(&parsed).expect("serializes");
    assert_eq!(
        written,
        recorded,
        "v0.1/{name}.json: today's {} writes a different body than v0.1 peers read",
        std::any::type_name::<T>()
    );
    parsed
}

#[test]
fn agent_requests_of_the_previous_release_still_parse_on_the_server() {
    let enroll: EnrollRequest = round_trip("enroll_request");
    assert_eq!(enroll.agent_version, "0.1.0");
    let checkin: CheckinRequest = round_trip("checkin_request");
    assert_eq!(checkin.defs[0].version, Some(2));
    let _: ShutdownNotice = round_trip("shutdown_notice");
    let result: ActionResult = round_trip("action_result");
    assert!(result.doctor.is_some());
}

#[test]
fn server_replies_of_today_are_what_agents_of_the_previous_release_read() {
    let enroll: EnrollResponse = round_trip("enroll_response");
    assert_eq!(enroll.policy.defs.channels, ["sample"]);
    let checkin: CheckinResponse = round_trip("checkin_response");
    assert_eq!(checkin.actions.len(), 3);
    let _: ActionInfo = round_trip("action_info");
    let _: BundleInfo = round_trip("bundle_info");
    let _: ApiError = round_trip("api_error");
}

#[test]
fn admin_bodies_of_the_previous_release_still_parse() {
    let _: CreateTokenRequest = round_trip("create_token_request");
    let _: PolicyUpdate = round_trip("policy_update");
    let _: CreatedToken = round_trip("created_token");
    let _: Policy = round_trip("policy");
}

#[test]
fn requests_from_a_newer_agent_parse_on_this_server() {
    // Fields this version does not know, at the top level and nested.
    let enroll: EnrollRequest = parse("newer", "enroll_request");
    assert_eq!(enroll.agent_version, "0.2.0");
    assert_eq!(enroll.previous_credential, None);
    let checkin: CheckinRequest = parse("newer", "checkin_request");
    assert_eq!(checkin.defs[0].version, Some(3));
    assert_eq!(checkin.last_errors["transport"].message.len(), 38);
    // A code from the newer agent's catalog: the body still parses, and the
    // agent's code is kept at the head of the message.
    let scan = &checkin.last_errors["scan"];
    assert_eq!(scan.code, tether_wire::ErrorCode::UnknownPeerCode);
    assert_eq!(
        scan.message,
        "TETHER-E7104: 10.0.0.0/8 is larger than the policy allows"
    );
    let _: ShutdownNotice = parse("newer", "shutdown_notice");
    let result: ActionResult = parse("newer", "action_result");
    assert!(!result.ok);
    let token: CreateTokenRequest = parse("newer", "create_token_request");
    assert_eq!(token.group, "lab");
    let update: PolicyUpdate = parse("newer", "policy_update");
    assert_eq!(update.defs.channels, ["main"]);
    assert_eq!(
        update.jitter_percent, 10,
        "absent fields take their defaults"
    );
}

#[test]
fn replies_from_a_newer_server_parse_on_this_agent() {
    let enroll: EnrollResponse = parse("newer", "enroll_response");
    assert_eq!(enroll.policy.checkin_interval_secs, 60);
    assert!(enroll.policy.targets.is_empty(), "absent: the default");
    let checkin: CheckinResponse = parse("newer", "checkin_response");
    assert_eq!(checkin.policy.revision, 5);
    assert!(!checkin.policy.defs.allow_user_update);
    assert_eq!(checkin.actions.len(), 2);
    assert_eq!(
        checkin.actions[1].kind,
        tether_wire::ActionKind::Unknown,
        "an action kind this agent does not know is acknowledged, not fatal"
    );
    let error: ApiError = parse("newer", "api_error");
    assert_eq!(error.code, tether_wire::ErrorCode::TokenExpired);
    // A code from the newer server's catalog is still an API error (not
    // "something other than Tether answered"), with the server's code kept.
    let error: ApiError = parse("newer", "api_error_new_code");
    assert_eq!(error.code, tether_wire::ErrorCode::UnknownPeerCode);
    assert_eq!(
        error.message,
        "TETHER-E7201: the deployment target ssh://web-02 is locked by task 42"
    );
    assert_eq!(error.action, "Wait for task 42, or cancel it.");
    let info: ActionInfo = parse("newer", "action_info");
    assert_eq!(info.result.map(|r| r.ok), Some(true));
}

/// `DefsPolicy` as agents 0.1 read it: strictly. Copied from the 0.1 source
/// on purpose; it must never change.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct DefsPolicyV01 {
    #[serde(default)]
    channels: Vec<String>,
    #[serde(default)]
    update_urls: Vec<String>,
    #[serde(default)]
    interval_secs: Option<u32>,
    #[serde(default)]
    allow_user_update: Option<bool>,
}

#[test]
fn defs_policy_is_frozen_because_agents_in_the_field_read_it_strictly() {
    // What today's server writes inside every policy must parse with the
    // strict 0.1 reader, whatever the settings.
    let policy = tether_wire::DefsPolicy {
        channels: vec!["main".into()],
        update_urls: vec!["https://mirror.corp/".into()],
        interval_secs: 60,
        allow_user_update: false,
    };
    let written = serde_json::to_value(&policy).expect("serializes");
    serde_json::from_value::<DefsPolicyV01>(written.clone())
        .expect("an agent 0.1 reads today's DefsPolicy: never add a field to it, use Policy");
    let keys: Vec<&str> = written
        .as_object()
        .expect("an object")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        [
            "allow_user_update",
            "channels",
            "interval_secs",
            "update_urls"
        ]
    );
    // And inside the check-in reply, as the server sends it.
    let reply: CheckinResponse = parse("v0.1", "checkin_response");
    let written = serde_json::to_value(&reply).expect("serializes");
    serde_json::from_value::<DefsPolicyV01>(written["policy"]["defs"].clone())
        .expect("the reply's policy.defs parses strictly");
}

/// The capture action's shape, as this server sends it and this agent reads
/// it; an agent one version older reads it as `Unknown` (the `newer`
/// fixture's unknown kind above).
#[test]
fn the_capture_action_keeps_its_shape() {
    let full: tether_wire::Action = serde_json::from_str(
        r#"{"id":"6f7d2b8e-3c1a-4d5e-9f00-1a2b3c4d5e6f","type":"capture","secs":60,"tls_keylog":true}"#,
    )
    .expect("parses");
    assert_eq!(
        full.kind,
        tether_wire::ActionKind::Capture {
            secs: Some(60),
            tls_keylog: true
        }
    );
    let minimal: tether_wire::Action =
        serde_json::from_str(r#"{"id":"6f7d2b8e-3c1a-4d5e-9f00-1a2b3c4d5e6f","type":"capture"}"#)
            .expect("parses");
    assert_eq!(
        minimal.kind,
        tether_wire::ActionKind::Capture {
            secs: None,
            tls_keylog: false
        }
    );
    assert_eq!(
        serde_json::to_value(&minimal).expect("serializes"),
        serde_json::json!({"id": "6f7d2b8e-3c1a-4d5e-9f00-1a2b3c4d5e6f", "type": "capture", "tls_keylog": false})
    );
    let rotated = tether_wire::RotatedCredential {
        credential: "tac_secret".into(),
    };
    assert!(!format!("{rotated:?}").contains("tac_secret"));
}

/// The rollout offer in a check-in reply (issue #13): today's reply carries
/// it, and the reply of the previous release (without it) still reads as
/// "nothing offered". Agents of the previous release read replies leniently,
/// so the new field is ignored there (`server_replies_of_today_…`).
#[test]
fn the_upgrade_offer_rides_on_the_check_in_reply() {
    let mut reply = fixture("v0.1", "checkin_response");
    let old: CheckinResponse = serde_json::from_value(reply.clone()).expect("v0.1 reply");
    assert_eq!(old.upgrade, None);
    reply["upgrade"] = serde_json::json!({"version": "1.5.0", "stage": "canary"});
    let new: CheckinResponse = serde_json::from_value(reply).expect("reply with an offer");
    assert_eq!(
        new.upgrade,
        Some(tether_wire::UpgradeOffer {
            version: "1.5.0".into()
        }),
        "fields a newer server adds to the offer are ignored"
    );
    let back = serde_json::to_value(&new).expect("serializes");
    assert_eq!(back["upgrade"], serde_json::json!({"version": "1.5.0"}));
}
