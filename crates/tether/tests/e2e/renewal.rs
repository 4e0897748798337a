//! Renewal end to end: the real server (its scheduler a singleton job),
//! a real provisioning agent and a real nginx. A short-lived certificate
//! deployed from the built-in CA becomes due by its policy and is renewed
//! and redeployed on its own: a new key on the host, one certificate
//! issued, nginx serving it, the inventory showing the new certificate at
//! the location and the old one replaced, and `certs history` telling the
//! renewal. Then a reload that fails: the forced renewal fails with its
//! code and the deploy's code in the reason, and backs off per certificate
//! (the next attempt 5 minutes later, then 10).

use std::time::Duration;

use serde_json::Value;
use tether_wire::{CertDetail, CertHistory, LocationState, RenewalInfo, RenewalState, TaskState};
use tokio::time::Instant;

use crate::deploy::{
    PemSite, assert_serves, deploy_args, deploy_ok, fp_of_file, provisioning_agent, served,
    server_with_ca, wait_task,
};
use crate::lab::{Backend, Server};

/// Waits until `fp`'s newest renewal is in `state`.
pub(crate) async fn wait_renewal(server: &Server, fp: &str, state: RenewalState) -> RenewalInfo {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let list: Vec<RenewalInfo> =
            serde_json::from_str(&server.admin_ok(&["certs", "renewals", "--json"]).await)
                .expect("certs renewals --json");
        if let Some(r) = list.iter().find(|r| r.fingerprint == fp)
            && r.state == state
        {
            return r.clone();
        }
        assert!(
            Instant::now() < deadline,
            "no {state} renewal of {fp}: {list:#?}\nserver log:\n{}",
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

async fn a_due_certificate_is_renewed_and_redeployed_on_its_own(backend: Backend) {
    let server = server_with_ca(backend, &[], None).await;
    let (mut agent, agent_id) = provisioning_agent(&server).await;

    let site = PemSite::start("e2e-renewal-site", &["web.test", "127.0.0.1"], "").await;
    let (set, nginx, script, reload_ok) =
        (&site.set, &site.nginx, &site.script, &site.reload_script);
    let p = |n: &str| site.path(n);
    let verify = site.verify();

    // A one-day certificate, deployed once by an admin.
    let args = deploy_args(
        &agent_id.to_string(),
        &["web.test", "127.0.0.1"],
        &[
            ("cert", p("cert.pem")),
            ("key", p("key.pem")),
            ("fullchain", p("fullchain.pem")),
        ],
        &site.reload(),
        &verify,
        &["--sni", "web.test", "--days", "1", "--max-attempts", "1"],
    );
    let first_id = deploy_ok(&server, &args).await;
    let d = wait_task(&server, &first_id, Duration::from_secs(60)).await;
    assert_eq!(
        d.task.state,
        TaskState::Succeeded,
        "{d:#?}\n{}",
        agent.stderr()
    );
    let first = fp_of_file(&set.join("cert.pem"));
    let first_key = std::fs::read_to_string(set.join("key.pem")).expect("key");
    assert_serves(nginx.port, &first).await;

    // Its policy: due one day before expiry, i.e. now. Nobody asks for the
    // renewal: the scheduler finds it.
    server
        .admin_ok(&[
            "certs",
            "renewal-policy",
            "--scope",
            &format!("cert:{first}"),
            "--days-before",
            "1",
        ])
        .await;
    let r = wait_renewal(&server, &first, RenewalState::Verified).await;
    assert!(!r.forced, "{r:#?}");
    assert_eq!((r.attempt, r.locations, r.done), (1, 1, 1), "{r:#?}");
    let second = r.new_fingerprint.clone().expect("new certificate");
    assert_ne!(second, first);
    assert_eq!(fp_of_file(&set.join("cert.pem")), second);
    assert_serves(nginx.port, &second).await;
    assert_ne!(
        std::fs::read_to_string(set.join("key.pem")).expect("key"),
        first_key,
        "a new key, made on the host"
    );
    // One certificate issued for the renewal, by its one task.
    let h: CertHistory = serde_json::from_str(
        &server
            .admin_ok(&["certs", "history", &second, "--json"])
            .await,
    )
    .expect("history");
    let issued = h.issued.expect("issued by the built-in CA");
    assert_eq!(issued.task_id, r.tasks.first().copied(), "{r:#?}");
    // The inventory: the new certificate at the location, the old replaced.
    let old: CertDetail =
        serde_json::from_str(&server.admin_ok(&["certs", "show", &first, "--json"]).await)
            .expect("show");
    let here = old
        .seen_at
        .iter()
        .find(|l| l.address == verify)
        .expect("old location");
    assert_eq!(here.state, LocationState::Changed, "{old:#?}");
    assert_eq!(
        here.replaced_by.as_deref(),
        Some(second.as_str()),
        "{old:#?}"
    );
    let new: CertDetail =
        serde_json::from_str(&server.admin_ok(&["certs", "show", &second, "--json"]).await)
            .expect("show");
    assert!(
        new.seen_at
            .iter()
            .any(|l| l.address == verify && l.state == LocationState::Current),
        "{new:#?}"
    );
    // The old certificate's history tells the renewal.
    let text = server.admin_ok(&["certs", "history", &first]).await;
    assert!(
        text.contains("Renewal:") && text.contains("verified") && text.contains(&second),
        "{text}"
    );
    // The scheduler keeps running: the renewed certificate is not due (its
    // policy is the default, 2/3 of a day), so nothing else is issued.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let list: Vec<RenewalInfo> =
        serde_json::from_str(&server.admin_ok(&["certs", "renewals", "--json"]).await)
            .expect("renewals");
    assert_eq!(list.len(), 1, "{list:#?}");

    // A reload that fails: the forced renewal fails, explained, backs off.
    std::fs::write(script, "echo 'nginx: [emerg] broken config' >&2; exit 1\n").expect("script");
    let forced: RenewalInfo = serde_json::from_str(
        &server
            .admin_ok(&["certs", "renew", &second, "--json"])
            .await,
    )
    .expect("renew --json");
    assert!(forced.forced);
    let failed = wait_renewal(&server, &second, RenewalState::Failed).await;
    assert_eq!(
        failed.reason_code.as_deref(),
        Some("TETHER-E8604"),
        "{failed:#?}"
    );
    assert!(failed.reason.contains("TETHER-E8503"), "{failed:#?}");
    let next = failed.next_attempt_at.expect("backs off");
    let wait = next - failed.updated_at;
    assert_eq!(wait, time::Duration::minutes(5), "{failed:#?}");
    assert_eq!(
        served(nginx.port).await.as_deref(),
        Some(second.as_str()),
        "rolled back"
    );
    let shown = server.admin_ok(&["certs", "renewals"]).await;
    assert!(
        shown.contains("TETHER-E8604") && shown.contains("next attempt"),
        "{shown}"
    );
    // Forcing again retries at once; the second failure waits twice as long.
    server.admin_ok(&["certs", "renew", &second]).await;
    let deadline = Instant::now() + Duration::from_secs(90);
    let again = loop {
        let list: Vec<RenewalInfo> =
            serde_json::from_str(&server.admin_ok(&["certs", "renewals", "--json"]).await)
                .expect("renewals");
        let r = list
            .into_iter()
            .find(|r| r.fingerprint == second)
            .expect("renewal");
        if r.state == RenewalState::Failed && r.failures == 2 {
            break r;
        }
        assert!(Instant::now() < deadline, "{r:#?}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    assert_eq!(again.attempt, 2);
    assert_eq!(
        again.next_attempt_at.expect("backs off") - again.updated_at,
        time::Duration::minutes(10)
    );
    // A renewal of a certificate the CA never issued is refused.
    let bad = server
        .admin(&["certs", "renew", &format!("sha256:{}", "ab".repeat(32))])
        .await;
    assert!(!bad.status.success());

    // A change window that is closed now: the deploy waits, and says why
    // and until when (the agent has no site: UTC).
    let now = time::OffsetDateTime::now_utc();
    let (from, to) = (
        now + time::Duration::hours(2),
        now + time::Duration::hours(3),
    );
    let window = format!(
        "{:02}:{:02}-{:02}:{:02}",
        from.hour(),
        from.minute(),
        to.hour(),
        to.minute()
    );
    std::fs::write(script, reload_ok).expect("script");
    let args = deploy_args(
        &agent_id.to_string(),
        &["web.test"],
        &[("cert", p("cert.pem")), ("key", p("key.pem"))],
        &site.reload(),
        &verify,
        &["--window", &window],
    );
    let id = deploy_ok(&server, &args).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let d: tether_wire::TaskDetail<Value> =
        serde_json::from_str(&server.admin_ok(&["tasks", "show", &id, "--json"]).await)
            .expect("tasks show");
    assert_eq!(d.task.state, TaskState::Queued, "{d:#?}");
    let waiting = d.task.waiting.clone().unwrap_or_default();
    assert!(
        waiting.contains("outside its allowed hours") && waiting.contains(&window[..5]),
        "{waiting}"
    );
    assert_serves(nginx.port, &second).await;
    agent.terminate().await;
}

crate::both_backends!(a_due_certificate_is_renewed_and_redeployed_on_its_own);
