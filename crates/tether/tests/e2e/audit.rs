//! `tether audit list` against a real server: the CLI's own admin actions
//! are listed with their actor, filtered by actor and time, and a created
//! secret never shows.

use tether_wire::{AuditEntry, CreatedAdminToken, CreatedToken};

use crate::lab::{Backend, Server, text};

#[tokio::test]
async fn the_cli_lists_its_own_admin_actions() {
    let server = Server::start(Backend::Sqlite).await;
    let ci: CreatedAdminToken = serde_json::from_str(
        &server
            .admin_ok(&["admin-tokens", "create", "--name", "ci", "--json"])
            .await,
    )
    .expect("created JSON");
    let as_ci = [("TETHER_ADMIN_TOKEN", ci.token.as_str())];
    let out = server
        .admin_env(
            &["token", "create", "--kind", "provisioning", "--json"],
            &as_ci,
        )
        .await;
    assert!(out.status.success(), "{}", text(&out));
    let token: CreatedToken = serde_json::from_slice(&out.stdout).expect("token JSON");

    let json = server.admin_ok(&["audit", "list", "--json"]).await;
    assert!(!json.contains(&ci.token), "{json}");
    assert!(!json.contains(&token.token), "{json}");
    let log: Vec<AuditEntry> = serde_json::from_str(&json).expect("audit JSON");
    assert_eq!(
        log.iter()
            .map(|e| (
                e.actor.as_str(),
                e.method.as_str(),
                e.route.as_str(),
                e.status
            ))
            .collect::<Vec<_>>(),
        [
            ("ci", "POST", "/v1/admin/tokens", 200),
            ("bootstrap", "POST", "/v1/admin/admin-tokens", 201),
        ],
        "newest first: {log:#?}"
    );
    let mine: Vec<AuditEntry> = serde_json::from_str(
        &server
            .admin_ok(&["audit", "list", "--actor", "ci", "--since", "1h", "--json"])
            .await,
    )
    .expect("audit JSON");
    assert_eq!(mine.len(), 1);
    let one = server.admin_ok(&["audit", "list", "--limit", "1"]).await;
    assert_eq!(one.lines().count(), 2, "a header and one entry: {one}");
    assert!(
        one.contains("/v1/admin/tokens") && one.contains("ci"),
        "{one}"
    );

    let bad = server
        .admin(&["audit", "list", "--since", "yesterday"])
        .await;
    assert!(!bad.status.success());
    assert!(text(&bad).contains("TETHER-E4003"), "{}", text(&bad));
}
