//! Re-enrollment and the old credential: it proves the agent's identity to
//! the server that issued it and to no other. Two real HTTPS servers on
//! loopback record every enrollment body they receive.

#[path = "support/harness.rs"]
mod harness;

use std::sync::Arc;

use harness::{AGENT, T0, policy};
use tether_agent::World;
use tether_agent::enroll::{EnrollOptions, enroll};
use tether_testlab::canned::{CannedReply, TestServer};
use tether_wire::{AgentKind, AgentStatus, EnrollRequest, EnrollResponse, ManualClock};

fn reply(credential: &str) -> CannedReply {
    CannedReply::json(
        200,
        &EnrollResponse {
            agent_id: AGENT,
            credential: credential.to_owned(),
            status: AgentStatus::Active,
            kind: AgentKind::Connector,
            group: "lab".into(),
            policy: policy(30, 10),
            server_time: T0,
            defs_root: None,
        },
    )
}

fn options(dir: &std::path::Path, server: &TestServer) -> EnrollOptions {
    EnrollOptions {
        state_dir: dir.to_owned(),
        server: server.url(),
        token: "tet_token".into(),
        ca_fingerprint: Some(server.pki.ca_fingerprint()),
        ca_file: None,
        extra_ca_file: None,
        name: Some("edge".into()),
        kind: None,
        proxy: None,
    }
}

fn bodies(server: &TestServer) -> Vec<(EnrollRequest, Vec<u8>)> {
    server
        .requests()
        .iter()
        .filter(|r| r.path == "/v1/enroll")
        .map(|r| {
            (
                serde_json::from_slice(&r.body).expect("an enrollment body"),
                r.body.to_vec(),
            )
        })
        .collect()
}

#[tokio::test]
async fn the_old_credential_goes_back_to_its_own_server_and_never_to_another() {
    const FIRST: &str = "tac_FirstCredentialFromServerA0000000000";
    const SECOND: &str = "tac_SecondCredentialFromServerA000000000";
    let a = TestServer::scripted(vec![reply(FIRST), reply(SECOND)]).await;
    let b = TestServer::scripted(vec![reply("tac_CredentialFromServerB0000000000000")]).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let world = World::fixed(Arc::new(ManualClock::new(T0)), &[]);

    let first = enroll(&options(dir.path(), &a), &world)
        .await
        .expect("enrolls on A");
    assert!(!first.reregistered);
    // Again on A: A issued the credential, so it gets it back and replaces
    // that identity.
    let again = enroll(&options(dir.path(), &a), &world)
        .await
        .expect("re-enrolls on A");
    assert!(again.reregistered);
    let on_a = bodies(&a);
    assert_eq!(on_a[0].0.previous_credential, None);
    assert_eq!(on_a[1].0.previous_credential.as_deref(), Some(FIRST));

    // On B, another server: nothing of A's credential in any byte.
    let moved = enroll(&options(dir.path(), &b), &world)
        .await
        .expect("enrolls on B");
    assert!(!moved.reregistered, "a new identity on B");
    let on_b = bodies(&b);
    assert_eq!(on_b.len(), 1);
    assert_eq!(on_b[0].0.previous_credential, None);
    for secret in [FIRST, SECOND] {
        assert!(
            !on_b[0]
                .1
                .windows(secret.len())
                .any(|w| w == secret.as_bytes()),
            "A's credential reached B"
        );
    }
    assert!(
        std::fs::read_to_string(dir.path().join("credential"))
            .expect("credential")
            .contains("FromServerB"),
        "the agent now holds B's credential"
    );
}
