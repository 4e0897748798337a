//! A deploy that waits for an admin's approval, end to end: the real
//! server, a real provisioning agent and a real nginx. Held, the task is
//! never leased (no key, no file, no reload: nginx keeps serving the old
//! certificate) and says why; `tether certs approve` releases it, records
//! who and when, and the deploy ends verified on the wire; `tether certs
//! reject` ends another one cancelled with the reason, its files
//! untouched. Approving what is not held, approved twice or not a deploy
//! is refused with its code, never a 500.

use std::time::Duration;

use serde_json::Value;
use tether_wire::{ApprovalState, CertHistory, TaskDetail, TaskState};

use crate::deploy::{
    PemSite, assert_serves, deploy_args, deploy_ok, fp_of_file, provisioning_agent, server_with_ca,
    wait_task,
};
use crate::lab::{Backend, Server, text};

async fn show(server: &Server, id: &str) -> TaskDetail<Value> {
    serde_json::from_str(&server.admin_ok(&["tasks", "show", id, "--json"]).await)
        .expect("tasks show --json")
}

async fn a_deploy_waits_for_an_admins_approval(backend: Backend) {
    let server = server_with_ca(backend, &[], None).await;
    let (mut agent, agent_id) = provisioning_agent(&server).await;

    // The old set, served by a real nginx (master and worker). The reload
    // leaves a mark, so "no reload ran" is observed, not assumed.
    let marks_dir = tether_testlab::Scratch::new("e2e-approval-marks");
    let marks = marks_dir.path().join("reloads");
    let site = PemSite::start(
        "e2e-approval-site",
        &["web.test", "127.0.0.1"],
        &format!("echo reload >> '{}'\n", marks.display()),
    )
    .await;
    let (set, nginx) = (&site.set, &site.nginx);
    let old_fp = fp_of_file(&set.join("cert.pem"));
    assert_serves(nginx.port, &old_fp).await;
    let agent_s = agent_id.to_string();
    let args = deploy_args(
        &agent_s,
        &["web.test", "127.0.0.1"],
        &[
            ("cert", site.path("cert.pem")),
            ("key", site.path("key.pem")),
            ("fullchain", site.path("fullchain.pem")),
        ],
        &site.reload(),
        &site.verify(),
        &[
            "--sni",
            "web.test",
            "--max-attempts",
            "1",
            "--require-approval",
        ],
    );
    let deploy = || deploy_ok(&server, &args);

    // 1. Held: the agent polls and gets nothing; the reason says what to do.
    let id = deploy().await;
    let held = show(&server, &id).await.task;
    let why = format!("awaiting an admin's approval (tether certs approve {id})");
    assert_eq!(held.state, TaskState::Queued);
    assert!(
        held.waiting.as_deref().is_some_and(|w| w.starts_with(&why)),
        "{held:#?}"
    );
    assert_eq!(
        held.approval.as_ref().map(|a| a.state),
        Some(ApprovalState::Awaiting)
    );
    let listed = server.admin_ok(&["tasks", "list"]).await;
    assert!(listed.contains(&why), "{listed}");
    // Long enough for the agent's long poll to have taken it if it could.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let still = show(&server, &id).await.task;
    assert_eq!(
        (still.state, still.epoch),
        (TaskState::Queued, 0),
        "{still:#?}"
    );
    assert_eq!(fp_of_file(&set.join("cert.pem")), old_fp);
    assert_serves(nginx.port, &old_fp).await;
    assert!(!marks.exists(), "no reload ran before the approval");

    // Refusals with their codes: not a deploy, unknown, reject without a
    // reason.
    let doctor: Value = serde_json::from_str(
        &server
            .admin_ok(&[
                "tasks",
                "create",
                "--kind",
                "doctor",
                "--agent",
                &agent_s,
                "--spec",
                r#"{"upload": false}"#,
                "--json",
            ])
            .await,
    )
    .expect("tasks create --json");
    let doctor_id = doctor["id"].as_str().expect("id");
    let refused = server.admin(&["certs", "approve", doctor_id]).await;
    assert!(!refused.status.success());
    assert!(
        text(&refused).contains("TETHER-E8530"),
        "{}",
        text(&refused)
    );
    let blank = server
        .admin(&["certs", "reject", &id, "--reason", "  "])
        .await;
    assert!(text(&blank).contains("TETHER-E8533"), "{}", text(&blank));

    // 2. Approved: who and when are recorded, and the deploy ends verified.
    let out = server.admin_ok(&["certs", "approve", &id]).await;
    assert!(out.contains("approved by"), "{out}");
    let d = wait_task(&server, &id, Duration::from_secs(60)).await;
    assert_eq!(
        d.task.state,
        TaskState::Succeeded,
        "{d:#?}\n{}",
        agent.stderr()
    );
    let approval = d.task.approval.clone().expect("approval");
    assert_eq!(approval.state, ApprovalState::Approved);
    assert!(
        approval.by.as_deref().is_some_and(|b| !b.is_empty()) && approval.at.is_some(),
        "{approval:?}"
    );
    let new_fp = fp_of_file(&set.join("cert.pem"));
    assert_ne!(new_fp, old_fp);
    assert_serves(nginx.port, &new_fp).await;
    assert_eq!(d.results[0]["report"]["state"], "deployed");
    let again = server.admin(&["certs", "approve", &id]).await;
    assert!(!again.status.success());
    assert!(text(&again).contains("TETHER-E8532"), "{}", text(&again));
    let reloads = std::fs::read_to_string(&marks)
        .expect("marks")
        .lines()
        .count();

    // 3. Rejected: cancelled with the reason, never leased, nothing touched.
    let id2 = deploy().await;
    let out = server
        .admin_ok(&[
            "certs",
            "reject",
            &id2,
            "--reason",
            "change freeze until Monday",
        ])
        .await;
    assert!(out.contains("rejected by"), "{out}");
    let r = show(&server, &id2).await.task;
    assert_eq!((r.state, r.epoch), (TaskState::Cancelled, 0), "{r:#?}");
    assert!(
        r.last_error
            .as_deref()
            .is_some_and(|e| e.ends_with("change freeze until Monday")),
        "{r:#?}"
    );
    assert_eq!(
        r.approval.as_ref().map(|a| a.state),
        Some(ApprovalState::Rejected)
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(fp_of_file(&set.join("cert.pem")), new_fp);
    assert_serves(nginx.port, &new_fp).await;
    assert_eq!(
        std::fs::read_to_string(&marks)
            .expect("marks")
            .lines()
            .count(),
        reloads,
        "no reload after the rejection"
    );
    let h: CertHistory = serde_json::from_str(
        &server
            .admin_ok(&["certs", "history", &new_fp, "--json"])
            .await,
    )
    .expect("history --json");
    assert_eq!(h.deployments.len(), 1, "only the approved deploy: {h:#?}");
    let twice = server
        .admin(&["certs", "reject", &id2, "--reason", "again"])
        .await;
    assert!(text(&twice).contains("TETHER-E7004"), "{}", text(&twice));
    assert!(
        !server.log().contains("TETHER-E5002"),
        "no internal error:\n{}",
        server.log()
    );
    agent.terminate().await;
}

crate::both_backends!(a_deploy_waits_for_an_admins_approval);
