//! Fleet diagnosis on real agent processes behind real faults: a squid that
//! dies under three agents (a dead proxy: network), a squid whose other
//! agents stay fine while one of them is restarted with a wrong password (a
//! bad credential: configuration), and one direct agent restarted under
//! libfaketime 400 days ahead, past the server certificate (its clock:
//! configuration). Every agent checks in once before its fault, so the
//! control plane has its facts and its proxy; an agent that cannot reach the
//! control plane cannot report why, so these incidents are "went silent",
//! and the verdict rests on who else shares its path.

use std::time::Duration;

use tether_testlab::squid::Squid;
use tether_wire::{AgentStatus, Dimension, FleetDiagnosis, IncidentKind};
use uuid::Uuid;

use crate::lab::{Agent, Backend, Server, text};

const USER: &str = "tether";
const PASS: &str = "lab-pass";

async fn enrolled(server: &Server, token: &str, proxy: Option<&Squid>) -> (Agent, Uuid) {
    let agent = Agent::new();
    let url = proxy.map(|p| p.url_with(USER, PASS));
    let args: Vec<&str> = match &url {
        Some(u) => vec!["--proxy", u.as_str()],
        None => Vec::new(),
    };
    let id = agent.enroll_ok(server, token, &args).await;
    (agent, id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_proxy_is_network_and_a_bad_password_or_clock_is_configuration() {
    // Threshold = 2 × 5 s + 1 s: a silent agent is Inactive 11 s after its
    // last check-in.
    let server = Server::start_with(
        Backend::Sqlite,
        &[
            ("TETHER_INACTIVE_GRACE_SECS", "1"),
            ("TETHER_SWEEP_INTERVAL_MS", "200"),
        ],
    )
    .await;
    server.set_interval(5).await;
    let port = url::Url::parse(&server.endpoint.url)
        .expect("url")
        .port()
        .expect("port");
    let (doomed, kept) = tokio::join!(
        Squid::start(port, USER, PASS),
        Squid::start(port, USER, PASS)
    );
    let token = server.token(&["--max-uses", "20"]).await;

    let mut behind_doomed = Vec::new();
    for _ in 0..3 {
        behind_doomed.push(enrolled(&server, &token.token, Some(&doomed)).await);
    }
    let mut behind_kept = Vec::new();
    for _ in 0..4 {
        behind_kept.push(enrolled(&server, &token.token, Some(&kept)).await);
    }
    let mut direct = Vec::new();
    for _ in 0..3 {
        direct.push(enrolled(&server, &token.token, None).await);
    }
    let all: Vec<Uuid> = behind_doomed
        .iter()
        .chain(&behind_kept)
        .chain(&direct)
        .map(|(_, id)| *id)
        .collect();
    for (a, _) in behind_doomed
        .iter_mut()
        .chain(behind_kept.iter_mut())
        .chain(direct.iter_mut())
    {
        a.run(&[]);
    }
    server
        .wait_all_status(&all, AgentStatus::Active, Duration::from_secs(20))
        .await;
    let healthy: FleetDiagnosis =
        serde_json::from_str(&server.admin_ok(&["fleet", "diagnose", "--json"]).await)
            .expect("fleet diagnose --json");
    assert_eq!((healthy.judged, healthy.failing), (10, 0), "{healthy:#?}");
    assert!(healthy.incidents.is_empty(), "{healthy:#?}");

    // The faults. The first squid dies under its three agents.
    let doomed_port = doomed.port;
    drop(doomed);
    // One agent of the second squid comes back with a wrong password.
    let (bad_password, bad_password_id) = &mut behind_kept[0];
    let bad_password_id = *bad_password_id;
    bad_password.kill().await;
    let wrong = kept.url_with(USER, "not-the-password");
    bad_password.run(&[("TETHER_PROXY", wrong.as_str())]);
    // One direct agent comes back with its clock 400 days ahead: the
    // server's certificate (365 days) has expired for it.
    let (skewed, skewed_id) = &mut direct[0];
    let skewed_id = *skewed_id;
    skewed.kill().await;
    let env = tether_testlab::faketime::env("+400d");
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    skewed.run(&env);

    let dead: Vec<Uuid> = behind_doomed.iter().map(|(_, id)| *id).collect();
    let silent: Vec<Uuid> = dead
        .iter()
        .copied()
        .chain([bad_password_id, skewed_id])
        .collect();
    server
        .wait_all_status(&silent, AgentStatus::Inactive, Duration::from_secs(25))
        .await;

    let out = server.admin(&["fleet", "diagnose", "--json"]).await;
    assert_eq!(
        out.status.code(),
        Some(1),
        "incidents exit 1: {}",
        text(&out)
    );
    let d: FleetDiagnosis = serde_json::from_slice(&out.stdout).expect("fleet diagnose --json");
    assert_eq!((d.judged, d.failing), (10, 5), "{d:#?}");

    // Network: every agent behind the dead squid, and the contrast.
    let network: Vec<_> = d
        .incidents
        .iter()
        .filter(|i| i.kind == IncidentKind::Network)
        .collect();
    assert_eq!(network.len(), 1, "{d:#?}");
    let n = network[0];
    assert_eq!(n.dimension, Dimension::Proxy, "{n:#?}");
    assert!(
        n.value.contains(&format!("127.0.0.1:{doomed_port}")),
        "{n:#?}"
    );
    assert_eq!((n.failing, n.total), (3, 3), "{n:#?}");
    assert_eq!(n.error_class, "silent");
    let mut named: Vec<Uuid> = n.agents.iter().map(|a| a.id).collect();
    named.sort();
    let mut expected = dead.clone();
    expected.sort();
    assert_eq!(named, expected, "{n:#?}");
    assert!(
        n.contrast
            .as_deref()
            .is_some_and(|c| c.ends_with("are fine")),
        "{n:#?}"
    );

    // Configuration: the wrong password, against the three fine agents of
    // the same squid; the skewed clock, against the fine direct agents.
    let config: Vec<_> = d
        .incidents
        .iter()
        .filter(|i| i.kind == IncidentKind::Configuration)
        .collect();
    let of = |id: Uuid| {
        config
            .iter()
            .find(|i| i.agents.iter().any(|a| a.id == id))
            .unwrap_or_else(|| panic!("no configuration incident names {id}: {d:#?}"))
    };
    let pw = of(bad_password_id);
    assert_eq!(pw.dimension, Dimension::Proxy, "{pw:#?}");
    assert!(
        pw.value.contains(&format!("127.0.0.1:{}", kept.port)),
        "{pw:#?}"
    );
    assert_eq!((pw.failing, pw.total), (1, 4), "{pw:#?}");
    assert!(
        pw.contrast.as_deref() == Some(&*format!("3 agents of proxy {} are fine", pw.value)),
        "{pw:#?}"
    );
    let clock = of(skewed_id);
    assert_eq!(clock.failing, 1, "{clock:#?}");
    assert_ne!(clock.dimension, Dimension::Proxy, "{clock:#?}");
    for i in &d.incidents {
        assert!(!i.value.contains(PASS) && !i.value.contains("not-the-password"));
    }

    // The text output says the same in sentences.
    let out = server.admin(&["fleet", "diagnose"]).await;
    let t = text(&out);
    eprintln!("{t}");
    assert!(
        t.contains("network: all 3 agents behind proxy ") && t.contains("went silent"),
        "{t}"
    );
    assert!(
        t.contains("configuration: 1 agent of 4 behind proxy "),
        "{t}"
    );
}
